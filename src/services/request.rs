//! What the edge hands a port type and what it gets back: a decoded request with its caller and
//! the addresses it was received at, and a successful answer. Faults travel as `SoapFault`.

use crate::security::Caller;
use crate::soap::envelope::{Envelope, SoapFault};
use crate::soap::xml::QName;
use std::future::Future;
use std::pin::Pin;

/// A request as services see it.
pub struct SoapRequest {
    pub service: String,
    pub env: Envelope,
    pub caller: Caller,
    /// The URL this request was addressed to (`scheme://host/wsrf/services/Name`), built from
    /// the configured `public_url` or the listener's own address, never from the client's Host.
    pub service_url: String,
    /// `scheme://host` of the same.
    pub base_url: String,
}

/// A successful answer: the response action and the Body's child.
pub struct SoapReply {
    pub action: String,
    pub payload: String,
}

pub type DispatchFuture<'a> = Pin<Box<dyn Future<Output = Result<SoapReply, SoapFault>> + Send + 'a>>;

/// The container's services, as the HTTP edge needs them.
pub trait Dispatcher: Send + Sync + 'static {
    fn has_service(&self, name: &str) -> bool;
    /// The service's WSDL with its soap:address set to `url`.
    fn wsdl(&self, name: &str, url: &str) -> Option<String>;
    /// Headers (beyond WS-Addressing) this service processes, for mustUnderstand.
    fn understands(&self, name: &str, header: &QName) -> bool;
    /// The header that selects a resource of this service (its EPR's reference property).
    fn key_header(&self, name: &str) -> Option<&QName>;
    fn dispatch<'a>(&'a self, req: &'a SoapRequest) -> DispatchFuture<'a>;
}

/// Why the image route (`GET /wsrf/images/<sha256>`) refuses a request.
#[derive(Debug)]
pub enum ImageRefusal {
    /// Not a SHA-256 digest (400).
    BadName(String),
    /// The caller may not read the site's images (403).
    Denied(String),
    /// No such image in the store (404).
    Unknown(String),
}

/// The site Repository's image store as the edge's image route needs it: the file of an image
/// the caller may read (authorised like the Repository's other reads).
pub trait ImageFiles: Send + Sync + 'static {
    fn image_file(&self, caller: &Caller, sha256: &str) -> Result<std::path::PathBuf, ImageRefusal>;
}
