//! WS-Security X.509 signed messages: GT 4.0's "GSI Secure Message" (signature only, no
//! encryption), verified and produced on libxml2's document by this module's XML-Signature core
//! (`dsig`: exclusive C14N of each referenced element, digests and RSA with OpenSSL; xmlsec1,
//! which did this before, is kept as the cross-check of its tests).
//!
//! # Wire format (what GT 4.0 sends and accepts)
//! One `wsse:Security` header (`soapenv:mustUnderstand="1"`) holding
//! - a `wsse:BinarySecurityToken` (EncodingType `…#Base64Binary`) with ValueType `…#X509PKIPathv1`
//!   carrying the whole proxy chain as a PkiPath (DER `SEQUENCE OF Certificate`, the certificate
//!   closest to the CA first, the signing proxy last) — this is what GT 4.0 clients send and what
//!   [`sign`] writes. `…#X509v3` tokens (one certificate each) are accepted too: the referenced
//!   one is the leaf, the other X509v3 tokens of the header complete its chain;
//! - a `wsu:Timestamp` with `wsu:Created` and `wsu:Expires`;
//! - a `ds:Signature` (exclusive C14N, RSA-SHA1 or RSA-SHA256, SHA-1 or SHA-256 digests, no other
//!   transforms, same-document `#id` references only) whose `ds:KeyInfo` is a
//!   `wsse:SecurityTokenReference/wsse:Reference URI="#token-id"`.
//!
//! The signature must cover, each through its `wsu:Id`: the `soapenv:Body`, the `wsu:Timestamp`
//! and every header but `wsse:Security` itself — the WS-Addressing ones (To, Action, MessageID,
//! From, ReplyTo, FaultTo, RelatesTo) and the EPR's reference properties (the resource key), so a
//! captured request cannot be pointed at another resource or endpoint; [`sign`] covers them all.
//! [`sign`] uses RSA-SHA1/SHA-1,
//! the only algorithms GT 4.0's Apache XML Security understands; [`sign_with`] can use SHA-256.
//!
//! # What [`verify`] checks, in order (each refusal is a [`WsSecError`] naming the reason)
//! 1. the body passes vws' hardened parser ([`crate::soap::xml`]: no DOCTYPE, limits); without a
//!    `wsse:Security` header the answer is `Ok(None)` (an unsigned message);
//! 2. libxml2 re-parses it without network access, entity substitution or DTD loading;
//! 3. structure (the XML-signature-wrapping guard): the root is a SOAP 1.1 Envelope with at most
//!    one Header and exactly one Body, one `wsse:Security` header, one Timestamp and one
//!    Signature in it, at most one of each wsa header, and no Id value used twice anywhere;
//! 4. the Timestamp window: Created ≤ now + skew; now ≤ min(Expires, Created + max_age) + skew;
//! 5. the token (STR → BinarySecurityToken of this Security header) and its certificates;
//! 6. the signature, with the leaf's public key and only the algorithms above (each Reference
//!    names one exclusive C14N transform, optionally with `ec:InclusiveNamespaces`);
//! 7. coverage: the Id of the real Body / Timestamp / every header resolves to that very element
//!    (not to a copy elsewhere) and is among the references verified; an unsigned header
//!    is refused by name;
//! 8. the chain, by [`super::authenticate_at`] (proxy validation, CRLs, signing policies, VOMS,
//!    grid-mapfile) → the [`Caller`];
//! 9. replay: the signer's MessageID (or, without one, its SignatureValue) must not be in the
//!    [`ReplayCache`]; it is remembered until the message would be refused as expired anyway —
//!    durably, in the store's `replay` table, with `app::durable_replay_cache` (the store glue lives in the wiring) and [`verify_at`]
//!    (written to the WAL before the request is dispatched, loaded again at start-up), so a
//!    restart or a kill -9 does not reopen the window. The record is not fsynced on its own
//!    (that would cost a disk flush per request); a system crash can lose the last ones, so
//!    after one vwsd refuses messages created before its start + skew
//!    ([`ReplayCache::refuse_created_before`], `Store::replay_may_be_lost`);
//! 10. ([`verify_at`], for requests) wsa:To names the endpoint that received the message.
//!
//! # Integration (for the HTTP listener and the client)
//! ```ignore
//! use vws::security::wssec::{self, ReplayCache};
//! // once, shared by all requests:
//! let replay = vws::app::durable_replay_cache(&store, wssec::now_ms())?; // skew 5 min, max age 5 min, 100k ids
//! // the listener must understand the header: (wssec::WSSE, "Security") == wssec::SECURITY_HEADER
//! // per request, on the raw body, before dispatch:
//! let signed = match wssec::verify_at(&body, &trust, &replay, wssec::now_ms(), &service_url).await {
//!     Ok(Some(s)) => { caller = s.caller.clone(); Some(s) }   // same Caller as GSI transport
//!     Ok(None) => None,                                      // not signed: transport identity
//!     Err(e) => return e.to_fault(),                         // soapenv:Client, reason in faultstring; log e.kind()
//! };
//! // … and on the response envelope when the request was signed:
//! let host_signer = wssec::Signer::new(&host_credential)?;      // once (prepares the key)
//! if signed.is_some() { response = host_signer.sign(&response)?; }
//! // client (`vws --sign`): request = wssec::sign(&request, &Credential::find_user()?)?;
//! ```
//! `verify` and `sign` are thread-safe and hold no lock but the replay cache's, briefly.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{c_char, c_int, CStr, CString};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use libxml::parser::{Parser, ParserOptions};
use libxml::readonly::RoNode;
use libxml::tree::Document;
use openssl::x509::X509;
use quick_xml::events::Event;
use quick_xml::name::{QName as QxName, ResolveResult};
use quick_xml::NsReader;

use super::{Caller, Credential, GsiError, TrustConfig};
use crate::soap::envelope::SoapFault;
use crate::soap::ns;
use crate::soap::xml::{self, Limits, QName};

pub const WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const X509V3: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
pub const X509_PKIPATH: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509PKIPathv1";
pub const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// The header a listener must declare it understands (it is sent with mustUnderstand="1").
pub const SECURITY_HEADER: (&str, &str) = (WSSE, "Security");

/// The WS-Addressing headers (at most one of each; all headers must be signed anyway).
const SIGNED_WSA: [&str; 7] = ["To", "Action", "MessageID", "From", "ReplyTo", "FaultTo", "RelatesTo"];

/// Why a message was refused (or could not be signed).
#[derive(Debug, thiserror::Error)]
pub enum WsSecError {
    #[error("not an acceptable SOAP envelope: {0}")]
    Malformed(String),
    #[error("invalid wsse:Security header: {0}")]
    InvalidSecurity(String),
    #[error("unsupported security token: {0}")]
    UnsupportedToken(String),
    #[error("digest mismatch: the signed part {uri} was altered after signing")]
    DigestMismatch { uri: String },
    #[error("bad signature: the SignatureValue does not verify with the key of {subject}")]
    BadSignature { subject: String },
    #[error("signature refused: {0}")]
    SignatureRefused(String),
    #[error("the signature does not cover the required part {part}")]
    UnsignedPart { part: String },
    #[error("signature wrapping suspected: {0}")]
    Wrapping(String),
    #[error("untrusted security token: {0}")]
    UntrustedToken(#[source] GsiError),
    #[error("message expired: {0}")]
    Expired(String),
    #[error("message timestamp is in the future: {0}")]
    NotYetValid(String),
    #[error("replayed message: {0}")]
    Replay(String),
    #[error("misdirected message: {0}")]
    Misdirected(String),
    #[error("the replay record could not be stored: {0}")]
    ReplayStore(String),
    #[error("cannot sign the message: {0}")]
    Signing(String),
}

impl WsSecError {
    /// A short machine-friendly name of the reason (for logs).
    pub fn kind(&self) -> &'static str {
        match self {
            WsSecError::Malformed(_) => "malformed",
            WsSecError::InvalidSecurity(_) => "invalid_security",
            WsSecError::UnsupportedToken(_) => "unsupported_token",
            WsSecError::DigestMismatch { .. } => "digest_mismatch",
            WsSecError::BadSignature { .. } => "bad_signature",
            WsSecError::SignatureRefused(_) => "signature_refused",
            WsSecError::UnsignedPart { .. } => "unsigned_part",
            WsSecError::Wrapping(_) => "wrapping",
            WsSecError::UntrustedToken(_) => "untrusted_token",
            WsSecError::Expired(_) => "expired",
            WsSecError::NotYetValid(_) => "not_yet_valid",
            WsSecError::Replay(_) => "replay",
            WsSecError::Misdirected(_) => "misdirected",
            WsSecError::ReplayStore(_) => "replay_store",
            WsSecError::Signing(_) => "signing",
        }
    }

    /// The WS-Security 1.0 fault code (§12) this refusal corresponds to.
    pub fn wsse_code(&self) -> &'static str {
        match self {
            WsSecError::Malformed(_) | WsSecError::InvalidSecurity(_) | WsSecError::Wrapping(_) => "wsse:InvalidSecurity",
            WsSecError::UnsupportedToken(_) => "wsse:UnsupportedSecurityToken",
            WsSecError::UntrustedToken(_) => "wsse:InvalidSecurityToken",
            WsSecError::Expired(_) | WsSecError::NotYetValid(_) => "wsse:MessageExpired",
            WsSecError::DigestMismatch { .. }
            | WsSecError::BadSignature { .. }
            | WsSecError::SignatureRefused(_)
            | WsSecError::UnsignedPart { .. }
            | WsSecError::Replay(_)
            | WsSecError::Misdirected(_) => "wsse:FailedCheck",
            WsSecError::Signing(_) | WsSecError::ReplayStore(_) => "wsse:FailedCheck",
        }
    }

    /// The SOAP fault to answer with: `soapenv:Client` (a server-side signing failure:
    /// `soapenv:Server`), the WS-Security code and the reason in the faultstring.
    pub fn to_fault(&self) -> SoapFault {
        let s = format!("{}: {}", self.wsse_code(), self);
        match self {
            WsSecError::Signing(_) | WsSecError::ReplayStore(_) => SoapFault::server(s),
            _ => SoapFault::client(s),
        }
    }
}

/// A verified signed message.
#[derive(Clone, Debug)]
pub struct Signed {
    /// Who signed, through the same path as GSI transport ([`super::authenticate`]).
    pub caller: Caller,
    /// The (signed) wsa:MessageID, if the message has one.
    pub message_id: Option<String>,
    /// wsu:Created, Unix milliseconds.
    pub created_ms: i64,
    /// wsu:Expires, Unix milliseconds, if present.
    pub expires_ms: Option<i64>,
    /// The elements the signature covers (Body, Timestamp, headers…), as verified.
    pub signed_parts: Vec<QName>,
    /// The SignatureMethod algorithm URI.
    pub signature_method: String,
    /// The signer's chain as presented, leaf first.
    pub chain: Vec<X509>,
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

// ------------------------------------------------------------------------------ replay cache

/// Remembers the signed messages seen within the timestamp window, to refuse replays. Bounded:
/// when full, the entry closest to expiry is dropped and every message expiring no later than
/// it is refused from then on (so an evicted message can never be replayed; only messages about
/// to expire anyway can be refused early).
pub struct ReplayCache {
    skew_ms: i64,
    max_age_ms: i64,
    capacity: usize,
    inner: Mutex<ReplayInner>,
    /// Where accepted messages are also remembered durably ([`verify_at`] waits for it).
    log: Option<Arc<dyn ReplayLog>>,
    /// Messages created before this instant are refused ([`ReplayCache::refuse_created_before`]).
    created_floor_ms: i64,
}

/// Durable memory of accepted signed messages, so that a replay is refused after a restart too.
pub trait ReplayLog: Send + Sync {
    /// Remember `key` until `end_ms`, durably, before answering; `Ok(false)`: already remembered.
    fn record<'a>(&'a self, key: &'a str, end_ms: i64, now_ms: i64) -> ReplayFuture<'a>;
}

/// What [`ReplayLog::record`] returns.
pub type ReplayFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;

#[derive(Default)]
struct ReplayInner {
    seen: HashMap<String, i64>,
    by_expiry: BTreeSet<(i64, String)>,
    /// Messages whose window ends at or before this instant are refused (evictions).
    floor_ms: i64,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new()
    }
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("skew_ms", &self.skew_ms)
            .field("max_age_ms", &self.max_age_ms)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("durable", &self.log.is_some())
            .finish()
    }
}

impl ReplayCache {
    pub const DEFAULT_SKEW_MS: i64 = 5 * 60 * 1000;
    pub const DEFAULT_MAX_AGE_MS: i64 = 5 * 60 * 1000;
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// Clock skew 5 min, messages accepted up to 5 min after Created, 100 000 entries.
    pub fn new() -> ReplayCache {
        ReplayCache::with_limits(Self::DEFAULT_SKEW_MS, Self::DEFAULT_MAX_AGE_MS, Self::DEFAULT_CAPACITY)
    }

    /// `skew_ms`: tolerated clock difference; `max_age_ms`: a message is refused once it is older
    /// than this (even when its Expires is later); `capacity`: maximum remembered messages.
    pub fn with_limits(skew_ms: i64, max_age_ms: i64, capacity: usize) -> ReplayCache {
        ReplayCache {
            skew_ms: skew_ms.max(0),
            max_age_ms: max_age_ms.max(1),
            capacity: capacity.max(1),
            inner: Mutex::new(ReplayInner::default()),
            log: None,
            created_floor_ms: i64::MIN,
        }
    }

    /// Refuse every message whose wsu:Created is before `floor_ms`: used when the durable
    /// replay records may have lost their last entries (a system crash), with `floor_ms` = start
    /// time + skew, so no message that could have been accepted before the crash is accepted
    /// again (for at most one skew after the start; clients then send fresh messages).
    pub fn refuse_created_before(mut self, floor_ms: i64) -> ReplayCache {
        self.created_floor_ms = floor_ms;
        self
    }

    /// This cache, recording in `log` too, starting with `remembered` (key, end of window).
    pub fn with_log(mut self, log: Arc<dyn ReplayLog>, remembered: Vec<(String, i64)>, now_ms: i64) -> ReplayCache {
        for (k, end) in remembered {
            let _ = self.check_and_insert(k, end, now_ms, "remembered message");
        }
        self.log = Some(log);
        self
    }

    pub fn skew_ms(&self) -> i64 {
        self.skew_ms
    }

    /// Remembered messages (expired ones may still be counted until the next check).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Timestamp window check; returns the instant after which the message is refused.
    fn window(&self, created_ms: i64, expires_ms: Option<i64>, now_ms: i64) -> Result<i64, WsSecError> {
        if created_ms < self.created_floor_ms {
            return Err(WsSecError::Expired(format!(
                "wsu:Created {} is before {}: this host restarted after a system crash and refuses messages that may have been received before it (send a new message)",
                fmt_ms(created_ms),
                fmt_ms(self.created_floor_ms)
            )));
        }
        if created_ms > now_ms + self.skew_ms {
            return Err(WsSecError::NotYetValid(format!(
                "wsu:Created {} is {} s ahead of this host's clock (skew allowed: {} s)",
                fmt_ms(created_ms),
                (created_ms - now_ms) / 1000,
                self.skew_ms / 1000
            )));
        }
        if let Some(e) = expires_ms {
            if e < created_ms {
                return Err(WsSecError::InvalidSecurity("wsu:Expires is before wsu:Created".into()));
            }
        }
        let limit = expires_ms.unwrap_or(i64::MAX).min(created_ms.saturating_add(self.max_age_ms));
        let end = limit.saturating_add(self.skew_ms);
        if now_ms > end {
            return Err(WsSecError::Expired(format!(
                "created {}, expires {}, refused after {} (now {})",
                fmt_ms(created_ms),
                expires_ms.map(fmt_ms).unwrap_or_else(|| "-".into()),
                fmt_ms(end),
                fmt_ms(now_ms)
            )));
        }
        Ok(end)
    }

    /// Records `key` until `end_ms`; a key already present is a replay.
    fn check_and_insert(&self, key: String, end_ms: i64, now_ms: i64, what: &str) -> Result<(), WsSecError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        while let Some((exp, _)) = inner.by_expiry.first() {
            if *exp >= now_ms {
                break;
            }
            let (_, k) = inner.by_expiry.pop_first().expect("non-empty");
            inner.seen.remove(&k);
        }
        if inner.seen.contains_key(&key) {
            return Err(WsSecError::Replay(format!("{what} was already received")));
        }
        if end_ms <= inner.floor_ms {
            return Err(WsSecError::Replay(format!(
                "{what}: the replay cache is full and no longer remembers messages expiring before {}",
                fmt_ms(inner.floor_ms)
            )));
        }
        while inner.seen.len() >= self.capacity {
            let (exp, k) = inner.by_expiry.pop_first().expect("non-empty when full");
            inner.seen.remove(&k);
            inner.floor_ms = inner.floor_ms.max(exp);
        }
        if end_ms <= inner.floor_ms {
            return Err(WsSecError::Replay(format!(
                "{what}: the replay cache is full and no longer remembers messages expiring before {}",
                fmt_ms(inner.floor_ms)
            )));
        }
        inner.by_expiry.insert((end_ms, key.clone()));
        inner.seen.insert(key, end_ms);
        Ok(())
    }
}

fn fmt_ms(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) {
        Ok(t) => format_datetime(t),
        Err(_) => format!("{ms} ms"),
    }
}

fn format_datetime(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn parse_datetime(s: &str, what: &str) -> Result<i64, WsSecError> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).map_err(|e| {
        WsSecError::InvalidSecurity(format!("{what} '{}' is not an xsd:dateTime with a time zone: {e}", s.trim()))
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

// ------------------------------------------------------------------------------ libxml2 helpers

fn parse_libxml(body: &[u8]) -> Result<Document, WsSecError> {
    // No recovery, no network, no DTD defaulting; entity substitution (XML_PARSE_NOENT) and DTD
    // loading are off (not requested). The hardened parser refused DOCTYPEs before this.
    let opts = ParserOptions {
        recover: false,
        no_def_dtd: true,
        no_error: true,
        no_warning: true,
        no_net: true,
        huge: false,
        ..Default::default()
    };
    Parser::default()
        .parse_string_with_options(body, opts)
        .map_err(|_| WsSecError::Malformed("libxml2 could not parse the envelope".into()))
}

fn is(n: RoNode, ns_uri: &str, local: &str) -> bool {
    n.get_name() == local && n.get_namespace().map(|x| x.get_href()).as_deref() == Some(ns_uri)
}

fn qname_of(n: RoNode) -> QName {
    QName::new(&n.get_namespace().map(|x| x.get_href()).unwrap_or_default(), &n.get_name())
}

fn wsu_id(n: RoNode) -> Option<String> {
    n.get_property_ns("Id", WSU)
}

/// Registers every wsu:Id as an XML ID (`#id` references resolve through them) and refuses any Id
/// value (wsu:Id, xml:id, Id) carried by two elements.
fn register_ids(doc: &Document) -> Result<(), WsSecError> {
    use libxml::bindings as lx;
    let root = doc.get_root_readonly().ok_or_else(|| WsSecError::Malformed("no root element".into()))?;
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut stack: Vec<*mut lx::xmlNode> = vec![root.node_ptr() as *mut lx::xmlNode];
    // SAFETY: a read-only walk over the elements and attributes of `doc`, which outlives it
    // (the borrowed names and values are the document's own strings); xmlAddID copies the value.
    unsafe {
        let text = |p: *const u8| if p.is_null() { &b""[..] } else { CStr::from_ptr(p as *const c_char).to_bytes() };
        while let Some(n) = stack.pop() {
            let mut a = (*n).properties;
            while !a.is_null() {
                let name = text((*a).name);
                let ns = if (*a).ns.is_null() { None } else { Some(text((*(*a).ns).href)) };
                let kind = match (name, ns) {
                    (b"Id", Some(u)) if u == WSU.as_bytes() => Some(true),
                    (b"id", Some(u)) if u == xml::XML_NS.as_bytes() => Some(false),
                    (b"Id", None) => Some(false),
                    _ => None,
                };
                if let Some(register) = kind {
                    // The value: the attribute's single text child (no entities reach here).
                    let c = (*a).children;
                    let v = if c.is_null() {
                        &b""[..]
                    } else if (*c).next.is_null() && (*c).type_ == lx::xmlElementType_XML_TEXT_NODE {
                        text((*c).content)
                    } else {
                        return Err(WsSecError::Malformed("an Id attribute with markup in its value".into()));
                    };
                    let shown = || String::from_utf8_lossy(v).into_owned();
                    match seen.get(v) {
                        Some(&other) if other != n as usize => {
                            return Err(WsSecError::Wrapping(format!(
                                "the Id '{}' is carried by more than one element",
                                shown()
                            )));
                        }
                        _ => {
                            seen.insert(v, n as usize);
                        }
                    }
                    if register {
                        let cv = CString::new(v).map_err(|_| WsSecError::Malformed("NUL in an Id".into()))?;
                        let r = lx::xmlAddID(std::ptr::null_mut(), doc.doc_ptr(), cv.as_ptr() as *const u8, a);
                        if r.is_null() {
                            return Err(WsSecError::Wrapping(format!("the Id '{}' is defined twice", shown())));
                        }
                    }
                }
                a = (*a).next;
            }
            let mut c = (*n).children;
            while !c.is_null() {
                if (*c).type_ == lx::xmlElementType_XML_ELEMENT_NODE {
                    stack.push(c);
                }
                c = (*c).next;
            }
        }
    }
    Ok(())
}

/// The element an `#id` reference resolves to (through the document's ID table, as xmlsec does).
fn id_target(doc: &Document, id: &str) -> Option<usize> {
    let cid = CString::new(id).ok()?;
    // SAFETY: read-only lookup in the document's ID table.
    unsafe {
        let a = libxml::bindings::xmlGetID(doc.doc_ptr(), cid.as_ptr() as *const u8);
        if a.is_null() {
            return None;
        }
        let parent = (*a).parent;
        (!parent.is_null()).then_some(parent as usize)
    }
}

/// The parts of a signed envelope, located by position (never by Id).
struct Located {
    body: RoNode,
    timestamp: RoNode,
    signature: RoNode,
    tokens: Vec<RoNode>,
    wsa: Vec<(&'static str, RoNode)>,
    /// Every header but wsse:Security, in document order.
    headers: Vec<RoNode>,
}

fn locate(doc: &Document) -> Result<Located, WsSecError> {
    let root = doc.get_root_readonly().ok_or_else(|| WsSecError::Malformed("no root element".into()))?;
    if !is(root, ns::SOAPENV, "Envelope") {
        return Err(WsSecError::Malformed(format!("the root element is {}, not a SOAP 1.1 Envelope", qname_of(root))));
    }
    let kids = root.get_child_elements();
    let mut header = None;
    let mut body = None;
    for k in &kids {
        if is(*k, ns::SOAPENV, "Header") && header.is_none() && body.is_none() {
            header = Some(*k);
        } else if is(*k, ns::SOAPENV, "Body") && body.is_none() {
            body = Some(*k);
        } else {
            return Err(WsSecError::Wrapping(format!("unexpected {} in the Envelope (one Header, then one Body)", qname_of(*k))));
        }
    }
    let body = body.ok_or_else(|| WsSecError::Malformed("the Envelope has no Body".into()))?;
    let header = header.ok_or_else(|| WsSecError::InvalidSecurity("no SOAP Header".into()))?;
    let mut security = None;
    let mut wsa: Vec<(&'static str, RoNode)> = Vec::new();
    let mut headers = Vec::new();
    for h in header.get_child_elements() {
        if is(h, WSSE, "Security") {
            if security.is_some() {
                return Err(WsSecError::Wrapping("more than one wsse:Security header".into()));
            }
            security = Some(h);
            continue;
        }
        headers.push(h);
        if h.get_namespace().map(|x| x.get_href()).as_deref() == Some(ns::WSA) {
            let name = h.get_name();
            if let Some(w) = SIGNED_WSA.iter().find(|w| **w == name) {
                if wsa.iter().any(|(n, _)| n == w) {
                    return Err(WsSecError::Wrapping(format!("more than one wsa:{w} header")));
                }
                wsa.push((w, h));
            }
        }
    }
    let security = security.ok_or_else(|| WsSecError::InvalidSecurity("no wsse:Security header".into()))?;
    let mut timestamp = None;
    let mut signature = None;
    let mut tokens = Vec::new();
    for c in security.get_child_elements() {
        if is(c, WSU, "Timestamp") {
            if timestamp.replace(c).is_some() {
                return Err(WsSecError::Wrapping("more than one wsu:Timestamp".into()));
            }
        } else if is(c, DS, "Signature") {
            if signature.replace(c).is_some() {
                return Err(WsSecError::InvalidSecurity("more than one ds:Signature (only one signer is supported)".into()));
            }
        } else if is(c, WSSE, "BinarySecurityToken") {
            tokens.push(c);
        } else if is(c, ns::SOAPENV, "Body") {
            return Err(WsSecError::Wrapping("a soapenv:Body inside wsse:Security".into()));
        }
    }
    let timestamp = timestamp.ok_or_else(|| WsSecError::InvalidSecurity("no wsu:Timestamp".into()))?;
    let signature = signature.ok_or_else(|| WsSecError::InvalidSecurity("no ds:Signature".into()))?;
    Ok(Located { body, timestamp, signature, tokens, wsa, headers })
}

fn child(n: RoNode, ns_uri: &str, local: &str) -> Option<RoNode> {
    n.get_child_elements().into_iter().find(|c| is(*c, ns_uri, local))
}

fn b64_decode(text: &str) -> Result<Vec<u8>, String> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    openssl::base64::decode_block(&clean).map_err(|e| format!("bad base64: {e}"))
}

/// Splits a DER `SEQUENCE OF` into its elements' encodings.
fn der_sequence_items(d: &[u8]) -> Result<Vec<&[u8]>, String> {
    fn tlv(d: &[u8]) -> Result<(usize, usize), String> {
        // (header length, content length)
        if d.len() < 2 {
            return Err("truncated DER".into());
        }
        let l0 = d[1] as usize;
        if l0 < 0x80 {
            return Ok((2, l0));
        }
        let n = l0 & 0x7f;
        if n == 0 || n > 4 || d.len() < 2 + n {
            return Err("bad DER length".into());
        }
        let len = d[2..2 + n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        Ok((2 + n, len))
    }
    if d.first() != Some(&0x30) {
        return Err("not a DER SEQUENCE".into());
    }
    let (h, len) = tlv(d)?;
    if h + len != d.len() {
        return Err("DER length does not match the token".into());
    }
    let mut rest = &d[h..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (h, len) = tlv(rest)?;
        if h + len > rest.len() {
            return Err("truncated DER element".into());
        }
        out.push(&rest[..h + len]);
        rest = &rest[h + len..];
    }
    Ok(out)
}

fn der_sequence(items: &[Vec<u8>]) -> Vec<u8> {
    let content: Vec<u8> = items.concat();
    let mut out = vec![0x30];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend(content);
    out
}

/// Certificates decoded from security tokens, by the SHA-256 of their DER encoding. OpenSSL 3.0
/// takes about 0.2 ms to decode one certificate, which a peer signing many messages with one
/// chain would otherwise pay for every message. Only the decoding is remembered: a cached
/// certificate is the very certificate those bytes encode (its public key decoded once with
/// it), and the chain is still validated (through the validated-chain cache,
/// [`super::proxy::set_chain_cache_ttl`]) per message.
mod decoded {
    use super::*;

    /// Entries kept; the cache is emptied when it is full (a bounded, cheap policy).
    const MAX: usize = 1024;

    static CACHE: Mutex<Option<HashMap<[u8; 32], X509>>> = Mutex::new(None);

    fn with<R>(f: impl FnOnce(&mut HashMap<[u8; 32], X509>) -> R) -> R {
        let mut g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let map = g.get_or_insert_with(HashMap::new);
        if map.len() >= MAX {
            map.clear();
        }
        f(map)
    }

    /// The certificate `der` encodes.
    pub(super) fn cert(der: &[u8]) -> Result<X509, openssl::error::ErrorStack> {
        let h = openssl::sha::sha256(der);
        if let Some(c) = with(|m| m.get(&h).cloned()) {
            return Ok(c);
        }
        let c = X509::from_der(der)?;
        // Decode the public key now, while the certificate is cached (X509_get_pubkey keeps it).
        let _ = c.public_key();
        with(|m| m.entry(h).or_insert_with(|| c.clone()).clone());
        Ok(c)
    }
}

/// The signer's chain, leaf first, from the token the Signature's KeyInfo references.
fn token_chain(m: &Located) -> Result<Vec<X509>, WsSecError> {
    let unsupported = |s: String| WsSecError::UnsupportedToken(s);
    let reference = child(m.signature, DS, "KeyInfo")
        .and_then(|k| child(k, WSSE, "SecurityTokenReference"))
        .and_then(|s| child(s, WSSE, "Reference"))
        .ok_or_else(|| unsupported("ds:KeyInfo must hold wsse:SecurityTokenReference/wsse:Reference".into()))?;
    let uri = reference.get_property_no_ns("URI").unwrap_or_default();
    let id = uri
        .strip_prefix('#')
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unsupported(format!("token reference '{uri}' is not a same-document #id")))?;
    let bst = m
        .tokens
        .iter()
        .copied()
        .find(|t| wsu_id(*t).as_deref() == Some(id))
        .ok_or_else(|| unsupported(format!("no wsse:BinarySecurityToken with wsu:Id '{id}' in the Security header")))?;
    let decode = |t: RoNode| -> Result<(String, Vec<u8>), WsSecError> {
        let enc = t.get_property_no_ns("EncodingType").unwrap_or_else(|| BASE64_BINARY.into());
        if enc != BASE64_BINARY {
            return Err(unsupported(format!("EncodingType {enc}")));
        }
        let vt = t.get_property_no_ns("ValueType").unwrap_or_default();
        let der = b64_decode(&t.get_content()).map_err(unsupported)?;
        Ok((vt, der))
    };
    let (vt, der) = decode(bst)?;
    let bad_cert = |e: openssl::error::ErrorStack| unsupported(format!("bad certificate in the token: {e}"));
    if vt == X509_PKIPATH {
        let items = der_sequence_items(&der).map_err(|e| unsupported(format!("bad PkiPath: {e}")))?;
        let mut certs = items.iter().map(|d| decoded::cert(d)).collect::<Result<Vec<_>, _>>().map_err(bad_cert)?;
        if certs.is_empty() {
            return Err(unsupported("empty PkiPath".into()));
        }
        // PkiPath order is CA side first; tolerate a leaf-first encoding (detected by names).
        let leaf_first = certs.len() > 1 && super::x509::names_equal(certs[0].issuer_name(), certs[1].subject_name());
        if !leaf_first {
            certs.reverse();
        }
        Ok(certs)
    } else if vt == X509V3 {
        let leaf = decoded::cert(&der).map_err(bad_cert)?;
        let mut pool = Vec::new();
        for t in &m.tokens {
            if t.node_ptr() != bst.node_ptr() {
                let (v, d) = decode(*t)?;
                if v == X509V3 {
                    pool.push(decoded::cert(&d).map_err(bad_cert)?);
                }
            }
        }
        let mut chain = vec![leaf];
        while let Some(i) =
            pool.iter().position(|c| super::x509::names_equal(chain.last().expect("non-empty").issuer_name(), c.subject_name()))
        {
            let c = pool.remove(i);
            let self_signed = super::x509::names_equal(c.subject_name(), c.issuer_name());
            chain.push(c);
            if self_signed {
                break;
            }
        }
        Ok(chain)
    } else {
        Err(unsupported(format!("ValueType '{vt}' (X509v3 or X509PKIPathv1 expected)")))
    }
}

// ------------------------------------------------------------------------------ XML-DSig core

/// The XML-Signature core of this profile, on the libxml2 document: exclusive C14N 1.0 of each
/// referenced element (libxml2's `xmlC14NExecute`, streamed into the digest, with a visibility
/// callback that only walks the node's ancestors), the reference digests, and the RSA
/// signature over the canonical SignedInfo (OpenSSL). xmlsec1 did the same through a node set
/// per reference and a transform chain per step, at several times the cost; this accepts
/// exactly the shapes it was configured to accept (exclusive C14N, optionally with
/// `ec:InclusiveNamespaces`, RSA-SHA1/SHA256, SHA-1/SHA-256, same-document `#id` references),
/// and each reference must name its exclusive C14N transform (GT 4.0 always does).
mod dsig {
    use super::*;
    use libxml::bindings as lx;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{HasPublic, Id, PKeyRef, Private};
    use std::ffi::c_void;

    /// `xmlC14NMode::XML_C14N_EXCLUSIVE_1_0`.
    const EXCLUSIVE_1_0: c_int = 1;

    /// A digest algorithm of a Reference.
    #[derive(Clone, Copy)]
    pub(super) enum Digest {
        Sha1,
        Sha256,
    }

    impl Digest {
        fn from_uri(u: &str) -> Option<Digest> {
            match u {
                SHA1 => Some(Digest::Sha1),
                SHA256 => Some(Digest::Sha256),
                _ => None,
            }
        }
    }

    /// The message digest of a SignatureMethod.
    fn signature_digest(u: &str) -> Option<MessageDigest> {
        match u {
            RSA_SHA1 => Some(MessageDigest::sha1()),
            RSA_SHA256 => Some(MessageDigest::sha256()),
            _ => None,
        }
    }

    /// Visible: the node (for a namespace node: its element) is `apex` or inside it.
    unsafe extern "C" fn in_subtree(apex: *mut c_void, node: lx::xmlNodePtr, parent: lx::xmlNodePtr) -> c_int {
        let apex = apex as lx::xmlNodePtr;
        // xmlNs and xmlNode both carry their type second; a namespace node is judged by its element.
        let mut cur = if node.is_null() || (*node).type_ == lx::xmlElementType_XML_NAMESPACE_DECL { parent } else { node };
        while !cur.is_null() {
            if cur == apex {
                return 1;
            }
            cur = (*cur).parent;
        }
        0
    }

    unsafe extern "C" fn write_to_sink(ctx: *mut c_void, buf: *const c_char, len: c_int) -> c_int {
        if len > 0 {
            let sink = &mut *(ctx as *mut &mut dyn FnMut(&[u8]));
            sink(std::slice::from_raw_parts(buf as *const u8, len as usize));
        }
        len
    }

    /// Exclusive C14N 1.0 (without comments) of the subtree at `apex`, an element of `doc`,
    /// with `inclusive` as the InclusiveNamespaces PrefixList, streamed into `sink`: by
    /// [`exc_c14n_subtree`] when it can, else by libxml2.
    pub(super) fn exc_c14n(
        doc: &Document,
        apex: *mut lx::xmlNode,
        inclusive: &[String],
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), WsSecError> {
        if inclusive.is_empty() {
            if let Some(c) = exc_c14n_subtree(apex) {
                sink(&c);
                return Ok(());
            }
        }
        libxml2_exc_c14n(doc, apex, inclusive, sink)
    }

    /// [`exc_c14n`] by libxml2's `xmlC14NExecute` (a walk of the whole document with a
    /// visibility callback that only looks at the node's ancestors).
    pub(super) fn libxml2_exc_c14n(
        doc: &Document,
        apex: *mut lx::xmlNode,
        inclusive: &[String],
        mut sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), WsSecError> {
        let prefixes: Vec<CString> = inclusive.iter().filter_map(|p| CString::new(p.as_str()).ok()).collect();
        let mut list: Vec<*mut u8> = prefixes.iter().map(|p| p.as_ptr() as *mut u8).collect();
        list.push(std::ptr::null_mut());
        let list_ptr = if prefixes.is_empty() { std::ptr::null_mut() } else { list.as_mut_ptr() };
        let sink_ptr: *mut &mut dyn FnMut(&[u8]) = &mut sink;
        // SAFETY: `apex` belongs to `doc`, which outlives the call; the output buffer only calls
        // `write_to_sink` with `sink_ptr` until it is closed below, within this function; the
        // prefix list is NULL-terminated and outlives the call.
        unsafe {
            let out = lx::xmlOutputBufferCreateIO(Some(write_to_sink), None, sink_ptr as *mut c_void, std::ptr::null_mut());
            if out.is_null() {
                return Err(WsSecError::SignatureRefused("C14N: no output buffer".into()));
            }
            let rc = lx::xmlC14NExecute(doc.doc_ptr(), Some(in_subtree), apex as *mut c_void, EXCLUSIVE_1_0, list_ptr, 0, out);
            let closed = lx::xmlOutputBufferClose(out);
            if rc < 0 || closed < 0 {
                return Err(WsSecError::SignatureRefused("exclusive C14N failed".into()));
            }
        }
        Ok(())
    }

    /// Exclusive C14N 1.0 without comments (and without an InclusiveNamespaces list) of the
    /// subtree at `apex`, written by walking that subtree only: libxml2's `xmlC14NExecute`
    /// visits the whole document for every reference and parses every namespace URI on the way.
    /// `None` when the subtree holds something this walk leaves to libxml2 (entity references,
    /// namespace URIs with characters that need escaping or that are relative, unknown node
    /// kinds); the caller then uses [`exc_c14n`], whose output this matches (tested).
    pub(super) fn exc_c14n_subtree(apex: *mut lx::xmlNode) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        let mut rendered: Vec<(&[u8], &[u8])> = Vec::new();
        // SAFETY: `apex` is an element of a live document that nobody changes during the walk;
        // the strings borrowed from it outlive `rendered`, which is dropped at the end.
        unsafe { walk(apex, &mut rendered, &mut out)? };
        Some(out)
    }

    unsafe fn cstr<'a>(p: *const u8) -> &'a [u8] {
        if p.is_null() {
            b""
        } else {
            CStr::from_ptr(p as *const c_char).to_bytes()
        }
    }

    fn escape(out: &mut Vec<u8>, s: &[u8], attribute: bool) {
        for &b in s {
            match b {
                b'&' => out.extend_from_slice(b"&amp;"),
                b'<' => out.extend_from_slice(b"&lt;"),
                b'>' if !attribute => out.extend_from_slice(b"&gt;"),
                b'"' if attribute => out.extend_from_slice(b"&quot;"),
                b'\t' if attribute => out.extend_from_slice(b"&#x9;"),
                b'\n' if attribute => out.extend_from_slice(b"&#xA;"),
                b'\r' => out.extend_from_slice(b"&#xD;"),
                _ => out.push(b),
            }
        }
    }

    /// A namespace URI this walk writes as it is: absolute (a scheme) or empty, nothing to escape.
    fn plain_uri(u: &[u8]) -> bool {
        if u.is_empty() {
            return true;
        }
        let scheme = u.iter().position(|b| *b == b':').filter(|&i| {
            i > 0 && u[0].is_ascii_alphabetic() && u[..i].iter().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
        });
        // Characters of URIs libxml2's URI parser takes as they are (others go to the slow path).
        scheme.is_some() && u.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#@!$()*+,;=".contains(b))
    }

    unsafe fn qname(out: &mut Vec<u8>, ns: *mut lx::xmlNs, name: *const u8) {
        if !ns.is_null() && !(*ns).prefix.is_null() {
            out.extend_from_slice(cstr((*ns).prefix));
            out.push(b':');
        }
        out.extend_from_slice(cstr(name));
    }

    unsafe fn walk<'a>(n: *mut lx::xmlNode, rendered: &mut Vec<(&'a [u8], &'a [u8])>, out: &mut Vec<u8>) -> Option<()> {
        match (*n).type_ {
            lx::xmlElementType_XML_ELEMENT_NODE => {}
            lx::xmlElementType_XML_TEXT_NODE | lx::xmlElementType_XML_CDATA_SECTION_NODE => {
                escape(out, cstr((*n).content), false);
                return Some(());
            }
            lx::xmlElementType_XML_COMMENT_NODE => return Some(()),
            lx::xmlElementType_XML_PI_NODE => {
                out.extend_from_slice(b"<?");
                out.extend_from_slice(cstr((*n).name));
                let data = cstr((*n).content);
                if !data.is_empty() {
                    out.push(b' ');
                    // C14N writes PI data with only \r escaped.
                    for &b in data {
                        if b == b'\r' {
                            out.extend_from_slice(b"&#xD;");
                        } else {
                            out.push(b);
                        }
                    }
                }
                out.extend_from_slice(b"?>");
                return Some(());
            }
            _ => return None,
        }
        let mut d = (*n).nsDef;
        while !d.is_null() {
            if !plain_uri(cstr((*d).href)) {
                return None;
            }
            d = (*d).next;
        }
        // The namespaces this element visibly uses: its own (or the empty default) and its
        // attributes' prefixed ones.
        let mut used: Vec<(&[u8], &[u8])> = Vec::with_capacity(2);
        let own = (*n).ns;
        if own.is_null() {
            used.push((b"", b""));
        } else {
            used.push((cstr((*own).prefix), cstr((*own).href)));
        }
        let mut attrs: Vec<*mut lx::xmlAttr> = Vec::new();
        let mut a = (*n).properties;
        while !a.is_null() {
            attrs.push(a);
            let ans = (*a).ns;
            if !ans.is_null() && !(*ans).prefix.is_null() {
                let p = cstr((*ans).prefix);
                if p != b"xml" && !used.iter().any(|(q, _)| *q == p) {
                    used.push((p, cstr((*ans).href)));
                }
            }
            a = (*a).next;
        }
        let mark = rendered.len();
        let mut decls: Vec<(&[u8], &[u8])> = Vec::with_capacity(used.len());
        for (p, h) in used {
            if p == b"xml" {
                continue;
            }
            if !plain_uri(h) {
                return None;
            }
            let nearest = rendered.iter().rev().find(|(q, _)| *q == p).map(|(_, v)| *v);
            let render = if p.is_empty() { nearest.unwrap_or(b"") != h } else { nearest != Some(h) };
            if render {
                decls.push((p, h));
            }
        }
        decls.sort_by(|x, y| x.0.cmp(y.0));
        out.push(b'<');
        qname(out, own, (*n).name);
        for (p, h) in &decls {
            if p.is_empty() {
                out.extend_from_slice(b" xmlns=\"");
            } else {
                out.extend_from_slice(b" xmlns:");
                out.extend_from_slice(p);
                out.extend_from_slice(b"=\"");
            }
            out.extend_from_slice(h);
            out.push(b'"');
        }
        rendered.extend(decls);
        let key = |a: *mut lx::xmlAttr| {
            let ns = (*a).ns;
            (if ns.is_null() { &b""[..] } else { cstr((*ns).href) }, cstr((*a).name))
        };
        attrs.sort_by(|x, y| key(*x).cmp(&key(*y)));
        for a in attrs {
            out.push(b' ');
            qname(out, (*a).ns, (*a).name);
            out.extend_from_slice(b"=\"");
            let mut c = (*a).children;
            while !c.is_null() {
                match (*c).type_ {
                    lx::xmlElementType_XML_TEXT_NODE => escape(out, cstr((*c).content), true),
                    _ => return None,
                }
                c = (*c).next;
            }
            out.push(b'"');
        }
        out.push(b'>');
        let mut c = (*n).children;
        while !c.is_null() {
            walk(c, rendered, out)?;
            c = (*c).next;
        }
        out.extend_from_slice(b"</");
        qname(out, own, (*n).name);
        out.push(b'>');
        rendered.truncate(mark);
        Some(())
    }

    /// The digest of the exclusive C14N of `apex`.
    fn digest_of(doc: &Document, apex: *mut lx::xmlNode, inclusive: &[String], d: Digest) -> Result<Vec<u8>, WsSecError> {
        match d {
            Digest::Sha1 => {
                let mut h = openssl::sha::Sha1::new();
                exc_c14n(doc, apex, inclusive, &mut |b| h.update(b))?;
                Ok(h.finish().to_vec())
            }
            Digest::Sha256 => {
                let mut h = openssl::sha::Sha256::new();
                exc_c14n(doc, apex, inclusive, &mut |b| h.update(b))?;
                Ok(h.finish().to_vec())
            }
        }
    }

    /// The PrefixList of an `ec:InclusiveNamespaces` child of a CanonicalizationMethod or
    /// Transform (the only child allowed).
    fn inclusive_prefixes(n: RoNode, what: &str) -> Result<Vec<String>, WsSecError> {
        let mut out = Vec::new();
        for c in n.get_child_elements() {
            if is(c, EXC_C14N, "InclusiveNamespaces") && out.is_empty() {
                let list = c.get_property_no_ns("PrefixList").unwrap_or_default();
                out = list.split_ascii_whitespace().map(str::to_string).collect();
                if out.is_empty() {
                    out.push("#default".into()); // harmless when no default namespace is in scope
                    out.clear();
                }
            } else {
                return Err(WsSecError::SignatureRefused(format!("unexpected {} in {what}", qname_of(c))));
            }
        }
        Ok(out)
    }

    /// One `ds:Reference` of a SignedInfo.
    pub(super) struct Reference {
        pub uri: String,
        id: String,
        inclusive: Vec<String>,
        digest: Digest,
        value: RoNode,
    }

    impl Reference {
        /// The DigestValue's text, without whitespace.
        #[cfg(test)]
        pub fn value_text(&self) -> String {
            self.value.get_content().split_ascii_whitespace().collect()
        }
    }

    /// A parsed `ds:SignedInfo`.
    pub(super) struct SignedInfo {
        pub node: RoNode,
        inclusive: Vec<String>,
        method: MessageDigest,
        pub references: Vec<Reference>,
    }

    fn algorithm(n: RoNode) -> String {
        n.get_property_no_ns("Algorithm").unwrap_or_default()
    }

    /// Reads `ds:SignedInfo` (the first child of `signature`), refusing every algorithm,
    /// transform or reference form outside this profile.
    pub(super) fn signed_info(signature: RoNode) -> Result<(SignedInfo, RoNode), WsSecError> {
        let refuse = |s: String| WsSecError::SignatureRefused(s);
        let kids = signature.get_child_elements();
        let (si, sv) = match kids.as_slice() {
            [si, sv, ..] if is(*si, DS, "SignedInfo") && is(*sv, DS, "SignatureValue") => (*si, *sv),
            _ => return Err(refuse("ds:Signature must start with ds:SignedInfo and ds:SignatureValue".into())),
        };
        let parts = si.get_child_elements();
        let (cm, sm, refs) = match parts.as_slice() {
            [cm, sm, refs @ ..] if is(*cm, DS, "CanonicalizationMethod") && is(*sm, DS, "SignatureMethod") => (*cm, *sm, refs),
            _ => return Err(refuse("ds:SignedInfo must start with CanonicalizationMethod and SignatureMethod".into())),
        };
        if algorithm(cm) != EXC_C14N {
            return Err(refuse(format!("CanonicalizationMethod {} (only exclusive C14N is accepted)", algorithm(cm))));
        }
        let inclusive = inclusive_prefixes(cm, "CanonicalizationMethod")?;
        let method = signature_digest(&algorithm(sm))
            .ok_or_else(|| refuse(format!("SignatureMethod {} (RSA-SHA1 or RSA-SHA256 expected)", algorithm(sm))))?;
        if let Some(c) = sm.get_child_elements().first() {
            return Err(refuse(format!("unexpected {} in SignatureMethod", qname_of(*c))));
        }
        if refs.is_empty() {
            return Err(refuse("ds:SignedInfo has no ds:Reference".into()));
        }
        let mut references = Vec::with_capacity(refs.len());
        for r in refs {
            if !is(*r, DS, "Reference") {
                return Err(refuse(format!("unexpected {} in ds:SignedInfo", qname_of(*r))));
            }
            let uri = r.get_property_no_ns("URI").unwrap_or_default();
            let id = uri
                .strip_prefix('#')
                .filter(|s| !s.is_empty() && !s.starts_with("xpointer("))
                .ok_or_else(|| refuse(format!("reference URI '{uri}' is not a same-document #id")))?
                .to_string();
            let rk = r.get_child_elements();
            let (tr, dm, dv) = match rk.as_slice() {
                [tr, dm, dv] if is(*tr, DS, "Transforms") && is(*dm, DS, "DigestMethod") && is(*dv, DS, "DigestValue") => {
                    (*tr, *dm, *dv)
                }
                _ => {
                    return Err(refuse(format!(
                        "reference {uri} must hold Transforms (exclusive C14N), DigestMethod and DigestValue"
                    )))
                }
            };
            let t = tr.get_child_elements();
            let inclusive = match t.as_slice() {
                [t] if is(*t, DS, "Transform") && algorithm(*t) == EXC_C14N => inclusive_prefixes(*t, "Transform")?,
                _ => return Err(refuse(format!("reference {uri}: the only transform accepted is exclusive C14N"))),
            };
            let digest = Digest::from_uri(&algorithm(dm))
                .ok_or_else(|| refuse(format!("DigestMethod {} (SHA-1 or SHA-256 expected)", algorithm(dm))))?;
            references.push(Reference { uri, id, inclusive, digest, value: dv });
        }
        Ok((SignedInfo { node: si, inclusive, method, references }, sv))
    }

    /// The element `#id` names (through the document's ID table, which [`register_ids`] filled).
    fn target(doc: &Document, id: &str) -> Option<*mut lx::xmlNode> {
        id_target(doc, id).map(|p| p as *mut lx::xmlNode)
    }

    /// The outcome of [`verify`]: the references (URI, digest matched) and whether the
    /// SignatureValue verifies.
    pub(super) struct Outcome {
        pub references: Vec<(String, bool)>,
        pub signature_ok: bool,
    }

    /// Verifies the signature at `signature` with `key` (an RSA public key).
    pub(super) fn verify<T: HasPublic>(doc: &Document, signature: RoNode, key: &PKeyRef<T>) -> Result<Outcome, WsSecError> {
        if key.id() != Id::RSA {
            return Err(WsSecError::SignatureRefused("the signer's key is not an RSA key".into()));
        }
        let (si, sv) = signed_info(signature)?;
        let mut references = Vec::with_capacity(si.references.len());
        for r in &si.references {
            let expected =
                b64_decode(&r.value.get_content()).map_err(|e| WsSecError::SignatureRefused(format!("DigestValue: {e}")))?;
            let ok = match target(doc, &r.id) {
                Some(t) => {
                    let got = digest_of(doc, t, &r.inclusive, r.digest)?;
                    got.len() == expected.len() && openssl::memcmp::eq(&got, &expected)
                }
                None => return Err(WsSecError::SignatureRefused(format!("reference {}: no element has this Id", r.uri))),
            };
            references.push((r.uri.clone(), ok));
        }
        let value = b64_decode(&sv.get_content()).map_err(|e| WsSecError::SignatureRefused(format!("SignatureValue: {e}")))?;
        let ssl = |e: openssl::error::ErrorStack| WsSecError::SignatureRefused(format!("RSA: {e}"));
        let mut v = openssl::sign::Verifier::new(si.method, key).map_err(ssl)?;
        let mut failed = None;
        exc_c14n(doc, si.node.node_ptr() as *mut lx::xmlNode, &si.inclusive, &mut |b| {
            if let Err(e) = v.update(b) {
                failed.get_or_insert(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(ssl(e));
        }
        let signature_ok = v.verify(&value).unwrap_or(false);
        Ok(Outcome { references, signature_ok })
    }

    /// Fills in the DigestValues and the SignatureValue of the (template) signature at
    /// `signature` and returns them, base64: (digest values in reference order, signature value).
    pub(super) fn sign(doc: &Document, signature: RoNode, key: &PKeyRef<Private>) -> Result<(Vec<String>, String), WsSecError> {
        let bad = |s: String| WsSecError::Signing(s);
        let (si, _) = signed_info(signature).map_err(|e| bad(e.to_string()))?;
        let mut values = Vec::with_capacity(si.references.len());
        for r in &si.references {
            let t = target(doc, &r.id).ok_or_else(|| bad(format!("no element has the Id {}", r.id)))?;
            let d = openssl::base64::encode_block(&digest_of(doc, t, &r.inclusive, r.digest)?);
            let c = CString::new(d.as_str()).map_err(|e| bad(e.to_string()))?;
            // SAFETY: the DigestValue element belongs to `doc`; the content is copied.
            unsafe { lx::xmlNodeSetContent(r.value.node_ptr() as lx::xmlNodePtr, c.as_ptr() as *const u8) };
            values.push(d);
        }
        let ssl = |e: openssl::error::ErrorStack| bad(format!("RSA: {e}"));
        let mut s = openssl::sign::Signer::new(si.method, key).map_err(ssl)?;
        let mut failed = None;
        exc_c14n(doc, si.node.node_ptr() as *mut lx::xmlNode, &si.inclusive, &mut |b| {
            if let Err(e) = s.update(b) {
                failed.get_or_insert(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(ssl(e));
        }
        Ok((values, openssl::base64::encode_block(&s.sign_to_vec().map_err(ssl)?)))
    }
}

// ------------------------------------------------------------------------------ verify

/// Verifies a signed SOAP envelope (the raw HTTP body); `Ok(None)` when it carries no
/// `wsse:Security` header. See the module documentation for what is checked. The replay check
/// uses the cache's memory only (a durable [`ReplayCache`] needs [`verify_at`]); wsa:To is not
/// compared with an endpoint (use [`verify_at`] for requests: this is for answers).
pub fn verify(body: &[u8], cfg: &TrustConfig, replay: &ReplayCache, now_ms: i64) -> Result<Option<Signed>, WsSecError> {
    Ok(verify_checked(body, None, cfg, replay, now_ms, None)?.map(|v| v.signed))
}

/// Verifies a signed request received at `received_at` (the URL of the endpoint that received
/// it, `scheme://host:port/path`): everything [`verify`] checks, and its wsa:To must name that
/// endpoint; with a durable [`ReplayCache`] the message is remembered in the store (committed)
/// before this returns, so a replay is refused even after a restart.
pub async fn verify_at(
    body: &[u8],
    cfg: &TrustConfig,
    replay: &ReplayCache,
    now_ms: i64,
    received_at: &str,
) -> Result<Option<Signed>, WsSecError> {
    verify_parsed_at(body, None, cfg, replay, now_ms, received_at).await
}

/// [`verify_at`] for a body the caller has already read with vws' hardened parser
/// ([`crate::soap::envelope::parse`], which refuses what step 1 refuses): `parsed` is the
/// Envelope it made, which saves reading the body a second time. `None`: parse it here.
pub async fn verify_parsed_at(
    body: &[u8],
    parsed: Option<&crate::soap::envelope::Envelope>,
    cfg: &TrustConfig,
    replay: &ReplayCache,
    now_ms: i64,
    received_at: &str,
) -> Result<Option<Signed>, WsSecError> {
    let Some(v) = verify_checked(body, parsed, cfg, replay, now_ms, Some(received_at))? else {
        return Ok(None);
    };
    if let Some(log) = &replay.log {
        match log.record(&v.replay_key, v.window_end, now_ms).await {
            Ok(true) => {}
            Ok(false) => return Err(WsSecError::Replay(format!("{} was already received (before a restart)", v.what))),
            Err(e) => return Err(WsSecError::ReplayStore(e)),
        }
    }
    Ok(Some(v.signed))
}

/// A verified message and its replay record.
struct Verified {
    signed: Signed,
    replay_key: String,
    what: String,
    window_end: i64,
}

/// `scheme://host[:port]/path` in a comparable form: scheme and host lower-cased, the default
/// port dropped, no trailing slash. None when it is not such a URL.
fn endpoint_form(u: &str) -> Option<String> {
    let u = u.trim();
    let (scheme, rest) = u.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_ascii_lowercase();
    let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("http", Some((h, "80"))) | ("https", Some((h, "443"))) if !h.ends_with(':') => h.to_string(),
        _ => authority,
    };
    if authority.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{authority}{}", path.trim_end_matches('/')))
}

fn verify_checked(
    body: &[u8],
    parsed: Option<&crate::soap::envelope::Envelope>,
    cfg: &TrustConfig,
    replay: &ReplayCache,
    now_ms: i64,
    received_at: Option<&str>,
) -> Result<Option<Verified>, WsSecError> {
    let _clear = super::x509::ClearErrorsOnDrop;
    // 1. vws' hardened parser first (here or by the caller): nothing reaches libxml2 that it refused.
    let has_security = match parsed {
        Some(env) => env.header().is_some_and(|h| h.elements().any(|e| e.is(WSSE, "Security"))),
        None => {
            let root = xml::parse_bytes(body, &Limits::default()).map_err(|e| WsSecError::Malformed(e.to_string()))?;
            root.child(ns::SOAPENV, "Header").is_some_and(|h| h.elements().any(|e| e.is(WSSE, "Security")))
        }
    };
    if !has_security {
        return Ok(None);
    }

    // 2.–3. libxml2 document, Ids, structure.
    let doc = parse_libxml(body)?;
    register_ids(&doc)?;
    let m = locate(&doc)?;

    // 4. Timestamp window.
    let created = child(m.timestamp, WSU, "Created")
        .ok_or_else(|| WsSecError::InvalidSecurity("wsu:Timestamp has no wsu:Created".into()))?;
    let created_ms = parse_datetime(&created.get_content(), "wsu:Created")?;
    let expires_ms = match child(m.timestamp, WSU, "Expires") {
        Some(e) => Some(parse_datetime(&e.get_content(), "wsu:Expires")?),
        None => None,
    };
    let window_end = replay.window(created_ms, expires_ms, now_ms)?;

    // 5. The token.
    let chain = token_chain(&m)?;
    let leaf = &chain[0];

    // 6. The signature, with the leaf's key (the certificate's cached EVP_PKEY).
    let key =
        leaf.public_key().map_err(|e| WsSecError::UnsupportedToken(format!("the key of {}: {e}", super::x509::subject(leaf))))?;
    let outcome = dsig::verify(&doc, m.signature, &key)?;
    if let Some((uri, _)) = outcome.references.iter().find(|(_, ok)| !ok) {
        return Err(WsSecError::DigestMismatch { uri: uri.clone() });
    }
    if !outcome.signature_ok {
        return Err(WsSecError::BadSignature { subject: super::x509::subject(leaf) });
    }
    let refs = outcome.references;
    let verified: Vec<&str> = refs.iter().map(|(u, _)| u.as_str()).collect();

    // 7. Coverage: each required part, located by position, is what its Id resolves to, and is
    //    among the verified references.
    let mut required: Vec<(String, RoNode)> = vec![("soapenv:Body".into(), m.body), ("wsu:Timestamp".into(), m.timestamp)];
    for n in &m.headers {
        let part = match m.wsa.iter().find(|(_, w)| w.node_ptr() == n.node_ptr()) {
            Some((w, _)) => format!("wsa:{w}"),
            None => format!("header {}", qname_of(*n)),
        };
        required.push((part, *n));
    }
    for (part, node) in &required {
        let id = wsu_id(*node).ok_or_else(|| WsSecError::UnsignedPart { part: format!("{part} (it has no wsu:Id)") })?;
        if id_target(&doc, &id) != Some(node.node_ptr() as usize) {
            return Err(WsSecError::Wrapping(format!("the Id '{id}' of {part} resolves to another element")));
        }
        let uri = format!("#{id}");
        if !verified.contains(&uri.as_str()) {
            return Err(WsSecError::UnsignedPart { part: part.clone() });
        }
    }
    let mut signed_parts = Vec::new();
    for u in &verified {
        if let Some(id) = u.strip_prefix('#') {
            if let Some(target) = id_target(&doc, id) {
                let n =
                    [m.body, m.timestamp].into_iter().chain(m.headers.iter().copied()).find(|n| n.node_ptr() as usize == target);
                if let Some(n) = n {
                    signed_parts.push(qname_of(n));
                }
            }
        }
    }
    let signature_method = child(m.signature, DS, "SignedInfo")
        .and_then(|s| child(s, DS, "SignatureMethod"))
        .and_then(|s| s.get_property_no_ns("Algorithm"))
        .unwrap_or_default();
    let message_id = m.wsa.iter().find(|(w, _)| *w == "MessageID").map(|(_, n)| n.get_content().trim().to_string());
    let sig_value = child(m.signature, DS, "SignatureValue").map(|n| n.get_content()).unwrap_or_default();

    // 8. The chain: same identity path as GSI transport.
    let caller = super::authenticate_at(&chain, cfg, now_ms.div_euclid(1000)).map_err(WsSecError::UntrustedToken)?;

    // 9. Replay (first: a replay is refused as one, wherever it was sent).
    let dn = caller.dn.clone().unwrap_or_default();
    let (key, what) = match &message_id {
        Some(id) => (format!("{dn}\nmid:{id}"), format!("MessageID {id} from {dn}")),
        None => {
            // Canonical form of the signature value (whitespace and base64 variants collapse).
            let v = b64_decode(&sig_value).map(|b| openssl::base64::encode_block(&b)).unwrap_or(sig_value);
            (format!("{dn}\nsig:{v}"), format!("the signed message (no MessageID) from {dn}"))
        }
    };
    // Fixed-size key: a MessageID is the sender's choice, of any length.
    let key = openssl::sha::sha256(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    replay.check_and_insert(key.clone(), window_end, now_ms, &what)?;

    // 10. The destination: a request signed for another endpoint is not for us.
    if let Some(endpoint) = received_at {
        let to = m.wsa.iter().find(|(w, _)| *w == "To").map(|(_, n)| n.get_content().trim().to_string());
        let to =
            to.ok_or_else(|| WsSecError::Misdirected(format!("the signed request has no wsa:To (received at {endpoint})")))?;
        if endpoint_form(&to).is_none() || endpoint_form(&to) != endpoint_form(endpoint) {
            return Err(WsSecError::Misdirected(format!("wsa:To is '{to}' but the request was received at {endpoint}")));
        }
    }

    let signed = Signed { caller, message_id, created_ms, expires_ms, signed_parts, signature_method, chain };
    Ok(Some(Verified { signed, replay_key: key, what, window_end }))
}

// ------------------------------------------------------------------------------ sign

/// Signature algorithms [`sign_with`] can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA-SHA1 with SHA-1 digests: what GT 4.0 understands (the default).
    RsaSha1,
    /// RSA-SHA256 with SHA-256 digests.
    RsaSha256,
}

/// Options of [`sign_with`].
#[derive(Clone, Debug)]
pub struct SignOptions {
    pub algorithm: Algorithm,
    /// wsu:Expires − wsu:Created (default 5 min, as GT 4.0).
    pub ttl_ms: i64,
    /// wsu:Created (default: now).
    pub created_ms: Option<i64>,
    /// Cover the Body (default true). `false` makes messages every verifier must refuse; it
    /// exists to test verifiers.
    pub sign_body: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions { algorithm: Algorithm::RsaSha1, ttl_ms: 5 * 60 * 1000, created_ms: None, sign_body: true }
    }
}

/// Signs a SOAP 1.1 envelope as GT 4.0 does (RSA-SHA1, PkiPath token with the whole chain).
/// A service signing many messages should keep a [`Signer`] instead (it prepares the key once).
pub fn sign(envelope_xml: &str, cred: &Credential) -> Result<String, WsSecError> {
    Signer::new(cred)?.sign(envelope_xml)
}

/// [`sign`] with options.
pub fn sign_with(envelope_xml: &str, cred: &Credential, opts: &SignOptions) -> Result<String, WsSecError> {
    Signer::new(cred)?.sign_with(envelope_xml, opts)
}

/// A credential prepared for signing: the private key loaded into xmlsec and the PkiPath token
/// encoded, once. Thread-safe; keep one per process for the host credential.
pub struct Signer {
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    token_b64: String,
    identity: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(cred: &Credential) -> Result<Signer, WsSecError> {
        let bad = |s: String| WsSecError::Signing(s);
        let ders = cred
            .certificates()
            .iter()
            .rev() // PkiPath: CA side first, the signing certificate last
            .map(|c| c.to_der())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let token_b64 = openssl::base64::encode_block(&der_sequence(&ders));
        if cred.key.id() != openssl::pkey::Id::RSA {
            return Err(bad("the credential's key is not an RSA key (RSA-SHA1/SHA256 signatures)".into()));
        }
        Ok(Signer { key: cred.key.clone(), token_b64, identity: cred.identity_dn() })
    }

    /// The signer's identity (end-entity DN).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// See [`sign`].
    pub fn sign(&self, envelope_xml: &str) -> Result<String, WsSecError> {
        self.sign_with(envelope_xml, &SignOptions::default())
    }

    /// See [`sign_with`].
    pub fn sign_with(&self, envelope_xml: &str, opts: &SignOptions) -> Result<String, WsSecError> {
        let _clear = super::x509::ClearErrorsOnDrop;
        sign_prepared(envelope_xml, &self.key, &self.token_b64, opts)
    }
}

/// One text edit of the envelope: at `at`, remove `remove` bytes and insert `text`.
struct Edit {
    at: usize,
    remove: usize,
    text: String,
}

/// Signs a SOAP 1.1 envelope with a prepared key and token: adds a `wsse:Security` header (first in the Header, which is
/// created if missing) with the credential's chain as an X509PKIPathv1 token, a Timestamp and a
/// Signature over the Body, the Timestamp and every other header present (WS-Addressing and
/// reference properties alike; adding `wsu:Id` attributes where they have none). The rest of the envelope
/// is kept byte for byte before xmlsec signs it.
fn sign_prepared(
    envelope_xml: &str,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    token: &str,
    opts: &SignOptions,
) -> Result<String, WsSecError> {
    let bad = |s: String| WsSecError::Signing(s);
    let uid = || uuid::Uuid::new_v4().simple().to_string();
    let (token_id, ts_id) = (format!("CertId-{}", uid()), format!("Timestamp-{}", uid()));

    // Locate, with namespace resolution, the Envelope, Header, Body and wsa headers.
    let mut r = NsReader::from_str(envelope_xml);
    r.config_mut().trim_text(false);
    let mut depth = 0usize;
    let mut edits: Vec<Edit> = Vec::new();
    let mut in_header = false;
    let mut envelope_end: Option<usize> = None;
    let mut header_start: Option<(usize, bool, String)> = None; // (offset of '>' or '/>', empty, qname)
    let mut body_found = false;
    let mut refs: Vec<String> = Vec::new(); // ids to sign, in document order
    let mut header_ids: Vec<String> = Vec::new();
    let mut body_id = None;
    loop {
        let (res, ev) = r.read_resolved_event().map_err(|e| bad(format!("the envelope is not well-formed: {e}")))?;
        let ns_uri = match &res {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            _ => String::new(),
        };
        let ev = ev.into_owned();
        let after = r.buffer_position() as usize;
        let (e, empty) = match &ev {
            Event::Start(e) => (e.clone(), false),
            Event::Empty(e) => (e.clone(), true),
            Event::End(_) => {
                depth -= 1;
                if depth == 1 {
                    in_header = false;
                }
                continue;
            }
            Event::DocType(_) => return Err(bad("DOCTYPE declarations are not allowed".into())),
            Event::Eof => break,
            _ => continue,
        };
        let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let tag_end = if empty { after - 2 } else { after - 1 };
        depth += 1;
        match depth {
            1 => {
                if !(ns_uri == ns::SOAPENV && local == "Envelope") {
                    return Err(bad(format!("the root element is {{{ns_uri}}}{local}, not a SOAP 1.1 Envelope")));
                }
                if empty {
                    return Err(bad("the Envelope is empty".into()));
                }
                envelope_end = Some(after);
            }
            2 if ns_uri == ns::SOAPENV && local == "Header" => {
                header_start = Some((tag_end, empty, String::from_utf8_lossy(e.name().as_ref()).into_owned()));
                in_header = !empty;
            }
            2 if ns_uri == ns::SOAPENV && local == "Body" => {
                body_found = true;
                if opts.sign_body {
                    let id = ensure_id(&r, &e, tag_end, &mut edits, &uid)?;
                    body_id = Some(id);
                }
            }
            3 if in_header => {
                if ns_uri == WSSE && local == "Security" {
                    return Err(bad("the envelope already has a wsse:Security header".into()));
                }
                // Every header that selects or routes is covered: WS-Addressing and the EPR's
                // reference properties alike (only the Security header itself is not).
                header_ids.push(ensure_id(&r, &e, tag_end, &mut edits, &uid)?);
            }
            _ => {}
        }
        if empty {
            depth -= 1;
        }
    }
    if !body_found {
        return Err(bad("the envelope has no soapenv:Body".into()));
    }
    refs.extend(header_ids);
    refs.push(ts_id.clone());
    if let Some(b) = body_id {
        refs.push(b);
    }

    // The Security header.
    let created = opts.created_ms.unwrap_or_else(now_ms);
    let (sig_alg, dig_alg) = match opts.algorithm {
        Algorithm::RsaSha1 => (RSA_SHA1, SHA1),
        Algorithm::RsaSha256 => (RSA_SHA256, SHA256),
    };
    let mut references = String::new();
    for id in &refs {
        references.push_str(&format!(
            "<ds:Reference URI=\"#{id}\"><ds:Transforms><ds:Transform Algorithm=\"{EXC_C14N}\"/></ds:Transforms>\
             <ds:DigestMethod Algorithm=\"{dig_alg}\"/><ds:DigestValue></ds:DigestValue></ds:Reference>"
        ));
    }
    let security = format!(
        "<wsse:Security xmlns:wsse=\"{WSSE}\" xmlns:wsu=\"{WSU}\" xmlns:soapenv=\"{soap}\" soapenv:mustUnderstand=\"1\">\
         <wsse:BinarySecurityToken EncodingType=\"{BASE64_BINARY}\" ValueType=\"{X509_PKIPATH}\" wsu:Id=\"{token_id}\">{token}</wsse:BinarySecurityToken>\
         <wsu:Timestamp wsu:Id=\"{ts_id}\"><wsu:Created>{c}</wsu:Created><wsu:Expires>{x}</wsu:Expires></wsu:Timestamp>\
         <ds:Signature xmlns:ds=\"{DS}\"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/>\
         <ds:SignatureMethod Algorithm=\"{sig_alg}\"/>{references}</ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>\
         <ds:KeyInfo><wsse:SecurityTokenReference><wsse:Reference URI=\"#{token_id}\" ValueType=\"{X509_PKIPATH}\"/>\
         </wsse:SecurityTokenReference></ds:KeyInfo></ds:Signature></wsse:Security>",
        soap = ns::SOAPENV,
        c = fmt_ms(created),
        x = fmt_ms(created + opts.ttl_ms.max(0)),
    );
    match header_start {
        Some((at, false, _)) => edits.push(Edit { at: at + 1, remove: 0, text: security }),
        Some((at, true, qn)) => edits.push(Edit { at, remove: 2, text: format!(">{security}</{qn}>") }),
        None => {
            let at = envelope_end.ok_or_else(|| bad("no Envelope".into()))?;
            edits.push(Edit {
                at,
                remove: 0,
                text: format!("<soapenv:Header xmlns:soapenv=\"{}\">{security}</soapenv:Header>", ns::SOAPENV),
            });
        }
    }
    // One pass over the text, the edits in order (none overlap: each is at a distinct tag end).
    edits.sort_by_key(|e| e.at);
    let mut out = String::with_capacity(envelope_xml.len() + edits.iter().map(|e| e.text.len()).sum::<usize>());
    let mut from = 0;
    for e in edits {
        out.push_str(&envelope_xml[from..e.at]);
        out.push_str(&e.text);
        from = e.at + e.remove;
    }
    out.push_str(&envelope_xml[from..]);

    // Sign: digests and signature over the document these very bytes parse to, then the values
    // are written into the text (the rest of it stays as it was).
    let doc = parse_libxml(out.as_bytes())?;
    register_ids(&doc).map_err(|e| bad(e.to_string()))?;
    let m = locate(&doc).map_err(|e| bad(e.to_string()))?;
    let (digests, signature) = dsig::sign(&doc, m.signature, key)?;
    drop(doc);
    let marker = format!("wsu:Id=\"{token_id}\"");
    let mut at = out.find(&marker).ok_or_else(|| bad("the security header is missing".into()))?;
    let mut signed = String::with_capacity(out.len() + digests.len() * 44 + signature.len());
    let fill = |signed: &mut String, at: &mut usize, empty: &str, value: &str| -> Result<(), WsSecError> {
        let i = *at + out[*at..].find(empty).ok_or_else(|| bad(format!("no {empty} in the template")))?;
        let j = i + empty.find("></").expect("an empty element") + 1;
        signed.push_str(&out[*at..j]);
        signed.push_str(value);
        *at = j;
        Ok(())
    };
    signed.push_str(&out[..at]);
    for d in &digests {
        fill(&mut signed, &mut at, "<ds:DigestValue></ds:DigestValue>", d)?;
    }
    fill(&mut signed, &mut at, "<ds:SignatureValue></ds:SignatureValue>", &signature)?;
    signed.push_str(&out[at..]);
    Ok(signed.trim_end().to_string())
}

/// The wsu:Id of the element whose start tag ends at `tag_end` (its `>` or `/>`), adding one
/// (and a wsu binding when needed) if it has none.
fn ensure_id(
    r: &NsReader<&[u8]>,
    e: &quick_xml::events::BytesStart,
    tag_end: usize,
    edits: &mut Vec<Edit>,
    uid: &dyn Fn() -> String,
) -> Result<String, WsSecError> {
    for a in e.attributes() {
        let a = a.map_err(|err| WsSecError::Signing(format!("bad attribute: {err}")))?;
        let (res, local) = r.resolve_attribute(a.key);
        if local.as_ref() == b"Id" && matches!(res, ResolveResult::Bound(n) if n.as_ref() == WSU.as_bytes()) {
            let v = a.unescape_value().map_err(|err| WsSecError::Signing(err.to_string()))?;
            return Ok(v.into_owned());
        }
    }
    let id = format!("id-{}", uid());
    // A prefix bound to wsu here, or free to be bound on this element.
    let mut prefix = String::from("wsu");
    let mut n = 0;
    let text = loop {
        let probe = format!("{prefix}:x");
        match r.resolve(QxName(probe.as_bytes()), true).0 {
            ResolveResult::Bound(b) if b.as_ref() == WSU.as_bytes() => break format!(" {prefix}:Id=\"{id}\""),
            ResolveResult::Unknown(_) => break format!(" xmlns:{prefix}=\"{WSU}\" {prefix}:Id=\"{id}\""),
            _ => {
                n += 1;
                prefix = format!("wsu{n}");
            }
        }
    };
    edits.push(Edit { at: tag_end, remove: 0, text });
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xmlsec1 (the library this module used before its own XML-DSig core), for cross-checks.
    mod xmlsec1 {
        use super::*;
        use xmlsec::bindings as xs;
        use xmlsec::{XmlSecKey, XmlSecKeyFormat, XmlSecSignatureContext};

        fn ctx(key_der: &[u8]) -> XmlSecSignatureContext {
            let mut ctx = XmlSecSignatureContext::new();
            ctx.insert_key(XmlSecKey::from_memory(key_der, XmlSecKeyFormat::Der, None).expect("xmlsec key"));
            // SAFETY: our own context; IDs resolve through the document's ID table.
            unsafe {
                (*ctx.as_ptr()).enabledReferenceUris = xs::xmlSecTransformUriTypeSameDocument as xs::xmlSecTransformUriType
            };
            ctx
        }

        /// xmlsec's verdict on the signature of `doc` with the public key `spki`.
        pub fn verifies(doc: &Document, spki: &[u8]) -> bool {
            let m = locate(doc).unwrap();
            let c = ctx(spki);
            // SAFETY: the node belongs to `doc`; the context is ours.
            unsafe {
                let rc = xs::xmlSecDSigCtxVerify(c.as_ptr(), m.signature.node_ptr() as xs::xmlNodePtr);
                rc >= 0 && (*c.as_ptr()).status == xs::xmlSecDSigStatus_xmlSecDSigStatusSucceeded
            }
        }

        /// Signs (again) the signature template of `doc` with the private key `pkcs8`.
        pub fn sign(doc: &Document, key_der: &[u8]) {
            let m = locate(doc).unwrap();
            let c = ctx(key_der);
            // SAFETY: as above.
            let rc = unsafe { xs::xmlSecDSigCtxSign(c.as_ptr(), m.signature.node_ptr() as xs::xmlNodePtr) };
            assert!(rc >= 0, "xmlsec could not sign");
        }
    }

    /// A 2048-bit RSA key and its self-signed certificate.
    fn test_key() -> (openssl::pkey::PKey<openssl::pkey::Private>, X509) {
        let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "wssec cross-check").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap()).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
        (key, b.build())
    }

    /// An envelope with the namespace cases exclusive C14N cares about: prefixes declared on
    /// the Envelope and used below, an unused one, a default namespace, xmlns="" undeclaring
    /// it, namespaced attributes, escaped text, a character reference, CRs and non-ASCII.
    fn tricky_envelope() -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope xmlns:soapenv=\"{}\" xmlns:wsa=\"{}\" xmlns:unused=\"urn:unused\" xmlns:k=\"urn:k\">\r\n\
             <soapenv:Header><wsa:MessageID>uuid:1</wsa:MessageID><wsa:To>http://h/x?a=1&amp;b=2</wsa:To>\
             <k:Key k:attr=\"v&quot;&lt;&#9;\" plain='single'>7</k:Key></soapenv:Header>\
             <soapenv:Body><op xmlns=\"urn:default\" b=\"2\" a=\"1\"><inner xmlns=\"\">x &lt; y &amp; z &gt; w&#13;</inner>\
             <k:ref>k:QName</k:ref><empty/>caf\u{e9} \u{4e2d}<?pi data?><!-- comment --></op></soapenv:Body></soapenv:Envelope>",
            ns::SOAPENV,
            ns::WSA
        )
    }

    fn signed_doc(opts: &SignOptions) -> (String, openssl::pkey::PKey<openssl::pkey::Private>, X509) {
        let (key, cert) = test_key();
        let token = openssl::base64::encode_block(&der_sequence(&[cert.to_der().unwrap()]));
        let signed = sign_prepared(&tricky_envelope(), &key, &token, opts).unwrap();
        (signed, key, cert)
    }

    fn doc_of(text: &str) -> Document {
        let doc = parse_libxml(text.as_bytes()).unwrap();
        register_ids(&doc).unwrap();
        doc
    }

    #[test]
    fn own_signatures_verify_with_xmlsec_and_match_its_values() {
        for algorithm in [Algorithm::RsaSha1, Algorithm::RsaSha256] {
            let (signed, key, cert) = signed_doc(&SignOptions { algorithm, ..Default::default() });
            let spki = cert.public_key().unwrap().public_key_to_der().unwrap();
            let doc = doc_of(&signed);
            assert!(xmlsec1::verifies(&doc, &spki), "xmlsec refuses our signature:\n{signed}");
            let ours = dsig::verify(&doc, locate(&doc).unwrap().signature, &cert.public_key().unwrap()).unwrap();
            assert!(ours.signature_ok && ours.references.iter().all(|(_, ok)| *ok));
            assert_eq!(ours.references.len(), 5); // MessageID, To, Key, Timestamp, Body
                                                  // xmlsec signing the same template computes the same digests and (PKCS#1 v1.5 being
                                                  // deterministic) the same signature value.
            let again = doc_of(&signed);
            xmlsec1::sign(&again, &key.private_key_to_der().unwrap());
            let values = |d: &Document| {
                let sig = locate(d).unwrap().signature;
                let (si, sv) = dsig::signed_info(sig).unwrap();
                let mut v: Vec<String> = si.references.iter().map(|r| r.value_text()).collect();
                v.push(sv.get_content().split_ascii_whitespace().collect());
                v
            };
            assert_eq!(values(&doc), values(&again));
        }
    }

    #[test]
    fn xmlsec_signatures_verify_here_with_inclusive_namespaces() {
        let (signed, key, cert) = signed_doc(&SignOptions::default());
        // Add an InclusiveNamespaces PrefixList to the first reference's transform and to the
        // SignedInfo's C14N, as some WS-Security stacks do, and let xmlsec sign that.
        let ec = format!("<ec:InclusiveNamespaces xmlns:ec=\"{EXC_C14N}\" PrefixList=\"wsa unused #default\"/>");
        let t = format!("<ds:Transform Algorithm=\"{EXC_C14N}\"/>");
        let with = signed.replacen(&t, &format!("<ds:Transform Algorithm=\"{EXC_C14N}\">{ec}</ds:Transform>"), 1);
        let cm = format!("<ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/>");
        let with = with.replacen(
            &cm,
            &format!("<ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\">{ec}</ds:CanonicalizationMethod>"),
            1,
        );
        assert_ne!(with, signed);
        let doc = doc_of(&with);
        xmlsec1::sign(&doc, &key.private_key_to_der().unwrap());
        let sig = locate(&doc).unwrap().signature;
        let ours = dsig::verify(&doc, sig, &cert.public_key().unwrap()).unwrap();
        assert!(ours.signature_ok && ours.references.iter().all(|(_, ok)| *ok));
        // The unchanged (stale) values of our own signature no longer match: the prefix list
        // changed what the first reference's canonical form is.
        let stale = doc_of(&with);
        let ours = dsig::verify(&stale, locate(&stale).unwrap().signature, &cert.public_key().unwrap()).unwrap();
        assert!(!ours.signature_ok);
        // And a tampered text node is a digest mismatch for both.
        let tampered = doc_of(&signed.replace("x &lt; y", "x &lt; Y"));
        let ours = dsig::verify(&tampered, locate(&tampered).unwrap().signature, &cert.public_key().unwrap()).unwrap();
        assert_eq!(ours.references.iter().filter(|(_, ok)| !ok).count(), 1);
        assert!(!xmlsec1::verifies(&tampered, &cert.public_key().unwrap().public_key_to_der().unwrap()));
    }

    /// Every element of `text`: the subtree walk gives libxml2's canonical form, byte for byte.
    fn same_c14n_everywhere(text: &str) -> usize {
        let doc = parse_libxml(text.as_bytes()).unwrap();
        let mut stack = vec![doc.get_root_readonly().unwrap()];
        let mut n = 0;
        while let Some(e) = stack.pop() {
            let p = e.node_ptr() as *mut libxml::bindings::xmlNode;
            let mut slow = Vec::new();
            dsig::libxml2_exc_c14n(&doc, p, &[], &mut |b| slow.extend_from_slice(b)).unwrap();
            let fast = dsig::exc_c14n_subtree(p).expect("the subtree walk handles it");
            assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&slow), "element {}", qname_of(e));
            n += 1;
            stack.extend(e.get_child_elements());
        }
        n
    }

    #[test]
    fn subtree_c14n_is_libxml2s_exclusive_c14n() {
        let (signed, _, _) = signed_doc(&SignOptions::default());
        assert!(same_c14n_everywhere(&signed) > 20);
        assert!(same_c14n_everywhere(&tricky_envelope()) > 8);
        // Default namespaces declared, changed and undeclared at several depths; a prefix
        // rebound below; attributes in several namespaces sorted; an element using a prefix
        // only through an attribute.
        let nested = "<a:r xmlns:a=\"urn:a\" xmlns=\"urn:d\" xmlns:b=\"urn:b\"><x b:z=\"1\" a:y=\"2\" c=\"3\" b=\"4\">\
            <y xmlns=\"\"><z xmlns=\"urn:d\"><a:w xmlns:a=\"urn:a2\"><v xmlns=\"\" a:q=\"&#10;&#9;&#13;\"/></a:w></z></y>\
            <b:t>t<![CDATA[<&>]]>\u{10000}</b:t></x><plain xmlns=\"\" b:k=\"\"/></a:r>";
        assert_eq!(same_c14n_everywhere(nested), 8);
        // The recorded GT 4.0 messages, when the shared directory is there.
        if let Some(dir) = std::env::var_os("VWS_SHARED").map(|d| std::path::PathBuf::from(d).join("interop-recorded")) {
            let mut files = 0;
            for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                    let path = f.path();
                    if path.extension().is_some_and(|e| e == "xml") {
                        let text = std::fs::read_to_string(&path).unwrap();
                        if parse_libxml(text.as_bytes()).is_ok() {
                            same_c14n_everywhere(&text);
                            files += 1;
                        }
                    }
                }
            }
            assert!(files > 10, "{files} recorded messages under {}", dir.display());
        }
    }

    #[test]
    fn transforms_and_algorithms_outside_the_profile_are_refused() {
        let (signed, _, cert) = signed_doc(&SignOptions::default());
        let key = cert.public_key().unwrap();
        let t = format!("<ds:Transform Algorithm=\"{EXC_C14N}\"/>");
        let cases = [
            signed.replacen(&t, "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>", 1),
            signed.replacen(&t, &format!("{t}{t}"), 1),
            signed.replacen(&format!("<ds:Transforms>{t}</ds:Transforms>"), "", 1),
            signed.replacen(SHA1, "http://www.w3.org/2001/04/xmldsig-more#md5", 1),
            signed.replacen(RSA_SHA1, "http://www.w3.org/2000/09/xmldsig#hmac-sha1", 1),
            signed.replacen(
                &format!("CanonicalizationMethod Algorithm=\"{EXC_C14N}\""),
                "CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"",
                1,
            ),
            signed.replacen("<ds:Reference URI=\"#", "<ds:Reference URI=\"#xpointer(id('", 1),
        ];
        for c in &cases {
            assert_ne!(c, &signed);
            let doc = doc_of(c);
            match dsig::verify(&doc, locate(&doc).unwrap().signature, &key) {
                Err(WsSecError::SignatureRefused(_)) => {}
                Err(e) => panic!("{e}"),
                Ok(o) => panic!("accepted (signature {}, {:?})\n{c}", o.signature_ok, o.references),
            }
        }
    }

    #[test]
    fn der_sequence_round_trip() {
        let items =
            vec![vec![0x02, 0x01, 0x05], vec![0x04, 0x81, 0x80].into_iter().chain(std::iter::repeat_n(7, 0x80)).collect()];
        let seq = der_sequence(&items);
        let back = der_sequence_items(&seq).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], &items[0][..]);
        assert_eq!(back[1], &items[1][..]);
        assert!(der_sequence_items(&seq[..seq.len() - 1]).is_err());
    }

    #[test]
    fn timestamp_window() {
        let c = ReplayCache::with_limits(1000, 10_000, 10);
        let t = 1_000_000;
        assert!(c.window(t, Some(t + 5000), t).is_ok());
        assert_eq!(c.window(t + 2000, None, t).unwrap_err().kind(), "not_yet_valid");
        assert_eq!(c.window(t, Some(t + 5000), t + 6001).unwrap_err().kind(), "expired");
        assert!(c.window(t, Some(t + 5000), t + 6000).is_ok());
        // max_age caps a far Expires
        assert_eq!(c.window(t, Some(t + 1_000_000), t + 11_001).unwrap_err().kind(), "expired");
        assert_eq!(c.window(t, Some(t - 1), t).unwrap_err().kind(), "invalid_security");
        assert_eq!(parse_datetime(&fmt_ms(1_234_567_890_123), "x").unwrap(), 1_234_567_890_123);
    }

    #[test]
    fn created_floor_refuses_older_messages() {
        let t = 1_000_000;
        let c = ReplayCache::with_limits(1000, 10_000, 10).refuse_created_before(t + 1000);
        assert_eq!(c.window(t, None, t).unwrap_err().kind(), "expired");
        assert!(c.window(t + 1000, None, t).is_ok());
    }

    #[test]
    fn replay_cache_is_bounded_and_never_forgets_unsafely() {
        let c = ReplayCache::with_limits(0, 1000, 2);
        c.check_and_insert("a".into(), 100, 0, "a").unwrap();
        assert_eq!(c.check_and_insert("a".into(), 100, 0, "a").unwrap_err().kind(), "replay");
        c.check_and_insert("b".into(), 200, 0, "b").unwrap();
        c.check_and_insert("c".into(), 300, 0, "c").unwrap(); // evicts a (expiring 100)
        assert_eq!(c.len(), 2);
        // a was forgotten, but its window ends at the floor: still refused
        assert_eq!(c.check_and_insert("a".into(), 100, 0, "a").unwrap_err().kind(), "replay");
        // entries expire with the window
        c.check_and_insert("d".into(), 400, 250, "d").unwrap();
        assert_eq!(c.len(), 2); // b expired at 200, c and d remain
                                // full again: c (ending 300) is evicted, and from then on so is anything ending by 300
        c.check_and_insert("e".into(), 500, 250, "e").unwrap();
        assert_eq!(c.check_and_insert("c".into(), 300, 250, "c").unwrap_err().kind(), "replay");
        assert_eq!(c.check_and_insert("d".into(), 400, 250, "d").unwrap_err().kind(), "replay");
    }
}
