//! The registry of port types: each service registers its name, WSDL, the key header it
//! understands and its dispatch; the edge routes through it. Adding a port type is a new file in
//! `services/` implementing [`PortType`] and one `register` line in `app.rs`.

use super::request::{DispatchFuture, Dispatcher, SoapReply, SoapRequest};
use crate::soap::envelope::SoapFault;
use crate::soap::xml::QName;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One port type as the registry knows it.
pub trait PortType: Send + Sync + 'static {
    /// Service name: the last path segment of `/wsrf/services/{name}`.
    fn name(&self) -> &str;
    /// WSDL text with `SERVICE_ADDRESS` where the endpoint's URL goes.
    fn wsdl_template(&self) -> &'static str;
    /// The reference-property header selecting one of its resources, if it has resources.
    fn key_header(&self) -> Option<&QName> {
        None
    }
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a>;
}

/// Extra operations another port type answers on a resource port type's EPRs (the Manager's
/// deploy/undeploy on a workspace's EPR). `None`: not one of its operations.
pub type MaybeFuture<'a> = Pin<Box<dyn Future<Output = Option<Result<SoapReply, SoapFault>>> + Send + 'a>>;

pub trait Operations: Send + Sync + 'static {
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> MaybeFuture<'a>;
}

/// All port types of a container, by name.
#[derive(Default)]
pub struct Registry {
    ports: HashMap<String, Arc<dyn PortType>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Add a port type; a second one of the same name is a wiring error.
    pub fn register(&mut self, port: Arc<dyn PortType>) -> Result<(), String> {
        let name = port.name().to_string();
        if self.ports.contains_key(&name) {
            return Err(format!("port type '{name}' registered twice"));
        }
        self.ports.insert(name, port);
        Ok(())
    }

    /// Registered service names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.ports.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

impl Dispatcher for Registry {
    fn has_service(&self, name: &str) -> bool {
        self.ports.contains_key(name)
    }

    fn wsdl(&self, name: &str, url: &str) -> Option<String> {
        let p = self.ports.get(name)?;
        Some(p.wsdl_template().replace("SERVICE_ADDRESS", &crate::soap::xml::escape_attr(url)))
    }

    fn understands(&self, name: &str, header: &QName) -> bool {
        self.key_header(name) == Some(header)
    }

    fn key_header(&self, name: &str) -> Option<&QName> {
        self.ports.get(name).and_then(|p| p.key_header())
    }

    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a> {
        match self.ports.get(req.service.as_str()) {
            Some(p) => p.dispatch(req),
            None => Box::pin(std::future::ready(Err(SoapFault::client(format!("no service named '{}'", req.service))))),
        }
    }
}
