//! The Xen driver (`host::xl::XlDriver`) against the strict fake `xl` in `tests/fake-xl/xl`:
//! the whole VM life cycle, its errors, and proof that the fake refuses what real xl refuses
//! (with xl's texts and exit codes). Every config the driver writes goes through Xen's own
//! parser (libxlutil.so.4.17 from Debian's libxenmisc4.17, which `make test` installs); the
//! tests skip, saying so, only when that library cannot be loaded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vws::host::vmm::{DiskFormat, DiskSpec, NicSpec, VmSpec, VmState, Vmm, VmmError};
use vws::host::xl::XlDriver;

/// One fake Xen host: its own state directory and an `xl` wrapper pointing the fake at it.
struct Fake {
    dir: tempfile::TempDir,
    xl: PathBuf,
}

impl Fake {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn driver(&self) -> XlDriver {
        XlDriver::new(&self.xl)
    }
    /// Run the fake directly: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.xl).args(args).output().expect("run fake xl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    /// Every argv the fake saw, in order.
    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.state().join("calls.log")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("calls.log line")).collect()
    }
    fn images(&self) -> PathBuf {
        let d = self.dir.path().join("images");
        std::fs::create_dir_all(&d).unwrap();
        for f in ["vmlinuz", "initrd.img", "root.qcow2", "config.img"] {
            std::fs::write(d.join(f), b"image").unwrap();
        }
        d
    }
    fn spec(&self, name: &str) -> VmSpec {
        let img = self.images();
        let run = self.dir.path().join("run").join(name);
        VmSpec {
            name: name.into(),
            memory_mib: 128,
            vcpus: 1,
            kernel: Some(img.join("vmlinuz")),
            ramdisk: Some(img.join("initrd.img")),
            cmdline: Some("console=hvc0 vws.ready".into()),
            disks: vec![
                DiskSpec {
                    path: img.join("root.qcow2"),
                    format: DiskFormat::Qcow2,
                    target: "xvda".into(),
                    read_only: false,
                    cdrom: false,
                },
                DiskSpec {
                    path: img.join("config.img"),
                    format: DiskFormat::Raw,
                    target: "vdb".into(),
                    read_only: true,
                    cdrom: false,
                },
            ],
            nics: vec![NicSpec { mac: "52:54:00:12:34:56".into(), bridge: Some("xenbr0".into()), ip: Some("10.9.0.2".into()) }],
            console_log: run.join("console.log"),
            run_dir: run,
        }
    }
}

fn fake() -> Option<Fake> {
    let probe = Command::new("python3").args(["-c", "import ctypes; ctypes.CDLL('libxlutil.so.4.17')"]).output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!(
            "SKIP: libxlutil.so.4.17 (Debian package libxenmisc4.17) cannot be loaded, so configs cannot be checked \
             with Xen's parser; `make test` installs it"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-xl/xl");
    let xl = dir.path().join("xl");
    std::fs::write(
        &xl,
        format!(
            "#!/bin/sh\nFAKE_XL_DIR='{}' FAKE_XL_ACK_TIMEOUT=0.3 exec '{}' \"$@\"\n",
            dir.path().join("state").display(),
            script.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&xl, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(Fake { dir, xl })
}

#[test]
fn full_vm_sequence_through_xl_driver() {
    let Some(f) = fake() else { return };
    let d = f.driver();
    let spec = f.spec("vws-seq");
    assert_eq!(d.kind(), "xen");

    // create paused
    let info = d.create_paused(&spec).unwrap();
    assert_eq!((info.name.as_str(), info.state), ("vws-seq", VmState::Paused));
    let first_id = info.id.expect("domid from xl list -l");
    assert_eq!(d.state("vws-seq").unwrap(), Some(VmState::Paused));
    let cfg = spec.run_dir.join("xl.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("name = \"vws-seq\"") && text.contains("vdev=xvdb, access=ro"), "{text}");

    // unpause → running; pause → paused; pausing twice needs only one unpause from the driver
    d.unpause("vws-seq").unwrap();
    assert_eq!(d.state("vws-seq").unwrap(), Some(VmState::Running));
    d.pause("vws-seq").unwrap();
    d.pause("vws-seq").unwrap();
    assert_eq!(d.state("vws-seq").unwrap(), Some(VmState::Paused));
    d.unpause("vws-seq").unwrap();
    assert_eq!(d.state("vws-seq").unwrap(), Some(VmState::Running));
    // unpausing a running domain: xl complains and exits 0; the driver stays Ok
    d.unpause("vws-seq").unwrap();
    assert_eq!(d.state("vws-seq").unwrap(), Some(VmState::Running));

    // list: this domain, no Domain-0
    let listed = d.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].name.as_str(), listed[0].state, listed[0].id), ("vws-seq", VmState::Running, Some(first_id)));

    // save from *paused* (the driver lets the guest run so it can acknowledge the suspend)
    d.pause("vws-seq").unwrap();
    let save = f.dir.path().join("pool/vws-seq.save");
    std::fs::create_dir_all(save.parent().unwrap()).unwrap();
    d.save("vws-seq", &save).unwrap();
    assert!(std::fs::read(&save).unwrap().starts_with(b"Xen saved domain, xl format\n \0 \r"));
    assert_eq!(d.state("vws-seq").unwrap(), None, "xl save leaves no domain behind");

    // restore paused
    let info = d.restore_paused(&spec, &save).unwrap();
    assert_eq!(info.state, VmState::Paused);
    assert!(info.id.unwrap() > first_id);
    assert_eq!(d.state("vws-seq").unwrap(), Some(VmState::Paused));

    // graceful shutdown of the (paused) restored domain
    d.shutdown("vws-seq", Duration::from_secs(10)).unwrap();
    assert_eq!(d.state("vws-seq").unwrap(), None);

    // create again, reboot keeps it (on_reboot = restart, new domid), destroy, destroy again
    let again = d.create_paused(&spec).unwrap();
    d.unpause("vws-seq").unwrap();
    d.reboot("vws-seq").unwrap();
    let after = d.list().unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].state, VmState::Running);
    assert!(after[0].id > again.id, "a restarted domain has a new id: {after:?} vs {again:?}");
    d.destroy("vws-seq").unwrap();
    assert_eq!(d.state("vws-seq").unwrap(), None);
    d.destroy("vws-seq").unwrap();
    assert!(d.list().unwrap().is_empty());

    // the argv the driver used, as man xl defines them
    let calls = f.calls();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let save_s = save.to_str().unwrap().to_string();
    let has = |want: &[&str]| calls.iter().any(|c| c.iter().map(String::as_str).eq(want.iter().copied()));
    assert!(has(&["create", "-p", &cfg_s]), "{calls:?}");
    assert!(has(&["unpause", "vws-seq"]) && has(&["pause", "vws-seq"]));
    assert!(has(&["save", "vws-seq", &save_s]));
    assert!(has(&["restore", "-p", &cfg_s, &save_s]));
    assert!(has(&["shutdown", "-w", "vws-seq"]));
    assert!(has(&["reboot", "vws-seq"]) && has(&["destroy", "vws-seq"]));
    assert!(has(&["list", "-l"]) && has(&["list", "vws-seq"]));
    // Xen counts pauses: the driver never paused an already paused domain
    let pauses = calls.iter().filter(|c| c[0] == "pause").count();
    assert_eq!(pauses, 2, "pause on a paused domain is not sent again: {calls:?}");
}

#[test]
fn every_generated_config_passes_xens_parser() {
    let Some(f) = fake() else { return };
    let base = f.spec("vws-cfg");
    let mut variants = vec![base.clone()];
    // boot from disk (pygrub), no ramdisk, no command line, xl's default bridge, no IP
    let mut v = base.clone();
    v.kernel = None;
    v.ramdisk = None;
    v.cmdline = None;
    v.nics[0].bridge = None;
    v.nics[0].ip = None;
    variants.push(v);
    // a cdrom, a path with commas and colons, quotes in the command line, two NICs, 4 vcpus
    let mut v = base.clone();
    v.disks.push(DiskSpec {
        path: "/srv/iso/a,b:c.iso".into(),
        format: DiskFormat::Raw,
        target: "xvdc".into(),
        read_only: true,
        cdrom: true,
    });
    v.cmdline = Some(r#"console=hvc0 msg="a \"b\" \c""#.into());
    v.nics.push(NicSpec { mac: "00:16:3e:00:00:01".into(), bridge: Some("br-vws".into()), ip: None });
    v.vcpus = 4;
    v.memory_mib = 2048;
    variants.push(v);
    // no disks, no NICs
    let mut v = base.clone();
    v.disks.clear();
    v.nics.clear();
    variants.push(v);

    for (i, spec) in variants.iter().enumerate() {
        let mut spec = spec.clone();
        spec.run_dir = f.dir.path().join(format!("cfg{i}"));
        let path = f.driver().write_config(&spec).unwrap();
        // `xl create -n`: parse only (Xen's parser, every disk spec, every vif), print JSON
        let (code, out, err) = f.run(&["create", "-n", path.to_str().unwrap()]);
        assert_eq!(code, 0, "variant {i} refused:\n{err}\n{}", std::fs::read_to_string(&path).unwrap());
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["c_info"]["name"], "vws-cfg");
        assert_eq!(json["b_info"]["target_memkb"], spec.memory_mib as u64 * 1024);
        assert_eq!(json["disks"].as_array().unwrap().len(), spec.disks.len());
        assert_eq!(json["nics"].as_array().unwrap().len(), spec.nics.len());
        for (j, disk) in spec.disks.iter().enumerate() {
            assert_eq!(json["disks"][j]["pdev_path"], disk.path.to_str().unwrap(), "variant {i}");
        }
        if i == 2 {
            assert_eq!(json["b_info"]["cmdline"], r#"console=hvc0 msg="a \"b\" \c""#);
            assert_eq!(json["nics"][1]["bridge"], "br-vws");
        }
    }
}

#[test]
fn unknown_domains_are_not_found_and_gone_is_not_an_error_for_destroy() {
    let Some(f) = fake() else { return };
    let d = f.driver();
    assert!(matches!(d.pause("vws-none"), Err(VmmError::NotFound(n)) if n == "vws-none"));
    assert!(matches!(d.unpause("vws-none"), Err(VmmError::NotFound(_))));
    assert!(matches!(d.reboot("vws-none"), Err(VmmError::NotFound(_))));
    assert!(matches!(d.shutdown("vws-none", Duration::from_secs(1)), Err(VmmError::NotFound(_))));
    let save = f.dir.path().join("none.save");
    assert!(matches!(d.save("vws-none", &save), Err(VmmError::NotFound(_))));
    assert!(!save.exists());
    assert_eq!(d.state("vws-none").unwrap(), None);
    d.destroy("vws-none").unwrap();
}

#[test]
fn tool_failures_keep_xls_stderr() {
    let Some(f) = fake() else { return };
    let d = f.driver();
    // a kernel that is not there: libxc fails, create exits 3
    let mut spec = f.spec("vws-nokernel");
    spec.kernel = Some(f.dir.path().join("images/missing-vmlinuz"));
    match d.create_paused(&spec) {
        Err(VmmError::Tool { tool, code, stderr }) => {
            assert_eq!((tool.as_str(), code), ("xl create", Some(3)));
            assert!(stderr.contains("failed to open file") && stderr.contains("missing-vmlinuz"), "{stderr}");
            assert!(stderr.starts_with("Parsing config from "), "verbatim: {stderr}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.state("vws-nokernel").unwrap(), None);
    // a device name Xen does not know (xlu_disk_parse takes any vdev; libxl refuses it)
    let mut spec = f.spec("vws-badvdev");
    spec.disks[0].target = "nvme0n1".into();
    let e = d.create_paused(&spec).unwrap_err();
    assert!(
        matches!(&e, VmmError::Tool { code: Some(3), stderr, .. } if stderr.contains("Invalid or unsupported virtual disk identifier nvme0n1")),
        "{e}"
    );
    // a second domain with a name in use
    let spec = f.spec("vws-dup");
    d.create_paused(&spec).unwrap();
    let e = d.create_paused(&spec).unwrap_err();
    assert!(
        matches!(&e, VmmError::Tool { code: Some(3), stderr, .. } if stderr.contains("Domain with name \"vws-dup\" already exists.")),
        "{e}"
    );
    assert!(e.to_string().starts_with("xl create failed (exit Some(3)): Parsing config from"), "{e}");
    // a save file that is not one
    let bogus = f.dir.path().join("bogus.save");
    std::fs::write(&bogus, vec![b'x'; 100]).unwrap();
    d.destroy("vws-dup").unwrap();
    let e = d.restore_paused(&spec, &bogus).unwrap_err();
    assert!(
        matches!(&e, VmmError::Tool { tool, code: Some(1), stderr } if tool == "xl restore" && stderr.contains("File has wrong magic number")),
        "{e}"
    );
    // an xl that is not there
    let missing = XlDriver::new(f.dir.path().join("no-such-xl"));
    assert!(matches!(missing.list(), Err(VmmError::Io(m)) if m.contains("cannot run")));
}

#[test]
fn shutdown_timeout_destroys_the_domain() {
    let Some(f) = fake() else { return };
    let d = f.driver();
    let spec = f.spec("vws-hang");
    d.create_paused(&spec).unwrap();
    d.unpause("vws-hang").unwrap();
    // the guest acknowledges the poweroff request but never goes down
    std::fs::create_dir_all(f.state().join("guest")).unwrap();
    std::fs::write(f.state().join("guest/vws-hang"), "hang-shutdown\n").unwrap();
    let t0 = std::time::Instant::now();
    let e = d.shutdown("vws-hang", Duration::from_millis(600)).unwrap_err();
    assert!(matches!(&e, VmmError::Timeout { after, .. } if *after == Duration::from_millis(600)), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(600));
    assert_eq!(d.state("vws-hang").unwrap(), None, "forced: destroyed after the timeout");
    assert!(f.calls().iter().any(|c| c == &["destroy", "vws-hang"]));
}

#[test]
fn a_full_disk_while_saving_is_no_space_and_leaves_nothing() {
    let Some(f) = fake() else { return };
    let d = f.driver();
    d.create_paused(&f.spec("vws-full")).unwrap();
    // a symlink to /dev/full: every write fails with ENOSPC; the driver removes only regular
    // files, so the link (and /dev/full) stay as they are
    let save = f.dir.path().join("full.save");
    std::os::unix::fs::symlink("/dev/full", &save).unwrap();
    let e = d.save("vws-full", &save).unwrap_err();
    assert!(matches!(&e, VmmError::NoSpace(m) if m.contains("No space left on device")), "{e}");
    assert!(Path::new("/dev/full").exists());
    assert_eq!(d.state("vws-full").unwrap(), Some(VmState::Running), "xl resumes the domain when a save fails");
}

#[test]
fn crashed_domains_are_reported_as_crashed() {
    let Some(f) = fake() else { return };
    let d = f.driver();
    d.create_paused(&f.spec("vws-crash")).unwrap();
    // what xl's monitor leaves for on_crash = "preserve": shut down with reason "crash"
    let p = f.state().join("domains/vws-crash.json");
    let mut dom: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    dom["status"] = "crashed".into();
    dom["reason"] = 3.into();
    std::fs::write(&p, dom.to_string()).unwrap();
    assert_eq!(d.state("vws-crash").unwrap(), Some(VmState::Crashed));
    assert_eq!(d.list().unwrap()[0].state, VmState::Crashed);
    d.destroy("vws-crash").unwrap();
    assert!(d.list().unwrap().is_empty());
}

// ---- the fake is strict: what real xl refuses is refused, with xl's texts and exit codes ----

fn write(f: &Fake, name: &str, text: &str) -> String {
    let p = f.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn good_config(f: &Fake) -> String {
    let img = f.images();
    format!(
        "name = \"vws-strict\"\nmemory = 64\nvcpus = 1\nkernel = \"{k}\"\n\
         disk = [ \"format=raw, vdev=xvda, access=rw, target={d}\" ]\nvif = [ \"mac=00:16:3e:00:00:2a\" ]\n",
        k = img.join("vmlinuz").display(),
        d = img.join("config.img").display()
    )
}

#[test]
fn fake_refuses_bad_disk_specs_with_libxlutils_words() {
    let Some(f) = fake() else { return };
    let good = good_config(&f);
    let p = write(&f, "ok.cfg", &good);
    assert_eq!(f.run(&["create", "-n", &p]).0, 0);

    let bad = good.replace("access=rw", "acess=r");
    let p = write(&f, "acess.cfg", &bad);
    let (code, _, err) = f.run(&["create", "-p", &p]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("config parsing error in disk specification: unknown parameter: near `acess=r,'"), "{err}");

    let p = write(&f, "qcow3.cfg", &good.replace("format=raw", "format=qcow3"));
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown value for format: near `qcow3'"), "{err}");

    // target= must come last: it swallows the rest of the string
    let p = write(
        &f,
        "target.cfg",
        &good.replace("\"format=raw, vdev=xvda, access=rw, target=", "\"target=/x,vdev=hda,format=raw, target="),
    );
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!(code, 1);
    assert!(err.contains("no vdev specified"), "{err}");

    // a syntax error (xlu_cfg_readdata → EINVAL)
    let p = write(&f, "syntax.cfg", &good.replace("vif = [ \"mac=00:16:3e:00:00:2a\" ]", "vif = [ \"mac=00:16:3e:00:00:2a\""));
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!(code, 1);
    assert!(err.contains("config parsing error near") && err.contains("Failed to parse config: Invalid argument"), "{err}");

    // no name
    let p = write(&f, "noname.cfg", &good.replace("name = \"vws-strict\"\n", ""));
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!((code, err.trim_end().lines().last()), (1, Some("Domain name must be specified.")));

    // a bad action and a bad vif
    let p = write(&f, "action.cfg", &format!("{good}on_crash = \"explode\"\n"));
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!(code, 1);
    assert!(err.contains("Unknown on_crash action \"explode\" specified"), "{err}");
    let p = write(&f, "mac.cfg", &good.replace("mac=00:16:3e:00:00:2a", "mac=zz:16:3e:00:00:2a"));
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!(code, 64);
    assert!(err.contains("Invalid parameter `mac'."), "{err}");
    let p = write(&f, "vifkey.cfg", &good.replace("mac=00:16:3e:00:00:2a", "mac=00:16:3e:00:00:2a,brige=xenbr0"));
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!(code, 64);
    assert!(err.contains("unrecognized argument `brige=xenbr0'"), "{err}");
    // a misspelt key real xl would silently ignore
    let p = write(&f, "typo.cfg", &good.replace("memory = 64", "memroy = 64"));
    let (code, _, err) = f.run(&["create", &p]);
    assert_eq!(code, 64);
    assert!(err.contains("`memroy' is not an xl.cfg(5) key"), "{err}");
    // nothing of the refused configs was built
    let (_, out, _) = f.run(&["list"]);
    assert_eq!(out.lines().count(), 2, "header and Domain-0 only:\n{out}");
}

#[test]
fn fake_refuses_relative_paths_unknown_options_and_subcommands() {
    let Some(f) = fake() else { return };
    let good = good_config(&f);
    let abs = write(&f, "rel.cfg", &good);
    // a relative config path, even one that exists from the current directory
    let out = Command::new(&f.xl).args(["create", "rel.cfg"]).current_dir(f.dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64));
    assert!(err.contains("Failed to read config file: rel.cfg: No such file or directory"), "{err}");
    // unknown options: exit 2
    let (code, _, err) = f.run(&["create", "-z", &abs]);
    assert_eq!((code, err.as_str()), (2, "option `z' not supported.\n"));
    let (code, _, err) = f.run(&["pause", "-x", "vws-strict"]);
    assert_eq!((code, err.as_str()), (2, "option `x' not supported.\n"));
    let (code, _, _) = f.run(&["shutdown", "--wiat", "vws-strict"]);
    assert_eq!(code, 2);
    // a missing argument: exit 2 with usage
    let (code, out, err) = f.run(&["unpause"]);
    assert_eq!(code, 2);
    assert_eq!(err, "'xl unpause' requires at least 1 argument.\n\n");
    assert!(out.starts_with("Usage: xl [-vtTf] unpause <Domain>"), "{out}");
    // an unknown subcommand and an unknown global option: exit 1
    assert_eq!(f.run(&["frobnicate", "x"]), (1, String::new(), "command not implemented\n".to_string()));
    assert_eq!(f.run(&["-Q", "list"]).0, 1);
    // list takes at most one domain
    assert_eq!(f.run(&["list", "a", "b"]).0, 1);
    // -h is help, exit 0
    let (code, out, _) = f.run(&["create", "-h"]);
    assert_eq!(code, 0);
    assert!(out.contains("-p                      Leave the domain paused after it is created."));
}

#[test]
fn fake_knows_unknown_domains_and_wrong_states() {
    let Some(f) = fake() else { return };
    let p = write(&f, "s.cfg", &good_config(&f));
    for sub in ["pause", "unpause", "destroy", "shutdown", "reboot"] {
        assert_eq!(f.run(&[sub, "vws-x"]), (1, String::new(), "vws-x is an invalid domain identifier (rc=-6)\n".into()), "{sub}");
    }
    assert_eq!(f.run(&["list", "vws-x"]).2, "vws-x is an invalid domain identifier (rc=-6)\n");
    assert_eq!(f.run(&["list", "77"]), (1, String::new(), "Error: Domain '77' does not exist.\n".into()));
    assert_eq!(f.run(&["save", "vws-x", "/tmp/never"]).0, 1);

    assert_eq!(f.run(&["create", "-p", &p]).0, 0);
    // shutdown of a paused domain: the guest cannot acknowledge (-9 = ERROR_TIMEDOUT)
    let (code, _, err) = f.run(&["shutdown", "vws-strict"]);
    assert_eq!(code, 1);
    assert!(err.contains("guest didn't acknowledge control request: -9") && err.ends_with("shutdown failed (rc=-9)\n"), "{err}");
    // … and the request stays pending: the first unpause lets the guest power off
    assert_eq!(f.run(&["unpause", "vws-strict"]).0, 0);
    assert_eq!(f.run(&["list", "vws-strict"]).0, 1);

    assert_eq!(f.run(&["create", "-p", &p]).0, 0);
    assert_eq!(f.run(&["unpause", "vws-strict"]).0, 0);
    // unpausing a running domain: Xen says EINVAL, xl exits 0 anyway
    let (code, _, err) = f.run(&["unpause", "vws-strict"]);
    assert_eq!(code, 0);
    assert!(err.contains("Unpausing domain: Invalid argument"), "{err}");
    // pauses are counted
    f.run(&["pause", "vws-strict"]);
    f.run(&["pause", "vws-strict"]);
    f.run(&["unpause", "vws-strict"]);
    assert!(f.run(&["list", "vws-strict"]).1.contains("--p---"));
    f.run(&["unpause", "vws-strict"]);
    assert!(f.run(&["list", "vws-strict"]).1.contains("-b----"));
    // Domain-0 is not destroyed without -f
    let (code, _, err) = f.run(&["destroy", "0"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Not destroying domain 0; use -f to force."));
}
