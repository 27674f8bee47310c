//! `WorkspaceManagerService` (port type `{vws}WorkspaceManagerPortType`, `wsdl/manager.wsdl`):
//! this host's Manager as a singleton WS-Resource (no key header, one per vwsd), read with
//! GetResourceProperty and GetMultipleResourceProperties. Its resource property document
//! `w:ManagerResourceProperties` is computed when asked:
//!
//! * `w:host`: this machine's name;
//! * `w:driver`: `qemu`, `xen` or `none` (`vmm.driver`);
//! * `w:orphans`: VMs the driver sees that no workspace owns, from the last reconciliation,
//!   each with its driver, process or domain id, state and when it was first seen. They are
//!   listed, never killed: a person decides;
//! * `w:addresses`: the `[network]` pool's range, leased and free addresses (with a driver).
//!
//! The Manager's VM operations are sent to a workspace's EPR (`services/manager.rs`).

use super::manager::ManagerService;
use super::registry::PortType;
use super::request::{DispatchFuture, SoapReply, SoapRequest};
use super::{answer, unknown_operation, Shared};
use crate::security::Action;
use crate::soap::envelope::SoapFault;
use crate::soap::message::Message;
use crate::soap::ns::{self, VWS};
use crate::soap::writer::XmlWriter;
use crate::soap::xml::QName;
use crate::wsrf::messages as m;
use crate::wsrf::{time, BaseFault, FaultType};
use std::sync::Arc;

pub const NAME: &str = "WorkspaceManagerService";

/// The properties, in document order.
const PROPERTIES: [&str; 4] = ["host", "driver", "orphans", "addresses"];

pub struct HostManagerService {
    pub manager: Arc<ManagerService>,
    pub shared: Arc<Shared>,
}

impl HostManagerService {
    pub async fn dispatch(&self, req: &SoapRequest) -> Result<SoapReply, SoapFault> {
        let p = req.env.payload();
        let r = if p.is(ns::WSRP, "GetResourceProperty") {
            match m::GetResourceProperty::decode(p) {
                Ok(r) => self
                    .values(req, std::slice::from_ref(&r.name))
                    .await
                    .map(|content| answer(&r, &m::GetResourcePropertyResponse { content })),
                Err(e) => Err(e),
            }
        } else if p.is(ns::WSRP, "GetMultipleResourceProperties") {
            match m::GetMultipleResourceProperties::decode(p) {
                Ok(r) => self
                    .values(req, &r.names)
                    .await
                    .map(|content| answer(&r, &m::GetMultipleResourcePropertiesResponse { content })),
                Err(e) => Err(e),
            }
        } else {
            Err(unknown_operation(req))
        };
        r.map_err(SoapFault::from)
    }

    /// The values of the named properties, in that order.
    async fn values(&self, req: &SoapRequest, names: &[QName]) -> Result<String, BaseFault> {
        self.shared.authorize(&req.caller, Action::Read, None)?;
        let mut wanted = Vec::new();
        for q in names {
            match PROPERTIES.iter().find(|n| q.ns == VWS && q.local == **n) {
                Some(n) => wanted.push(*n),
                None => return Err(BaseFault::new(FaultType::InvalidResourcePropertyQName, q.clark())),
            }
        }
        let mut out = String::new();
        for n in wanted {
            out.push_str(&self.property(n).await);
        }
        Ok(out)
    }

    /// One property's value(s) as XML (empty when it has none).
    async fn property(&self, name: &str) -> String {
        let m = &self.manager;
        let mut w = XmlWriter::new();
        let xmlns = [("xmlns:w", VWS)];
        match name {
            "host" => w.leaf("w:host", &xmlns, &super::manager::host_name()),
            "driver" => w.leaf("w:driver", &xmlns, m.driver()),
            "orphans" => {
                w.start("w:orphans", &xmlns);
                for o in m.orphans() {
                    let id = o.id.map(|id| id.to_string());
                    let state = format!("{:?}", o.state).to_lowercase();
                    let since = time::format_ms(o.since_ms);
                    let mut attrs = vec![("name", o.name.as_str()), ("driver", o.driver)];
                    attrs.extend(id.as_deref().map(|id| ("id", id)));
                    attrs.extend([("state", state.as_str()), ("since", since.as_str())]);
                    w.empty("w:vm", &attrs);
                }
                w.end("w:orphans")
            }
            _ => match m.addresses().await {
                Some((first, last, used, size)) => w.empty(
                    "w:addresses",
                    &[
                        ("xmlns:w", VWS),
                        ("first", &first.to_string()),
                        ("last", &last.to_string()),
                        ("inUse", &used.to_string()),
                        ("free", &size.saturating_sub(used).to_string()),
                    ],
                ),
                None => &mut w,
            },
        };
        w.into_string()
    }
}

impl PortType for HostManagerService {
    fn name(&self) -> &str {
        NAME
    }
    fn wsdl_template(&self) -> &'static str {
        include_str!("../../wsdl/manager.wsdl")
    }
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a> {
        Box::pin(HostManagerService::dispatch(self, req))
    }
}
