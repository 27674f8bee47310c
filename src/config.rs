//! `vwsd` configuration (`conf/vwsd.toml`): listeners, store location, parser limits and site
//! policy. Unknown keys are errors, so a typo never silently changes behaviour.

use crate::workspace::Policy;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub limits: LimitsConfig,
    pub policy: Policy,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Plain HTTP listener, `ADDR:PORT`.
    pub http: Option<String>,
    /// Store directory (relative paths are relative to the working directory).
    pub data: PathBuf,
    /// Base URL written into EPRs and WSDL (`http://host:port`); default: the request's Host.
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
}

impl Default for Config {
    fn default() -> Self {
        Config { server: Server::default(), limits: LimitsConfig::default(), policy: Policy::default() }
    }
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
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn http_config(&self) -> crate::soap::http::HttpConfig {
        use std::time::Duration;
        let l = &self.limits;
        crate::soap::http::HttpConfig {
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
    }
}
