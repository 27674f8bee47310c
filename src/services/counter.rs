//! GT 4.0's WSRF counter sample (`http://counter.com`): createCounter, add, the `Value`
//! property. `CounterService` matches the GT 4.0 deployment (no SetResourceProperties);
//! `CounterServiceRW` also lets SetResourceProperties update `Value`. Hosted so that the
//! recordings of a live GT 4.0 container replay against vws unchanged.

use super::registry::PortType;
use super::request::DispatchFuture;
use super::request::{SoapReply, SoapRequest};
use super::{unknown_operation, wsrf_operation, Shared};
use crate::security::Action;
use crate::soap::envelope::SoapFault;
use crate::soap::ns::COUNTER;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::QName;
use crate::wsrf::{BaseFault, FaultType, Home, LifetimePolicy, PropertyDecl, ResourceState, ResourceType};
use std::sync::Arc;

pub const NAME: &str = "CounterService";
pub const NAME_RW: &str = "CounterServiceRW";

pub struct CounterService {
    pub home: Arc<Home>,
    pub shared: Arc<Shared>,
    writable: bool,
}

/// The counter's resource property document: `{http://counter.com}Counter`.
pub fn resource_type(writable: bool) -> ResourceType {
    let value =
        if writable { PropertyDecl::modifiable(COUNTER, "Value", 1, Some(1)) } else { PropertyDecl::read_only(COUNTER, "Value") };
    ResourceType::new(QName::new(COUNTER, "Counter"), vec![value]).with_topics()
}

pub fn key_name() -> QName {
    QName::new(COUNTER, "CounterKey")
}

fn value_xml(v: i64) -> String {
    let mut w = XmlWriter::with_capacity(64);
    w.leaf("ns1:Value", &[("xmlns:ns1", COUNTER)], &v.to_string());
    w.into_string()
}

fn read_value(st: &ResourceState, home: &Home) -> i64 {
    st.get(&home.rtype, &QName::new(COUNTER, "Value"))
        .and_then(|v| crate::soap::xml::parse(&v.xml, &Default::default()).ok())
        .and_then(|e| e.text().trim().parse().ok())
        .unwrap_or(0)
}

impl CounterService {
    pub fn new(home: Arc<Home>, shared: Arc<Shared>, writable: bool) -> Self {
        CounterService { home, shared, writable }
    }

    pub async fn dispatch(&self, req: &SoapRequest) -> Result<SoapReply, SoapFault> {
        let payload = req.env.payload();
        if payload.name.ns == COUNTER {
            let out = match payload.name.local.as_str() {
                "createCounter" => self.create_counter(req).await,
                "add" => self.add(req).await,
                _ => Err(unknown_operation(req)),
            };
            return out.map_err(SoapFault::from);
        }
        let policy = LifetimePolicy::default();
        match wsrf_operation(&self.shared, &self.home, req, &policy, self.writable, |_| {}).await {
            Some(r) => r,
            None => Err(unknown_operation(req).into()),
        }
    }

    /// createCounter: a new counter at 0, never terminating (as GT 4.0's sample).
    async fn create_counter(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        self.shared.authorize(&req.caller, Action::Create, None)?;
        let mut st = ResourceState::new(&self.home.rtype, req.caller.as_owner(), None);
        st.set(&self.home.rtype, COUNTER, "Value", vec![value_xml(0)]);
        let key = self.home.create(st).await?;
        let mut w = XmlWriter::with_capacity(512);
        w.start("createCounterResponse", &[("xmlns", COUNTER)]);
        self.home.epr(&req.service_url, &key).encode(&mut w, "wsa:EndpointReference", &[crate::soap::epr::WSA_DECL]);
        w.end("createCounterResponse");
        Ok(SoapReply { action: format!("{COUNTER}/CounterPortType/createCounterResponse"), payload: w.into_string() })
    }

    /// add: Value += n; answers the new value.
    async fn add(&self, req: &SoapRequest) -> Result<SoapReply, BaseFault> {
        let payload = req.env.payload();
        let text = payload.text();
        let n: i64 = text
            .trim()
            .parse()
            .map_err(|_| BaseFault::new(FaultType::InvalidRequest, format!("add takes an integer, not '{}'", text.trim())))?;
        let key = self.home.key_from(&req.env, FaultType::RpResourceUnknown)?;
        let home = &self.home;
        let v = home
            .update(&key, FaultType::RpResourceUnknown, |st| {
                self.shared.authorize(&req.caller, Action::Manage, Some(&st.owner))?;
                let v = read_value(st, home)
                    .checked_add(n)
                    .ok_or_else(|| BaseFault::new(FaultType::InvalidRequest, "counter overflow"))?;
                st.set(&home.rtype, COUNTER, "Value", vec![value_xml(v)]);
                Ok(v)
            })
            .await?;
        let mut w = XmlWriter::with_capacity(64);
        w.leaf("addResponse", &[("xmlns", COUNTER)], &v.to_string());
        Ok(SoapReply { action: format!("{COUNTER}/CounterPortType/addResponse"), payload: w.into_string() })
    }
}

impl PortType for CounterService {
    fn name(&self) -> &str {
        if self.writable {
            NAME_RW
        } else {
            NAME
        }
    }
    fn wsdl_template(&self) -> &'static str {
        include_str!("../../wsdl/counter.wsdl")
    }
    fn key_header(&self) -> Option<&QName> {
        Some(&self.home.key_name)
    }
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a> {
        Box::pin(CounterService::dispatch(self, req))
    }
}
