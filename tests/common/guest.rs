//! The demo guest for tests that boot real VMs: built by `guest/build.sh` (kernel + busybox
//! initramfs from Debian packages) into `$VWS_GUEST_DIR`, else `var/images/demo` of the clone
//! (where `make guest` puts it), building it on first use.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const READY: &str = "VWS-GUEST-READY";

/// The guest directory (vmlinuz, initrd.img, root.qcow2), built if missing.
pub fn dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::var_os("VWS_GUEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("var/images/demo"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build.sh");
        let st = std::process::Command::new(&script).arg(&d).status().expect("run guest/build.sh");
        assert!(st.success(), "guest/build.sh {} failed", d.display());
        d.canonicalize().unwrap()
    })
    .clone()
}

/// Waits until `file` contains `needle` `count` times; returns its text.
pub fn wait_for(file: &Path, needle: &str, count: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return text;
        }
        assert!(Instant::now() < deadline, "no {count}× {needle:?} in {} after {timeout:?}:\n{text}", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Generous: a TCG boot takes ~3 s alone, much longer on a loaded 2-core CI machine.
pub const BOOT: Duration = Duration::from_secs(180);
