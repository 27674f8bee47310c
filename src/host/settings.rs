//! Settings of this host's engine, owned here and filled in by `config.rs` from the
//! `[staging]` table of `conf/vwsd.toml` (lower layers never read the configuration file).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Image staging on this host (the Manager's deploy): where images land, how they are fetched,
/// and which sources are allowed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StagingConfig {
    /// Image pool: one directory per deployed workspace. Relative paths are under `server.data`.
    pub pool: PathBuf,
    /// Local directories `file://` images may come from (after resolving symlinks). Empty: no
    /// `file://` sources at all, so a caller cannot stage files of the service host.
    pub file_roots: Vec<PathBuf>,
    /// GridFTP parallel streams.
    pub streams: usize,
    /// GridFTP data-channel authentication (DCAU A).
    pub dcau: bool,
    /// Compare with the server's checksum (GridFTP CKSM) after each transfer.
    pub verify: bool,
    /// Credential for gsiftp:// and https:// sources (proxy, or certificate+key in one file);
    /// default: X509_USER_PROXY, /tmp/x509up_u<uid>.
    pub credential: Option<PathBuf>,
    /// Trusted CAs for those servers; default: X509_CERT_DIR, /etc/grid-security/certificates.
    pub cert_dir: Option<PathBuf>,
    /// Stagings running at once; more wait their turn.
    pub max_concurrent: usize,
    /// Resumes of a broken transfer before the deploy fails.
    pub retries: u32,
    /// How often a staging workspace's `staging` property is refreshed.
    pub progress_interval_ms: u64,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            pool: PathBuf::from("pool"),
            file_roots: Vec::new(),
            streams: 4,
            dcau: true,
            verify: true,
            credential: None,
            cert_dir: None,
            max_concurrent: 4,
            retries: 5,
            progress_interval_ms: 500,
        }
    }
}

impl StagingConfig {
    /// The pool directory, resolved against the store directory.
    pub fn pool_dir(&self, data: &Path) -> PathBuf {
        if self.pool.is_absolute() {
            self.pool.clone()
        } else {
            data.join(&self.pool)
        }
    }
}

