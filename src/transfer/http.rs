//! `http://` and `https://` endpoints on hyper-util's client: HEAD (the size), GET (downloads,
//! streamed into the target file by position, `Range` to resume) and PUT (uploads, streamed from
//! the source file).
//!
//! The [`Endpoint`] trait is blocking: the async client runs on a small runtime of its own (one
//! worker thread, shared by every HTTP endpoint of the process, see [`runtime`]) and the calling
//! thread waits with `Handle::block_on` — callers are blocking threads (staging jobs, the CLI),
//! never a task of the server's runtime. The body is written to disk by the calling thread as
//! each frame arrives; nothing holds the whole image.
//!
//! Policy: GET and HEAD follow up to [`MAX_REDIRECTS`] redirects (301, 302, 303, 307, 308) to
//! `http(s)://` locations, never from `https` down to `http`; PUT follows none. The connect, the
//! TLS handshake, the response head and every body frame are each bounded by
//! [`Options::timeout`]. A download never writes past the size the server announced (HEAD's
//! `Content-Length`), and a `206` must start where the `Range` asked. HTTPS verifies the server's
//! chain and host name with OpenSSL against the system roots plus the CAs of the GSI trusted
//! certificates directory ([`Options::cert_dir`], else `X509_CERT_DIR` /
//! `/etc/grid-security/certificates`, read by [`CertDir`]). Errors name the URL: 404/410 →
//! not found, 401/407 → authentication, 403 → denied, other statuses → the server refused,
//! refused connections → connect, TLS failures → authentication ("TLS: …"), silence → timeout.

use std::error::Error as StdError;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openssl::ssl::{SslConnector, SslMethod};
use tokio::sync::mpsc;

use super::{Endpoint, Options, Progress, Result, TransferError, Url};
use crate::security::certdir::CertDir;
use crate::security::https::{Connector, TlsFailure};

/// Redirects a GET or HEAD follows before it fails.
pub const MAX_REDIRECTS: usize = 5;

/// Bytes per read of an upload.
const CHUNK: usize = 1 << 20;

/// The runtime HTTP transfers run on: one worker thread (`vws-http`), made at first use. Blocking
/// callers wait on it with `Handle::block_on`; it is never the server's runtime, so no `block_on`
/// nests inside a runtime's async context.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vws-http")
            .enable_all()
            .build()
            .expect("the HTTP transfer runtime")
    })
}

pub struct HttpEndpoint {
    url: Url,
    opts: Options,
    client: OnceLock<std::result::Result<Client<Connector, UploadBody>, TransferError>>,
}

impl HttpEndpoint {
    pub fn new(url: Url, opts: Options) -> HttpEndpoint {
        HttpEndpoint { url, opts, client: OnceLock::new() }
    }

    /// The client, made at first use (https: the trust directory is read then).
    fn client(&self) -> Result<&Client<Connector, UploadBody>> {
        self.client.get_or_init(|| self.make_client()).as_ref().map_err(Clone::clone)
    }

    fn make_client(&self) -> Result<Client<Connector, UploadBody>> {
        let tls = if self.url.scheme == "https" { Some(self.tls_connector()?) } else { None };
        let connector = Connector::new(tls, self.opts.timeout);
        Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector))
    }

    /// OpenSSL's verifying connector: system roots plus the GSI trusted CAs.
    fn tls_connector(&self) -> Result<SslConnector> {
        let auth = |reason: String| TransferError::Auth { url: self.url.to_string(), reason };
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| auth(format!("TLS: {e}")))?;
        let dir = match &self.opts.cert_dir {
            Some(d) => Some(CertDir::load(d).map_err(|e| auth(format!("trusted certificates: {e}")))?),
            // The usual trust directory need not exist: then the system roots alone.
            None => CertDir::from_env().inspect_err(|e| tracing::debug!("https: no GSI trusted CAs: {e}")).ok(),
        };
        for ca in dir.iter().flat_map(|d| d.cas()) {
            // A CA also in the system roots is already there.
            let _ = b.cert_store_mut().add_cert(ca.cert.clone());
        }
        Ok(b.build())
    }

    fn block_on<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        runtime().handle().block_on(f)
    }

    /// The request URI of `u`: its path percent-encoded again (transfer URLs keep it decoded).
    fn uri(&self, u: &Url) -> Result<Uri> {
        use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
        const PATH: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`');
        let host = if u.host.contains(':') { format!("[{}]", u.host) } else { u.host.clone() };
        let port = u.port.map(|p| format!(":{p}")).unwrap_or_default();
        let s = format!("{}://{host}{port}{}", u.scheme, utf8_percent_encode(&u.path, PATH));
        s.parse().map_err(|e| TransferError::BadUrl { url: u.to_string(), reason: format!("{e}") })
    }

    /// Sends one request, following redirects for GET and HEAD; the answer's head arrives within
    /// the timeout.
    async fn send(
        &self,
        method: Method,
        range: Option<u64>,
        body: Option<(UploadBody, u64)>,
    ) -> Result<Response<hyper::body::Incoming>> {
        let client = self.client()?;
        let mut at = self.url.clone();
        let mut body = body;
        for hop in 0..=MAX_REDIRECTS {
            let mut req = Request::builder().method(method.clone()).uri(self.uri(&at)?).header("user-agent", "vws");
            if let Some(from) = range {
                req = req.header("range", format!("bytes={from}-"));
            }
            let b = match body.take() {
                Some((b, len)) => {
                    req = req.header("content-length", len);
                    b
                }
                None => UploadBody::empty(),
            };
            let req = req.body(b).map_err(|e| self.protocol(format!("request: {e}")))?;
            let resp = match tokio::time::timeout(self.opts.timeout, client.request(req)).await {
                Err(_) => return Err(self.timeout(format!("no response within {:?}", self.opts.timeout))),
                Ok(Err(e)) => return Err(self.client_err(&e)),
                Ok(Ok(r)) => r,
            };
            let redirect = matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308);
            if !redirect || method == Method::PUT {
                return Ok(resp);
            }
            if hop == MAX_REDIRECTS {
                return Err(self.protocol(format!("more than {MAX_REDIRECTS} redirects (last to {at})")));
            }
            at = self.redirect_target(&at, &resp)?;
            tracing::debug!(url = %self.url, to = %at, "following redirect {}", resp.status().as_u16());
        }
        unreachable!("the loop returns")
    }

    fn redirect_target(&self, at: &Url, resp: &Response<hyper::body::Incoming>) -> Result<Url> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol(format!("{} without a Location", resp.status())))?;
        let base = url::Url::parse(&self.uri(at)?.to_string()).map_err(|e| self.protocol(format!("redirect base: {e}")))?;
        let next = base.join(loc).map_err(|e| self.protocol(format!("bad redirect Location {loc:?}: {e}")))?;
        let next = Url::parse(next.as_str())?;
        match (at.scheme.as_str(), next.scheme.as_str()) {
            (_, "https") | ("http", "http") => Ok(next),
            ("https", "http") => Err(self.protocol(format!("redirect from https to http ({next}) refused"))),
            (_, other) => Err(self.protocol(format!("redirect to {other}:// ({next}) refused"))),
        }
    }

    fn protocol(&self, reason: String) -> TransferError {
        TransferError::Protocol { url: self.url.to_string(), reason }
    }

    fn timeout(&self, reason: String) -> TransferError {
        TransferError::Timeout { url: self.url.to_string(), reason }
    }

    /// What a client error means: walks its causes for a TLS failure, a timed-out or refused
    /// connect, or a broken connection.
    fn client_err(&self, e: &hyper_util::client::legacy::Error) -> TransferError {
        let url = self.url.to_string();
        let mut chain = vec![e.to_string()];
        let mut src: Option<&(dyn StdError + 'static)> = e.source();
        let mut io_kind = None;
        while let Some(s) = src {
            if let Some(t) = s.downcast_ref::<TlsFailure>() {
                return TransferError::Auth { url, reason: format!("TLS: {}", t.0) };
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                io_kind = Some(io.kind());
            }
            chain.push(s.to_string());
            src = s.source();
        }
        chain.dedup();
        let reason = chain.join(": ");
        match io_kind {
            Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => TransferError::Timeout { url, reason },
            _ if e.is_connect() => TransferError::Connect { url, reason },
            _ => TransferError::Interrupted { url, reason },
        }
    }

    fn body_err(&self, e: &hyper::Error, off: u64) -> TransferError {
        let mut reason = format!("at byte {off}: {e}");
        if let Some(s) = e.source() {
            reason.push_str(&format!(": {s}"));
        }
        TransferError::Interrupted { url: self.url.to_string(), reason }
    }

    fn status_error(&self, method: &Method, status: StatusCode) -> TransferError {
        let url = self.url.to_string();
        let text = status.canonical_reason().unwrap_or("").to_string();
        match status.as_u16() {
            404 | 410 => TransferError::NotFound { url, reason: format!("{} {text}", status.as_u16()) },
            401 | 407 => TransferError::Auth { url, reason: format!("{} {text}", status.as_u16()) },
            403 => TransferError::Denied { url, reason: format!("{} {text}", status.as_u16()) },
            c => TransferError::Remote { url, command: method.to_string(), code: c, text },
        }
    }

    /// One GET from byte `from` (a `Range` request when > 0), written by position into `dest`.
    async fn fetch_from(&self, dest: &File, from: u64, progress: &Progress) -> Result<u64> {
        let resp = self.send(Method::GET, (from > 0).then_some(from), None).await?;
        let start = match resp.status().as_u16() {
            200 => 0,
            206 => {
                let cr = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("");
                let first = cr.strip_prefix("bytes ").and_then(|r| r.split('-').next()).and_then(|n| n.parse::<u64>().ok());
                if first != Some(from) {
                    return Err(self.protocol(format!("asked for bytes from {from}, got Content-Range {cr:?}")));
                }
                from
            }
            _ => return Err(self.status_error(&Method::GET, resp.status())),
        };
        let limit = progress.total();
        let mut body = resp.into_body();
        let mut off = start;
        loop {
            let frame = match tokio::time::timeout(self.opts.timeout, body.frame()).await {
                Err(_) => return Err(self.timeout(format!("no data for {:?} at byte {off}", self.opts.timeout))),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(self.body_err(&e, off)),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else { continue };
            if let Some(l) = limit.filter(|&l| off + data.len() as u64 > l) {
                return Err(self.protocol(format!("the server sends more than the {l} bytes it announced")));
            }
            dest.write_all_at(&data, off).map_err(|e| TransferError::io("target file", e))?;
            progress.add(off, data.len() as u64);
            off += data.len() as u64;
            progress.check()?;
        }
        Ok(off)
    }

    async fn put(&self, src: &File, len: u64, progress: &Progress) -> Result<u64> {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(2);
        let sending = self.send(Method::PUT, None, Some((UploadBody { rx: Some(rx), left: len }, len)));
        // The file is read here, on the calling thread, while the connection task sends.
        let feed = async {
            let mut off = 0;
            while off < len {
                let mut buf = vec![0u8; ((len - off) as usize).min(CHUNK)];
                let n = src.read_at(&mut buf, off).map_err(|e| TransferError::io("source file", e))?;
                if n == 0 {
                    let _ = tx.send(Err(std::io::Error::other("source file shorter than announced"))).await;
                    return Err(TransferError::io("source file", std::io::ErrorKind::UnexpectedEof.into()));
                }
                buf.truncate(n);
                match tokio::time::timeout(self.opts.timeout, tx.send(Ok(Bytes::from(buf)))).await {
                    Err(_) => {
                        return Err(self.timeout(format!("the server read nothing for {:?} at byte {off}", self.opts.timeout)))
                    }
                    // The request ended (the server answered early): its answer says why.
                    Ok(Err(_)) => return Ok(()),
                    Ok(Ok(())) => {}
                }
                progress.add(off, n as u64);
                off += n as u64;
                progress.check()?;
            }
            Ok(())
        };
        let (resp, fed) = tokio::join!(sending, feed);
        let resp = match (resp, fed) {
            (_, Err(e)) | (Err(e), _) => return Err(e),
            (Ok(r), Ok(())) => r,
        };
        if resp.status().as_u16() >= 300 {
            return Err(self.status_error(&Method::PUT, resp.status()));
        }
        Ok(len)
    }
}

impl Endpoint for HttpEndpoint {
    fn url(&self) -> &Url {
        &self.url
    }
    fn size(&self) -> Result<Option<u64>> {
        self.block_on(async {
            let r = self.send(Method::HEAD, None, None).await?;
            if r.status().as_u16() >= 300 {
                return Err(self.status_error(&Method::HEAD, r.status()));
            }
            Ok(r.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse().ok()))
        })
    }
    fn download(&self, dest: &File, progress: &Progress) -> Result<u64> {
        // Up to `retries` resumptions from the verified prefix, 500 ms apart plus jitter; a
        // cancelled staging stops before the next one.
        use backon::{BlockingRetryable, ConstantBuilder};
        let backoff = ConstantBuilder::default()
            .with_delay(std::time::Duration::from_millis(500))
            .with_max_times(self.opts.retries as usize)
            .with_jitter();
        let mut first = true;
        (|| {
            if !std::mem::take(&mut first) {
                progress.check()?;
            }
            self.block_on(self.fetch_from(dest, progress.prefix(), progress))
        })
        .retry(backoff)
        .sleep(std::thread::sleep)
        .when(|e: &TransferError| e.is_transient())
        .notify(|e, _| tracing::warn!(url = %self.url, at = progress.prefix(), "resuming after: {e}"))
        .call()
    }
    fn upload(&self, src: &File, len: u64, progress: &Progress) -> Result<u64> {
        self.block_on(self.put(src, len, progress))
    }
}

/// A request body: empty, or the chunks of an upload fed through a channel by the caller.
pub struct UploadBody {
    rx: Option<mpsc::Receiver<std::io::Result<Bytes>>>,
    left: u64,
}

impl UploadBody {
    fn empty() -> UploadBody {
        UploadBody { rx: None, left: 0 }
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Frame<Bytes>>>> {
        let Some(rx) = self.rx.as_mut() else { return Poll::Ready(None) };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.left = self.left.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.rx.is_none() || self.left == 0
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
