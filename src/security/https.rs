//! An `http://` + `https://` connector for hyper-util's client, with OpenSSL for TLS: the one
//! connector of the process' outgoing HTTP clients (`transfer/http.rs` for staging, the
//! Notifier in `wsrf/notification.rs` for notifications to consumers).
//!
//! The connect and the TLS handshake are each bounded by the connector's timeout. What proves
//! the server is the caller's choice: the [`SslConnector`]'s own verification (system roots,
//! host name; staging), or, with [`Connector::with_check`], a check run on the finished
//! handshake before any byte of the request is sent (GSI: the chain validated against the
//! trusted CA directory by [`super::tls::verify_peer`] and the host by
//! [`super::tls::check_host`]; notifications). A refused handshake or check is a
//! [`TlsFailure`] in the client error's sources.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslRef};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// A TLS handshake or server check that failed (found among a client error's sources).
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for TlsFailure {}

/// A check of the server after the handshake: the connection and the host dialled (no
/// brackets around IPv6 addresses). Err: why the server is refused.
pub type PeerCheck = Arc<dyn Fn(&SslRef, &str) -> Result<(), String> + Send + Sync>;

/// The GSI check of a server reached over `https` (for [`Connector::with_check`]): the chain it
/// presented validates against `cert_dir` (proxies, CRLs, signing policies) and its certificate
/// names `host` (GT's `host/<name>` form included). Err: `refused` followed by why.
pub fn check_gsi_peer(ssl: &SslRef, host: &str, cert_dir: &super::CertDir, refused: &str) -> Result<(), String> {
    let v = super::tls::verify_peer(ssl, cert_dir).map_err(|e| format!("{refused}: {e}"))?;
    super::tls::check_host(v.leaf(), host).map_err(|e| format!("{refused}: {e}"))
}

/// hyper-util's TCP connector, plus OpenSSL for `https` URIs.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<Arc<SslConnector>>,
    timeout: Duration,
    check: Option<PeerCheck>,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl Connector {
    /// `https` URIs use `tls` (without: they fail with a [`TlsFailure`]); `timeout` bounds the
    /// TCP connect and the handshake.
    pub fn new(tls: Option<SslConnector>, timeout: Duration) -> Connector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        Connector { http, tls: tls.map(Arc::new), timeout, check: None }
    }

    /// Run `check` on every finished handshake; the connection is used only when it passes.
    pub fn with_check(mut self, check: PeerCheck) -> Connector {
        self.check = Some(check);
        self
    }
}

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let tcp = self.http.call(uri.clone());
        let (tls, timeout, check) = (self.tls.clone(), self.timeout, self.check.clone());
        Box::pin(async move {
            let tcp = tcp.await?;
            if !https {
                return Ok(Conn::Plain(tcp));
            }
            let tls = tls.ok_or_else(|| TlsFailure("no TLS context for https here".into()))?;
            let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            let ssl = tls.configure().and_then(|c| c.into_ssl(host)).map_err(|e| TlsFailure(e.to_string()))?;
            let mut s = SslStream::new(ssl, tcp.into_inner()).map_err(|e| TlsFailure(e.to_string()))?;
            match tokio::time::timeout(timeout, Pin::new(&mut s).connect()).await {
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out").into()),
                Ok(Err(e)) => {
                    let v = s.ssl().verify_result();
                    let why = if v == openssl::x509::X509VerifyResult::OK { e.to_string() } else { format!("{e} ({v})") };
                    Err(TlsFailure(why).into())
                }
                Ok(Ok(())) => {
                    if let Some(check) = check {
                        check(s.ssl(), host).map_err(TlsFailure)?;
                    }
                    Ok(Conn::Tls(TokioIo::new(s)))
                }
            }
        })
    }
}

/// A client connection: plain TCP or TLS over it.
pub enum Conn {
    Plain(TokioIo<TcpStream>),
    Tls(TokioIo<SslStream<TcpStream>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(t) => t.connected(),
            Conn::Tls(t) => t.inner().get_ref().connected(),
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(t) => Pin::new(t).poll_read(cx, buf),
            Conn::Tls(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(t) => Pin::new(t).poll_write(cx, buf),
            Conn::Tls(t) => Pin::new(t).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(t) => Pin::new(t).poll_flush(cx),
            Conn::Tls(t) => Pin::new(t).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(t) => Pin::new(t).poll_shutdown(cx),
            Conn::Tls(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}
