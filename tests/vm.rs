//! Workspaces that run: a real vwsd with the QEMU driver booting the demo guest (TCG).
//! The full life cycle through the Manager's operations with states and properties checked at
//! every step and the guest printing its IP and certificate; a QEMU killed from outside
//! (reconciliation → Corrupted, cleanup works); kill -9 of vwsd after deploy and after start
//! (restart → consistent, nothing leaked); 200 concurrent deploys on a 50-address pool.

mod common;

use common::guest::{self, BOOT, READY};
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MANAGER: &str = "http://vws.dev/2026/11/workspace/WorkspaceManagerPortType";

fn host_conf(first: &str, last: &str, ca: Option<(PathBuf, PathBuf)>) -> String {
    let g = guest::dir();
    let mut s = format!(
        "[vmm]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel = \"{}\"\nramdisk = \"{}\"\nstop_timeout_secs = 120\nready_timeout_secs = 180\n\
         [network]\nsubnet = \"10.20.0.0/24\"\ngateway = \"10.20.0.1\"\nfirst = \"{first}\"\nlast = \"{last}\"\n\
         [host]\nreconcile_secs = 1\n",
        g.join("vmlinuz").display(),
        g.join("initrd.img").display()
    );
    if let Some((c, k)) = ca {
        s.push_str(&format!("[credentials]\nca_cert = \"{}\"\nca_key = \"{}\"\n", c.display(), k.display()));
    }
    s
}

fn vm_server(first: &str, last: &str, ca: Option<(PathBuf, PathBuf)>) -> Server {
    Server::start_with(Conf {
        staging: format!("file_roots = [\"{}\"]\nprogress_interval_ms = 50\n", guest::dir().display()),
        host: host_conf(first, last, ca),
        ..Default::default()
    })
}

fn demo_description() -> String {
    format!(
        "<virtualWorkspace xmlns=\"{VWS}\"><category><name>vm</name><vmm>qemu</vmm></category>\
         <hardware><ram min=\"128\" max=\"256\"/><disk name=\"root\" type=\"image\" access=\"rw\">\
         <image>file://{}/root.qcow2</image></disk></hardware></virtualWorkspace>",
        guest::dir().display()
    )
}

fn op(s: &Server, key: &str, name: &str, body: &str) -> HttpResponse {
    let action = format!("{MANAGER}/{name}Request");
    let payload =
        if body.is_empty() { format!("<{name} xmlns=\"{VWS}\"/>") } else { format!("<{name} xmlns=\"{VWS}\">{body}</{name}>") };
    s.call("WorkspaceService", &Server::ws_key_header(key), &action, &payload)
}

fn state_of(r: &HttpResponse) -> String {
    between(&r.body, "CurrentState xmlns:n=\"http://www.globus.org/2008/06/workspace\">", "<").unwrap_or("").to_string()
}

/// Runs an operation that must succeed; returns the state it answered with.
fn ok(s: &Server, key: &str, name: &str) -> String {
    let r = op(s, key, name, "");
    assert_eq!(r.status, 200, "{name}: {}\nlog:\n{}", r.body, s.log());
    state_of(&r)
}

fn prop(s: &Server, key: &str, local: &str) -> String {
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    let payload =
        format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:{local}</wsrp:GetResourceProperty>");
    let r = s.call("WorkspaceService", &Server::ws_key_header(key), &action, &payload);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn text_prop(s: &Server, key: &str, local: &str) -> Option<String> {
    let b = prop(s, key, local);
    between(&b, &format!("<w:{local} xmlns:w=\"{VWS}\">"), "<").map(str::to_string)
}

fn current(s: &Server, key: &str) -> String {
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    let payload =
        format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:n=\"{NIMBUS}\">n:CurrentState</wsrp:GetResourceProperty>");
    let r = s.call("WorkspaceService", &Server::ws_key_header(key), &action, &payload);
    state_of(&r)
}

/// Waits until the workspace leaves `transitional`; returns the state it reached.
fn settle(s: &Server, key: &str, transitional: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let st = current(s, key);
        if st != transitional {
            return st;
        }
        assert!(Instant::now() < deadline, "still {transitional} after {timeout:?}; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live QEMU processes whose QMP socket is under this server's data directory.
fn qemus(s: &Server) -> Vec<u32> {
    qemus_in(&s.data_dir())
}

fn qemus_in(data: &Path) -> Vec<u32> {
    let root = data.join("run");
    let root = root.canonicalize().unwrap_or(root);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if cmd.starts_with("qemu-system") && cmd.contains(&format!("unix:{}/", root.display())) && !zombie {
            out.push(pid);
        }
    }
    out
}

fn leases(s: &Server) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open(s.data_dir().join("vws.db")).unwrap();
    let mut st = c.prepare("SELECT owner, ip FROM leases").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
}

fn deploy_and_wait(s: &Server, key: &str) {
    let r = op(s, key, "deploy", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(state_of(&r), "Staging");
    let st = settle(s, key, "Staging", BOOT);
    assert_eq!(st, "Staged", "staging: {}\nlog:\n{}", prop(s, key, "staging"), s.log());
}

fn sha256_file(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_full_life_cycle_on_real_qemu() {
    let ca = common::gsi::kit().ca();
    let s = vm_server("10.20.0.10", "10.20.0.12", Some(ca.clone()));
    let base = guest::dir().join("root.qcow2");
    let base_sum = sha256_file(&base);
    let key = s.create_workspace_from(&demo_description());

    // Not deployed yet: start is refused with the state and what is allowed.
    let r = op(&s, &key, "start", "");
    assert_eq!(r.status, 500);
    assert_eq!(r.fault_kind().as_deref(), Some("InvalidStateFault"), "{}", r.body);
    assert!(r.body.contains("is Unstaged") && r.body.contains("allowed: deploy, destroy"), "{}", r.body);

    deploy_and_wait(&s, &key);
    let ip = text_prop(&s, &key, "ip").expect("ip");
    assert_eq!(ip, "10.20.0.10");
    let mac = text_prop(&s, &key, "mac").expect("mac");
    assert!(mac.starts_with("52:54:00:"), "{mac}");
    assert!(text_prop(&s, &key, "host").is_some_and(|h| !h.is_empty()));
    let console = PathBuf::from(text_prop(&s, &key, "consoleLog").expect("console"));
    let cert = prop(&s, &key, "certificate");
    let subject = between(&cert, "subject=\"", "\"").expect("subject").to_string();
    let fingerprint = between(&cert, "sha256=\"", "\"").expect("sha256").to_string();
    assert!(subject.ends_with(&format!("/CN={key}")), "{subject}");
    // Signed by the configured CA (the GSI kit's).
    let c = &cert[cert.find("<w:certificate").expect("certificate property")..];
    let pem = between(c, "\">", "</w:certificate>").unwrap().to_string();
    let pem_path = s.dir.path().join("ws-cert.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let v = std::process::Command::new("openssl").args(["verify", "-CAfile"]).arg(&ca.0).arg(&pem_path).output().unwrap();
    assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    assert_eq!(qemus(&s).len(), 1, "deploy defines the VM, paused");
    assert!(std::fs::read_to_string(&console).unwrap_or_default().is_empty(), "paused before its first instruction");
    let r = op(&s, &key, "pause", "");
    assert!(r.body.contains("is Staged") && r.body.contains("allowed: start, undeploy, destroy"), "{}", r.body);

    assert_eq!(ok(&s, &key, "start"), "Running");
    let text = guest::wait_for(&console, READY, 1, BOOT);
    assert!(text.contains(&format!("VWS-GUEST-IP ip={ip}/24 gw=10.20.0.1 mac={mac}")), "{text}");
    assert!(text.contains(&format!("VWS-GUEST-CERT sha256={fingerprint} subject={subject}")), "{text}");
    assert!(text.contains("disk=VWS-DISK-OK"), "{text}");
    assert!(text_prop(&s, &key, "startTime").is_some());

    assert_eq!(ok(&s, &key, "pause"), "Paused");
    assert_eq!(ok(&s, &key, "unpause"), "Running");

    assert_eq!(ok(&s, &key, "save"), "Saving");
    assert_eq!(settle(&s, &key, "Saving", BOOT), "Saved", "{}", s.log());
    assert!(qemus(&s).is_empty(), "the VM is gone after save");
    assert!(s.data_dir().join(format!("pool/{key}/memory.state")).is_file());
    assert_eq!(leases(&s).len(), 1, "a saved workspace keeps its address");

    assert_eq!(ok(&s, &key, "restore"), "Restoring");
    assert_eq!(settle(&s, &key, "Restoring", BOOT), "Running", "{}", s.log());
    assert_eq!(qemus(&s).len(), 1);
    assert!(!s.data_dir().join(format!("pool/{key}/memory.state")).exists(), "save file removed after restore");

    assert_eq!(ok(&s, &key, "stop"), "Stopping");
    assert_eq!(settle(&s, &key, "Stopping", BOOT), "Staged", "{}", s.log());
    assert!(std::fs::read_to_string(&console).unwrap().contains("VWS-GUEST-POWEROFF"), "graceful: the guest saw the button");
    assert!(qemus(&s).is_empty());

    assert_eq!(ok(&s, &key, "start"), "Running");
    guest::wait_for(&console, READY, 2, BOOT);
    assert_eq!(text_prop(&s, &key, "ip").as_deref(), Some("10.20.0.10"));
    assert_eq!(text_prop(&s, &key, "mac").as_deref(), Some(mac.as_str()), "the MAC is stable");

    assert_eq!(ok(&s, &key, "undeploy"), "Unstaged");
    assert!(qemus(&s).is_empty());
    assert!(leases(&s).is_empty(), "address freed after the VM is gone");
    assert!(!s.data_dir().join(format!("pool/{key}")).exists(), "overlay and pool files removed");
    assert_eq!(sha256_file(&base), base_sum, "the staged image is never written");

    let r = s.call(
        "WorkspaceService",
        &Server::ws_key_header(&key),
        &format!("{WSRL_ACTION}/Destroy"),
        &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_qemu_killed_from_outside_makes_the_workspace_corrupted_and_cleanup_works() {
    let s = vm_server("10.20.0.20", "10.20.0.21", None);
    let key = s.create_workspace_from(&demo_description());
    deploy_and_wait(&s, &key);
    assert_eq!(ok(&s, &key, "start"), "Running");
    let pids = qemus(&s);
    assert_eq!(pids.len(), 1);
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    // Reconciliation runs every second here.
    let deadline = Instant::now() + Duration::from_secs(30);
    while current(&s, &key) != "Corrupted" {
        assert!(Instant::now() < deadline, "not Corrupted; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let cause = text_prop(&s, &key, "cause").expect("cause");
    assert!(cause.contains("is gone"), "{cause}");
    let r = op(&s, &key, "start", "");
    assert_eq!(r.fault_kind().as_deref(), Some("InvalidStateFault"));
    assert!(r.body.contains("allowed: undeploy, destroy"), "{}", r.body);
    assert_eq!(leases(&s).len(), 1, "held until cleanup");
    assert_eq!(ok(&s, &key, "undeploy"), "Unstaged");
    assert!(leases(&s).is_empty());
    assert!(!s.data_dir().join(format!("pool/{key}")).exists());
}

#[test]
fn kill_9_of_vwsd_after_deploy_and_after_start_leaves_everything_consistent() {
    let mut s = vm_server("10.20.0.30", "10.20.0.31", None);
    let key = s.create_workspace_from(&demo_description());
    deploy_and_wait(&s, &key);
    s.kill9();
    s.restart();
    assert_eq!(current(&s, &key), "Staged");
    assert_eq!(qemus(&s).len(), 1, "the paused VM survived and is still owned");
    assert_eq!(ok(&s, &key, "start"), "Running");
    let console = PathBuf::from(text_prop(&s, &key, "consoleLog").unwrap());
    guest::wait_for(&console, READY, 1, BOOT);
    s.kill9();
    s.restart();
    assert_eq!(current(&s, &key), "Running", "{}", s.log());
    assert_eq!(qemus(&s).len(), 1);
    assert_eq!(ok(&s, &key, "pause"), "Paused", "the restarted vwsd controls the surviving VM");
    // A deploy interrupted mid-way (staging) by kill -9: restarted, finished, no second VM.
    let key2 = s.create_workspace_from(&demo_description());
    let r = op(&s, &key2, "deploy", "");
    assert_eq!(state_of(&r), "Staging");
    s.kill9();
    s.restart();
    let st = settle(&s, &key2, "Staging", BOOT);
    assert_eq!(st, "Staged", "{}", s.log());
    assert_eq!(qemus(&s).len(), 2);
    let ips: Vec<String> = leases(&s).into_iter().map(|l| l.1).collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    for k in [&key, &key2] {
        assert_eq!(ok(&s, k, "undeploy"), "Unstaged");
    }
    assert!(qemus(&s).is_empty());
    assert!(leases(&s).is_empty());
}

#[test]
fn two_hundred_concurrent_deploys_on_a_fifty_address_pool() {
    let s = vm_server("10.20.0.100", "10.20.0.149", None);
    let keys: Vec<String> = (0..200).map(|_| s.create_workspace_from(&demo_description())).collect();
    let results: Vec<(String, HttpResponse)> = std::thread::scope(|sc| {
        let hs: Vec<_> = keys
            .chunks(20)
            .map(|chunk| {
                let s = &s;
                sc.spawn(move || chunk.iter().map(|k| (k.clone(), op(s, k, "deploy", ""))).collect::<Vec<_>>())
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<&String> = results.iter().filter(|(_, r)| r.status == 200).map(|(k, _)| k).collect();
    let lost: Vec<&HttpResponse> = results.iter().filter(|(_, r)| r.status != 200).map(|(_, r)| r).collect();
    assert_eq!(won.len(), 50, "exactly the pool's size");
    assert_eq!(lost.len(), 150);
    for r in &lost {
        assert_eq!(r.fault_kind().as_deref(), Some("ResourceExhaustedFault"), "{}", r.body);
        assert!(r.body.contains("exhausted"), "{}", r.body);
    }
    let ips: std::collections::HashSet<String> = leases(&s).into_iter().map(|l| l.1).collect();
    assert_eq!(ips.len(), 50, "50 distinct addresses");
    // The losers are untouched (Unstaged) and may deploy later; destroying everything leaks nothing.
    for (k, r) in &results {
        if r.status != 200 {
            assert_eq!(current(&s, k), "Unstaged");
        }
    }
    for k in &keys {
        let r = s.call(
            "WorkspaceService",
            &Server::ws_key_header(k),
            &format!("{WSRL_ACTION}/Destroy"),
            &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(qemus(&s).is_empty() && leases(&s).is_empty()) {
        assert!(Instant::now() < deadline, "leaked: {} qemu, {} leases\n{}", qemus(&s).len(), leases(&s).len(), s.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The address is freed last (Host::teardown): once none is leased, nothing else is left.
    let pool: Vec<_> = std::fs::read_dir(s.data_dir().join("pool")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(pool.is_empty(), "pool directories left: {pool:?}\n{}", s.log());
    let run: Vec<_> = std::fs::read_dir(s.data_dir().join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vws-"))
        .collect();
    assert!(run.is_empty(), "VM run directories left: {run:?}");
}

/// A wrapper running the strict fake `xl` (tests/fake-xl/xl) on its own state directory; None
/// (with a SKIP line) when Xen's libxlutil cannot be loaded to validate configs.
fn fake_xl(dir: &Path) -> Option<PathBuf> {
    let probe = std::process::Command::new("python3").args(["-c", "import ctypes; ctypes.CDLL('libxlutil.so.4.17')"]).output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!("SKIP: libxlutil.so.4.17 (Debian libxenmisc4.17) cannot be loaded; `make test` installs it");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-xl/xl");
    let xl = dir.join("xl");
    std::fs::write(
        &xl,
        format!(
            "#!/bin/sh\nFAKE_XL_DIR='{}' FAKE_XL_ACK_TIMEOUT=0.3 exec '{}' \"$@\"\n",
            dir.join("xl-state").display(),
            script.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&xl, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(xl)
}

/// `xl list` as (name, flags) of every domain but Domain-0.
fn xl_domains(xl: &Path) -> Vec<(String, String)> {
    let out = std::process::Command::new(xl).arg("list").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && f[0] != "Domain-0").then(|| (f[0].to_string(), f[4].to_string()))
        })
        .collect()
}

fn manager_prop(s: &Server, local: &str) -> String {
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    let payload =
        format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:{local}</wsrp:GetResourceProperty>");
    let r = s.call("WorkspaceManagerService", "", &action, &payload);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[test]
fn the_full_life_cycle_through_vwsd_on_xen_xl() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(xl) = fake_xl(tmp.path()) else { return };
    let g = guest::dir();
    let host = format!(
        "[vmm]\ndriver = \"xen\"\nxl = \"{}\"\nkernel = \"{}\"\nramdisk = \"{}\"\nstop_timeout_secs = 5\n\
         [network]\nsubnet = \"10.21.0.0/24\"\ngateway = \"10.21.0.1\"\nfirst = \"10.21.0.10\"\nlast = \"10.21.0.11\"\n\
         [host]\nreconcile_secs = 1\n",
        xl.display(),
        g.join("vmlinuz").display(),
        g.join("initrd.img").display()
    );
    // A domain started by hand, which no workspace owns: listed as an orphan, never touched.
    let stray_cfg = tmp.path().join("stray.cfg");
    std::fs::write(
        &stray_cfg,
        format!("name = \"stray\"\ntype = \"pv\"\nmemory = 64\nkernel = \"{}\"\n", g.join("vmlinuz").display()),
    )
    .unwrap();
    let out = std::process::Command::new(&xl).arg("create").arg(&stray_cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let s = Server::start_with(Conf {
        staging: format!("file_roots = [\"{}\"]\nprogress_interval_ms = 50\n", g.display()),
        host,
        ..Default::default()
    });
    assert!(manager_prop(&s, "driver").contains(">xen</w:driver>"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = manager_prop(&s, "orphans");
        if o.contains("name=\"stray\" driver=\"xen\" id=\"") {
            assert!(o.contains("state=\"running\" since=\""), "{o}");
            break;
        }
        assert!(Instant::now() < deadline, "stray domain not listed: {o}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let key = s.create_workspace_from(&demo_description());
    let vm = format!("vws-{key}");
    let dom = |xl: &Path| xl_domains(xl).into_iter().find(|d| d.0 == vm).map(|d| d.1);
    deploy_and_wait(&s, &key);
    assert_eq!(text_prop(&s, &key, "ip").as_deref(), Some("10.21.0.10"));
    let mac = text_prop(&s, &key, "mac").expect("mac");
    assert!(prop(&s, &key, "certificate").contains(&format!("/CN={key}")));
    assert!(dom(&xl).is_some_and(|f| f.contains('p')), "defined paused: {:?}", xl_domains(&xl));
    let cfg = std::fs::read_to_string(s.data_dir().join(format!("run/{vm}/xl.cfg"))).expect("xl.cfg");
    assert!(cfg.contains(&format!("mac={mac}")) && cfg.contains("type = \"pv\""), "{cfg}");
    assert!(cfg.contains(&format!("pool/{key}/overlay00.qcow2")) && cfg.contains("config.img"), "{cfg}");

    assert_eq!(ok(&s, &key, "start"), "Running");
    assert!(dom(&xl).is_some_and(|f| !f.contains('p')), "{:?}", xl_domains(&xl));
    assert_eq!(ok(&s, &key, "pause"), "Paused");
    assert!(dom(&xl).is_some_and(|f| f.contains('p')));
    assert_eq!(ok(&s, &key, "unpause"), "Running");
    assert!(dom(&xl).is_some_and(|f| !f.contains('p')));

    assert_eq!(ok(&s, &key, "save"), "Saving");
    assert_eq!(settle(&s, &key, "Saving", Duration::from_secs(60)), "Saved", "{}", s.log());
    assert!(dom(&xl).is_none(), "saved: the domain is gone");
    assert!(s.data_dir().join(format!("pool/{key}/memory.state")).is_file());
    assert_eq!(ok(&s, &key, "restore"), "Restoring");
    assert_eq!(settle(&s, &key, "Restoring", Duration::from_secs(60)), "Running", "{}", s.log());
    assert!(dom(&xl).is_some_and(|f| !f.contains('p')), "restored and running: {:?}", xl_domains(&xl));
    assert!(!s.data_dir().join(format!("pool/{key}/memory.state")).exists());

    assert_eq!(ok(&s, &key, "stop"), "Stopping");
    assert_eq!(settle(&s, &key, "Stopping", Duration::from_secs(60)), "Staged", "{}", s.log());
    assert!(dom(&xl).is_none(), "stopped: the domain is gone");
    assert!(text_prop(&s, &key, "cause").is_none(), "graceful, not forced");
    assert_eq!(ok(&s, &key, "start"), "Running");
    assert!(dom(&xl).is_some());
    assert_eq!(text_prop(&s, &key, "mac").as_deref(), Some(mac.as_str()), "the MAC is stable");

    assert_eq!(ok(&s, &key, "undeploy"), "Unstaged");
    assert!(dom(&xl).is_none());
    assert!(leases(&s).is_empty(), "address freed once the domain is gone");
    assert!(!s.data_dir().join(format!("pool/{key}")).exists());
    assert!(!s.data_dir().join(format!("run/{vm}")).exists());
    let r = s.call(
        "WorkspaceService",
        &Server::ws_key_header(&key),
        &format!("{WSRL_ACTION}/Destroy"),
        &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Every config went through Xen's parser (the fake refuses what it rejects): the calls.
    let calls = std::fs::read_to_string(tmp.path().join("xl-state/calls.log")).unwrap();
    let verbs: Vec<String> = calls
        .lines()
        .map(|l| serde_json::from_str::<Vec<String>>(l).unwrap())
        .filter(|a| a.first().is_some_and(|v| ["create", "restore", "save", "shutdown", "destroy"].contains(&v.as_str())))
        .map(|a| a[..2.min(a.len())].join(" "))
        .collect();
    assert!(verbs.iter().filter(|v| v.as_str() == "create -p").count() >= 2, "{verbs:?}");
    assert!(verbs.iter().any(|v| v == "restore -p") && verbs.iter().any(|v| v.starts_with("save")), "{verbs:?}");
    // The stray domain was never touched.
    assert!(xl_domains(&xl).iter().any(|d| d.0 == "stray"), "the orphan still runs");
    assert!(manager_prop(&s, "addresses").contains("inUse=\"0\" free=\"2\""));
}

#[test]
fn a_qemu_no_workspace_owns_is_listed_as_an_orphan_and_left_running() {
    let s = vm_server("10.20.0.40", "10.20.0.41", None);
    // A QEMU started by hand under vwsd's run root (paused before its first instruction: cheap).
    let run = s.data_dir().join("run").canonicalize().unwrap().join("stray");
    std::fs::create_dir_all(&run).unwrap();
    let st = std::process::Command::new("qemu-system-x86_64")
        .args(["-name", "guest=stray", "-accel", "tcg", "-m", "32", "-nodefaults", "-display", "none", "-S", "-daemonize"])
        .arg("-qmp")
        .arg(format!("unix:{}/qmp.sock,server=on,wait=off", run.display()))
        .arg("-pidfile")
        .arg(run.join("qemu.pid"))
        .status()
        .unwrap();
    assert!(st.success());
    let pid: u32 = std::fs::read_to_string(run.join("qemu.pid")).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let o = loop {
        let o = manager_prop(&s, "orphans");
        if o.contains("name=\"stray\"") {
            break o;
        }
        assert!(Instant::now() < deadline, "stray QEMU not listed: {o}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(o.contains(&format!("name=\"stray\" driver=\"qemu\" id=\"{pid}\" state=\"paused\" since=\"")), "{o}");
    let since = between(&o, "since=\"", "\"").unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2500));
    let again = manager_prop(&s, "orphans");
    assert!(again.contains(&format!("since=\"{since}\"")), "first seen stays: {again}");
    assert!(qemus(&s).contains(&pid), "never killed by reconciliation");
    assert!(manager_prop(&s, "host").contains("<w:host"));
    assert!(manager_prop(&s, "addresses").contains("first=\"10.20.0.40\" last=\"10.20.0.41\" inUse=\"0\" free=\"2\""));
    // An unknown property is a WS-RP fault.
    let r = s.call(
        "WorkspaceManagerService",
        "",
        &format!("{WSRP_ACTION}/GetResourceProperty"),
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\">w:nope</wsrp:GetResourceProperty>"),
    );
    assert_eq!(r.fault_kind().as_deref(), Some("InvalidResourcePropertyQNameFault"), "{}", r.body);
}

#[test]
fn with_a_bridge_each_vm_gets_a_tap_on_it_and_answers_on_its_address() {
    // This test's thread (and every process it starts: vwsd, QEMU) moves into a network
    // namespace of its own; the bridge and its addresses exist only there.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("SKIP: cannot create a network namespace here: {}", std::io::Error::last_os_error());
        return;
    }
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output().expect("ip (iproute2)");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", "vwsbr0", "type", "bridge"]);
    ip(&["addr", "add", "10.30.0.1/24", "dev", "vwsbr0"]);
    ip(&["link", "set", "vwsbr0", "up"]);
    let g = guest::dir();
    let s = Server::start_with(Conf {
        staging: format!("file_roots = [\"{}\"]\nprogress_interval_ms = 50\n", g.display()),
        host: format!(
            "[vmm]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel = \"{}\"\nramdisk = \"{}\"\nstop_timeout_secs = 120\nready_timeout_secs = 180\n\
             [network]\nsubnet = \"10.30.0.0/24\"\ngateway = \"10.30.0.1\"\nfirst = \"10.30.0.10\"\nlast = \"10.30.0.11\"\nbridge = \"vwsbr0\"\n\
             [host]\nreconcile_secs = 1\n",
            g.join("vmlinuz").display(),
            g.join("initrd.img").display()
        ),
        ..Default::default()
    });
    let key = s.create_workspace_from(&demo_description());
    deploy_and_wait(&s, &key);
    let mac = text_prop(&s, &key, "mac").unwrap();
    let tap = vws::host::qemu::tap_name(&format!("vws-{key}"), 0);
    let ports = ip(&["-o", "link", "show", "master", "vwsbr0"]);
    assert!(ports.contains(&format!("{tap}:")), "the VM's tap is on the bridge: {ports}");
    assert_eq!(ok(&s, &key, "start"), "Running");
    let console = PathBuf::from(text_prop(&s, &key, "consoleLog").unwrap());
    let text = guest::wait_for(&console, READY, 1, BOOT);
    assert!(text.contains(&format!("VWS-GUEST-IP ip=10.30.0.10/24 gw=10.30.0.1 mac={mac}")), "{text}");
    // The guest answers for its address on the bridge: its ARP reply (with its MAC) is in the
    // namespace's neighbour table after a datagram to it.
    let sock = std::net::UdpSocket::bind("10.30.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = sock.send_to(b"hello", "10.30.0.10:9");
        std::thread::sleep(Duration::from_millis(300));
        let n = ip(&["neigh", "show", "10.30.0.10", "dev", "vwsbr0"]);
        if n.contains(&format!("lladdr {mac}")) && !n.contains("FAILED") {
            break;
        }
        assert!(Instant::now() < deadline, "no ARP answer from 10.30.0.10: {n}\n{}", s.log());
    }
    assert_eq!(ok(&s, &key, "undeploy"), "Unstaged");
    let ports = ip(&["-o", "link", "show", "master", "vwsbr0"]);
    assert!(!ports.contains(&tap), "the tap goes with the VM: {ports}");
}
