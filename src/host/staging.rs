//! The staging job: bring a workspace's images (image disks and CD-ROMs) into this host's pool,
//! one after the other, each through [`crate::transfer::Stager`] (temp file, checksums, rename;
//! concurrent stagings of one source share one transfer). While it runs, its [`Report`] (bytes,
//! total, rate, ETA per image) is handed to the [`Ledger`](super::Ledger) at most once per progress interval,
//! with at most one write in flight (the latest report wins); at the end the ledger moves the
//! workspace to Staged, or back to Unstaged with the error kept in the report.

use super::pool::Pool;
use super::{now_ms, Host, PlanError, Teardown};
use crate::transfer::{self, Digest, Options, ProgressInfo, TransferError};
use crate::workspace::{Description, Event, State};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How this host stages images (built by the configuration's `[staging]` section).
#[derive(Clone, Debug, PartialEq)]
pub struct StagingSettings {
    /// The image pool's directory (absolute, or relative to the working directory).
    pub pool: PathBuf,
    /// Local directories `file://` images may come from; empty: none.
    pub file_roots: Vec<PathBuf>,
    /// GridFTP parallel streams.
    pub streams: usize,
    /// GridFTP data-channel authentication.
    pub dcau: bool,
    /// Compare with the server's checksum after each transfer.
    pub verify: bool,
    /// Credential for gsiftp:// and https:// sources; None: the usual proxy locations.
    pub credential: Option<PathBuf>,
    /// Trusted CAs for those servers; None: the usual trust directory.
    pub cert_dir: Option<PathBuf>,
    /// Stagings running at once; more wait their turn.
    pub max_concurrent: usize,
    /// Resumes of a broken transfer before the staging fails.
    pub retries: u32,
    /// How often a staging's progress is reported.
    pub progress_interval: Duration,
}

impl StagingSettings {
    /// The transfer options these settings stand for.
    pub(super) fn options(&self) -> Options {
        Options {
            streams: self.streams.max(1),
            dcau: self.dcau,
            verify: self.verify,
            credential: self.credential.clone(),
            cert_dir: self.cert_dir.clone(),
            retries: self.retries,
            progress_interval: self.progress_interval.max(Duration::from_millis(50)),
            ..Options::default()
        }
    }
}

/// One image to stage: where from, what it must hash to, where it lands.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The disk's or CD-ROM's name in the description.
    pub name: String,
    pub url: String,
    pub digest: Option<Digest>,
    /// Its file in the pool.
    pub file: PathBuf,
}

/// What a deploy will stage, checked against the site's policy; made by [`Host::plan`] and run
/// by [`Host::start_staging`].
#[derive(Clone, Debug)]
pub struct Plan {
    pub key: String,
    pub items: Vec<Item>,
    /// When the staging counts as started (the report's `started`), ms since the epoch.
    pub started_ms: i64,
}

impl Plan {
    /// The report before any byte moved (status queued, every image pending).
    pub fn report(&self) -> Report {
        Report::new(&self.items, self.started_ms)
    }
}

/// Where a staging is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagingStatus {
    /// Waiting for a free staging slot.
    Queued,
    Staging,
    Staged,
    Failed,
}

impl StagingStatus {
    /// The word the `staging` property shows.
    pub fn as_str(self) -> &'static str {
        match self {
            StagingStatus::Queued => "queued",
            StagingStatus::Staging => "staging",
            StagingStatus::Staged => "staged",
            StagingStatus::Failed => "failed",
        }
    }
}

/// Where one image of a staging is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageStatus {
    Pending,
    Staging,
    Done,
    Failed,
}

impl ImageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Pending => "pending",
            ImageStatus::Staging => "staging",
            ImageStatus::Done => "done",
            ImageStatus::Failed => "failed",
        }
    }
}

/// A staging's progress and outcome (the content of a workspace's `staging` property).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub status: StagingStatus,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub images: Vec<ImageReport>,
    /// Why it failed: (kind, message); kind is a transfer error kind or a policy rule's name.
    pub error: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageReport {
    pub name: String,
    pub url: String,
    pub status: ImageStatus,
    pub bytes: u64,
    pub total: Option<u64>,
    /// Bytes per second (meaningful while staging).
    pub rate: f64,
    pub eta: Option<Duration>,
    /// SHA-256 of the staged image, once done.
    pub sha256: Option<String>,
}

impl Report {
    pub fn new(items: &[Item], started_ms: i64) -> Report {
        Report {
            status: StagingStatus::Queued,
            started_ms,
            finished_ms: None,
            images: items
                .iter()
                .map(|i| ImageReport {
                    name: i.name.clone(),
                    url: i.url.clone(),
                    status: ImageStatus::Pending,
                    bytes: 0,
                    total: None,
                    rate: 0.0,
                    eta: None,
                    sha256: None,
                })
                .collect(),
            error: None,
        }
    }

    /// Bytes moved, over every image.
    pub fn bytes(&self) -> u64 {
        self.images.iter().map(|i| i.bytes).sum()
    }

    /// Total size, once every image's size is known.
    pub fn total(&self) -> Option<u64> {
        self.images.iter().map(|i| i.total).sum()
    }

    /// Ends the report as failed, with `kind` and `message`.
    pub fn fail(&mut self, kind: &str, message: String) {
        self.status = StagingStatus::Failed;
        self.finished_ms = Some(now_ms());
        self.error = Some((kind.to_string(), message));
    }
}

/// The images of a description, in pool order (disks, then CD-ROMs), unchecked.
pub(super) fn items(pool: &Pool, key: &str, d: &Description) -> Result<Vec<Item>, PlanError> {
    let dir = pool.dir(key);
    let mut items = Vec::new();
    if let Some(hw) = &d.hardware {
        for (i, disk) in hw.disks.iter().enumerate() {
            if let Some(url) = &disk.image {
                let digest = match &disk.digest {
                    Some(t) => Some(Digest::parse(t).map_err(|e| PlanError::Invalid { code: None, reason: e })?),
                    None => None,
                };
                items.push(Item {
                    name: disk.name.clone(),
                    url: url.clone(),
                    digest,
                    file: dir.join(Pool::file_name("disk", i, &disk.name)),
                });
            }
        }
        for (i, cd) in hw.cdroms.iter().enumerate() {
            items.push(Item {
                name: cd.name.clone(),
                url: cd.image.clone(),
                digest: None,
                file: dir.join(Pool::file_name("cdrom", i, &cd.name)),
            });
        }
    }
    Ok(items)
}

/// The background part of a deploy: stage every item, report progress, then the outcome.
pub(super) async fn run(host: Arc<Host>, plan: Plan, cancelled: Arc<AtomicBool>) {
    let Plan { key, items, .. } = &plan;
    let key = key.clone();
    let _permit = host.permits.acquire().await;
    let shared = Arc::new(Mutex::new(plan.report()));
    let (tx, mut rx) = tokio::sync::watch::channel(());
    // Hands progress to the ledger; at most one write in flight, the latest report wins.
    let publisher = {
        let ledger = host.ledger.clone();
        let (key, shared) = (key.clone(), shared.clone());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let snapshot = shared.lock().unwrap().clone();
                if ledger.progress(&key, &snapshot).await.is_err() {
                    return; // destroyed meanwhile
                }
            }
        })
    };
    shared.lock().unwrap().status = StagingStatus::Staging;
    tx.send_replace(());
    let dir = host.pool.dir(&key);
    let mut failure: Option<TransferError> = None;
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        failure = Some(TransferError::io(dir.display(), e));
    }
    for (n, item) in items.iter().enumerate() {
        if failure.is_some() {
            break;
        }
        shared.lock().unwrap().images[n].status = ImageStatus::Staging;
        tx.send_replace(());
        let watch: transfer::ProgressFn = {
            let (shared, tx) = (shared.clone(), tx.clone());
            Arc::new(move |p: &ProgressInfo| {
                {
                    let mut r = shared.lock().unwrap();
                    let im = &mut r.images[n];
                    im.bytes = p.bytes;
                    im.total = p.total;
                    im.rate = p.rate;
                    im.eta = p.eta;
                }
                tx.send_replace(());
            })
        };
        let h = host.clone();
        let it = item.clone();
        let dst = format!("file://{}", it.file.display());
        let cancel: transfer::CancelFn = {
            let c = cancelled.clone();
            Arc::new(move || c.load(Ordering::Relaxed))
        };
        // Issue 12: an image the site's store holds is hard-linked from it (hashed again first: a
        // changed store file is refused); one transferred is kept in the store for next time.
        let stored = it.digest.as_ref().filter(|d| d.algo == transfer::checksum::Algo::Sha256).map(|d| d.hex.clone());
        // A Manager host with a remote site: an image its store lacks comes from the site's
        // store by digest (verified while written); one the site lacks is staged from its URL.
        let fetched = match (h.images(), h.image_source(), stored.as_deref()) {
            (Some(store), Some(source), Some(sha)) if !store.has(sha) => match source.fetch(sha).await {
                Ok(f) => f.map(Ok),
                Err(e) => Some(Err(e)),
            },
            _ => None,
        };
        let origin = h.image_source().map(|s| s.origin()).unwrap_or_default();
        let done = tokio::task::spawn_blocking(move || {
            if let (Some(f), Some(store), Some(sha)) = (fetched, h.images(), stored.as_deref()) {
                let what = format!("{origin}{sha}");
                let (total, chunks) = f.map_err(|reason| TransferError::Connect { url: what.clone(), reason })?;
                let t = std::time::Instant::now();
                let report = |n: u64| {
                    let secs = t.elapsed().as_secs_f64().max(1e-3);
                    watch(&ProgressInfo {
                        url: what.clone(),
                        bytes: n,
                        total,
                        elapsed: t.elapsed(),
                        rate: n as f64 / secs,
                        eta: None,
                        done: false,
                    })
                };
                let c = cancel.clone();
                store.receive(sha, &what, chunks, &move || c(), &report).map_err(|e| match e {
                    super::images::ImageError::DigestMismatch { what, expected, found } => {
                        TransferError::ChecksumMismatch { url: what, algo: "SHA256".into(), expected, actual: found }
                    }
                    e => TransferError::Io { what: what.clone(), reason: e.to_string() },
                })?;
                tracing::info!(
                    sha,
                    origin = what,
                    bytes = total,
                    secs = t.elapsed().as_secs_f64(),
                    "image fetched from the site Repository"
                );
            }
            let store = h.images().filter(|s| stored.as_deref().is_some_and(|d| s.has(d)));
            if let (Some(store), Some(sha)) = (store, stored.as_deref()) {
                let t = std::time::Instant::now();
                return store
                    .link_into(sha, &it.file)
                    .map(|bytes| transfer::stage::StageOutcome {
                        bytes,
                        sha256: sha.to_string(),
                        elapsed: t.elapsed(),
                        shared: true,
                        remote_checksum: None,
                        resumed_from: Vec::new(),
                    })
                    .map_err(|e| match e {
                        super::images::ImageError::DigestMismatch { what, expected, found } => {
                            TransferError::ChecksumMismatch { url: what, algo: "SHA256".into(), expected, actual: found }
                        }
                        e => TransferError::Io { what: format!("image store {sha}"), reason: e.to_string() },
                    });
            }
            let o = h.stager.stage_watched(&it.url, &dst, it.digest, Some(watch), Some(cancel))?;
            if let (Some(store), Some(sha)) = (h.images(), stored.as_deref()) {
                store.adopt_file(&it.file, sha, "site", &it.url);
            }
            Ok(o)
        })
        .await
        .unwrap_or_else(|e| Err(TransferError::Io { what: "staging task".into(), reason: e.to_string() }));
        let mut r = shared.lock().unwrap();
        match done {
            Ok(o) => {
                let im = &mut r.images[n];
                im.status = ImageStatus::Done;
                im.bytes = o.bytes;
                im.total = Some(o.bytes);
                im.sha256 = Some(o.sha256).filter(|h| !h.is_empty());
                tracing::info!(key, image = %item.name, bytes = o.bytes, secs = o.elapsed.as_secs_f64(), shared = o.shared, "image staged");
                metrics::counter!("vws_staging_bytes_total").increment(o.bytes);
                let secs = o.elapsed.as_secs_f64();
                if secs > 0.0 {
                    metrics::histogram!("vws_staging_rate_bytes_per_second").record(o.bytes as f64 / secs);
                }
            }
            Err(e) => {
                r.images[n].status = ImageStatus::Failed;
                tracing::warn!(key, image = %item.name, url = %item.url, kind = e.kind(), "staging failed: {e}");
                failure = Some(e);
            }
        }
        drop(r);
        tx.send_replace(());
    }
    drop(tx);
    host.jobs.lock().unwrap().remove(&key);
    let _ = publisher.await;
    let final_report = {
        let mut r = shared.lock().unwrap();
        match &failure {
            Some(e) => r.fail(e.kind(), e.to_string()),
            None => {
                r.status = StagingStatus::Staged;
                r.finished_ms = Some(now_ms());
            }
        }
        r.clone()
    };
    let event = if failure.is_some() { Event::StagingFailed } else { Event::StagingDone };
    let outcome = match &failure {
        None => "staged",
        Some(_) if cancelled.load(Ordering::Relaxed) => "cancelled",
        Some(_) => "failed",
    };
    metrics::counter!("vws_stagings_total", "outcome" => outcome).increment(1);
    // The end of a staging (the ledger defines the VM) is serialised with the workspace's other
    // changes; a staging that ended in Unstaged, or for a workspace that is gone, leaves nothing.
    let lock = host.lock_of(&key);
    let _guard = lock.lock().await;
    match host.ledger.finish(&key, event, &final_report).await {
        Ok(s) => {
            if s == State::Unstaged {
                let _ = host.teardown(&key, Teardown::Undeploy).await;
            }
            tracing::info!(key, state = s.as_str(), "staging finished");
        }
        Err(why) => {
            // Destroyed (or changed) meanwhile: nothing of this staging may stay behind.
            tracing::info!(key, "staging ended for a workspace that is gone or moved on: {why}");
            let gone = host.ledger.description(&key).await.is_none();
            let _ = host.teardown(&key, if gone { Teardown::Destroyed } else { Teardown::Undeploy }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sums_sizes_only_once_all_are_known() {
        let items = vec![
            Item { name: "root".into(), url: "gsiftp://h/a".into(), digest: None, file: "/p/k/disk00-root".into() },
            Item { name: "cd".into(), url: "http://h/cd.iso".into(), digest: None, file: "/p/k/cdrom00-cd".into() },
        ];
        let mut r = Report::new(&items, 1000);
        assert_eq!((r.status, r.images[1].status), (StagingStatus::Queued, ImageStatus::Pending));
        r.images[0].bytes = 10;
        r.images[0].total = Some(40);
        assert_eq!((r.bytes(), r.total()), (10, None));
        r.images[1].total = Some(2);
        assert_eq!(r.total(), Some(42));
        r.fail("staging.file_roots", "no".into());
        assert_eq!(r.status, StagingStatus::Failed);
        assert!(r.finished_ms.unwrap() >= 1000);
        assert_eq!(r.error, Some(("staging.file_roots".into(), "no".into())));
    }
}
