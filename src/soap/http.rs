//! The HTTP/1.1 listener: keep-alive, chunked bodies and `Expect: 100-continue` (hyper), bounded
//! and timed body reads, `?wsdl`, SOAPAction / wsa:Action agreement, mustUnderstand, and the
//! mapping of every outcome to a SOAP response or fault. Transport security plugs in here by
//! producing the [`Caller`] of a connection; services never see the transport.

use super::envelope::{self, Envelope, FaultCode, SoapFault};
use super::xml::{Limits, QName};
use crate::security::Caller;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Limits and timeouts of the listener.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    /// Longest pause allowed between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// Longest time a whole request body may take.
    pub body_total_timeout: Duration,
    pub header_timeout: Duration,
    pub xml: Limits,
    /// Public base URL (`https://host:8443`) used in EPRs and WSDL; by default the request's Host.
    pub public_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 4 * 1024 * 1024,
            body_idle_timeout: Duration::from_millis(500),
            body_total_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            xml: Limits::default(),
            public_url: None,
        }
    }
}

/// GSI Secure Message (WS-Security X.509 signatures): verification of signed requests with the
/// same trust as GSI transport, replay protection, and signing of the answers to signed requests.
pub struct MessageSecurity {
    pub trust: Arc<crate::security::TrustConfig>,
    pub replay: crate::security::wssec::ReplayCache,
    pub signer: crate::security::wssec::Signer,
}

/// A request as services see it.
pub struct SoapRequest {
    pub service: String,
    pub env: Envelope,
    pub caller: Caller,
    /// The URL this request was addressed to (`scheme://host/wsrf/services/Name`).
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

/// The container's services, as the listener needs them.
pub trait Dispatcher: Send + Sync + 'static {
    fn has_service(&self, name: &str) -> bool;
    /// The service's WSDL with its soap:address set to `url`.
    fn wsdl(&self, name: &str, url: &str) -> Option<String>;
    /// Headers (beyond WS-Addressing) this service processes, for mustUnderstand.
    fn understands(&self, name: &str, header: &QName) -> bool;
    fn dispatch(&self, req: SoapRequest) -> DispatchFuture<'_>;
}

const SERVICES_PREFIX: &str = "/wsrf/services/";

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn xml_response(status: u16, body: String, close: bool) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
    if close {
        r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

fn fault_response(req: Option<&envelope::Addressing>, service_url: &str, f: &SoapFault, close: bool) -> Response<Full<Bytes>> {
    xml_response(f.status, envelope::fault(req, service_url, f), close)
}

enum BodyError {
    TooLarge(usize),
    Idle,
    Total,
    Io(String),
}

/// The next body frame: taken at once when it is already there (the common case: the whole
/// body came with the headers), otherwise awaited under the idle and total deadlines.
async fn next_frame(
    body: &mut Incoming,
    cfg: &HttpConfig,
    deadline: &mut Option<tokio::time::Instant>,
) -> Result<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>, BodyError> {
    let mut fut = std::pin::pin!(body.frame());
    let ready = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(f) = ready {
        return Ok(f);
    }
    let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + cfg.body_total_timeout);
    tokio::select! {
        r = tokio::time::timeout(cfg.body_idle_timeout, fut) => r.map_err(|_| BodyError::Idle),
        _ = tokio::time::sleep_until(until) => Err(BodyError::Total),
    }
}

async fn read_body(body: Incoming, cfg: &HttpConfig) -> Result<Bytes, BodyError> {
    let mut body = body;
    // Most requests arrive in one frame: keep it without copying; gather only when there are more.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut deadline = None;
    loop {
        match next_frame(&mut body, cfg, &mut deadline).await? {
            None => return Ok(if buf.is_empty() { first.unwrap_or_default() } else { buf.freeze() }),
            Some(Err(e)) => return Err(BodyError::Io(e.to_string())),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    let have = first.as_ref().map_or(0, |b| b.len()) + buf.len();
                    if have + data.len() > cfg.max_body_bytes {
                        return Err(BodyError::TooLarge(cfg.max_body_bytes));
                    }
                    match first.take() {
                        None if buf.is_empty() => first = Some(data),
                        Some(prev) => {
                            buf.extend_from_slice(&prev);
                            buf.extend_from_slice(&data);
                        }
                        None => buf.extend_from_slice(&data),
                    }
                }
            }
        }
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(s)
}

async fn handle<D: Dispatcher>(
    req: Request<Incoming>,
    d: Arc<D>,
    cfg: Arc<HttpConfig>,
    scheme: &'static str,
    peer: SocketAddr,
    caller: Arc<Result<Caller, String>>,
    msec: Option<Arc<MessageSecurity>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let Some(name) = path.strip_prefix(SERVICES_PREFIX).filter(|n| !n.is_empty() && !n.contains('/')) else {
        return Ok(text_response(StatusCode::NOT_FOUND, "no such service; services live under /wsrf/services/\n"));
    };
    let name = name.to_string();
    if !d.has_service(&name) {
        return Ok(text_response(StatusCode::NOT_FOUND, &format!("no service named '{name}'\n")));
    }
    let base_url = match &cfg.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("{scheme}://{host}")
        }
    };
    let service_url = format!("{base_url}{path}");
    match *req.method() {
        Method::GET => {
            let wants_wsdl = req.uri().query().is_some_and(|q| q.eq_ignore_ascii_case("wsdl"));
            if !wants_wsdl {
                return Ok(text_response(StatusCode::OK, &format!("vws service {name}; its WSDL is at {service_url}?wsdl\n")));
            }
            return Ok(match d.wsdl(&name, &service_url) {
                Some(w) => xml_response(200, w, false),
                None => text_response(StatusCode::NOT_FOUND, "no WSDL for this service\n"),
            });
        }
        Method::POST => {}
        _ => return Ok(text_response(StatusCode::METHOD_NOT_ALLOWED, "use POST for SOAP requests, GET ?wsdl for WSDL\n")),
    }
    let caller = match &*caller {
        Ok(c) => c.clone(),
        Err(reason) => {
            // The connection's credentials were refused: no request on it reaches a service.
            let f = SoapFault::client(format!("authentication failed: {reason}")).with_status(403);
            tracing::warn!(%peer, service = %name, "refused unauthenticated request: {reason}");
            return Ok(fault_response(None, &service_url, &f, true));
        }
    };
    let declared_len = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared_len.is_some_and(|l| l > cfg.max_body_bytes as u64) {
        let f = SoapFault::client(format!(
            "request body of {} bytes exceeds the limit of {} bytes",
            declared_len.unwrap_or(0),
            cfg.max_body_bytes
        ))
        .with_status(413);
        tracing::warn!(%peer, service = %name, "{}", f.string);
        return Ok(fault_response(None, &service_url, &f, true));
    }
    let soap_action = req.headers().get("soapaction").and_then(|v| v.to_str().ok()).map(|s| unquote(s).to_string());
    let body = match read_body(req.into_body(), &cfg).await {
        Ok(b) => b,
        Err(e) => {
            let f = match e {
                BodyError::TooLarge(max) => {
                    SoapFault::client(format!("request body exceeds the limit of {max} bytes")).with_status(413)
                }
                BodyError::Idle => {
                    SoapFault::client(format!("request body stalled for more than {} ms", cfg.body_idle_timeout.as_millis()))
                        .with_status(408)
                }
                BodyError::Total => {
                    SoapFault::client(format!("request body took longer than {} s", cfg.body_total_timeout.as_secs()))
                        .with_status(408)
                }
                BodyError::Io(m) => SoapFault::client(format!("request body could not be read: {m}")).with_status(400),
            };
            tracing::warn!(%peer, service = %name, "{}", f.string);
            return Ok(fault_response(None, &service_url, &f, true));
        }
    };
    let env = match envelope::parse(&body, &cfg.xml) {
        Ok(env) => env,
        Err(f) => {
            tracing::warn!(%peer, service = %name, "refused request: {}", f.string);
            return Ok(fault_response(None, &service_url, &f, false));
        }
    };
    if let (Some(sa), Some(wa)) = (soap_action.as_deref(), env.addressing.action.as_deref()) {
        if !sa.is_empty() && sa != wa {
            let f = SoapFault::client(format!("SOAPAction '{sa}' and wsa:Action '{wa}' disagree"));
            tracing::warn!(%peer, service = %name, "{}", f.string);
            return Ok(fault_response(Some(&env.addressing), &service_url, &f, false));
        }
    }
    // Message security: a signed request is verified here, before anything else reads it, and
    // its signer becomes the caller; a bad signature never reaches a service.
    let mut caller = caller;
    let mut signed = false;
    if let Some(ms) = &msec {
        match crate::security::wssec::verify_at(&body, &ms.trust, &ms.replay, crate::security::wssec::now_ms(), &service_url)
            .await
        {
            Ok(None) => {}
            Ok(Some(sig)) => {
                if caller.dn.is_some() && caller.dn != sig.caller.dn {
                    let f = SoapFault::client(format!(
                        "the message is signed by {} but the connection is authenticated as {}",
                        sig.caller.name(),
                        caller.name()
                    ));
                    tracing::warn!(%peer, service = %name, "{}", f.string);
                    return Ok(fault_response(Some(&env.addressing), &service_url, &f, false));
                }
                tracing::debug!(%peer, dn = sig.caller.name(), "signed request verified");
                caller = sig.caller;
                signed = true;
            }
            Err(e) => {
                let f = e.to_fault();
                tracing::warn!(%peer, service = %name, kind = e.kind(), "refused signed request: {e}");
                return Ok(fault_response(Some(&env.addressing), &service_url, &f, false));
            }
        }
    }
    if let Some(h) = env.header() {
        for e in h.elements() {
            let wsse = msec.is_some() && e.name.ns == crate::security::wssec::WSSE && e.name.local == "Security";
            if envelope::must_understand(e) && e.name.ns != super::ns::WSA && !wsse && !d.understands(&name, &e.name) {
                let f = SoapFault {
                    code: FaultCode::MustUnderstand,
                    string: format!("header {} is marked mustUnderstand but is not understood", e.name),
                    detail: None,
                    status: 500,
                };
                tracing::warn!(%peer, service = %name, "{}", f.string);
                return Ok(fault_response(Some(&env.addressing), &service_url, &f, false));
            }
        }
    }
    let addressing = env.addressing.clone();
    let sreq = SoapRequest { service: name.clone(), env, caller, service_url: service_url.clone(), base_url };
    let (status, out) = match d.dispatch(sreq).await {
        Ok(reply) => (200, envelope::response(&addressing, &service_url, &reply.action, &reply.payload)),
        Err(f) => {
            tracing::info!(%peer, service = %name, action = addressing.action.as_deref().unwrap_or("-"), "fault: {}", f.string);
            (f.status, envelope::fault(Some(&addressing), &service_url, &f))
        }
    };
    // Answers to signed requests are signed with the host credential.
    let out = match (&msec, signed) {
        (Some(ms), true) => match ms.signer.sign(&out) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%peer, error = %e, "could not sign the response");
                let f = SoapFault::server(format!("the response could not be signed: {e}"));
                return Ok(fault_response(Some(&addressing), &service_url, &f, false));
            }
        },
        _ => out,
    };
    Ok(xml_response(status, out, false))
}

/// How connections on a listener are secured and who their caller is.
pub enum Transport {
    /// Plain HTTP: every caller is anonymous.
    Plain,
    /// GSI transport: TLS, client certificate chain checked by `authenticate` after the
    /// handshake (proxy chains need vws' own validation, so OpenSSL's verdict is not used).
    Tls { acceptor: openssl::ssl::SslAcceptor, authenticate: Authenticate },
}

/// Who the TLS peer is (or why it is refused), from its handshake.
pub type Authenticate = Box<dyn Fn(&openssl::ssl::SslRef) -> Result<Caller, String> + Send + Sync>;

impl Transport {
    fn scheme(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::Tls { .. } => "https",
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn serve_http1<D, IO>(
    io: IO,
    peer: SocketAddr,
    d: Arc<D>,
    cfg: Arc<HttpConfig>,
    scheme: &'static str,
    caller: Result<Caller, String>,
    msec: Option<Arc<MessageSecurity>>,
    watcher: hyper_util::server::graceful::Watcher,
) -> impl Future<Output = ()>
where
    D: Dispatcher,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let caller = Arc::new(caller);
    let timeout = cfg.header_timeout;
    let svc =
        hyper::service::service_fn(move |req| handle(req, d.clone(), cfg.clone(), scheme, peer, caller.clone(), msec.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    let conn = watcher.watch(conn);
    async move {
        if let Err(e) = conn.await {
            if e.is_parse() || e.is_parse_too_large() || e.is_timeout() {
                // hyper answered (431/400) or closed before our handler ran.
                tracing::warn!(%peer, error = %e, "refused HTTP request before dispatch (malformed or oversized request line/headers, or stalled)");
            } else {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        }
    }
}

/// TLS handshake and authentication of one connection, then HTTP on it.
async fn serve_tls_conn<D: Dispatcher>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    transport: Arc<Transport>,
    d: Arc<D>,
    cfg: Arc<HttpConfig>,
    msec: Option<Arc<MessageSecurity>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let Transport::Tls { acceptor, authenticate } = &*transport else { return };
    let ssl = match openssl::ssl::Ssl::new(acceptor.context()) {
        Ok(s) => s,
        Err(e) => return tracing::error!(%peer, error = %e, "TLS setup failed"),
    };
    let mut tls = match tokio_openssl::SslStream::new(ssl, stream) {
        Ok(s) => s,
        Err(e) => return tracing::error!(%peer, error = %e, "TLS setup failed"),
    };
    match tokio::time::timeout(cfg.header_timeout, Pin::new(&mut tls).accept()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::warn!(%peer, "TLS handshake timed out"),
    }
    let caller = {
        let _clear = crate::security::x509::ClearErrorsOnDrop;
        authenticate(tls.ssl())
    };
    match &caller {
        Ok(c) => tracing::debug!(%peer, dn = c.name(), limited = c.limited, fqans = ?c.fqans, "authenticated"),
        Err(reason) => tracing::warn!(%peer, "client credentials refused: {reason}"),
    }
    serve_http1(tls, peer, d, cfg, "https", caller, msec, watcher).await
}

/// Serve `listener` until `shutdown` resolves; then finish in-flight requests (up to `grace`).
pub async fn serve<D: Dispatcher>(
    listener: TcpListener,
    transport: Transport,
    d: Arc<D>,
    cfg: Arc<HttpConfig>,
    msec: Option<Arc<MessageSecurity>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let transport = Arc::new(transport);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let watcher = graceful.watcher();
                match &*transport {
                    Transport::Plain => {
                        tokio::spawn(serve_http1(stream, peer, d.clone(), cfg.clone(), transport.scheme(), Ok(Caller::anonymous()), msec.clone(), watcher));
                    }
                    Transport::Tls { .. } => {
                        tokio::spawn(serve_tls_conn(stream, peer, transport.clone(), d.clone(), cfg.clone(), msec.clone(), watcher));
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}
