//! Who is calling and what they may do. Every request carries a [`Caller`]; services ask the one
//! [`Authorizer`] before acting. On the plain HTTP listener callers are anonymous; GSI transport
//! and message security (their own issue) produce authenticated callers through the same type,
//! so services never change when they arrive.
//!
//! The GSI library: [`credential`] (loading proxies and certificates), [`certdir`] (trusted CAs,
//! CRLs, signing policies), [`proxy`] (chain validation), [`voms`] (attribute certificates),
//! [`gridmap`], [`tls`] (OpenSSL glue for the listeners), [`https`] (the connector of outgoing
//! http(s) clients) and [`authenticate`], which turns a presented chain into a [`Caller`];
//! [`reload`] keeps the trust current as its files change and re-validates open connections
//! against it.

pub mod acl;
pub mod certdir;
pub mod credential;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod der;
#[cfg(not(feature = "fuzzing"))]
mod der;
pub mod error;
pub mod gridmap;
pub mod gss;
pub mod https;
pub mod proxy;
pub mod reload;
pub mod tls;
pub mod voms;
pub mod wssec;
pub mod x509;

pub use certdir::CertDir;
pub use credential::Credential;
pub use error::GsiError;
pub use gridmap::GridMap;
pub use proxy::{validate_chain, validate_chain_at, Validated};
pub use voms::VomsConfig;

/// Who a resource belongs to (from the caller identity that created it); beside [`Caller`]
/// because the authorisation policies compare the two.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Owner {
    /// Globus slash-form DN; None for anonymous.
    pub dn: Option<String>,
    pub fqans: Vec<String>,
    /// Local account from the grid-mapfile, when there is one.
    pub account: Option<String>,
}

/// The authenticated (or not) identity of a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Caller {
    /// End-entity DN in Globus slash form; None = anonymous.
    pub dn: Option<String>,
    /// VOMS FQANs, verified.
    pub fqans: Vec<String>,
    /// Authenticated with a limited proxy.
    pub limited: bool,
    /// Local account from the grid-mapfile.
    pub account: Option<String>,
    /// Unix seconds after which these credentials are void: the earliest notAfter of the
    /// presented chain and of its VOMS attribute certificates. None: nothing expires (anonymous).
    pub valid_until: Option<i64>,
}

impl Caller {
    /// True when the credentials this caller authenticated with have expired at `now` (Unix s).
    pub fn expired_at(&self, now: i64) -> bool {
        self.valid_until.is_some_and(|t| now > t)
    }
    pub fn anonymous() -> Self {
        Caller::default()
    }
    pub fn name(&self) -> &str {
        self.dn.as_deref().unwrap_or("anonymous")
    }
    /// The owner record a resource created by this caller gets.
    pub fn as_owner(&self) -> Owner {
        Owner { dn: self.dn.clone(), fqans: self.fqans.clone(), account: self.account.clone() }
    }
}

/// Actions subject to authorisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create a workspace through the factory.
    Create,
    /// Read a resource's properties.
    Read,
    /// Change or destroy a resource (properties, lifetime).
    Manage,
    /// Deploy / undeploy a workspace on a host (stage its images, release them).
    Deploy,
    /// Break another holder's checkout lock on a workspace (ACL action `break_lock`).
    BreakLock,
    /// Site administration of the Repository (image store gc; ACL action `admin`).
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Manage => "manage",
            Action::Deploy => "deploy",
            Action::BreakLock => "break_lock",
            Action::Admin => "admin",
        }
    }
}

/// A refusal, naming the rule that refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Denied {
    pub rule: String,
    pub reason: String,
}

/// The authorisation hook every service calls.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, caller: &Caller, action: Action, owner: Option<&Owner>) -> Result<(), Denied>;
}

/// The policy of a service without security: anyone may create; a resource may be touched by
/// its owner only (anonymous resources by anonymous callers), and limited proxies only read.
#[derive(Default)]
pub struct OwnerOnly;

impl Authorizer for OwnerOnly {
    fn authorize(&self, caller: &Caller, action: Action, owner: Option<&Owner>) -> Result<(), Denied> {
        if caller.limited && action != Action::Read {
            return Err(Denied { rule: "limited_proxy".into(), reason: "a limited proxy may only read".into() });
        }
        if let Some(o) = owner {
            if o.dn != caller.dn {
                return Err(Denied {
                    rule: "owner".into(),
                    reason: format!(
                        "{} may not {} a resource owned by {}",
                        caller.name(),
                        action.as_str(),
                        o.dn.as_deref().unwrap_or("anonymous")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Everything [`authenticate`] trusts: the CAs, optionally VOMS and a grid-mapfile.
#[derive(Debug)]
pub struct TrustConfig {
    pub cert_dir: CertDir,
    /// None: VOMS attributes are not looked at (no FQANs).
    pub voms: Option<VomsConfig>,
    /// Some: callers must be in it, and get its default account.
    pub gridmap: Option<GridMap>,
}

impl TrustConfig {
    pub fn new(cert_dir: CertDir) -> TrustConfig {
        TrustConfig { cert_dir, voms: None, gridmap: None }
    }

    /// From the environment, as the Globus tools read it: `X509_CERT_DIR` (default
    /// `/etc/grid-security/certificates`), `X509_VOMS_DIR` (VOMS enabled when that directory,
    /// default `/etc/grid-security/vomsdir`, exists) and `GRIDMAP` (the grid-mapfile is required
    /// when the variable is set).
    pub fn from_env() -> Result<TrustConfig, GsiError> {
        let cert_dir = CertDir::from_env()?;
        let v = VomsConfig::from_env();
        let voms = if v.vomsdir.is_dir() { Some(v) } else { None };
        let gridmap = match std::env::var_os("GRIDMAP") {
            Some(p) => Some(GridMap::load(p)?),
            None => None,
        };
        Ok(TrustConfig { cert_dir, voms, gridmap })
    }
}

/// Validates a presented chain (leaf first) and builds the [`Caller`]: the end-entity DN, the
/// verified VOMS FQANs (invalid ACs are logged and ignored), the limited flag, and the
/// grid-mapfile account (a DN missing from a configured grid-mapfile is refused).
///
/// A chain proves nothing by itself: the caller must have established that the peer holds the
/// leaf's private key (the TLS handshake does; WS-Security must verify the message signature
/// with the leaf's key).
pub fn authenticate(chain: &[openssl::x509::X509], cfg: &TrustConfig) -> Result<Caller, GsiError> {
    authenticate_inner(chain, cfg, None)
}

/// [`authenticate`] as of `at` (Unix seconds).
pub fn authenticate_at(chain: &[openssl::x509::X509], cfg: &TrustConfig, at: i64) -> Result<Caller, GsiError> {
    authenticate_inner(chain, cfg, Some(at))
}

/// [`authenticate`] on the chain a TLS peer presented (see [`tls`]); fails closed.
pub fn authenticate_peer(ssl: &openssl::ssl::SslRef, cfg: &TrustConfig) -> Result<Caller, GsiError> {
    let chain = tls::peer_chain(ssl);
    if chain.is_empty() {
        return Err(GsiError::NoPeerCertificate);
    }
    authenticate(&chain, cfg)
}

fn authenticate_inner(chain: &[openssl::x509::X509], cfg: &TrustConfig, at: Option<i64>) -> Result<Caller, GsiError> {
    let _clear = x509::ClearErrorsOnDrop;
    let v = match at {
        None => validate_chain(chain, &cfg.cert_dir)?,
        Some(t) => validate_chain_at(chain, &cfg.cert_dir, t)?,
    };
    let account = match &cfg.gridmap {
        Some(g) => Some(g.map(&v.identity_dn)?),
        None => None,
    };
    let mut valid_until = v.not_after.unix_timestamp();
    let mut fqans: Vec<String> = Vec::new();
    if let Some(vc) = &cfg.voms {
        for a in voms::attributes(&v, &cfg.cert_dir, vc, at) {
            valid_until = valid_until.min(a.not_after);
            for f in a.fqans {
                if !fqans.contains(&f) {
                    fqans.push(f);
                }
            }
        }
    }
    Ok(Caller { dn: Some(v.identity_dn), fqans, limited: v.limited, account, valid_until: Some(valid_until) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_only_policy() {
        let anon = Caller::anonymous();
        let alice = Caller { dn: Some("/O=Grid/CN=Alice".into()), ..Default::default() };
        let p = OwnerOnly;
        assert!(p.authorize(&anon, Action::Create, None).is_ok());
        assert!(p.authorize(&anon, Action::Manage, Some(&anon.as_owner())).is_ok());
        let d = p.authorize(&anon, Action::Read, Some(&alice.as_owner())).unwrap_err();
        assert_eq!(d.rule, "owner");
        assert!(p.authorize(&alice, Action::Manage, Some(&alice.as_owner())).is_ok());
        let limited = Caller { limited: true, ..alice.clone() };
        assert_eq!(p.authorize(&limited, Action::Manage, Some(&alice.as_owner())).unwrap_err().rule, "limited_proxy");
        assert!(p.authorize(&limited, Action::Read, Some(&alice.as_owner())).is_ok());
    }
}
