//! Wiring, in one place: open the store, build the homes and services, start the sweeper and
//! the listeners, and shut everything down in order.

use crate::config::{Config, SecurityConfig};
use crate::host::Host;
use crate::security::acl::AclPolicy;
use crate::security::{self, tls, wssec, Authorizer, CertDir, Credential, GridMap, OwnerOnly, TrustConfig, VomsConfig};
use crate::services::manager::{ManagerService, WorkspaceLedger};
use crate::services::{counter, factory, workspace, Services, Shared};
use crate::soap::http::{self, MessageSecurity, Transport};
use crate::store::Store;
use crate::wsrf::{Home, LifetimePolicy, Sweeper};
use std::sync::Arc;
use std::time::Duration;

/// A running container's parts.
pub struct App {
    pub services: Arc<Services>,
    pub sweeper: Arc<Sweeper>,
    pub store: Store,
    /// This host's engine (staging, image pool).
    pub host: Arc<Host>,
}

impl App {
    /// Open the store and load every resource home; `auth` is the authorisation policy.
    pub fn open(cfg: &Config, auth: Arc<dyn Authorizer>) -> Result<App, String> {
        let store = Store::open(&cfg.server.data).map_err(|e| format!("opening store in {}: {e}", cfg.server.data.display()))?;
        let sweeper = Sweeper::new();
        let shared = Arc::new(Shared { auth });
        let home = |name: &str, key, rtype| {
            Home::open(name, key, rtype, store.clone(), sweeper.clone()).map_err(|e| format!("loading {name}: {e}"))
        };
        let workspaces = home(workspace::NAME, workspace::key_name(), workspace::resource_type())?;
        let counters = home(counter::NAME, counter::key_name(), counter::resource_type(false))?;
        let counters_rw = home(counter::NAME_RW, counter::key_name(), counter::resource_type(true))?;
        let lifetime = LifetimePolicy { max_lifetime_ms: cfg.policy.max_lifetime_secs.map(|s| s as i64 * 1000) };
        let host = Host::new(&cfg.staging.settings(&cfg.server.data), Arc::new(WorkspaceLedger { home: workspaces.clone() }))?;
        let manager = ManagerService::new(workspaces.clone(), shared.clone(), host.clone());
        let services = Services {
            factory: factory::FactoryService {
                shared: shared.clone(),
                policy: cfg.policy.clone(),
                workspaces: workspaces.clone(),
            },
            workspace: workspace::WorkspaceService { home: workspaces, shared: shared.clone(), lifetime, manager },
            counter: counter::CounterService::new(counters, shared.clone(), false),
            counter_rw: counter::CounterService::new(counters_rw, shared, true),
        };
        Ok(App { services: Arc::new(services), sweeper, store, host })
    }
}

/// GSI: the HTTPS listener's transport and the message security shared by all listeners, from
/// the host credential, trust directory, grid-mapfile and VOMS trust.
fn gsi(sec: &SecurityConfig) -> Result<(Transport, Arc<MessageSecurity>), String> {
    let cred = Credential::load(&sec.host_cert, &sec.host_key)
        .map_err(|e| format!("host credential ({}, {}): {e}", sec.host_cert.display(), sec.host_key.display()))?;
    let cert_dir = CertDir::load(&sec.cert_dir).map_err(|e| format!("trust directory {}: {e}", sec.cert_dir.display()))?;
    let gridmap = match &sec.gridmap {
        Some(p) => Some(GridMap::load(p).map_err(|e| format!("grid-mapfile {}: {e}", p.display()))?),
        None => None,
    };
    let voms = sec.vomsdir.is_dir().then(|| VomsConfig::new(sec.vomsdir.clone()));
    let trust = Arc::new(TrustConfig { cert_dir, voms, gridmap });
    let acceptor = tls::acceptor(&cred).map_err(|e| format!("TLS set-up: {e}"))?.build();
    let signer = wssec::Signer::new(&cred).map_err(|e| format!("message signing set-up: {e}"))?;
    let msec = Arc::new(MessageSecurity { trust: trust.clone(), replay: wssec::ReplayCache::new(), signer });
    tracing::info!(host = %cred.subject_dn(), trust = %sec.cert_dir.display(), "GSI transport and message security ready");
    let transport = Transport::Tls {
        acceptor,
        authenticate: Box::new(move |ssl| security::authenticate_peer(ssl, &trust).map_err(|e| e.to_string())),
    };
    Ok((transport, msec))
}

/// Run `vwsd` until SIGTERM / SIGINT.
pub async fn run(cfg: Config) -> Result<(), String> {
    let secure = cfg.security.https.is_some();
    let auth: Arc<dyn Authorizer> =
        if secure { Arc::new(AclPolicy::new(cfg.security.acl.clone())?) } else { Arc::new(OwnerOnly) };
    let mut listeners = Vec::new();
    if let Some(addr) = &cfg.server.http {
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
        listeners.push((l, Transport::Plain));
    }
    let mut msec = None;
    if let Some(addr) = &cfg.security.https {
        let (t, m) = gsi(&cfg.security)?;
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
        listeners.push((l, t));
        msec = Some(m);
    }
    if listeners.is_empty() {
        return Err("no listener configured: set server.http / security.https or pass --http / --https".into());
    }
    let app = App::open(&cfg, auth)?;
    let sweeper = tokio::spawn(app.sweeper.clone().run());
    app.host.recover().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_cfg = Arc::new(cfg.http_config());
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    let mut servers = Vec::new();
    for (l, t) in listeners {
        let local = l.local_addr().map_err(|e| e.to_string())?;
        let scheme = if matches!(t, Transport::Plain) { "http" } else { "https" };
        let mut rx = stop_rx.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        servers.push(tokio::spawn(http::serve(l, t, app.services.clone(), http_cfg.clone(), msec.clone(), stop, grace)));
        tracing::info!(%local, scheme, data = %cfg.server.data.display(), security = secure, "vwsd listening");
        println!("vwsd listening on {scheme}://{local}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    sweeper.abort();
    if let Err(e) = app.store.close().await {
        tracing::error!(error = %e, "closing the store");
    }
    drop(app);
    tracing::info!("vwsd stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
