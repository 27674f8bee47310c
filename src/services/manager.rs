//! The Manager port type (one per host), operations sent to a workspace's EPR:
//!
//! * `deploy`: stage the workspace's images (image disks and CD-ROMs) into this host's image
//!   pool. The workspace goes Unstaged → Staging at once (the answer does not wait for the
//!   transfer), then Staged when every image is in place and verified, or back to Unstaged with
//!   the error when one fails. Progress (bytes, total, rate, ETA per image) is kept in the
//!   workspace's `{vws}staging` resource property while it runs.
//! * `undeploy`: release the staged images (Staged or Saved → Unstaged).
//!
//! Each operation decodes the request, authorises it, calls this host's engine
//! ([`crate::host::Host`]: staging, pool, `file://` policy, recovery) and encodes the answer.
//! The engine keeps its records in the workspace home through [`WorkspaceLedger`], which also
//! encodes its staging report as the `staging` property.

use super::request::{SoapReply, SoapRequest};
use super::workspace::{touch, WorkspaceData};
use super::{answer, Shared};
use crate::host::staging::{ImageStatus, Report};
use crate::host::vm::{DiskPlan, EngineError, Placement, VmEngine};
use crate::host::vmm::{VmState, VmmError};
use crate::host::{BoxFuture, Host, Ledger, PlanError, Teardown};
use crate::security::Action;
use crate::soap::envelope::SoapFault;
use crate::soap::message::Message;
use crate::soap::ns::VWS;
use crate::soap::writer::XmlWriter;
use crate::workspace::messages::{Console, ConsoleResponse, ManagerOp, ManagerRequest, ManagerResponse};
use crate::workspace::{Description, Event, State};
use crate::wsrf::{time, BaseFault, FaultType, Home, ResourceState};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const PORT_TYPE: &str = crate::soap::ns::MANAGER_PORT_TYPE;

/// This host's Manager.
pub struct ManagerService {
    home: Arc<Home>,
    shared: Arc<Shared>,
    host: Arc<Host>,
    vms: Arc<Vms>,
    /// The Repository (issue 12): deploy checks out, undeploy releases (its `Checkouts`: this
    /// process's tables or a remote site Repository); a workspace another host enrolled is
    /// adopted for a deploy here.
    checkouts: std::sync::OnceLock<Arc<super::repository::RepositoryService>>,
}

/// The VM side of the Manager, shared with its ledger and background tasks.
pub struct Vms {
    home: Arc<Home>,
    /// The VM engine (None: `vmm.driver = "none"`, deploy only stages).
    engine: Option<Arc<VmEngine>>,
    /// The data directory: `file:RELATIVE` image URLs are below it.
    data: PathBuf,
    /// VMs the driver sees that no workspace owns (never killed), from the last reconciliation.
    orphans: Mutex<Vec<Orphan>>,
}

/// A VM running on this host that no workspace owns: listed in the Manager's `orphans`
/// property, never killed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub name: String,
    /// `qemu` or `xen`.
    pub driver: &'static str,
    /// QEMU process id or Xen domain id.
    pub id: Option<u32>,
    pub state: VmState,
    /// When reconciliation first saw it (ms since the epoch).
    pub since_ms: i64,
}

/// The `{vws}staging` property for a staging report.
pub fn staging_xml(r: &Report) -> String {
    let (bytes, total, started) = (r.bytes().to_string(), r.total().map(|t| t.to_string()), time::format_ms(r.started_ms));
    let finished = r.finished_ms.map(time::format_ms);
    let mut attrs = vec![("xmlns:w", VWS), ("status", r.status.as_str()), ("bytes", bytes.as_str())];
    attrs.extend(total.as_deref().map(|t| ("total", t)));
    attrs.push(("started", &started));
    attrs.extend(finished.as_deref().map(|f| ("finished", f)));
    let mut w = XmlWriter::with_capacity(256 + 256 * r.images.len());
    w.start("w:staging", &attrs);
    for i in &r.images {
        let bytes = i.bytes.to_string();
        let total = i.total.map(|t| t.to_string());
        let staging = i.status == ImageStatus::Staging;
        let rate = staging.then(|| (i.rate.max(0.0).round() as u64).to_string());
        let eta = i.eta.filter(|_| staging).map(|e| (e.as_secs_f64().ceil() as u64).to_string());
        let mut a = vec![("name", i.name.as_str()), ("url", i.url.as_str()), ("status", i.status.as_str()), ("bytes", &bytes)];
        a.extend(total.as_deref().map(|t| ("total", t)));
        a.extend(rate.as_deref().map(|r| ("rate", r)));
        a.extend(eta.as_deref().map(|e| ("eta", e)));
        a.extend(i.sha256.as_deref().map(|h| ("sha256", h)));
        w.empty("w:image", &a);
    }
    if let Some((kind, msg)) = &r.error {
        w.leaf("w:error", &[("kind", kind)], msg);
    }
    w.end("w:staging");
    w.into_string()
}

fn invalid_state(key: &str, op: &str, s: State) -> BaseFault {
    BaseFault::new(
        FaultType::InvalidState,
        format!(
            "workspace '{key}' is {}: {op} is not possible in that state (allowed: {})",
            s.as_str(),
            s.allowed_operations().join(", ")
        ),
    )
    .code(s.as_str())
}

/// The fault for an engine failure.
fn engine_fault(key: &str, op: &str, e: &EngineError) -> BaseFault {
    let kind = match e {
        EngineError::Lease(crate::store::leases::LeaseError::Exhausted { .. }) | EngineError::Vmm(VmmError::NoSpace(_)) => {
            FaultType::ResourceExhausted
        }
        _ => FaultType::HypervisorFailed,
    };
    BaseFault::new(kind, format!("{op} of workspace '{key}' failed: {e}")).code(e.kind())
}

/// The VM operations sent to a workspace's EPR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmOp {
    Start,
    Stop,
    Pause,
    Unpause,
    Reboot,
    Save,
    Restore,
}

impl VmOp {
    /// The VM operation a Manager request names (None for deploy and undeploy).
    fn of(op: ManagerOp) -> Option<VmOp> {
        match op {
            ManagerOp::Deploy | ManagerOp::Undeploy => None,
            ManagerOp::Start => Some(VmOp::Start),
            ManagerOp::Stop => Some(VmOp::Stop),
            ManagerOp::Pause => Some(VmOp::Pause),
            ManagerOp::Unpause => Some(VmOp::Unpause),
            ManagerOp::Reboot => Some(VmOp::Reboot),
            ManagerOp::Save => Some(VmOp::Save),
            ManagerOp::Restore => Some(VmOp::Restore),
        }
    }

    /// The operation's wire name (its Body element's local name, kept in `ManagerOp`).
    pub fn name(self) -> &'static str {
        let op = match self {
            VmOp::Start => ManagerOp::Start,
            VmOp::Stop => ManagerOp::Stop,
            VmOp::Pause => ManagerOp::Pause,
            VmOp::Unpause => ManagerOp::Unpause,
            VmOp::Reboot => ManagerOp::Reboot,
            VmOp::Save => ManagerOp::Save,
            VmOp::Restore => ManagerOp::Restore,
        };
        op.name()
    }

    fn event(self) -> Event {
        match self {
            VmOp::Start => Event::Start,
            VmOp::Stop => Event::Stop,
            VmOp::Pause => Event::Pause,
            VmOp::Unpause => Event::Unpause,
            VmOp::Reboot => Event::Reboot,
            VmOp::Save => Event::Save,
            VmOp::Restore => Event::Restore,
        }
    }

    /// Answered at once with a transitional state; the work goes on in the background.
    fn is_long(self) -> bool {
        matches!(self, VmOp::Stop | VmOp::Save | VmOp::Restore)
    }
}

/// This machine's name, for the `host` property.
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r == 0 {
        let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..n]).into_owned()
    } else {
        "localhost".into()
    }
}

/// Writes (or clears) the placement properties.
fn set_placement(rtype: &crate::wsrf::ResourceType, st: &mut ResourceState, p: Option<&Placement>) {
    use crate::workspace::description::text_property;
    let one = |name: &str, v: Option<String>| v.map(|v| vec![text_property(name, &v)]).unwrap_or_default();
    st.set(rtype, VWS, "host", one("host", p.map(|_| host_name())));
    st.set(rtype, VWS, "ip", one("ip", p.map(|p| p.ip.to_string())));
    st.set(rtype, VWS, "mac", one("mac", p.map(|p| p.mac.clone())));
    st.set(rtype, VWS, "consoleLog", one("consoleLog", p.map(|p| p.console.display().to_string())));
    st.set(
        rtype,
        VWS,
        "certificate",
        p.map(|p| {
            let mut w = XmlWriter::with_capacity(p.cert_pem.len() + 256);
            w.leaf("w:certificate", &[("xmlns:w", VWS), ("subject", &p.cert_subject), ("sha256", &p.cert_sha256)], &p.cert_pem);
            vec![w.into_string()]
        })
        .unwrap_or_default(),
    );
}

fn set_text(rtype: &crate::wsrf::ResourceType, st: &mut ResourceState, name: &str, v: Option<&str>) {
    use crate::workspace::description::text_property;
    st.set(rtype, VWS, name, v.map(|v| vec![text_property(name, v)]).unwrap_or_default());
}

/// The fault for a staging the engine cannot plan.
fn plan_fault(e: PlanError) -> BaseFault {
    match &e {
        PlanError::Policy { rule, .. } => BaseFault::new(FaultType::PolicyRejected, e.to_string()).code(*rule),
        PlanError::Invalid { code, .. } => {
            let f = BaseFault::new(FaultType::InvalidDescription, e.to_string());
            match code {
                Some(c) => f.code(*c),
                None => f,
            }
        }
    }
}

/// Moves a workspace's state by `event` (refused, naming the state, when the table has no such
/// transition) and writes its staging report (None: no report).
fn transition(
    home: &Home,
    st: &mut ResourceState,
    key: &str,
    event: Event,
    op: &str,
    report: Option<&Report>,
) -> Result<State, BaseFault> {
    let mut data = WorkspaceData::of(st)?;
    data.state = data.state.on(event).ok_or_else(|| invalid_state(key, op, data.state))?;
    let rtype = &home.rtype;
    data.store(rtype, st);
    st.set(rtype, VWS, "staging", report.map(staging_xml).into_iter().collect());
    touch(rtype, st);
    Ok(data.state)
}

/// The engine's records, kept in the workspace home: state and description from the workspace
/// data, staging reports as the `staging` property.
pub struct WorkspaceLedger {
    pub home: Arc<Home>,
    /// The VM side: a finished staging defines the workspace's VM before it is Staged.
    pub vms: Arc<Vms>,
}

impl Ledger for WorkspaceLedger {
    fn list(&self) -> BoxFuture<'_, Vec<(String, State)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for key in self.home.keys() {
                if let Ok(s) = self.home.read(&key, FaultType::RpResourceUnknown, |st| Ok(WorkspaceData::of(st)?.state)).await {
                    out.push((key, s));
                }
            }
            out
        })
    }

    fn description<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Description>> {
        Box::pin(async move {
            let d = self.home.read(key, FaultType::RpResourceUnknown, WorkspaceData::of).await.ok()?.description;
            Some(resolve_relative(d, &self.vms.data))
        })
    }

    fn progress<'a>(&'a self, key: &'a str, report: &'a Report) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let xml = staging_xml(report);
            self.home
                .update(key, FaultType::RpResourceUnknown, |st| {
                    st.set(&self.home.rtype, VWS, "staging", vec![xml]);
                    Ok(())
                })
                .await
                .map_err(|e| e.description)
        })
    }

    fn finish<'a>(&'a self, key: &'a str, event: Event, report: &'a Report) -> BoxFuture<'a, Result<State, String>> {
        Box::pin(async move {
            // The images are in: overlays, address, credentials, config disk, the VM paused.
            let mut event = event;
            let mut report = report.clone();
            let mut placement = None;
            if let (Event::StagingDone, Some(engine)) = (event, self.vms.engine.clone()) {
                match self.vms.provision(&engine, key).await {
                    Ok(p) => placement = Some(p),
                    Err(e) => {
                        tracing::warn!(key, kind = e.kind(), "defining the VM failed: {e}");
                        report.fail(e.kind(), e.to_string());
                        event = Event::StagingFailed;
                    }
                }
            }
            // Unstaged or gone: the staging job tears down what was made (Host::teardown).
            self.home
                .update(key, FaultType::RpResourceUnknown, |st| {
                    let s = transition(&self.home, st, key, event, "finishing a staging", Some(&report))?;
                    set_placement(&self.home.rtype, st, placement.as_ref());
                    set_text(&self.home.rtype, st, "cause", report.error.as_ref().map(|(_, m)| m.as_str()));
                    Ok(s)
                })
                .await
                .map_err(|e| e.description)
        })
    }
}

impl ManagerService {
    /// The Manager for `home`'s workspaces, on this host's engine (`vms`: its VM side, shared
    /// with the ledger). A destroyed workspace's images go with it: its staging is cancelled,
    /// its VM destroyed, its address freed once the VM is confirmed gone, its files removed.
    pub fn new(home: Arc<Home>, shared: Arc<Shared>, host: Arc<Host>, vms: Arc<Vms>) -> Arc<ManagerService> {
        let weak = Arc::downgrade(&host);
        home.on_destroy(Box::new(move |key| {
            let Some(host) = weak.upgrade() else { return };
            host.discard(key);
            let k = key.to_string();
            let teardown = async move {
                let key = k;
                let lock = host.lock_of(&key);
                let _guard = lock.lock().await;
                // A staging under way tears down when it ends (it is cancelled now).
                if !host.is_staging(&key) {
                    let _ = host.teardown(&key, Teardown::Destroyed).await;
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(teardown)),
                // No runtime (never in vwsd): reconciliation frees what the workspace held.
                Err(_) => tracing::warn!(key, "destroyed outside a runtime: left to reconciliation"),
            }
        }));
        Arc::new(ManagerService { home, shared, host, vms, checkouts: std::sync::OnceLock::new() })
    }

    // --- Repository checkout lock (issue 12) ---
    /// Deploys check workspaces out through `r`'s `Checkouts` from now on (set once, at wiring).
    pub fn set_checkouts(&self, r: Arc<super::repository::RepositoryService>) {
        let _ = self.checkouts.set(r);
    }

    /// Checks `key` out to this Manager for the caller (a lock this Manager holds is taken again).
    async fn check_out(&self, req: &SoapRequest, key: &str) -> Result<(), BaseFault> {
        match self.checkouts.get() {
            Some(r) => {
                let manager = format!("{}/wsrf/services/{}", req.base_url, super::workspace::NAME);
                r.checkouts.checkout(key, req.caller.name(), &manager, true).await
            }
            None => Ok(()),
        }
    }

    async fn check_in(&self, key: &str) {
        if let Some(r) = self.checkouts.get() {
            r.checkouts.release(key).await;
        }
    }

    /// A key this home lacks but the site catalogue has (from another Manager host, or, with a
    /// remote site, kept by the site's host) becomes a workspace here, so it can be deployed
    /// here (under its lock at the site).
    async fn adopt(&self, req: &SoapRequest, key: &str) -> Result<(), BaseFault> {
        match self.checkouts.get() {
            Some(r) if !self.home.contains(key) => r.adopt(req, key).await.map(drop),
            _ => Ok(()),
        }
    }
    // --- end checkout lock ---

    /// Handles a Manager operation; None when the payload is not one.
    pub async fn dispatch(&self, req: &SoapRequest) -> Option<Result<SoapReply, SoapFault>> {
        let p = req.env.payload();
        let r = match ManagerOp::of(p) {
            Some(ManagerOp::Deploy) => self.deploy(req).await,
            Some(ManagerOp::Undeploy) => self.undeploy(req).await,
            Some(op) => match VmOp::of(op) {
                Some(op) => self.vm_op(req, op).await,
                None => return None,
            },
            None if p.is(VWS, "console") => self.console(req).await,
            None => return None,
        };
        Some(r.map_err(SoapFault::from))
    }

    /// deploy: Unstaged → Staging now, Staged (or back to Unstaged) when the images are in and
    /// the VM is defined paused. The address is allocated before the answer, so an exhausted
    /// pool is a fault at once. `<hot>true</hot>`: boot once to the ready line, then pause.
    pub async fn deploy(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let home = &self.home;
        let key = home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        let hot = arguments(req)?.hot;
        self.adopt(req, &key).await?;
        let lock = self.host.lock_of(&key);
        let _guard = lock.lock().await;
        let description = home
            .read(&key, FaultType::RpResourceUnknown, |st| {
                self.shared.authorize(&req.caller, Action::Deploy, Some(&st.owner))?;
                let data = WorkspaceData::of(st)?;
                if data.state.on(Event::Deploy).is_none() {
                    return Err(invalid_state(&key, "deploy", data.state));
                }
                Ok(data.description)
            })
            .await?;
        let description = resolve_relative(description, &self.vms.data);
        let plan = self.host.plan(&key, &description).map_err(|e| {
            tracing::warn!(caller = req.caller.name(), key, rule = e.kind(), "deploy refused: {e}");
            plan_fault(e)
        })?;
        if let Some(engine) = self.vms.engine.clone() {
            let k = key.clone();
            let r = tokio::task::spawn_blocking(move || engine.allocate(&k)).await.map_err(BaseFault::internal)?;
            if let Err(e) = r {
                tracing::warn!(caller = req.caller.name(), key, "deploy refused: {e}");
                return Err(engine_fault(&key, "deploy", &e));
            }
        }
        if let Err(e) = self.check_out(req, &key).await {
            tracing::info!(caller = req.caller.name(), key, "deploy refused: {}", e.description);
            self.vms.release_address(&key).await;
            return Err(e);
        }
        let report = plan.report();
        // Checked again under the lock: a concurrent deploy may have won.
        let r = home
            .update(&key, FaultType::RpResourceUnknown, |st| {
                let s = transition(home, st, &key, Event::Deploy, "deploy", Some(&report))?;
                let mut data = WorkspaceData::of(st)?;
                data.hot = hot;
                data.store(&home.rtype, st);
                set_text(&home.rtype, st, "cause", None);
                Ok(s)
            })
            .await;
        if let Err(e) = r {
            self.vms.release_address(&key).await;
            self.check_in(&key).await;
            return Err(e);
        }
        tracing::info!(caller = req.caller.name(), key, images = plan.items.len(), hot, "deploy: staging started");
        self.host.start_staging(plan);
        Ok(state_reply("deploy", State::Staging))
    }

    /// undeploy: Staged, Saved, Running, Paused or Corrupted → Unstaged: the VM is destroyed, its
    /// address freed once it is confirmed gone, then the images, overlays and save file go.
    pub async fn undeploy(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let home = &self.home;
        let key = home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        arguments(req)?;
        let lock = self.host.lock_of(&key);
        let _guard = lock.lock().await;
        home.read(&key, FaultType::RpResourceUnknown, |st| {
            self.shared.authorize(&req.caller, Action::Deploy, Some(&st.owner))?;
            let data = WorkspaceData::of(st)?;
            data.state.on(Event::Undeploy).map(drop).ok_or_else(|| invalid_state(&key, "undeploy", data.state))
        })
        .await?;
        // The VM first (confirmed gone), then the state (durable), then its files and address:
        // a crash in between leaves an Unstaged workspace that reconciliation tears down.
        if let Err(e) = self.host.destroy_vm(&key).await {
            tracing::error!(key, "undeploy: {e}");
            return Err(engine_fault(&key, "undeploy", &e));
        }
        home.update(&key, FaultType::RpResourceUnknown, |st| {
            let s = transition(home, st, &key, Event::Undeploy, "undeploy", None)?;
            set_placement(&home.rtype, st, None);
            set_text(&home.rtype, st, "startTime", None);
            set_text(&home.rtype, st, "cause", None);
            Ok(s)
        })
        .await?;
        if let Err(e) = self.host.teardown(&key, Teardown::Undeploy).await {
            tracing::error!(key, "undeploy: left for reconciliation: {e}");
        }
        self.check_in(&key).await;
        tracing::info!(caller = req.caller.name(), key, "undeploy: VM and images released");
        Ok(state_reply("undeploy", State::Unstaged))
    }

    /// After a restart: what the hypervisor runs is reconciled with the store first, then the
    /// engine restarts interrupted stagings and sweeps the pool.
    pub async fn recover(&self) -> crate::host::Recovery {
        self.reconcile_with(true).await;
        self.host.recover().await
    }

    /// console: the guest's serial output from `<offset>` on (at most 64 KiB per call).
    pub async fn console(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let inner = &self.vms;
        let key = inner.home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        let msg = Console::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))?;
        let offset = msg.offset;
        inner
            .home
            .read(&key, FaultType::RpResourceUnknown, |st| self.shared.authorize(&req.caller, Action::Read, Some(&st.owner)))
            .await?;
        let path = self.host.pool().dir(&key).join("console.log");
        let (text, next) =
            tokio::task::spawn_blocking(move || read_chunk(&path, offset, 64 * 1024)).await.map_err(BaseFault::internal)?;
        Ok(answer(&msg, &ConsoleResponse { offset: next, text }))
    }

    /// The VM operations: checked against the state table, done by the engine, durable before
    /// the answer; stop, save and restore answer at once with their transitional state.
    pub async fn vm_op(&self, req: &SoapRequest, op: VmOp) -> Result<SoapReply, BaseFault> {
        let inner = &self.vms;
        let key = inner.home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        arguments(req)?;
        let Some(engine) = inner.engine.clone() else {
            return Err(BaseFault::new(
                FaultType::HypervisorFailed,
                format!("{}: this host has no hypervisor driver (vmm.driver = \"none\")", op.name()),
            )
            .code("no_driver"));
        };
        let lock = self.host.lock_of(&key);
        let guard = lock.lock_owned().await;
        let (data, current) = inner
            .home
            .read(&key, FaultType::RpResourceUnknown, |st| {
                self.shared.authorize(&req.caller, Action::Deploy, Some(&st.owner))?;
                let data = WorkspaceData::of(st)?;
                let next = data.state.on(op.event()).ok_or_else(|| invalid_state(&key, op.name(), data.state))?;
                Ok((data.clone(), next))
            })
            .await?;
        let disks = inner.disk_plan(&key, &data.description);
        let (mem, cpus) = resources(&data.description);
        if op.is_long() {
            // The engine starts at once while the transitional state is made durable; it waits
            // for that before anything irreversible (stop: before it starts; save: before the
            // state file gets its name and the VM goes; restore: before the restored VM runs),
            // and calls the operation off, the VM as it was, when it could not be. All of it in
            // a task of its own, so the operation ends as one even if this request is dropped.
            let (answer, answered) = tokio::sync::oneshot::channel::<Result<(), BaseFault>>();
            let (inner2, key2) = (inner.clone(), key.clone());
            tokio::spawn(async move {
                let _guard = guard;
                let (durable, gate) = std::sync::mpsc::channel::<bool>();
                let (k, e) = (key2.clone(), engine.clone());
                let t0 = std::time::Instant::now();
                let job = tokio::task::spawn_blocking(move || {
                    let mut proceed = move || gate.recv().unwrap_or(false);
                    match op {
                        VmOp::Stop if !proceed() => Err(VmmError::Abandoned(format!("stopping {k}")).into()),
                        VmOp::Stop => {
                            e.stop(&k).map(|forced| forced.then(|| "the guest did not power off in time: forced off".to_string()))
                        }
                        VmOp::Save => e.save(&k, &mut proceed).map(|_| None).inspect_err(|err| {
                            if !matches!(err, EngineError::Vmm(VmmError::Abandoned(_))) {
                                let _ = e.unpause(&k);
                            }
                        }),
                        _ => e.restore(&k, &disks, mem, cpus, &mut proceed).map(|_| None),
                    }
                });
                let committed = inner2
                    .home
                    .update(&key2, FaultType::RpResourceUnknown, |st| {
                        set_text(&inner2.home.rtype, st, "cause", None);
                        transition(&inner2.home, st, &key2, op.event(), op.name(), None).map(drop)
                    })
                    .await;
                let commit_ms = t0.elapsed().as_secs_f64() * 1e3;
                let ok = committed.is_ok();
                let _ = durable.send(ok);
                let _ = answer.send(committed);
                let r = job.await.unwrap_or_else(|j| Err(EngineError::Setup(j.to_string())));
                if !ok {
                    // Called off: nothing changed (the answer was the store's fault).
                    return;
                }
                vm_metric(op, t0, r.is_ok());
                let engine_ms = t0.elapsed().as_secs_f64() * 1e3;
                inner2.finish(&key2, op, r).await;
                tracing::debug!(
                    key = key2,
                    op = op.name(),
                    commit_ms,
                    engine_ms,
                    finish_ms = t0.elapsed().as_secs_f64() * 1e3 - engine_ms,
                    "long operation finished"
                );
                drop(_guard);
                if op == VmOp::Restore {
                    let _ = tokio::task::spawn_blocking(move || engine.purge_save_file(&key2)).await;
                }
            });
            answered.await.map_err(BaseFault::internal)??;
            tracing::info!(caller = req.caller.name(), key, op = op.name(), state = current.as_str(), "started");
            return Ok(state_reply(op.name(), current));
        }
        let k = key.clone();
        let t0 = std::time::Instant::now();
        let r = tokio::task::spawn_blocking(move || match op {
            VmOp::Start => engine.start(&k, &disks, mem, cpus),
            VmOp::Pause => engine.pause(&k),
            VmOp::Unpause => engine.unpause(&k),
            _ => engine.reboot(&k),
        })
        .await
        .map_err(BaseFault::internal)?;
        vm_metric(op, t0, r.is_ok());
        match r {
            Ok(()) => {
                let s = inner
                    .home
                    .update(&key, FaultType::RpResourceUnknown, |st| {
                        if op == VmOp::Start {
                            set_text(&inner.home.rtype, st, "startTime", Some(&time::format_ms(time::now_ms())));
                        }
                        transition(&inner.home, st, &key, op.event(), op.name(), None)
                    })
                    .await?;
                tracing::info!(caller = req.caller.name(), key, op = op.name(), state = s.as_str(), "done");
                drop(guard);
                Ok(state_reply(op.name(), s))
            }
            Err(e) => {
                tracing::warn!(caller = req.caller.name(), key, op = op.name(), "failed: {e}");
                if matches!(e, EngineError::Vmm(VmmError::NotFound(_))) && op != VmOp::Start {
                    inner.corrupt(&key, &format!("{} failed: the VM is gone ({e})", op.name())).await;
                }
                Err(engine_fault(&key, op.name(), &e))
            }
        }
    }

    /// VMs running on this host that no workspace owns (from the last reconciliation).
    pub fn orphans(&self) -> Vec<Orphan> {
        self.vms.orphans.lock().unwrap().clone()
    }

    /// The hypervisor driver: `qemu`, `xen` or `none`.
    pub fn driver(&self) -> &'static str {
        self.vms.engine.as_ref().map(|e| e.vmm.kind()).unwrap_or("none")
    }

    /// The address pool: (first, last, leased, size); None without a VM engine.
    pub async fn addresses(&self) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr, u32, u32)> {
        let e = self.vms.engine.clone()?;
        tokio::task::spawn_blocking(move || e.leases.usage().ok()).await.ok().flatten()
    }

    /// Compares every stored workspace with what the driver sees and repairs the store: a VM
    /// stored running but gone makes its workspace Corrupted (with the cause); interrupted
    /// transitions are finished or undone; addresses of workspaces without a VM are freed;
    /// VMs no workspace owns are listed as orphans (never killed). Returns the orphans.
    pub async fn reconcile(&self) -> Vec<Orphan> {
        self.reconcile_with(false).await
    }

    async fn reconcile_with(&self, startup: bool) -> Vec<Orphan> {
        let inner = &self.vms;
        let Some(engine) = inner.engine.clone() else { return Vec::new() };
        let e = engine.clone();
        let seen = match tokio::task::spawn_blocking(move || e.vmm.list()).await {
            Ok(Ok(v)) => v,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "reconciliation: cannot list VMs");
                return Vec::new();
            }
            Err(_) => return Vec::new(),
        };
        let vms: HashMap<String, VmState> = seen.iter().map(|v| (v.name.clone(), v.state)).collect();
        let keys = inner.home.keys();
        let mut owned = std::collections::HashSet::new();
        for key in &keys {
            let name = VmEngine::vm_name(key);
            owned.insert(name.clone());
            let lock = self.host.lock_of(key);
            // A workspace with an operation under way is that operation's business.
            let Ok(_guard) = lock.try_lock() else { continue };
            let Ok(data) = inner.home.read(key, FaultType::RpResourceUnknown, WorkspaceData::of).await else { continue };
            let vm = vms.get(&name).copied();
            if startup && data.state == State::Staging && vm.is_some() {
                // A deploy interrupted while defining its VM: the staging starts again and
                // defines it anew; the address stays.
                let (e, n) = (engine.clone(), name.clone());
                let _ = tokio::task::spawn_blocking(move || e.vmm.destroy(&n)).await;
                tracing::warn!(key, "reconciliation: destroyed the half-made VM of an interrupted deploy");
                continue;
            }
            inner.reconcile_one(&self.host, &engine, key, &data, vm).await;
        }
        // Addresses held by workspaces that are gone (a crash between destroy and teardown).
        let e = engine.clone();
        let owners = tokio::task::spawn_blocking(move || e.leases.mac_owners().unwrap_or_default()).await.unwrap_or_default();
        for owner in owners {
            if inner.home.contains(&owner) {
                continue;
            }
            let lock = self.host.lock_of(&owner);
            let Ok(_guard) = lock.try_lock() else { continue };
            // Checked again under the lock: it may have been created meanwhile. A staging still
            // under way tears down itself when it ends (freeing its address now would let the
            // staging write into a pool directory nothing removes any more).
            if inner.home.contains(&owner) || self.host.is_staging(&owner) {
                continue;
            }
            if self.host.teardown(&owner, Teardown::Destroyed).await.is_ok() {
                tracing::warn!(key = owner, "reconciliation: freed what a destroyed workspace still held");
            }
        }
        let now = time::now_ms();
        let mut list = inner.orphans.lock().unwrap();
        let orphans: Vec<Orphan> = seen
            .iter()
            .filter(|v| !owned.contains(&v.name))
            .map(|v| {
                let before = list.iter().find(|o| o.name == v.name && o.id == v.id);
                if before.is_none() {
                    tracing::warn!(
                        vm = v.name,
                        id = v.id,
                        "reconciliation: a VM runs that no workspace owns (listed in orphans, left alone)"
                    );
                }
                Orphan {
                    name: v.name.clone(),
                    driver: engine.vmm.kind(),
                    id: v.id,
                    state: v.state,
                    since_ms: before.map(|o| o.since_ms).unwrap_or(now),
                }
            })
            .collect();
        *list = orphans.clone();
        orphans
    }
}

/// RAM (MiB) and CPUs a description asks for (their minimum).
fn resources(d: &Description) -> (Option<u32>, Option<u32>) {
    let hw = d.hardware.as_ref();
    (
        hw.and_then(|h| h.ram.as_ref()).map(|r| r.min.min(u32::MAX as u64) as u32),
        hw.and_then(|h| h.cpus.as_ref()).map(|r| r.min.min(64) as u32),
    )
}

/// Up to `max` bytes of a file from `offset` on, and the offset after them.
fn read_chunk(path: &Path, offset: u64, max: usize) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return (String::new(), offset) };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return (String::new(), offset);
    }
    let mut b = Vec::new();
    let _ = f.by_ref().take(max as u64).read_to_end(&mut b);
    // Never cut a UTF-8 sequence: stop before an incomplete one at the end.
    let mut n = b.len();
    if let Err(e) = std::str::from_utf8(&b) {
        if e.error_len().is_none() {
            n = e.valid_up_to();
        }
    }
    (String::from_utf8_lossy(&b[..n]).into_owned(), offset + n as u64)
}

impl Vms {
    pub fn new(home: Arc<Home>, engine: Option<Arc<VmEngine>>, data: &Path) -> Result<Arc<Vms>, String> {
        let data = std::path::absolute(data).map_err(|e| format!("{}: {e}", data.display()))?;
        Ok(Arc::new(Vms { home, engine, data, orphans: Mutex::new(Vec::new()) }))
    }

    fn dir(&self, key: &str) -> PathBuf {
        self.engine.as_ref().map(|e| e.dir(key)).unwrap_or_else(|| self.data.join("pool").join(key))
    }

    /// After staging: the VM of a workspace, defined paused (hot: booted once and paused).
    async fn provision(&self, engine: &Arc<VmEngine>, key: &str) -> Result<Placement, EngineError> {
        let data = self
            .home
            .read(key, FaultType::RpResourceUnknown, WorkspaceData::of)
            .await
            .map_err(|e| EngineError::Setup(e.description))?;
        let disks = self.disk_plan(key, &data.description);
        let (mem, cpus) = resources(&data.description);
        let (e, k, hot) = (engine.clone(), key.to_string(), data.hot);
        tokio::task::spawn_blocking(move || e.provision(&k, &disks, mem, cpus, hot))
            .await
            .unwrap_or_else(|j| Err(EngineError::Setup(j.to_string())))
    }

    /// Frees a workspace's address (no VM of it exists).
    async fn release_address(&self, key: &str) {
        if let Some(e) = self.engine.clone() {
            let k = key.to_string();
            let _ = tokio::task::spawn_blocking(move || e.leases.release(&k)).await;
        }
    }

    /// The disks of a workspace in the pool, in description order.
    fn disk_plan(&self, key: &str, d: &Description) -> Vec<DiskPlan> {
        let dir = self.dir(key);
        let mut out = Vec::new();
        if let Some(hw) = &d.hardware {
            for (i, disk) in hw.disks.iter().enumerate() {
                out.push(DiskPlan {
                    name: disk.name.clone(),
                    staged: disk.image.as_ref().map(|_| dir.join(crate::host::pool::Pool::file_name("disk", i, &disk.name))),
                    blank_mib: disk.size.as_ref().map(|r| r.min).unwrap_or(64),
                    read_only: disk.access == crate::workspace::description::Access::Ro,
                    cdrom: false,
                });
            }
            for (i, cd) in hw.cdroms.iter().enumerate() {
                out.push(DiskPlan {
                    name: cd.name.clone(),
                    staged: Some(dir.join(crate::host::pool::Pool::file_name("cdrom", i, &cd.name))),
                    blank_mib: 0,
                    read_only: true,
                    cdrom: true,
                });
            }
        }
        out
    }

    /// Moves a workspace by `event`, with `cause` written (None clears it); false when refused.
    async fn step(&self, key: &str, event: Event, cause: Option<&str>, started: Option<Option<i64>>) {
        let r = self
            .home
            .update(key, FaultType::RpResourceUnknown, |st| {
                let s = transition(&self.home, st, key, event, "reconciling", None)?;
                set_text(&self.home.rtype, st, "cause", cause);
                if let Some(t) = started {
                    set_text(&self.home.rtype, st, "startTime", t.map(time::format_ms).as_deref());
                }
                if s == State::Unstaged {
                    set_placement(&self.home.rtype, st, None);
                }
                Ok(s)
            })
            .await;
        match r {
            Ok(s) => tracing::info!(key, state = s.as_str(), cause, "workspace state changed"),
            Err(e) => tracing::warn!(key, "state change refused: {}", e.description),
        }
    }

    /// Marks a workspace Corrupted with its cause.
    async fn corrupt(&self, key: &str, cause: &str) {
        tracing::error!(key, cause, "workspace corrupted");
        self.step(key, Event::Fail, Some(cause), None).await;
    }

    /// The end of a long operation (stop, save, restore).
    async fn finish(&self, key: &str, op: VmOp, r: Result<Option<String>, EngineError>) {
        match (op, r) {
            (_, Ok(note)) => {
                let started = match op {
                    VmOp::Restore => Some(Some(time::now_ms())),
                    VmOp::Stop => Some(None),
                    _ => None,
                };
                self.step(key, Event::Done, note.as_deref(), started).await;
            }
            (VmOp::Stop, Err(e)) => self.corrupt(key, &format!("stop failed: {e}")).await,
            (_, Err(e)) => {
                tracing::warn!(key, op = op.name(), "failed: {e}");
                self.step(key, Event::Failed, Some(&format!("{} failed: {e}", op.name())), None).await;
            }
        }
    }

    /// One workspace against what the driver sees of its VM.
    async fn reconcile_one(&self, host: &Host, engine: &Arc<VmEngine>, key: &str, data: &WorkspaceData, vm: Option<VmState>) {
        let name = VmEngine::vm_name(key);
        let blocking = |f: EngineJob| {
            let e = engine.clone();
            async move { tokio::task::spawn_blocking(move || f(&e)).await.unwrap_or_else(|j| Err(EngineError::Setup(j.to_string()))) }
        };
        // A save in progress has `memory.partial`, a complete one `memory.state`; a restore
        // takes either (the rename may have been lost by a crash after the file was durable).
        let saved = match data.state {
            State::Restoring => engine.saved_file(key).is_some(),
            _ => engine.save_file(key).is_file(),
        };
        match (data.state, vm) {
            (State::Running | State::Paused, None) => {
                self.corrupt(key, &format!("VM {name} is gone: the {} driver does not see it any more", engine.vmm.kind())).await
            }
            (State::Running | State::Paused, Some(s @ (VmState::Shutdown | VmState::Crashed))) => {
                self.corrupt(key, &format!("VM {name} is {s:?} (seen by the {} driver)", engine.vmm.kind())).await
            }
            (State::Running, Some(VmState::Paused)) if engine.save_file(key).with_extension("partial").is_file() => {
                // A save cut short before its Saving state was durable: the VM runs on.
                let k = key.to_string();
                let _ = blocking(Box::new(move |e| {
                    let _ = std::fs::remove_file(e.save_file(&k).with_extension("partial"));
                    e.unpause(&k)
                }))
                .await;
                tracing::warn!(key, "reconciliation: resumed the VM of a save interrupted by a restart");
            }
            (State::Running, Some(VmState::Paused)) => self.step(key, Event::Pause, None, None).await,
            (State::Saved, Some(_)) => {
                // A restore cut short before its Restoring state was durable: its VM never ran.
                let n = name.clone();
                let _ = blocking(Box::new(move |e| e.vmm.destroy(&n).map_err(Into::into))).await;
                tracing::warn!(key, "reconciliation: destroyed the VM of a restore interrupted by a restart (still Saved)");
            }
            (State::Paused, Some(VmState::Running)) => self.step(key, Event::Unpause, None, None).await,
            (State::Staged, Some(VmState::Running)) => self.step(key, Event::Start, None, Some(Some(time::now_ms()))).await,
            (State::Stopping, v) => {
                if v.is_some() {
                    let n = name.clone();
                    let _ = blocking(Box::new(move |e| e.vmm.destroy(&n).map_err(Into::into))).await;
                }
                self.step(key, Event::Done, Some("stop interrupted by a restart: VM destroyed"), Some(None)).await;
            }
            (State::Saving, None) if saved => self.step(key, Event::Done, None, None).await,
            (State::Saving, Some(_)) => {
                let k = key.to_string();
                let _ = blocking(Box::new(move |e| {
                    let _ = std::fs::remove_file(e.save_file(&k).with_extension("partial"));
                    e.unpause(&k)
                }))
                .await;
                self.step(key, Event::Failed, Some("save interrupted by a restart: VM resumed"), None).await;
            }
            (State::Restoring, Some(_)) => {
                let k = key.to_string();
                match blocking(Box::new(move |e| e.unpause(&k))).await {
                    Ok(()) => self.step(key, Event::Done, None, Some(Some(time::now_ms()))).await,
                    Err(err) => self.corrupt(key, &format!("restore interrupted by a restart: {err}")).await,
                }
            }
            (State::Restoring, None) if saved => {
                self.step(key, Event::Failed, Some("restore interrupted by a restart"), None).await
            }
            (State::Saving | State::Restoring, None) => {
                self.corrupt(key, &format!("{} interrupted and no save file remains", data.state.as_str())).await
            }
            (State::Unstaged, v) => {
                // A deploy that never finished (or an undeploy cut short): nothing of it may stay.
                let e = engine.clone();
                let k = key.to_string();
                let leased = tokio::task::spawn_blocking(move || e.lease(&k).ok().flatten().is_some()).await.unwrap_or(true);
                let holds = v.is_some() || leased || engine.dir(key).exists() || engine.run_dir(key).exists();
                if holds && host.teardown(key, Teardown::Undeploy).await.is_ok() {
                    tracing::warn!(key, had_vm = v.is_some(), "reconciliation: tore down what an Unstaged workspace still held");
                }
            }
            _ => {}
        }
    }
}

/// Work reconciliation gives the engine (run on tokio's blocking pool).
type EngineJob = Box<dyn FnOnce(&VmEngine) -> Result<(), EngineError> + Send>;

/// `file:RELATIVE` image URLs (paths under the data directory) as `file://` URLs.
fn resolve_relative(mut d: Description, data: &Path) -> Description {
    let abs = |u: &str| match u.strip_prefix("file:").filter(|r| !r.starts_with('/')) {
        Some(rel) => format!("file://{}", data.join(rel).display()),
        None => u.to_string(),
    };
    if let Some(hw) = &mut d.hardware {
        for disk in &mut hw.disks {
            if let Some(u) = &disk.image {
                disk.image = Some(abs(u));
            }
        }
        for cd in &mut hw.cdroms {
            cd.image = abs(&cd.image);
        }
    }
    d
}

/// The decoded Manager request (deploy's optional `<hot>`; the others take no arguments).
fn arguments(req: &SoapRequest) -> Result<ManagerRequest, BaseFault> {
    ManagerRequest::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidRequest, e.0))
}

/// One VM operation done by the engine: `vws_vm_operations_total{op,outcome}` and its duration.
fn vm_metric(op: VmOp, t0: std::time::Instant, ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!("vws_vm_operations_total", "op" => op.name(), "outcome" => outcome).increment(1);
    metrics::histogram!("vws_vm_operation_duration_seconds", "op" => op.name()).record(t0.elapsed().as_secs_f64());
}

/// Live workspaces by state (for the `vws_resources` gauge).
pub async fn state_counts(home: &Home) -> std::collections::BTreeMap<&'static str, u64> {
    let mut out = std::collections::BTreeMap::new();
    for key in home.keys() {
        if let Ok(s) = home.read(&key, FaultType::RpResourceUnknown, |st| Ok(WorkspaceData::of(st)?.state)).await {
            *out.entry(s.as_str()).or_insert(0) += 1;
        }
    }
    out
}

/// The answer to a Manager operation: the workspace's state.
fn state_reply(op: &str, s: State) -> SoapReply {
    let op = ManagerOp::from_name(op).expect("a Manager operation");
    answer(&ManagerRequest::new(op), &ManagerResponse { op, state: s.as_str().to_string() })
}

impl super::registry::Operations for ManagerService {
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> super::registry::MaybeFuture<'a> {
        Box::pin(ManagerService::dispatch(self, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::staging::{Item, StagingStatus};
    use std::time::Duration;

    #[test]
    fn staging_xml_carries_progress_and_errors() {
        let items = vec![
            Item { name: "root".into(), url: "gsiftp://h/a&b".into(), digest: None, file: "/p/k/disk00-root".into() },
            Item { name: "cd".into(), url: "http://h/cd.iso".into(), digest: None, file: "/p/k/cdrom00-cd".into() },
        ];
        let mut r = Report::new(&items, time::now_ms());
        r.status = StagingStatus::Staging;
        r.images[0].status = ImageStatus::Staging;
        r.images[0].bytes = 10;
        r.images[0].total = Some(40);
        r.images[0].rate = 5.4;
        r.images[0].eta = Some(Duration::from_millis(5500));
        let x = staging_xml(&r);
        assert!(x.contains("status=\"staging\" bytes=\"10\" started="), "{x}");
        assert!(!x.contains(" total=\"40\" started"), "total only once every size is known: {x}");
        assert!(
            x.contains("url=\"gsiftp://h/a&amp;b\" status=\"staging\" bytes=\"10\" total=\"40\" rate=\"5\" eta=\"6\""),
            "{x}"
        );
        r.images[1].total = Some(2);
        r.error = Some(("checksum_mismatch".into(), "a < b".into()));
        let x = staging_xml(&r);
        assert!(x.contains("bytes=\"10\" total=\"42\""), "{x}");
        assert!(x.contains("<w:error kind=\"checksum_mismatch\">a &lt; b</w:error>"), "{x}");
        crate::soap::xml::parse(&x, &Default::default()).expect("well-formed");
    }

    #[test]
    fn plan_errors_become_typed_faults() {
        let f = plan_fault(PlanError::Policy { rule: "staging.file_roots", reason: "image x is outside".into() });
        assert_eq!(f.kind, FaultType::PolicyRejected);
        assert!(f.description.contains("rule 'staging.file_roots': image x is outside"), "{}", f.description);
        assert_eq!(f.error_code.map(|c| c.1).as_deref(), Some("staging.file_roots"));
        let f = plan_fault(PlanError::Invalid { code: Some("not_found"), reason: "image y: gone".into() });
        assert_eq!((f.kind, f.description.as_str()), (FaultType::InvalidDescription, "image y: gone"));
    }
}
