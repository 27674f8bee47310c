//! VM life-cycle benchmark (`make bench`, or `cargo bench --bench vm`): the service's
//! operations on the real demo guest side by side with the raw QEMU/QMP equivalent, one table.
//!
//! * hot start: `start` of a hot-deployed workspace (SOAP round trip, state durable) vs QMP `cont`
//! * pause/unpause: the service's `pause`+`unpause` vs QMP `stop`+`cont`
//! * cold start to the ready line: `start` → `VWS-GUEST-READY` on the console vs a raw
//!   `qemu-system-x86_64` with the same kernel to the same line
//! * save / restore: the service until Saved / Running vs QMP `migrate` to a file / `-incoming`
//! * deploy of an image already in the file roots, to Staged (overlay, lease, certificate,
//!   config disk, VM defined paused)
//! * vwsd RSS with 20 paused VMs
//!
//! ROUNDS (default 3) sets the repetitions of the quick measurements; TCG unless VWS_ACCEL=kvm.
//! ONLY=saverest measures hot start, pause/unpause, save and restore only (skips deploy, cold
//! start and RSS).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::guest::{self, READY};
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MANAGER: &str = "http://vws.dev/2026/11/workspace/WorkspaceManagerPortType";
const BOOT: Duration = Duration::from_secs(300);

fn accel() -> String {
    std::env::var("VWS_ACCEL").unwrap_or_else(|_| "tcg".into())
}

fn server(n_addresses: u32) -> Server {
    let g = guest::dir();
    Server::start_with(Conf {
        staging: format!("file_roots = [\"{}\"]\nprogress_interval_ms = 50\n", g.display()),
        host: format!(
            "[vmm]\ndriver = \"qemu\"\naccel = \"{}\"\nkernel = \"{}\"\nramdisk = \"{}\"\nready_timeout_secs = 300\n\
             [network]\nfirst = \"10.20.0.10\"\nlast = \"10.20.0.{}\"\n[host]\nreconcile_secs = 3600\n",
            accel(),
            g.join("vmlinuz").display(),
            g.join("initrd.img").display(),
            9 + n_addresses
        ),
        ..Default::default()
    })
}

fn description() -> String {
    format!(
        "<virtualWorkspace xmlns=\"{VWS}\"><category><name>vm</name><vmm>qemu</vmm></category>\
         <hardware><ram min=\"128\" max=\"128\"/><disk name=\"root\" type=\"image\" access=\"rw\">\
         <image>file://{}/root.qcow2</image></disk></hardware></virtualWorkspace>",
        guest::dir().display()
    )
}

fn op(s: &Server, key: &str, name: &str, body: &str) -> String {
    let action = format!("{MANAGER}/{name}Request");
    let r = s.call("WorkspaceService", &Server::ws_key_header(key), &action, &format!("<{name} xmlns=\"{VWS}\">{body}</{name}>"));
    assert_eq!(r.status, 200, "{name}: {}", r.body);
    between(&r.body, "CurrentState xmlns:n=\"http://www.globus.org/2008/06/workspace\">", "<").unwrap_or("").to_string()
}

fn current(s: &Server, key: &str) -> String {
    let action = format!("{WSRP_ACTION}/GetResourceProperty");
    let payload =
        format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:n=\"{NIMBUS}\">n:CurrentState</wsrp:GetResourceProperty>");
    let r = s.call("WorkspaceService", &Server::ws_key_header(key), &action, &payload);
    between(&r.body, "CurrentState xmlns:n=\"http://www.globus.org/2008/06/workspace\">", "<").unwrap_or("").to_string()
}

fn settle(s: &Server, key: &str, transitional: &str) -> String {
    let t0 = Instant::now();
    loop {
        let st = current(s, key);
        if st != transitional || t0.elapsed() > BOOT {
            return st;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn console(s: &Server, key: &str) -> PathBuf {
    s.data_dir()
        .join("pool")
        .join(key)
        .join("console.log")
        .canonicalize()
        .unwrap_or_else(|_| s.data_dir().join("pool").join(key).join("console.log"))
}

fn wait_marker(p: &Path, n: usize) {
    let t0 = Instant::now();
    while std::fs::read_to_string(p).unwrap_or_default().matches(READY).count() < n {
        assert!(t0.elapsed() < BOOT, "no ready line in {}", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A raw QEMU with the guest, QMP on a socket, console to a file.
struct Raw {
    child: Child,
    qmp: Option<(UnixStream, BufReader<UnixStream>)>,
    sock: PathBuf,
    log: PathBuf,
}

impl Raw {
    fn start(dir: &Path, tag: &str, extra: &[&str]) -> Raw {
        let g = guest::dir();
        let sock = dir.join(format!("{tag}.sock"));
        let log = dir.join(format!("{tag}.log"));
        let overlay = dir.join(format!("{tag}.qcow2"));
        if !overlay.exists() {
            let st = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(g.join("root.qcow2"))
                .arg(&overlay)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let _ = std::fs::remove_file(&sock);
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", &accel(), "-m", "128", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-monitor", "none", "-serial"])
            .arg(format!("file:{}", log.display()))
            .arg("-kernel")
            .arg(g.join("vmlinuz"))
            .arg("-initrd")
            .arg(g.join("initrd.img"))
            .args(["-append", "console=ttyS0 quiet"])
            .arg("-drive")
            .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Raw { child, qmp: None, sock, log }
    }

    fn cmd(&mut self, cmd: &str, args: Option<Value>) -> Value {
        if self.qmp.is_none() {
            let t0 = Instant::now();
            let w = loop {
                match UnixStream::connect(&self.sock) {
                    Ok(w) => break w,
                    Err(_) if t0.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => panic!("QMP: {e}"),
                }
            };
            let mut r = BufReader::new(w.try_clone().unwrap());
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            self.qmp = Some((w, r));
            self.cmd("qmp_capabilities", None);
        }
        let (w, r) = self.qmp.as_mut().unwrap();
        let mut m = serde_json::json!({ "execute": cmd });
        if let Some(a) = args {
            m["arguments"] = a;
        }
        writeln!(w, "{m}").unwrap();
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap() == 0 {
                return Value::Null;
            }
            let v: Value = serde_json::from_str(&l).unwrap();
            if v.get("return").is_some() || v.get("error").is_some() {
                return v;
            }
        }
    }

    fn status(&mut self) -> String {
        self.cmd("query-status", None)["return"]["status"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU time a process's threads used so far, in ms (`/proc/PID/task/*/schedstat`, in ns).
fn cpu_ms(pid: u32) -> f64 {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    ns as f64 / 1e6
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|r| r.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let quick = std::env::var("ONLY").is_ok_and(|o| o == "saverest");
    let tmp = tempfile::tempdir().unwrap();
    let mut rows: Vec<(String, f64, f64, &str)> = Vec::new();

    // --- the service: deploy (already staged image source), hot start, pause/unpause -------
    let s = server(30);
    let mut deploys = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..if quick { 0 } else { rounds } {
        let key = s.create_workspace_from(&description());
        let t0 = Instant::now();
        op(&s, &key, "deploy", "");
        assert_eq!(settle(&s, &key, "Staging"), "Staged");
        deploys.push(ms(t0.elapsed()));
        keys.push(key);
    }
    // Raw equivalent of what deploy adds to the staging: one overlay (qemu-img) + qemu -S up.
    let mut raw_def = Vec::new();
    for i in 0..if quick { 0 } else { rounds } {
        let t0 = Instant::now();
        let mut r = Raw::start(tmp.path(), &format!("def{i}"), &["-S"]);
        r.status();
        raw_def.push(ms(t0.elapsed()));
    }
    if !quick {
        rows.push(("deploy to Staged (service) vs overlay + qemu -S up (raw)".into(), median(deploys), median(raw_def), "ms"));
    }

    // Hot start.
    let hot = s.create_workspace_from(&description());
    op(&s, &hot, "deploy", "<hot>true</hot>");
    assert_eq!(settle(&s, &hot, "Staging"), "Staged");
    let t0 = Instant::now();
    assert_eq!(op(&s, &hot, "start", ""), "Running");
    let hot_start = ms(t0.elapsed());
    let mut svc_pu = Vec::new();
    for _ in 0..rounds * 5 {
        let t0 = Instant::now();
        op(&s, &hot, "pause", "");
        op(&s, &hot, "unpause", "");
        svc_pu.push(ms(t0.elapsed()) / 2.0);
    }
    let mut raw = Raw::start(tmp.path(), "hot", &[]);
    wait_marker(&raw.log.clone(), 1);
    let mut raw_cont = Vec::new();
    let mut raw_pu = Vec::new();
    for _ in 0..rounds * 5 {
        raw.cmd("stop", None);
        let t0 = Instant::now();
        raw.cmd("cont", None);
        raw_cont.push(ms(t0.elapsed()));
        let t0 = Instant::now();
        raw.cmd("stop", None);
        raw.cmd("cont", None);
        raw_pu.push(ms(t0.elapsed()) / 2.0);
    }
    rows.push(("hot start (service start) vs QMP cont".into(), hot_start, median(raw_cont.clone()), "ms"));
    rows.push(("pause or unpause (service) vs QMP stop or cont".into(), median(svc_pu), median(raw_pu), "ms"));

    // Save / restore of the hot (booted) VM, the service's and the raw one's rounds interleaved
    // (a loaded machine then weighs on both alike). vwsd's CPU time per operation too.
    let vwsd = s.child.as_ref().unwrap().id();
    let (mut svc_save, mut svc_restore, mut raw_save, mut raw_restore) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_save, mut cpu_restore) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let (t0, c0) = (Instant::now(), cpu_ms(vwsd));
        op(&s, &hot, "save", "");
        assert_eq!(settle(&s, &hot, "Saving"), "Saved");
        svc_save.push(ms(t0.elapsed()));
        cpu_save.push(cpu_ms(vwsd) - c0);

        let state = tmp.path().join(format!("raw{i}.state"));
        let t0 = Instant::now();
        raw.cmd("stop", None);
        raw.cmd("migrate", Some(serde_json::json!({ "uri": format!("file:{}", state.display()) })));
        loop {
            let m = raw.cmd("query-migrate", None);
            if m["return"]["status"] == "completed" {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        raw.cmd("quit", None);
        let _ = raw.child.wait();
        raw_save.push(ms(t0.elapsed()));

        let (t0, c0) = (Instant::now(), cpu_ms(vwsd));
        op(&s, &hot, "restore", "");
        assert_eq!(settle(&s, &hot, "Restoring"), "Running");
        svc_restore.push(ms(t0.elapsed()));
        cpu_restore.push(cpu_ms(vwsd) - c0);

        let t0 = Instant::now();
        let incoming = format!("file:{}", state.display());
        raw = Raw::start(tmp.path(), "hot", &["-incoming", &incoming]);
        while raw.status() == "inmigrate" {
            std::thread::sleep(Duration::from_millis(2));
        }
        raw.cmd("cont", None);
        raw_restore.push(ms(t0.elapsed()));
    }
    rows.push(("save until Saved vs QMP stop+migrate file+quit".into(), median(svc_save), median(raw_save), "ms"));
    rows.push(("restore until Running vs qemu -incoming + cont".into(), median(svc_restore), median(raw_restore), "ms"));
    rows.push(("vwsd CPU time per save".into(), median(cpu_save), f64::NAN, "ms"));
    rows.push(("vwsd CPU time per restore".into(), median(cpu_restore), f64::NAN, "ms"));
    drop(raw);
    // With VWS_TEST_LOG=debug: where the service's deploy, save and restore spent their time.
    let marks = ["VM provisioned", "VM saved", "VM restored", "state durable", "long operation finished"];
    for l in s.log().lines().filter(|l| marks.iter().any(|k| l.contains(k))) {
        eprintln!("{l}");
    }
    if quick {
        print_rows(rounds, rows);
        return;
    }

    // Cold start to the ready line.
    let cold = keys[0].clone();
    let t0 = Instant::now();
    op(&s, &cold, "start", "");
    wait_marker(&console(&s, &cold), 1);
    let svc_cold = ms(t0.elapsed());
    let t0 = Instant::now();
    let r = Raw::start(tmp.path(), "cold", &[]);
    wait_marker(&r.log.clone(), 1);
    let raw_cold = ms(t0.elapsed());
    drop(r);
    rows.push(("cold start to ready line vs raw qemu to the same line".into(), svc_cold, raw_cold, "ms"));

    // RSS with 20 paused VMs.
    for k in keys.iter().chain([&hot]) {
        let _ = op(&s, k, "undeploy", "");
    }
    let mut more = Vec::new();
    for _ in 0..20 {
        let key = s.create_workspace_from(&description());
        op(&s, &key, "deploy", "");
        more.push(key);
    }
    for k in &more {
        assert_eq!(settle(&s, k, "Staging"), "Staged");
    }
    let pid = s.child.as_ref().unwrap().id();
    rows.push(("vwsd RSS with 20 paused VMs".into(), rss_kib(pid) as f64 / 1024.0, f64::NAN, "MiB"));
    for k in &more {
        let _ = op(&s, k, "undeploy", "");
    }

    print_rows(rounds, rows);
}

fn print_rows(rounds: usize, rows: Vec<(String, f64, f64, &str)>) {
    println!("\nVM life cycle ({} accel, 128 MiB guest, medians of {rounds})", accel());
    println!("{:<58} {:>12} {:>12} {:>8} {:>10}", "measurement", "vws", "raw", "ratio", "vws-raw");
    for (name, a, b, unit) in rows {
        let ratio = if b.is_nan() || b == 0.0 { "-".to_string() } else { format!("{:.2}", a / b) };
        let raw = if b.is_nan() { "-".to_string() } else { format!("{b:.1} {unit}") };
        let diff = if b.is_nan() { "-".to_string() } else { format!("{:+.1}", a - b) };
        println!("{name:<58} {:>12} {raw:>12} {ratio:>8} {diff:>10}", format!("{a:.1} {unit}"));
    }
}
