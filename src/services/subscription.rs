//! `SubscriptionManagerService`: the WS-BaseNotification subscriptions, each a WS-Resource keyed
//! by GT 4.0's `{http://www.globus.org/namespaces/2004/06/core}SubscriptionKey`.
//! `PauseSubscription` / `ResumeSubscription`, WS-ResourceLifetime (Destroy, SetTerminationTime)
//! and WS-ResourceProperties reads; the machinery (Subscribe, delivery) is `wsrf::notification`.

use super::registry::PortType;
use super::request::{DispatchFuture, SoapReply, SoapRequest};
use super::{answer, unknown_operation, wsrf_operation, Shared};
use crate::security::Action;
use crate::soap::envelope::SoapFault;
use crate::soap::message::Message;
use crate::soap::ns;
use crate::soap::xml::QName;
use crate::wsrf::notification::{Notifier, SERVICE};
use crate::wsrf::notify_messages::{
    PauseSubscription, PauseSubscriptionResponse, ResumeSubscription, ResumeSubscriptionResponse,
};
use crate::wsrf::{BaseFault, FaultType, LifetimePolicy};
use std::sync::Arc;

pub struct SubscriptionService {
    pub notifier: Arc<Notifier>,
    pub shared: Arc<Shared>,
    pub lifetime: LifetimePolicy,
}

impl SubscriptionService {
    pub async fn dispatch(&self, req: &SoapRequest) -> Result<SoapReply, SoapFault> {
        let payload = req.env.payload();
        if payload.name.ns == ns::WSNT && matches!(payload.name.local.as_str(), "PauseSubscription" | "ResumeSubscription") {
            let paused = payload.name.local == "PauseSubscription";
            let r = async {
                let key = self.notifier.subs.key_from(&req.env, FaultType::NtResourceUnknown)?;
                let guard = |st: &crate::wsrf::ResourceState| self.shared.authorize(&req.caller, Action::Manage, Some(&st.owner));
                Ok::<_, BaseFault>(if paused {
                    let r = PauseSubscription::decode(payload)?;
                    self.notifier.set_paused(&key, true, guard).await?;
                    answer(&r, &PauseSubscriptionResponse)
                } else {
                    let r = ResumeSubscription::decode(payload)?;
                    self.notifier.set_paused(&key, false, guard).await?;
                    answer(&r, &ResumeSubscriptionResponse)
                })
            }
            .await;
            return r.map_err(SoapFault::from);
        }
        match wsrf_operation(&self.shared, &self.notifier.subs, req, &self.lifetime, false, |_| {}).await {
            Some(r) => r,
            None => Err(unknown_operation(req).into()),
        }
    }
}

impl PortType for SubscriptionService {
    fn name(&self) -> &str {
        SERVICE
    }
    fn wsdl_template(&self) -> &'static str {
        include_str!("../../wsdl/subscription.wsdl")
    }
    fn key_header(&self) -> Option<&QName> {
        Some(&self.notifier.subs.key_name)
    }
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a> {
        Box::pin(SubscriptionService::dispatch(self, req))
    }
}
