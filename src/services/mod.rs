//! The port types vws hosts, one file each, registered by name in the [`Registry`]
//! ([`registry`]); [`request`] is what the edge hands them.
//!
//! * `WorkspaceFactoryService` ([`factory`]): create workspaces.
//! * `WorkspaceService` ([`workspace`]): the workspace WS-Resources; the Manager's operations
//!   ([`manager`]: deploy, undeploy) are sent to a workspace's EPR too.
//! * `CounterService`, `CounterServiceRW` ([`counter`]): GT 4.0's counter sample, hosted so that
//!   recordings of a real GT 4.0 container can be replayed against vws and compared.

pub mod counter;
pub mod factory;
pub mod manager;
pub mod registry;
pub mod repository;
pub mod request;
pub mod workspace;

pub use registry::{Operations, PortType, Registry};
pub use request::{DispatchFuture, Dispatcher, SoapReply, SoapRequest};

use crate::security::{Action, Authorizer, Caller, Owner};
use crate::soap::envelope::SoapFault;
use crate::soap::ns;
use crate::wsrf::{lifetime, notification, properties, Access, BaseFault, FaultType, Home, LifetimePolicy};
use std::sync::Arc;

/// What every service function gets besides the request.
pub struct Shared {
    pub auth: Arc<dyn Authorizer>,
}

impl Shared {
    /// The one authorisation hook: refuse with a typed fault naming the rule, and log it.
    pub fn authorize(&self, caller: &Caller, action: Action, owner: Option<&Owner>) -> Result<(), BaseFault> {
        self.auth.authorize(caller, action, owner).map_err(|d| {
            tracing::warn!(caller = caller.name(), action = action.as_str(), rule = %d.rule, "denied: {}", d.reason);
            BaseFault::new(FaultType::AuthorizationFailed, d.reason).code(d.rule)
        })
    }
}

fn reply(action: String, payload: String) -> SoapReply {
    SoapReply { action, payload }
}

/// The generic WSRF operations of a resource port type (properties, lifetime, notification).
/// Returns None when the payload is not one of them.
pub(crate) async fn wsrf_operation(
    shared: &Shared,
    home: &Home,
    req: &SoapRequest,
    lifetime_policy: &LifetimePolicy,
    settable: bool,
    touch: impl FnOnce(&mut crate::wsrf::ResourceState),
) -> Option<Result<SoapReply, SoapFault>> {
    let payload = req.env.payload();
    let op = (payload.name.ns.as_str(), payload.name.local.as_str());
    let unknown_kind = match op.0 {
        ns::WSRP => FaultType::RpResourceUnknown,
        ns::WSRL => FaultType::RlResourceUnknown,
        ns::WSNT => FaultType::NtResourceUnknown,
        _ => return None,
    };
    let read_guard = |st: &crate::wsrf::ResourceState, access: Access| {
        let action = if access == Access::Read { Action::Read } else { Action::Manage };
        shared.authorize(&req.caller, action, Some(&st.owner))
    };
    let manage_guard = |st: &crate::wsrf::ResourceState| shared.authorize(&req.caller, Action::Manage, Some(&st.owner));
    let result = async {
        let key = home.key_from(&req.env, unknown_kind)?;
        let out = match op {
            (ns::WSRP, "GetResourceProperty") => reply(
                format!("{}/GetResourcePropertyResponse", ns::WSRP_ACTION),
                properties::get(home, &key, payload, read_guard).await?,
            ),
            (ns::WSRP, "GetMultipleResourceProperties") => reply(
                format!("{}/GetMultipleResourcePropertiesResponse", ns::WSRP_ACTION),
                properties::get_multiple(home, &key, payload, read_guard).await?,
            ),
            (ns::WSRP, "QueryResourceProperties") => reply(
                format!("{}/QueryResourcePropertiesResponse", ns::WSRP_ACTION),
                properties::query(home, &key, req.caller.name(), payload, read_guard).await?,
            ),
            (ns::WSRP, "SetResourceProperties") if settable => reply(
                format!("{}/SetResourcePropertiesResponse", ns::WSRP_ACTION),
                properties::set(home, &key, payload, read_guard, touch).await?,
            ),
            (ns::WSRL, "Destroy") => {
                reply(format!("{}/DestroyResponse", ns::WSRL_ACTION), lifetime::destroy(home, &key, manage_guard).await?)
            }
            (ns::WSRL, "SetTerminationTime") => reply(
                format!("{}/SetTerminationTimeResponse", ns::WSRL_ACTION),
                lifetime::set_termination_time(home, &key, payload, lifetime_policy, manage_guard).await?,
            ),
            (ns::WSNT, "GetCurrentMessage") | (ns::WSNT, "Subscribe") => {
                // Check the resource exists and may be read, then say what is missing.
                home.read(&key, FaultType::NtResourceUnknown, |st| shared.authorize(&req.caller, Action::Read, Some(&st.owner)))
                    .await?;
                return Err(notification::unsupported(payload));
            }
            _ => return Err(unknown_operation(req)),
        };
        Ok::<SoapReply, BaseFault>(out)
    }
    .await;
    Some(result.map_err(SoapFault::from))
}

/// The fault for a body element no operation of the service takes.
pub(crate) fn unknown_operation(req: &SoapRequest) -> BaseFault {
    BaseFault::new(
        FaultType::UnknownOperation,
        format!(
            "service {} has no operation for body element {} (action '{}')",
            req.service,
            req.env.payload().name,
            req.env.addressing.action.as_deref().unwrap_or("")
        ),
    )
}
