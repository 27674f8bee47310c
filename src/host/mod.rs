//! This host's engine, below the port types: what the Manager does to the machine it runs on.
//! [`Host`] is the one engine type the Manager service calls: it plans and runs stagings into the
//! image pool ([`staging`], [`pool`]) under the site's `file://` policy ([`roots`]), releases
//! images, and reconciles the pool after a restart. Hypervisor drivers sit behind one trait
//! ([`vmm::Vmm`]), one file per driver.
//!
//! Nothing here knows SOAP or resource homes: the engine reads and writes the workspace records
//! it needs (state, description, the staging report) through the small [`Ledger`] interface,
//! which the service layer implements over its resource home.

pub mod pool;
pub mod roots;
pub mod staging;
pub mod vmm;

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

/// This host's engine.
pub struct Host {
    pool: Pool,
    roots: FileRoots,
    stager: Stager,
    permits: tokio::sync::Semaphore,
    ledger: Arc<dyn Ledger>,
    /// Cancel flags of the stagings under way, by workspace key (set by [`Host::discard`]).
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Host {
    /// The engine, staging as `settings` say and keeping its records in `ledger`. Fails when the
    /// pool cannot be created or a file root does not exist.
    pub fn new(settings: &StagingSettings, ledger: Arc<dyn Ledger>) -> Result<Arc<Host>, String> {
        Ok(Arc::new(Host {
            pool: Pool::open(&settings.pool)?,
            roots: FileRoots::new(&settings.file_roots)?,
            stager: Stager::new(settings.options()),
            permits: tokio::sync::Semaphore::new(settings.max_concurrent.max(1)),
            ledger,
            jobs: Mutex::new(HashMap::new()),
        }))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

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

    /// Removes a workspace's images (undeploy; the state change is durable already).
    pub async fn release(&self, key: &str) {
        self.pool.release(key).await;
    }

    /// A workspace is gone: cancel its staging (a shared transfer stops only when every party
    /// cancels) and remove its images. Quick: the removal runs in the background.
    pub fn discard(&self, key: &str) {
        if let Some(flag) = self.jobs.lock().unwrap().get(key) {
            flag.store(true, Ordering::Relaxed);
        }
        self.pool.release_later(key);
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
                State::Unstaged | State::Destroyed | State::Corrupted => {}
                State::Staged | State::Running | State::Paused | State::Saved => {
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
