//! `vwsd` configuration (`conf/vwsd.toml`): listeners, store location, parser limits and site
//! policy. Unknown keys are errors, so a typo never silently changes behaviour.

use crate::host::StagingSettings;
use crate::workspace::Policy;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub limits: LimitsConfig,
    pub policy: Policy,
    pub security: SecurityConfig,
    pub staging: StagingConfig,
    pub vmm: VmmConfig,
    pub network: NetworkConfig,
    pub credentials: CredentialsConfig,
    pub host: HostConfig,
    pub notification: NotificationConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub repository: RepositoryConfig,
}

/// WS-BaseNotification delivery (`[notification]`): per-subscription queue and retries.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationConfig {
    /// Messages one subscription may have waiting; beyond, changes coalesce into one resync.
    pub queue_len: usize,
    /// First retry delay after a failed Notify; doubles (±50 % jitter) up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// A message still undelivered after this long marks its subscription Failed.
    pub give_up_secs: u64,
    /// Limit for one Notify POST (connect and answer).
    pub timeout_ms: u64,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig { queue_len: 1024, retry_initial_ms: 500, retry_max_ms: 30_000, give_up_secs: 300, timeout_ms: 10_000 }
    }
}

impl NotificationConfig {
    pub fn settings(&self) -> crate::wsrf::notification::Settings {
        use std::time::Duration;
        crate::wsrf::notification::Settings {
            queue_len: self.queue_len.max(1),
            retry_initial: Duration::from_millis(self.retry_initial_ms.max(1)),
            retry_max: Duration::from_millis(self.retry_max_ms.max(self.retry_initial_ms.max(1))),
            give_up: Duration::from_secs(self.give_up_secs),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
        }
    }
}

/// `[metrics]`: the Prometheus `/metrics` listener (off unless `listen` is set).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ADDR:PORT` of the listener serving `GET /metrics` (Prometheus text format).
    pub listen: Option<String>,
}

/// `[log]`: what vwsd logs (the `VWS_LOG` environment variable, an EnvFilter string, wins).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The default level (`error`, `warn`, `info`, `debug`, `trace`) or a whole EnvFilter
    /// string (`info,vws::security=debug`).
    pub level: String,
    /// Levels per module: `{ "vws::security" = "debug" }`.
    pub modules: std::collections::BTreeMap<String, String>,
    /// `text` (human, the default) or `json` (one object per line; `--log-format` wins).
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), modules: Default::default(), format: "text".into() }
    }
}

impl LogConfig {
    /// The EnvFilter directives: the level, then each module's.
    pub fn directives(&self) -> String {
        let mut d = self.level.clone();
        for (m, l) in &self.modules {
            d.push_str(&format!(",{m}={l}"));
        }
        d
    }
}

/// The site's Repository (`[repository]`): checkout leases, the image store's gc and quotas.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    /// Checkout lease a deploy takes; the holder renews it every third of it, and a lapsed one
    /// is broken by the next checkout.
    pub lease_secs: u64,
    /// How often unreferenced images are removed from the image store (0: never on a schedule).
    pub gc_interval_secs: u64,
    /// Scheduled gc leaves unreferenced images younger than this.
    pub gc_grace_secs: u64,
    /// Bytes the image store may hold for the whole site / per owner (unset: unlimited).
    pub quota_bytes: Option<u64>,
    pub owner_quota_bytes: Option<u64>,
    /// The site Repository this host's Manager uses, when it is another vwsd's (the address of
    /// its RepositoryService); unset: this process is the site Repository.
    pub url: Option<String>,
    /// How long a call to the remote site Repository may take before the operation that needs
    /// it (create, deploy) gets a fault.
    pub timeout_secs: u64,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        RepositoryConfig {
            lease_secs: 600,
            gc_interval_secs: 3600,
            gc_grace_secs: 3600,
            quota_bytes: None,
            owner_quota_bytes: None,
            url: None,
            timeout_secs: 15,
        }
    }
}

/// The hypervisor driver and the guest it boots (`[vmm]`). Relative paths are under `server.data`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VmmConfig {
    /// `qemu` (the default; runs here) or `xen`.
    pub driver: String,
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    /// Xen's `xl` (driver = "xen").
    pub xl: PathBuf,
    /// `auto` (KVM only when a probe guest boots under it), `kvm` or `tcg`.
    pub accel: String,
    /// Kernel and initramfs every VM boots (direct kernel boot; PV on Xen).
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub cmdline: String,
    /// When the description asks for no RAM / CPUs.
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Graceful stop: how long the guest gets after the power button before it is forced off.
    pub stop_timeout_secs: u64,
    /// What a guest prints on its console when it is up (hot images wait for it).
    pub ready_marker: String,
    pub ready_timeout_secs: u64,
    /// VM run directories (QMP sockets, pid files), under `server.data` when relative.
    pub run_dir: PathBuf,
}

impl Default for VmmConfig {
    fn default() -> Self {
        VmmConfig {
            driver: "qemu".into(),
            qemu: PathBuf::from("qemu-system-x86_64"),
            qemu_img: PathBuf::from("qemu-img"),
            xl: PathBuf::from("xl"),
            accel: "auto".into(),
            kernel: Some(PathBuf::from("images/demo/vmlinuz")),
            ramdisk: Some(PathBuf::from("images/demo/initrd.img")),
            cmdline: "console=ttyS0 quiet".into(),
            memory_mib: 128,
            vcpus: 1,
            stop_timeout_secs: 30,
            ready_marker: "VWS-GUEST-READY".into(),
            ready_timeout_secs: 300,
            run_dir: PathBuf::from("run"),
        }
    }
}

/// Addresses of this host's VMs (`[network]`): IPs `first..=last` of `subnet`, MACs under
/// `mac_prefix`. User-mode networking unless `bridge` is set (then a tap per VM on it).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub subnet: String,
    pub gateway: Option<String>,
    pub first: String,
    pub last: String,
    pub mac_prefix: String,
    pub bridge: Option<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            subnet: "10.20.0.0/24".into(),
            gateway: Some("10.20.0.1".into()),
            first: "10.20.0.10".into(),
            last: "10.20.0.250".into(),
            mac_prefix: "52:54:00".into(),
            bridge: None,
        }
    }
}

/// The CA that signs each workspace's certificate (`[credentials]`); without one, a host CA is
/// made once in `<data>/ca/`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub days: u32,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig { ca_cert: None, ca_key: None, days: 30 }
    }
}

/// This host's engine (`[host]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// How often stored workspaces are compared with what the hypervisor really runs.
    pub reconcile_secs: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig { reconcile_secs: 30 }
    }
}

/// A path under the data directory unless absolute.
pub fn under(data: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data.join(p)
    }
}

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

    /// The engine's staging settings, with the pool resolved against the store directory `data`.
    pub fn settings(&self, data: &Path) -> StagingSettings {
        StagingSettings {
            pool: self.pool_dir(data),
            // Relative roots are under the data directory, like the pool.
            file_roots: self.file_roots.iter().map(|r| under(data, r)).collect(),
            streams: self.streams,
            dcau: self.dcau,
            verify: self.verify,
            credential: self.credential.clone(),
            cert_dir: self.cert_dir.clone(),
            max_concurrent: self.max_concurrent,
            retries: self.retries,
            progress_interval: std::time::Duration::from_millis(self.progress_interval_ms),
        }
    }
}

/// GSI: the HTTPS listener, trust, and the ACL policy. Security is on when `https` is set; then
/// every caller must authenticate (anonymous plain-HTTP callers are refused by the policy).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// HTTPS (GSI transport) listener, `ADDR:PORT` (GT 4.0 default port 8443).
    pub https: Option<String>,
    pub host_cert: PathBuf,
    pub host_key: PathBuf,
    /// Globus-layout trust directory: `<hash>.0`, `<hash>.r0`, `<hash>.signing_policy`.
    pub cert_dir: PathBuf,
    /// When set, a DN not in the grid-mapfile is refused.
    pub gridmap: Option<PathBuf>,
    /// VOMS trust (`<vo>/*.lsc`); VOMS attributes are ignored when the directory is missing.
    pub vomsdir: PathBuf,
    /// Seconds a validated certificate chain (transport or WS-Security) is remembered; 0: off.
    /// Revocation (a CRL in a reloaded trust directory) takes effect within this time.
    pub chain_cache_secs: u64,
    /// A CRL past its nextUpdate: "refuse" its CA's certificates, or "warn" and keep using it.
    pub crl_policy: String,
    /// Seconds between checks of the trust files for changes (besides inotify and SIGHUP).
    pub reload_check_secs: u64,
    pub acl: Vec<crate::security::acl::AclEntry>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            https: None,
            host_cert: PathBuf::from("/etc/grid-security/hostcert.pem"),
            host_key: PathBuf::from("/etc/grid-security/hostkey.pem"),
            cert_dir: PathBuf::from("/etc/grid-security/certificates"),
            gridmap: None,
            vomsdir: PathBuf::from("/etc/grid-security/vomsdir"),
            chain_cache_secs: 30,
            crl_policy: "refuse".into(),
            reload_check_secs: 60,
            acl: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Plain HTTP listener, `ADDR:PORT`.
    pub http: Option<String>,
    /// Store directory (relative paths are relative to the working directory).
    pub data: PathBuf,
    /// Base URL written into EPRs and WSDL (`http://host:port`); default: the address of the
    /// listener a request came in on (never the client's Host header).
    pub public_url: Option<String>,
    /// Seconds in-flight requests get to finish at shutdown.
    pub shutdown_grace_secs: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes: usize,
    pub body_idle_timeout_ms: u64,
    pub body_total_timeout_ms: u64,
    pub header_timeout_ms: u64,
    /// Requests handled at once (all listeners together); more wait their turn.
    pub max_concurrent_requests: usize,
    /// Open connections per listener; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// QueryResourceProperties: libxml2 XPath operations one query may perform.
    pub xpath_op_limit: u64,
    /// QueryResourceProperties: wall-clock limit of one query (waiting for a slot included).
    pub xpath_timeout_ms: u64,
    /// QueryResourceProperties: queries evaluated at once, on their own threads.
    pub xpath_max_concurrent: usize,
    /// QueryResourceProperties: queries of one caller (DN; anonymous callers together) at once.
    pub xpath_max_per_caller: usize,
    /// SetResourceProperties: largest serialized value of one property, in bytes.
    pub max_property_bytes: usize,
    /// Bytes of property text shared between resources (the interning cache); texts no
    /// resource uses any more are released when it is full.
    pub shared_strings_bytes: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server { http: Some("127.0.0.1:8080".into()), data: PathBuf::from("var"), public_url: None, shutdown_grace_secs: 10 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_depth: 128,
            max_elements: 50_000,
            max_attributes: 64,
            body_idle_timeout_ms: 500,
            body_total_timeout_ms: 30_000,
            header_timeout_ms: 10_000,
            max_concurrent_requests: 1024,
            max_connections: 4096,
            xpath_op_limit: 10_000_000,
            xpath_timeout_ms: 2_000,
            xpath_max_concurrent: 4,
            xpath_max_per_caller: 2,
            max_property_bytes: 1024 * 1024,
            shared_strings_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        c.check_values().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    /// Values serde cannot judge: enumerations kept as strings, log filters, addresses.
    pub fn check_values(&self) -> Result<(), String> {
        if crate::security::certdir::CrlPolicy::parse(&self.security.crl_policy).is_none() {
            return Err(format!("security.crl_policy '{}': expected \"refuse\" or \"warn\"", self.security.crl_policy));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(format!("log.format '{}': expected \"text\" or \"json\"", self.log.format));
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(self.log.directives())
            .map_err(|e| format!("log.level / log.modules '{}': {e}", self.log.directives()))?;
        if let Some(a) = &self.metrics.listen {
            a.parse::<std::net::SocketAddr>().map_err(|e| format!("metrics.listen '{a}': {e}"))?;
        }
        Ok(())
    }

    /// The limits of QueryResourceProperties.
    pub fn query_limits(&self) -> crate::wsrf::query::QueryLimits {
        let l = &self.limits;
        crate::wsrf::query::QueryLimits {
            op_limit: l.xpath_op_limit,
            timeout: std::time::Duration::from_millis(l.xpath_timeout_ms),
            max_concurrent: l.xpath_max_concurrent,
            max_per_caller: l.xpath_max_per_caller,
        }
    }

    pub fn http_config(&self) -> crate::server::HttpConfig {
        use std::time::Duration;
        let l = &self.limits;
        crate::server::HttpConfig {
            max_body_bytes: l.max_body_bytes,
            body_idle_timeout: Duration::from_millis(l.body_idle_timeout_ms),
            body_total_timeout: Duration::from_millis(l.body_total_timeout_ms),
            header_timeout: Duration::from_millis(l.header_timeout_ms),
            xml: crate::soap::xml::Limits {
                max_depth: l.max_depth,
                max_elements: l.max_elements,
                max_attributes: l.max_attributes,
            },
            public_url: self.server.public_url.clone(),
            max_concurrent_requests: l.max_concurrent_requests,
            max_connections: l.max_connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_unknown_keys_fail() {
        let c = Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/vwsd.toml"))).unwrap();
        assert_eq!(c.limits.max_body_bytes, 4 * 1024 * 1024);
        assert!(toml::from_str::<Config>("[server]\nhtp = \"x\"").unwrap_err().to_string().contains("unknown field"));
        assert!(toml::from_str::<Config>("[policy]\nallowed_vmms = [\"vmware\"]").is_err());
        let c: Config = toml::from_str(
            "[security]\nhttps = \"127.0.0.1:8443\"\n[[security.acl]]\naction = \"create\"\nfqan = \"/testvo/*\"\n",
        )
        .unwrap();
        assert_eq!(c.security.acl.len(), 1);
        assert_eq!(c.security.cert_dir, PathBuf::from("/etc/grid-security/certificates"));
        let c: Config = toml::from_str("[staging]\nfile_roots = [\"/srv/images\"]\nstreams = 2\n").unwrap();
        assert_eq!(c.staging.streams, 2);
        assert_eq!(c.staging.pool_dir(Path::new("/var/vws")), PathBuf::from("/var/vws/pool"));
        let s = c.staging.settings(Path::new("/var/vws"));
        assert_eq!((s.pool, s.streams, s.file_roots), (PathBuf::from("/var/vws/pool"), 2, vec![PathBuf::from("/srv/images")]));
        assert_eq!(s.progress_interval, std::time::Duration::from_millis(500));
        assert!(toml::from_str::<Config>("[staging]\nstrems = 2").is_err());
        let c: Config =
            toml::from_str("[limits]\nxpath_op_limit = 5000\nxpath_timeout_ms = 300\nmax_property_bytes = 10\n").unwrap();
        assert_eq!(c.query_limits().op_limit, 5000);
        assert_eq!(c.query_limits().timeout, std::time::Duration::from_millis(300));
        assert_eq!(c.limits.max_property_bytes, 10);
        assert_eq!(c.limits.xpath_max_per_caller, 2);
    }
}
