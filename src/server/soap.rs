//! The SOAP pipeline of `POST /wsrf/services/{service}`: the body limits (size, idle and total
//! time, each refused with a SOAP fault and a log line; the body is read once, in the handler), then one request: the connection's
//! caller (refused or expired credentials end the connection), envelope parsing, the operation /
//! wsa:Action / SOAPAction agreement, one key header at most, WS-Security, mustUnderstand,
//! dispatch through the registry, and signing of answers to signed requests.

use super::{base_url, fault_response, text_response, xml_response, Edge, HttpConfig, MessageSecurity, Peer};
use crate::security::Caller;
use crate::services::SoapRequest;
use crate::soap::envelope::{self, Envelope, FaultCode, SoapFault};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use std::sync::Arc;

enum BodyError {
    TooLarge(usize),
    Idle,
    Total,
    Io(String),
}

/// The next body frame: taken at once when it is already there (the common case: the whole
/// body came with the headers), otherwise awaited under the idle and total deadlines.
async fn next_frame(
    body: &mut Body,
    cfg: &HttpConfig,
    deadline: &mut Option<tokio::time::Instant>,
) -> Result<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>, BodyError> {
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

use std::future::Future;

async fn read_body(mut body: Body, cfg: &HttpConfig) -> Result<Bytes, BodyError> {
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

/// The body limits: the declared length, then the body read under the size limit and the idle
/// and total deadlines; every refusal is a SOAP fault (413 / 408 / 400) on a connection that is
/// then closed, and a log line. Read once, here, in the handler (no re-wrapped body).
async fn limited_body(req: Request, cfg: &HttpConfig) -> Result<(axum::http::request::Parts, Bytes), Response> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let refuse = |f: SoapFault| {
        tracing::warn!("{}", f.string);
        fault_response(None, "", &f, true)
    };
    if let Some(l) = declared.filter(|&l| l > cfg.max_body_bytes as u64) {
        return Err(refuse(
            SoapFault::client(format!("request body of {l} bytes exceeds the limit of {} bytes", cfg.max_body_bytes))
                .with_status(413),
        ));
    }
    let (parts, body) = req.into_parts();
    match read_body(body, cfg).await {
        Ok(b) => Ok((parts, b)),
        Err(BodyError::TooLarge(max)) => {
            Err(refuse(SoapFault::client(format!("request body exceeds the limit of {max} bytes")).with_status(413)))
        }
        Err(BodyError::Idle) => Err(refuse(
            SoapFault::client(format!("request body stalled for more than {} ms", cfg.body_idle_timeout.as_millis()))
                .with_status(408),
        )),
        Err(BodyError::Total) => Err(refuse(
            SoapFault::client(format!("request body took longer than {} s", cfg.body_total_timeout.as_secs())).with_status(408),
        )),
        Err(BodyError::Io(m)) => Err(refuse(SoapFault::client(format!("request body could not be read: {m}")).with_status(400))),
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(s)
}

/// Message security: a signed request is verified before anything else reads it, and its
/// signer becomes the caller. `Ok(None)`: the message is not signed.
/// wsa:To must name `service_url`, the endpoint that received the request.
async fn verify_signed(
    ms: &MessageSecurity,
    body: &[u8],
    env: &Envelope,
    service_url: &str,
) -> Result<Option<Caller>, SoapFault> {
    use crate::security::wssec;
    // The body was read by the hardened parser already (`env`): wssec does not read it again.
    match wssec::verify_parsed_at(body, Some(env), &ms.trust.current().config, &ms.replay, wssec::now_ms(), service_url).await {
        Ok(None) => Ok(None),
        Ok(Some(sig)) => Ok(Some(sig.caller)),
        Err(e) => {
            tracing::warn!(kind = e.kind(), "refused signed request: {e}");
            Err(e.to_fault())
        }
    }
}

fn now_secs() -> i64 {
    crate::soap::time::now_ms() / 1000
}

/// Operation names that were answered successfully at least once: the only ones used as a
/// metrics label (a client cannot grow the label set by sending made-up operations).
static KNOWN_OPS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

fn op_label(op: Option<&str>, ok: bool) -> String {
    let Some(op) = op else { return "-".into() };
    if KNOWN_OPS.read().unwrap_or_else(|e| e.into_inner()).iter().any(|k| k == op) {
        return op.to_string();
    }
    if ok {
        let mut k = KNOWN_OPS.write().unwrap_or_else(|e| e.into_inner());
        if k.len() < 256 && !k.iter().any(|x| x == op) {
            k.push(op.to_string());
        }
        return op.to_string();
    }
    "other".into()
}

/// The metric handles of one (service, operation label): looked up in the recorder once.
struct OpMetrics {
    duration: metrics::Histogram,
    ok: metrics::Counter,
    fault: metrics::Counter,
    refused: metrics::Counter,
}

impl OpMetrics {
    fn new(service: &str, op: &str) -> OpMetrics {
        let (s, o) = (service.to_string(), op.to_string());
        let count = |outcome: &'static str| metrics::counter!("vws_requests_total", "service" => s.clone(), "operation" => o.clone(), "outcome" => outcome);
        OpMetrics {
            duration: metrics::histogram!("vws_request_duration_seconds", "service" => s.clone(), "operation" => o.clone()),
            ok: count("ok"),
            fault: count("fault"),
            refused: count("refused"),
        }
    }
    fn record(&self, outcome: &str, secs: f64) {
        self.duration.record(secs);
        match outcome {
            "ok" => &self.ok,
            "refused" => &self.refused,
            _ => &self.fault,
        }
        .increment(1);
    }
}

thread_local! {
    /// Per worker thread: (service, operation) → handles, for operations that are their own
    /// label (answered successfully before; such an operation never stops being one). Saves the
    /// label building, hashing and registry lookup of every request. A list: it holds a few
    /// dozen pairs at most (services × operations answered), found faster by comparing than by
    /// hashing both names.
    static OP_METRICS: std::cell::RefCell<Vec<(String, String, OpMetrics)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `vws_requests_total` and `vws_request_duration_seconds` for one request.
fn record_metrics(service: &str, op: Option<&str>, outcome: &str, secs: f64) {
    if let Some(o) = op {
        let hit = OP_METRICS
            .with_borrow(|m| m.iter().find(|(s, op, _)| op == o && s == service).map(|(_, _, h)| h.record(outcome, secs)));
        if hit.is_some() {
            return;
        }
    }
    let label = op_label(op, outcome == "ok");
    let handles = OpMetrics::new(service, &label);
    handles.record(outcome, secs);
    if op == Some(label.as_str()) {
        OP_METRICS.with_borrow_mut(|m| m.push((service.to_string(), label, handles)));
    }
}

/// A request on `/wsrf/services/{service}`: [`handle_post`], then its outcome and duration in
/// the request's log context, the metrics, and (target `vws::request`, level debug) an access-log line.
pub async fn service_post(State(edge): State<Arc<Edge>>, Path(name): Path<String>, req: Request) -> Response {
    // The body is read once, here, under the limits (refusals come before the service check).
    let (parts, body) = match limited_body(req, &edge.cfg).await {
        Ok(pb) => pb,
        Err(refused) => return refused,
    };
    if !edge.services.has_service(&name) {
        return text_response(StatusCode::NOT_FOUND, format!("no service named '{name}'\n"));
    }
    let t0 = std::time::Instant::now();
    let mut op = None;
    let resp = handle_post(&edge, &name, &parts.headers, parts.extensions.get::<Peer>(), body, &mut op).await;
    let dt = t0.elapsed();
    let outcome = match resp.status().as_u16() {
        200 => "ok",
        401 | 403 => "refused",
        _ => "fault",
    };
    // Operation, outcome and duration are for the access line only.
    if tracing::enabled!(target: "vws::request", tracing::Level::DEBUG) {
        super::reqlog::set_access(op.as_ref().map(|o| o.as_str()), outcome, dt.as_secs_f64() * 1000.0);
        tracing::debug!(target: "vws::request", status = resp.status().as_u16(), "request done");
    }
    record_metrics(&name, op.as_deref(), outcome, dt.as_secs_f64());
    resp
}

async fn handle_post(
    edge: &Edge,
    name: &str,
    headers: &HeaderMap,
    peer: Option<&Peer>,
    body: Bytes,
    op: &mut Option<crate::soap::xml::Name>,
) -> Response {
    let d = &*edge.services;
    let name = name.to_string();
    let Some(peer) = peer else {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "no connection information\n".into());
    };
    let base_url = base_url(&edge.cfg, peer);
    let mut service_url = String::with_capacity(base_url.len() + 15 + name.len());
    service_url.push_str(&base_url);
    service_url.push_str("/wsrf/services/");
    service_url.push_str(&name);
    let current = peer.current_caller();
    let mut caller = match &*current {
        Ok(c) => c.clone(),
        Err(reason) => {
            // The connection's credentials were refused: no request on it reaches a service.
            let f = SoapFault::client(format!("authentication failed: {reason}")).with_status(403);
            tracing::warn!("refused unauthenticated request: {reason}");
            return fault_response(None, &service_url, &f, true);
        }
    };
    if caller.expired_at(now_secs()) {
        // A kept-alive connection outlived its proxy (or VOMS AC): refuse, and end it.
        let f = SoapFault::client("authentication failed: the credentials of this connection have expired").with_status(403);
        tracing::warn!(dn = caller.name(), "refused request: connection credentials expired; closing the connection");
        return fault_response(None, &service_url, &f, true);
    }
    let env = match envelope::parse(&body, &edge.cfg.xml) {
        Ok(env) => env,
        Err(f) => {
            tracing::warn!("refused request: {}", f.string);
            return fault_response(None, &service_url, &f, false);
        }
    };
    *op = Some(env.payload().name.local.clone());
    let key = d.key_header(&name).and_then(|k| env.header_named(k)).map(|k| k.text_ref());
    super::reqlog::set_action_key(env.addressing.action.as_deref(), key.as_deref().map(str::trim));
    let mut signed = false;
    if let Some(ms) = &edge.msec {
        match verify_signed(ms, &body, &env, &service_url).await {
            Ok(None) => {}
            Ok(Some(signer)) => {
                if caller.dn.is_some() && caller.dn != signer.dn {
                    let f = SoapFault::client(format!(
                        "the message is signed by {} but the connection is authenticated as {}",
                        signer.name(),
                        caller.name()
                    ));
                    tracing::warn!("{}", f.string);
                    return fault_response(Some(&env.addressing), &service_url, &f, false);
                }
                tracing::debug!(dn = signer.name(), "signed request verified");
                caller = signer;
                signed = true;
            }
            Err(f) => return fault_response(Some(&env.addressing), &service_url, &f, false),
        }
    }
    // After the signature check, so a signed message's tampered headers are named as such.
    let soap_action = headers.get("soapaction").and_then(|v| v.to_str().ok()).map(unquote);
    if let Err(f) = check_request(d, &name, &env, soap_action) {
        tracing::warn!("refused request: {}", f.string);
        return fault_response(Some(&env.addressing), &service_url, &f, false);
    }
    if let Some(h) = env.header() {
        for e in h.elements() {
            let wsse = edge.msec.is_some() && e.name.ns == crate::security::wssec::WSSE && e.name.local == "Security";
            if envelope::must_understand(e) && e.name.ns != crate::soap::ns::WSA && !wsse && !d.understands(&name, &e.name) {
                let f = SoapFault {
                    code: FaultCode::MustUnderstand,
                    string: format!("header {} is marked mustUnderstand but is not understood", e.name),
                    detail: None,
                    status: 500,
                };
                tracing::warn!("{}", f.string);
                return fault_response(Some(&env.addressing), &service_url, &f, false);
            }
        }
    }
    let sreq = SoapRequest { service: name, env, caller, service_url, base_url };
    let (addressing, service_url) = (&sreq.env.addressing, &sreq.service_url);
    let (status, out) = match d.dispatch(&sreq).await {
        Ok(reply) => (200, envelope::response(addressing, service_url, &reply.action, &reply.payload)),
        Err(f) => {
            tracing::info!("fault: {}", f.string);
            (f.status, envelope::fault(Some(addressing), service_url, &f))
        }
    };
    // Answers to signed requests are signed with the host credential.
    let out = match (&edge.msec, signed) {
        (Some(ms), true) => match ms.signer.sign(&out) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "could not sign the response");
                let f = SoapFault::server(format!("the response could not be signed: {e}"));
                return fault_response(Some(addressing), service_url, &f, false);
            }
        },
        _ => out,
    };
    xml_response(status, out, false)
}

/// Wire rules a request meets before any service sees it: its Body's operation, wsa:Action and
/// SOAPAction agree, and it names at most one resource (one key header).
fn check_request(
    d: &dyn crate::services::Dispatcher,
    name: &str,
    env: &Envelope,
    soap_action: Option<&str>,
) -> Result<(), SoapFault> {
    envelope::check_operation(env, soap_action)?;
    if let Some(k) = d.key_header(name) {
        let n = env.header().map_or(0, |h| h.elements().filter(|e| &e.name == k).count());
        if n > 1 {
            return Err(SoapFault::client(format!("{n} resource key headers {k}: a request names exactly one resource")));
        }
    }
    Ok(())
}
