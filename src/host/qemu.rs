//! The QEMU driver (the default hypervisor, the one that really runs here): one
//! `qemu-system-x86_64` process per VM, started with an argv built here (never through a shell),
//! daemonized (so its setup errors come back synchronously with the tool's stderr, and it
//! outlives a crash of vwsd), and controlled over QMP on a unix socket in the VM's run directory
//! (`stop`, `cont`, `system_powerdown`, `system_reset`, `quit`, `migrate` to a file for save,
//! `-incoming` for restore). The serial console is appended to the VM's console log.
//!
//! What runs is found from the processes themselves (`/proc/*/cmdline`: a QEMU whose QMP socket
//! lies under this driver's run root), so a restarted vwsd sees exactly what survived it.
//!
//! Acceleration: KVM only when a probe guest really boots under it (on some machines `/dev/kvm`
//! opens but KVM guests hang before their first console line); TCG otherwise.

use super::vmm::{DiskSpec, Laps, VmInfo, VmSpec, VmState, Vmm, VmmError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which accelerator to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM when a probe guest boots under it, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn parse(s: &str) -> Option<Accel> {
        match s {
            "auto" => Some(Accel::Auto),
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

/// User-mode (slirp) network the allocated addresses live in: `net=` and `host=` of `-netdev user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserNet {
    /// `10.20.0.0/24`
    pub net: String,
    /// The gateway address the guest is given (slirp's host side).
    pub host: String,
}

#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// `qemu-system-x86_64` (looked up in PATH) or an absolute path.
    pub binary: PathBuf,
    pub accel: Accel,
    /// Every VM's run directory (QMP socket, pid file) lies under this one.
    pub run_root: PathBuf,
    /// Kernel and initramfs of the probe guest for `Accel::Auto` (none: TCG).
    pub probe: Option<(PathBuf, PathBuf)>,
    pub user_net: Option<UserNet>,
}

/// The QEMU/QMP driver.
pub struct QemuDriver {
    cfg: QemuConfig,
    accel: OnceLock<&'static str>,
    /// One QMP connection per VM, kept open (a command is then one round trip).
    conns: Mutex<HashMap<String, Arc<Mutex<Qmp>>>>,
    /// VMs whose process this driver saw go and has not started again: starting one of them
    /// needs no look through `/proc` for a process of that name.
    gone: Mutex<std::collections::HashSet<String>>,
    /// One connect at a time per VM (see `conn`).
    dialing: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

const QMP_TIMEOUT: Duration = Duration::from_secs(10);
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> VmmError {
    VmmError::Io(format!("{what}: {e}"))
}

/// QEMU option values: a ',' inside a value is written ",,".
fn opt(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// A QMP session on a VM's unix socket.
struct Qmp {
    w: UnixStream,
    r: BufReader<UnixStream>,
    /// A message line read in part (a read timed out in the middle of it).
    partial: Vec<u8>,
    /// Events that arrived while a command waited for its answer (oldest first, bounded).
    events: std::collections::VecDeque<Value>,
    /// The read timeout set on the socket now, and the one a command waits for its answer.
    timeout: Duration,
    base: Duration,
}

/// Events kept for [`Qmp::wait_event`] while commands run (older ones are dropped).
const KEPT_EVENTS: usize = 64;

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

impl Qmp {
    fn connect(sock: &Path, timeout: Duration) -> std::io::Result<Qmp> {
        // QEMU's monitor serves one client at a time and keeps a tiny backlog: while it still
        // holds a previous session (e.g. of a vwsd that was killed), a connect can fail with
        // EAGAIN. Retry that (and a socket not yet listening) until `timeout`.
        // Exponential backoff with jitter (5 ms .. 50 ms), waits adding up to `timeout`.
        use backon::{BlockingRetryable, ExponentialBuilder};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(50))
            .with_jitter()
            .with_max_times(usize::MAX)
            .with_total_delay(Some(timeout));
        let w = (|| UnixStream::connect(sock))
            .retry(backoff)
            .sleep(std::thread::sleep)
            .when(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused))
            .call()?;
        w.set_read_timeout(Some(timeout))?;
        w.set_write_timeout(Some(timeout))?;
        let mut q =
            Qmp { r: BufReader::new(w.try_clone()?), w, partial: Vec::new(), events: Default::default(), timeout, base: timeout };
        // QEMU can write an event on a new connection before its greeting: an event emitted
        // while the connection is being set up (an incoming migration's MIGRATION events, when
        // vwsd connects during a restore) goes to the new client, whose greeting comes after.
        // Such events are kept (as any that arrive while a command runs) and the greeting read.
        loop {
            let m = q.message()?;
            if m.get("QMP").is_some() {
                break;
            }
            if m.get("event").is_none() || q.events.len() == KEPT_EVENTS {
                return Err(std::io::Error::other(format!("not a QMP greeting: {m}")));
            }
            q.keep_event(m);
        }
        q.execute("qmp_capabilities", None).map_err(std::io::Error::other)?;
        Ok(q)
    }

    /// The next message from QEMU. A read that times out keeps what it read of a line, so the
    /// next call goes on with it.
    fn message(&mut self) -> std::io::Result<Value> {
        loop {
            let n = self.r.read_until(b'\n', &mut self.partial)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            if self.partial.last() != Some(&b'\n') {
                continue;
            }
            let line = std::mem::take(&mut self.partial);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&line).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad reply {}: {e}", String::from_utf8_lossy(&line).trim()),
                )
            });
        }
    }

    fn set_timeout(&mut self, t: Duration) -> std::io::Result<()> {
        let t = t.max(Duration::from_millis(1));
        if t != self.timeout {
            self.w.set_read_timeout(Some(t))?;
            self.timeout = t;
        }
        Ok(())
    }

    fn keep_event(&mut self, v: Value) {
        if self.events.len() == KEPT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(v);
    }

    /// Runs one command; events arriving meanwhile are kept for [`Qmp::wait_event`].
    fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, String> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.set_timeout(self.base).map_err(|e| format!("QMP {cmd}: {e}"))?;
        self.w.write_all(line.as_bytes()).map_err(|e| format!("QMP {cmd}: {e}"))?;
        loop {
            let v = match self.message() {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(format!("QMP {cmd}: connection closed")),
                Err(e) => return Err(format!("QMP {cmd}: {e}")),
            };
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(e.get("desc").and_then(Value::as_str).unwrap_or("error").to_string());
            }
            if v.get("event").is_some() {
                self.keep_event(v);
            }
        }
    }

    /// Waits up to `within` for an event `pick` accepts (kept ones first); Ok(None) when none
    /// came in time.
    fn wait_event(&mut self, within: Duration, mut pick: impl FnMut(&Value) -> bool) -> Result<Option<Value>, String> {
        if let Some(i) = self.events.iter().position(&mut pick) {
            return Ok(self.events.remove(i));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.set_timeout(left).map_err(|e| format!("QMP: {e}"))?;
            match self.message() {
                Ok(v) if v.get("event").is_some() => {
                    if pick(&v) {
                        return Ok(Some(v));
                    }
                    self.keep_event(v);
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err("QMP: connection closed".into()),
                Err(e) => return Err(format!("QMP: {e}")),
            }
        }
    }
}

/// Is this a `MIGRATION` event with a final status (completed, failed, cancelled)?
fn migration_ended(v: &Value) -> bool {
    v.get("event").and_then(Value::as_str) == Some("MIGRATION")
        && matches!(v["data"]["status"].as_str(), Some("completed" | "failed" | "cancelled"))
}

/// A QEMU process of ours.
#[derive(Clone, Debug)]
struct Proc {
    pid: u32,
    name: String,
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its new parent) is gone for us.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])).unwrap_or(false),
        Err(_) => false,
    }
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

impl QemuDriver {
    pub fn new(cfg: QemuConfig) -> QemuDriver {
        let d = QemuDriver {
            cfg,
            accel: OnceLock::new(),
            conns: Mutex::new(HashMap::new()),
            gone: Mutex::default(),
            dialing: Mutex::default(),
        };
        match d.cfg.accel {
            Accel::Tcg => {
                let _ = d.accel.set("tcg");
            }
            Accel::Kvm => {
                let _ = d.accel.set("kvm");
            }
            Accel::Auto => {}
        }
        d
    }

    /// The accelerator in use (probing once for `Auto`).
    pub fn accel(&self) -> &'static str {
        self.accel.get_or_init(|| {
            let a = self.probe_kvm();
            tracing::info!(accel = a, "QEMU accelerator chosen");
            a
        })
    }

    /// Boots the probe guest under KVM and waits for its kernel's first console line.
    fn probe_kvm(&self) -> &'static str {
        let ok = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
        let Some((kernel, initrd)) = self.cfg.probe.clone().filter(|_| ok) else {
            return "tcg";
        };
        let dir = self.cfg.run_root.join(".kvm-probe");
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join("console.log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new(&self.cfg.binary)
            .args(["-accel", "kvm", "-m", "128", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-monitor", "none", "-no-reboot", "-serial"])
            .arg(format!("file:{}", opt(&log)))
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 panic=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else { return "tcg" };
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut booted = false;
        while Instant::now() < deadline {
            if std::fs::read_to_string(&log).map(|s| s.contains("Linux version")).unwrap_or(false) {
                booted = true;
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        if booted {
            "kvm"
        } else {
            tracing::warn!("/dev/kvm is present but a probe guest did not boot under KVM: using TCG");
            "tcg"
        }
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.cfg.run_root.join(name).join("qmp.sock")
    }

    /// The QEMU processes of this driver: their QMP socket lies under the run root.
    fn procs(&self) -> Vec<Proc> {
        let prefix = format!("unix:{}/", opt(&self.cfg.run_root));
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Some(argv) = cmdline(pid) else { continue };
            if !argv.first().is_some_and(|a| a.contains("qemu-system")) {
                continue;
            }
            let qmp = argv.iter().position(|a| a == "-qmp").and_then(|i| argv.get(i + 1));
            if !qmp.is_some_and(|q| q.starts_with(&prefix)) || !pid_alive(pid) {
                continue;
            }
            let name = argv
                .iter()
                .position(|a| a == "-name")
                .and_then(|i| argv.get(i + 1))
                .map(|n| n.strip_prefix("guest=").unwrap_or(n).split(',').next().unwrap_or("").to_string());
            if let Some(name) = name {
                out.push(Proc { pid, name });
            }
        }
        out
    }

    /// The process of one VM: its pid file, checked against the process's argv.
    fn proc_of(&self, name: &str) -> Option<Proc> {
        let pidfile = self.cfg.run_root.join(name).join("qemu.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            let sock = format!("unix:{}", opt(&self.sock(name)));
            if pid_alive(pid) && cmdline(pid).is_some_and(|a| a.iter().any(|x| x.starts_with(&sock))) {
                return Some(Proc { pid, name: name.to_string() });
            }
        }
        // No (valid) pid file: look at the processes themselves.
        self.procs().into_iter().find(|p| p.name == name)
    }

    fn conn(&self, name: &str) -> Result<Arc<Mutex<Qmp>>, VmmError> {
        if let Some(c) = self.conns.lock().unwrap().get(name) {
            return Ok(c.clone());
        }
        // QEMU's monitor serves one client at a time and the session made here is kept. Two
        // threads connecting at once (e.g. reconciliation and a restore) would leave the second
        // in the socket's backlog, waiting for the kept session to end, until its read timeout.
        // So connects to one VM take turns, and a later one reuses what the first made.
        let gate = self.dialing.lock().unwrap().entry(name.to_string()).or_default().clone();
        let _turn = gate.lock().unwrap();
        if let Some(c) = self.conns.lock().unwrap().get(name) {
            return Ok(c.clone());
        }
        let q = Qmp::connect(&self.sock(name), QMP_TIMEOUT).map_err(|e| {
            if self.proc_of(name).is_none() {
                VmmError::NotFound(name.to_string())
            } else {
                io(format!("QMP socket of {name}"), e)
            }
        })?;
        let c = Arc::new(Mutex::new(q));
        self.conns.lock().unwrap().insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// One QMP command, reconnecting once when a kept connection broke.
    fn qmp(&self, name: &str, cmd: &str, args: Option<Value>) -> Result<Value, VmmError> {
        for attempt in 0..2 {
            let c = self.conn(name)?;
            let r = c.lock().unwrap().execute(cmd, args.clone());
            match r {
                Ok(v) => return Ok(v),
                Err(e) if e.contains("connection closed") || e.contains("Broken pipe") || e.contains("os error") => {
                    self.conns.lock().unwrap().remove(name);
                    if attempt == 1 || self.proc_of(name).is_none() {
                        return Err(if self.proc_of(name).is_none() {
                            VmmError::NotFound(name.to_string())
                        } else {
                            VmmError::Tool { tool: format!("QMP {cmd}"), code: None, stderr: e }
                        });
                    }
                }
                Err(e) => return Err(VmmError::Tool { tool: format!("QMP {cmd}"), code: None, stderr: e }),
            }
        }
        unreachable!("the loop returns")
    }

    fn status(&self, name: &str) -> Result<String, VmmError> {
        let v = self.qmp(name, "query-status", None)?;
        Ok(v.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string())
    }

    /// Waits until the VM's process is gone (true) or `timeout` passed (false). A pidfd wakes
    /// us the moment it exits; without one (an old kernel), it is polled every 5 ms.
    fn wait_gone(&self, p: &Proc, timeout: Duration) -> bool {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let deadline = Instant::now() + timeout;
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid as libc::pid_t, 0) };
        if fd >= 0 {
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                match unsafe { libc::poll(&mut pfd, 1, ms) } {
                    n if n > 0 => return true,
                    0 if Instant::now() >= deadline => return !pid_alive(p.pid),
                    0 => {}
                    _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return true;
        }
        loop {
            if !pid_alive(p.pid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the outgoing migration of a VM to end: woken by QEMU's `MIGRATION` event
    /// (`-global migration.x-events=on`), and asking `query-migrate` every 25 ms in case no event
    /// comes (a VM started without it).
    fn wait_migration(&self, name: &str) -> Result<(), MigrationEnd> {
        let limit = Duration::from_secs(600);
        let deadline = Instant::now() + limit;
        let c = self.conn(name).map_err(MigrationEnd::Error)?;
        let mut q = c.lock().unwrap();
        let tool = |e: String| MigrationEnd::Error(VmmError::Tool { tool: "QMP query-migrate".into(), code: None, stderr: e });
        loop {
            let m = q.execute("query-migrate", None).map_err(tool)?;
            match m.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    let desc = m.get("error-desc").and_then(Value::as_str).unwrap_or("migration failed");
                    return Err(MigrationEnd::Failed(desc.to_string()));
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MigrationEnd::Timeout(limit));
            }
            q.wait_event(left.min(Duration::from_millis(25)), migration_ended).map_err(tool)?;
        }
    }

    fn forget(&self, name: &str) {
        self.conns.lock().unwrap().remove(name);
        self.dialing.lock().unwrap().remove(name);
        let dir = self.cfg.run_root.join(name);
        let _ = std::fs::remove_file(dir.join("qmp.sock"));
        let _ = std::fs::remove_file(dir.join("qemu.pid"));
    }

    /// The argv of a VM (without the binary).
    pub fn argv(&self, spec: &VmSpec, incoming: Option<&Path>) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["-name", &format!("guest={}", spec.name.replace(',', ",,"))]);
        push(&["-accel", self.accel(), "-m", &spec.memory_mib.to_string(), "-smp", &spec.vcpus.max(1).to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none"]);
        // MIGRATION events (save and restore wait for them instead of polling).
        push(&["-global", "migration.x-events=on"]);
        push(&["-chardev", &format!("file,id=con0,path={},append=on", opt(&spec.console_log)), "-serial", "chardev:con0"]);
        if let Some(k) = &spec.kernel {
            push(&["-kernel", &k.display().to_string()]);
            if let Some(r) = &spec.ramdisk {
                push(&["-initrd", &r.display().to_string()]);
            }
            if let Some(c) = &spec.cmdline {
                push(&["-append", c]);
            }
        }
        for (i, d) in spec.disks.iter().enumerate() {
            push(&["-drive", &drive(i, d)]);
        }
        for (i, n) in spec.nics.iter().enumerate() {
            let netdev = match (&n.bridge, &self.cfg.user_net) {
                // A tap of this VM (QEMU creates it; `launch` puts it on the bridge).
                (Some(_), _) => format!("tap,id=n{i},ifname={},script=no,downscript=no", tap_name(&spec.name, i)),
                (None, Some(u)) => format!("user,id=n{i},net={},host={}", u.net, u.host),
                (None, None) => format!("user,id=n{i}"),
            };
            push(&["-netdev", &netdev, "-device", &format!("virtio-net-pci,netdev=n{i},mac={},romfile=", n.mac)]);
        }
        let dir = &spec.run_dir;
        push(&["-qmp", &format!("unix:{},server=on,wait=off", opt(&dir.join("qmp.sock")))]);
        push(&["-pidfile", &dir.join("qemu.pid").display().to_string(), "-daemonize", "-S"]);
        if let Some(p) = incoming {
            push(&["-incoming", &format!("file:{}", p.display())]);
        }
        a
    }

    /// Waits for the incoming migration of a VM started with `-incoming` to end (the VM is then
    /// paused, `-S`): woken by QEMU's `MIGRATION` event, asking again every 25 ms in case none
    /// comes.
    fn wait_incoming(&self, name: &str, from: &Path) -> Result<(), VmmError> {
        let limit = Duration::from_secs(120);
        let deadline = Instant::now() + limit;
        let c = self.conn(name)?;
        let mut q = c.lock().unwrap();
        let failed = |why: String| VmmError::Tool {
            tool: "QMP migrate (incoming)".into(),
            code: None,
            stderr: format!("restoring from {} failed: {why}", from.display()),
        };
        loop {
            let s = q.execute("query-status", None).map_err(failed)?;
            if s.get("status").and_then(Value::as_str) != Some("inmigrate") {
                return Ok(());
            }
            let m = q.execute("query-migrate", None).map_err(failed)?;
            if m.get("status").and_then(Value::as_str) == Some("failed") {
                return Err(failed(m.get("error-desc").and_then(Value::as_str).unwrap_or("unknown").to_string()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VmmError::Timeout { what: format!("restoring {name}"), after: limit });
            }
            q.wait_event(left.min(Duration::from_millis(25)), migration_ended).map_err(failed)?;
        }
    }

    /// Starts a VM's process (paused) and connects to its QMP socket.
    fn launch(&self, spec: &VmSpec, incoming: Option<&Path>) -> Result<VmInfo, VmmError> {
        if spec.run_dir.parent() != Some(self.cfg.run_root.as_path()) || spec.run_dir.file_name() != Some(spec.name.as_ref()) {
            return Err(VmmError::Io(format!(
                "run directory {} must be {}/{}",
                spec.run_dir.display(),
                self.cfg.run_root.display(),
                spec.name
            )));
        }
        // A VM this driver saw go needs no look for a process of its name (a /proc scan).
        let known_gone = self.gone.lock().unwrap().remove(&spec.name);
        if !known_gone && self.proc_of(&spec.name).is_some() {
            return Err(VmmError::Tool {
                tool: "qemu".into(),
                code: None,
                stderr: format!("a VM named {} already runs on this host", spec.name),
            });
        }
        std::fs::create_dir_all(&spec.run_dir).map_err(|e| io(spec.run_dir.display(), e))?;
        self.forget(&spec.name);
        let argv = self.argv(spec, incoming);
        tracing::debug!(name = spec.name, ?argv, "starting qemu");
        let out = Command::new(&self.cfg.binary)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| io(format!("cannot run {}", self.cfg.binary.display()), e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // Nothing half-made: a process that did start (it should not have) goes too.
            if let Some(p) = self.proc_of(&spec.name) {
                unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
            }
            self.forget(&spec.name);
            return Err(VmmError::Tool { tool: self.cfg.binary.display().to_string(), code: out.status.code(), stderr });
        }
        let pid = std::fs::read_to_string(spec.run_dir.join("qemu.pid")).ok().and_then(|s| s.trim().parse().ok());
        for (i, n) in spec.nics.iter().enumerate() {
            if let Some(br) = &n.bridge {
                if let Err(e) = attach_tap(&tap_name(&spec.name, i), br) {
                    let _ = self.destroy(&spec.name);
                    return Err(e);
                }
            }
        }
        if let Some(p) = incoming {
            if let Err(e) = self.wait_incoming(&spec.name, p) {
                let _ = self.destroy(&spec.name);
                return Err(e);
            }
        } else {
            self.conn(&spec.name)?;
        }
        Ok(VmInfo { name: spec.name.clone(), state: VmState::Paused, id: pid })
    }
}

/// The tap device of a VM's `i`th NIC: `vt` + 10 hex digits of a hash of its name + the NIC
/// number (an interface name has at most 15 bytes).
pub fn tap_name(vm: &str, i: usize) -> String {
    let h = openssl::sha::sha256(vm.as_bytes());
    format!("vt{}{i}", h.iter().take(5).map(|b| format!("{b:02x}")).collect::<String>())
}

/// Puts a tap on a bridge and brings it up (iproute2's `ip`, argv built directly).
fn attach_tap(tap: &str, bridge: &str) -> Result<(), VmmError> {
    for args in [vec!["link", "set", "dev", tap, "master", bridge], vec!["link", "set", "dev", tap, "up"]] {
        let out = Command::new("ip").args(&args).output().map_err(|e| io("cannot run ip (iproute2)", e))?;
        if !out.status.success() {
            return Err(VmmError::Tool {
                tool: format!("ip {}", args.join(" ")),
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

fn drive(i: usize, d: &DiskSpec) -> String {
    let mut s = format!("file={},format={},id=d{i}", opt(&d.path), d.format.as_str());
    if d.cdrom {
        s.push_str(",media=cdrom,if=ide");
    } else {
        s.push_str(",if=virtio,cache=writeback");
    }
    if d.read_only || d.cdrom {
        s.push_str(",readonly=on");
    }
    s
}

impl Vmm for QemuDriver {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn create_paused(&self, spec: &VmSpec) -> Result<VmInfo, VmmError> {
        self.launch(spec, None)
    }

    fn unpause(&self, name: &str) -> Result<(), VmmError> {
        self.qmp(name, "cont", None).map(drop)
    }

    fn pause(&self, name: &str) -> Result<(), VmmError> {
        self.qmp(name, "stop", None).map(drop)
    }

    fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), VmmError> {
        let Some(p) = self.proc_of(name) else { return Err(VmmError::NotFound(name.to_string())) };
        // A paused guest cannot see its power button.
        if self.status(name)? != "running" {
            let _ = self.qmp(name, "cont", None);
        }
        self.qmp(name, "system_powerdown", None)?;
        if self.wait_gone(&p, timeout) {
            self.forget(name);
            self.gone.lock().unwrap().insert(name.to_string());
            return Ok(());
        }
        tracing::warn!(name, ?timeout, "VM did not power off in time: destroying it");
        self.destroy(name)?;
        Err(VmmError::Timeout { what: format!("graceful shutdown of {name}"), after: timeout })
    }

    fn reboot(&self, name: &str) -> Result<(), VmmError> {
        self.qmp(name, "system_reset", None).map(drop)
    }

    fn destroy(&self, name: &str) -> Result<(), VmmError> {
        let Some(p) = self.proc_of(name) else {
            self.forget(name);
            self.gone.lock().unwrap().insert(name.to_string());
            return Ok(());
        };
        // quit asks QEMU to exit at once; SIGKILL when it does not answer.
        let quit = match self.conns.lock().unwrap().get(name).cloned() {
            Some(c) => c.lock().unwrap().execute("quit", None).is_ok(),
            None => Qmp::connect(&self.sock(name), Duration::from_secs(2))
                .and_then(|mut q| q.execute("quit", None).map_err(std::io::Error::other))
                .is_ok(),
        };
        if !quit || !self.wait_gone(&p, Duration::from_secs(3)) {
            unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
            if !self.wait_gone(&p, GONE_TIMEOUT) {
                return Err(VmmError::Timeout { what: format!("destroying {name} (pid {})", p.pid), after: GONE_TIMEOUT });
            }
        }
        self.forget(name);
        self.gone.lock().unwrap().insert(name.to_string());
        Ok(())
    }

    fn save(&self, name: &str, path: &Path) -> Result<(), VmmError> {
        self.save_when(name, path, &mut || true)
    }

    /// Memory state to `path`: QEMU migrates to `<path>.partial` (its pages are written back to
    /// disk while it writes), the file is made durable, `proceed` is asked, the file renamed to
    /// `path`, then the VM quits while the rename is made durable too. A `path` that exists is
    /// therefore complete; a crash before the rename leaves the VM paused (and `.partial`),
    /// which reconciliation resumes.
    fn save_when(&self, name: &str, path: &Path, proceed: &mut dyn FnMut() -> bool) -> Result<(), VmmError> {
        // Where save's time goes, step by step (logged at debug level).
        let mut laps = Laps::start();
        let Some(p) = self.proc_of(name) else { return Err(VmmError::NotFound(name.to_string())) };
        let tmp = path.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let was_running = self.status(name)? == "running";
        self.qmp(name, "stop", None)?;
        laps.lap("stop");
        let fail = |e: VmmError| {
            let _ = std::fs::remove_file(&tmp);
            if was_running {
                let _ = self.qmp(name, "cont", None);
            }
            e
        };
        self.qmp(name, "migrate", Some(json!({ "uri": format!("file:{}", tmp.display()) }))).map_err(fail)?;
        // QEMU created the file in `migrate`; its pages go to disk as they are written.
        let file = std::fs::File::open(&tmp);
        let migrated = std::thread::scope(|sc| {
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            if let Ok(f) = &file {
                sc.spawn(move || write_back(f, &stopped));
            }
            let r = self.wait_migration(name);
            drop(stop);
            r
        });
        laps.lap("migrate");
        if let Err(desc) = migrated {
            return Err(fail(match desc {
                MigrationEnd::Failed(desc) => {
                    let nospace = desc.contains("No space left") || tmp.parent().is_some_and(disk_full);
                    if nospace {
                        VmmError::NoSpace(format!("saving {name} to {}: {desc}", path.display()))
                    } else {
                        VmmError::Tool { tool: "QMP migrate".into(), code: None, stderr: desc }
                    }
                }
                MigrationEnd::Error(e) => e,
                MigrationEnd::Timeout(after) => {
                    let _ = self.qmp(name, "migrate_cancel", None);
                    VmmError::Timeout { what: format!("saving {name}"), after }
                }
            }));
        }
        // The file is complete and on disk before it gets its name, and before the VM goes.
        if let Err(e) = file.and_then(|f| f.sync_data()) {
            return Err(fail(io(format!("save file {}", path.display()), e)));
        }
        laps.lap("fdatasync");
        if !proceed() {
            return Err(fail(VmmError::Abandoned(format!("saving {name}"))));
        }
        laps.lap("proceed");
        if let Err(e) = std::fs::rename(&tmp, path) {
            return Err(fail(io(format!("save file {}", path.display()), e)));
        }
        // The rename made durable while the VM quits. Should it not be (the directory cannot be
        // synced), the file stays complete and durable as `.partial`, which restore accepts.
        let dir = path.parent().map(Path::to_path_buf);
        std::thread::scope(|sc| {
            let dir_sync = sc.spawn(move || dir.map(|d| std::fs::File::open(d).and_then(|d| d.sync_all())));
            let _ = self.qmp(name, "quit", None);
            if self.wait_gone(&p, Duration::from_secs(3)) {
                self.gone.lock().unwrap().insert(name.to_string());
            } else {
                unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
                if self.wait_gone(&p, GONE_TIMEOUT) {
                    self.gone.lock().unwrap().insert(name.to_string());
                }
            }
            if let Ok(Some(Err(e))) = dir_sync.join() {
                tracing::warn!(name, error = %e, "cannot sync the save file's directory (restore finds it as .partial)");
            }
        });
        self.forget(name);
        laps.lap("quit");
        tracing::debug!(name, total_ms = laps.total_ms(), steps = ?laps.steps, "VM saved");
        Ok(())
    }

    fn restore_paused(&self, spec: &VmSpec, path: &Path) -> Result<VmInfo, VmmError> {
        if !path.is_file() {
            return Err(VmmError::Io(format!("save file {} does not exist", path.display())));
        }
        self.launch(spec, Some(path))
    }

    fn list(&self) -> Result<Vec<VmInfo>, VmmError> {
        let mut out = Vec::new();
        for p in self.procs() {
            let state = self.state(&p.name)?.unwrap_or(VmState::Crashed);
            out.push(VmInfo { name: p.name, state, id: Some(p.pid) });
        }
        Ok(out)
    }

    fn state(&self, name: &str) -> Result<Option<VmState>, VmmError> {
        if self.proc_of(name).is_none() {
            self.conns.lock().unwrap().remove(name);
            return Ok(None);
        }
        let s = match self.status(name) {
            Ok(s) => s,
            Err(VmmError::NotFound(_)) => return Ok(None),
            // Alive but its monitor does not answer.
            Err(_) => return Ok(Some(VmState::Crashed)),
        };
        Ok(Some(match s.as_str() {
            "running" => VmState::Running,
            "shutdown" => VmState::Shutdown,
            "internal-error" | "io-error" | "guest-panicked" => VmState::Crashed,
            _ => VmState::Paused,
        }))
    }
}

/// Why an outgoing migration did not complete.
enum MigrationEnd {
    /// QEMU says it failed (its error description).
    Failed(String),
    /// Talking to QEMU failed.
    Error(VmmError),
    Timeout(Duration),
}

/// Starts writing a file's dirty pages back to disk every 10 ms until `stop` is dropped, so an
/// fsync at the end has little left to write.
fn write_back(f: &std::fs::File, stop: &std::sync::mpsc::Receiver<()>) {
    use std::os::fd::AsRawFd;
    loop {
        unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if !matches!(stop.recv_timeout(Duration::from_millis(10)), Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
            return;
        }
    }
}

/// Is the file system holding `dir` out of space?
fn disk_full(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0) && s.f_bavail == 0
}

/// Reads what a console log holds from `offset` on (a guest's serial output).
pub fn read_console(path: &Path, offset: u64) -> std::io::Result<String> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut b = Vec::new();
    f.read_to_end(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::vmm::{DiskFormat, NicSpec};

    /// A QMP peer on a unix socket that writes `lines` on connect, then answers each command
    /// with `{"return": {}}`; returns the socket's path (in `dir`).
    fn scripted_qmp(dir: &Path, lines: &'static [&'static str]) -> PathBuf {
        use std::io::{BufRead, Write};
        let sock = dir.join("qmp.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut w = c.try_clone().unwrap();
            for line in lines {
                writeln!(w, "{line}").unwrap();
            }
            for cmd in BufReader::new(c).lines() {
                if cmd.is_err() || writeln!(w, "{{\"return\": {{}}}}").is_err() {
                    return;
                }
            }
        });
        sock
    }

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}}, "capabilities": []}}"#;
    const MIGRATION: &str =
        r#"{"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {"seconds": 1, "microseconds": 2}}"#;

    #[test]
    fn an_event_written_before_the_greeting_is_kept_and_the_session_opens() {
        // Seen with QEMU 10.0 during a restore (-incoming file:…): the MIGRATION event of the
        // incoming migration arrived on the new connection before the greeting.
        let d = tempfile::tempdir().unwrap();
        let sock = scripted_qmp(d.path(), &[MIGRATION, GREETING]);
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).expect("the session opens");
        let ev = q.wait_event(Duration::ZERO, |v| v["event"] == "MIGRATION").unwrap().expect("the early event is kept");
        assert_eq!(ev["data"]["status"], "active");
        assert_eq!(q.execute("query-status", None).unwrap(), json!({}));
    }

    #[test]
    fn a_peer_that_is_not_qmp_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let sock = scripted_qmp(d.path(), &[r#"{"hello": "world"}"#, GREETING]);
        let e = Qmp::connect(&sock, Duration::from_secs(5)).err().expect("refused").to_string();
        assert!(e.contains("not a QMP greeting") && e.contains("hello"), "{e}");
    }

    fn spec(root: &Path) -> VmSpec {
        VmSpec {
            name: "vws-a".into(),
            memory_mib: 128,
            vcpus: 1,
            kernel: Some("/k/vmlinuz".into()),
            ramdisk: Some("/k/initrd.img".into()),
            cmdline: Some("console=ttyS0 quiet".into()),
            disks: vec![
                DiskSpec {
                    path: "/pool/a,b/root.qcow2".into(),
                    format: DiskFormat::Qcow2,
                    target: "vda".into(),
                    read_only: false,
                    cdrom: false,
                },
                DiskSpec {
                    path: "/pool/cfg.img".into(),
                    format: DiskFormat::Raw,
                    target: "vdb".into(),
                    read_only: true,
                    cdrom: false,
                },
            ],
            nics: vec![NicSpec { mac: "52:54:00:00:00:01".into(), bridge: None, ip: Some("10.20.0.10".into()) }],
            console_log: root.join("vws-a/console.log"),
            run_dir: root.join("vws-a"),
        }
    }

    #[test]
    fn argv_is_built_directly_with_escaped_option_values() {
        let root = PathBuf::from("/run/v");
        let d = QemuDriver::new(QemuConfig {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            run_root: root.clone(),
            probe: None,
            user_net: Some(UserNet { net: "10.20.0.0/24".into(), host: "10.20.0.1".into() }),
        });
        let a = d.argv(&spec(&root), None);
        let j = a.join(" ");
        assert!(j.contains("-accel tcg -m 128 -smp 1"), "{j}");
        assert!(a.contains(&"file=/pool/a,,b/root.qcow2,format=qcow2,id=d0,if=virtio,cache=writeback".to_string()), "{j}");
        assert!(a.contains(&"file=/pool/cfg.img,format=raw,id=d1,if=virtio,cache=writeback,readonly=on".to_string()), "{j}");
        assert!(j.contains("-netdev user,id=n0,net=10.20.0.0/24,host=10.20.0.1"), "{j}");
        assert!(j.contains("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile="), "{j}");
        assert!(j.contains("-qmp unix:/run/v/vws-a/qmp.sock,server=on,wait=off"), "{j}");
        assert!(j.ends_with("-daemonize -S"), "{j}");
        assert!(a.contains(&"console=ttyS0 quiet".to_string()), "the command line stays one argument");
        let r = d.argv(&spec(&root), Some(Path::new("/pool/a/save.state")));
        assert_eq!(r.last().unwrap(), "file:/pool/a/save.state");
        // With a bridge: a tap of this VM, named after it, no scripts (vwsd attaches it).
        let mut bridged = spec(&root);
        bridged.nics[0].bridge = Some("br0".into());
        let j = d.argv(&bridged, None).join(" ");
        let tap = tap_name("vws-a", 0);
        assert!(tap.len() <= 15 && tap.starts_with("vt") && tap != tap_name("vws-b", 0), "{tap}");
        assert!(j.contains(&format!("-netdev tap,id=n0,ifname={tap},script=no,downscript=no")), "{j}");
    }

    #[test]
    fn a_missing_binary_is_a_clear_error_and_nothing_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let d = QemuDriver::new(QemuConfig {
            binary: tmp.path().join("no-such-qemu"),
            accel: Accel::Tcg,
            run_root: tmp.path().to_path_buf(),
            probe: None,
            user_net: None,
        });
        let e = d.create_paused(&spec(tmp.path())).unwrap_err();
        assert!(e.to_string().contains("no-such-qemu"), "{e}");
        assert_eq!(d.state("vws-a").unwrap(), None);
        assert!(d.list().unwrap().is_empty());
        assert!(d.destroy("vws-a").is_ok(), "destroying what is gone is fine");
        assert!(matches!(d.pause("vws-a"), Err(VmmError::NotFound(_))));
    }
}
