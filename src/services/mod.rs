//! The port types vws hosts, one file each, registered by name in the [`Registry`]
//! ([`registry`]); [`request`] is what the edge hands them.
//!
//! * `WorkspaceFactoryService` ([`factory`]): create workspaces.
//! * `WorkspaceService` ([`workspace`]): the workspace WS-Resources; the Manager's operations
//!   ([`manager`]: deploy, undeploy) are sent to a workspace's EPR too.
//! * `SubscriptionManagerService` ([`subscription`]): WS-BaseNotification subscriptions made by
//!   Subscribe on any resource that publishes topics (Pause/Resume, lifetime, properties).
//! * `CounterService`, `CounterServiceRW` ([`counter`]): GT 4.0's counter sample, hosted so that
//!   recordings of a real GT 4.0 container can be replayed against vws and compared.

pub mod counter;
pub mod factory;
pub mod host_manager;
pub mod manager;
pub mod registry;
pub mod repository;
pub mod request;
pub mod subscription;
pub mod workspace;

pub use registry::{Operations, PortType, Registry};
pub use request::{DispatchFuture, Dispatcher, ImageFiles, ImageRefusal, SoapReply, SoapRequest};

use crate::security::{Action, Authorizer, Caller, Owner};
use crate::soap::envelope::SoapFault;
use crate::soap::message::{Message, Request};
use crate::soap::ns;
use crate::wsrf::messages as m;
use crate::wsrf::notify_messages::{GetCurrentMessage, Subscribe};
use crate::wsrf::{lifetime, notification, properties, Access, BaseFault, FaultType, Home, LifetimePolicy};
use std::sync::Arc;

/// What every service function gets besides the request.
pub struct Shared {
    pub auth: Arc<dyn Authorizer>,
    /// Subscriptions and Notify delivery (WS-BaseNotification); None: no topics published.
    pub notifier: Option<Arc<notification::Notifier>>,
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

/// The answer to request `req`: its response action and the encoded response.
pub(crate) fn answer<R: Request>(req: &R, resp: &R::Response) -> SoapReply {
    SoapReply { action: req.response_action(), payload: resp.to_xml() }
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
            (ns::WSRP, "GetResourceProperty") => {
                let r = m::GetResourceProperty::decode(payload)?;
                answer(&r, &properties::get_property(home, &key, &r, read_guard).await?)
            }
            (ns::WSRP, "GetMultipleResourceProperties") => {
                let r = m::GetMultipleResourceProperties::decode(payload)?;
                answer(&r, &properties::get_multiple_properties(home, &key, &r, read_guard).await?)
            }
            (ns::WSRP, "QueryResourceProperties") => {
                let r = m::QueryResourceProperties::decode(payload)?;
                answer(&r, &properties::query_properties(home, &key, req.caller.name(), &r, read_guard).await?)
            }
            (ns::WSRP, "SetResourceProperties") if settable => {
                let r = m::SetResourceProperties::decode(payload)?;
                let action = r.response_action();
                SoapReply { action, payload: properties::set_properties(home, &key, r, read_guard, touch).await?.to_xml() }
            }
            (ns::WSRL, "Destroy") => {
                let r = m::Destroy::decode(payload)?;
                answer(&r, &lifetime::destroy(home, &key, manage_guard).await?)
            }
            (ns::WSRL, "SetTerminationTime") => {
                let r = m::SetTerminationTime::decode(payload)?;
                answer(&r, &lifetime::set_termination(home, &key, &r, lifetime_policy, manage_guard).await?)
            }
            (ns::WSNT, "Subscribe") | (ns::WSNT, "GetCurrentMessage") => {
                let guard = |st: &crate::wsrf::ResourceState| shared.authorize(&req.caller, Action::Read, Some(&st.owner));
                let Some(n) = &shared.notifier else {
                    home.read(&key, FaultType::NtResourceUnknown, guard).await?;
                    return Err(BaseFault::new(
                        FaultType::TopicNotSupported,
                        format!("service {} publishes no notification topics", home.service),
                    ));
                };
                if op.1 == "Subscribe" {
                    let r = Subscribe::decode(payload)?;
                    let owner = req.caller.as_owner();
                    answer(&r, &n.subscribe(home, &key, &r, &req.service_url, owner, lifetime_policy, guard).await?)
                } else {
                    let r = GetCurrentMessage::decode(payload)?;
                    answer(&r, &n.current_message(home, &key, &r, guard).await?)
                }
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
