//! The HTTP/HTTPS edge, on axum + tower: the [`Router`] (`POST /wsrf/services/{service}`,
//! `GET …?wsdl`, `GET /healthz`, `GET /wsrf/images/{sha256}`: [`images`]), the listeners ([`conn`]: plain, and GSI TLS as an axum
//! `Listener` whose connections carry their `Caller`), and the layers around every request: its
//! log context ([`reqlog`]: peer, service, action, caller DN), caught panics (a SOAP fault and a log line), a cap on
//! concurrent requests, and the SOAP body limits ([`soap`]: size, idle and total time → 413/408
//! faults). The SOAP pipeline itself (parse, action checks, message security, mustUnderstand,
//! dispatch, signing) is [`soap`]. Services never see the transport.

pub mod conn;
pub mod images;
pub mod logfields;
pub mod metrics;
pub mod reqlog;
pub mod soap;

use crate::services::Dispatcher;
use crate::soap::envelope::{self, SoapFault};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::Listener;
use axum::Router;
pub use conn::{Authenticate, GsiListener, Peer, PlainListener};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Limits and timeouts of the edge (filled in by `config.rs` from `[limits]` and `[server]`).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    /// Longest pause allowed between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// Longest time a whole request body may take.
    pub body_total_timeout: Duration,
    /// Longest time a request head may take from its first byte (408 after), and longest idle
    /// time of a kept-alive connection.
    pub header_timeout: Duration,
    pub xml: crate::soap::xml::Limits,
    /// Public base URL (`https://host:8443`) used in EPRs and WSDL; by default the address of the
    /// listener the request came in on (never the client's Host header).
    pub public_url: Option<String>,
    /// Requests handled at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Open connections per listener; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 4 * 1024 * 1024,
            body_idle_timeout: Duration::from_millis(500),
            body_total_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            xml: Default::default(),
            public_url: None,
            max_concurrent_requests: 1024,
            max_connections: 4096,
        }
    }
}

/// GSI Secure Message (WS-Security X.509 signatures): verification of signed requests with the
/// same trust as GSI transport, replay protection, and signing of the answers to signed requests.
pub struct MessageSecurity {
    pub trust: Arc<crate::security::reload::LiveTrust>,
    pub replay: crate::security::wssec::ReplayCache,
    pub signer: crate::security::wssec::Signer,
}

/// Whether the store answers (for `/healthz`).
pub type Health = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What every request handler shares.
pub struct Edge {
    pub services: Arc<dyn Dispatcher>,
    pub cfg: Arc<HttpConfig>,
    pub msec: Option<Arc<MessageSecurity>>,
    pub health: Health,
    /// The site Repository's image store for `GET /wsrf/images/{sha256}` (None: 404).
    pub images: Option<Arc<dyn crate::services::ImageFiles>>,
}

pub(crate) fn text_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) fn xml_response(status: u16, body: String, close: bool) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
    if close {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

pub(crate) fn fault_response(req: Option<&envelope::Addressing>, service_url: &str, f: &SoapFault, close: bool) -> Response {
    xml_response(f.status, envelope::fault(req, service_url, f), close)
}

/// `scheme://host:port` for EPRs and WSDL: the configured public URL, else this listener's
/// address as the client reached it.
pub(crate) fn base_url(cfg: &HttpConfig, peer: &Peer) -> String {
    match &cfg.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => peer.local_url.to_string(),
    }
}

/// A `host[:port]` (or `[v6]:port`) with nothing else in it.
fn is_authority(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

async fn service_get(State(edge): State<Arc<Edge>>, Path(name): Path<String>, req: Request) -> Response {
    if !edge.services.has_service(&name) {
        return text_response(StatusCode::NOT_FOUND, format!("no service named '{name}'\n"));
    }
    let Some(peer) = req.extensions().get::<Peer>() else {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "no connection information\n".into());
    };
    // The WSDL goes back only to the client that asked, so without a configured public URL its
    // soap:address is the address that client used (its Host header, when it is a plain
    // host[:port]); EPRs, which other users see, never take it (see `base_url`).
    let base = match (&edge.cfg.public_url, req.headers().get(axum::http::header::HOST).and_then(|h| h.to_str().ok())) {
        (None, Some(host)) if is_authority(host) => format!("{}://{host}", peer.scheme),
        _ => base_url(&edge.cfg, peer),
    };
    let service_url = format!("{base}/wsrf/services/{name}");
    if !req.uri().query().is_some_and(|q| q.eq_ignore_ascii_case("wsdl")) {
        return text_response(StatusCode::OK, format!("vws service {name}; its WSDL is at {service_url}?wsdl\n"));
    }
    match edge.services.wsdl(&name, &service_url) {
        Some(w) => xml_response(200, w, false),
        None => text_response(StatusCode::NOT_FOUND, "no WSDL for this service\n".into()),
    }
}

async fn healthz(State(edge): State<Arc<Edge>>) -> Response {
    match (edge.health)().await {
        Ok(()) => text_response(StatusCode::OK, "ok: the store answers\n".into()),
        Err(e) => {
            tracing::error!(error = %e, "health check: the store does not answer");
            text_response(StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: the store does not answer: {e}\n"))
        }
    }
}

async fn not_found() -> Response {
    text_response(StatusCode::NOT_FOUND, "no such service; services live under /wsrf/services/\n".into())
}

async fn method_not_allowed() -> Response {
    text_response(StatusCode::METHOD_NOT_ALLOWED, "use POST for SOAP requests, GET ?wsdl for WSDL\n".into())
}

/// A panic while handling a request: a SOAP fault (the connection stays usable) and a log line.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %what, "request handler panicked; answered with a fault");
    let f = SoapFault::server("internal error while handling the request (logged)");
    fault_response(None, "", &f, false)
}

/// The application: routes and layers, built once and shared by every connection.
pub fn router(edge: Arc<Edge>) -> Router {
    use tower::limit::GlobalConcurrencyLimitLayer;
    use tower::ServiceBuilder;
    use tower_http::catch_panic::CatchPanicLayer;
    let service = post(soap::service_post).get(service_get).fallback(method_not_allowed);
    let limit = GlobalConcurrencyLimitLayer::new(edge.cfg.max_concurrent_requests.max(1));
    Router::new()
        .route("/wsrf/services/{service}", service.clone())
        .route("/wsrf/services/{service}/", service)
        .route("/healthz", get(healthz))
        .route("/wsrf/images/{sha256}", get(images::image_get))
        .fallback(not_found)
        // soap::service_post enforces `max_body_bytes` (with a SOAP fault); axum's own default is off.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(ServiceBuilder::new().layer(reqlog::ContextLayer).layer(CatchPanicLayer::custom(panic_response)).layer(limit))
        .with_state(edge)
}

/// Serve `listener` until `shutdown` resolves; then finish in-flight requests (up to `grace`).
/// Each connection runs HTTP/1.1 (keep-alive, chunked, 100-continue) with `app`; its [`Peer`]
/// is added to every request on it.
pub async fn serve<L>(mut listener: L, app: Router, shutdown: impl Future<Output = ()>, grace: Duration)
where
    L: Listener<Addr = Peer>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (io, peer) = listener.accept() => {
                let addr = peer.addr;
                let svc = tower::ServiceBuilder::new()
                    .layer(tower_http::add_extension::AddExtensionLayer::new(peer))
                    .service(app.clone());
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        if e.is_parse() || e.is_parse_too_large() || e.is_timeout() {
                            // hyper answered (431/400) or closed before our handler ran.
                            tracing::warn!(peer = %addr, error = %e, "refused HTTP request before dispatch (malformed or oversized request line/headers, or stalled)");
                        } else {
                            tracing::debug!(peer = %addr, error = %e, "connection ended with error");
                        }
                    }
                });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::Caller;
    use crate::services::{DispatchFuture, SoapRequest};
    use crate::soap::xml::QName;

    /// A test-only service whose every operation panics (never built outside `cargo test`).
    struct Panicky;

    impl Dispatcher for Panicky {
        fn has_service(&self, name: &str) -> bool {
            name == "Panicky"
        }
        fn wsdl(&self, _: &str, _: &str) -> Option<String> {
            None
        }
        fn understands(&self, _: &str, _: &QName) -> bool {
            false
        }
        fn key_header(&self, _: &str) -> Option<&QName> {
            None
        }
        fn dispatch<'a>(&'a self, _req: &'a SoapRequest) -> DispatchFuture<'a> {
            Box::pin(async { panic!("injected test panic") })
        }
    }

    fn request() -> Request {
        let env = format!(
            "<s:Envelope xmlns:s=\"{}\" xmlns:wsa=\"{}\"><s:Header><wsa:Action>urn:t/Boom</wsa:Action></s:Header><s:Body><Boom xmlns=\"urn:t\"/></s:Body></s:Envelope>",
            crate::soap::ns::SOAPENV,
            crate::soap::ns::WSA
        );
        let mut req = Request::builder()
            .method("POST")
            .uri("/wsrf/services/Panicky")
            .header("content-type", "text/xml")
            .body(Body::from(env))
            .unwrap();
        let a: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        req.extensions_mut().insert(Peer::new(a, a, "http", Arc::new(Ok(Caller::anonymous())), None));
        req
    }

    #[tokio::test]
    async fn a_panicking_service_becomes_a_soap_fault_and_the_app_keeps_serving() {
        let health: Health = Arc::new(|| Box::pin(async { Ok(()) }));
        let edge = Arc::new(Edge {
            services: Arc::new(Panicky),
            cfg: Arc::new(HttpConfig::default()),
            msec: None,
            health,
            images: None,
        });
        let app = router(edge);
        for _ in 0..2 {
            let resp = tower::ServiceExt::oneshot(app.clone(), request()).await.expect("infallible");
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("<faultcode>soapenv:Server</faultcode>"), "{text}");
            assert!(text.contains("internal error"), "{text}");
        }
        let ok = Request::builder().uri("/healthz").body(Body::empty()).unwrap();
        let resp = tower::ServiceExt::oneshot(app, ok).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
