//! The hypervisor driver trait: what the Manager asks of a VMM (define a VM paused, unpause,
//! pause, shut down gracefully, destroy, reboot, save to a file, restore from one, list what
//! really runs). One implementation per hypervisor: QEMU over QMP (`qemu.rs`, the default, the
//! one that really runs here) and Xen's `xl` (`xl.rs`).
//!
//! Calls are blocking (they spawn processes and talk to sockets); the engine runs them on
//! tokio's blocking pool. A driver never panics on what a hypervisor says: every failure is a
//! [`VmmError`] whose text a person can act on (the tool's stderr is kept verbatim).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One disk of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// Absolute path of the image (a qcow2 overlay for writable disks).
    pub path: PathBuf,
    pub format: DiskFormat,
    /// Guest device name, e.g. `xvda` / `vda` / `hdc`.
    pub target: String,
    pub read_only: bool,
    pub cdrom: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// One network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicSpec {
    /// `52:54:00:xx:xx:xx` style, stable for the workspace's life.
    pub mac: String,
    /// Bridge for a tap device; None = user-mode networking (QEMU) / default vif script (xl).
    pub bridge: Option<String>,
    /// The address allocated to the workspace (informational for the driver; the guest reads it
    /// from its config disk).
    pub ip: Option<String>,
}

/// Everything a driver needs to define one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// Domain / process name, unique on this host (e.g. `vws-<workspace key>`).
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Direct kernel boot (PV on Xen); None = boot from the first disk.
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    /// Where the serial console is written.
    pub console_log: PathBuf,
    /// A directory private to this VM (sockets, pid file, generated config).
    pub run_dir: PathBuf,
}

/// What a driver sees of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
    /// Defined but shut down / powered off (the process or domain still exists).
    Shutdown,
    Crashed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    pub state: VmState,
    /// Process id (QEMU) or domain id (Xen).
    pub id: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("no VM named {0} on this host")]
    NotFound(String),
    /// The tool ran and refused; `stderr` is what it said.
    #[error("{tool} failed (exit {code:?}): {stderr}")]
    Tool { tool: String, code: Option<i32>, stderr: String },
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("no space left while {0}")]
    NoSpace(String),
    #[error("{0}")]
    Io(String),
    /// The caller called the operation off before anything irreversible (see [`Vmm::save_when`]).
    #[error("{0}: called off")]
    Abandoned(String),
}

/// A hypervisor driver. Every method is blocking and idempotent where the hypervisor allows
/// (destroying a VM that is already gone is `Ok`).
pub trait Vmm: Send + Sync + 'static {
    /// `qemu` or `xen`.
    fn kind(&self) -> &'static str;
    /// Build the VM and leave it paused before its first instruction (`xl create -p`, `qemu -S`).
    fn create_paused(&self, spec: &VmSpec) -> Result<VmInfo, VmmError>;
    fn unpause(&self, name: &str) -> Result<(), VmmError>;
    fn pause(&self, name: &str) -> Result<(), VmmError>;
    /// Graceful shutdown (ACPI power button / `xl shutdown -w`); after `timeout` the VM is
    /// destroyed and `Err(Timeout)` tells the caller it had to be forced.
    fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), VmmError>;
    fn reboot(&self, name: &str) -> Result<(), VmmError>;
    /// Destroy at once. Ok when the VM is already gone; returns only once it is confirmed gone.
    fn destroy(&self, name: &str) -> Result<(), VmmError>;
    /// Save memory state to `path`; the VM is gone afterwards.
    fn save(&self, name: &str, path: &std::path::Path) -> Result<(), VmmError>;
    /// [`Vmm::save`], asking `proceed` (it may block) before anything irreversible: false leaves
    /// the VM as it was and fails with [`VmmError::Abandoned`]. The default asks first; a driver
    /// may ask later (QEMU: once the state is in the file, before the file gets its name and
    /// the VM goes), so the caller's own work (making the Saving state durable) overlaps the save.
    fn save_when(&self, name: &str, path: &std::path::Path, proceed: &mut dyn FnMut() -> bool) -> Result<(), VmmError> {
        if !proceed() {
            return Err(VmmError::Abandoned(format!("saving {name}")));
        }
        self.save(name, path)
    }
    /// Restore from `path` (made by `save`), left paused.
    fn restore_paused(&self, spec: &VmSpec, path: &std::path::Path) -> Result<VmInfo, VmmError>;
    /// What really runs on this host that this driver manages (for reconciliation).
    fn list(&self) -> Result<Vec<VmInfo>, VmmError>;
    /// One VM's state; None when it does not exist.
    fn state(&self, name: &str) -> Result<Option<VmState>, VmmError> {
        Ok(self.list()?.into_iter().find(|v| v.name == name).map(|v| v.state))
    }
}

/// Where an operation's time goes, step by step (for its debug log line): each [`Laps::lap`]
/// records the milliseconds since the previous one.
pub struct Laps {
    t0: Instant,
    last: Instant,
    pub steps: Vec<(&'static str, f64)>,
}

impl Laps {
    pub fn start() -> Laps {
        let now = Instant::now();
        Laps { t0: now, last: now, steps: Vec::new() }
    }

    /// Ends step `name`.
    pub fn lap(&mut self, name: &'static str) {
        self.steps.push((name, self.last.elapsed().as_secs_f64() * 1e3));
        self.last = Instant::now();
    }

    /// Milliseconds since the start.
    pub fn total_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1e3
    }
}
