//! `WorkspaceService`: every workspace is a WS-Resource here, keyed by `{vws}WorkspaceKey`. Its
//! resource properties are the description's fields (vws namespace) plus Nimbus-compatible
//! `CurrentState`, `CurrentTime` and a writable `Comment` (Nimbus namespace), so that GT 4.0
//! generic clients used against Nimbus work unchanged, and `staging` (the progress of deploy).
//! Operations other than the WSRF ones go to this host's Manager ([`super::manager`]).

use super::registry::{Operations, PortType};
use super::request::DispatchFuture;
use super::request::{SoapReply, SoapRequest};
use super::{unknown_operation, wsrf_operation, Shared};
use crate::soap::envelope::SoapFault;
use crate::soap::ns::{NIMBUS, VWS};
use crate::soap::xml::QName;
use crate::workspace::description::text_property;
use crate::workspace::{Description, State};
use crate::wsrf::home::Source;
use crate::wsrf::{time, BaseFault, FaultType, Home, LifetimePolicy, PropertyDecl, ResourceState, ResourceType};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const NAME: &str = "WorkspaceService";

pub fn key_name() -> QName {
    QName::new(VWS, "WorkspaceKey")
}

/// The workspace resource property document `{vws}WorkspaceResourceProperties`.
pub fn resource_type() -> ResourceType {
    let ro = |l| PropertyDecl::read_only(VWS, l);
    ResourceType::new(
        QName::new(VWS, "WorkspaceResourceProperties"),
        vec![
            ro("category"),
            ro("state"),
            ro("EPR"),
            ro("creationTime"),
            ro("lifeCycle"),
            ro("lastModified"),
            ro("hardware"),
            ro("network"),
            ro("software"),
            ro("capability"),
            ro("owner"),
            ro("staging"),
            // The Manager's placement of the workspace on this host (set by deploy).
            ro("host"),
            ro("ip"),
            ro("mac"),
            ro("consoleLog"),
            ro("certificate"),
            ro("startTime"),
            // Why the workspace is Corrupted (or why its last operation failed).
            ro("cause"),
            PropertyDecl::read_only(NIMBUS, "CurrentState"),
            PropertyDecl::computed(NIMBUS, "CurrentTime", Source::CurrentTime),
            PropertyDecl::modifiable(NIMBUS, "Comment", 0, Some(1)),
        ],
    )
    .with_topics()
}

/// Service-private state of a workspace, kept with the resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkspaceData {
    pub description: Description,
    pub state: State,
    pub created_ms: i64,
    /// Deployed hot: booted once to its ready line and paused, so start only resumes.
    #[serde(default)]
    pub hot: bool,
    /// With a remote site Repository: the Manager host that keeps this workspace, which this
    /// host adopted for a deploy here (never enrolled from here). Stored, so it is still known
    /// after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_by: Option<String>,
}

/// Build the resource state of a new workspace.
pub fn new_resource(
    rtype: &ResourceType,
    key: String,
    epr_xml: String,
    owner: crate::security::Owner,
    description: Description,
    lifetime_secs: u64,
) -> ResourceState {
    let now = time::now_ms();
    let termination = now + lifetime_secs as i64 * 1000;
    let mut st = ResourceState::new(rtype, owner.clone(), Some(termination));
    st.key = key;
    let d = &description;
    let opt = |x: Option<String>| x.into_iter().collect::<Vec<_>>();
    let state = State::Unstaged;
    st.set(rtype, VWS, "category", vec![d.category_xml()]);
    st.set(rtype, VWS, "EPR", vec![epr_xml]);
    st.set(rtype, VWS, "creationTime", vec![text_property("creationTime", &time::format_ms(now))]);
    st.set(rtype, VWS, "lifeCycle", vec![text_property("lifeCycle", &lifetime_secs.to_string())]);
    st.set(rtype, VWS, "lastModified", vec![text_property("lastModified", &time::format_ms(now))]);
    st.set(rtype, VWS, "hardware", opt(d.hardware_xml()));
    st.set(rtype, VWS, "network", opt(d.network_xml()));
    st.set(rtype, VWS, "software", opt(d.software_xml()));
    st.set(rtype, VWS, "capability", opt(d.capability_xml()));
    st.set(rtype, VWS, "owner", vec![text_property("owner", owner.dn.as_deref().unwrap_or("anonymous"))]);
    WorkspaceData { description, state, created_ms: now, hot: false, kept_by: None }.store(rtype, &mut st);
    st
}

impl WorkspaceData {
    /// The workspace data of a resource.
    pub fn of(st: &ResourceState) -> Result<WorkspaceData, BaseFault> {
        serde_json::from_str(&st.data)
            .map_err(|e| BaseFault::new(FaultType::Internal, format!("workspace '{}' has unreadable stored data: {e}", st.key)))
    }

    /// Writes this data into the resource, with the properties that show the state (`state`,
    /// `CurrentState`).
    pub fn store(&self, rtype: &ResourceType, st: &mut ResourceState) {
        st.set(rtype, VWS, "state", vec![text_property("state", self.state.image_state().as_str())]);
        st.set(rtype, NIMBUS, "CurrentState", vec![current_state_xml(self.state)]);
        st.set_data(&serde_json::to_string(self).expect("serializable"));
    }
}

/// `<n:CurrentState>` of a state.
pub fn current_state_xml(state: State) -> String {
    crate::workspace::messages::current_state_xml(state.as_str())
}

/// Stamps `lastModified` with the current time.
pub fn touch(rtype: &ResourceType, st: &mut ResourceState) {
    st.set(rtype, VWS, "lastModified", vec![text_property("lastModified", &time::format_ms(time::now_ms()))]);
}

pub struct WorkspaceService {
    pub home: Arc<Home>,
    pub shared: Arc<Shared>,
    pub lifetime: LifetimePolicy,
    /// Other port types' operations sent to a workspace's EPR (this host's Manager: deploy,
    /// undeploy), asked in order.
    pub operations: Vec<Arc<dyn Operations>>,
}

impl WorkspaceService {
    pub async fn dispatch(&self, req: &SoapRequest) -> Result<SoapReply, SoapFault> {
        let rtype = &self.home.rtype;
        match wsrf_operation(&self.shared, &self.home, req, &self.lifetime, true, |st| touch(rtype, st)).await {
            Some(r) => r,
            None => {
                for ops in &self.operations {
                    if let Some(r) = ops.dispatch(req).await {
                        return r;
                    }
                }
                Err(unknown_operation(req).into())
            }
        }
    }
}

impl PortType for WorkspaceService {
    fn name(&self) -> &str {
        NAME
    }
    fn wsdl_template(&self) -> &'static str {
        include_str!("../../wsdl/workspace.wsdl")
    }
    fn key_header(&self) -> Option<&QName> {
        Some(&self.home.key_name)
    }
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a> {
        Box::pin(WorkspaceService::dispatch(self, req))
    }
}
