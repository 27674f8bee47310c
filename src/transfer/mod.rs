//! Moving VM images between places: a URL-addressed [`Endpoint`] trait with implementations for
//! `file://`, `http(s)://`, `ftp://` (anonymous) and `gsiftp://` (a native GSI GridFTP client:
//! parallel MODE E streams, DCAU, checksums, resume), plus staging ([`stage`]): a copy that lands
//! in a temporary file and is renamed into place only after its checksums match, with concurrent
//! stagings of the same source sharing one transfer ([`Stager`]).

pub mod checksum;
pub mod file;
pub mod gridftp;
pub mod http;
pub mod progress;
pub mod stage;
pub mod url;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use checksum::{Algo, Digest};
pub use progress::{Progress, ProgressInfo};
pub use stage::{stage, StageOutcome, Stager};
pub use url::Url;

/// Why a transfer failed. Every variant names the URL or file concerned and the reason.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TransferError {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("{url}: not found: {reason}")]
    NotFound { url: String, reason: String },
    #[error("{url}: authentication failed: {reason}")]
    Auth { url: String, reason: String },
    #[error("{url}: permission denied: {reason}")]
    Denied { url: String, reason: String },
    #[error("{url}: server refused {command}: {code} {text}")]
    Remote { url: String, command: String, code: u16, text: String },
    #[error("{url}: protocol error: {reason}")]
    Protocol { url: String, reason: String },
    #[error("{url}: timed out: {reason}")]
    Timeout { url: String, reason: String },
    #[error("{url}: connection failed: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url}: transfer interrupted: {reason}")]
    Interrupted { url: String, reason: String },
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
    #[error("{url}: cancelled")]
    Cancelled { url: String },
    #[error("checksum mismatch for {url}: {algo} expected {expected}, got {actual}")]
    ChecksumMismatch { url: String, algo: String, expected: String, actual: String },
}

impl TransferError {
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> TransferError {
        TransferError::Io { what: what.to_string(), reason: e.to_string() }
    }
    /// Whether retrying (with resume) may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, TransferError::Timeout { .. } | TransferError::Connect { .. } | TransferError::Interrupted { .. })
            || matches!(self, TransferError::Remote { code, .. } if (400..500).contains(code))
    }
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            TransferError::BadUrl { .. } => "bad_url",
            TransferError::Unsupported(_) => "unsupported",
            TransferError::NotFound { .. } => "not_found",
            TransferError::Auth { .. } => "auth",
            TransferError::Denied { .. } => "denied",
            TransferError::Remote { .. } => "remote",
            TransferError::Protocol { .. } => "protocol",
            TransferError::Timeout { .. } => "timeout",
            TransferError::Connect { .. } => "connect",
            TransferError::Interrupted { .. } => "interrupted",
            TransferError::Io { .. } => "io",
            TransferError::ChecksumMismatch { .. } => "checksum_mismatch",
            TransferError::Cancelled { .. } => "cancelled",
        }
    }
}

pub type Result<T> = std::result::Result<T, TransferError>;

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&ProgressInfo) + Send + Sync>;

/// Asked between blocks: true = stop the transfer (it ends with [`TransferError::Cancelled`]).
pub type CancelFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// GridFTP data-channel protection level (RFC 2228 `PROT`), negotiated after `PBSZ`.
///
/// With GSI the data channel's security context is the DCAU TLS session, and a GSS wrap token is
/// one TLS application record: with `Safe` (`PROT S`) and `Private` (`PROT P`) the whole MODE E
/// stream (headers and data) travels inside TLS records on every data connection, which is the
/// same path for both levels — TLS gives integrity and, with its negotiated cipher suite,
/// confidentiality, so `Safe` is never weaker than asked (globus-gridftp-server 13 sends
/// ordinary encrypted records for `PROT S` too). Both need DCAU (`Options::dcau`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protection {
    /// `PROT C`: after the DCAU handshake the blocks flow in clear (the default).
    #[default]
    Clear,
    /// `PROT S`: integrity protected.
    Safe,
    /// `PROT P`: integrity and confidentiality (TLS records).
    Private,
}

impl Protection {
    /// The `PROT` argument letter.
    pub fn letter(self) -> char {
        match self {
            Protection::Clear => 'C',
            Protection::Safe => 'S',
            Protection::Private => 'P',
        }
    }
    /// `C`, `S` or `P` (case-insensitive; also `clear`, `safe`, `private`).
    pub fn parse(s: &str) -> Option<Protection> {
        match s.to_ascii_lowercase().as_str() {
            "c" | "clear" => Some(Protection::Clear),
            "s" | "safe" => Some(Protection::Safe),
            "p" | "private" => Some(Protection::Private),
            _ => None,
        }
    }
}

/// Knobs of a transfer.
#[derive(Clone)]
pub struct Options {
    /// Parallel data streams (GridFTP MODE E).
    pub streams: usize,
    /// GridFTP data-channel authentication (DCAU A); false = `DCAU N`.
    pub dcau: bool,
    /// GridFTP data-channel protection (`PROT C|S|P`); anything but `Clear` needs DCAU.
    pub protect: Protection,
    /// Timeout of every network read/connect.
    pub timeout: Duration,
    /// Proxy (or certificate+key file) to use instead of the standard places.
    pub credential: Option<PathBuf>,
    /// Trusted certificates directory instead of `X509_CERT_DIR` / `/etc/grid-security/certificates`.
    pub cert_dir: Option<PathBuf>,
    /// How many times a broken transfer is resumed before giving up.
    pub retries: u32,
    /// How long to keep trying to reconnect to a server that went away, per retry.
    pub reconnect_for: Duration,
    /// Verify with the server's checksum (GridFTP CKSM) after the transfer.
    pub verify: bool,
    /// A digest the data must have (e.g. from the image catalogue).
    pub expected: Option<Digest>,
    /// Block size of data we send in MODE E.
    pub block_size: usize,
    /// Called with progress at most every `progress_interval`.
    pub progress: Option<ProgressFn>,
    /// Whether to give up (e.g. the workspace being staged for was destroyed).
    pub cancel: Option<CancelFn>,
    pub progress_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            streams: 1,
            dcau: true,
            protect: Protection::Clear,
            timeout: Duration::from_secs(60),
            credential: None,
            cert_dir: None,
            retries: 5,
            reconnect_for: Duration::from_secs(30),
            verify: true,
            expected: None,
            block_size: 4 << 20,
            progress: None,
            cancel: None,
            progress_interval: Duration::from_millis(250),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("streams", &self.streams)
            .field("dcau", &self.dcau)
            .field("protect", &self.protect)
            .field("timeout", &self.timeout)
            .field("credential", &self.credential)
            .field("verify", &self.verify)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// A place data can be read from or written to. Downloads write by position into a local file
/// (so parallel, out-of-order blocks land directly where they belong); uploads read by position.
pub trait Endpoint: Send + Sync {
    fn url(&self) -> &Url;
    /// The size of the resource, when the protocol can tell.
    fn size(&self) -> Result<Option<u64>>;
    /// Copies the whole resource into `dest` (pre-sized by the caller when the size is known),
    /// reporting every written range to `progress`; returns the number of bytes.
    fn download(&self, dest: &File, progress: &Progress) -> Result<u64>;
    /// Replaces the resource with the first `len` bytes of `src`.
    fn upload(&self, src: &File, len: u64, progress: &Progress) -> Result<u64>;
    /// Where each resume of the last [`download`](Endpoint::download) or
    /// [`upload`](Endpoint::upload) restarted, in order (the bytes kept from before the break;
    /// 0 = started over); empty when it ran through or the endpoint does not report resumes
    /// (GridFTP does: `ERET` / `ESTO` offsets).
    fn resumed_from(&self) -> Vec<u64> {
        Vec::new()
    }
    /// The checksum the remote side computes over the whole resource, if it can (GridFTP CKSM).
    fn remote_checksum(&self, _algo: Algo) -> Result<Option<String>> {
        Ok(None)
    }
    /// Checksum algorithms the remote side offers, best (cheapest) first.
    fn remote_algorithms(&self) -> Vec<Algo> {
        Vec::new()
    }
    /// Moves the resource to `to` (same endpoint); used to publish uploads atomically.
    fn rename(&self, _to: &Url) -> Result<()> {
        Err(TransferError::Unsupported(format!("rename on {}", self.url())))
    }
    /// Deletes the resource.
    fn delete(&self) -> Result<()> {
        Err(TransferError::Unsupported(format!("delete on {}", self.url())))
    }
}

/// The endpoint for a URL.
pub fn open(url: &Url, opts: &Options) -> Result<Box<dyn Endpoint>> {
    match url.scheme.as_str() {
        "file" => Ok(Box::new(file::FileEndpoint::new(url.clone()))),
        "http" | "https" => Ok(Box::new(http::HttpEndpoint::new(url.clone(), opts.clone()))),
        "gsiftp" | "ftp" => Ok(Box::new(gridftp::GridFtp::new(url.clone(), opts.clone())?)),
        other => Err(TransferError::Unsupported(format!("URL scheme {other}:// ({url})"))),
    }
}
