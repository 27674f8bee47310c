//! Trust that follows the files: the trust directory (CAs, CRLs, signing policies, namespaces),
//! the grid-mapfile and the vomsdir are re-read when they change — inotify (the `notify` crate)
//! wakes the watcher, a periodic check of every file's size, mtime and inode is the fallback —
//! and on demand (SIGHUP). Each successful load is a new numbered [`Generation`]; a load that
//! finds an unreadable or unparsable file keeps the last good generation and logs why.
//!
//! Connections authenticate once, at their handshake, into a [`Session`]; every request asks the
//! session for its caller, which re-validates the connection's chain when the generation changed
//! since the last request (or a CRL of the generation passed its nextUpdate), so a certificate
//! revoked by a newly fetched CRL, or a DN removed from the grid-mapfile, is refused on the next
//! request of a connection that is already open.

use openssl::x509::X509;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::certdir::{CertDir, CrlPolicy};
use super::{Caller, GridMap, GsiError, TrustConfig, VomsConfig};

/// Where the trust comes from.
#[derive(Clone, Debug)]
pub struct TrustFiles {
    pub cert_dir: PathBuf,
    /// Some: callers must be in it.
    pub gridmap: Option<PathBuf>,
    /// VOMS attributes are looked at when this directory exists.
    pub vomsdir: PathBuf,
    pub crl_policy: CrlPolicy,
}

/// One loaded state of the trust files.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the first load, one more for each successful reload.
    pub number: u64,
    pub config: TrustConfig,
    /// With `crl_policy = "refuse"`: the earliest CRL nextUpdate, after which open connections
    /// are validated again (a CRL going stale refuses its CA's certificates).
    pub recheck_at: Option<i64>,
}

/// What a file looked like: (path, size, mtime ns, inode).
type Fingerprint = Vec<(PathBuf, u64, i128, u64)>;

/// The current trust, reloadable.
pub struct LiveTrust {
    files: TrustFiles,
    current: RwLock<Arc<Generation>>,
    number: AtomicU64,
    /// The files as of the last load attempt (good or not), for the periodic check.
    seen: Mutex<Fingerprint>,
    /// Serialises loads.
    loading: Mutex<()>,
}

impl std::fmt::Debug for LiveTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTrust").field("files", &self.files).field("generation", &self.generation()).finish()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl LiveTrust {
    /// The first load: a missing trust directory or grid-mapfile is an error; an unreadable
    /// CRL or policy only makes its CA refuse everything (and is logged), as before reloading
    /// existed.
    pub fn load(files: TrustFiles) -> Result<Arc<LiveTrust>, GsiError> {
        let seen = fingerprint(&files);
        let config = read(&files)?;
        let g = generation(1, config, &files);
        Ok(Arc::new(LiveTrust {
            files,
            current: RwLock::new(Arc::new(g)),
            number: AtomicU64::new(1),
            seen: Mutex::new(seen),
            loading: Mutex::new(()),
        }))
    }

    /// A fixed trust (tests, tools): never reloads from files.
    pub fn fixed(config: TrustConfig) -> Arc<LiveTrust> {
        let files = TrustFiles {
            cert_dir: config.cert_dir.path().to_path_buf(),
            gridmap: None,
            vomsdir: config.voms.as_ref().map(|v| v.vomsdir.clone()).unwrap_or_default(),
            crl_policy: CrlPolicy::default(),
        };
        let g = generation(1, config, &files);
        Arc::new(LiveTrust {
            files,
            current: RwLock::new(Arc::new(g)),
            number: AtomicU64::new(1),
            seen: Mutex::new(Vec::new()),
            loading: Mutex::new(()),
        })
    }

    pub fn files(&self) -> &TrustFiles {
        &self.files
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current generation's number (cheap).
    pub fn generation(&self) -> u64 {
        self.number.load(Ordering::Acquire)
    }

    /// Reads the files again. Ok(number of the new generation); Err: the files could not all be
    /// read or parsed, the last good generation stays (the reason is logged and returned).
    pub fn reload(&self, why: &str) -> Result<u64, String> {
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint(&self.files);
        let t0 = std::time::Instant::now();
        let result = read(&self.files).map_err(|e| e.to_string()).and_then(|c| {
            let p = c.cert_dir.problems();
            if p.is_empty() {
                Ok(c)
            } else {
                Err(p.join("; "))
            }
        });
        match result {
            Ok(config) => {
                let n = self.generation() + 1;
                let g = generation(n, config, &self.files);
                let cas = g.config.cert_dir.cas().len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(g);
                self.number.store(n, Ordering::Release);
                metrics::counter!("vws_trust_reloads_total", "outcome" => "ok").increment(1);
                metrics::gauge!("vws_trust_generation").set(n as f64);
                tracing::info!(generation = n, cas, trigger = why, ms = t0.elapsed().as_millis() as u64, "trust reloaded");
                Ok(n)
            }
            Err(e) => {
                metrics::counter!("vws_trust_reloads_total", "outcome" => "failed").increment(1);
                tracing::warn!(
                    generation = self.generation(),
                    trigger = why,
                    "trust reload failed, keeping the last good trust: {e}"
                );
                Err(e)
            }
        }
    }

    /// The periodic check: reloads when any file changed since the last load attempt.
    /// Some(result) when it reloaded.
    pub fn check(&self, why: &str) -> Option<Result<u64, String>> {
        let now = fingerprint(&self.files);
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return None;
        }
        Some(self.reload(why))
    }

    /// Watches the files from a thread of its own: inotify events (debounced by 200 ms, so a
    /// directory refreshed file by file is read once) and a check every `every` as the fallback.
    /// The watcher stops when the returned handle is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> Watch {
        use notify::Watcher;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let etx = tx.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if !ev.kind.is_access() {
                    let _ = etx.send(());
                }
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                let mut dirs: Vec<(PathBuf, notify::RecursiveMode)> =
                    vec![(self.files.cert_dir.clone(), notify::RecursiveMode::NonRecursive)];
                if let Some(g) = &self.files.gridmap {
                    // The directory, so a grid-mapfile replaced by rename is seen.
                    let parent = g.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    dirs.push((parent.to_path_buf(), notify::RecursiveMode::NonRecursive));
                }
                if self.files.vomsdir.is_dir() {
                    dirs.push((self.files.vomsdir.clone(), notify::RecursiveMode::Recursive));
                }
                for (d, mode) in dirs {
                    if let Err(e) = w.watch(&d, mode) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot watch; relying on the periodic check");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; relying on the periodic check");
                None
            }
        };
        let me = Arc::downgrade(self);
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vws-trust-watch".into())
            .spawn(move || loop {
                let event = match rx.recv_timeout(every) {
                    Ok(()) => true,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                };
                if stop_rx.try_recv().is_ok() {
                    return;
                }
                if event {
                    std::thread::sleep(Duration::from_millis(200));
                    while rx.try_recv().is_ok() {}
                }
                let Some(t) = me.upgrade() else { return };
                t.check(if event { "inotify" } else { "periodic check" });
            })
            .ok();
        Watch { _watcher: watcher, stop: Some((stop_tx, tx)), thread }
    }
}

/// A running watcher; dropping it stops it.
pub struct Watch {
    _watcher: Option<notify::RecommendedWatcher>,
    stop: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Sender<()>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some((stop, wake)) = self.stop.take() {
            let _ = stop.send(());
            let _ = wake.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read(files: &TrustFiles) -> Result<TrustConfig, GsiError> {
    let mut cert_dir = CertDir::load(&files.cert_dir)?;
    cert_dir.set_crl_policy(files.crl_policy);
    let now = now_secs();
    for (ca, path, next) in cert_dir.stale_crls(now) {
        let verb = if files.crl_policy == CrlPolicy::Refuse { "refusing its CA's certificates" } else { "warning only" };
        tracing::warn!(%ca, file = %path.display(), next_update = next, "CRL past its nextUpdate: {verb} (security.crl_policy)");
    }
    let gridmap = match &files.gridmap {
        Some(p) => Some(GridMap::load(p)?),
        None => None,
    };
    let voms = files.vomsdir.is_dir().then(|| VomsConfig::new(files.vomsdir.clone()));
    Ok(TrustConfig { cert_dir, voms, gridmap })
}

fn generation(number: u64, config: TrustConfig, files: &TrustFiles) -> Generation {
    let recheck_at = match files.crl_policy {
        CrlPolicy::Refuse => config.cert_dir.next_crl_update(),
        CrlPolicy::Warn => None,
    };
    Generation { number, config, recheck_at }
}

fn fingerprint(files: &TrustFiles) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
            out.push((p, m.len(), mtime, m.ino()));
        }
    };
    let list = |d: &Path, depth: usize, add: &mut dyn FnMut(PathBuf)| {
        fn walk(d: &Path, depth: usize, add: &mut dyn FnMut(PathBuf)) {
            let Ok(rd) = std::fs::read_dir(d) else { return };
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            v.sort();
            for p in v {
                if depth > 0 && p.is_dir() {
                    walk(&p, depth - 1, add);
                }
                add(p);
            }
        }
        walk(d, depth, add)
    };
    list(&files.cert_dir, 0, &mut add);
    list(&files.vomsdir, 2, &mut add);
    if let Some(g) = &files.gridmap {
        add(g.clone());
    }
    out
}

/// (generation, checked at (Unix s), caller or why refused)
type Checked = (u64, i64, Arc<Result<Caller, String>>);

/// One connection's authentication: the chain it presented at its handshake, and its caller as
/// of the last trust generation it was checked against.
pub struct Session {
    chain: Vec<X509>,
    trust: Arc<LiveTrust>,
    state: Mutex<Checked>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Session").field("generation", &s.0).field("caller", &s.2).finish()
    }
}

impl Session {
    /// Authenticates `chain` (leaf first; empty: no certificate) against the current trust.
    pub fn start(trust: &Arc<LiveTrust>, chain: Vec<X509>) -> Arc<Session> {
        let g = trust.current();
        let caller = authenticate_chain(&chain, &g.config);
        Arc::new(Session { chain, trust: trust.clone(), state: Mutex::new((g.number, now_secs(), Arc::new(caller))) })
    }

    /// The caller for the next request: the cached one while the trust generation is the one it
    /// was checked against (and no CRL went stale since), else the chain validated again.
    pub fn caller(&self) -> Arc<Result<Caller, String>> {
        let now_gen = self.trust.generation();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 == now_gen {
            let g_recheck = if s.2.is_ok() { self.trust.current().recheck_at } else { None };
            match g_recheck {
                Some(t) if s.1 <= t && now_secs() > t => {}
                _ => return s.2.clone(),
            }
        }
        let g = self.trust.current();
        let fresh = authenticate_chain(&self.chain, &g.config);
        match (&*s.2, &fresh) {
            (Ok(c), Err(why)) => {
                tracing::warn!(
                    dn = c.name(),
                    generation = g.number,
                    "open connection's credentials refused after a trust change: {why}"
                )
            }
            (Err(_), Ok(c)) => tracing::info!(
                dn = c.name(),
                generation = g.number,
                "open connection's credentials accepted after a trust change"
            ),
            _ => {}
        }
        *s = (g.number, now_secs(), Arc::new(fresh));
        s.2.clone()
    }
}

/// Validates `chain`; a refusal is counted by its reason (`vws_gsi_refusals_total`).
fn authenticate_chain(chain: &[X509], cfg: &TrustConfig) -> Result<Caller, String> {
    let _clear = super::x509::ClearErrorsOnDrop;
    let r = if chain.is_empty() { Err(GsiError::NoPeerCertificate) } else { super::authenticate(chain, cfg) };
    r.map_err(|e| {
        metrics::counter!("vws_gsi_refusals_total", "reason" => e.kind()).increment(1);
        e.to_string()
    })
}
