//! The client side, used by the `vws` command: build GT 4.0-style requests (WS-Addressing
//! headers, reference properties copied as headers), send them over HTTP/1.1, and turn answers
//! and SOAP faults into values and readable errors.

pub mod watch;

use crate::security::https::{check_gsi_peer, Connector, PeerCheck};
use crate::soap::epr::Epr;
use crate::soap::message::{Message, Request};
use crate::soap::ns;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::{self, Element, Limits, QName};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {msg}")]
    Transport { url: String, msg: String },
    /// A SOAP fault: faultstring, and the detail's fault element name.
    #[error("{fault}{}", .kind.as_ref().map(|k| format!(" [{k}]")).unwrap_or_default())]
    Fault { fault: String, kind: Option<String> },
    #[error("unreadable answer (HTTP {status}): {msg}")]
    BadAnswer { status: u16, msg: String },
}

pub struct Client {
    /// One pooled client for `http://` and `https://` (GSI transport: TLS with the credential,
    /// the server's chain and host name checked at each handshake), so calls to the same
    /// service reuse a connection instead of a new TLS handshake each.
    http: HyperClient<Connector, Full<Bytes>>,
    /// Whether this client has a GSI credential for `https://` URLs.
    gsi: bool,
    signing: Option<Signing>,
}

/// GSI Secure Message: requests signed with the user's proxy; answers must come back signed by
/// a trusted host.
struct Signing {
    signer: crate::security::wssec::Signer,
    trust: crate::security::TrustConfig,
    replay: crate::security::wssec::ReplayCache,
}

/// Longest TCP connect, and longest TLS handshake, of a new connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn pooled(c: Connector) -> HyperClient<Connector, Full<Bytes>> {
    // Idle connections are kept 30 s: a connection checked before the CA directory changed is
    // not used for longer than that afterwards.
    HyperClient::builder(TokioExecutor::new()).pool_idle_timeout(std::time::Duration::from_secs(30)).build(c)
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A plain-HTTP client (https:// URLs are refused).
    pub fn new() -> Self {
        Client { http: pooled(Connector::new(None, CONNECT_TIMEOUT)), gsi: false, signing: None }
    }

    /// A client that also speaks GSI transport, with the proxy from `proxy` or the standard
    /// places (`X509_USER_PROXY`, `/tmp/x509up_u<uid>`, …) and CAs from `X509_CERT_DIR` or
    /// `/etc/grid-security/certificates`.
    pub fn with_gsi(proxy: Option<&std::path::Path>) -> Result<Self, ClientError> {
        use crate::security::{CertDir, Credential};
        let cred = match proxy {
            Some(p) => Credential::load_proxy(p),
            None => Credential::find_user(),
        }
        .map_err(|e| ClientError::Usage(format!("credential: {e}")))?;
        let trust = CertDir::from_env().map_err(|e| ClientError::Usage(format!("trusted CAs: {e}")))?;
        Self::gsi(&cred, trust)
    }

    /// A client speaking GSI transport with `cred` (a host credential: one vwsd calling
    /// another's Repository) and the CAs of `cert_dir`.
    pub fn with_credential(cred: &crate::security::Credential, cert_dir: &std::path::Path) -> Result<Self, ClientError> {
        let trust = crate::security::CertDir::load(cert_dir).map_err(|e| ClientError::Usage(format!("trusted CAs: {e}")))?;
        Self::gsi(cred, trust)
    }

    /// GSI transport with `cred`: the host must prove a trusted identity that names the host
    /// dialled.
    fn gsi(cred: &crate::security::Credential, trust: crate::security::CertDir) -> Result<Self, ClientError> {
        let ssl = crate::security::tls::connector(Some(cred)).map_err(|e| ClientError::Usage(format!("TLS: {e}")))?.build();
        let check: PeerCheck = Arc::new(move |ssl, host| check_gsi_peer(ssl, host, &trust, "server credential refused"));
        let http = pooled(Connector::new(Some(ssl), CONNECT_TIMEOUT).with_check(check));
        Ok(Client { http, gsi: true, signing: None })
    }

    /// Sign every request (WS-Security X.509) with the proxy from `proxy` or the standard places,
    /// and require signed answers from a host trusted by `X509_CERT_DIR`.
    pub fn sign_with(mut self, proxy: Option<&std::path::Path>) -> Result<Self, ClientError> {
        use crate::security::{CertDir, Credential, TrustConfig};
        let cred = match proxy {
            Some(p) => Credential::load_proxy(p),
            None => Credential::find_user(),
        }
        .map_err(|e| ClientError::Usage(format!("credential: {e}")))?;
        let dir = CertDir::from_env().map_err(|e| ClientError::Usage(format!("trusted CAs: {e}")))?;
        let signer = crate::security::wssec::Signer::new(&cred).map_err(|e| ClientError::Usage(format!("signing: {e}")))?;
        self.signing = Some(Signing { signer, trust: TrustConfig::new(dir), replay: Default::default() });
        Ok(self)
    }

    async fn send(
        &self,
        to: &str,
        mut req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        if req.uri().scheme_str() == Some("https") {
            if !self.gsi {
                return Err(ClientError::Usage(format!("{to}: https needs a GSI credential (--https)")));
            }
            // An https URL without a port means GT 4.0's secure container port, 8443.
            if req.uri().port().is_none() {
                let mut parts = req.uri().clone().into_parts();
                let host = req.uri().host().unwrap_or_default();
                parts.authority = format!("{host}:8443").parse().ok();
                *req.uri_mut() = hyper::Uri::from_parts(parts).map_err(|e| ClientError::Usage(format!("bad URL {to}: {e}")))?;
            }
        }
        // hyper-util's error says only "client error (Connect)": name the causes too.
        self.http.request(req).await.map_err(|e| ClientError::Transport { url: to.to_string(), msg: with_causes(&e) })
    }

    /// Send `payload` (the Body's child) to `to` with `action`, reference properties of `epr` as
    /// headers; returns the Body's first child of the answer.
    pub async fn call(&self, to: &str, epr: Option<&Epr>, action: &str, payload: &str) -> Result<Element, ClientError> {
        let mu = ("soapenv:mustUnderstand", "0");
        let mut w = XmlWriter::with_capacity(1024 + payload.len());
        w.start("soapenv:Envelope", &[("xmlns:soapenv", ns::SOAPENV), ("xmlns:xsi", ns::XSI), ("xmlns:wsa", ns::WSA)])
            .start("soapenv:Header", &[])
            .leaf("wsa:MessageID", &[mu], &crate::soap::envelope::new_message_id())
            .leaf("wsa:To", &[mu], to)
            .leaf("wsa:Action", &[mu], action)
            .start("wsa:From", &[mu])
            .leaf("wsa:Address", &[], ns::WSA_ANONYMOUS)
            .end("wsa:From");
        for (q, v) in epr.map(|e| e.properties.as_slice()).unwrap_or(&[]) {
            w.leaf(&format!("k:{}", q.local), &[("xmlns:k", &q.ns), mu], v);
        }
        w.end("soapenv:Header").start("soapenv:Body", &[]).raw(payload).end("soapenv:Body").end("soapenv:Envelope");
        let mut env = w.into_string();
        if let Some(sg) = &self.signing {
            env = sg.signer.sign(&env).map_err(|e| ClientError::Usage(format!("signing: {e}")))?;
        }
        let authority = to.parse::<hyper::Uri>().ok().and_then(|u| u.authority().map(|a| a.to_string())).unwrap_or_default();
        let req = hyper::Request::post(to)
            .header("Host", authority)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{action}\""))
            .body(Full::new(Bytes::from(env)))
            .map_err(|e| ClientError::Usage(format!("bad URL {to}: {e}")))?;
        let resp = self.send(to, req).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport { url: to.to_string(), msg: e.to_string() })?
            .to_bytes();
        if let Some(sg) = &self.signing {
            match crate::security::wssec::verify(&body, &sg.trust, &sg.replay, crate::security::wssec::now_ms()) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(ClientError::BadAnswer { status, msg: "the answer to a signed request is not signed".into() })
                }
                Err(e) => return Err(ClientError::BadAnswer { status, msg: format!("the answer's signature is refused: {e}") }),
            }
        }
        let limits = Limits { max_depth: 256, max_elements: 1_000_000, max_attributes: 256 };
        let root = xml::parse_bytes(&body, &limits).map_err(|e| ClientError::BadAnswer {
            status,
            msg: format!("{e}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])),
        })?;
        let first = root
            .child(ns::SOAPENV, "Body")
            .and_then(|b| b.first_element())
            .cloned()
            .ok_or_else(|| ClientError::BadAnswer { status, msg: "no SOAP Body".into() })?;
        if first.is(ns::SOAPENV, "Fault") {
            let fault = first.child("", "faultstring").map(|f| f.text()).unwrap_or_default();
            let kind = first.child("", "detail").and_then(|d| d.first_element()).map(|e| e.name.local.to_string());
            return Err(ClientError::Fault { fault, kind });
        }
        Ok(first)
    }

    /// `GET url` (plain, or GSI transport for `https://` with this client's credential, the
    /// server's credential checked); the response with its body unread, to be streamed.
    pub async fn get(&self, url: &str) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let authority = url.parse::<hyper::Uri>().ok().and_then(|u| u.authority().map(|a| a.to_string())).unwrap_or_default();
        let req = hyper::Request::get(url)
            .header("Host", authority)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Usage(format!("bad URL {url}: {e}")))?;
        self.send(url, req).await
    }

    /// Send request `msg` to the resource `epr` names; its typed response, decoded by the same
    /// codec the service encodes it with.
    pub async fn invoke<R: Request>(&self, epr: &Epr, msg: &R) -> Result<R::Response, ClientError> {
        self.invoke_at(&epr.address, Some(epr), msg).await
    }

    /// [`Client::invoke`] to a service URL, with the reference properties of `epr` if any.
    pub async fn invoke_at<R: Request>(&self, to: &str, epr: Option<&Epr>, msg: &R) -> Result<R::Response, ClientError> {
        let answer = self.call(to, epr, &msg.action(), &msg.to_xml()).await?;
        R::Response::decode(&answer).map_err(|e| ClientError::BadAnswer { status: 200, msg: e.to_string() })
    }
}

/// An error's text followed by its sources' (`a: b: c`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// Property values as a response carries them (serialized XML), as an element whose children
/// are the values.
pub fn values_element(content: &str) -> Result<Element, ClientError> {
    crate::wsrf::messages::parse_content(content).map_err(|msg| ClientError::BadAnswer { status: 200, msg })
}

/// Read an EPR file (any root element of type wsa:EndpointReferenceType).
pub fn read_epr(path: &std::path::Path) -> Result<Epr, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    let root = xml::parse(&text, &Limits::default()).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    Epr::from_element(&root).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

/// Parse a property name given on the command line: `{ns}local`, `prefix:local` with a
/// well-known prefix (vws, nimbus, wsrl, wsrp), or a bare local name in the vws namespace.
pub fn parse_qname_arg(s: &str) -> Result<QName, ClientError> {
    if s.starts_with('{') {
        return QName::from_clark(s).ok_or_else(|| ClientError::Usage(format!("'{s}' is not a QName")));
    }
    let (ns_uri, local) = match s.split_once(':') {
        Some(("vws", l)) => (ns::VWS, l),
        Some(("nimbus", l)) => (ns::NIMBUS, l),
        Some(("wsrl", l)) => (ns::WSRL, l),
        Some(("wsrp", l)) => (ns::WSRP, l),
        Some((p, _)) => return Err(ClientError::Usage(format!("unknown prefix '{p}' in '{s}'; use {{namespace}}local"))),
        None => (ns::VWS, s),
    };
    if !xml::is_ncname(local) {
        return Err(ClientError::Usage(format!("'{s}' is not a QName")));
    }
    Ok(QName::new(ns_uri, local))
}

/// `RFC3339`, `+SECONDS` or `never`, to ms since the epoch (None = never).
pub fn parse_when(s: &str, now_ms: i64) -> Result<Option<i64>, ClientError> {
    if s == "never" || s == "infinity" {
        return Ok(None);
    }
    if let Some(secs) = s.strip_prefix('+') {
        let n: i64 = secs.parse().map_err(|_| ClientError::Usage(format!("'{s}': expected +SECONDS")))?;
        return Ok(Some(now_ms + n * 1000));
    }
    crate::soap::time::parse_ms(s)
        .map(Some)
        .ok_or_else(|| ClientError::Usage(format!("'{s}' is not RFC 3339, +SECONDS or never")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_parsing() {
        assert_eq!(parse_qname_arg("{urn:x}a").unwrap(), QName::new("urn:x", "a"));
        assert_eq!(parse_qname_arg("wsrl:TerminationTime").unwrap(), QName::new(ns::WSRL, "TerminationTime"));
        assert_eq!(parse_qname_arg("hardware").unwrap(), QName::new(ns::VWS, "hardware"));
        assert!(parse_qname_arg("zz:a").is_err());
        assert_eq!(parse_when("never", 0).unwrap(), None);
        assert_eq!(parse_when("+60", 1000).unwrap(), Some(61_000));
        assert!(parse_when("+x", 0).is_err());
        assert_eq!(parse_when("1970-01-01T00:00:01Z", 0).unwrap(), Some(1000));
    }
}
