//! Staging: copy SRC to DST so that DST appears only complete and verified. Downloads land in a
//! temporary file beside DST, checksummed while the data arrives (the hash pass follows the
//! contiguous prefix already on disk), compared with the server's CKSM and with an expected
//! digest, and renamed into place only when everything matches; otherwise the temporary file is
//! removed and a typed error returned. Uploads go to a temporary remote name, are verified with
//! CKSM and renamed. [`Stager`] makes concurrent stagings of the same source share one transfer.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::checksum::{self, Algo, MultiHasher};
use super::{open, CancelFn, Digest, Options, Progress, ProgressFn, ProgressInfo, Result, TransferError, Url};

/// What a staging did.
#[derive(Clone, Debug)]
pub struct StageOutcome {
    pub bytes: u64,
    pub elapsed: Duration,
    /// Our SHA-256 of the data (hex); empty when verification was turned off.
    pub sha256: String,
    /// The server-side checksum that was compared, if any.
    pub remote_checksum: Option<(Algo, String)>,
    /// Whether this staging shared another one's transfer.
    pub shared: bool,
    /// Where each resume after a break restarted (bytes kept from before it; 0 = started over),
    /// as the remote endpoint reports them (GridFTP `ERET`/`ESTO`); empty when it ran through.
    pub resumed_from: Vec<u64>,
}

/// Removes the file on drop unless disarmed.
struct TempGuard(Option<PathBuf>);
impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn temp_name(dst: &Path) -> PathBuf {
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let r: u32 = rand::random();
    dst.with_file_name(format!(".{name}.vws-part-{}-{r:08x}", std::process::id()))
}

fn hex_ok(algo: Algo, expected: &str, actual: &str, url: &str) -> Result<()> {
    if checksum::same(algo, expected, actual) {
        Ok(())
    } else {
        Err(TransferError::ChecksumMismatch {
            url: url.to_string(),
            algo: algo.name().into(),
            expected: expected.into(),
            actual: actual.into(),
        })
    }
}

/// Hashes `file` as its contiguous prefix grows, until `size` bytes (runs beside the transfer).
fn follow_hash(file: &File, size: u64, progress: &Progress, algos: &[Algo]) -> std::io::Result<Vec<(Algo, String)>> {
    let mut h = MultiHasher::new(algos);
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    while off < size {
        let avail = progress.prefix();
        if avail <= off {
            if progress.is_aborted() {
                return Err(std::io::Error::other("transfer aborted"));
            }
            progress.wait_prefix_beyond(off, Duration::from_millis(200));
            continue;
        }
        let want = ((avail.min(size) - off) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(std::io::Error::other("file shorter than its written prefix"));
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finish())
}

/// Copies `src` to `dst` with verification (see the module documentation).
pub fn stage(src: &str, dst: &str, opts: &Options) -> Result<StageOutcome> {
    let su = Url::parse(src)?;
    let du = Url::parse(dst)?;
    let start = Instant::now();
    if du.is_local() {
        download(&su, &du, opts, start)
    } else if su.is_local() {
        upload(&su, &du, opts, start)
    } else {
        // Remote to remote: through a local temporary file.
        let tmp = std::env::temp_dir().join(format!("vws-relay-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        let _g = TempGuard(Some(tmp.clone()));
        let first = download(&su, &Url::file(&tmp.to_string_lossy()), opts, start)?;
        let mut o2 = opts.clone();
        o2.expected = Some(super::Digest { algo: Algo::Sha256, hex: first.sha256.clone() });
        upload(&Url::file(&tmp.to_string_lossy()), &du, &o2, start)
    }
}

fn download(su: &Url, du: &Url, opts: &Options, start: Instant) -> Result<StageOutcome> {
    let src = open(su, opts)?;
    let dst = PathBuf::from(&du.path);
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(TransferError::Io { what: dir.display().to_string(), reason: "target directory does not exist".into() });
    }
    let size = src.size()?;
    let tmp = temp_name(&dst);
    let guard = TempGuard(Some(tmp.clone()));
    let file =
        File::options().read(true).write(true).create_new(true).open(&tmp).map_err(|e| TransferError::io(tmp.display(), e))?;
    if let Some(s) = size {
        file.set_len(s).map_err(|e| TransferError::io(tmp.display(), e))?;
    }
    let progress =
        Progress::new(&su.to_string(), size, opts.progress.clone(), opts.progress_interval).cancel_on(opts.cancel.clone());
    let remote_algo = if opts.verify { src.remote_algorithms().into_iter().next() } else { None };
    // With verification off and nothing expected, no digest at all (the fast path).
    let mut algos = if opts.verify { vec![Algo::Sha256] } else { Vec::new() };
    algos.extend(remote_algo);
    if let Some(e) = &opts.expected {
        algos.push(e.algo);
    }
    let hashing = !algos.is_empty();
    let (moved, digests) = std::thread::scope(|sc| {
        let hasher = size.filter(|_| hashing).map(|s| {
            let (file, progress, algos) = (&file, &progress, &algos);
            sc.spawn(move || follow_hash(file, s, progress, algos))
        });
        let moved = src.download(&file, &progress);
        if moved.is_err() {
            progress.abort();
        }
        let digests = hasher.map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("hash thread panicked"))));
        (moved, digests)
    });
    let moved = moved?;
    progress.finish();
    let digests = match digests {
        Some(d) => d.map_err(|e| TransferError::io(tmp.display(), e))?,
        None if size.is_none() => {
            file.set_len(moved).map_err(|e| TransferError::io(tmp.display(), e))?;
            checksum::file_digests(&tmp, &algos).map_err(|e| TransferError::io(tmp.display(), e))?
        }
        None => Vec::new(),
    };
    let get = |a: Algo| digests.iter().find(|(x, _)| *x == a).map(|(_, h)| h.clone()).unwrap_or_default();
    let url = su.to_string();
    let mut remote = None;
    if let Some(a) = remote_algo {
        if let Some(r) = src.remote_checksum(a)? {
            hex_ok(a, &r, &get(a), &url)?;
            remote = Some((a, r));
        }
    }
    if let Some(e) = &opts.expected {
        hex_ok(e.algo, &e.hex, &get(e.algo), &url)?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| TransferError::io(dst.display(), e))?;
    std::mem::forget(guard);
    let sha256 = get(Algo::Sha256);
    tracing::info!(src = %url, dst = %dst.display(), bytes = moved, secs = start.elapsed().as_secs_f64(), %sha256, "staged");
    Ok(StageOutcome {
        bytes: moved,
        elapsed: start.elapsed(),
        sha256,
        remote_checksum: remote,
        shared: false,
        resumed_from: src.resumed_from(),
    })
}

fn upload(su: &Url, du: &Url, opts: &Options, start: Instant) -> Result<StageOutcome> {
    let f = File::open(&su.path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TransferError::NotFound { url: su.to_string(), reason: e.to_string() }
        } else {
            TransferError::io(&su.path, e)
        }
    })?;
    let len = f.metadata().map_err(|e| TransferError::io(&su.path, e))?.len();
    let final_ep = open(du, opts)?;
    let remote_algo = if opts.verify { final_ep.remote_algorithms().into_iter().next() } else { None };
    // Our digests in parallel with the upload (the file is complete already).
    let mut algos = vec![Algo::Sha256];
    algos.extend(remote_algo);
    if let Some(e) = &opts.expected {
        algos.push(e.algo);
    }
    let tmp_url = du.with_path(&temp_name(Path::new(&du.path)).to_string_lossy());
    let tmp_ep = open(&tmp_url, opts)?;
    let progress =
        Progress::new(&du.to_string(), Some(len), opts.progress.clone(), opts.progress_interval).cancel_on(opts.cancel.clone());
    let (moved, digests) = std::thread::scope(|sc| {
        let h = sc.spawn(|| checksum::file_digests(Path::new(&su.path), &algos));
        let moved = tmp_ep.upload(&f, len, &progress);
        (moved, h.join().unwrap_or_else(|_| Err(std::io::Error::other("hash thread panicked"))))
    });
    let cleanup = |e: TransferError| {
        let _ = tmp_ep.delete();
        e
    };
    let moved = moved.map_err(cleanup)?;
    progress.finish();
    let digests = digests.map_err(|e| cleanup(TransferError::io(&su.path, e)))?;
    let get = |a: Algo| digests.iter().find(|(x, _)| *x == a).map(|(_, h)| h.clone()).unwrap_or_default();
    if let Some(e) = &opts.expected {
        hex_ok(e.algo, &e.hex, &get(e.algo), &su.to_string()).map_err(cleanup)?;
    }
    let mut remote = None;
    if let Some(a) = remote_algo {
        if let Some(r) = tmp_ep.remote_checksum(a).map_err(cleanup)? {
            hex_ok(a, &get(a), &r, &du.to_string()).map_err(cleanup)?;
            remote = Some((a, r));
        }
    }
    tmp_ep.rename(du).map_err(cleanup)?;
    let resumed_from = tmp_ep.resumed_from();
    Ok(StageOutcome {
        bytes: moved,
        elapsed: start.elapsed(),
        sha256: get(Algo::Sha256),
        remote_checksum: remote,
        shared: false,
        resumed_from,
    })
}

/// One in-flight transfer: its result once known, and everyone watching its progress.
#[derive(Default)]
struct SlotInner {
    result: Mutex<Option<std::result::Result<(String, StageOutcome), TransferError>>>,
    done: Condvar,
    watchers: Mutex<Vec<ProgressFn>>,
    /// Every party's cancel question (None: never cancels); the transfer stops only when all
    /// of them cancelled.
    cancels: Mutex<Vec<Option<CancelFn>>>,
}
type Slot = Arc<SlotInner>;

/// Concurrent stagings of the same source share one transfer: the first caller transfers, the
/// others wait for it and get the result (copied to their own destination when it differs —
/// never hard-linked, as two workspaces writing one inode would see each other's writes; the
/// kernel's copy_file_range shares extents on file systems that can). Every caller may watch
/// the shared transfer's progress.
pub struct Stager {
    opts: Options,
    inflight: Mutex<HashMap<String, Slot>>,
    transfers: AtomicUsize,
}

impl Stager {
    pub fn new(opts: Options) -> Stager {
        Stager { opts, inflight: Mutex::new(HashMap::new()), transfers: AtomicUsize::new(0) }
    }

    /// How many transfers were actually started.
    pub fn transfers(&self) -> usize {
        self.transfers.load(Ordering::Relaxed)
    }

    pub fn stage(&self, src: &str, dst: &str) -> Result<StageOutcome> {
        self.stage_watched(src, dst, None, None, None)
    }

    /// Stages `src` to `dst`, checking `expected` (if any), reporting the (possibly shared)
    /// transfer's progress to `watch` as well as to the stager's own callback. A shared
    /// transfer stops when every party's `cancel` says so (a party without one never does).
    pub fn stage_watched(
        &self,
        src: &str,
        dst: &str,
        expected: Option<Digest>,
        watch: Option<ProgressFn>,
        cancel: Option<CancelFn>,
    ) -> Result<StageOutcome> {
        // Stagings expecting different digests do not share: each must check its own.
        let key = format!("{} {}", Url::parse(src)?, expected.as_ref().map(|d| d.to_string()).unwrap_or_default());
        let (slot, leader) = {
            let mut m = self.inflight.lock().unwrap();
            match m.get(&key) {
                Some(s) => (s.clone(), false),
                None => {
                    let s: Slot = Arc::default();
                    m.insert(key.clone(), s.clone());
                    (s, true)
                }
            }
        };
        if let Some(w) = watch {
            slot.watchers.lock().unwrap().push(w);
        }
        slot.cancels.lock().unwrap().push(cancel);
        if leader {
            self.transfers.fetch_add(1, Ordering::Relaxed);
            let mut opts = self.opts.clone();
            opts.expected = expected.or(opts.expected);
            let own_cancel = self.opts.cancel.clone();
            let parties = slot.clone();
            opts.cancel = Some(Arc::new(move || {
                own_cancel.as_ref().is_some_and(|c| c())
                    || parties.cancels.lock().unwrap().iter().all(|c| c.as_ref().is_some_and(|c| c()))
            }));
            let own = self.opts.progress.clone();
            let watchers = slot.clone();
            opts.progress = Some(Arc::new(move |p: &ProgressInfo| {
                if let Some(f) = &own {
                    f(p);
                }
                for w in watchers.watchers.lock().unwrap().iter() {
                    w(p);
                }
            }));
            let r = stage(src, dst, &opts).map(|o| (dst.to_string(), o));
            let out = r.clone();
            self.inflight.lock().unwrap().remove(&key);
            *slot.result.lock().unwrap() = Some(r);
            slot.done.notify_all();
            return out.map(|(_, o)| o);
        }
        let g = slot.done.wait_while(slot.result.lock().unwrap(), |r| r.is_none()).unwrap();
        let (leader_dst, outcome) = g.as_ref().unwrap().clone()?;
        drop(g);
        let mut o = outcome;
        o.shared = true;
        let (a, b) = (Url::parse(&leader_dst)?, Url::parse(dst)?);
        if a != b {
            if !b.is_local() || !a.is_local() {
                return stage(&leader_dst, dst, &self.opts);
            }
            let tmp = temp_name(Path::new(&b.path));
            let guard = TempGuard(Some(tmp.clone()));
            std::fs::copy(&a.path, &tmp).map_err(|e| TransferError::io(&b.path, e))?;
            std::fs::rename(&tmp, &b.path).map_err(|e| TransferError::io(&b.path, e))?;
            std::mem::forget(guard);
        }
        Ok(o)
    }
}
