//! Connections: the GSI TLS acceptor as an axum [`Listener`], the connection cap, and the
//! connection wrapper that times request headers (a stalled head gets a 408 and a log line; an
//! idle keep-alive connection is closed quietly). The [`Peer`] of a connection (addresses and the
//! `Caller` its TLS handshake produced) travels to every request on it as an extension.

use crate::security::reload::Session;
use crate::security::Caller;
use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The address the client reached (this end of the connection).
    pub local: SocketAddr,
    pub scheme: &'static str,
    /// The connection's caller at its handshake, or why its credentials were refused.
    pub caller: Arc<Result<Caller, String>>,
    /// GSI connections: the presented chain, validated again when the trust changes
    /// ([`Session::caller`] is the caller of the next request).
    pub session: Option<Arc<Session>>,
    /// `addr` as text and `scheme://local`, formatted once per connection (not per request:
    /// the request span and the EPR base URL of every request use them).
    pub addr_text: Arc<str>,
    pub local_url: Arc<str>,
}

impl Peer {
    pub fn new(
        addr: SocketAddr,
        local: SocketAddr,
        scheme: &'static str,
        caller: Arc<Result<Caller, String>>,
        session: Option<Arc<Session>>,
    ) -> Peer {
        let addr_text = addr.to_string().into();
        let local_url = format!("{scheme}://{local}").into();
        Peer { addr, local, scheme, caller, session, addr_text, local_url }
    }

    /// The caller of the request being handled now (re-validated after a trust change).
    pub fn current_caller(&self) -> Arc<Result<Caller, String>> {
        match &self.session {
            Some(s) => s.caller(),
            None => self.caller.clone(),
        }
    }
}

/// Who the TLS peer is (or why it is refused), from its handshake.
pub type Authenticate = Box<dyn Fn(&openssl::ssl::SslRef) -> Arc<Session> + Send + Sync>;

/// Accepting under the open-connection cap: the permit lives as long as the connection.
async fn accept_capped(tcp: &TcpListener, cap: &Arc<Semaphore>) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let permit = cap.clone().acquire_owned().await.expect("the connection cap is never closed");
    loop {
        match tcp.accept().await {
            Ok((s, peer)) => {
                let _ = s.set_nodelay(true);
                return (s, peer, permit);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Plain HTTP: every caller is anonymous.
pub struct PlainListener {
    tcp: TcpListener,
    cap: Arc<Semaphore>,
    header_timeout: Duration,
}

impl PlainListener {
    pub fn new(tcp: TcpListener, max_connections: usize, header_timeout: Duration) -> Self {
        PlainListener { tcp, cap: Arc::new(Semaphore::new(max_connections.max(1))), header_timeout }
    }
}

impl Listener for PlainListener {
    type Io = Conn<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (s, addr, permit) = accept_capped(&self.tcp, &self.cap).await;
        let local = s.local_addr().unwrap_or_else(|_| self.tcp.local_addr().expect("bound"));
        let peer = Peer::new(addr, local, "http", Arc::new(Ok(Caller::anonymous())), None);
        (Conn::new(s, permit, addr, self.header_timeout), peer)
    }

    fn local_addr(&self) -> io::Result<Peer> {
        let a = self.tcp.local_addr()?;
        Ok(Peer::new(a, a, "http", Arc::new(Ok(Caller::anonymous())), None))
    }
}

/// GSI transport: TLS, client certificate chain checked by `authenticate` after the handshake
/// (proxy chains need vws' own validation, so OpenSSL's verdict is not used). Handshakes run
/// concurrently off the accept loop; finished connections come out of [`Listener::accept`].
pub struct GsiListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(Conn<tokio_openssl::SslStream<TcpStream>>, Peer)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GsiListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GsiListener {
    pub fn new(
        tcp: TcpListener,
        acceptor: openssl::ssl::SslAcceptor,
        authenticate: Authenticate,
        max_connections: usize,
        header_timeout: Duration,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let cap = Arc::new(Semaphore::new(max_connections.max(1)));
        let shared = Arc::new((acceptor, authenticate));
        let task = tokio::spawn(async move {
            loop {
                let (s, addr, permit) = accept_capped(&tcp, &cap).await;
                let (tx, shared) = (tx.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Some(c) = handshake(s, addr, permit, &shared.0, &shared.1, header_timeout).await {
                        let _ = tx.send(c).await;
                    }
                });
            }
        });
        Ok(GsiListener { local, ready, task })
    }
}

/// What a client speaking plain HTTP to the HTTPS port is told.
const USE_TLS: &str = "This port speaks HTTPS (TLS with GSI credentials); use an https:// URL.\n";

async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
    acceptor: &openssl::ssl::SslAcceptor,
    authenticate: &Authenticate,
    header_timeout: Duration,
) -> Option<(Conn<tokio_openssl::SslStream<TcpStream>>, Peer)> {
    let local = stream.local_addr().ok()?;
    // A TLS connection starts with a handshake record (content type 22); anything else is a
    // client speaking plain HTTP (or garbage) to this port: tell it, then close.
    let mut first = [0u8; 1];
    match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            tracing::warn!(peer = %addr, "plain HTTP on the HTTPS port: answered 400");
            refuse_plain(stream, header_timeout).await;
            return None;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "connection failed before the TLS handshake");
            return None;
        }
        Err(_) => {
            tracing::warn!(peer = %addr, "TLS handshake timed out");
            return None;
        }
    }
    let ssl = match openssl::ssl::Ssl::new(acceptor.context()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(peer = %addr, error = %e, "TLS setup failed");
            return None;
        }
    };
    let mut tls = match tokio_openssl::SslStream::new(ssl, stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(peer = %addr, error = %e, "TLS setup failed");
            return None;
        }
    };
    match tokio::time::timeout(header_timeout, Pin::new(&mut tls).accept()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics::counter!("vws_gsi_handshakes_total", "outcome" => "failed").increment(1);
            tracing::warn!(peer = %addr, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            metrics::counter!("vws_gsi_handshakes_total", "outcome" => "failed").increment(1);
            tracing::warn!(peer = %addr, "TLS handshake timed out");
            return None;
        }
    }
    let session = {
        let _clear = crate::security::x509::ClearErrorsOnDrop;
        authenticate(tls.ssl())
    };
    let caller = session.caller();
    let outcome = if caller.is_ok() { "ok" } else { "refused" };
    metrics::counter!("vws_gsi_handshakes_total", "outcome" => outcome).increment(1);
    match &*caller {
        Ok(c) => tracing::debug!(peer = %addr, dn = c.name(), limited = c.limited, fqans = ?c.fqans, "authenticated"),
        Err(reason) => tracing::warn!(peer = %addr, "client credentials refused: {reason}"),
    }
    let peer = Peer::new(addr, local, "https", caller, Some(session));
    Some((Conn::new(tls, permit, addr, header_timeout), peer))
}

/// Read what the plain-HTTP client sent (so closing does not reset the connection before it
/// reads the answer), then answer 400.
async fn refuse_plain(mut stream: TcpStream, wait: Duration) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + wait.min(Duration::from_secs(2));
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{USE_TLS}",
        USE_TLS.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl Listener for GsiListener {
    type Io = Conn<tokio_openssl::SslStream<TcpStream>>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The handshake task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer::new(self.local, self.local, "https", Arc::new(Err("listener".into())), None))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Between requests: nothing of the next one read yet.
    Idle,
    /// Part of a request head read; the end (CR LF CR LF) not yet.
    Head,
    /// Head complete; body and answer are the request handling's business.
    Rest,
}

/// A connection with the header timer: the head of each request must arrive within
/// `header_timeout` of its first byte (408 otherwise), and an idle connection is closed after
/// the same time. Holds its slot of the connection cap.
pub struct Conn<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    timeout: Duration,
    phase: Phase,
    /// How many bytes of CR LF CR LF the head read so far ends with.
    matched: u8,
    /// When the current head (or idle wait) runs out. The timer below is re-armed lazily: it may
    /// fire earlier (at an older deadline), and is then moved to this one, so a request costs no
    /// timer-wheel update.
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    /// The 408 being written after a head timed out (offset written so far).
    refusing: Option<usize>,
}

const HEAD_TIMEOUT_ANSWER: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 41\r\nConnection: close\r\n\r\nrequest headers did not arrive in time.\r\n";

impl<S> Conn<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, peer: SocketAddr, timeout: Duration) -> Self {
        Conn {
            inner,
            _permit: permit,
            peer,
            timeout,
            phase: Phase::Idle,
            matched: 0,
            deadline: Instant::now() + timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            refusing: None,
        }
    }

    /// Track the head of the request in `data` (just read).
    fn saw(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.matched = 0;
            self.deadline = Instant::now() + self.timeout;
        }
        if self.phase != Phase::Head {
            return;
        }
        // A CR LF CR LF that straddles the previous read, then one anywhere in `data` (memchr's
        // vectorised search), then how much of it the bytes end with.
        let edge = data.len().min(3);
        let m = scan(self.matched, &data[..edge]);
        if m == 4 || (data.len() > 3 && memchr::memmem::find(data, b"\r\n\r\n").is_some()) {
            self.phase = Phase::Rest;
            return;
        }
        self.matched = if data.len() > 3 { scan(0, &data[data.len() - 3..]) } else { m };
    }

    /// The header timer: ready once `deadline` has passed (re-arming a timer that fired early).
    fn timer_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= self.deadline {
                return true;
            }
            let d = self.deadline;
            self.timer.as_mut().reset(d);
        }
    }

    /// A request is answered: the next bytes read start a new head (or the idle wait runs).
    fn answering(&mut self) {
        if self.phase == Phase::Rest {
            self.phase = Phase::Idle;
            self.deadline = Instant::now() + self.timeout;
        }
    }
}

/// How much of CR LF CR LF the bytes end with, having ended with `m` of it before `data`
/// (4: the whole of it is in there).
fn scan(mut m: u8, data: &[u8]) -> u8 {
    for &b in data {
        m = match (b, m) {
            (b'\r', 2) => 3,
            (b'\r', _) => 1,
            (b'\n', 1) => 2,
            (b'\n', 3) => 4,
            _ => 0,
        };
        if m == 4 {
            return 4;
        }
    }
    m
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(off) = this.refusing {
            // Finish writing the 408, then end the connection.
            let mut off = off;
            while off < HEAD_TIMEOUT_ANSWER.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &HEAD_TIMEOUT_ANSWER[off..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => off += n,
                    Poll::Pending => {
                        this.refusing = Some(off);
                        return Poll::Pending;
                    }
                }
            }
            this.refusing = Some(HEAD_TIMEOUT_ANSWER.len());
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request headers timed out")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase == Phase::Rest {
                    return Poll::Pending;
                }
                if !this.timer_expired(cx) {
                    return Poll::Pending;
                }
                if this.phase == Phase::Idle {
                    // An idle keep-alive connection: end it quietly (EOF).
                    tracing::debug!(peer = %this.peer, "idle connection closed");
                    return Poll::Ready(Ok(()));
                }
                tracing::warn!(peer = %this.peer, timeout_ms = this.timeout.as_millis() as u64, "request headers stalled: answered 408 and closed");
                this.refusing = Some(0);

                self.poll_read(cx, buf)
            }
        }
    }
}

use std::future::Future;

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // An answer is going out: the next bytes read start a new request.
        this.answering();
        Pin::new(&mut this.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.answering();
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
