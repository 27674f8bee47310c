//! The GSI GSS-API token engine: a TLS handshake carried in opaque byte tokens (as GridFTP's
//! `ADAT` and GSI-secured protocols tunnel it), done with OpenSSL on in-memory buffers, followed by
//! the GSI delegation exchange (the acceptor sends a certificate request, the initiator signs a
//! fresh RFC 3820 proxy with its credential's key), and then `wrap`/`unwrap` of messages as TLS
//! application records. Also the TLS contexts for GSI-authenticated raw sockets (GridFTP DCAU
//! data channels), whose peers present proxy chains.
//!
//! Both sides live here: [`Initiator`] (clients) and [`Acceptor`] (servers, and the unit tests
//! that exercise the initiator without a network).
//!
//! Trust is decided once, by vws' own GSI validation ([`super::proxy::validate_chain`]: CRLs,
//! signing policies, RFC/draft/legacy proxies, fails closed) run on the peer's chain as soon as
//! each handshake completes — in-memory contexts and raw-socket data channels alike — plus
//! [`super::tls::check_host`] for a [`Target::Host`]. OpenSSL's own proxy-aware verification is
//! only logged (it knows no CRLs from the trust directory, no signing policies, no legacy proxies).

use std::io::{self, Read, Write};
use std::net::IpAddr;

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{
    ErrorCode, HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream,
    SslVerifyMode,
};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Builder, X509Extension, X509NameBuilder, X509Ref, X509Req, X509ReqBuilder, X509};

use super::certdir::CertDir;
use super::credential::Credential;
use super::proxy::{validate_chain, Validated};
use super::GsiError;

/// OID of the RFC 3820 proxyCertInfo extension.
pub const OID_PROXY_CERT_INFO: &str = "1.3.6.1.5.5.7.1.14";
/// DER of a proxyCertInfo value with no path length and policy language id-ppl-inheritAll.
const PCI_INHERIT_ALL: &[u8] = &[0x30, 0x0C, 0x30, 0x0A, 0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01];
/// Same with the Globus limited-proxy policy language (1.3.6.1.4.1.3536.1.1.1.9).
const PCI_LIMITED: &[u8] =
    &[0x30, 0x0F, 0x30, 0x0D, 0x06, 0x0B, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x9B, 0x50, 0x01, 0x01, 0x01, 0x09];
/// Largest token we accept from a peer (a handshake flight with a long chain is a few KiB).
pub const MAX_TOKEN: usize = 1 << 20;

/// Everything that can go wrong in GSS context establishment and message protection.
#[derive(Debug, thiserror::Error)]
pub enum GssError {
    #[error("GSI credential: {0}")]
    Credential(String),
    #[error("GSI handshake failed: {0}")]
    Handshake(String),
    #[error("GSI delegation failed: {0}")]
    Delegation(String),
    #[error("GSS token error: {0}")]
    Token(String),
    #[error("peer identity {found} is not the expected {expected}")]
    PeerIdentity { expected: String, found: String },
    /// The peer's certificate chain failed vws' GSI validation (or does not name the target).
    #[error("peer certificate rejected: {0}")]
    Peer(#[source] GsiError),
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
}

/// How the initiator checks the acceptor's certificate.
#[derive(Clone, Debug)]
pub enum Target {
    /// A host: the certificate's subjectAltName (DNS or IP) must match, as Globus does with
    /// `NAME_COMPATIBILITY=STRICT_RFC2818`.
    Host(String),
    /// An exact subject DN (slash form), like `globus-url-copy -ss`.
    Subject(String),
    /// Any certificate chaining to a trusted CA.
    Any,
}

/// In-memory duplex used as OpenSSL's transport: bytes fed from the peer's tokens are read by
/// OpenSSL, bytes OpenSSL writes are collected into the next outgoing token.
#[derive(Default, Debug)]
pub struct MemIo {
    inbuf: Vec<u8>,
    inpos: usize,
    out: Vec<u8>,
}

impl MemIo {
    fn feed(&mut self, data: &[u8]) {
        if self.inpos == self.inbuf.len() {
            self.inbuf.clear();
            self.inpos = 0;
        }
        self.inbuf.extend_from_slice(data);
    }
    fn take_out(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
    fn pending_in(&self) -> usize {
        self.inbuf.len() - self.inpos
    }
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = &self.inbuf[self.inpos..];
        if avail.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.inpos += n;
        Ok(n)
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The trusted CAs as an OpenSSL store that accepts proxy certificates in peer chains.
pub fn trust_store(dir: &CertDir) -> Result<X509Store, GssError> {
    let mut b = X509StoreBuilder::new()?;
    for ca in dir.cas() {
        b.add_cert(ca.cert.clone())?;
    }
    b.set_flags(X509VerifyFlags::ALLOW_PROXY_CERTS)?;
    Ok(b.build())
}

fn base_context(cred: &Credential, dir: &CertDir, server: bool, relax_purpose: bool) -> Result<SslContextBuilder, GssError> {
    let method = if server { SslMethod::tls_server() } else { SslMethod::tls_client() };
    let mut b = SslContext::builder(method)?;
    b.set_certificate(&cred.cert)?;
    b.set_private_key(&cred.key)?;
    for c in &cred.chain {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.check_private_key().map_err(|e| GssError::Credential(format!("key does not match the certificate: {e}")))?;
    b.set_cert_store(trust_store(dir)?);
    let mut mode = SslVerifyMode::PEER;
    if server {
        mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    }
    // OpenSSL's verdict is logged, never decisive: [`verify_peer_chain`] decides after the
    // handshake (OpenSSL keeps the chain exactly as presented).
    b.set_verify_callback(mode, move |ok, store| {
        // GSI peers on data channels present user proxies, whose chains carry no serverAuth /
        // clientAuth purpose for this role: not worth a log line there.
        let purpose = relax_purpose && store.error().as_raw() == 26; /* X509_V_ERR_INVALID_PURPOSE */
        if !ok && !purpose {
            let subject = store.current_cert().map(|c| dn(c.subject_name())).unwrap_or_default();
            tracing::debug!(
                depth = store.error_depth(),
                error = %store.error(),
                %subject,
                "OpenSSL chain verification deferred to GSI validation"
            );
        }
        true
    });
    b.set_options(SslOptions::NO_TICKET);
    if server {
        // Data sockets switch to clear text right after the handshake: no post-handshake records.
        let _ = b.set_num_tickets(0);
    }
    Ok(b)
}

/// A TLS context for the connecting side of a GSI-authenticated socket (e.g. a DCAU data channel).
pub fn client_context(cred: &Credential, dir: &CertDir) -> Result<SslContext, GssError> {
    Ok(base_context(cred, dir, false, true)?.build())
}

/// A TLS context for the accepting side of a GSI-authenticated socket; the peer must present a
/// certificate (chain) issued by a trusted CA, proxies allowed.
pub fn server_context(cred: &Credential, dir: &CertDir) -> Result<SslContext, GssError> {
    Ok(base_context(cred, dir, true, true)?.build())
}

/// Slash-form subject of the end-entity certificate of a chain (leaf first): skips certificates
/// that are proxies of the next (named issuer + one CN, issued by it).
pub fn chain_identity(chain: &[X509]) -> Option<String> {
    let mut i = 0;
    while i + 1 < chain.len() && is_proxy_of(&chain[i], &chain[i + 1]) {
        i += 1;
    }
    chain.get(i).map(|c| dn(c.subject_name()))
}

fn is_proxy_of(c: &X509Ref, issuer: &X509Ref) -> bool {
    let sub: Vec<_> = c.subject_name().entries().collect();
    let iss: Vec<_> = issuer.subject_name().entries().collect();
    if sub.len() != iss.len() + 1 || sub.last().map(|e| e.object().nid()) != Some(Nid::COMMONNAME) {
        return false;
    }
    let same = sub
        .iter()
        .zip(iss.iter())
        .all(|(a, b)| a.object().nid() == b.object().nid() && a.data().as_slice() == b.data().as_slice());
    same && c.issuer_name().try_cmp(issuer.subject_name()).map(|o| o.is_eq()).unwrap_or(false)
}

/// Globus slash form of an X.509 name (the one implementation lives in `security::x509`).
pub fn dn(name: &openssl::x509::X509NameRef) -> String {
    super::x509::dn_string(name)
}

fn err_text(e: &openssl::ssl::Error) -> String {
    let mut s = e.to_string();
    if let Some(st) = e.ssl_error() {
        let parts: Vec<String> = st
            .errors()
            .iter()
            .map(|x| {
                x.reason().unwrap_or("unknown").to_string() + x.data().map(|d| format!(" ({d})")).unwrap_or_default().as_str()
            })
            .collect();
        if !parts.is_empty() {
            s = parts.join("; ");
        }
    }
    s
}

fn handshake_error(e: HandshakeError<MemIo>) -> GssError {
    match e {
        HandshakeError::SetupFailure(e) => GssError::Handshake(e.to_string()),
        HandshakeError::Failure(mid) => {
            let verify = mid.ssl().verify_result();
            let mut msg = err_text(mid.error());
            if verify.as_raw() != 0 {
                msg = format!("{msg}: peer certificate: {}", verify.error_string());
            }
            GssError::Handshake(msg)
        }
        HandshakeError::WouldBlock(_) => GssError::Handshake("handshake incomplete".into()),
    }
}

/// The peer's chain, leaf first (OpenSSL leaves the leaf out of the chain on the server side).
pub fn full_peer_chain(ssl: &openssl::ssl::SslRef) -> Vec<X509> {
    let mut v: Vec<X509> = Vec::new();
    if let Some(leaf) = ssl.peer_certificate() {
        v.push(leaf);
    }
    if let Some(chain) = ssl.peer_cert_chain() {
        for c in chain {
            let dup = v.first().map(|l| l.to_der().ok() == c.to_der().ok()).unwrap_or(false);
            if !(dup && v.len() == 1) {
                v.push(c.to_owned());
            }
        }
    }
    v
}

/// vws' GSI validation of the peer's chain after a handshake (fails closed), then the target
/// check: the host named by a certificate of the chain's end entity, or an exact subject (the
/// leaf's or the end entity's).
pub fn verify_peer_chain(ssl: &openssl::ssl::SslRef, dir: &CertDir, target: &Target) -> Result<Validated, GssError> {
    let chain = full_peer_chain(ssl);
    if chain.is_empty() {
        return Err(GssError::Peer(GsiError::NoPeerCertificate));
    }
    let v = validate_chain(&chain, dir).map_err(GssError::Peer)?;
    match target {
        Target::Host(h) => super::tls::check_host(v.eec(), h).map_err(GssError::Peer)?,
        Target::Subject(expect) => {
            let leaf = dn(v.leaf().subject_name());
            if &leaf != expect && &v.identity_dn != expect {
                return Err(GssError::PeerIdentity { expected: expect.clone(), found: v.identity_dn.clone() });
            }
        }
        Target::Any => {}
    }
    tracing::debug!(peer = %v.identity_dn, proxies = v.proxy_depth, "GSI peer validated");
    Ok(v)
}

/// Reads all decrypted application data currently available.
fn drain(s: &mut SslStream<MemIo>, into: &mut Vec<u8>) -> Result<(), GssError> {
    let mut buf = [0u8; 16384];
    loop {
        match s.ssl_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if into.len() + n > MAX_TOKEN {
                    return Err(GssError::Token("peer message too large".into()));
                }
                into.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => return Ok(()),
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                return Err(GssError::Token("peer closed the security context".into()))
            }
            Err(e) => return Err(GssError::Token(err_text(&e))),
        }
    }
}

/// An established security context: wraps and unwraps messages as TLS records.
pub struct Context {
    s: SslStream<MemIo>,
    peer_chain: Vec<X509>,
    peer: Validated,
    /// Plaintext unwrapped but not yet consumed.
    pending: Vec<u8>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("peer", &self.peer_identity()).finish_non_exhaustive()
    }
}

impl Context {
    fn new(s: SslStream<MemIo>, peer: Validated, pending: Vec<u8>) -> Context {
        let peer_chain = full_peer_chain(s.ssl());
        Context { s, peer_chain, peer, pending }
    }
    /// The result of vws' validation of the peer's chain.
    pub fn validated(&self) -> &Validated {
        &self.peer
    }
    /// Protects one message (confidentiality + integrity): one or more TLS application records.
    pub fn wrap(&mut self, msg: &[u8]) -> Result<Vec<u8>, GssError> {
        let mut off = 0;
        while off < msg.len() {
            let n = self.s.ssl_write(&msg[off..]).map_err(|e| GssError::Token(err_text(&e)))?;
            off += n;
        }
        Ok(self.s.get_mut().take_out())
    }
    /// Opens a token from the peer: the plaintext it carries (possibly empty).
    pub fn unwrap(&mut self, token: &[u8]) -> Result<Vec<u8>, GssError> {
        self.s.get_mut().feed(token);
        let mut out = std::mem::take(&mut self.pending);
        drain(&mut self.s, &mut out)?;
        if self.s.get_ref().pending_in() > 0 {
            // A partial record: keep it for the next token.
            tracing::debug!(bytes = self.s.get_ref().pending_in(), "partial GSS token kept");
        }
        Ok(out)
    }
    /// The peer's certificate chain, leaf first.
    pub fn peer_chain(&self) -> &[X509] {
        &self.peer_chain
    }
    /// The peer's identity (end-entity DN, slash form), as validated.
    pub fn peer_identity(&self) -> Option<String> {
        Some(self.peer.identity_dn.clone())
    }
    /// The negotiated protocol, e.g. "TLSv1.3".
    pub fn protocol(&self) -> &'static str {
        self.s.ssl().version_str()
    }
}

enum InitState {
    Handshake(MidHandshakeSslStream<MemIo>),
    /// Handshake done (peer validated) with output pending; the acceptor answers with a filler
    /// token.
    Flags(SslStream<MemIo>, Validated),
    /// Delegation flag sent; waiting for the certificate request.
    Req(SslStream<MemIo>, Validated, Vec<u8>),
    Done(SslStream<MemIo>, Validated),
    Failed,
}

/// The initiating side of a GSI security context (clients). The acceptor's chain is validated
/// against the trust directory (and the target) the moment the handshake completes, before
/// anything — a delegation above all — is sent to it.
pub struct Initiator<'d> {
    state: InitState,
    cred: Credential,
    dir: &'d CertDir,
    target: Target,
    delegate: Option<Delegation>,
}

/// What to delegate.
#[derive(Clone, Copy, Debug)]
pub struct Delegation {
    /// Lifetime of the delegated proxy in seconds (capped by the signer's own lifetime).
    pub lifetime: i64,
    /// Delegate a limited proxy.
    pub limited: bool,
}

impl Default for Delegation {
    fn default() -> Self {
        Delegation { lifetime: 12 * 3600, limited: false }
    }
}

impl<'d> Initiator<'d> {
    /// Starts a context: returns the initiator and the first token (the TLS ClientHello).
    pub fn new(
        cred: &Credential,
        dir: &'d CertDir,
        target: &Target,
        delegate: Option<Delegation>,
    ) -> Result<(Initiator<'d>, Vec<u8>), GssError> {
        check_lifetime(cred)?;
        let ctx = base_context(cred, dir, false, false)?.build();
        let mut ssl = Ssl::new(&ctx)?;
        if let Target::Host(h) = target {
            let host = h.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<IpAddr>().is_err() {
                let _ = ssl.set_hostname(host);
            }
        }
        let target = target.clone();
        let state = match ssl.connect(MemIo::default()) {
            Ok(_) => return Err(GssError::Handshake("handshake completed without a peer".into())),
            Err(HandshakeError::WouldBlock(mut mid)) => {
                let out = mid.get_mut().take_out();
                (InitState::Handshake(mid), out)
            }
            Err(e) => return Err(handshake_error(e)),
        };
        Ok((Initiator { state: state.0, cred: cred.clone(), dir, target, delegate }, state.1))
    }

    /// Whether the context is established (no more tokens to exchange).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, InitState::Done(..))
    }

    /// Consumes a token from the acceptor; returns the next token to send (may be empty when the
    /// context is complete).
    pub fn step(&mut self, input: &[u8]) -> Result<Vec<u8>, GssError> {
        let state = std::mem::replace(&mut self.state, InitState::Failed);
        match state {
            InitState::Handshake(mut mid) => {
                mid.get_mut().feed(input);
                match mid.handshake() {
                    Ok(mut s) => {
                        // Ours decides, before the flag (and any delegation) goes out.
                        let v = verify_peer_chain(s.ssl(), self.dir, &self.target)?;
                        let out = s.get_mut().take_out();
                        if !out.is_empty() {
                            self.state = InitState::Flags(s, v);
                            Ok(out)
                        } else {
                            let mut sink = Vec::new();
                            drain(&mut s, &mut sink)?;
                            self.send_flag(s, v)
                        }
                    }
                    Err(HandshakeError::WouldBlock(mut mid)) => {
                        let out = mid.get_mut().take_out();
                        self.state = InitState::Handshake(mid);
                        Ok(out)
                    }
                    Err(e) => Err(handshake_error(e)),
                }
            }
            InitState::Flags(mut s, v) => {
                s.get_mut().feed(input);
                let mut filler = Vec::new();
                drain(&mut s, &mut filler)?;
                self.send_flag(s, v)
            }
            InitState::Req(mut s, v, mut req) => {
                s.get_mut().feed(input);
                drain(&mut s, &mut req)?;
                let csr = match X509Req::from_der(&req) {
                    Ok(r) => r,
                    Err(_) if s.get_ref().pending_in() > 0 || req.is_empty() => {
                        self.state = InitState::Req(s, v, req);
                        return Ok(Vec::new());
                    }
                    Err(e) => return Err(GssError::Delegation(format!("bad certificate request: {e}"))),
                };
                let d = self.delegate.unwrap_or_default();
                let cert = sign_proxy_request(&self.cred, &csr, d.lifetime, d.limited)?;
                let der = cert.to_der()?;
                let mut off = 0;
                while off < der.len() {
                    off += s.ssl_write(&der[off..]).map_err(|e| GssError::Delegation(err_text(&e)))?;
                }
                let out = s.get_mut().take_out();
                self.state = InitState::Done(s, v);
                Ok(out)
            }
            InitState::Done(s, v) => {
                self.state = InitState::Done(s, v);
                if input.is_empty() {
                    Ok(Vec::new())
                } else {
                    Err(GssError::Token("token received after the context was established".into()))
                }
            }
            InitState::Failed => Err(GssError::Token("context failed earlier".into())),
        }
    }

    fn send_flag(&mut self, mut s: SslStream<MemIo>, v: Validated) -> Result<Vec<u8>, GssError> {
        let flag: &[u8] = if self.delegate.is_some() { b"D" } else { b"0" };
        s.ssl_write(flag).map_err(|e| GssError::Token(err_text(&e)))?;
        let out = s.get_mut().take_out();
        self.state = if self.delegate.is_some() { InitState::Req(s, v, Vec::new()) } else { InitState::Done(s, v) };
        Ok(out)
    }

    /// The established context (after [`Initiator::is_complete`]).
    pub fn into_context(self) -> Result<Context, GssError> {
        match self.state {
            InitState::Done(s, v) | InitState::Req(s, v, _) | InitState::Flags(s, v) => Ok(Context::new(s, v, Vec::new())),
            _ => Err(GssError::Handshake("the security context is not established".into())),
        }
    }
}

enum AccState {
    Handshake(MidHandshakeSslStream<MemIo>),
    Flag(SslStream<MemIo>, Validated),
    Cert(SslStream<MemIo>, Validated, PKey<Private>, Vec<u8>),
    Done(SslStream<MemIo>, Validated),
}

/// The accepting side of a GSI security context (servers). The initiator's chain is validated
/// against the trust directory as soon as the handshake completes. Always accepts delegation
/// when the initiator offers it; the delegated credential is then available.
pub struct Acceptor<'d> {
    ctx: SslContext,
    dir: &'d CertDir,
    state: Option<AccState>,
    delegated: Option<Credential>,
}

impl<'d> Acceptor<'d> {
    pub fn new(cred: &Credential, dir: &'d CertDir) -> Result<Acceptor<'d>, GssError> {
        Ok(Acceptor { ctx: server_context(cred, dir)?, dir, state: None, delegated: None })
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.state, Some(AccState::Done(..)))
    }

    /// Consumes a token from the initiator; returns the token to send back (possibly empty).
    pub fn step(&mut self, input: &[u8]) -> Result<Vec<u8>, GssError> {
        let state = match self.state.take() {
            None => {
                let ssl = Ssl::new(&self.ctx)?;
                let mut io = MemIo::default();
                io.feed(input);
                match ssl.accept(io) {
                    Ok(s) => {
                        let v = verify_peer_chain(s.ssl(), self.dir, &Target::Any)?;
                        self.state = Some(AccState::Flag(s, v));
                        return Ok(Vec::new());
                    }
                    Err(HandshakeError::WouldBlock(mut mid)) => {
                        let out = mid.get_mut().take_out();
                        self.state = Some(AccState::Handshake(mid));
                        return Ok(out);
                    }
                    Err(e) => return Err(handshake_error(e)),
                }
            }
            Some(s) => s,
        };
        match state {
            AccState::Handshake(mut mid) => {
                mid.get_mut().feed(input);
                match mid.handshake() {
                    Ok(mut s) => {
                        let v = verify_peer_chain(s.ssl(), self.dir, &Target::Any)?;
                        let mut out = s.get_mut().take_out();
                        let mut data = Vec::new();
                        drain(&mut s, &mut data)?;
                        if data.is_empty() {
                            if out.is_empty() {
                                // TLS 1.3: the initiator spoke last; answer with a filler byte.
                                s.ssl_write(b"\0").map_err(|e| GssError::Token(err_text(&e)))?;
                                out = s.get_mut().take_out();
                            }
                            self.state = Some(AccState::Flag(s, v));
                            Ok(out)
                        } else {
                            self.on_flag(s, v, &data, out)
                        }
                    }
                    Err(HandshakeError::WouldBlock(mut mid)) => {
                        let out = mid.get_mut().take_out();
                        self.state = Some(AccState::Handshake(mid));
                        Ok(out)
                    }
                    Err(e) => Err(handshake_error(e)),
                }
            }
            AccState::Flag(mut s, v) => {
                s.get_mut().feed(input);
                let mut data = Vec::new();
                drain(&mut s, &mut data)?;
                if data.is_empty() {
                    self.state = Some(AccState::Flag(s, v));
                    return Ok(Vec::new());
                }
                self.on_flag(s, v, &data, Vec::new())
            }
            AccState::Cert(mut s, v, key, mut buf) => {
                s.get_mut().feed(input);
                drain(&mut s, &mut buf)?;
                let cert = match X509::from_der(&buf) {
                    Ok(c) => c,
                    Err(_) if buf.is_empty() => {
                        self.state = Some(AccState::Cert(s, v, key, buf));
                        return Ok(Vec::new());
                    }
                    Err(e) => return Err(GssError::Delegation(format!("bad delegated certificate: {e}"))),
                };
                let chain: Vec<X509> = full_peer_chain(s.ssl());
                if !cert.public_key().map(|p| p.public_eq(&key)).unwrap_or(false) {
                    return Err(GssError::Delegation("the delegated certificate is not for our key".into()));
                }
                let issuer_ok = chain.first().map(|leaf| is_proxy_of(&cert, leaf)).unwrap_or(false);
                if !issuer_ok {
                    return Err(GssError::Delegation("the delegated certificate is not a proxy of the peer".into()));
                }
                self.delegated =
                    Some(Credential { cert, key, chain, cert_path: "<delegated>".into(), key_path: "<delegated>".into() });
                self.state = Some(AccState::Done(s, v));
                Ok(Vec::new())
            }
            AccState::Done(s, v) => {
                self.state = Some(AccState::Done(s, v));
                Err(GssError::Token("token received after the context was established".into()))
            }
        }
    }

    fn on_flag(&mut self, mut s: SslStream<MemIo>, v: Validated, data: &[u8], mut out: Vec<u8>) -> Result<Vec<u8>, GssError> {
        match data[0] {
            b'D' => {
                let rsa = Rsa::generate(2048)?;
                let key = PKey::from_rsa(rsa)?;
                let mut rb = X509ReqBuilder::new()?;
                rb.set_pubkey(&key)?;
                let mut nb = X509NameBuilder::new()?;
                nb.append_entry_by_nid(Nid::COMMONNAME, "proxy")?;
                rb.set_subject_name(&nb.build())?;
                rb.sign(&key, MessageDigest::sha256())?;
                let der = rb.build().to_der()?;
                s.ssl_write(&der).map_err(|e| GssError::Delegation(err_text(&e)))?;
                out.extend_from_slice(&s.get_mut().take_out());
                self.state = Some(AccState::Cert(s, v, key, Vec::new()));
                Ok(out)
            }
            b'0' => {
                self.state = Some(AccState::Done(s, v));
                Ok(out)
            }
            other => Err(GssError::Token(format!("bad delegation flag 0x{other:02x}"))),
        }
    }

    /// The credential the initiator delegated, if it did.
    pub fn delegated(&self) -> Option<&Credential> {
        self.delegated.as_ref()
    }

    pub fn into_context(self) -> Result<Context, GssError> {
        match self.state {
            Some(AccState::Done(s, v)) => Ok(Context::new(s, v, Vec::new())),
            _ => Err(GssError::Handshake("the security context is not established".into())),
        }
    }
}

/// Refuses credentials whose chain has expired or is not yet valid, naming the certificate.
pub fn check_lifetime(cred: &Credential) -> Result<(), GssError> {
    let now = Asn1Time::days_from_now(0)?;
    for c in std::iter::once(&cred.cert).chain(cred.chain.iter()) {
        if c.not_after() < now {
            return Err(GssError::Credential(format!(
                "certificate {} has expired (notAfter {})",
                dn(c.subject_name()),
                c.not_after()
            )));
        }
        if c.not_before() > now {
            return Err(GssError::Credential(format!(
                "certificate {} is not yet valid (notBefore {})",
                dn(c.subject_name()),
                c.not_before()
            )));
        }
    }
    Ok(())
}

/// Signs an RFC 3820 impersonation (or limited) proxy for the public key of `req` with `signer`'s
/// key: subject = signer's subject + `CN=<serial>`, critical proxyCertInfo, validity from five
/// minutes ago to `lifetime` seconds from now, never beyond the signer's own notAfter.
pub fn sign_proxy_request(signer: &Credential, req: &X509Req, lifetime: i64, limited: bool) -> Result<X509, GssError> {
    let pubkey = req.public_key()?;
    if !req.verify(&pubkey).unwrap_or(false) {
        return Err(GssError::Delegation("the certificate request's signature does not verify".into()));
    }
    let mut serial = BigNum::new()?;
    serial.rand(31, MsbOption::ONE, false)?;
    let serial_dec = serial.to_dec_str()?.to_string();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let sn = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&sn)?;
    b.set_issuer_name(signer.cert.subject_name())?;
    let mut nb = X509NameBuilder::new()?;
    for e in signer.cert.subject_name().entries() {
        nb.append_entry(e)?;
    }
    nb.append_entry_by_nid(Nid::COMMONNAME, &serial_dec)?;
    b.set_subject_name(&nb.build())?;
    b.set_pubkey(&pubkey)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signer_end = std::iter::once(&signer.cert)
        .chain(signer.chain.iter())
        .map(|c| Asn1Time::from_unix(now).ok().and_then(|n| n.diff(c.not_after()).ok()))
        .map(|d| d.map(|d| d.days as i64 * 86400 + d.secs as i64).unwrap_or(0))
        .min()
        .unwrap_or(0);
    let life = lifetime.min(signer_end).max(0);
    let nb_t = Asn1Time::from_unix(now - 300)?;
    let na_t = Asn1Time::from_unix(now + life)?;
    b.set_not_before(&nb_t)?;
    b.set_not_after(&na_t)?;
    let oid = Asn1Object::from_str(OID_PROXY_CERT_INFO)?;
    let pci = Asn1OctetString::new_from_bytes(if limited { PCI_LIMITED } else { PCI_INHERIT_ALL })?;
    b.append_extension(X509Extension::new_from_der(&oid, true, &pci)?)?;
    // keyUsage: digitalSignature, keyEncipherment, dataEncipherment (critical).
    let ku_oid = Asn1Object::from_str("2.5.29.15")?;
    let ku = Asn1OctetString::new_from_bytes(&[0x03, 0x02, 0x04, 0xB0])?;
    b.append_extension(X509Extension::new_from_der(&ku_oid, true, &ku)?)?;
    b.sign(&signer.key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// After a raw-socket GSI handshake (DCAU A): the peer must be the same identity as ours.
pub fn check_same_identity(ours: &Credential, peer_chain: &[X509]) -> Result<String, GssError> {
    let mine = chain_identity(&ours.certificates()).unwrap_or_default();
    let theirs = chain_identity(peer_chain).ok_or_else(|| GssError::Handshake("peer sent no certificate".into()))?;
    if mine != theirs {
        return Err(GssError::PeerIdentity { expected: mine, found: theirs });
    }
    Ok(theirs)
}

/// Reads one application-data byte sequence (a GSS token after the handshake) from a socket TLS
/// stream: returns at least one byte.
fn read_token<S: Read + Write>(s: &mut SslStream<S>) -> Result<Vec<u8>, GssError> {
    let mut b = [0u8; 4096];
    match s.ssl_read(&mut b) {
        Ok(n) if n > 0 => Ok(b[..n].to_vec()),
        Ok(_) => Err(GssError::Token("peer closed during context establishment".into())),
        Err(e) => Err(GssError::Token(err_text(&e))),
    }
}

fn is_tls13<S>(s: &SslStream<S>) -> bool {
    s.ssl().version2() == Some(openssl::ssl::SslVersion::TLS1_3)
}

fn socket_handshake_error(e: HandshakeError<std::net::TcpStream>) -> GssError {
    match e {
        HandshakeError::Failure(mid) => {
            let v = mid.ssl().verify_result();
            let mut m = err_text(mid.error());
            if v.as_raw() != 0 {
                m = format!("{m}: peer certificate: {}", v.error_string());
            }
            GssError::Handshake(m)
        }
        other => GssError::Handshake(other.to_string()),
    }
}

/// GSI context establishment directly on a socket (GridFTP DCAU data channels, XIO GSI driver):
/// the raw TLS handshake, vws' validation of the peer's chain against `dir` (fails closed, before
/// anything else is exchanged), then — TLS 1.3 only — the acceptor's one-byte filler token, then
/// the initiator's delegation flag ('0': none). Returns the socket (positioned after the
/// exchange, so clear-text data may follow) and the validated peer.
pub fn accept_on_socket(
    ctx: &SslContext,
    dir: &CertDir,
    sock: std::net::TcpStream,
) -> Result<(std::net::TcpStream, Validated), GssError> {
    let (s, v, early) = accept_tls_on_socket(ctx, dir, sock, false)?;
    if let Some(b) = early.first() {
        return Err(GssError::Delegation(format!("unexpected delegation flag 0x{b:02x} on a data channel")));
    }
    let raw = s.get_ref().try_clone().map_err(|e| GssError::Token(e.to_string()))?;
    Ok((raw, v))
}

/// [`accept_on_socket`], keeping the TLS session: with `PROT P` / `PROT S` the data channel then
/// carries its MODE E stream as TLS application records (each record is one GSS wrap token).
///
/// A protected (`protected`) Globus data channel — checked against globus-gridftp-server 13 —
/// has no post-handshake exchange: no TLS 1.3 filler, no delegation flag; its first record is
/// already data. So nothing is sent, and the first record is taken as the flag only when it is
/// the single byte `'0'` (a MODE E stream starts with a 17-byte header); otherwise its bytes are
/// returned (third element) as the start of the data stream, to be read before the TLS session.
pub fn accept_tls_on_socket(
    ctx: &SslContext,
    dir: &CertDir,
    sock: std::net::TcpStream,
    protected: bool,
) -> Result<(SslStream<std::net::TcpStream>, Validated, Vec<u8>), GssError> {
    let ssl = Ssl::new(ctx)?;
    let mut s = ssl.accept(sock).map_err(socket_handshake_error)?;
    let v = verify_peer_chain(s.ssl(), dir, &Target::Any)?;
    if is_tls13(&s) && !protected {
        s.ssl_write(b"\0").map_err(|e| GssError::Token(err_text(&e)))?;
    }
    let first = read_token(&mut s)?;
    if first == b"0" {
        return Ok((s, v, Vec::new()));
    }
    Ok((s, v, first))
}

/// The initiating side of [`accept_on_socket`].
pub fn connect_on_socket(
    ctx: &SslContext,
    dir: &CertDir,
    sock: std::net::TcpStream,
) -> Result<(std::net::TcpStream, Validated), GssError> {
    let (s, v) = connect_tls_on_socket(ctx, dir, sock, false)?;
    let raw = s.get_ref().try_clone().map_err(|e| GssError::Token(e.to_string()))?;
    Ok((raw, v))
}

/// [`connect_on_socket`], keeping the TLS session (see [`accept_tls_on_socket`]); `protected`:
/// no filler is awaited and no delegation flag sent, the data follows the handshake directly.
pub fn connect_tls_on_socket(
    ctx: &SslContext,
    dir: &CertDir,
    sock: std::net::TcpStream,
    protected: bool,
) -> Result<(SslStream<std::net::TcpStream>, Validated), GssError> {
    let ssl = Ssl::new(ctx)?;
    let mut s = ssl.connect(sock).map_err(socket_handshake_error)?;
    let v = verify_peer_chain(s.ssl(), dir, &Target::Any)?;
    if protected {
        return Ok((s, v));
    }
    if is_tls13(&s) {
        let _filler = read_token(&mut s)?;
    }
    s.ssl_write(b"0").map_err(|e| GssError::Token(err_text(&e)))?;
    Ok((s, v))
}

/// Test fixtures: an in-memory CA, proxy and host credential.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A throwaway CA, user certificate and RFC proxy, all in memory.
    pub(crate) fn kit() -> (tempfile::TempDir, CertDir, Credential, Credential) {
        let dir = tempfile::tempdir().unwrap();
        let mk_name = |cn: &str| {
            let mut nb = X509NameBuilder::new().unwrap();
            nb.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Grid").unwrap();
            nb.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
            nb.build()
        };
        let key = || PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let cert = |subject: &str, issuer: &str, pk: &PKey<Private>, signk: &PKey<Private>, ca: bool| {
            let mut b = X509Builder::new().unwrap();
            b.set_version(2).unwrap();
            let mut sn = BigNum::new().unwrap();
            sn.rand(60, MsbOption::ONE, false).unwrap();
            b.set_serial_number(&Asn1Integer::from_bn(&sn).unwrap()).unwrap();
            b.set_subject_name(&mk_name(subject)).unwrap();
            b.set_issuer_name(&mk_name(issuer)).unwrap();
            b.set_pubkey(pk).unwrap();
            b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
            b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
            let ctx = b.x509v3_context(None, None);
            let bc = if ca { "critical,CA:TRUE" } else { "critical,CA:FALSE" };
            #[allow(deprecated)]
            let e = X509Extension::new(None, Some(&ctx), "basicConstraints", bc).unwrap();
            b.append_extension(e).unwrap();
            if !ca {
                #[allow(deprecated)]
                let e = X509Extension::new(None, None, "keyUsage", "critical,digitalSignature,keyEncipherment").unwrap();
                b.append_extension(e).unwrap();
            }
            b.sign(signk, MessageDigest::sha256()).unwrap();
            b.build()
        };
        let cak = key();
        let ca = cert("Test CA", "Test CA", &cak, &cak, true);
        let hash = ca.subject_name_hash();
        std::fs::write(dir.path().join(format!("{hash:08x}.0")), ca.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.path().join(format!("{hash:08x}.signing_policy")),
            "access_id_CA X509 '/O=Grid/CN=Test CA'\npos_rights globus CA:sign\ncond_subjects globus '\"/O=Grid/*\"'\n",
        )
        .unwrap();
        let certdir = CertDir::load(dir.path()).unwrap();
        let uk = key();
        let user = cert("User", "Test CA", &uk, &cak, false);
        let hk = key();
        let host = cert("localhost", "Test CA", &hk, &cak, false);
        let user_cred = Credential { cert: user, key: uk, chain: vec![], cert_path: "u".into(), key_path: "u".into() };
        // A proxy of the user, made by the delegation code itself.
        let pk = key();
        let mut rb = X509ReqBuilder::new().unwrap();
        rb.set_pubkey(&pk).unwrap();
        rb.sign(&pk, MessageDigest::sha256()).unwrap();
        let proxy = sign_proxy_request(&user_cred, &rb.build(), 3600, false).unwrap();
        let proxy_cred =
            Credential { cert: proxy, key: pk, chain: vec![user_cred.cert.clone()], cert_path: "p".into(), key_path: "p".into() };
        let host_cred = Credential { cert: host, key: hk, chain: vec![], cert_path: "h".into(), key_path: "h".into() };
        (dir, certdir, proxy_cred, host_cred)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::kit;
    use super::*;

    #[test]
    fn handshake_delegation_and_wrap_in_memory() {
        let (_d, certdir, proxy, host) = kit();
        let (mut init, mut tok) = Initiator::new(&proxy, &certdir, &Target::Any, Some(Delegation::default())).unwrap();
        let mut acc = Acceptor::new(&host, &certdir).unwrap();
        let mut rounds = 0;
        while !(init.is_complete() && acc.is_complete()) {
            rounds += 1;
            assert!(rounds < 10, "no convergence");
            let back = acc.step(&tok).unwrap();
            if acc.is_complete() && back.is_empty() {
                break;
            }
            tok = init.step(&back).unwrap();
        }
        assert!(init.is_complete());
        let deleg = acc.delegated().expect("delegated").clone();
        assert_eq!(chain_identity(&deleg.certificates()).unwrap(), "/O=Grid/CN=User");
        assert_eq!(deleg.cert.subject_name().entries().count(), 4, "a proxy of the proxy");
        let mut c = init.into_context().unwrap();
        let mut s = acc.into_context().unwrap();
        assert_eq!(s.peer_identity().unwrap(), "/O=Grid/CN=User");
        assert_eq!(c.peer_identity().unwrap(), "/O=Grid/CN=localhost");
        let w = c.wrap(b"USER :globus-mapping:\r\n").unwrap();
        assert_eq!(w[0], 0x17, "an application-data record");
        assert_eq!(s.unwrap(&w).unwrap(), b"USER :globus-mapping:\r\n");
        let r = s.wrap(b"230 ok\r\n").unwrap();
        assert_eq!(c.unwrap(&r).unwrap(), b"230 ok\r\n");
        // A record split across two tokens is reassembled.
        let r = s.wrap(b"200 split\r\n").unwrap();
        let (a, b) = r.split_at(7);
        assert!(c.unwrap(a).unwrap().is_empty());
        assert_eq!(c.unwrap(b).unwrap(), b"200 split\r\n");
        assert!(check_same_identity(&proxy, &deleg.certificates()).is_ok());
    }

    #[test]
    fn untrusted_server_is_refused_with_reason() {
        let (_d, certdir, proxy, _host) = kit();
        let (_d2, _certdir2, _p2, other_host) = kit();
        let (mut init, tok) = Initiator::new(&proxy, &certdir, &Target::Any, None).unwrap();
        let mut acc = Acceptor::new(&other_host, &certdir).unwrap();
        let back = acc.step(&tok).unwrap();
        let e = init.step(&back).unwrap_err().to_string();
        assert!(e.contains("certificate"), "{e}");
    }

    #[test]
    fn our_validation_decides_a_ca_without_signing_policy_is_refused_both_ways() {
        let (d, certdir, proxy, host) = kit();
        for e in std::fs::read_dir(d.path()).unwrap().flatten() {
            if e.path().extension().map(|x| x == "signing_policy").unwrap_or(false) {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let strict = CertDir::load(d.path()).unwrap();
        // The client refuses the server (OpenSSL alone would have accepted the chain).
        let (mut init, tok) = Initiator::new(&proxy, &strict, &Target::Any, Some(Delegation::default())).unwrap();
        let mut acc = Acceptor::new(&host, &certdir).unwrap();
        let back = acc.step(&tok).unwrap();
        let e = init.step(&back).unwrap_err();
        assert!(matches!(&e, GssError::Peer(GsiError::SigningPolicy { .. })), "{e}");
        assert!(e.to_string().contains("signing policy"), "{e}");
        // The server refuses the client.
        let (mut init, mut tok) = Initiator::new(&proxy, &certdir, &Target::Any, None).unwrap();
        let mut acc = Acceptor::new(&host, &strict).unwrap();
        let mut err = None;
        for _ in 0..6 {
            match acc.step(&tok) {
                Ok(back) => match init.step(&back) {
                    Ok(t) => tok = t,
                    Err(e) => panic!("initiator failed first: {e}"),
                },
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let e = err.expect("the acceptor refuses");
        assert!(matches!(&e, GssError::Peer(GsiError::SigningPolicy { .. })), "{e}");
        // A host target the certificate does not name is refused too.
        let (mut init, tok) = Initiator::new(&proxy, &certdir, &Target::Host("example.org".into()), None).unwrap();
        let mut acc = Acceptor::new(&host, &certdir).unwrap();
        let back = acc.step(&tok).unwrap();
        let e = init.step(&back).unwrap_err().to_string();
        assert!(e.contains("example.org"), "{e}");
    }

    #[test]
    fn garbage_tokens_are_errors() {
        let (_d, certdir, proxy, _host) = kit();
        let (mut init, _tok) = Initiator::new(&proxy, &certdir, &Target::Any, None).unwrap();
        assert!(init.step(b"\x16\x03\x03\x00\x05hello-not-tls").is_err());
    }
}
