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
use super::workspace::{current_state_xml, touch, WorkspaceData};
use super::{reply, Shared};
use crate::host::staging::{ImageStatus, Report};
use crate::host::{BoxFuture, Host, Ledger, PlanError};
use crate::security::Action;
use crate::soap::envelope::SoapFault;
use crate::soap::ns::VWS;
use crate::soap::xml::escape_attr;
use crate::workspace::{Description, Event, State};
use crate::wsrf::{time, BaseFault, FaultType, Home, ResourceState};
use std::fmt::Write as _;
use std::sync::Arc;

pub const PORT_TYPE: &str = "WorkspaceManagerPortType";

/// This host's Manager.
pub struct ManagerService {
    home: Arc<Home>,
    shared: Arc<Shared>,
    host: Arc<Host>,
}

/// The `{vws}staging` property for a staging report.
pub fn staging_xml(r: &Report) -> String {
    let mut s = format!("<w:staging xmlns:w=\"{VWS}\" status=\"{}\" bytes=\"{}\"", r.status.as_str(), r.bytes());
    if let Some(t) = r.total() {
        let _ = write!(s, " total=\"{t}\"");
    }
    let _ = write!(s, " started=\"{}\"", time::format_ms(r.started_ms));
    if let Some(f) = r.finished_ms {
        let _ = write!(s, " finished=\"{}\"", time::format_ms(f));
    }
    s.push('>');
    for i in &r.images {
        let _ = write!(
            s,
            "<w:image name=\"{}\" url=\"{}\" status=\"{}\" bytes=\"{}\"",
            escape_attr(&i.name),
            escape_attr(&i.url),
            i.status.as_str(),
            i.bytes
        );
        if let Some(t) = i.total {
            let _ = write!(s, " total=\"{t}\"");
        }
        if i.status == ImageStatus::Staging {
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
    if let Some((kind, msg)) = &r.error {
        let _ = write!(s, "<w:error kind=\"{}\">{}</w:error>", escape_attr(kind), crate::soap::xml::escape(msg));
    }
    s.push_str("</w:staging>");
    s
}

fn invalid_state(key: &str, op: &str, s: State) -> BaseFault {
    BaseFault::new(FaultType::InvalidState, format!("workspace '{key}' is {}: {op} is not possible in that state", s.as_str()))
        .code(s.as_str())
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
        Box::pin(
            async move { self.home.read(key, FaultType::RpResourceUnknown, WorkspaceData::of).await.ok().map(|d| d.description) },
        )
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
            self.home
                .update(key, FaultType::RpResourceUnknown, |st| {
                    transition(&self.home, st, key, event, "finishing a staging", Some(report))
                })
                .await
                .map_err(|e| e.description)
        })
    }
}

impl ManagerService {
    /// The Manager for `home`'s workspaces, on this host's engine. A destroyed workspace's
    /// images go with it: its staging is cancelled and what it made is removed.
    pub fn new(home: Arc<Home>, shared: Arc<Shared>, host: Arc<Host>) -> Arc<ManagerService> {
        let weak = Arc::downgrade(&host);
        home.on_destroy(Box::new(move |key| {
            if let Some(host) = weak.upgrade() {
                host.discard(key);
            }
        }));
        Arc::new(ManagerService { home, shared, host })
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
        let home = &self.home;
        let key = home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        no_arguments(req)?;
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
        let plan = self.host.plan(&key, &description).map_err(|e| {
            tracing::warn!(caller = req.caller.name(), key, rule = e.kind(), "deploy refused: {e}");
            plan_fault(e)
        })?;
        let report = plan.report();
        // Checked again under the lock: a concurrent deploy may have won.
        home.update(&key, FaultType::RpResourceUnknown, |st| transition(home, st, &key, Event::Deploy, "deploy", Some(&report)))
            .await?;
        tracing::info!(caller = req.caller.name(), key, images = plan.items.len(), "deploy: staging started");
        self.host.start_staging(plan);
        Ok(state_reply("deploy", State::Staging))
    }

    /// undeploy: Staged or Saved → Unstaged; the images are removed once that is durable.
    pub async fn undeploy(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let home = &self.home;
        let key = home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        no_arguments(req)?;
        home.update(&key, FaultType::RpResourceUnknown, |st| {
            self.shared.authorize(&req.caller, Action::Deploy, Some(&st.owner))?;
            transition(home, st, &key, Event::Undeploy, "undeploy", None)
        })
        .await?;
        self.host.release(&key).await;
        tracing::info!(caller = req.caller.name(), key, "undeploy: images released");
        Ok(state_reply("undeploy", State::Unstaged))
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
