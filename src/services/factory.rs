//! `WorkspaceFactoryService` (port type `{vws}WorkspaceFactoryPortType`): `create` validates a
//! workspace description, applies the site policy, creates the workspace resource and returns
//! its EPR.

use super::registry::PortType;
use super::request::DispatchFuture;
use super::request::{SoapReply, SoapRequest};
use super::workspace;
use super::{answer, unknown_operation, Shared};
use crate::security::Action;
use crate::soap::envelope::SoapFault;
use crate::soap::epr::WSA_DECL;
use crate::soap::message::Message;
use crate::soap::ns::{NIMBUS, VWS};
use crate::workspace::messages::{Create, CreateResponse};
use crate::workspace::{Description, Policy};
use crate::wsrf::{BaseFault, FaultType, Home};
use std::sync::Arc;

pub const NAME: &str = "WorkspaceFactoryService";
pub const PORT_TYPE: &str = crate::workspace::messages::FACTORY_PORT_TYPE;

pub struct FactoryService {
    pub shared: Arc<Shared>,
    pub policy: Policy,
    pub workspaces: Arc<Home>,
    /// The Repository's checkouts (issue 12): a create holds off its image gc until the new
    /// workspace's references are in the catalogue, and with a remote site Repository enrols
    /// the workspace there before it answers.
    pub checkouts: Option<Arc<super::repository::Checkouts>>,
}

impl FactoryService {
    pub async fn dispatch(&self, req: &SoapRequest) -> Result<SoapReply, SoapFault> {
        let p = req.env.payload();
        let r = if p.is(VWS, "create") {
            self.create(req).await
        } else if p.name.ns == NIMBUS && p.name.local == "create" {
            Err(BaseFault::new(
                FaultType::UnknownOperation,
                format!(
                    "Nimbus' factory protocol ({{{NIMBUS}}}create) is not supported; send {{{VWS}}}create with a virtualWorkspace description"
                ),
            ))
        } else {
            Err(unknown_operation(req))
        };
        r.map_err(SoapFault::from)
    }

    /// create: description in, EPR of the new workspace out.
    pub async fn create(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Create, None)?;
        let msg = Create::decode(req.env.payload()).map_err(|e| BaseFault::new(FaultType::InvalidDescription, e.0))?;
        let vw = &msg.description;
        // Line numbers are reported relative to the description's first line.
        let description = Description::from_element(vw).map_err(|e| {
            let line = e.line.saturating_sub(vw.line) + 1;
            BaseFault::new(
                FaultType::InvalidDescription,
                format!("invalid workspace description: line {line}, element {}: {}", e.path, e.message),
            )
            .code(e.path.clone())
        })?;
        let lifetime = self.policy.admit(&description).map_err(|r| {
            tracing::info!(caller = req.caller.name(), rule = r.rule, "workspace rejected: {}", r.message);
            BaseFault::new(FaultType::PolicyRejected, format!("rejected by site policy rule '{}': {}", r.rule, r.message))
                .code(r.rule)
        })?;
        let key = Home::new_key();
        let service_url = format!("{}/wsrf/services/{}", req.base_url, workspace::NAME);
        let epr = self.workspaces.epr(&service_url, &key);
        let epr_xml = epr.to_xml("w:EPR", &[("xmlns:w", VWS), WSA_DECL]);
        let st = workspace::new_resource(&self.workspaces.rtype, key, epr_xml, req.caller.as_owner(), description, lifetime);
        // gc waits until the new workspace's image references are in the catalogue.
        let _no_gc = match &self.checkouts {
            Some(c) => Some(c.gc_lock.read().await),
            None => None,
        };
        let key = self.workspaces.create(st).await?;
        if let Some(c) = &self.checkouts {
            if let Err(e) = c.enrol(&self.workspaces, &key).await {
                // Not in the site's catalogue: not made at all.
                tracing::warn!(
                    caller = req.caller.name(),
                    key,
                    "workspace not enrolled at the site Repository: {}",
                    e.description
                );
                let _ = self.workspaces.destroy(&key, FaultType::RpResourceUnknown, |_| Ok(())).await;
                return Err(e);
            }
        }
        tracing::info!(caller = req.caller.name(), key, lifetime_s = lifetime, "workspace created");
        Ok(answer(&msg, &CreateResponse { epr }))
    }
}

impl PortType for FactoryService {
    fn name(&self) -> &str {
        NAME
    }
    fn wsdl_template(&self) -> &'static str {
        include_str!("../../wsdl/factory.wsdl")
    }
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a> {
        Box::pin(FactoryService::dispatch(self, req))
    }
}
