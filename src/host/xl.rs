//! The Xen driver: runs Xen's `xl` toolstack for the Manager. One `xl.cfg` per domain (a PV
//! guest: name, memory, vcpus, kernel, ramdisk, extra, disk, vif, on_poweroff/on_reboot/on_crash)
//! is written into the VM's run directory; every operation is one `xl` subcommand run with its
//! argv built here (never a shell). Facts about xl (argv, outputs, texts, exit codes) are in
//! `../shared/reference/xen-xl.md`; the strict fake in `tests/fake-xl/xl` reproduces them and
//! runs every config through Xen's own parser.
//!
//! Error mapping: `xl` exiting non-zero is [`VmmError::Tool`] with its stderr kept as it was
//! (trailing whitespace trimmed); the texts xl prints for a domain that does not exist
//! (`<name> is an invalid domain identifier (rc=-6)`, `Error: Domain '<id>' does not exist.`)
//! become [`VmmError::NotFound`]; "No space left on device" while saving becomes
//! [`VmmError::NoSpace`].
//!
//! Xen-specific behaviour handled here:
//! * Xen counts pauses, so [`XlDriver::pause`] does not pause a paused domain again and
//!   [`XlDriver::unpause`] unpauses until the domain runs.
//! * `xl unpause` of a running domain exits 0 after an error line; the state is read back
//!   with `xl list` instead of trusting the exit code.
//! * Shutdown, reboot and save need the guest to acknowledge a control request, which a paused
//!   guest cannot do; the driver unpauses first.
//! * State comes from the `xl list` table (the `r b p s <reason> d` flags); names and domain
//!   ids from `xl list -l` (JSON, the domains' own configs). Domain-0 is never listed.
//! * A PV guest's console is read by xenconsoled, not by xl: with `console_dir` set (where
//!   `xenconsoled --log=guest` writes `guest-<name>.log`), the spec's console log path becomes a
//!   symlink to that file.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::vmm::{DiskSpec, NicSpec, VmInfo, VmSpec, VmState, Vmm, VmmError};

/// The config file name inside a VM's run directory.
pub const CONFIG_FILE: &str = "xl.cfg";

/// How often a running `xl shutdown -w` is looked at while the driver waits for it.
const POLL: Duration = Duration::from_millis(20);

/// Xen's `xl` as a [`Vmm`].
#[derive(Clone, Debug)]
pub struct XlDriver {
    xl: PathBuf,
    console_dir: Option<PathBuf>,
}

/// What one `xl` run said.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl XlDriver {
    /// A driver running the `xl` at `xl` (e.g. `/usr/sbin/xl`; a bare name is looked up in
    /// `$PATH` by the OS).
    pub fn new(xl: impl Into<PathBuf>) -> Self {
        XlDriver { xl: xl.into(), console_dir: None }
    }

    /// Where xenconsoled writes guest console logs (`xenconsoled --log=guest --log-dir=DIR`).
    pub fn with_console_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.console_dir = Some(dir.into());
        self
    }

    pub fn xl_path(&self) -> &Path {
        &self.xl
    }

    /// Where the config of `spec` is written: `<run_dir>/xl.cfg`, absolute (xl wants that).
    pub fn config_path(spec: &VmSpec) -> Result<PathBuf, VmmError> {
        Ok(absolute(&spec.run_dir)?.join(CONFIG_FILE))
    }

    /// The `xl.cfg` text for `spec`. Refuses what cannot be written so that xl reads back the
    /// same thing: names xl would take for a domain id, control characters, relative paths,
    /// commas or `=` inside a vif value.
    pub fn render_config(spec: &VmSpec) -> Result<String, VmmError> {
        check_name(&spec.name)?;
        if spec.memory_mib == 0 || spec.vcpus == 0 {
            return Err(VmmError::Io(format!(
                "VM {}: memory ({} MiB) and vcpus ({}) must be at least 1",
                spec.name, spec.memory_mib, spec.vcpus
            )));
        }
        let mut c = String::new();
        c.push_str(&format!("# xl.cfg for {} (written by vwsd; a new one is written on each create)\n", spec.name));
        c.push_str(&format!("name = {}\n", quote(&spec.name)?));
        c.push_str("type = \"pv\"\n");
        c.push_str(&format!("memory = {}\n", spec.memory_mib));
        c.push_str(&format!("maxmem = {}\n", spec.memory_mib));
        c.push_str(&format!("vcpus = {}\n", spec.vcpus));
        match &spec.kernel {
            Some(k) => c.push_str(&format!("kernel = {}\n", quote_path(k, "kernel")?)),
            // No kernel: boot what the first disk's grub config names.
            None => c.push_str("bootloader = \"pygrub\"\n"),
        }
        if let Some(r) = &spec.ramdisk {
            c.push_str(&format!("ramdisk = {}\n", quote_path(r, "ramdisk")?));
        }
        if let Some(x) = &spec.cmdline {
            c.push_str(&format!("extra = {}\n", quote(x)?));
        }
        let disks = spec.disks.iter().map(|d| disk_spec(d).and_then(|s| quote(&s))).collect::<Result<Vec<_>, _>>()?;
        c.push_str(&format!("disk = [ {} ]\n", disks.join(", ")));
        let vifs = spec.nics.iter().map(|n| vif_spec(n).and_then(|s| quote(&s))).collect::<Result<Vec<_>, _>>()?;
        c.push_str(&format!("vif = [ {} ]\n", vifs.join(", ")));
        // A guest that powers off is gone; a reboot restarts it in place; a crashed one is
        // kept (flag `c`) so reconciliation sees it and marks the workspace Corrupted.
        c.push_str("on_poweroff = \"destroy\"\n");
        c.push_str("on_reboot = \"restart\"\n");
        c.push_str("on_crash = \"preserve\"\n");
        Ok(c)
    }

    /// Write the config of `spec` into its run directory (atomically) and return its path.
    pub fn write_config(&self, spec: &VmSpec) -> Result<PathBuf, VmmError> {
        let text = Self::render_config(spec)?;
        let path = Self::config_path(spec)?;
        let dir = path.parent().expect("config path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
        let tmp = dir.join(format!(".{CONFIG_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| io_err(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(format!("renaming {}", tmp.display()), e))?;
        Ok(path)
    }

    fn link_console(&self, spec: &VmSpec) {
        let Some(dir) = &self.console_dir else { return };
        let target = dir.join(format!("guest-{}.log", spec.name));
        let _ = std::fs::remove_file(&spec.console_log);
        if let Err(e) = std::os::unix::fs::symlink(&target, &spec.console_log) {
            tracing::warn!(vm = %spec.name, error = %e, "cannot link the console log to {}", target.display());
        }
    }

    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.xl);
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn spawn_err(&self, e: std::io::Error) -> VmmError {
        VmmError::Io(format!("cannot run {}: {e}", self.xl.display()))
    }

    fn run(&self, args: &[OsString]) -> Result<Ran, VmmError> {
        let out = self.command(args).output().map_err(|e| self.spawn_err(e))?;
        Ok(Ran {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run `xl args…`; non-zero exit → the error it means. `domain` names the domain the
    /// command is about (for NotFound).
    fn xl(&self, args: &[OsString], domain: Option<&str>) -> Result<Ran, VmmError> {
        let ran = self.run(args)?;
        if ran.status.success() {
            return Ok(ran);
        }
        Err(self.failure(args, domain, ran.status, ran.stderr))
    }

    fn failure(&self, args: &[OsString], domain: Option<&str>, status: ExitStatus, stderr: String) -> VmmError {
        let sub = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(name) = domain {
            if is_not_found(&stderr) {
                return VmmError::NotFound(name.to_string());
            }
        }
        if sub == "save" && stderr.contains("No space left on device") {
            return VmmError::NoSpace(format!("saving {}: {}", domain.unwrap_or("?"), stderr.trim_end()));
        }
        VmmError::Tool { tool: format!("xl {sub}"), code: status.code(), stderr: stderr.trim_end().to_string() }
    }

    /// `xl list -l [name]`: (domid, name) of each domain with a config, Domain-0 left out.
    fn list_long(&self, name: Option<&str>) -> Result<Vec<(u32, String)>, VmmError> {
        let mut args = vec![os("list"), os("-l")];
        if let Some(n) = name {
            args.push(os(n));
        }
        let ran = self.xl(&args, name)?;
        parse_list_long(&ran.stdout).map_err(|e| VmmError::Tool {
            tool: "xl list -l".into(),
            code: ran.status.code(),
            stderr: format!("unreadable JSON on stdout ({e}); stderr: {}", ran.stderr.trim_end()),
        })
    }

    /// The domain id of `name`, from `xl list -l name`.
    fn domid(&self, name: &str) -> Result<Option<u32>, VmmError> {
        Ok(self.list_long(Some(name))?.into_iter().find(|(_, n)| n == name).map(|(id, _)| id))
    }

    /// Unpause until the domain runs (Xen counts pauses; bounded so a stuck domain cannot
    /// keep the driver here).
    fn unpause_fully(&self, name: &str) -> Result<(), VmmError> {
        for _ in 0..16 {
            match self.state(name)? {
                None => return Err(VmmError::NotFound(name.to_string())),
                Some(VmState::Paused) => {
                    self.xl(&[os("unpause"), os(name)], Some(name))?;
                }
                Some(_) => return Ok(()),
            }
        }
        Err(VmmError::Tool {
            tool: "xl unpause".into(),
            code: Some(0),
            stderr: format!("domain {name} is still paused after 16 unpauses"),
        })
    }

    /// Wait for a child up to `deadline`; None when it is still running then.
    fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>, std::io::Error> {
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(Some(st));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }
}

impl Vmm for XlDriver {
    fn kind(&self) -> &'static str {
        "xen"
    }

    fn create_paused(&self, spec: &VmSpec) -> Result<VmInfo, VmmError> {
        let cfg = self.write_config(spec)?;
        self.link_console(spec);
        self.xl(&[os("create"), os("-p"), cfg.into_os_string()], None)?;
        let id = self.domid(&spec.name)?;
        Ok(VmInfo { name: spec.name.clone(), state: VmState::Paused, id })
    }

    fn unpause(&self, name: &str) -> Result<(), VmmError> {
        // xl exits 0 even when Xen refused (a running domain); the state tells.
        self.xl(&[os("unpause"), os(name)], Some(name))?;
        self.unpause_fully(name)
    }

    fn pause(&self, name: &str) -> Result<(), VmmError> {
        match self.state(name)? {
            None => Err(VmmError::NotFound(name.to_string())),
            Some(VmState::Paused) => Ok(()),
            Some(_) => self.xl(&[os("pause"), os(name)], Some(name)).map(|_| ()),
        }
    }

    fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), VmmError> {
        let deadline = Instant::now() + timeout;
        // A paused guest cannot acknowledge the request (xl waits 60 s, then fails).
        self.unpause_fully(name)?;
        let args = [os("shutdown"), os("-w"), os(name)];
        let mut child =
            self.command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| self.spawn_err(e))?;
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = pipe.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let waited = Self::wait_until(&mut child, deadline);
        match waited {
            Ok(Some(status)) => {
                let stderr = reader.join().unwrap_or_default();
                if !status.success() {
                    return Err(self.failure(&args, Some(name), status, stderr));
                }
                // Shut down but kept (an on_poweroff other than destroy): finish the job.
                if self.state(name)?.is_some() {
                    self.destroy(name)?;
                }
                Ok(())
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                tracing::warn!(vm = name, ?timeout, "guest did not shut down in time; destroying it");
                self.destroy(name)?;
                Err(VmmError::Timeout { what: format!("graceful shutdown of {name}"), after: timeout })
            }
        }
    }

    fn reboot(&self, name: &str) -> Result<(), VmmError> {
        self.unpause_fully(name)?;
        self.xl(&[os("reboot"), os(name)], Some(name)).map(|_| ())
    }

    fn destroy(&self, name: &str) -> Result<(), VmmError> {
        match self.xl(&[os("destroy"), os(name)], Some(name)) {
            Ok(_) | Err(VmmError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        // xl destroy is synchronous; confirm before anyone frees what the domain held.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.state(name)?.is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(VmmError::Timeout { what: format!("destruction of domain {name}"), after: Duration::from_secs(10) });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn save(&self, name: &str, path: &Path) -> Result<(), VmmError> {
        let path = absolute(path)?;
        // The guest must acknowledge the suspend request; a paused one cannot.
        self.unpause_fully(name)?;
        match self.xl(&[os("save"), os(name), path.clone().into_os_string()], Some(name)) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Nothing half-written stays behind (xl resumes the domain on failure). Only a
                // regular file is removed: never a device or what a symlink points to.
                if std::fs::symlink_metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e)
            }
        }
    }

    fn restore_paused(&self, spec: &VmSpec, path: &Path) -> Result<VmInfo, VmmError> {
        let path = absolute(path)?;
        let cfg = self.write_config(spec)?;
        self.link_console(spec);
        self.xl(&[os("restore"), os("-p"), cfg.into_os_string(), path.into_os_string()], None)?;
        let id = self.domid(&spec.name)?;
        Ok(VmInfo { name: spec.name.clone(), state: VmState::Paused, id })
    }

    fn list(&self) -> Result<Vec<VmInfo>, VmmError> {
        let long = self.list_long(None)?;
        let table = self.xl(&[os("list")], None)?;
        let rows = parse_list_table(&table.stdout);
        let mut out = Vec::new();
        for (id, name) in long {
            // A domain that died between the two calls is simply not listed.
            if let Some(row) = rows.iter().find(|r| r.id == id) {
                out.push(VmInfo { name, state: row.state, id: Some(id) });
            }
        }
        // Domains whose config xl could not retrieve still run: list them from the table.
        for row in rows {
            if !out.iter().any(|v| v.id == Some(row.id)) {
                out.push(VmInfo { name: row.name, state: row.state, id: Some(row.id) });
            }
        }
        Ok(out)
    }

    fn state(&self, name: &str) -> Result<Option<VmState>, VmmError> {
        match self.xl(&[os("list"), os(name)], Some(name)) {
            Ok(ran) => Ok(parse_list_table(&ran.stdout).into_iter().find(|r| r.name == name).map(|r| r.state)),
            Err(VmmError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One row of the `xl list` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRow {
    pub name: String,
    pub id: u32,
    pub state: VmState,
}

/// Rows of `xl list` (header and Domain-0 left out). Each row is split from the right: time,
/// state flags, vcpus, memory, id; what is left is the name.
pub fn parse_list_table(text: &str) -> Vec<ListRow> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 {
            continue;
        }
        let tail = fields.split_off(fields.len() - 5);
        let name = fields.join(" ");
        let Ok(id) = tail[0].parse::<u32>() else { continue }; // the header
        if id == 0 || name == "Domain-0" {
            continue;
        }
        let Some(state) = state_from_flags(tail[3]) else { continue };
        rows.push(ListRow { name, id, state });
    }
    rows
}

/// The six `xl list` flags (`r b p s <shutdown reason> d`) as a [`VmState`].
pub fn state_from_flags(flags: &str) -> Option<VmState> {
    let f: Vec<char> = flags.chars().collect();
    if f.len() != 6 {
        return None;
    }
    let shut = f[3] == 's';
    Some(if f[4] == 'c' {
        VmState::Crashed
    } else if shut || f[5] == 'd' {
        VmState::Shutdown
    } else if f[2] == 'p' {
        VmState::Paused
    } else {
        VmState::Running
    })
}

/// `xl list -l` JSON: an array of `{"domid": N, "config": {"c_info": {"name": …}, …}}`.
pub fn parse_list_long(text: &str) -> Result<Vec<(u32, String)>, serde_json::Error> {
    let v: serde_json::Value =
        if text.trim().is_empty() { serde_json::Value::Array(vec![]) } else { serde_json::from_str(text)? };
    let mut out = Vec::new();
    for d in v.as_array().into_iter().flatten() {
        let Some(id) = d.get("domid").and_then(|x| x.as_u64()) else { continue };
        let Some(name) = d.pointer("/config/c_info/name").and_then(|x| x.as_str()) else { continue };
        if id == 0 {
            continue;
        }
        out.push((id as u32, name.to_string()));
    }
    Ok(out)
}

/// A disk in xl-disk-configuration(5)'s keyed form, `target=` last (it takes the rest of the
/// string, commas and all). A QEMU-style `vdX` name becomes Xen's `xvdX`.
pub fn disk_spec(d: &DiskSpec) -> Result<String, VmmError> {
    let path = d.path.to_str().ok_or_else(|| VmmError::Io(format!("disk path {} is not UTF-8", d.path.display())))?;
    if !d.path.is_absolute() {
        // Xen prepends /dev/ to a relative target.
        return Err(VmmError::Io(format!("disk path {path} must be absolute")));
    }
    let vdev = match d.target.strip_prefix("vd") {
        Some(rest) => format!("xvd{rest}"),
        None => d.target.clone(),
    };
    if vdev.is_empty() || !vdev.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(VmmError::Io(format!("disk device name {:?} is not a Xen vdev", d.target)));
    }
    let access = if d.read_only || d.cdrom { "ro" } else { "rw" };
    let devtype = if d.cdrom { "devtype=cdrom, " } else { "" };
    Ok(format!("format={}, vdev={vdev}, access={access}, {devtype}target={path}", d.format.as_str()))
}

/// A NIC in xl-network-configuration(5)'s form: `mac=…,bridge=…,ip=…` (no bridge: xl's
/// default, xenbr0 with the vif-bridge script).
pub fn vif_spec(n: &NicSpec) -> Result<String, VmmError> {
    let mut parts = vec![format!("mac={}", vif_value("mac", &n.mac)?)];
    if let Some(b) = &n.bridge {
        parts.push(format!("bridge={}", vif_value("bridge", b)?));
    }
    if let Some(ip) = &n.ip {
        parts.push(format!("ip={}", vif_value("ip", ip)?));
    }
    Ok(parts.join(","))
}

fn vif_value<'a>(key: &str, v: &'a str) -> Result<&'a str, VmmError> {
    if v.is_empty() || v.contains([',', '=', ' ']) {
        return Err(VmmError::Io(format!("vif {key} {v:?} cannot be written in a vif spec")));
    }
    if key == "mac" {
        let ok = v.split(':').count() == 6 && v.split(':').all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(VmmError::Io(format!("MAC {v:?} is not six colon-separated hex pairs")));
        }
    }
    Ok(v)
}

fn check_name(name: &str) -> Result<(), VmmError> {
    if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) || name == "Domain-0" || name.contains('/') {
        // xl reads a number as a domain id; Domain-0 is the host.
        return Err(VmmError::Io(format!("{name:?} cannot be a Xen domain name")));
    }
    Ok(())
}

/// A double-quoted xl.cfg string. xl's lexer takes `\"` and `\\`; control characters are
/// refused rather than escaped (its `\x` escape is broken in 4.17).
fn quote(s: &str) -> Result<String, VmmError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(VmmError::Io(format!("{s:?} has control characters and cannot go in xl.cfg")));
    }
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

fn quote_path(p: &Path, what: &str) -> Result<String, VmmError> {
    let s = p.to_str().ok_or_else(|| VmmError::Io(format!("{what} path {} is not UTF-8", p.display())))?;
    if !p.is_absolute() {
        return Err(VmmError::Io(format!("{what} path {s} must be absolute")));
    }
    quote(s)
}

fn absolute(p: &Path) -> Result<PathBuf, VmmError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| io_err("reading the current directory".into(), e))?;
    Ok(cwd.join(p))
}

fn is_not_found(stderr: &str) -> bool {
    stderr.contains("is an invalid domain identifier")
        || (stderr.contains("Error: Domain '") && stderr.contains("' does not exist."))
}

fn io_err(what: String, e: std::io::Error) -> VmmError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        VmmError::NoSpace(what)
    } else {
        VmmError::Io(format!("{what}: {e}"))
    }
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::vmm::DiskFormat;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vws-42".into(),
            memory_mib: 128,
            vcpus: 1,
            kernel: Some("/srv/vws/images/vmlinuz".into()),
            ramdisk: Some("/srv/vws/images/initrd.img".into()),
            cmdline: Some("console=hvc0 quiet".into()),
            disks: vec![
                DiskSpec {
                    path: "/srv/vws/pool/vws-42.qcow2".into(),
                    format: DiskFormat::Qcow2,
                    target: "xvda".into(),
                    read_only: false,
                    cdrom: false,
                },
                DiskSpec {
                    path: "/srv/vws/pool/vws-42-config.img".into(),
                    format: DiskFormat::Raw,
                    target: "vdb".into(),
                    read_only: true,
                    cdrom: false,
                },
            ],
            nics: vec![NicSpec { mac: "52:54:00:00:00:2a".into(), bridge: Some("xenbr0".into()), ip: Some("10.0.0.42".into()) }],
            console_log: "/srv/vws/run/vws-42/console.log".into(),
            run_dir: "/srv/vws/run/vws-42".into(),
        }
    }

    #[test]
    fn config_has_every_pv_key_in_xl_syntax() {
        let c = XlDriver::render_config(&spec()).unwrap();
        let lines: Vec<&str> = c.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "name = \"vws-42\"",
                "type = \"pv\"",
                "memory = 128",
                "maxmem = 128",
                "vcpus = 1",
                "kernel = \"/srv/vws/images/vmlinuz\"",
                "ramdisk = \"/srv/vws/images/initrd.img\"",
                "extra = \"console=hvc0 quiet\"",
                "disk = [ \"format=qcow2, vdev=xvda, access=rw, target=/srv/vws/pool/vws-42.qcow2\", \
                 \"format=raw, vdev=xvdb, access=ro, target=/srv/vws/pool/vws-42-config.img\" ]",
                "vif = [ \"mac=52:54:00:00:00:2a,bridge=xenbr0,ip=10.0.0.42\" ]",
                "on_poweroff = \"destroy\"",
                "on_reboot = \"restart\"",
                "on_crash = \"preserve\"",
            ]
        );
    }

    #[test]
    fn no_kernel_means_pygrub_and_no_bridge_means_xl_default() {
        let mut s = spec();
        s.kernel = None;
        s.ramdisk = None;
        s.cmdline = None;
        s.nics[0].bridge = None;
        s.nics[0].ip = None;
        let c = XlDriver::render_config(&s).unwrap();
        assert!(c.contains("bootloader = \"pygrub\"\n"));
        assert!(!c.contains("kernel") && !c.contains("ramdisk") && !c.contains("extra"));
        assert!(c.contains("vif = [ \"mac=52:54:00:00:00:2a\" ]\n"));
    }

    #[test]
    fn target_goes_last_so_commas_in_paths_survive() {
        let d = DiskSpec {
            path: "/srv/a,b:c.raw".into(),
            format: DiskFormat::Raw,
            target: "xvdc".into(),
            read_only: false,
            cdrom: true,
        };
        assert_eq!(disk_spec(&d).unwrap(), "format=raw, vdev=xvdc, access=ro, devtype=cdrom, target=/srv/a,b:c.raw");
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_and_control_characters_refused() {
        let mut s = spec();
        s.cmdline = Some(r#"say "hi" \o/"#.into());
        let c = XlDriver::render_config(&s).unwrap();
        assert!(c.contains(r#"extra = "say \"hi\" \\o/""#), "{c}");
        s.cmdline = Some("a\nname = \"evil\"".into());
        assert!(matches!(XlDriver::render_config(&s), Err(VmmError::Io(m)) if m.contains("control characters")));
    }

    #[test]
    fn what_xl_would_misread_is_refused() {
        for bad in ["42", "", "Domain-0", "a/b"] {
            let mut s = spec();
            s.name = bad.into();
            assert!(XlDriver::render_config(&s).is_err(), "{bad:?}");
        }
        let mut s = spec();
        s.disks[0].path = "relative.qcow2".into();
        assert!(matches!(XlDriver::render_config(&s), Err(VmmError::Io(m)) if m.contains("absolute")));
        let mut s = spec();
        s.kernel = Some("vmlinuz".into());
        assert!(XlDriver::render_config(&s).is_err());
        let mut s = spec();
        s.nics[0].bridge = Some("br0,script=/bin/evil".into());
        assert!(XlDriver::render_config(&s).is_err());
        let mut s = spec();
        s.nics[0].mac = "52:54:00:00:2a".into();
        assert!(XlDriver::render_config(&s).is_err());
        let mut s = spec();
        s.memory_mib = 0;
        assert!(XlDriver::render_config(&s).is_err());
    }

    #[test]
    fn list_table_rows_are_split_from_the_right_and_flags_mapped() {
        let text = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
                    Domain-0                                     0   750     4     r-----   11794.3\n\
                    vws-1                                        3   128     1     -b----       0.3\n\
                    vws-2                                        4   128     1     --p---       0.0\n\
                    vws-3                                        5   128     1     -bp---       0.0\n\
                    vws-4                                        6   128     1     ---sc-       1.0\n\
                    vws-5                                        7   128     1     ---s--       1.0\n\
                    vws-6                                        8   128     1     -----d       1.0\n";
        let rows = parse_list_table(text);
        let got: Vec<(&str, u32, VmState)> = rows.iter().map(|r| (r.name.as_str(), r.id, r.state)).collect();
        assert_eq!(
            got,
            vec![
                ("vws-1", 3, VmState::Running),
                ("vws-2", 4, VmState::Paused),
                ("vws-3", 5, VmState::Paused),
                ("vws-4", 6, VmState::Crashed),
                ("vws-5", 7, VmState::Shutdown),
                ("vws-6", 8, VmState::Shutdown),
            ]
        );
    }

    #[test]
    fn list_long_json_gives_ids_and_names_without_dom0() {
        let text = r#"[
    { "domid": 0, "config": { "c_info": { "name": "Domain-0" } } },
    { "domid": 7, "config": { "c_info": { "type": "pv", "name": "vws-7" }, "b_info": { "max_vcpus": 1 } } }
]"#;
        assert_eq!(parse_list_long(text).unwrap(), vec![(7, "vws-7".to_string())]);
        assert_eq!(parse_list_long("").unwrap(), vec![]);
        assert!(parse_list_long("[{").is_err());
    }

    #[test]
    fn not_found_texts_are_recognised() {
        assert!(is_not_found("vws-9 is an invalid domain identifier (rc=-6)\n"));
        assert!(is_not_found("Error: Domain '77' does not exist.\n"));
        assert!(!is_not_found("libxl: error: something else\n"));
    }
}
