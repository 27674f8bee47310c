//! The Manager port type (one per host), operations sent to a workspace's EPR:
//!
//! * `deploy`: stage the workspace's images (image disks and CD-ROMs) into this host's image
//!   pool, `<pool>/<workspace key>/`. The workspace goes Unstaged → Staging at once (the answer
//!   does not wait for the transfer), then Staged when every image is in place and verified, or
//!   back to Unstaged with the error when one fails. Progress (bytes, total, rate, ETA per image)
//!   is kept in the workspace's `{vws}staging` resource property while it runs.
//! * `undeploy`: release the staged images (Staged or Saved → Unstaged).
//!
//! Invariants: the state change is durable before any file is touched; a file appears in the
//! pool only complete and verified (see [`crate::transfer::stage`]); `file://` images come only
//! from the configured roots; destroying a workspace cancels its staging. After a crash [`ManagerService::recover`] restarts stagings that
//! were under way and removes pool directories no workspace owns any more.

use super::workspace::{current_state_xml, touch, WorkspaceData};
use super::{reply, Shared};
use crate::host::settings::StagingConfig;
use crate::security::Action;
use crate::soap::envelope::SoapFault;
use super::request::{SoapReply, SoapRequest};
use crate::soap::ns::VWS;
use crate::soap::xml::escape_attr;
use crate::transfer::{self, Digest, Options, ProgressInfo, Stager, TransferError, Url};
use crate::workspace::{Description, Event, State};
use crate::wsrf::{time, BaseFault, FaultType, Home, ResourceState};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PORT_TYPE: &str = "WorkspaceManagerPortType";

/// This host's Manager.
pub struct ManagerService {
    inner: Arc<Inner>,
}

struct Inner {
    home: Arc<Home>,
    shared: Arc<Shared>,
    pool: PathBuf,
    file_roots: Vec<PathBuf>,
    stager: Stager,
    permits: tokio::sync::Semaphore,
    /// Cancel flags of the stagings under way, by workspace key (set when it is destroyed).
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

/// One image to stage.
#[derive(Clone, Debug)]
struct Item {
    name: String,
    url: String,
    digest: Option<Digest>,
    file: PathBuf,
}

/// The `{vws}staging` property's content.
#[derive(Clone, Debug)]
struct Report {
    status: &'static str,
    started_ms: i64,
    finished_ms: Option<i64>,
    images: Vec<ImageReport>,
    error: Option<(String, String)>,
}

#[derive(Clone, Debug)]
struct ImageReport {
    name: String,
    url: String,
    status: &'static str,
    bytes: u64,
    total: Option<u64>,
    rate: f64,
    eta: Option<Duration>,
    sha256: Option<String>,
}

impl Report {
    fn new(items: &[Item]) -> Report {
        Report {
            status: "queued",
            started_ms: time::now_ms(),
            finished_ms: None,
            images: items
                .iter()
                .map(|i| ImageReport {
                    name: i.name.clone(),
                    url: i.url.clone(),
                    status: "pending",
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

    fn to_xml(&self) -> String {
        let bytes: u64 = self.images.iter().map(|i| i.bytes).sum();
        let total: Option<u64> = self.images.iter().map(|i| i.total).sum();
        let mut s = format!("<w:staging xmlns:w=\"{VWS}\" status=\"{}\" bytes=\"{bytes}\"", self.status);
        if let Some(t) = total {
            let _ = write!(s, " total=\"{t}\"");
        }
        let _ = write!(s, " started=\"{}\"", time::format_ms(self.started_ms));
        if let Some(f) = self.finished_ms {
            let _ = write!(s, " finished=\"{}\"", time::format_ms(f));
        }
        s.push('>');
        for i in &self.images {
            let _ = write!(
                s,
                "<w:image name=\"{}\" url=\"{}\" status=\"{}\" bytes=\"{}\"",
                escape_attr(&i.name),
                escape_attr(&i.url),
                i.status,
                i.bytes
            );
            if let Some(t) = i.total {
                let _ = write!(s, " total=\"{t}\"");
            }
            if i.status == "staging" {
                let _ = write!(s, " rate=\"{}\"", i.rate.max(0.0).round() as u64);
                if let Some(e) = i.eta {
                    let _ = write!(s, " eta=\"{}\"", e.as_secs_f64().ceil() as u64);
                }
            }
            if let Some(h) = &i.sha256 {
                let _ = write!(s, " sha256=\"{h}\"");
            }
            s.push_str("/>");
        }
        if let Some((kind, msg)) = &self.error {
            let _ = write!(s, "<w:error kind=\"{}\">{}</w:error>", escape_attr(kind), crate::soap::xml::escape(msg));
        }
        s.push_str("</w:staging>");
        s
    }
}

/// A file name for an image in the pool: its position and its name, reduced to safe characters.
fn pool_name(prefix: &str, i: usize, name: &str) -> String {
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    format!("{prefix}{i:02}-{}", safe.trim_start_matches('.'))
}

fn invalid_state(key: &str, op: &str, s: State) -> BaseFault {
    BaseFault::new(FaultType::InvalidState, format!("workspace '{key}' is {}: {op} is not possible in that state", s.as_str()))
        .code(s.as_str())
}

impl ManagerService {
    /// The Manager for `home`'s workspaces, staging into `pool` as `cfg` says.
    pub fn new(home: Arc<Home>, shared: Arc<Shared>, pool: PathBuf, cfg: &StagingConfig) -> Result<Arc<ManagerService>, String> {
        std::fs::create_dir_all(&pool).map_err(|e| format!("image pool {}: {e}", pool.display()))?;
        let pool = pool.canonicalize().map_err(|e| format!("image pool {}: {e}", pool.display()))?;
        let mut file_roots = Vec::new();
        for r in &cfg.file_roots {
            file_roots.push(r.canonicalize().map_err(|e| format!("staging.file_roots {}: {e}", r.display()))?);
        }
        let opts = Options {
            streams: cfg.streams.max(1),
            dcau: cfg.dcau,
            verify: cfg.verify,
            credential: cfg.credential.clone(),
            cert_dir: cfg.cert_dir.clone(),
            retries: cfg.retries,
            progress_interval: Duration::from_millis(cfg.progress_interval_ms.max(50)),
            ..Options::default()
        };
        let inner = Arc::new(Inner {
            home: home.clone(),
            shared,
            pool,
            file_roots,
            stager: Stager::new(opts),
            permits: tokio::sync::Semaphore::new(cfg.max_concurrent.max(1)),
            jobs: Mutex::new(HashMap::new()),
        });
        // A destroyed workspace's images go with it: a staging under way is cancelled (its
        // transfer stops unless another workspace shares it) and removes what it made.
        let weak = Arc::downgrade(&inner);
        home.on_destroy(Box::new(move |key| {
            if let Some(inner) = weak.upgrade() {
                if let Some(flag) = inner.jobs.lock().unwrap().get(key) {
                    flag.store(true, Ordering::Relaxed);
                }
                let dir = inner.dir(key);
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn_blocking(move || remove_dir(&dir));
                } else {
                    remove_dir(&dir);
                }
            }
        }));
        Ok(Arc::new(ManagerService { inner }))
    }

    /// Handles a Manager operation; None when the payload is not one.
    pub async fn dispatch(&self, req: &SoapRequest) -> Option<Result<SoapReply, SoapFault>> {
        let p = req.env.payload();
        let r = if p.is(VWS, "deploy") {
            self.deploy(req).await
        } else if p.is(VWS, "undeploy") {
            self.undeploy(req).await
        } else {
            return None;
        };
        Some(r.map_err(SoapFault::from))
    }

    /// deploy: Unstaged → Staging now, Staged (or back to Unstaged) when the images are in.
    pub async fn deploy(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let inner = &self.inner;
        let key = inner.home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        no_arguments(req)?;
        let items = inner
            .home
            .read(&key, FaultType::RpResourceUnknown, |st| {
                inner.shared.authorize(&req.caller, Action::Deploy, Some(&st.owner))?;
                let data = WorkspaceData::of(st)?;
                if data.state.on(Event::Deploy).is_none() {
                    return Err(invalid_state(&key, "deploy", data.state));
                }
                Ok(data.description)
            })
            .await
            .and_then(|d| inner.plan(&key, &d))?;
        let report = Report::new(&items);
        inner
            .home
            // Checked again under the lock: a concurrent deploy may have won.
            .update(&key, FaultType::RpResourceUnknown, |st| inner.transition(st, &key, Event::Deploy, "deploy", Some(&report)))
            .await?;
        tracing::info!(caller = req.caller.name(), key, images = items.len(), "deploy: staging started");
        tokio::spawn(inner.clone().run_staging(key, items, report));
        Ok(state_reply("deploy", State::Staging))
    }

    /// undeploy: Staged or Saved → Unstaged; the images are removed once that is durable.
    pub async fn undeploy(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let inner = &self.inner;
        let key = inner.home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        no_arguments(req)?;
        inner
            .home
            .update(&key, FaultType::RpResourceUnknown, |st| {
                inner.shared.authorize(&req.caller, Action::Deploy, Some(&st.owner))?;
                inner.transition(st, &key, Event::Undeploy, "undeploy", None)
            })
            .await?;
        inner.release(&key).await;
        tracing::info!(caller = req.caller.name(), key, "undeploy: images released");
        Ok(state_reply("undeploy", State::Unstaged))
    }

    /// After a restart: resume stagings that were under way (from the start: their partial
    /// files are discarded) and remove pool directories that belong to no staged workspace.
    pub async fn recover(&self) -> usize {
        let inner = &self.inner;
        let mut resumed = 0;
        let mut keep = std::collections::HashSet::new();
        for key in inner.home.keys() {
            let found = inner.home.read(&key, FaultType::RpResourceUnknown, WorkspaceData::of).await;
            let Ok(data) = found else { continue };
            match data.state {
                State::Unstaged | State::Destroyed | State::Corrupted => {}
                State::Staging => {
                    keep.insert(key.clone());
                    match inner.plan_unchecked(&key, &data.description) {
                        Ok(items) => {
                            inner.release(&key).await;
                            let report = Report::new(&items);
                            tracing::info!(key, images = items.len(), "resuming a staging interrupted by a restart");
                            tokio::spawn(inner.clone().run_staging(key, items, report));
                            resumed += 1;
                        }
                        Err(e) => tracing::error!(key, error = %e, "cannot resume staging"),
                    }
                }
                State::Staged | State::Running | State::Paused | State::Saved => {
                    keep.insert(key);
                }
            }
        }
        let pool = inner.pool.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for e in std::fs::read_dir(&pool).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    tracing::warn!(dir = %e.path().display(), "removing pool directory of no staged workspace");
                    remove_dir(&e.path());
                    n += 1;
                }
            }
            n
        })
        .await
        .unwrap_or(0);
        if resumed > 0 || removed > 0 {
            tracing::info!(resumed, removed, "image pool reconciled");
        }
        resumed
    }
}

fn no_arguments(req: &SoapRequest) -> Result<(), BaseFault> {
    let p = req.env.payload();
    match p.elements().next() {
        None => Ok(()),
        Some(c) => {
            Err(BaseFault::new(FaultType::InvalidRequest, format!("{} takes no arguments; got element {}", p.name, c.name)))
        }
    }
}

fn state_reply(op: &str, s: State) -> SoapReply {
    reply(
        format!("{VWS}/{PORT_TYPE}/{op}Response"),
        format!("<{op}Response xmlns=\"{VWS}\">{}</{op}Response>", current_state_xml(s)),
    )
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "pool directory removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot remove pool directory"),
    }
}

impl Inner {
    fn dir(&self, key: &str) -> PathBuf {
        self.pool.join(key)
    }

    /// Moves a workspace's state by `event` (refused, naming the state, when the table has no
    /// such transition) and writes its staging report (None: no report).
    fn transition(
        &self,
        st: &mut ResourceState,
        key: &str,
        event: Event,
        op: &str,
        report: Option<&Report>,
    ) -> Result<State, BaseFault> {
        let mut data = WorkspaceData::of(st)?;
        data.state = data.state.on(event).ok_or_else(|| invalid_state(key, op, data.state))?;
        let rtype = &self.home.rtype;
        data.store(rtype, st);
        st.set(rtype, VWS, "staging", report.map(Report::to_xml).into_iter().collect());
        touch(rtype, st);
        Ok(data.state)
    }

    /// Removes a workspace's pool directory (off the async threads).
    async fn release(&self, key: &str) {
        let dir = self.dir(key);
        let _ = tokio::task::spawn_blocking(move || remove_dir(&dir)).await;
    }

    /// The images of a description, each checked against the staging policy.
    fn plan(&self, key: &str, d: &Description) -> Result<Vec<Item>, BaseFault> {
        let items = self.plan_unchecked(key, d)?;
        for i in &items {
            self.allowed(&i.url)?;
        }
        Ok(items)
    }

    fn plan_unchecked(&self, key: &str, d: &Description) -> Result<Vec<Item>, BaseFault> {
        let dir = self.dir(key);
        let mut items = Vec::new();
        if let Some(hw) = &d.hardware {
            for (i, disk) in hw.disks.iter().enumerate() {
                if let Some(url) = &disk.image {
                    let digest = match &disk.digest {
                        Some(t) => Some(Digest::parse(t).map_err(|e| BaseFault::new(FaultType::InvalidDescription, e))?),
                        None => None,
                    };
                    items.push(Item {
                        name: disk.name.clone(),
                        url: url.clone(),
                        digest,
                        file: dir.join(pool_name("disk", i, &disk.name)),
                    });
                }
            }
            for (i, cd) in hw.cdroms.iter().enumerate() {
                items.push(Item {
                    name: cd.name.clone(),
                    url: cd.image.clone(),
                    digest: None,
                    file: dir.join(pool_name("cdrom", i, &cd.name)),
                });
            }
        }
        Ok(items)
    }

    /// The site's staging policy for a source URL: `file://` only below a configured root.
    fn allowed(&self, url: &str) -> Result<(), BaseFault> {
        let u = Url::parse(url).map_err(|e| BaseFault::new(FaultType::InvalidDescription, e.to_string()))?;
        if !u.is_local() {
            return Ok(());
        }
        let refuse = |why: &str| {
            BaseFault::new(
                FaultType::PolicyRejected,
                format!("rejected by site policy rule 'staging.file_roots': image {url} {why}"),
            )
            .code("staging.file_roots")
        };
        let p = Path::new(&u.path);
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(refuse("is not an absolute path without '..'"));
        }
        let under = |p: &Path| self.file_roots.iter().any(|r| p.starts_with(r));
        if !under(p) {
            return Err(refuse("is outside the directories file:// images may come from"));
        }
        // Resolve symbolic links: the real file must be below a root as well.
        match p.canonicalize() {
            Ok(real) if under(&real) => Ok(()),
            Ok(_) => Err(refuse("leads outside the allowed directories through a symbolic link")),
            Err(e) => Err(BaseFault::new(FaultType::InvalidDescription, format!("image {url}: {e}")).code("not_found")),
        }
    }

    /// The background part of deploy.
    async fn run_staging(self: Arc<Self>, key: String, items: Vec<Item>, report: Report) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.jobs.lock().unwrap().insert(key.clone(), cancelled.clone());
        let _permit = self.permits.acquire().await;
        let shared = Arc::new(Mutex::new(report));
        let (tx, mut rx) = tokio::sync::watch::channel(());
        // Publishes progress into the resource property; at most one write in flight, the
        // latest report wins.
        let publisher = {
            let me = self.clone();
            let (key, shared) = (key.clone(), shared.clone());
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let xml = shared.lock().unwrap().to_xml();
                    let r = me
                        .home
                        .update(&key, FaultType::RpResourceUnknown, |st| {
                            st.set(&me.home.rtype, VWS, "staging", vec![xml]);
                            Ok(())
                        })
                        .await;
                    if r.is_err() {
                        return; // destroyed meanwhile
                    }
                }
            })
        };
        shared.lock().unwrap().status = "staging";
        tx.send_replace(());
        let dir = self.dir(&key);
        let mut failure: Option<TransferError> = None;
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            failure = Some(TransferError::io(dir.display(), e));
        }
        for (n, item) in items.iter().enumerate() {
            if failure.is_some() {
                break;
            }
            shared.lock().unwrap().images[n].status = "staging";
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
            let me = self.clone();
            let it = item.clone();
            let dst = format!("file://{}", it.file.display());
            let cancel: transfer::CancelFn = {
                let c = cancelled.clone();
                Arc::new(move || c.load(Ordering::Relaxed))
            };
            let done =
                tokio::task::spawn_blocking(move || me.stager.stage_watched(&it.url, &dst, it.digest, Some(watch), Some(cancel)))
                    .await
                    .unwrap_or_else(|e| Err(TransferError::Io { what: "staging task".into(), reason: e.to_string() }));
            let mut r = shared.lock().unwrap();
            match done {
                Ok(o) => {
                    let im = &mut r.images[n];
                    im.status = "done";
                    im.bytes = o.bytes;
                    im.total = Some(o.bytes);
                    im.sha256 = Some(o.sha256).filter(|h| !h.is_empty());
                    tracing::info!(key, image = %item.name, bytes = o.bytes, secs = o.elapsed.as_secs_f64(), shared = o.shared, "image staged");
                }
                Err(e) => {
                    r.images[n].status = "failed";
                    tracing::warn!(key, image = %item.name, url = %item.url, kind = e.kind(), "staging failed: {e}");
                    failure = Some(e);
                }
            }
            drop(r);
            tx.send_replace(());
        }
        drop(tx);
        self.jobs.lock().unwrap().remove(&key);
        let _ = publisher.await;
        let final_report = {
            let mut r = shared.lock().unwrap();
            r.finished_ms = Some(time::now_ms());
            r.status = if failure.is_some() { "failed" } else { "staged" };
            r.error = failure.as_ref().map(|e| (e.kind().to_string(), e.to_string()));
            r.clone()
        };
        let event = if failure.is_some() { Event::StagingFailed } else { Event::StagingDone };
        let r = self
            .home
            .update(&key, FaultType::RpResourceUnknown, |st| {
                self.transition(st, &key, event, "finishing a staging", Some(&final_report))
            })
            .await;
        match r {
            Ok(s) => {
                if failure.is_some() {
                    self.release(&key).await;
                }
                tracing::info!(key, state = s.as_str(), "staging finished");
            }
            Err(e) => {
                // Destroyed (or changed) meanwhile: nothing of this staging may stay behind.
                tracing::info!(key, "staging ended for a workspace that is gone: {}", e.description);
                self.release(&key).await;
            }
        }
    }
}

impl super::registry::Operations for ManagerService {
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> super::registry::MaybeFuture<'a> {
        Box::pin(ManagerService::dispatch(self, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_safe() {
        assert_eq!(pool_name("disk", 0, "root"), "disk00-root");
        assert_eq!(pool_name("disk", 3, "../../etc/passwd"), "disk03-_.._etc_passwd");
        assert_eq!(pool_name("cdrom", 1, ".hidden dir/x"), "cdrom01-hidden_dir_x");
    }

    #[test]
    fn report_xml_carries_progress_and_errors() {
        let items = vec![
            Item { name: "root".into(), url: "gsiftp://h/a&b".into(), digest: None, file: "/p/k/disk00-root".into() },
            Item { name: "cd".into(), url: "http://h/cd.iso".into(), digest: None, file: "/p/k/cdrom00-cd".into() },
        ];
        let mut r = Report::new(&items);
        r.status = "staging";
        r.images[0].status = "staging";
        r.images[0].bytes = 10;
        r.images[0].total = Some(40);
        r.images[0].rate = 5.4;
        r.images[0].eta = Some(Duration::from_millis(5500));
        let x = r.to_xml();
        assert!(x.contains("status=\"staging\" bytes=\"10\" started="), "{x}");
        assert!(!x.contains(" total=\"40\" started"), "total only once every size is known: {x}");
        assert!(
            x.contains("url=\"gsiftp://h/a&amp;b\" status=\"staging\" bytes=\"10\" total=\"40\" rate=\"5\" eta=\"6\""),
            "{x}"
        );
        r.images[1].total = Some(2);
        r.error = Some(("checksum_mismatch".into(), "a < b".into()));
        let x = r.to_xml();
        assert!(x.contains("bytes=\"10\" total=\"42\""), "{x}");
        assert!(x.contains("<w:error kind=\"checksum_mismatch\">a &lt; b</w:error>"), "{x}");
        crate::soap::xml::parse(&x, &Default::default()).expect("well-formed");
    }
}
