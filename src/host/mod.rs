//! This host's engine, below the port types: what the Manager does to the machine it runs on.
//! [`Host`] is the one engine type the Manager service calls: it plans and runs stagings into the
//! image pool ([`staging`], [`pool`]) under the site's `file://` policy ([`roots`]), releases
//! images, and reconciles the pool after a restart. Hypervisor drivers sit behind one trait
//! ([`vmm::Vmm`]), one file per driver (`qemu.rs`: QEMU over QMP). The VM engine
//! ([`vm::VmEngine`]: overlays, addresses, per-workspace credentials from the host CA
//! ([`ca::HostCa`]), the guest's config disk, every VM operation) runs what deploy staged.
//!
//! Everything a workspace holds on this host goes through one path, [`Host::teardown`]: its VM
//! destroyed and confirmed gone, its pool directory (staged images, overlays, config disk, save
//! file, console log) and run directory removed, then its address freed. Undeploy, destroy, a
//! failed deploy and reconciliation all use it, each under the workspace's lock
//! ([`Host::lock_of`]), which also serialises a finishing staging (the VM being defined) with them.
//!
//! Nothing here knows SOAP or resource homes: the engine reads and writes the workspace records
//! it needs (state, description, the staging report) through the small [`Ledger`] interface,
//! which the service layer implements over its resource home.

pub mod ca;
pub mod images;
pub mod pool;
pub mod qemu;
pub mod roots;
pub mod staging;
pub mod vm;
pub mod vmm;
pub mod xl;

use crate::transfer::Stager;
use crate::workspace::{Description, Event, State};
use pool::Pool;
use roots::FileRoots;
pub use staging::StagingSettings;
use staging::{ImageStatus, Plan, Report};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A boxed future, for the [`Ledger`]'s methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The workspace records as this engine reads and writes them. Implemented above this layer
/// (by the Manager service, over the workspace home); every write is durable when it returns.
pub trait Ledger: Send + Sync + 'static {
    /// Every workspace with its life-cycle state (for reconciliation after a restart).
    fn list(&self) -> BoxFuture<'_, Vec<(String, State)>>;
    /// A workspace's description; None when it is gone or unreadable.
    fn description<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Description>>;
    /// Progress of a staging under way: the new staging report. Err when the workspace is gone
    /// (the job then stops reporting).
    fn progress<'a>(&'a self, key: &'a str, report: &'a Report) -> BoxFuture<'a, Result<(), String>>;
    /// A staging ended: move the workspace by `event` (`StagingDone` or `StagingFailed`) and keep
    /// `report` as its final staging report, in one durable step. Returns the new state, or why
    /// not (gone, or no longer staging).
    fn finish<'a>(&'a self, key: &'a str, event: Event, report: &'a Report) -> BoxFuture<'a, Result<State, String>>;
}

/// Why a staging cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A site policy rule refuses it (`rule` is the configuration key, e.g. `staging.file_roots`).
    #[error("rejected by site policy rule '{rule}': {reason}")]
    Policy { rule: &'static str, reason: String },
    /// The description cannot be staged as written (bad URL or digest, missing file).
    #[error("{reason}")]
    Invalid { code: Option<&'static str>, reason: String },
}

impl PlanError {
    /// A short word for it, as staging reports keep it: the rule, or the error's code.
    pub fn kind(&self) -> &str {
        match self {
            PlanError::Policy { rule, .. } => rule,
            PlanError::Invalid { code, .. } => code.unwrap_or("invalid_description"),
        }
    }
}

/// What [`Host::recover`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Stagings restarted from the beginning.
    pub resumed: usize,
    /// Stagings the site's policy no longer allows, failed back to Unstaged.
    pub refused: usize,
    /// Pool directories of no workspace holding images, removed.
    pub removed: usize,
}

/// What [`Host::teardown`] does with the workspace's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Teardown {
    /// The workspace stays (undeploy, a failed deploy): its IP goes back to the pool, its MAC
    /// stays its own.
    Undeploy,
    /// The workspace is gone: its MAC goes too, and a staging under way is cancelled.
    Destroyed,
}

/// This host's engine.
pub struct Host {
    pool: Pool,
    /// The VM engine (None: `vmm.driver = "none"`, deploy only stages).
    engine: Option<Arc<vm::VmEngine>>,
    /// One lock per workspace, serialising what changes its VM and files (operations, the end of
    /// a staging, teardown, reconciliation).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    roots: FileRoots,
    stager: Stager,
    permits: tokio::sync::Semaphore,
    ledger: Arc<dyn Ledger>,
    /// Cancel flags of the stagings under way, by workspace key (set by [`Host::discard`]).
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// The Repository's image store (issue 12): images with a sha256 digest it holds are
    /// hard-linked from it instead of transferred, and transferred ones are kept in it.
    images: std::sync::OnceLock<Arc<images::ImageStore>>,
    /// A remote site Repository's images (a Manager host with `repository.url`): an image with
    /// a sha256 digest the store lacks is fetched from there into the store first.
    source: std::sync::OnceLock<Arc<dyn images::ImageSource>>,
}

impl Host {
    /// The engine, staging as `settings` say and keeping its records in `ledger`. Fails when the
    /// pool cannot be created or a file root does not exist.
    pub fn new(
        settings: &StagingSettings,
        ledger: Arc<dyn Ledger>,
        engine: Option<Arc<vm::VmEngine>>,
    ) -> Result<Arc<Host>, String> {
        Ok(Arc::new(Host {
            pool: Pool::open(&settings.pool)?,
            engine,
            locks: Mutex::new(HashMap::new()),
            roots: FileRoots::new(&settings.file_roots)?,
            stager: Stager::new(settings.options()),
            permits: tokio::sync::Semaphore::new(settings.max_concurrent.max(1)),
            ledger,
            jobs: Mutex::new(HashMap::new()),
            images: std::sync::OnceLock::new(),
            source: std::sync::OnceLock::new(),
        }))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    // --- the Repository's image store (issue 12) ---
    /// Stage through the site's image store from now on (set once, at wiring).
    pub fn set_images(&self, store: Arc<images::ImageStore>) {
        let _ = self.images.set(store);
    }

    pub fn images(&self) -> Option<&Arc<images::ImageStore>> {
        self.images.get()
    }

    /// Fetch images the store lacks from `source` (the remote site Repository) from now on.
    pub fn set_image_source(&self, source: Arc<dyn images::ImageSource>) {
        let _ = self.source.set(source);
    }

    pub fn image_source(&self) -> Option<&Arc<dyn images::ImageSource>> {
        self.source.get()
    }

    /// The `file://` roots policy (registrations are checked against it too).
    pub fn roots(&self) -> &FileRoots {
        &self.roots
    }

    /// The stager (registrations from URLs use it too).
    pub fn stager(&self) -> &Stager {
        &self.stager
    }
    // --- end image store ---

    /// What deploying `description` as workspace `key` stages, checked against the site's
    /// policy. Touches nothing.
    pub fn plan(&self, key: &str, description: &Description) -> Result<Plan, PlanError> {
        let items = staging::items(&self.pool, key, description)?;
        for i in &items {
            self.roots.check(&i.url)?;
        }
        Ok(Plan { key: key.to_string(), items, started_ms: now_ms() })
    }

    /// Runs a planned staging in the background. Call it once the workspace is durably in
    /// Staging with `plan.report()`; the job reports through the ledger and ends with
    /// [`Ledger::finish`].
    pub fn start_staging(self: &Arc<Self>, plan: Plan) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.jobs.lock().unwrap().insert(plan.key.clone(), cancelled.clone());
        tokio::spawn(staging::run(self.clone(), plan, cancelled));
    }

    /// Is a staging of `key` under way (or queued)?
    pub fn is_staging(&self, key: &str) -> bool {
        self.jobs.lock().unwrap().contains_key(key)
    }

    /// The VM engine (None: deploy only stages).
    pub fn engine(&self) -> Option<&Arc<vm::VmEngine>> {
        self.engine.as_ref()
    }

    /// The lock of one workspace: whoever changes its VM or its files holds it.
    pub fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap().entry(key.to_string()).or_default().clone()
    }

    /// A workspace is gone: cancel its staging (a shared transfer stops only when every party
    /// cancels). Quick; the staging job tears down what it made when it ends.
    pub fn discard(&self, key: &str) {
        if let Some(flag) = self.jobs.lock().unwrap().get(key) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Destroys a workspace's VM; returns once the driver confirmed it gone (Ok when there was
    /// none). The address and files stay.
    pub async fn destroy_vm(&self, key: &str) -> Result<(), vm::EngineError> {
        let Some(e) = self.engine.clone() else { return Ok(()) };
        let k = key.to_string();
        tokio::task::spawn_blocking(move || e.destroy_vm(&k)).await.unwrap_or_else(|j| Err(vm::EngineError::Setup(j.to_string())))
    }

    /// Everything a workspace holds on this host goes, in this order: its VM (destroyed and
    /// confirmed gone), its pool directory (staged images, overlays, config disk, certificate,
    /// save file, console log) and run directory, then its address (`how`). When the VM is not
    /// confirmed gone nothing else is touched (the address is never freed under a live VM,
    /// Nimbus #101). Idempotent; the caller holds the workspace's lock ([`Host::lock_of`]).
    pub async fn teardown(&self, key: &str, how: Teardown) -> Result<(), vm::EngineError> {
        let started = std::time::Instant::now();
        if how == Teardown::Destroyed {
            self.discard(key);
        }
        let (engine, dir, k) = (self.engine.clone(), self.pool.dir(key), key.to_string());
        let r = tokio::task::spawn_blocking(move || {
            if let Some(e) = &engine {
                e.destroy_vm(&k)?;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(vm::EngineError::Setup(format!("removing {}: {err}", dir.display()))),
            }
            if let Some(e) = &engine {
                e.remove_run_dir(&k);
                e.free_address(&k, how == Teardown::Destroyed)?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|j| Err(vm::EngineError::Setup(j.to_string())));
        match &r {
            Ok(()) => tracing::debug!(key, ?how, ms = started.elapsed().as_secs_f64() * 1e3, "torn down"),
            Err(e) => tracing::error!(key, ?how, error = %e, "teardown incomplete (address kept)"),
        }
        if how == Teardown::Destroyed && r.is_ok() {
            self.locks.lock().unwrap().remove(key);
        }
        r
    }

    /// After a restart: stagings that were under way start again from the beginning (their
    /// partial files are discarded), each checked again against the site's policy; one the
    /// policy now refuses fails back to Unstaged with the reason in its report. Pool directories
    /// of no workspace holding images are removed.
    pub async fn recover(self: &Arc<Self>) -> Recovery {
        let mut rec = Recovery::default();
        let mut keep = HashSet::new();
        for (key, state) in self.ledger.list().await {
            match state {
                State::Unstaged | State::Destroyed => {}
                // Kept for cleanup (undeploy, destroy) and to see what went wrong.
                State::Corrupted => {
                    keep.insert(key);
                }
                State::Staged
                | State::Running
                | State::Paused
                | State::Saved
                | State::Stopping
                | State::Saving
                | State::Restoring => {
                    keep.insert(key);
                }
                State::Staging => {
                    let Some(d) = self.ledger.description(&key).await else { continue };
                    self.pool.release(&key).await;
                    match self.plan(&key, &d) {
                        Ok(plan) => {
                            tracing::info!(key, images = plan.items.len(), "resuming a staging interrupted by a restart");
                            keep.insert(key);
                            self.start_staging(plan);
                            rec.resumed += 1;
                        }
                        Err(e) => {
                            tracing::warn!(key, rule = e.kind(), "staging interrupted by a restart not resumed: {e}");
                            let mut report = match staging::items(&self.pool, &key, &d) {
                                Ok(items) => Report::new(&items, now_ms()),
                                Err(_) => Report::new(&[], now_ms()),
                            };
                            for im in &mut report.images {
                                if self.roots.check(&im.url).is_err() {
                                    im.status = ImageStatus::Failed;
                                }
                            }
                            report.fail(e.kind(), e.to_string());
                            match self.ledger.finish(&key, Event::StagingFailed, &report).await {
                                Ok(s) => tracing::info!(key, state = s.as_str(), "staging failed back"),
                                Err(why) => tracing::error!(key, "cannot fail back a refused staging: {why}"),
                            }
                            rec.refused += 1;
                        }
                    }
                }
            }
        }
        rec.removed = self.pool.sweep(keep).await;
        if rec != Recovery::default() {
            tracing::info!(resumed = rec.resumed, refused = rec.refused, removed = rec.removed, "image pool reconciled");
        }
        rec
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::description::{Access, Category, Disk, DiskType, Hardware, ImageState, Vmm};
    use staging::StagingStatus;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// Workspace records in memory, as the engine sees them.
    #[derive(Default)]
    struct MemLedger {
        records: Mutex<HashMap<String, (State, Description)>>,
        progress: Mutex<Vec<(String, Report)>>,
        finished: Mutex<Vec<(String, Event, Report)>>,
        done: tokio::sync::Notify,
    }

    impl MemLedger {
        fn put(&self, key: &str, state: State, d: Description) {
            self.records.lock().unwrap().insert(key.into(), (state, d));
        }
        fn state(&self, key: &str) -> Option<State> {
            self.records.lock().unwrap().get(key).map(|r| r.0)
        }
        /// Waits until `n` stagings have finished.
        async fn finished(&self, n: usize) -> Vec<(String, Event, Report)> {
            tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    let wait = self.done.notified();
                    if self.finished.lock().unwrap().len() >= n {
                        return self.finished.lock().unwrap().clone();
                    }
                    wait.await;
                }
            })
            .await
            .expect("stagings finish")
        }
    }

    impl Ledger for MemLedger {
        fn list(&self) -> BoxFuture<'_, Vec<(String, State)>> {
            Box::pin(async move { self.records.lock().unwrap().iter().map(|(k, r)| (k.clone(), r.0)).collect() })
        }
        fn description<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Description>> {
            Box::pin(async move { self.records.lock().unwrap().get(key).map(|r| r.1.clone()) })
        }
        fn progress<'a>(&'a self, key: &'a str, report: &'a Report) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                if self.state(key).is_none() {
                    return Err("gone".into());
                }
                self.progress.lock().unwrap().push((key.into(), report.clone()));
                Ok(())
            })
        }
        fn finish<'a>(&'a self, key: &'a str, event: Event, report: &'a Report) -> BoxFuture<'a, Result<State, String>> {
            Box::pin(async move {
                let r = {
                    let mut recs = self.records.lock().unwrap();
                    let rec = recs.get_mut(key).ok_or("gone")?;
                    rec.0 = rec.0.on(event).ok_or("not staging")?;
                    rec.0
                };
                self.finished.lock().unwrap().push((key.into(), event, report.clone()));
                self.done.notify_waiters();
                Ok(r)
            })
        }
    }

    fn description(urls: &[String]) -> Description {
        let disks = urls
            .iter()
            .enumerate()
            .map(|(i, u)| Disk {
                name: format!("d{i}"),
                kind: DiskType::Image,
                access: Access::Ro,
                size: None,
                image: Some(u.clone()),
                digest: None,
            })
            .collect();
        Description {
            category: Category::Vm { vmm: Vmm::Qemu, vmm_version: None },
            state: ImageState::Shutdown,
            life_cycle: None,
            hardware: Some(Hardware { disks, ..Default::default() }),
            network: None,
            software: None,
            capability: None,
        }
    }

    fn settings(pool: &Path, roots: &[&Path]) -> StagingSettings {
        StagingSettings {
            pool: pool.to_path_buf(),
            file_roots: roots.iter().map(|r| r.to_path_buf()).collect(),
            streams: 1,
            dcau: false,
            verify: true,
            credential: None,
            cert_dir: None,
            max_concurrent: 2,
            retries: 0,
            progress_interval: Duration::from_millis(50),
        }
    }

    fn file_url(p: &Path) -> String {
        format!("file://{}", p.canonicalize().unwrap_or_else(|_| p.to_path_buf()).display())
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stages_an_allowed_image_reports_progress_and_finishes_through_the_ledger() {
        let tmp = tempfile::tempdir().unwrap();
        let (roots, outside) = (tmp.path().join("roots"), tmp.path().join("outside"));
        std::fs::create_dir_all(&roots).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(roots.join("a.img"), &data).unwrap();
        std::fs::write(outside.join("secret"), b"no").unwrap();
        let ledger = Arc::new(MemLedger::default());
        let host = Host::new(&settings(&tmp.path().join("pool"), &[&roots]), ledger.clone(), None).unwrap();

        let refused = host.plan("k", &description(&[file_url(&outside.join("secret"))])).unwrap_err();
        assert_eq!(refused.kind(), roots::RULE);
        assert!(!host.pool().dir("k").exists(), "planning touches nothing");

        let d = description(&[file_url(&roots.join("a.img"))]);
        let plan = host.plan("k", &d).unwrap();
        assert_eq!(plan.items.len(), 1);
        assert_eq!(plan.items[0].file, host.pool().dir("k").join("disk00-d0"));
        assert_eq!(plan.report().status, StagingStatus::Queued);
        ledger.put("k", State::Staging, d);
        host.start_staging(plan);
        assert!(host.is_staging("k"));
        let fin = ledger.finished(1).await;
        let (key, event, report) = &fin[0];
        assert_eq!((key.as_str(), *event), ("k", Event::StagingDone));
        assert_eq!(report.status, StagingStatus::Staged);
        assert_eq!(report.images[0].status, ImageStatus::Done);
        assert_eq!(report.images[0].bytes, data.len() as u64);
        assert_eq!(report.images[0].sha256.as_ref().map(String::len), Some(64));
        assert!(report.finished_ms.is_some() && report.error.is_none());
        assert_eq!(ledger.state("k"), Some(State::Staged));
        assert!(!host.is_staging("k"));
        assert_eq!(std::fs::read(host.pool().dir("k").join("disk00-d0")).unwrap(), data);
        assert!(ledger.progress.lock().unwrap().iter().any(|(_, r)| r.status == StagingStatus::Staging));

        host.teardown("k", Teardown::Undeploy).await.unwrap();
        assert!(!host.pool().dir("k").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_resumes_what_the_policy_allows_fails_back_what_it_refuses_and_sweeps_the_pool() {
        let tmp = tempfile::tempdir().unwrap();
        let (roots, outside) = (tmp.path().join("roots"), tmp.path().join("outside"));
        std::fs::create_dir_all(&roots).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(roots.join("ok.img"), b"allowed image").unwrap();
        std::fs::write(outside.join("no.img"), b"refused image").unwrap();
        let pool_root: PathBuf = tmp.path().join("pool");
        for (k, f) in [("a", "disk00-d0.part"), ("b", "disk01-d1.part"), ("c", "disk00-d0"), ("stray", "x")] {
            std::fs::create_dir_all(pool_root.join(k)).unwrap();
            std::fs::write(pool_root.join(k).join(f), b"left over").unwrap();
        }
        let ledger = Arc::new(MemLedger::default());
        let ok = file_url(&roots.join("ok.img"));
        ledger.put("a", State::Staging, description(std::slice::from_ref(&ok)));
        ledger.put("b", State::Staging, description(&[ok.clone(), file_url(&outside.join("no.img"))]));
        ledger.put("c", State::Staged, description(std::slice::from_ref(&ok)));
        ledger.put("u", State::Unstaged, description(std::slice::from_ref(&ok)));
        let host = Host::new(&settings(&pool_root, &[&roots]), ledger.clone(), None).unwrap();

        let rec = host.recover().await;
        assert_eq!(rec, Recovery { resumed: 1, refused: 1, removed: 1 });
        // b: refused at once, back to Unstaged with the rule and the image named.
        assert_eq!(ledger.state("b"), Some(State::Unstaged));
        let fin = ledger.finished(2).await;
        let b = fin.iter().find(|f| f.0 == "b").unwrap();
        assert_eq!(b.1, Event::StagingFailed);
        assert_eq!(b.2.status, StagingStatus::Failed);
        let (kind, why) = b.2.error.clone().unwrap();
        assert_eq!(kind, "staging.file_roots");
        assert!(why.contains("no.img") && why.contains("outside the directories"), "{why}");
        assert_eq!(b.2.images.iter().map(|i| i.status).collect::<Vec<_>>(), [ImageStatus::Pending, ImageStatus::Failed]);
        assert!(!pool_root.join("b").exists());
        // a: started again from the beginning; its partial file is gone.
        let a = fin.iter().find(|f| f.0 == "a").unwrap();
        assert_eq!((a.1, ledger.state("a")), (Event::StagingDone, Some(State::Staged)));
        assert_eq!(files(&pool_root.join("a")), ["disk00-d0"]);
        assert_eq!(std::fs::read(pool_root.join("a").join("disk00-d0")).unwrap(), b"allowed image");
        // c keeps its images; the stray directory is gone.
        assert_eq!(files(&pool_root.join("c")), ["disk00-d0"]);
        assert!(!pool_root.join("stray").exists());
    }
}
