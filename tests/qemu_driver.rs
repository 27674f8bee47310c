//! The QEMU driver against real QEMU booting the demo guest: paused creation runs no guest
//! instruction, unpause boots to the ready line, pause/unpause, save to a file (the process goes),
//! restore paused from it, reboot, graceful power-off, destroy, and what `list` sees throughout.

mod common;

use common::guest::{self, BOOT, READY};
use std::path::Path;
use std::time::Duration;
use vws::host::qemu::{Accel, QemuConfig, QemuDriver};
use vws::host::vmm::{DiskFormat, DiskSpec, NicSpec, VmSpec, VmState, Vmm, VmmError};

fn driver(root: &Path) -> QemuDriver {
    QemuDriver::new(QemuConfig {
        binary: "qemu-system-x86_64".into(),
        accel: Accel::Tcg,
        run_root: root.to_path_buf(),
        probe: None,
        user_net: None,
    })
}

fn spec(root: &Path, name: &str, overlay: &Path) -> VmSpec {
    let g = guest::dir();
    VmSpec {
        name: name.into(),
        memory_mib: 128,
        vcpus: 1,
        kernel: Some(g.join("vmlinuz")),
        ramdisk: Some(g.join("initrd.img")),
        cmdline: Some("console=ttyS0 quiet".into()),
        disks: vec![DiskSpec {
            path: overlay.to_path_buf(),
            format: DiskFormat::Qcow2,
            target: "vda".into(),
            read_only: false,
            cdrom: false,
        }],
        nics: vec![NicSpec { mac: "52:54:00:aa:00:01".into(), bridge: None, ip: None }],
        console_log: root.join(format!("{name}.console")),
        run_dir: root.join(name),
    }
}

fn overlay(dir: &Path) -> std::path::PathBuf {
    let o = dir.join("overlay.qcow2");
    let base = guest::dir().join("root.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&o)
        .status()
        .unwrap();
    assert!(st.success());
    o
}

#[test]
fn the_whole_life_of_a_vm() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let d = driver(&root);
    let s = spec(&root, "vws-drv", &overlay(tmp.path()));

    let info = d.create_paused(&s).expect("create paused");
    assert_eq!(info.state, VmState::Paused);
    let pid = info.id.expect("pid");
    assert_eq!(d.state("vws-drv").unwrap(), Some(VmState::Paused));
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&s.console_log).unwrap_or_default();
    assert!(log.is_empty(), "a VM created paused ran: {log}");
    let listed = d.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].name.as_str(), listed[0].id), ("vws-drv", Some(pid)));

    // A second VM of the same name is refused with the reason, and the first one is untouched.
    let e = d.create_paused(&s).unwrap_err();
    assert!(e.to_string().contains("already runs"), "{e}");

    d.unpause("vws-drv").unwrap();
    assert_eq!(d.state("vws-drv").unwrap(), Some(VmState::Running));
    let text = guest::wait_for(&s.console_log, READY, 1, BOOT);
    assert!(text.contains("disk=VWS-DISK-OK"), "the overlay's backing image is readable: {text}");

    d.pause("vws-drv").unwrap();
    assert_eq!(d.state("vws-drv").unwrap(), Some(VmState::Paused));
    d.unpause("vws-drv").unwrap();

    let save = tmp.path().join("vm.state");
    d.save("vws-drv", &save).expect("save");
    assert!(save.metadata().unwrap().len() > 1 << 20, "a memory image was written");
    assert_eq!(d.state("vws-drv").unwrap(), None, "the VM is gone after save");
    assert!(d.list().unwrap().is_empty());

    let info = d.restore_paused(&s, &save).expect("restore");
    assert_eq!(info.state, VmState::Paused);
    assert_eq!(d.state("vws-drv").unwrap(), Some(VmState::Paused));
    d.unpause("vws-drv").unwrap();
    // The restored guest is alive: a reset boots it again to a second ready line.
    d.reboot("vws-drv").unwrap();
    guest::wait_for(&s.console_log, READY, 2, BOOT);

    // Graceful power-off: the guest sees the ACPI button, says so, and QEMU exits.
    d.shutdown("vws-drv", BOOT).expect("graceful shutdown");
    let text = std::fs::read_to_string(&s.console_log).unwrap();
    assert!(text.contains("VWS-GUEST-POWEROFF"), "{text}");
    assert_eq!(d.state("vws-drv").unwrap(), None);
    assert!(matches!(d.unpause("vws-drv"), Err(VmmError::NotFound(_))));
    d.destroy("vws-drv").expect("destroying a gone VM is Ok");

    // Destroy of a paused VM: gone at once, confirmed.
    d.create_paused(&s).unwrap();
    d.destroy("vws-drv").unwrap();
    assert_eq!(d.state("vws-drv").unwrap(), None);
    assert!(!root.join("vws-drv/qmp.sock").exists());
}

#[test]
fn a_guest_that_ignores_the_power_button_is_forced_off_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let d = driver(&root);
    let s = spec(&root, "vws-stubborn", &overlay(tmp.path()));
    // Paused before its first instruction, the guest has no ACPI handler running yet; reset to
    // the firmware and never booted, it cannot power off: the driver must force it.
    d.create_paused(&s).unwrap();
    let e = d.shutdown("vws-stubborn", Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, VmmError::Timeout { .. }), "{e}");
    assert_eq!(d.state("vws-stubborn").unwrap(), None, "forced off");
}

#[test]
fn qemu_refusing_its_arguments_is_reported_with_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let d = driver(&root);
    let mut s = spec(&root, "vws-bad", &tmp.path().join("missing.qcow2"));
    s.kernel = Some(tmp.path().join("no-kernel"));
    let e = d.create_paused(&s).unwrap_err();
    match &e {
        VmmError::Tool { stderr, .. } => assert!(stderr.contains("missing.qcow2") || stderr.contains("no-kernel"), "{stderr}"),
        other => panic!("expected the tool's error, got {other:?}"),
    }
    assert!(d.list().unwrap().is_empty(), "no process left");
}
