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
use crate::soap::epr::WSA_DECL;
use crate::soap::message::Message;
use crate::soap::ns::{self, VWS};
use crate::soap::xml::{escape_attr, Element, QName};
use crate::store::repo::{Lock, RepoError, RepoTables};
use crate::workspace::description::{Category, ImageState};
use crate::workspace::description::{Range, Vmm};
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

fn reply(action: String, payload: String) -> SoapReply {
    SoapReply { action, payload }
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
}

impl Summary {
    fn of(key: &str, owner: &Owner, d: &WorkspaceData) -> Summary {
        let desc = &d.description;
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
            state: d.state,
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

    fn xml(&self) -> String {
        let mut s = format!(
            "<w:entry xmlns:w=\"{VWS}\" key=\"{}\" state=\"{}\" owner=\"{}\" category=\"{}\"",
            escape_attr(&self.key),
            self.state.as_str(),
            escape_attr(self.owner.dn.as_deref().unwrap_or("anonymous")),
            self.category
        );
        if let Some(v) = self.vmm {
            let _ = write!(s, " vmm=\"{}\"", v.as_str());
        }
        if let Some(r) = self.ram {
            let _ = write!(s, " ramMin=\"{}\" ramMax=\"{}\"", r.min, r.max);
        }
        if let Some(r) = self.disk {
            let _ = write!(s, " diskMin=\"{}\" diskMax=\"{}\"", r.min, r.max);
        }
        if let Some(d) = &self.distribution {
            let _ = write!(s, " distribution=\"{}\"", escape_attr(d));
        }
        if let Some(k) = &self.kernel {
            let _ = write!(s, " kernel=\"{}\"", escape_attr(k));
        }
        s.push('>');
        for (n, v) in &self.software {
            let _ = write!(s, "<w:software name=\"{}\"", escape_attr(n));
            if let Some(v) = v {
                let _ = write!(s, " version=\"{}\"", escape_attr(v));
            }
            s.push_str("/>");
        }
        for d in &self.digests {
            let _ = write!(s, "<w:image sha256=\"{d}\"/>");
        }
        s.push_str("</w:entry>");
        s
    }
}

/// What `select` asks for; every given constraint must hold.
#[derive(Clone, Debug, Default)]
pub struct Constraints {
    pub category: Option<String>,
    pub vmm: Option<String>,
    pub ram: Option<Range>,
    pub disk: Option<Range>,
    pub distribution: Option<String>,
    /// A kernel version or its prefix at a component boundary (`6.1` matches `6.1.0-18`).
    pub kernel: Option<String>,
    pub state: Option<String>,
    pub software: Vec<(String, Option<String>)>,
}

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

    /// Reads `<select>`'s children.
    pub fn from_element(p: &Element) -> Result<Constraints, BaseFault> {
        let bad = |m: String| BaseFault::new(FaultType::InvalidRequest, m);
        let mut c = Constraints::default();
        for e in p.elements() {
            if e.name.ns != VWS {
                return Err(bad(format!("select: element {} is not in the workspace namespace", e.name)));
            }
            let text = || Some(e.text().trim().to_string()).filter(|t| !t.is_empty());
            match e.name.local.as_str() {
                "category" => c.category = text(),
                "vmm" => c.vmm = text(),
                "distribution" => c.distribution = text(),
                "kernel" => c.kernel = text(),
                "state" => c.state = text(),
                "ram" => c.ram = Some(range_of(e, "select/ram")?),
                "disk" => c.disk = Some(range_of(e, "select/disk")?),
                "software" => {
                    let n = e.attr("", "name").ok_or_else(|| bad("select/software needs a name attribute".into()))?;
                    c.software.push((n.to_string(), e.attr("", "version").map(str::to_string)));
                }
                other => {
                    return Err(bad(format!(
                        "select: unknown constraint '{other}' (expected category, vmm, ram, disk, distribution, kernel, state, software)"
                    )))
                }
            }
        }
        Ok(c)
    }
}

/// `min`/`max` attributes (either may be left out: 0 / unbounded).
fn range_of(e: &Element, field: &str) -> Result<Range, BaseFault> {
    let num = |a: &str, dflt: u64| -> Result<u64, BaseFault> {
        match e.attr("", a) {
            None => Ok(dflt),
            Some(v) => v.trim().parse().map_err(|_| {
                BaseFault::new(FaultType::InvalidRequest, format!("{field}: {a}='{v}' is not a non-negative integer")).code(field)
            }),
        }
    };
    let r = Range { min: num("min", 0)?, max: num("max", u64::MAX)? };
    if r.min > r.max {
        return Err(BaseFault::new(FaultType::InvalidRequest, format!("{field}: min {} > max {}", r.min, r.max)).code(field));
    }
    Ok(r)
}

/// A summary and the data text it was made from.
type Cached = (Arc<str>, Arc<Summary>);

/// The in-memory catalogue: summaries of the workspace home, re-made only for resources whose
/// data changed since they were last summarised.
pub struct Catalogue {
    pub workspaces: Arc<Home>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Catalogue {
    pub fn new(workspaces: Arc<Home>) -> Catalogue {
        Catalogue { workspaces, cache: Mutex::new(HashMap::new()) }
    }

    /// Every workspace's summary (in no particular order). One synchronous pass over the
    /// home; only resources whose data changed since they were last summarised are parsed.
    pub async fn summaries(&self) -> Vec<Arc<Summary>> {
        let mut out = Vec::with_capacity(self.workspaces.len());
        let mut todo: Vec<(String, Arc<str>, Owner)> = Vec::new();
        let busy = {
            let cache = self.cache.lock().unwrap();
            self.workspaces.visit(|k, st| match cache.get(k) {
                // Data is replaced, never edited in place: the same text is the same summary.
                Some((data, s)) if Arc::ptr_eq(data, &st.data) => out.push(s.clone()),
                _ => todo.push((k.to_string(), st.data.clone(), st.owner.clone())),
            })
        };
        for k in busy {
            if let Ok((data, owner)) =
                self.workspaces.read(&k, FaultType::RpResourceUnknown, |st| Ok((st.data.clone(), st.owner.clone()))).await
            {
                todo.push((k, data, owner));
            }
        }
        let mut cache = self.cache.lock().unwrap();
        for (k, data, owner) in todo {
            let Ok(d) = serde_json::from_str::<WorkspaceData>(&data) else {
                tracing::error!(key = k, "workspace with unreadable data left out of the catalogue");
                continue;
            };
            let s = Arc::new(Summary::of(&k, &owner, &d));
            out.push(s.clone());
            cache.insert(k, (data, s));
        }
        if cache.len() > out.len() {
            let live: HashSet<&str> = out.iter().map(|s| s.key.as_str()).collect();
            cache.retain(|k, _| live.contains(k.as_str()));
        }
        out
    }
}

/// The checkout lock as the Manager's deploy and undeploy use it (in-process: the site's
/// tables; a remote Repository would implement the same over SOAP).
pub struct Checkouts {
    pub tables: Arc<RepoTables>,
    pub lease_ms: i64,
    /// Manager addresses this process's Manager checked out as (since it started).
    pub local: Mutex<HashSet<String>>,
}

impl Checkouts {
    pub fn new(tables: Arc<RepoTables>, lease_ms: i64) -> Checkouts {
        Checkouts { tables, lease_ms, local: Mutex::new(HashSet::new()) }
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

    /// Releases `key` (quietly when it is not checked out).
    pub async fn release(&self, key: &str) {
        let (t, k) = (self.tables.clone(), key.to_string());
        let _ = tokio::task::spawn_blocking(move || t.release(&k, None)).await;
    }

    /// The in-process holder's renewal: renews the leases of workspaces deployed here, releases
    /// this Manager's locks of workspaces back to Unstaged (a failed staging), forgets those of
    /// workspaces that are gone; other holders' locks of undeployed workspaces are left to lapse.
    pub async fn renew_local(&self, workspaces: &Home, staging: impl Fn(&str) -> bool) {
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
    /// gc takes it exclusively; clone and refine share it, so gc never sees a half-made reference.
    gc_lock: tokio::sync::RwLock<()>,
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
        Ok(Arc::new(RepositoryService {
            shared,
            policy,
            home,
            catalogue: Catalogue::new(workspaces),
            checkouts,
            images,
            host,
            settings,
            dirty,
            gc_lock: tokio::sync::RwLock::new(()),
        }))
    }

    fn workspace_url(req: &SoapRequest) -> String {
        format!("{}/wsrf/services/{}", req.base_url, workspace::NAME)
    }

    pub async fn dispatch(&self, req: &SoapRequest) -> Result<SoapReply, SoapFault> {
        let p = req.env.payload();
        let r = match (p.name.ns.as_str(), p.name.local.as_str()) {
            (VWS, "list") => self.select(req, true).await,
            (VWS, "select") => self.select(req, false).await,
            (VWS, "clone") => self.clone_op(req).await,
            (VWS, "refine") => self.refine(req).await,
            (VWS, "checkout") => self.checkout(req).await,
            (VWS, "renew") => self.renew(req).await,
            (VWS, "release") => self.release(req).await,
            (VWS, "breakLock") => self.break_lock(req).await,
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
        let mut all = self.catalogue.summaries().await;
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &all {
            *by_state.entry(s.state.as_str()).or_default() += 1;
        }
        let mut counts = format!("<w:workspaces xmlns:w=\"{VWS}\" total=\"{}\">", all.len());
        for (st, n) in &by_state {
            let _ = write!(counts, "<w:state name=\"{st}\" count=\"{n}\"/>");
        }
        counts.push_str("</w:workspaces>");
        let (t, q) = (self.checkouts.tables.clone(), self.images.quotas);
        let (imgs, locks) = tokio::task::spawn_blocking(move || Ok::<_, RepoError>((t.images()?, t.locks()?)))
            .await
            .map_err(BaseFault::internal)?
            .map_err(repo_fault)?;
        let bytes: u64 = imgs.iter().map(|i| i.size).sum();
        let mut images = format!("<w:imageStore xmlns:w=\"{VWS}\" count=\"{}\" bytes=\"{bytes}\"", imgs.len());
        if let Some(b) = q.site_bytes {
            let _ = write!(images, " quota=\"{b}\"");
        }
        if let Some(b) = q.owner_bytes {
            let _ = write!(images, " ownerQuota=\"{b}\"");
        }
        images.push_str("/>");
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

    /// The workspace key a Repository operation names (`<workspace>KEY</workspace>` or a
    /// `wsa:EndpointReference` of the workspace).
    fn target(&self, req: &SoapRequest) -> Result<String, BaseFault> {
        let p = req.env.payload();
        if let Some(e) = p.child(VWS, "workspace") {
            let k = e.text().trim().to_string();
            if !k.is_empty() {
                return Ok(k);
            }
        }
        if let Some(e) = p.child(ns::WSA, "EndpointReference") {
            let epr = crate::soap::epr::Epr::from_element(e).map_err(|m| BaseFault::new(FaultType::InvalidRequest, m))?;
            if let Some((_, v)) = epr.properties.iter().find(|(q, _)| *q == workspace::key_name()) {
                return Ok(v.clone());
            }
        }
        Err(BaseFault::new(
            FaultType::InvalidRequest,
            format!("{} needs <workspace>KEY</workspace> or the workspace's wsa:EndpointReference", p.name.local),
        ))
    }

    fn epr_xml(&self, req: &SoapRequest, key: &str) -> String {
        self.catalogue.workspaces.epr(&Self::workspace_url(req), key).to_xml("wsa:EndpointReference", &[WSA_DECL])
    }

    /// list / select: EPRs and one-line summaries of the workspaces the caller may read.
    pub async fn select(&self, req: &SoapRequest, all: bool) -> Result<SoapReply, BaseFault> {
        let c = if all { Constraints::default() } else { Constraints::from_element(req.env.payload())? };
        let op = if all { "list" } else { "select" };
        let found = self.find(&req.caller, &c).await;
        let mut out = format!("<{op}Response xmlns=\"{VWS}\" count=\"{}\">", found.len());
        for s in &found {
            let _ = write!(out, "<match key=\"{}\" summary=\"{}\">", escape_attr(&s.key), escape_attr(&s.line()));
            out.push_str(&self.epr_xml(req, &s.key));
            out.push_str("</match>");
        }
        let _ = write!(out, "</{op}Response>");
        Ok(reply(format!("{VWS}/{PORT_TYPE}/{op}Response"), out))
    }

    /// The summaries matching `c` that `caller` may read.
    pub async fn find(&self, caller: &crate::security::Caller, c: &Constraints) -> Vec<Arc<Summary>> {
        let mut out = self.catalogue.summaries().await;
        out.retain(|s| c.matches(s) && self.shared.auth.authorize(caller, Action::Read, Some(&s.owner)).is_ok());
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
    async fn create_from(&self, req: &SoapRequest, description: Description, what: &str) -> Result<String, BaseFault> {
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
        Ok(epr.to_xml("wsa:EndpointReference", &[WSA_DECL]))
    }

    /// clone: a new workspace (new key, the caller's) with the description copied; its images
    /// are the same (by URL and digest), never changed underneath the original.
    pub async fn clone_op(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let key = self.target(req)?;
        let _shared = self.gc_lock.read().await;
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
        Ok(reply(
            format!("{VWS}/{PORT_TYPE}/cloneResponse"),
            format!("<cloneResponse xmlns=\"{VWS}\" source=\"{}\">{epr}</cloneResponse>", escape_attr(&key)),
        ))
    }

    /// refine: a new workspace whose ranges lie within the original's (`<ram>`, `<cpu>`,
    /// `<disk name>`) and whose `<software>` / `<capability>` replace the original's; the result
    /// is validated as a description.
    pub async fn refine(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let key = self.target(req)?;
        let _shared = self.gc_lock.read().await;
        let (data, owner) = self.source(req, &key, Action::Read).await?;
        if Summary::of(&key, &owner, &data).corrupted() {
            return Err(BaseFault::new(
                FaultType::WorkspaceCorrupted,
                format!("workspace '{key}' is corrupted: it is not refined"),
            )
            .code(key));
        }
        let d = refine_description(&data.description, req.env.payload())?;
        let epr = self.create_from(req, d, "refine").await?;
        Ok(reply(
            format!("{VWS}/{PORT_TYPE}/refineResponse"),
            format!("<refineResponse xmlns=\"{VWS}\" source=\"{}\">{epr}</refineResponse>", escape_attr(&key)),
        ))
    }

    fn lease_of(&self, p: &Element) -> Result<i64, BaseFault> {
        match p.child(VWS, "leaseSeconds") {
            None => Ok(self.checkouts.lease_ms),
            Some(e) => {
                e.text().trim().parse::<i64>().ok().filter(|s| *s > 0 && *s <= 86400 * 365).map(|s| s * 1000).ok_or_else(|| {
                    BaseFault::new(FaultType::InvalidRequest, format!("leaseSeconds '{}' is not 1..31536000", e.text().trim()))
                })
            }
        }
    }

    fn manager_of(req: &SoapRequest) -> String {
        req.env
            .payload()
            .child(VWS, "manager")
            .map(|m| m.text().trim().to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| Self::workspace_url(req))
    }

    /// checkout: lock the workspace to a Manager (holder = the caller).
    pub async fn checkout(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let key = self.target(req)?;
        self.source(req, &key, Action::Deploy).await?;
        let lease = self.lease_of(req.env.payload())?;
        let manager = Self::manager_of(req);
        let c = Checkouts::new(self.checkouts.tables.clone(), lease);
        c.checkout(&key, req.caller.name(), &manager, false).await.inspect_err(|e| {
            tracing::info!(caller = req.caller.name(), key, "checkout refused: {}", e.description);
        })?;
        self.dirty.store(true, Ordering::Relaxed);
        tracing::info!(caller = req.caller.name(), key, manager, "workspace checked out");
        self.lock_reply(&key, "checkout").await
    }

    async fn lock_reply(&self, key: &str, op: &str) -> Result<SoapReply, BaseFault> {
        let (t, k) = (self.checkouts.tables.clone(), key.to_string());
        let l = tokio::task::spawn_blocking(move || t.lock(&k)).await.map_err(BaseFault::internal)?.map_err(repo_fault)?;
        let body = l.as_ref().map(lock_xml).unwrap_or_default();
        Ok(reply(format!("{VWS}/{PORT_TYPE}/{op}Response"), format!("<{op}Response xmlns=\"{VWS}\">{body}</{op}Response>")))
    }

    /// renew: extend the lease of a lock the named Manager holds.
    pub async fn renew(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let key = self.target(req)?;
        self.source(req, &key, Action::Deploy).await?;
        let lease = self.lease_of(req.env.payload())?;
        let (t, k, m) = (self.checkouts.tables.clone(), key.clone(), Self::manager_of(req));
        tokio::task::spawn_blocking(move || t.renew(&k, &m, time::now_ms(), lease))
            .await
            .map_err(BaseFault::internal)?
            .map_err(repo_fault)?;
        self.dirty.store(true, Ordering::Relaxed);
        self.lock_reply(&key, "renew").await
    }

    /// release: the holder gives the lock back.
    pub async fn release(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let key = self.target(req)?;
        self.source(req, &key, Action::Deploy).await?;
        let (t, k, m) = (self.checkouts.tables.clone(), key.clone(), Self::manager_of(req));
        let l = tokio::task::spawn_blocking(move || t.release(&k, Some(&m)))
            .await
            .map_err(BaseFault::internal)?
            .map_err(repo_fault)?;
        self.dirty.store(true, Ordering::Relaxed);
        tracing::info!(caller = req.caller.name(), key, holder = l.holder, "checkout released");
        Ok(reply(
            format!("{VWS}/{PORT_TYPE}/releaseResponse"),
            format!("<releaseResponse xmlns=\"{VWS}\">{}</releaseResponse>", lock_xml(&l)),
        ))
    }

    /// breakLock: a site administrator (ACL action `break_lock`) removes anyone's lock; logged.
    pub async fn break_lock(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let key = self.target(req)?;
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
        Ok(reply(
            format!("{VWS}/{PORT_TYPE}/breakLockResponse"),
            format!("<breakLockResponse xmlns=\"{VWS}\">{}</breakLockResponse>", lock_xml(&l)),
        ))
    }

    /// register: an image into the store by content, from a local path or a URL the stager reads.
    pub async fn register(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Create, None)?;
        let p = req.env.payload();
        let source = p
            .child(VWS, "source")
            .map(|s| s.text().trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BaseFault::new(FaultType::InvalidRequest, "register needs <source>PATH or URL</source>"))?;
        let expect = match p.child(VWS, "digest").map(|d| d.text().trim().to_ascii_lowercase()) {
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
        Ok(reply(
            format!("{VWS}/{PORT_TYPE}/registerResponse"),
            format!(
                "<registerResponse xmlns=\"{VWS}\"><image sha256=\"{}\" size=\"{}\" owner=\"{}\" new=\"{}\"/></registerResponse>",
                r.image.sha256,
                r.image.size,
                escape_attr(&r.image.owner),
                r.new
            ),
        ))
    }

    /// How many workspaces reference each image.
    async fn references(&self) -> HashMap<String, usize> {
        let mut refs: HashMap<String, usize> = HashMap::new();
        for s in self.catalogue.summaries().await {
            for d in &s.digests {
                *refs.entry(d.clone()).or_default() += 1;
            }
        }
        refs
    }

    /// images: the store's images with their reference counts.
    pub async fn list_images(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Create, None)?;
        let refs = self.references().await;
        let t = self.checkouts.tables.clone();
        let imgs = tokio::task::spawn_blocking(move || t.images()).await.map_err(BaseFault::internal)?.map_err(repo_fault)?;
        let mut out = format!("<imagesResponse xmlns=\"{VWS}\" count=\"{}\">", imgs.len());
        for i in imgs {
            let _ = write!(
                out,
                "<image sha256=\"{}\" size=\"{}\" owner=\"{}\" source=\"{}\" created=\"{}\" refs=\"{}\"/>",
                i.sha256,
                i.size,
                escape_attr(&i.owner),
                escape_attr(&i.source),
                time::format_ms(i.created_ms),
                refs.get(&i.sha256).copied().unwrap_or(0)
            );
        }
        out.push_str("</imagesResponse>");
        Ok(reply(format!("{VWS}/{PORT_TYPE}/imagesResponse"), out))
    }

    /// Removes unreferenced images older than `grace_ms`; never one a workspace references.
    pub async fn gc(&self, grace_ms: i64) -> Result<Vec<crate::store::repo::ImageRow>, BaseFault> {
        let _exclusive = self.gc_lock.write().await;
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
        let grace = match req.env.payload().child(VWS, "graceSeconds") {
            None => 0,
            Some(e) => e.text().trim().parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
                BaseFault::new(FaultType::InvalidRequest, format!("graceSeconds '{}' is not a number", e.text().trim()))
            })?,
        };
        let removed = self.gc(grace.saturating_mul(1000)).await?;
        tracing::info!(caller = req.caller.name(), removed = removed.len(), "image store gc");
        let mut out = format!("<gcResponse xmlns=\"{VWS}\" removed=\"{}\">", removed.len());
        for i in removed {
            let _ = write!(out, "<image sha256=\"{}\" size=\"{}\"/>", i.sha256, i.size);
        }
        out.push_str("</gcResponse>");
        Ok(reply(format!("{VWS}/{PORT_TYPE}/gcResponse"), out))
    }
}

fn lock_xml(l: &Lock) -> String {
    format!(
        "<w:lock xmlns:w=\"{VWS}\" workspace=\"{}\" holder=\"{}\" manager=\"{}\" since=\"{}\" until=\"{}\"/>",
        escape_attr(&l.key),
        escape_attr(&l.holder),
        escape_attr(&l.manager),
        time::format_ms(l.since_ms),
        time::format_ms(l.until_ms)
    )
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

/// The refined description: narrowed ranges (each inside the original's), software and
/// capability replaced; validated as a whole by the description reader.
pub fn refine_description(orig: &Description, p: &Element) -> Result<Description, BaseFault> {
    let mut d = orig.clone();
    let mut software = None;
    let mut capability = None;
    let narrow = |field: &str, have: Option<Range>, want: Range| match have {
        Some(h) if want.min < h.min || want.max > h.max => Err(out_of_range(field, want, h)),
        _ => Ok(want),
    };
    for e in p.elements() {
        if e.name.ns != VWS {
            continue;
        }
        match e.name.local.as_str() {
            "workspace" => {}
            "ram" => {
                let want = range_of(e, "hardware/ram")?;
                let hw = d.hardware.get_or_insert_with(Default::default);
                hw.ram = Some(narrow("hardware/ram", hw.ram, want)?);
            }
            "cpu" => {
                let want = range_of(e, "hardware/cpu")?;
                let hw = d.hardware.get_or_insert_with(Default::default);
                hw.cpus = Some(narrow("hardware/cpu", hw.cpus, want)?);
            }
            "disk" => {
                let name = e.attr("", "name").unwrap_or("");
                let field = format!("hardware/disk[@name='{name}']");
                let want = range_of(e, &field)?;
                let hw = d.hardware.get_or_insert_with(Default::default);
                let disk = hw.disks.iter_mut().find(|x| x.name == name).ok_or_else(|| {
                    BaseFault::new(FaultType::RefineOutOfRange, format!("refine: the original has no disk named '{name}'"))
                        .code(field.clone())
                })?;
                disk.size = Some(narrow(&field, disk.size, want)?);
            }
            "software" => software = Some(e.clone()),
            "capability" => capability = Some(e.clone()),
            other => {
                return Err(BaseFault::new(
                    FaultType::InvalidRequest,
                    format!("refine: unknown element '{other}' (expected workspace, ram, cpu, disk, software, capability)"),
                ))
            }
        }
    }
    // Validate the whole: the refined sections as the description reader reads them.
    let mut xml = format!("<virtualWorkspace xmlns=\"{VWS}\">{}", d.category_xml());
    let _ = write!(xml, "<state>{}</state>", d.state.as_str());
    if let Some(l) = d.life_cycle {
        let _ = write!(xml, "<lifeCycle>{l}</lifeCycle>");
    }
    xml.extend(d.hardware_xml());
    xml.extend(d.network_xml());
    if software.is_none() {
        xml.extend(d.software_xml());
    }
    if capability.is_none() {
        xml.extend(d.capability_xml());
    }
    xml.push_str("</virtualWorkspace>");
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
