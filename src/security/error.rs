//! The one error type of the GSI library: every refusal (credential loading, trust directory,
//! chain validation, grid-mapfile, TLS glue) is a variant whose message names the reason, the
//! certificate concerned and, where it matters, the time, serial number or file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GsiError {
    // ---- credentials and files
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Permissions on {path} are too permissive. Maximum allowable permissions are 600 (found {mode:03o})")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not owned by the current user (owner uid {owner}, current uid {uid})")]
    KeyOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error("no credential found (looked at: {searched})")]
    NoCredential { searched: String },
    #[error("bad credential {path}: {reason}")]
    BadCredential { path: PathBuf, reason: String },
    #[error("trusted certificates directory {path}: {reason}")]
    CertDir { path: PathBuf, reason: String },

    // ---- chain validation
    #[error("no certificate chain presented")]
    EmptyChain,
    #[error("certificate {subject} has expired (notAfter {not_after})")]
    Expired { subject: String, not_after: String },
    #[error("certificate {subject} is not yet valid (notBefore {not_before})")]
    NotYetValid { subject: String, not_before: String },
    #[error("certificate {subject} was issued by {issuer}, which is not a trusted CA")]
    UntrustedIssuer { subject: String, issuer: String },
    #[error("certificate {subject} (serial {serial}) has been revoked by {issuer}")]
    Revoked { subject: String, serial: String, issuer: String },
    #[error("the signature of {subject} does not verify with the key of its issuer {issuer}")]
    BadSignature { subject: String, issuer: String },
    #[error("invalid CRL of CA {ca}: {reason}")]
    InvalidCrl { ca: String, reason: String },
    #[error("signing policy violation: CA {ca} may not sign {subject} ({reason})")]
    SigningPolicy { ca: String, subject: String, reason: String },
    #[error("proxy path length exceeded: {subject} allows at most {limit} proxies below it, found {found}")]
    PathLengthExceeded { subject: String, limit: u64, found: usize },
    #[error("{subject} is not a valid proxy name for issuer {issuer}: {reason}")]
    NotAProxyName { subject: String, issuer: String, reason: String },
    #[error("invalid proxy {subject}: {reason}")]
    BadProxy { subject: String, reason: String },
    #[error("certificate {subject} has an unsupported critical extension {oid}")]
    UnknownCriticalExtension { subject: String, oid: String },
    #[error("certificate {subject} refused: {reason}")]
    Rejected { subject: String, reason: String },

    // ---- authorisation inputs
    #[error("{dn} is not in the grid-mapfile {path}")]
    NotInGridmap { dn: String, path: PathBuf },
    #[error("grid-mapfile {path} line {line}: {reason}")]
    Gridmap { path: PathBuf, line: usize, reason: String },

    // ---- TLS glue
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

impl GsiError {
    /// A short machine-friendly name of the reason (for logs and SOAP fault codes).
    pub fn kind(&self) -> &'static str {
        match self {
            GsiError::Io { .. } => "io",
            GsiError::KeyPermissions { .. } => "key_permissions",
            GsiError::KeyOwner { .. } => "key_owner",
            GsiError::NoCredential { .. } => "no_credential",
            GsiError::BadCredential { .. } => "bad_credential",
            GsiError::CertDir { .. } => "cert_dir",
            GsiError::EmptyChain => "empty_chain",
            GsiError::Expired { .. } => "expired",
            GsiError::NotYetValid { .. } => "not_yet_valid",
            GsiError::UntrustedIssuer { .. } => "untrusted_issuer",
            GsiError::Revoked { .. } => "revoked",
            GsiError::BadSignature { .. } => "bad_signature",
            GsiError::InvalidCrl { .. } => "invalid_crl",
            GsiError::SigningPolicy { .. } => "signing_policy",
            GsiError::PathLengthExceeded { .. } => "path_length",
            GsiError::NotAProxyName { .. } => "not_a_proxy_name",
            GsiError::BadProxy { .. } => "bad_proxy",
            GsiError::UnknownCriticalExtension { .. } => "critical_extension",
            GsiError::Rejected { .. } => "rejected",
            GsiError::NotInGridmap { .. } => "not_in_gridmap",
            GsiError::Gridmap { .. } => "gridmap",
            GsiError::NoPeerCertificate => "no_peer_certificate",
            GsiError::Tls(_) => "tls",
            GsiError::OpenSsl(_) => "openssl",
        }
    }
}
