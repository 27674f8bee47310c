//! `RepositoryService` (port type `{vws}RepositoryPortType`): the site's catalogue of every
//! workspace, deployed or not, and the keeper of the images that implement them (issue 12).
//!
//! One singleton WS-Resource (key `site`, header `{vws}RepositoryKey`) whose property document
//! `{vws}RepositoryResourceProperties` shows workspaces by state, one summary element per
//! workspace, the image store's bytes and quotas, and the checkout locks held; it is a view
//! over the workspace home (the Factory's catalogue) and the Repository's own tables
//! ([`crate::store::repo`]), refreshed before it is read or queried.
//!
//! Operations (each: decode, authorise, call, encode): `list`, `select` (constraints over the
//! descriptions), `clone`, `refine`, `checkout` / `renew` / `release` / `breakLock` (the
//! checkout lock a deploy takes), `register` / `images` / `gc` (the image store by content,
//! [`crate::host::images`]), and the WSRF Get/GetMultiple/QueryResourceProperties.

use super::registry::PortType;
use super::request::{DispatchFuture, SoapReply, SoapRequest};
use super::workspace::{self, WorkspaceData};
use super::{answer, unknown_operation, Shared};
use crate::host::images::{ImageError, ImageStore};
use crate::host::Host;
use crate::security::{Action, Owner};
use crate::soap::envelope::SoapFault;
use crate::soap::epr::Epr;
use crate::soap::epr::WSA_DECL;
use crate::soap::message::Message;
use crate::soap::ns::{self, VWS};
use crate::soap::writer::XmlWriter;
use crate::soap::xml::QName;
use crate::store::repo::{Enrolled, Lock, RepoError, RepoTables};
use crate::workspace::description::{Category, ImageState};
use crate::workspace::description::{Range, Vmm};
use crate::workspace::repo_messages::{
    CloneRequest, Describe, Described, Enrol, EnrolResponse, ImageInfo, Images, ImagesOp, ImagesRequest, LockInfo, LockOp,
    LockRequest, LockResponse, Match, Matches, NewWorkspace, Refine, Register, Select, Target, Withdraw, WithdrawResponse,
};
use crate::workspace::{Description, Policy, State};
use crate::wsrf::messages as m;
use crate::wsrf::{properties, time, BaseFault, FaultType, Home, PropertyDecl, ResourceState, ResourceType};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub const NAME: &str = "RepositoryService";
pub const PORT_TYPE: &str = "RepositoryPortType";
/// The key of the site's one Repository resource.
pub const SITE_KEY: &str = "site";

pub fn key_name() -> QName {
    QName::new(VWS, "RepositoryKey")
}

/// `{vws}RepositoryResourceProperties`.
pub fn resource_type() -> ResourceType {
    let ro = |l| PropertyDecl::read_only(VWS, l);
    ResourceType::new(
        QName::new(VWS, "RepositoryResourceProperties"),
        vec![ro("workspaces"), ro("entry"), ro("imageStore"), ro("lock")],
    )
}

/// Settings of the Repository (`[repository]`).
#[derive(Clone, Debug)]
pub struct RepositorySettings {
    /// Checkout lease; the holder renews it, a lapsed one may be broken.
    pub lease_ms: i64,
    /// Scheduled gc leaves images younger than this.
    pub gc_grace_ms: i64,
}

/// One workspace as the catalogue sees it.
#[derive(Clone, Debug)]
pub struct Summary {
    pub key: String,
    pub owner: Owner,
    pub state: State,
    pub image_state: ImageState,
    pub category: &'static str,
    pub vmm: Option<Vmm>,
    pub ram: Option<Range>,
    /// Sum of the sized disks' ranges (MiB).
    pub disk: Option<Range>,
    pub distribution: Option<String>,
    pub kernel: Option<String>,
    /// Programs and libraries: (name, version or signature).
    pub software: Vec<(String, Option<String>)>,
    /// SHA-256 digests of its images (hex).
    pub digests: Vec<String>,
    /// The EPR of a workspace another Manager host keeps (enrolled); None: this host's.
    pub epr: Option<Epr>,
}

impl Summary {
    fn of(key: &str, owner: &Owner, d: &WorkspaceData) -> Summary {
        Summary::of_description(key, owner, d.state, &d.description)
    }

    fn of_description(key: &str, owner: &Owner, state: State, desc: &Description) -> Summary {
        let hw = desc.hardware.as_ref();
        let sized: Vec<Range> = hw.map(|h| h.disks.iter().filter_map(|d| d.size).collect()).unwrap_or_default();
        let disk =
            (!sized.is_empty()).then(|| Range { min: sized.iter().map(|r| r.min).sum(), max: sized.iter().map(|r| r.max).sum() });
        let sw = desc.software.as_ref();
        let mut software = Vec::new();
        if let Some(s) = sw {
            software.extend(s.programs.iter().cloned());
            software.extend(s.libraries.iter().cloned());
        }
        Summary {
            key: key.to_string(),
            owner: owner.clone(),
            state,
            image_state: desc.state,
            category: desc.category.name(),
            vmm: match &desc.category {
                Category::Vm { vmm, .. } => Some(*vmm),
                Category::DynamicAccount => None,
            },
            ram: hw.and_then(|h| h.ram),
            disk,
            distribution: sw.and_then(|s| s.distribution.clone()),
            kernel: sw.and_then(|s| s.kernel.clone()),
            software,
            digests: hw
                .map(|h| {
                    h.disks
                        .iter()
                        .filter_map(|d| d.digest.as_deref())
                        .filter_map(|d| d.strip_prefix("sha256:").or_else(|| d.strip_prefix("SHA256:")))
                        .map(|h| h.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default(),
            epr: None,
        }
    }

    /// Corrupted (life-cycle or image state): not cloned or refined.
    pub fn corrupted(&self) -> bool {
        self.state == State::Corrupted || self.image_state == ImageState::Corrupted
    }

    /// One line: category/vmm, RAM, disk, OS, software, state.
    pub fn line(&self) -> String {
        let mut s = self.category.to_string();
        if let Some(v) = self.vmm {
            let _ = write!(s, "/{}", v.as_str());
        }
        if let Some(r) = self.ram {
            let _ = write!(s, " ram {}-{} MiB", r.min, r.max);
        }
        if let Some(r) = self.disk {
            let _ = write!(s, " disk {}-{} MiB", r.min, r.max);
        }
        if let Some(d) = &self.distribution {
            let _ = write!(s, " {d}");
        }
        if let Some(k) = &self.kernel {
            let _ = write!(s, " kernel {k}");
        }
        if !self.software.is_empty() {
            let names: Vec<String> =
                self.software.iter().map(|(n, v)| v.as_ref().map_or(n.clone(), |v| format!("{n}-{v}"))).collect();
            let _ = write!(s, " [{}]", names.join(" "));
        }
        let _ = write!(s, " {}", self.state.as_str());
        s
    }

    /// The `entry` resource property.
    fn xml(&self) -> String {
        let mut w = XmlWriter::with_capacity(512);
        let nums = |r: Option<Range>| r.map(|r| (r.min.to_string(), r.max.to_string()));
        let (ram, disk) = (nums(self.ram), nums(self.disk));
        let mut a: Vec<(&str, &str)> = vec![
            ("xmlns:w", VWS),
            ("key", &self.key),
            ("state", self.state.as_str()),
            ("owner", self.owner.dn.as_deref().unwrap_or("anonymous")),
            ("category", self.category),
        ];
        if let Some(v) = self.vmm {
            a.push(("vmm", v.as_str()));
        }
        if let Some((min, max)) = &ram {
            a.extend([("ramMin", min.as_str()), ("ramMax", max.as_str())]);
        }
        if let Some((min, max)) = &disk {
            a.extend([("diskMin", min.as_str()), ("diskMax", max.as_str())]);
        }
        if let Some(d) = &self.distribution {
            a.push(("distribution", d));
        }
        if let Some(k) = &self.kernel {
            a.push(("kernel", k));
        }
        w.start("w:entry", &a);
        for (n, v) in &self.software {
            match v {
                Some(v) => w.empty("w:software", &[("name", n), ("version", v)]),
                None => w.empty("w:software", &[("name", n)]),
            };
        }
        for d in &self.digests {
            w.empty("w:image", &[("sha256", d)]);
        }
        w.end("w:entry");
        w.into_string()
    }
}

pub use crate::workspace::repo_messages::Constraints;

fn intersects(have: Option<Range>, want: Option<Range>) -> bool {
    match (have, want) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(h), Some(w)) => h.min <= w.max && w.min <= h.max,
    }
}

fn version_matches(have: &str, want: &str) -> bool {
    have == want || (have.starts_with(want) && have[want.len()..].starts_with(['.', '-', '_', '+']))
}

impl Constraints {
    pub fn matches(&self, s: &Summary) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| match want {
            None => true,
            Some(w) => have.is_some_and(|h| h.eq_ignore_ascii_case(w)),
        };
        eq(&self.category, Some(s.category))
            && eq(&self.vmm, s.vmm.map(|v| v.as_str()))
            && eq(&self.state, Some(s.state.as_str()))
            && eq(&self.distribution, s.distribution.as_deref())
            && intersects(s.ram, self.ram)
            && intersects(s.disk, self.disk)
            && self.kernel.as_ref().is_none_or(|k| s.kernel.as_deref().is_some_and(|h| version_matches(h, k)))
            && self.software.iter().all(|(n, v)| {
                s.software
                    .iter()
                    .any(|(hn, hv)| hn == n && v.as_ref().is_none_or(|v| hv.as_deref().is_some_and(|h| version_matches(h, v))))
            })
    }
}

/// A requested range, refused when its min lies above its max (the fault names the field).
fn check_range(r: Range, field: &str) -> Result<Range, BaseFault> {
    if r.min > r.max {
        return Err(BaseFault::new(FaultType::InvalidRequest, format!("{field}: min {} > max {}", r.min, r.max)).code(field));
    }
    Ok(r)
}

/// A summary and the data text it was made from.
type Cached = (Arc<str>, Arc<Summary>);

/// The catalogue's index: one summary per workspace of the home, and the last snapshot.
#[derive(Default)]
struct Index {
    /// Filled by one full pass over the home, then kept current from its change events.
    primed: bool,
    /// Each summary with the data text it was made from (data is replaced, never edited in
    /// place: the same text is the same summary).
    map: HashMap<String, Cached>,
    /// Every summary (the home's and the enrolled ones), until something changes.
    snapshot: Option<Arc<Vec<Arc<Summary>>>>,
}

/// The in-memory catalogue: summaries of the workspace home kept in an index that the home's
/// change events keep current (a change marks its key; the next read re-summarises only the
/// marked keys), plus the workspaces other Manager hosts enrolled.
pub struct Catalogue {
    pub workspaces: Arc<Home>,
    /// Serialises reads of the index, so a slow re-summary never overwrites a newer one.
    index: tokio::sync::Mutex<Index>,
    /// Keys changed (created, updated, destroyed) since the index last looked.
    changed: Arc<Mutex<HashSet<String>>>,
    /// Workspaces other Manager hosts keep, enrolled here (`repo_catalogue`), summarised once.
    enrolled: Mutex<HashMap<String, Arc<Summary>>>,
    /// Set when `enrolled` changed since the last snapshot.
    enrolled_changed: AtomicBool,
}

/// The summary of an enrolled workspace (None when its description no longer reads).
pub fn enrolled_summary(e: &Enrolled) -> Option<Summary> {
    let el = crate::soap::xml::parse(&e.description, &Default::default()).ok()?;
    let desc = Description::from_element(&el).ok()?;
    let owner = Owner { dn: Some(e.owner.clone()).filter(|o| !o.is_empty()), ..Default::default() };
    let state = State::ALL.into_iter().find(|s| s.as_str() == e.state).unwrap_or(State::Unstaged);
    let mut s = Summary::of_description(&e.key, &owner, state, &desc);
    s.epr = Some(Epr::from_element(&crate::soap::xml::parse(&e.epr, &Default::default()).ok()?).ok()?);
    Some(s)
}

impl Catalogue {
    /// The catalogue of `workspaces` (registers a change hook on the home).
    pub fn new(workspaces: Arc<Home>) -> Catalogue {
        let changed: Arc<Mutex<HashSet<String>>> = Arc::default();
        let c = changed.clone();
        workspaces.on_change(Box::new(move |ch| {
            c.lock().unwrap().insert(ch.key.clone());
        }));
        Catalogue {
            workspaces,
            index: Default::default(),
            changed,
            enrolled: Mutex::new(HashMap::new()),
            enrolled_changed: AtomicBool::new(false),
        }
    }

    /// Puts (or replaces) an enrolled workspace's summary.
    pub fn set_enrolled(&self, e: &Enrolled) {
        match enrolled_summary(e) {
            Some(s) => drop(self.enrolled.lock().unwrap().insert(e.key.clone(), Arc::new(s))),
            None => tracing::error!(key = e.key, "enrolled workspace with an unreadable description left out of the catalogue"),
        }
        self.enrolled_changed.store(true, Ordering::Release);
    }

    pub fn drop_enrolled(&self, key: &str) {
        self.enrolled.lock().unwrap().remove(key);
        self.enrolled_changed.store(true, Ordering::Release);
    }

    /// The summary of an enrolled workspace.
    pub fn enrolled(&self, key: &str) -> Option<Arc<Summary>> {
        self.enrolled.lock().unwrap().get(key).cloned()
    }

    fn summarise(key: &str, data: &str, owner: &Owner) -> Option<Arc<Summary>> {
        match serde_json::from_str::<WorkspaceData>(data) {
            Ok(d) => Some(Arc::new(Summary::of(key, owner, &d))),
            Err(_) => {
                tracing::error!(key, "workspace with unreadable data left out of the catalogue");
                None
            }
        }
    }

    /// Every workspace's summary (in no particular order). Unchanged since the last call: the
    /// same snapshot; otherwise only the workspaces that changed are read and parsed again.
    pub async fn summaries(&self) -> Arc<Vec<Arc<Summary>>> {
        let mut idx = self.index.lock().await;
        let changed = std::mem::take(&mut *self.changed.lock().unwrap());
        let enrolled_changed = self.enrolled_changed.swap(false, Ordering::AcqRel);
        if let Some(s) = &idx.snapshot {
            if changed.is_empty() && !enrolled_changed {
                return s.clone();
            }
        }
        let mut todo: Vec<String> = Vec::new();
        let mut moved = enrolled_changed || idx.snapshot.is_none();
        if !idx.primed {
            // One full pass; resources locked right now are read below.
            let mut seen = Vec::with_capacity(self.workspaces.len());
            let busy = self.workspaces.visit(|k, st| seen.push((k.to_string(), st.data.clone(), st.owner.clone())));
            // Parsed outside the home's map lock.
            idx.map = seen
                .into_iter()
                .filter_map(|(k, data, owner)| {
                    let s = Self::summarise(&k, &data, &owner)?;
                    Some((k, (data, s)))
                })
                .collect();
            idx.primed = true;
            todo.extend(busy);
        }
        todo.extend(changed);
        for k in todo {
            let r = self.workspaces.read(&k, FaultType::RpResourceUnknown, |st| Ok((st.data.clone(), st.owner.clone()))).await;
            let Ok((data, owner)) = r else {
                moved |= idx.map.remove(&k).is_some();
                continue;
            };
            if idx.map.get(&k).is_some_and(|(d, _)| Arc::ptr_eq(d, &data)) {
                continue; // a change of properties only: the same description and state
            }
            moved = true;
            match Self::summarise(&k, &data, &owner) {
                Some(s) => drop(idx.map.insert(k, (data, s))),
                None => drop(idx.map.remove(&k)),
            }
        }
        if let (false, Some(s)) = (moved, &idx.snapshot) {
            return s.clone();
        }
        let mut all: Vec<Arc<Summary>> = idx.map.values().map(|(_, s)| s.clone()).collect();
        {
            // Workspaces of other Manager hosts; one this host adopted shows once, as its own.
            let enrolled = self.enrolled.lock().unwrap();
            all.extend(enrolled.values().filter(|s| !idx.map.contains_key(&s.key)).cloned());
        }
        let snap = Arc::new(all);
        idx.snapshot = Some(snap.clone());
        snap
    }
}

/// Where this host's Manager takes checkout locks and keeps its workspaces catalogued: this
/// process's own Repository (the site's tables), or another vwsd's RepositoryService over SOAP
/// (`repository.url`).
pub enum Site {
    Local,
    Remote(Box<RemoteSite>),
}

/// A remote site Repository: its address, the client that calls it (GSI transport with this
/// host's credential when the address is `https://`), and how long a call may take.
pub struct RemoteSite {
    pub url: String,
    client: Arc<crate::client::Client>,
    timeout: std::time::Duration,
    /// The Manager address this host checks out as (set at start from `server.public_url` or
    /// the listener's address; the first deploy's address until then).
    pub manager: std::sync::OnceLock<String>,
}

impl RemoteSite {
    pub fn new(url: &str, client: crate::client::Client, timeout: std::time::Duration) -> RemoteSite {
        RemoteSite { url: url.to_string(), client: Arc::new(client), timeout, manager: std::sync::OnceLock::new() }
    }

    /// The site's image route (`GET <site>/wsrf/images/<sha256>`) as this host's engine fetches
    /// images from it, over the same client (GSI with the host credential for `https://`).
    pub fn images(&self) -> SiteImages {
        let base = match self.url.find("/wsrf/services/") {
            Some(i) => &self.url[..i],
            None => self.url.trim_end_matches('/'),
        };
        SiteImages {
            base: format!("{base}/wsrf/images/"),
            site: self.url.clone(),
            client: self.client.clone(),
            timeout: self.timeout,
        }
    }

    /// The site Repository's resource EPR.
    fn epr(&self) -> crate::soap::epr::Epr {
        crate::soap::epr::Epr::with_key(self.url.clone(), key_name(), SITE_KEY)
    }

    /// Sends `msg` to the site Repository; a fault it answers comes back as the same fault
    /// type and text, an unreachable or silent Repository as a fault naming it.
    async fn invoke<R: crate::soap::message::Request>(&self, msg: &R) -> Result<R::Response, BaseFault> {
        use crate::client::ClientError;
        let epr = self.epr();
        let unreachable = |why: String| {
            BaseFault::new(
                FaultType::RepositoryUnavailable,
                format!(
                    "the site Repository at {} cannot be reached ({why}); no checkout lock can be taken, catalogue entry made or image registered until it answers",
                    self.url
                ),
            )
            .code(self.url.clone())
        };
        match tokio::time::timeout(self.timeout, self.client.invoke(&epr, msg)).await {
            Err(_) => Err(unreachable(format!("no answer within {} s", self.timeout.as_secs()))),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(ClientError::Fault { fault, kind })) => {
                let kind = kind.as_deref().and_then(fault_type_named).unwrap_or(FaultType::Internal);
                Err(BaseFault::new(kind, format!("site Repository {}: {fault}", self.url)))
            }
            Ok(Err(e @ (ClientError::Transport { .. } | ClientError::Usage(_)))) => Err(unreachable(e.to_string())),
            Ok(Err(e)) => Err(BaseFault::internal(format!("site Repository {}: {e}", self.url))),
        }
    }
}

/// Images fetched by digest from a remote site Repository's store (see [`RemoteSite::images`]).
pub struct SiteImages {
    /// `scheme://host:port/wsrf/images/`.
    pub base: String,
    site: String,
    client: Arc<crate::client::Client>,
    /// Longest wait for the answer's head and between two pieces of its body.
    timeout: std::time::Duration,
}

impl crate::host::images::ImageSource for SiteImages {
    fn origin(&self) -> String {
        self.base.clone()
    }

    fn fetch<'a>(&'a self, sha256: &'a str) -> crate::host::images::FetchFuture<'a> {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let url = format!("{}{sha256}", self.base);
            let unreachable = |why: String| format!("the site Repository at {} cannot be reached ({why})", self.site);
            let resp = match tokio::time::timeout(self.timeout, self.client.get(&url)).await {
                Err(_) => return Err(unreachable(format!("no answer within {} s", self.timeout.as_secs()))),
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Ok(Ok(r)) => r,
            };
            let status = resp.status().as_u16();
            if status == 404 {
                return Ok(None);
            }
            if status != 200 {
                let body = tokio::time::timeout(self.timeout, resp.into_body().collect()).await;
                let text = body.ok().and_then(|b| b.ok()).map(|b| b.to_bytes()).unwrap_or_default();
                let text = String::from_utf8_lossy(&text[..text.len().min(300)]).trim().to_string();
                return Err(format!("the site Repository refused image {sha256}: HTTP {status}: {text}"));
            }
            let total = resp
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let (timeout, mut body) = (self.timeout, resp.into_body());
            tokio::spawn(async move {
                loop {
                    let chunk = match tokio::time::timeout(timeout, body.frame()).await {
                        Err(_) => Err(format!("stalled for more than {} s", timeout.as_secs())),
                        Ok(None) => return,
                        Ok(Some(Err(e))) => Err(e.to_string()),
                        Ok(Some(Ok(f))) => match f.into_data() {
                            Ok(d) => Ok(d),
                            Err(_) => continue,
                        },
                    };
                    let end = chunk.is_err();
                    if tx.send(chunk).await.is_err() || end {
                        return;
                    }
                }
            });
            Ok(Some((total, rx)))
        })
    }
}

/// The fault type of a fault element's local name (as a remote Repository answered it).
fn fault_type_named(local: &str) -> Option<FaultType> {
    use FaultType::*;
    [
        RpResourceUnknown,
        InvalidRequest,
        InvalidDescription,
        PolicyRejected,
        AuthorizationFailed,
        InvalidState,
        WorkspaceLocked,
        WorkspaceCorrupted,
        QuotaExceeded,
        DigestMismatch,
        UnsupportedScheme,
        RefineOutOfRange,
        RepositoryUnavailable,
        Internal,
    ]
    .into_iter()
    .find(|k| k.qname().1 == local)
}

/// A workspace of `workspaces` as the site catalogue records it (EPR, owner, state,
/// termination time, description), with its owner.
async fn record_of(workspaces: &Home, key: &str) -> Result<(Enrol, Owner), BaseFault> {
    let (epr, owner, data, termination) = workspaces
        .read(key, FaultType::RpResourceUnknown, |st| {
            let epr = st.get(&workspaces.rtype, &QName::new(VWS, "EPR")).map(|v| v.xml.to_string()).unwrap_or_default();
            Ok((epr, st.owner.clone(), WorkspaceData::of(st)?, st.termination_ms))
        })
        .await?;
    let epr_el = crate::soap::xml::parse(&epr, &Default::default()).map_err(BaseFault::internal)?;
    let epr = crate::soap::epr::Epr::from_element(&epr_el).map_err(BaseFault::internal)?;
    let description = crate::soap::xml::parse(&description_xml(&data.description, true, true), &Default::default())
        .map_err(BaseFault::internal)?;
    let msg = Enrol {
        epr,
        owner: owner.dn.clone().unwrap_or_default(),
        state: data.state.as_str().to_string(),
        termination: termination.map(time::format_ms),
        description,
    };
    Ok((msg, owner))
}

/// The checkout lock as the Manager's deploy and undeploy use it, and the site catalogue the
/// Factory enrols this host's workspaces in: in-process ([`Site::Local`], the site's tables)
/// or at a remote site Repository ([`Site::Remote`], over SOAP).
pub struct Checkouts {
    pub tables: Arc<RepoTables>,
    pub lease_ms: i64,
    /// Manager addresses this process's Manager checked out as (since it started).
    pub local: Mutex<HashSet<String>>,
    pub site: Site,
    /// gc takes it exclusively; the Factory, clone and refine share it while they create, so gc
    /// never sees a half-made reference.
    pub gc_lock: tokio::sync::RwLock<()>,
    /// With a remote site: workspaces another host keeps that this host adopted for a deploy
    /// here (never enrolled from here: the site catalogues them where they are kept). Filled at
    /// start from the stored workspaces' `kept_by`.
    pub adopted: Mutex<HashSet<String>>,
}

impl Checkouts {
    pub fn new(tables: Arc<RepoTables>, lease_ms: i64) -> Checkouts {
        Checkouts::with_site(tables, lease_ms, Site::Local)
    }

    pub fn with_site(tables: Arc<RepoTables>, lease_ms: i64, site: Site) -> Checkouts {
        Checkouts {
            tables,
            lease_ms,
            local: Mutex::new(HashSet::new()),
            site,
            gc_lock: tokio::sync::RwLock::new(()),
            adopted: Mutex::new(HashSet::new()),
        }
    }

    /// The remote site, when there is one.
    pub fn remote(&self) -> Option<&RemoteSite> {
        match &self.site {
            Site::Remote(r) => Some(r.as_ref()),
            Site::Local => None,
        }
    }
}
/// The fault for a held lock.
fn locked_fault(l: &Lock) -> BaseFault {
    BaseFault::new(
        FaultType::WorkspaceLocked,
        format!(
            "workspace '{}' is checked out by {} to Manager {} since {} (lease until {}); wait for its undeploy, or ask a site administrator to break the lock (vws repo break-lock)",
            l.key,
            l.holder,
            l.manager,
            time::format_ms(l.since_ms),
            time::format_ms(l.until_ms)
        ),
    )
    .code(l.holder.clone())
}

fn repo_fault(e: RepoError) -> BaseFault {
    match e {
        RepoError::Locked(l) => locked_fault(&l),
        RepoError::NotLocked(_) | RepoError::NotHolder { .. } => BaseFault::new(FaultType::InvalidState, e.to_string()),
        RepoError::Quota { ref scope, .. } => BaseFault::new(
            FaultType::QuotaExceeded,
            format!("{e}; remove unreferenced images (vws repo gc) or ask the site to raise the quota"),
        )
        .code(scope.clone()),
        e => BaseFault::internal(e),
    }
}

fn image_fault(e: ImageError) -> BaseFault {
    match e {
        ImageError::Repo(r) => repo_fault(r),
        ImageError::DigestMismatch { .. } => {
            BaseFault::new(FaultType::DigestMismatch, format!("{e}; check the source or the digest given"))
        }
        ImageError::UnsupportedScheme(ref s) => BaseFault::new(FaultType::UnsupportedScheme, e.to_string()).code(s.clone()),
        ImageError::Unknown(_) => BaseFault::new(FaultType::InvalidRequest, e.to_string()),
        ImageError::Refused(_) | ImageError::Transfer(_) => BaseFault::new(FaultType::InvalidRequest, e.to_string()),
        ImageError::Io { .. } => BaseFault::internal(e),
    }
}

impl Checkouts {
    /// Checks `key` out to `manager` for `holder`. The Manager that already holds it (a deploy
    /// after a failed staging) takes it again.
    pub async fn checkout(&self, key: &str, holder: &str, manager: &str, reentrant: bool) -> Result<(), BaseFault> {
        if let Site::Remote(r) = &self.site {
            let manager = r.manager.get_or_init(|| manager.to_string()).clone();
            let mut req = LockRequest::new(LockOp::Checkout, key);
            req.manager = Some(manager.clone());
            req.lease_secs = Some((self.lease_ms / 1000).max(1) as u64);
            req.holder = Some(holder.to_string());
            return match r.invoke(&req).await {
                Ok(_) => Ok(()),
                Err(e) if reentrant && e.kind == FaultType::WorkspaceLocked => {
                    // Held already: by this Manager (a renewal takes it again) or by another.
                    req.op = LockOp::Renew;
                    r.invoke(&req).await.map(drop).map_err(|_| e)
                }
                Err(e) => Err(e),
            };
        }
        if reentrant {
            self.local.lock().unwrap().insert(manager.to_string());
        }
        let (t, k, h, m, lease) = (self.tables.clone(), key.to_string(), holder.to_string(), manager.to_string(), self.lease_ms);
        let r = tokio::task::spawn_blocking(move || {
            let now = time::now_ms();
            match t.checkout(&k, &h, &m, now, lease) {
                Err(RepoError::Locked(l)) if reentrant && l.manager == m => t.renew(&k, &m, now, lease).map(|_| None),
                r => r,
            }
        })
        .await
        .map_err(BaseFault::internal)?;
        match r {
            Ok(Some(broken)) => {
                tracing::warn!(key, holder = broken.holder, manager = broken.manager, "lapsed checkout lease broken");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(repo_fault(e)),
        }
    }

    /// Releases `key` (quietly when it is not checked out; a remote Repository that cannot be
    /// reached lets the lease lapse, logged).
    pub async fn release(&self, key: &str) {
        if let Site::Remote(r) = &self.site {
            let mut req = LockRequest::new(LockOp::Release, key);
            req.manager = r.manager.get().cloned();
            if let Err(e) = r.invoke(&req).await {
                if e.kind != FaultType::InvalidState {
                    tracing::warn!(key, "checkout not released at the site Repository (its lease will lapse): {}", e.description);
                }
            }
            return;
        }
        let (t, k) = (self.tables.clone(), key.to_string());
        let _ = tokio::task::spawn_blocking(move || t.release(&k, None)).await;
    }

    /// Puts this host's workspace `key` in the remote site's catalogue (or updates its entry);
    /// nothing to do in-process, where the catalogue is the workspace home itself.
    pub async fn enrol(&self, workspaces: &Home, key: &str) -> Result<(), BaseFault> {
        let Site::Remote(r) = &self.site else { return Ok(()) };
        if self.adopted.lock().unwrap().contains(key) {
            // Kept by another host; the site catalogues it where it is kept.
            return Ok(());
        }
        let (msg, _) = record_of(workspaces, key).await?;
        r.invoke(&msg).await.map(drop)
    }

    /// Takes `key` out of the remote site's catalogue (logged when it cannot).
    pub async fn withdraw(&self, key: &str) {
        let Site::Remote(r) = &self.site else { return };
        if self.adopted.lock().unwrap().remove(key) {
            // Adopted here, kept elsewhere: its entry is not this host's to withdraw.
            return;
        }
        let msg = Withdraw { target: Some(Target::Key(key.to_string())) };
        if let Err(e) = r.invoke(&msg).await {
            tracing::warn!(key, "workspace not withdrawn from the site Repository: {}", e.description);
        }
    }

    /// The holder's renewal: renews the leases of workspaces deployed here, releases this
    /// Manager's locks of workspaces back to Unstaged (a failed staging), forgets those of
    /// workspaces that are gone; other holders' locks of undeployed workspaces are left to
    /// lapse. With a remote site: renews there the lease of every workspace deployed here.
    pub async fn renew_local(&self, workspaces: &Home, staging: impl Fn(&str) -> bool) {
        if let Site::Remote(r) = &self.site {
            let Some(manager) = r.manager.get().cloned() else { return };
            let mut deployed = Vec::new();
            let busy = workspaces.visit(|k, st| {
                let unstaged = serde_json::from_str::<WorkspaceData>(&st.data).is_ok_and(|d| d.state == State::Unstaged);
                if !unstaged || staging(k) {
                    deployed.push(k.to_string());
                }
            });
            deployed.extend(busy);
            for k in deployed {
                let mut req = LockRequest::new(LockOp::Renew, &k);
                req.manager = Some(manager.clone());
                req.lease_secs = Some((self.lease_ms / 1000).max(1) as u64);
                if let Err(e) = r.invoke(&req).await {
                    tracing::debug!(key = k, "lease not renewed at the site Repository: {}", e.description);
                }
            }
            return;
        }
        let t = self.tables.clone();
        let Ok(Ok(locks)) = tokio::task::spawn_blocking(move || t.locks()).await else { return };
        for l in locks {
            let st = workspaces.read(&l.key, FaultType::RpResourceUnknown, |st| Ok(WorkspaceData::of(st)?.state)).await;
            let t = self.tables.clone();
            let lease = self.lease_ms;
            let mine = self.local.lock().unwrap().contains(&l.manager);
            let unstaged = matches!(st, Ok(State::Unstaged)) && !staging(&l.key);
            let gone = st.is_err();
            if unstaged && !mine {
                continue;
            }
            // A workspace another host keeps (enrolled) is not gone because this home lacks it.
            let enrolled = {
                let (t, k) = (self.tables.clone(), l.key.clone());
                gone && matches!(tokio::task::spawn_blocking(move || t.enrolled(&k)).await, Ok(Ok(Some(_))))
            };
            if enrolled {
                continue;
            }
            let _ = tokio::task::spawn_blocking(move || {
                if gone {
                    t.forget(&l.key).map(drop)
                } else if unstaged {
                    t.release(&l.key, None).map(drop)
                } else {
                    t.renew(&l.key, &l.manager, time::now_ms(), lease).map(drop)
                }
            })
            .await;
        }
    }
}
/// The Repository port type.
pub struct RepositoryService {
    pub shared: Arc<Shared>,
    pub policy: Policy,
    /// The Repository's own resource (the singleton).
    pub home: Arc<Home>,
    pub catalogue: Catalogue,
    pub checkouts: Arc<Checkouts>,
    pub images: Arc<ImageStore>,
    pub host: Arc<Host>,
    pub settings: RepositorySettings,
    /// Set when the catalogue, locks or images changed since the property document was made.
    dirty: Arc<AtomicBool>,
}

impl RepositoryService {
    /// The Repository over `workspaces`, creating its singleton resource when missing. A
    /// destroyed workspace's lock goes with it.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        shared: Arc<Shared>,
        policy: Policy,
        home: Arc<Home>,
        workspaces: Arc<Home>,
        checkouts: Arc<Checkouts>,
        images: Arc<ImageStore>,
        host: Arc<Host>,
        settings: RepositorySettings,
    ) -> Result<Arc<RepositoryService>, String> {
        if home.read(SITE_KEY, FaultType::RpResourceUnknown, |_| Ok(())).await.is_err() {
            let mut st = ResourceState::new(&home.rtype, Owner::default(), None);
            st.key = SITE_KEY.into();
            home.create(st).await.map_err(|e| format!("creating the site Repository resource: {e}"))?;
        }
        let dirty = Arc::new(AtomicBool::new(true));
        {
            let d = dirty.clone();
            workspaces.on_change(Box::new(move |_| d.store(true, Ordering::Relaxed)));
            let (d, t) = (dirty.clone(), checkouts.tables.clone());
            workspaces.on_destroy(Box::new(move |key| {
                d.store(true, Ordering::Relaxed);
                let (t, key) = (t.clone(), key.to_string());
                let forget = move || {
                    if let Err(e) = t.forget(&key) {
                        tracing::error!(key, error = %e, "destroyed workspace: its checkout lock not removed");
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => drop(rt.spawn_blocking(forget)),
                    Err(_) => forget(),
                }
            }));
        }
        if checkouts.remote().is_some() {
            // Workspaces adopted here before a restart: still kept by another host.
            let mut adopted = checkouts.adopted.lock().unwrap();
            workspaces.visit(|k, st| {
                if WorkspaceData::of(st).is_ok_and(|d| d.kept_by.is_some()) {
                    adopted.insert(k.to_string());
                }
            });
        }
        let catalogue = Catalogue::new(workspaces);
        let t = checkouts.tables.clone();
        for e in tokio::task::spawn_blocking(move || t.enrolled_all())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("loading the catalogue of other Manager hosts: {e}"))?
        {
            catalogue.set_enrolled(&e);
        }
        Ok(Arc::new(RepositoryService { shared, policy, home, catalogue, checkouts, images, host, settings, dirty }))
    }

    fn workspace_url(req: &SoapRequest) -> String {
        format!("{}/wsrf/services/{}", req.base_url, workspace::NAME)
    }

    pub async fn dispatch(&self, req: &SoapRequest) -> Result<SoapReply, SoapFault> {
        let p = req.env.payload();
        let r = match (p.name.ns.as_str(), p.name.local.as_str()) {
            (VWS, "list" | "select") => self.select(req).await,
            (VWS, "clone") => self.clone_op(req).await,
            (VWS, "refine") => self.refine(req).await,
            (VWS, "checkout" | "renew" | "release" | "breakLock") => self.lock_op(req).await,
            (VWS, "enrol") => self.enrol(req).await,
            (VWS, "withdraw") => self.withdraw(req).await,
            (VWS, "describe") => self.describe(req).await,
            (VWS, "register") => self.register(req).await,
            (VWS, "images") => self.list_images(req).await,
            (VWS, "gc") => self.gc_op(req).await,
            (ns::WSRP, _) => self.wsrp(req).await,
            _ => Err(unknown_operation(req)),
        };
        r.map_err(SoapFault::from)
    }

    /// Get / GetMultiple / QueryResourceProperties on the site's document (any authenticated
    /// caller may read the site's catalogue).
    async fn wsrp(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let key = self.home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        self.shared.authorize(&req.caller, Action::Read, None).or_else(|e| {
            // Without a `manage` entry, any caller the policy lets create may read the catalogue.
            self.shared.authorize(&req.caller, Action::Create, None).map_err(|_| e)
        })?;
        if key == SITE_KEY {
            self.refresh().await?;
        }
        let p = req.env.payload();
        let guard = |_: &ResourceState, a: crate::wsrf::Access| {
            if a == crate::wsrf::Access::Read {
                Ok(())
            } else {
                Err(BaseFault::new(FaultType::UnableToModifyResourceProperty, "the Repository's properties are read-only"))
            }
        };
        match p.name.local.as_str() {
            "GetResourceProperty" => {
                let r = m::GetResourceProperty::decode(p)?;
                Ok(answer(&r, &properties::get_property(&self.home, &key, &r, guard).await?))
            }
            "GetMultipleResourceProperties" => {
                let r = m::GetMultipleResourceProperties::decode(p)?;
                Ok(answer(&r, &properties::get_multiple_properties(&self.home, &key, &r, guard).await?))
            }
            "QueryResourceProperties" => {
                let r = m::QueryResourceProperties::decode(p)?;
                Ok(answer(&r, &properties::query_properties(&self.home, &key, req.caller.name(), &r, guard).await?))
            }
            _ => Err(unknown_operation(req)),
        }
    }

    /// Re-makes the property document when something changed.
    pub async fn refresh(&self) -> Result<(), BaseFault> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut all: Vec<Arc<Summary>> = self.catalogue.summaries().await.to_vec();
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &all {
            *by_state.entry(s.state.as_str()).or_default() += 1;
        }
        let mut w = XmlWriter::with_capacity(256);
        w.start("w:workspaces", &[("xmlns:w", VWS), ("total", &all.len().to_string())]);
        for (st, n) in &by_state {
            w.empty("w:state", &[("name", st), ("count", &n.to_string())]);
        }
        w.end("w:workspaces");
        let counts = w.into_string();
        let (t, q) = (self.checkouts.tables.clone(), self.images.quotas);
        let (imgs, locks) = tokio::task::spawn_blocking(move || Ok::<_, RepoError>((t.images()?, t.locks()?)))
            .await
            .map_err(BaseFault::internal)?
            .map_err(repo_fault)?;
        let bytes: u64 = imgs.iter().map(|i| i.size).sum();
        let (count, bytes) = (imgs.len().to_string(), bytes.to_string());
        let quotas = [("quota", q.site_bytes), ("ownerQuota", q.owner_bytes)].map(|(n, b)| (n, b.map(|b| b.to_string())));
        let mut a = vec![("xmlns:w", VWS), ("count", count.as_str()), ("bytes", bytes.as_str())];
        a.extend(quotas.iter().filter_map(|(n, b)| Some((*n, b.as_deref()?))));
        let mut w = XmlWriter::with_capacity(160);
        w.empty("w:imageStore", &a);
        let images = w.into_string();
        let locks: Vec<String> = locks.iter().map(lock_xml).collect();
        let summaries: Vec<String> = all.iter().map(|s| s.xml()).collect();
        let rt = self.home.rtype.clone();
        self.home
            .update(SITE_KEY, FaultType::RpResourceUnknown, |st| {
                st.set(&rt, VWS, "workspaces", vec![counts]);
                st.set(&rt, VWS, "entry", summaries);
                st.set(&rt, VWS, "imageStore", vec![images]);
                st.set(&rt, VWS, "lock", locks);
                Ok(())
            })
            .await
    }

    /// A catalogued workspace's EPR: where the host that keeps it answers.
    fn epr_of(&self, req: &SoapRequest, s: &Summary) -> Epr {
        match &s.epr {
            Some(e) => e.clone(),
            None => self.catalogue.workspaces.epr(&Self::workspace_url(req), &s.key),
        }
    }

    /// list / select: EPRs and one-line summaries of the workspaces the caller may read.
    pub async fn select(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let r = Select::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let c = &r.constraints;
        for (range, field) in [(c.ram, "select/ram"), (c.disk, "select/disk")] {
            if let Some(x) = range {
                check_range(x, field)?;
            }
        }
        let found = self.find(&req.caller, c).await;
        let matches = found.iter().map(|s| Match { key: s.key.clone(), summary: s.line(), epr: self.epr_of(req, s) }).collect();
        Ok(answer(&r, &Matches { list: r.list, matches }))
    }

    /// The summaries matching `c` that `caller` may read.
    pub async fn find(&self, caller: &crate::security::Caller, c: &Constraints) -> Vec<Arc<Summary>> {
        let all = self.catalogue.summaries().await;
        let mut out: Vec<Arc<Summary>> = all
            .iter()
            .filter(|s| c.matches(s) && self.shared.auth.authorize(caller, Action::Read, Some(&s.owner)).is_ok())
            .cloned()
            .collect();
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Reads a workspace for a Repository operation (authorised for `action`).
    async fn source(&self, req: &SoapRequest, key: &str, action: Action) -> Result<(WorkspaceData, Owner), BaseFault> {
        self.catalogue
            .workspaces
            .read(key, FaultType::RpResourceUnknown, |st| {
                self.shared.authorize(&req.caller, action, Some(&st.owner))?;
                Ok((WorkspaceData::of(st)?, st.owner.clone()))
            })
            .await
    }

    /// Creates a workspace with `description` for the caller (the Factory's way); its EPR.
    async fn create_from(&self, req: &SoapRequest, description: Description, what: &str) -> Result<Epr, BaseFault> {
        let lifetime = self.policy.admit(&description).map_err(|r| {
            BaseFault::new(FaultType::PolicyRejected, format!("rejected by site policy rule '{}': {}", r.rule, r.message))
                .code(r.rule)
        })?;
        let home = &self.catalogue.workspaces;
        let key = Home::new_key();
        let epr = home.epr(&Self::workspace_url(req), &key);
        let epr_xml = epr.to_xml("w:EPR", &[("xmlns:w", VWS), WSA_DECL]);
        let st = workspace::new_resource(&home.rtype, key, epr_xml, req.caller.as_owner(), description, lifetime);
        let key = home.create(st).await?;
        tracing::info!(caller = req.caller.name(), key, what, "workspace created by the Repository");
        Ok(epr)
    }

    /// clone: a new workspace (new key, the caller's) with the description copied; its images
    /// are the same (by URL and digest), never changed underneath the original.
    pub async fn clone_op(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let r = CloneRequest::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let key = self.key_of(&r.target, "clone")?;
        let _shared = self.checkouts.gc_lock.read().await;
        let (data, owner) = self.source(req, &key, Action::Read).await?;
        if Summary::of(&key, &owner, &data).corrupted() {
            return Err(BaseFault::new(
                FaultType::WorkspaceCorrupted,
                format!(
                    "workspace '{key}' is corrupted ({}): its images may be damaged, so it is not cloned; undeploy it or clone a sound workspace",
                    data.state.as_str()
                ),
            )
            .code(key));
        }
        let epr = self.create_from(req, data.description, "clone").await?;
        Ok(answer(&r, &NewWorkspace { refined: false, source: key, epr }))
    }

    /// refine: a new workspace whose ranges lie within the original's (`<ram>`, `<cpu>`,
    /// `<disk name>`) and whose `<software>` / `<capability>` replace the original's; the result
    /// is validated as a description.
    pub async fn refine(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let r = Refine::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let key = self.key_of(&r.target, "refine")?;
        let _shared = self.checkouts.gc_lock.read().await;
        let (data, owner) = self.source(req, &key, Action::Read).await?;
        if Summary::of(&key, &owner, &data).corrupted() {
            return Err(BaseFault::new(
                FaultType::WorkspaceCorrupted,
                format!("workspace '{key}' is corrupted: it is not refined"),
            )
            .code(key));
        }
        let d = refine_description(&data.description, &r)?;
        let epr = self.create_from(req, d, "refine").await?;
        Ok(answer(&r, &NewWorkspace { refined: true, source: key, epr }))
    }

    /// The key a lock / withdraw request names.
    fn key_of(&self, t: &Option<Target>, op: &str) -> Result<String, BaseFault> {
        match t {
            Some(Target::Key(k)) => Ok(k.clone()),
            Some(Target::Epr(e)) => e
                .properties
                .iter()
                .find(|(q, _)| *q == workspace::key_name())
                .map(|(_, v)| v.clone())
                .ok_or_else(|| BaseFault::new(FaultType::InvalidRequest, format!("{op}: the EPR carries no workspace key"))),
            None => Err(BaseFault::new(
                FaultType::InvalidRequest,
                format!("{op} needs <workspace>KEY</workspace> or the workspace's wsa:EndpointReference"),
            )),
        }
    }

    /// Authorises a lock operation on `key` and says who holds it: a workspace of this host's
    /// home by its owner's rights (holder: the caller); one another Manager host enrolled by
    /// that host (holder: the user it names in `<holder>`) or its owner.
    /// The catalogue entry another Manager host enrolled for `key` (ResourceUnknown if none).
    async fn enrolled_entry(&self, key: &str) -> Result<Enrolled, BaseFault> {
        let (t, k) = (self.checkouts.tables.clone(), key.to_string());
        tokio::task::spawn_blocking(move || t.enrolled(&k))
            .await
            .map_err(BaseFault::internal)?
            .map_err(repo_fault)?
            .ok_or_else(|| BaseFault::new(FaultType::RpResourceUnknown, format!("no workspace '{key}' in the site's catalogue")))
    }

    async fn lock_target(&self, req: &SoapRequest, key: &str, holder: Option<&str>) -> Result<String, BaseFault> {
        if self.catalogue.workspaces.contains(key) {
            self.source(req, key, Action::Deploy).await?;
            return Ok(req.caller.name().to_string());
        }
        let e = self.enrolled_entry(key).await?;
        if e.enrolled_by == req.caller.name() {
            return Ok(holder.unwrap_or(req.caller.name()).to_string());
        }
        let owner = Owner { dn: Some(e.owner.clone()).filter(|o| !o.is_empty()), ..Default::default() };
        self.shared.authorize(&req.caller, Action::Deploy, Some(&owner))?;
        Ok(req.caller.name().to_string())
    }

    fn lock_info(l: &Lock) -> LockInfo {
        LockInfo {
            workspace: l.key.clone(),
            holder: l.holder.clone(),
            manager: l.manager.clone(),
            since: time::format_ms(l.since_ms),
            until: time::format_ms(l.until_ms),
        }
    }

    /// checkout / renew / release: the lock of a workspace, for the Manager the request names
    /// (default: this host's WorkspaceService).
    pub async fn lock_op(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let r = LockRequest::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        if r.op == LockOp::BreakLock {
            return self.break_lock(req, &r).await;
        }
        let key = self.key_of(&r.target, r.op.name())?;
        let holder = self.lock_target(req, &key, r.holder.as_deref()).await?;
        let lease = r.lease_secs.map(|s| s as i64 * 1000).unwrap_or(self.checkouts.lease_ms);
        let manager = r.manager.clone().unwrap_or_else(|| Self::workspace_url(req));
        let t = self.checkouts.tables.clone();
        let lock = match r.op {
            LockOp::Checkout => {
                let c = Checkouts::new(t.clone(), lease);
                c.checkout(&key, &holder, &manager, false).await.inspect_err(|e| {
                    tracing::info!(caller = req.caller.name(), key, "checkout refused: {}", e.description);
                })?;
                tracing::info!(caller = req.caller.name(), key, holder, manager, "workspace checked out");
                let k = key.clone();
                tokio::task::spawn_blocking(move || t.lock(&k)).await.map_err(BaseFault::internal)?.map_err(repo_fault)?
            }
            LockOp::Renew => {
                let (k, m) = (key.clone(), manager.clone());
                let l = tokio::task::spawn_blocking(move || t.renew(&k, &m, time::now_ms(), lease))
                    .await
                    .map_err(BaseFault::internal)?
                    .map_err(repo_fault)?;
                Some(l)
            }
            LockOp::Release | LockOp::BreakLock => {
                let (k, m) = (key.clone(), manager.clone());
                let l = tokio::task::spawn_blocking(move || t.release(&k, Some(&m)))
                    .await
                    .map_err(BaseFault::internal)?
                    .map_err(repo_fault)?;
                tracing::info!(caller = req.caller.name(), key, holder = l.holder, "checkout released");
                Some(l)
            }
        };
        self.dirty.store(true, Ordering::Relaxed);
        Ok(answer(&r, &LockResponse { op: r.op, lock: lock.as_ref().map(Self::lock_info) }))
    }

    /// breakLock: a site administrator (ACL action `break_lock`) removes anyone's lock; logged.
    async fn break_lock(&self, req: &SoapRequest, r: &LockRequest) -> Result<SoapReply, BaseFault> {
        let key = self.key_of(&r.target, "breakLock")?;
        self.shared.authorize(&req.caller, Action::BreakLock, None)?;
        let (t, k) = (self.checkouts.tables.clone(), key.clone());
        let l =
            tokio::task::spawn_blocking(move || t.release(&k, None)).await.map_err(BaseFault::internal)?.map_err(repo_fault)?;
        self.dirty.store(true, Ordering::Relaxed);
        tracing::warn!(
            caller = req.caller.name(),
            key,
            holder = l.holder,
            manager = l.manager,
            "checkout lock broken by an administrator"
        );
        Ok(answer(r, &LockResponse { op: r.op, lock: Some(Self::lock_info(&l)) }))
    }

    /// enrol: a Manager host using this site Repository puts one of its workspaces in the
    /// catalogue (or updates its entry); the caller (that host) may then lock it for its users.
    pub async fn enrol(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Create, None)?;
        let m = Enrol::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let key = m
            .epr
            .properties
            .iter()
            .find(|(q, _)| *q == workspace::key_name())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| BaseFault::new(FaultType::InvalidRequest, "enrol: the EPR carries no workspace key"))?;
        Description::from_element(&m.description).map_err(|e| {
            BaseFault::new(FaultType::InvalidDescription, format!("enrol: invalid description: {}: {}", e.path, e.message))
                .code(e.path.clone())
        })?;
        if !State::ALL.iter().any(|s| s.as_str() == m.state) {
            return Err(BaseFault::new(FaultType::InvalidRequest, format!("enrol: unknown state '{}'", m.state)));
        }
        if self.catalogue.workspaces.contains(&key) {
            // This host keeps it (another host adopted it for a deploy there): catalogued here already.
            return Ok(answer(&m, &EnrolResponse { workspace: key }));
        }
        let e = Enrolled {
            key: key.clone(),
            epr: m.epr.to_xml("wsa:EndpointReference", &[WSA_DECL]),
            owner: m.owner.clone(),
            enrolled_by: req.caller.name().to_string(),
            state: m.state.clone(),
            description: m.description.to_fragment(),
            termination_ms: m.termination.as_deref().and_then(time::parse_ms),
            updated_ms: time::now_ms(),
        };
        let (t, row) = (self.checkouts.tables.clone(), e.clone());
        tokio::task::spawn_blocking(move || t.enrol(&row)).await.map_err(BaseFault::internal)?.map_err(|err| match err {
            RepoError::NotHolder { holder, .. } => {
                BaseFault::new(FaultType::AuthorizationFailed, format!("enrol: workspace '{key}' is {holder}")).code(key.clone())
            }
            e => repo_fault(e),
        })?;
        self.catalogue.set_enrolled(&e);
        self.dirty.store(true, Ordering::Relaxed);
        tracing::info!(caller = req.caller.name(), key = e.key, state = e.state, "workspace enrolled by a Manager host");
        Ok(answer(&m, &EnrolResponse { workspace: e.key }))
    }

    /// withdraw: the Manager host that enrolled a workspace says it is gone (its lock goes too).
    pub async fn withdraw(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let m = Withdraw::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let key = self.key_of(&m.target, "withdraw")?;
        let (t, k) = (self.checkouts.tables.clone(), key.clone());
        let e = tokio::task::spawn_blocking(move || t.enrolled(&k)).await.map_err(BaseFault::internal)?.map_err(repo_fault)?;
        let Some(e) = e else { return Ok(answer(&m, &WithdrawResponse { removed: false })) };
        if e.enrolled_by != req.caller.name() {
            self.shared.authorize(&req.caller, Action::Admin, None)?;
        }
        let (t, k) = (self.checkouts.tables.clone(), key.clone());
        let removed =
            tokio::task::spawn_blocking(move || t.withdraw(&k)).await.map_err(BaseFault::internal)?.map_err(repo_fault)?;
        self.catalogue.drop_enrolled(&key);
        self.dirty.store(true, Ordering::Relaxed);
        tracing::info!(caller = req.caller.name(), key, "workspace withdrawn from the catalogue");
        Ok(answer(&m, &WithdrawResponse { removed }))
    }

    /// describe: a catalogued workspace's record — one this host keeps, or one another Manager
    /// host enrolled — for a Manager host that adopts it for a deploy there. Readable by whoever
    /// may read the workspace, or create (a Manager host).
    pub async fn describe(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let m = Describe::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let key = self.key_of(&m.target, "describe")?;
        let allowed = |owner: &Owner| {
            self.shared
                .authorize(&req.caller, Action::Read, Some(owner))
                .or_else(|e| self.shared.authorize(&req.caller, Action::Create, None).map_err(|_| e))
        };
        let home = &self.catalogue.workspaces;
        if home.contains(&key) {
            let (record, owner) = record_of(home, &key).await?;
            allowed(&owner)?;
            return Ok(answer(&m, &Described(record)));
        }
        let e = self.enrolled_entry(&key).await?;
        allowed(&Owner { dn: Some(e.owner.clone()).filter(|o| !o.is_empty()), ..Default::default() })?;
        let parse = |x: &str| crate::soap::xml::parse(x, &Default::default()).map_err(BaseFault::internal);
        let record = Enrol {
            epr: Epr::from_element(&parse(&e.epr)?).map_err(BaseFault::internal)?,
            owner: e.owner,
            state: e.state,
            termination: e.termination_ms.map(time::format_ms),
            description: parse(&e.description)?,
        };
        Ok(answer(&m, &Described(record)))
    }

    /// Makes a workspace another Manager host keeps deployable here: a resource of this host's
    /// home with the same key, owner and description. On the site Repository's host: one another
    /// host enrolled; on a Manager host with a remote site: one the site describes (kept by the
    /// site's host or a third host). Ok(false): not catalogued.
    pub async fn adopt(&self, req: &SoapRequest, key: &str) -> Result<bool, BaseFault> {
        let (owner_dn, description, termination_ms, kept_by) = if let Some(site) = self.checkouts.remote() {
            let d = match site.invoke(&Describe { target: Some(Target::Key(key.to_string())) }).await {
                Ok(d) => d.0,
                Err(e) if e.kind == FaultType::RpResourceUnknown => return Ok(false),
                Err(e) => return Err(e),
            };
            (d.owner, d.description.to_fragment(), d.termination.as_deref().and_then(time::parse_ms), d.epr.address)
        } else {
            let (t, k) = (self.checkouts.tables.clone(), key.to_string());
            let Some(e) =
                tokio::task::spawn_blocking(move || t.enrolled(&k)).await.map_err(BaseFault::internal)?.map_err(repo_fault)?
            else {
                return Ok(false);
            };
            (e.owner, e.description, e.termination_ms, e.enrolled_by)
        };
        let owner = Owner { dn: Some(owner_dn).filter(|o| !o.is_empty()), ..Default::default() };
        self.shared.authorize(&req.caller, Action::Deploy, Some(&owner))?;
        let el = crate::soap::xml::parse(&description, &Default::default()).map_err(BaseFault::internal)?;
        let description = Description::from_element(&el).map_err(|x| BaseFault::new(FaultType::InvalidDescription, x.message))?;
        let now = time::now_ms();
        let lifetime = termination_ms.map(|t| ((t - now).max(1000) / 1000) as u64).unwrap_or(86400);
        let home = &self.catalogue.workspaces;
        let epr = home.epr(&Self::workspace_url(req), key);
        let epr_xml = epr.to_xml("w:EPR", &[("xmlns:w", VWS), WSA_DECL]);
        let mut st = workspace::new_resource(&home.rtype, key.to_string(), epr_xml, owner, description, lifetime);
        if self.checkouts.remote().is_some() {
            // Stored with the resource, so a restart still knows it is kept elsewhere.
            let mut data = WorkspaceData::of(&st)?;
            data.kept_by = Some(kept_by.clone());
            data.store(&home.rtype, &mut st);
            // Before the create's change event reaches the enroller.
            self.checkouts.adopted.lock().unwrap().insert(key.to_string());
        }
        match home.create(st).await {
            Ok(_) => {
                tracing::info!(
                    caller = req.caller.name(),
                    key,
                    kept_by,
                    "workspace kept by another host adopted for a deploy here"
                );
                Ok(true)
            }
            // A concurrent deploy adopted it first.
            Err(_) if home.contains(key) => Ok(true),
            Err(x) => {
                self.checkouts.adopted.lock().unwrap().remove(key);
                Err(x)
            }
        }
    }
    /// register: an image into the store by content, from a local path or a URL the stager reads.
    pub async fn register(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Create, None)?;
        let m = Register::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        if let Some(site) = self.checkouts.remote() {
            // One image store: the site's. It reads the source itself (its own file roots).
            let r = site.invoke(&m).await?;
            tracing::info!(
                caller = req.caller.name(),
                source = m.source,
                site = site.url,
                "image registered at the site Repository"
            );
            return Ok(answer(&m, &r));
        }
        let source = m.source.clone();
        let expect = match m.digest.as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(d) => {
                let hex = d.strip_prefix("sha256:").unwrap_or(&d).to_string();
                if !crate::host::images::is_sha256(&hex) {
                    return Err(BaseFault::new(FaultType::InvalidRequest, format!("digest '{d}' is not sha256:<64 hex digits>")));
                }
                Some(hex)
            }
        };
        let url = if source.starts_with('/') { format!("file://{source}") } else { source.clone() };
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("file") => self.host.roots().check(&url).map_err(|e| {
                tracing::warn!(caller = req.caller.name(), url, "registration refused: {e}");
                BaseFault::new(FaultType::PolicyRejected, format!("{e}")).code(e.kind().to_string())
            })?,
            Some("http" | "https" | "gsiftp" | "ftp") => {}
            _ => {
                tracing::info!(caller = req.caller.name(), url, "registration refused: unsupported scheme");
                return Err(image_fault(ImageError::UnsupportedScheme(scheme.unwrap_or(url.clone()))));
            }
        }
        let (images, host, owner) = (self.images.clone(), self.host.clone(), req.caller.name().to_string());
        let r = tokio::task::spawn_blocking(move || images.register_url(host.stager(), &url, &owner, expect.as_deref()))
            .await
            .map_err(BaseFault::internal)?
            .map_err(|e| {
                tracing::warn!(caller = req.caller.name(), source, "registration failed: {e}");
                image_fault(e)
            })?;
        self.dirty.store(true, Ordering::Relaxed);
        tracing::info!(caller = req.caller.name(), sha256 = r.image.sha256, size = r.image.size, new = r.new, "image registered");
        let image = ImageInfo {
            sha256: r.image.sha256,
            size: r.image.size,
            owner: Some(r.image.owner),
            new: Some(r.new),
            ..Default::default()
        };
        Ok(answer(&m, &Images { op: ImagesOp::Register, images: vec![image] }))
    }

    /// How many workspaces reference each image.
    async fn references(&self) -> HashMap<String, usize> {
        let mut refs: HashMap<String, usize> = HashMap::new();
        for s in self.catalogue.summaries().await.iter() {
            for d in &s.digests {
                *refs.entry(d.clone()).or_default() += 1;
            }
        }
        refs
    }

    /// images: the store's images with their reference counts.
    pub async fn list_images(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Create, None)?;
        let m = ImagesRequest::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        if let Some(site) = self.checkouts.remote() {
            return Ok(answer(&m, &site.invoke(&m).await?));
        }
        let refs = self.references().await;
        let t = self.checkouts.tables.clone();
        let imgs = tokio::task::spawn_blocking(move || t.images()).await.map_err(BaseFault::internal)?.map_err(repo_fault)?;
        let images = imgs
            .into_iter()
            .map(|i| ImageInfo {
                refs: Some(refs.get(&i.sha256).copied().unwrap_or(0)),
                created: Some(time::format_ms(i.created_ms)),
                owner: Some(i.owner),
                source: Some(i.source),
                sha256: i.sha256,
                size: i.size,
                new: None,
            })
            .collect();
        Ok(answer(&m, &Images { op: ImagesOp::Images, images }))
    }

    /// Removes unreferenced images older than `grace_ms`; never one a workspace references.
    pub async fn gc(&self, grace_ms: i64) -> Result<Vec<crate::store::repo::ImageRow>, BaseFault> {
        let _exclusive = self.checkouts.gc_lock.write().await;
        let referenced: HashSet<String> = self.references().await.into_keys().collect();
        let images = self.images.clone();
        let removed = tokio::task::spawn_blocking(move || images.gc(&referenced, time::now_ms(), grace_ms))
            .await
            .map_err(BaseFault::internal)?
            .map_err(image_fault)?;
        if !removed.is_empty() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// gc: `<graceSeconds>` (default 0) — administrators only (ACL action `admin`).
    pub async fn gc_op(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Admin, None)?;
        let m = ImagesRequest::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let grace = m.grace_secs.unwrap_or(0).min(i64::MAX as u64 / 1000) as i64;
        let removed = self.gc(grace * 1000).await?;
        tracing::info!(caller = req.caller.name(), removed = removed.len(), "image store gc");
        let images = removed.into_iter().map(|i| ImageInfo { sha256: i.sha256, size: i.size, ..Default::default() }).collect();
        Ok(answer(&m, &Images { op: ImagesOp::Gc, images }))
    }
}

impl super::request::ImageFiles for RepositoryService {
    /// An image of this host's store for `GET /wsrf/images/<sha256>`: any caller who may read
    /// the site's catalogue (ACL `read`, else `create`) may read its images.
    fn image_file(
        &self,
        caller: &crate::security::Caller,
        sha256: &str,
    ) -> Result<std::path::PathBuf, super::request::ImageRefusal> {
        use super::request::ImageRefusal;
        if !crate::host::images::is_sha256(sha256) {
            return Err(ImageRefusal::BadName(format!("'{sha256}' is not a SHA-256 digest (64 lowercase hex digits)")));
        }
        self.shared
            .authorize(caller, Action::Read, None)
            .or_else(|e| self.shared.authorize(caller, Action::Create, None).map_err(|_| e))
            .map_err(|e| ImageRefusal::Denied(e.description))?;
        if !self.images.has(sha256) {
            return Err(ImageRefusal::Unknown(format!("image {sha256} is not in this site's image store")));
        }
        Ok(self.images.path(sha256))
    }
}

fn lock_xml(l: &Lock) -> String {
    RepositoryService::lock_info(l).to_xml()
}

fn out_of_range(field: &str, want: Range, have: Range) -> BaseFault {
    BaseFault::new(
        FaultType::RefineOutOfRange,
        format!(
            "refine: {field} {}-{} is not within the original's {}-{}; ask for a range inside it (or clone and create a new workspace)",
            want.min, want.max, have.min, have.max
        ),
    )
    .code(field)
}

/// A description as a `{vws}virtualWorkspace` element (XML), its software and capability
/// sections when asked for.
pub fn description_xml(d: &Description, software: bool, capability: bool) -> String {
    let mut w = crate::soap::writer::XmlWriter::with_capacity(1024);
    w.start("virtualWorkspace", &[("xmlns", VWS)]).raw(&d.category_xml()).leaf("state", &[], d.state.as_str());
    if let Some(l) = d.life_cycle {
        w.leaf("lifeCycle", &[], &l.to_string());
    }
    for part in [d.hardware_xml(), d.network_xml()].into_iter().flatten() {
        w.raw(&part);
    }
    if software {
        w.raw(&d.software_xml().unwrap_or_default());
    }
    if capability {
        w.raw(&d.capability_xml().unwrap_or_default());
    }
    w.end("virtualWorkspace");
    w.into_string()
}

/// The refined description: narrowed ranges (each inside the original's), software and
/// capability replaced; validated as a whole by the description reader.
pub fn refine_description(orig: &Description, r: &Refine) -> Result<Description, BaseFault> {
    let mut d = orig.clone();
    let narrow = |field: &str, have: Option<Range>, want: Range| {
        let want = check_range(want, field)?;
        match have {
            Some(h) if want.min < h.min || want.max > h.max => Err(out_of_range(field, want, h)),
            _ => Ok(want),
        }
    };
    if let Some(want) = r.ram {
        let hw = d.hardware.get_or_insert_with(Default::default);
        hw.ram = Some(narrow("hardware/ram", hw.ram, want)?);
    }
    if let Some(want) = r.cpu {
        let hw = d.hardware.get_or_insert_with(Default::default);
        hw.cpus = Some(narrow("hardware/cpu", hw.cpus, want)?);
    }
    for (name, want) in &r.disks {
        let field = format!("hardware/disk[@name='{name}']");
        let hw = d.hardware.get_or_insert_with(Default::default);
        let disk = hw.disks.iter_mut().find(|x| x.name == *name).ok_or_else(|| {
            BaseFault::new(FaultType::RefineOutOfRange, format!("refine: the original has no disk named '{name}'"))
                .code(field.clone())
        })?;
        disk.size = Some(narrow(&field, disk.size, *want)?);
    }
    let (software, capability) = (r.software.clone(), r.capability.clone());
    // Validate the whole: the refined sections as the description reader reads them.
    let xml = description_xml(&d, software.is_none(), capability.is_none());
    let mut el = crate::soap::xml::parse(&xml, &Default::default()).map_err(BaseFault::internal)?;
    // Replaced sections go in schema order: software before capability, both last.
    if let Some(mut s) = software {
        s.name = QName::new(VWS, "software");
        let at = el.children.iter().position(|n| matches!(n, crate::soap::xml::Node::Element(c) if c.name.local == "capability"));
        match at {
            Some(i) => el.children.insert(i, crate::soap::xml::Node::Element(s)),
            None => el.children.push(crate::soap::xml::Node::Element(s)),
        }
    }
    if let Some(c) = capability {
        el.children.push(crate::soap::xml::Node::Element(c));
    }
    Description::from_element(&el).map_err(|e| {
        let field = e.path.trim_start_matches("/virtualWorkspace/").to_string();
        BaseFault::new(
            FaultType::InvalidDescription,
            format!("refine: the refined description is invalid: {}: {}", e.path, e.message),
        )
        .code(field)
    })
}

impl PortType for RepositoryService {
    fn name(&self) -> &str {
        NAME
    }
    fn wsdl_template(&self) -> &'static str {
        include_str!("../../wsdl/repository.wsdl")
    }
    fn key_header(&self) -> Option<&QName> {
        Some(&self.home.key_name)
    }
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a> {
        Box::pin(RepositoryService::dispatch(self, req))
    }
}
