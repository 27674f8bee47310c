//! The VM engine: what deploy does once the images are staged, and every operation on a
//! deployed workspace's VM, over any [`Vmm`] driver. Blocking (it spawns tools and talks to the
//! hypervisor); the Manager calls it on tokio's blocking pool. Knows nothing of SOAP or of the
//! workspace state table: the Manager checks and records transitions, this does the work.
//!
//! Files of a workspace, all in its pool directory `<pool>/<key>/` (removed by undeploy):
//! the staged images (never written), a qcow2 overlay per writable image disk, blank disks,
//! `config.img` (the guest's config disk: key, certificate, IP, netmask, gateway, hostname),
//! `cert.pem`, `console.log` (the serial console), `memory.state` (after save).
//! Its VM is named `vws-<key>`; its run directory is `<run>/vws-<key>/`.

use super::ca::{HostCa, Issued};
use super::vmm::{DiskFormat, DiskSpec, Laps, NicSpec, VmSpec, VmState, Vmm, VmmError};
use crate::store::leases::{Lease, LeaseError, Leases};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the engine needs to know of the host (from `[vmm]`, `[network]`).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub pool: PathBuf,
    pub run_root: PathBuf,
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub cmdline: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub stop_timeout: Duration,
    pub ready_marker: String,
    pub ready_timeout: Duration,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub bridge: Option<String>,
    pub qemu_img: PathBuf,
}

/// One disk of a workspace, as deploy found it in the pool.
#[derive(Clone, Debug)]
pub struct DiskPlan {
    pub name: String,
    /// The staged image (None: a blank disk of `blank_mib`).
    pub staged: Option<PathBuf>,
    pub blank_mib: u64,
    pub read_only: bool,
    pub cdrom: bool,
}

/// A workspace's VM facts, for its resource properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub vm: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub console: PathBuf,
    pub cert_pem: String,
    pub cert_subject: String,
    pub cert_sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("{0}")]
    Setup(String),
    #[error("the guest did not print {marker:?} on its console within {after:?}")]
    NotReady { marker: String, after: Duration },
}

impl EngineError {
    /// A short machine-readable kind (the fault's ErrorCode).
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Vmm(VmmError::NotFound(_)) => "vm_not_found",
            EngineError::Vmm(VmmError::Tool { .. }) => "hypervisor_failed",
            EngineError::Vmm(VmmError::Timeout { .. }) => "timeout",
            EngineError::Vmm(VmmError::NoSpace(_)) => "no_space",
            EngineError::Vmm(VmmError::Io(_)) => "io",
            EngineError::Vmm(VmmError::Abandoned(_)) => "abandoned",
            EngineError::Lease(LeaseError::Exhausted { .. }) => "address_pool_exhausted",
            EngineError::Lease(_) => "address_store",
            EngineError::Setup(_) => "setup_failed",
            EngineError::NotReady { .. } => "guest_not_ready",
        }
    }
}

pub struct VmEngine {
    pub vmm: Arc<dyn Vmm>,
    pub leases: Leases,
    pub ca: HostCa,
    pub cfg: EngineConfig,
}

fn setup(what: impl std::fmt::Display, e: impl std::fmt::Display) -> EngineError {
    EngineError::Setup(format!("{what}: {e}"))
}

/// `qcow2` when the file starts with QEMU's qcow magic, else raw.
pub fn image_format(p: &Path) -> DiskFormat {
    use std::io::Read;
    let mut b = [0u8; 4];
    match std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) if &b == b"QFI\xfb" => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    }
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 { 0 } else { u32::MAX << (32 - prefix.min(32) as u32) })
}

impl VmEngine {
    pub fn vm_name(key: &str) -> String {
        format!("vws-{key}")
    }

    pub fn dir(&self, key: &str) -> PathBuf {
        self.cfg.pool.join(key)
    }

    pub fn console(&self, key: &str) -> PathBuf {
        self.dir(key).join("console.log")
    }

    pub fn save_file(&self, key: &str) -> PathBuf {
        self.dir(key).join("memory.state")
    }

    fn config_disk(&self, key: &str) -> PathBuf {
        self.dir(key).join("config.img")
    }

    fn overlay(&self, key: &str, i: usize) -> PathBuf {
        self.dir(key).join(format!("overlay{i:02}.qcow2"))
    }

    /// The workspace's address and MAC (allocated once; atomic).
    pub fn allocate(&self, key: &str) -> Result<Lease, EngineError> {
        Ok(self.leases.allocate(key)?)
    }

    /// The VM definition of a workspace: the same every time (restore needs the same devices).
    pub fn spec(
        &self,
        key: &str,
        disks: &[DiskPlan],
        memory_mib: Option<u32>,
        vcpus: Option<u32>,
        mac: &str,
        ip: Ipv4Addr,
    ) -> VmSpec {
        let name = Self::vm_name(key);
        let mut specs = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let (path, format) = match (&d.staged, d.read_only || d.cdrom) {
                (Some(p), true) => (p.clone(), image_format(p)),
                _ => (self.overlay(key, i), DiskFormat::Qcow2),
            };
            specs.push(DiskSpec {
                path,
                format,
                target: if d.cdrom {
                    format!("hd{}", (b'c' + i as u8) as char)
                } else {
                    format!("vd{}", (b'a' + i as u8) as char)
                },
                read_only: d.read_only || d.cdrom,
                cdrom: d.cdrom,
            });
        }
        let n = specs.len();
        specs.push(DiskSpec {
            path: self.config_disk(key),
            format: DiskFormat::Raw,
            target: format!("vd{}", (b'a' + n as u8) as char),
            read_only: true,
            cdrom: false,
        });
        VmSpec {
            name: name.clone(),
            memory_mib: memory_mib.unwrap_or(self.cfg.memory_mib),
            vcpus: vcpus.unwrap_or(self.cfg.vcpus),
            kernel: self.cfg.kernel.clone(),
            ramdisk: self.cfg.ramdisk.clone(),
            cmdline: Some(self.cfg.cmdline.clone()),
            disks: specs,
            nics: vec![NicSpec { mac: mac.to_string(), bridge: self.cfg.bridge.clone(), ip: Some(ip.to_string()) }],
            console_log: self.console(key),
            run_dir: self.cfg.run_root.join(&name),
        }
    }

    /// After staging: overlays, credentials, config disk, the VM defined paused (and, for a hot
    /// workspace, booted once to its ready line and paused again). On failure the VM (if any) is
    /// destroyed; the files and the address stay for the caller's [`super::Host::teardown`].
    pub fn provision(
        &self,
        key: &str,
        disks: &[DiskPlan],
        memory_mib: Option<u32>,
        vcpus: Option<u32>,
        hot: bool,
    ) -> Result<Placement, EngineError> {
        let r = self.provision_inner(key, disks, memory_mib, vcpus, hot);
        if r.is_err() {
            let _ = self.vmm.destroy(&Self::vm_name(key));
        }
        r
    }

    fn provision_inner(
        &self,
        key: &str,
        disks: &[DiskPlan],
        memory_mib: Option<u32>,
        vcpus: Option<u32>,
        hot: bool,
    ) -> Result<Placement, EngineError> {
        if let Some(k) = &self.cfg.kernel {
            if !k.is_file() {
                return Err(EngineError::Setup(format!(
                    "the guest kernel {} does not exist (vmm.kernel; `make guest` builds the demo guest)",
                    k.display()
                )));
            }
        }
        // Where deploy's time goes, step by step (logged at debug level).
        let mut laps = Laps::start();
        let lease = self.allocate(key)?;
        laps.lap("lease");
        let dir = self.dir(key);
        std::fs::create_dir_all(&dir).map_err(|e| setup(dir.display(), e))?;
        for (i, d) in disks.iter().enumerate() {
            match &d.staged {
                Some(p) if !(d.read_only || d.cdrom) => self.make_overlay(p, &self.overlay(key, i))?,
                Some(p) => {
                    if !p.is_file() {
                        return Err(EngineError::Setup(format!("staged image {} is missing", p.display())));
                    }
                }
                None => self.make_blank(&self.overlay(key, i), d.blank_mib.max(1))?,
            }
        }
        laps.lap("overlays");
        let issued = self.ca.issue(key).map_err(EngineError::Setup)?;
        std::fs::write(dir.join("cert.pem"), &issued.cert_pem).map_err(|e| setup("cert.pem", e))?;
        laps.lap("certificate");
        self.write_config_disk(key, &lease, &issued)?;
        laps.lap("config_disk");
        let spec = self.spec(key, disks, memory_mib, vcpus, &lease.mac, lease.ip);
        self.vmm.create_paused(&spec)?;
        laps.lap("vm_defined");
        if hot {
            let from = std::fs::metadata(self.console(key)).map(|m| m.len()).unwrap_or(0);
            self.vmm.unpause(&spec.name)?;
            self.wait_ready(key, from)?;
            self.vmm.pause(&spec.name)?;
            laps.lap("hot_boot");
        }
        tracing::debug!(key, total_ms = laps.total_ms(), steps = ?laps.steps, "VM provisioned");
        Ok(Placement {
            vm: spec.name,
            ip: lease.ip,
            mac: lease.mac,
            console: self.console(key),
            cert_pem: issued.cert_pem,
            cert_subject: issued.subject,
            cert_sha256: issued.sha256,
        })
    }

    /// Waits for the ready marker on the console after byte `from`.
    pub fn wait_ready(&self, key: &str, from: u64) -> Result<(), EngineError> {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let console = self.console(key);
        loop {
            if super::qemu::read_console(&console, from).map(|t| t.contains(&self.cfg.ready_marker)).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EngineError::NotReady { marker: self.cfg.ready_marker.clone(), after: self.cfg.ready_timeout });
            }
            if self.vmm.state(&Self::vm_name(key))?.is_none() {
                return Err(EngineError::Vmm(VmmError::NotFound(Self::vm_name(key))));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn qemu_img(&self, args: &[&std::ffi::OsStr]) -> Result<(), EngineError> {
        let out = Command::new(&self.cfg.qemu_img)
            .args(args)
            .output()
            .map_err(|e| setup(format!("cannot run {}", self.cfg.qemu_img.display()), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EngineError::Vmm(VmmError::Tool {
                tool: "qemu-img".into(),
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }))
        }
    }

    /// A copy-on-write overlay on a staged image (which is never written).
    fn make_overlay(&self, base: &Path, overlay: &Path) -> Result<(), EngineError> {
        let _ = std::fs::remove_file(overlay);
        let fmt = image_format(base).as_str();
        self.qemu_img(&[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            fmt.as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            overlay.as_os_str(),
        ])
    }

    fn make_blank(&self, path: &Path, mib: u64) -> Result<(), EngineError> {
        let _ = std::fs::remove_file(path);
        let size = format!("{mib}M");
        self.qemu_img(&["create".as_ref(), "-q".as_ref(), "-f".as_ref(), "qcow2".as_ref(), path.as_os_str(), size.as_ref()])
    }

    /// The guest's config disk: an ext2 image (label `vwscfg`) holding `vws/` with ip, prefix,
    /// netmask, gateway, hostname, cert.pem, key.pem, subject. The files exist only inside it.
    fn write_config_disk(&self, key: &str, lease: &Lease, issued: &Issued) -> Result<(), EngineError> {
        let dir = self.dir(key);
        let tmp = dir.join("config");
        let _ = std::fs::remove_dir_all(&tmp);
        let v = tmp.join("vws");
        std::fs::create_dir_all(&v).map_err(|e| setup(v.display(), e))?;
        let gw = self.cfg.gateway.map(|g| g.to_string()).unwrap_or_default();
        let host = format!("ws-{}", key.split('-').next().unwrap_or(key));
        let files = [
            ("ip", lease.ip.to_string()),
            ("prefix", self.cfg.prefix.to_string()),
            ("netmask", netmask(self.cfg.prefix).to_string()),
            ("gateway", gw),
            ("hostname", host),
            ("mac", lease.mac.clone()),
            ("workspace", key.to_string()),
            ("cert.pem", issued.cert_pem.clone()),
            ("subject", issued.subject.clone()),
        ];
        for (n, t) in files {
            std::fs::write(v.join(n), format!("{}\n", t.trim_end())).map_err(|e| setup(n, e))?;
        }
        super::ca::write_private(&v.join("key.pem"), issued.key_pem.as_bytes()).map_err(EngineError::Setup)?;
        let img = self.config_disk(key);
        let _ = std::fs::remove_file(&img);
        let f = std::fs::File::create(&img).map_err(|e| setup(img.display(), e))?;
        f.set_len(1 << 20).map_err(|e| setup(img.display(), e))?;
        drop(f);
        let out = Command::new("mkfs.ext2")
            .args(["-q", "-F", "-L", "vwscfg", "-m", "0", "-d"])
            .arg(&tmp)
            .arg(&img)
            .output()
            .map_err(|e| setup("cannot run mkfs.ext2 (e2fsprogs)", e));
        let _ = std::fs::remove_dir_all(&tmp);
        let out = out?;
        if !out.status.success() {
            return Err(EngineError::Vmm(VmmError::Tool {
                tool: "mkfs.ext2".into(),
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }));
        }
        Ok(())
    }

    /// Start: resume the VM defined paused (or hot); define it again first when it is gone
    /// (after a stop).
    pub fn start(&self, key: &str, disks: &[DiskPlan], memory_mib: Option<u32>, vcpus: Option<u32>) -> Result<(), EngineError> {
        let name = Self::vm_name(key);
        match self.vmm.state(&name)? {
            Some(VmState::Paused) | Some(VmState::Running) => {}
            Some(VmState::Shutdown) | Some(VmState::Crashed) => {
                self.vmm.destroy(&name)?;
                self.define(key, disks, memory_mib, vcpus)?;
            }
            None => self.define(key, disks, memory_mib, vcpus)?,
        }
        Ok(self.vmm.unpause(&name)?)
    }

    fn define(&self, key: &str, disks: &[DiskPlan], memory_mib: Option<u32>, vcpus: Option<u32>) -> Result<(), EngineError> {
        let lease = self.allocate(key)?;
        let spec = self.spec(key, disks, memory_mib, vcpus, &lease.mac, lease.ip);
        self.vmm.create_paused(&spec)?;
        Ok(())
    }

    pub fn pause(&self, key: &str) -> Result<(), EngineError> {
        Ok(self.vmm.pause(&Self::vm_name(key))?)
    }

    pub fn unpause(&self, key: &str) -> Result<(), EngineError> {
        Ok(self.vmm.unpause(&Self::vm_name(key))?)
    }

    pub fn reboot(&self, key: &str) -> Result<(), EngineError> {
        Ok(self.vmm.reboot(&Self::vm_name(key))?)
    }

    /// Graceful stop; Ok(true) when the VM had to be forced off after the timeout.
    pub fn stop(&self, key: &str) -> Result<bool, EngineError> {
        match self.vmm.shutdown(&Self::vm_name(key), self.cfg.stop_timeout) {
            Ok(()) => Ok(false),
            Err(VmmError::Timeout { .. }) => Ok(true),
            Err(VmmError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Memory state to `memory.state` in the pool; the VM is gone afterwards. `proceed` is asked
    /// (it may block) before the VM goes: false calls the save off, the VM as it was.
    pub fn save(&self, key: &str, proceed: &mut dyn FnMut() -> bool) -> Result<(), EngineError> {
        let t0 = Instant::now();
        self.vmm.save_when(&Self::vm_name(key), &self.save_file(key), proceed)?;
        tracing::debug!(key, ms = t0.elapsed().as_secs_f64() * 1e3, "VM saved");
        Ok(())
    }

    /// The complete save file of a saved workspace: `memory.state`, or `memory.partial` when a
    /// crash lost the rename that followed its fsync (a workspace is Saved only once the file is
    /// durable, and nothing else writes `.partial` then). None when there is neither.
    pub fn saved_file(&self, key: &str) -> Option<PathBuf> {
        let f = self.save_file(key);
        let partial = f.with_extension("partial");
        [f, partial].into_iter().find(|p| p.is_file())
    }

    /// Back from `memory.state`, running; the save file is removed once the VM runs. `proceed`
    /// is asked (it may block) before the restored VM runs: false destroys it again (the save
    /// file stays).
    pub fn restore(
        &self,
        key: &str,
        disks: &[DiskPlan],
        memory_mib: Option<u32>,
        vcpus: Option<u32>,
        proceed: &mut dyn FnMut() -> bool,
    ) -> Result<(), EngineError> {
        // Where restore's time goes, step by step (logged at debug level).
        let mut laps = Laps::start();
        // A saved workspace keeps its address: read it (allocated again only when it has none).
        let lease = match self.leases.get(key)? {
            Some(l) => l,
            None => self.allocate(key)?,
        };
        laps.lap("lease");
        let spec = self.spec(key, disks, memory_mib, vcpus, &lease.mac, lease.ip);
        let file = self.saved_file(key).unwrap_or_else(|| self.save_file(key));
        self.vmm.restore_paused(&spec, &file)?;
        laps.lap("restore_paused");
        if !proceed() {
            self.vmm.destroy(&spec.name)?;
            return Err(VmmError::Abandoned(format!("restoring {}", spec.name)).into());
        }
        laps.lap("proceed");
        self.vmm.unpause(&spec.name)?;
        laps.lap("unpause");
        // Unlinking 88 MiB takes tens of ms on a busy disk: the file only changes its name
        // now, [`VmEngine::purge_save_file`] removes it once the new state is durable.
        for p in self.save_files(key) {
            if let Err(e) = std::fs::rename(&p, self.discarded(key)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(key, file = %p.display(), error = %e, "cannot set the save file aside");
                }
            }
        }
        laps.lap("set_aside");
        tracing::debug!(key, total_ms = laps.total_ms(), steps = ?laps.steps, "VM restored");
        Ok(())
    }

    /// A restored workspace's save file, set aside until [`VmEngine::purge_save_file`].
    fn discarded(&self, key: &str) -> PathBuf {
        self.dir(key).join("memory.discarded")
    }

    /// The names a workspace's save file has while in use.
    fn save_files(&self, key: &str) -> [PathBuf; 2] {
        let f = self.save_file(key);
        [f.with_extension("partial"), f]
    }

    /// Removes the save file a restore set aside (safe at any time: nothing else uses it).
    pub fn purge_save_file(&self, key: &str) {
        let p = self.discarded(key);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(key, file = %p.display(), error = %e, "cannot remove the restored save file"),
        }
    }

    /// Destroys the workspace's VM; returns once the driver confirmed it gone (Ok when none).
    pub fn destroy_vm(&self, key: &str) -> Result<(), EngineError> {
        Ok(self.vmm.destroy(&Self::vm_name(key))?)
    }

    /// The VM's run directory (sockets, pid file, generated config).
    pub fn run_dir(&self, key: &str) -> PathBuf {
        self.cfg.run_root.join(Self::vm_name(key))
    }

    /// Removes the VM's run directory (the VM is gone).
    pub fn remove_run_dir(&self, key: &str) {
        match std::fs::remove_dir_all(self.run_dir(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(key, error = %e, "cannot remove the VM's run directory"),
        }
    }

    /// Frees the workspace's address (its VM is confirmed gone); `forget`: the MAC goes too
    /// (the workspace is destroyed).
    pub fn free_address(&self, key: &str, forget: bool) -> Result<(), EngineError> {
        if forget {
            self.leases.forget(key)?;
        } else {
            self.leases.release(key)?;
        }
        Ok(())
    }

    /// The placement facts of a deployed workspace (after a restart).
    pub fn lease(&self, key: &str) -> Result<Option<Lease>, EngineError> {
        Ok(self.leases.get(key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_and_formats() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("a");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(image_format(&q), DiskFormat::Qcow2);
        std::fs::write(&q, b"\0\0\0\0").unwrap();
        assert_eq!(image_format(&q), DiskFormat::Raw);
    }
}
