//! Wiring, in one place: open the store, build the homes and services, start the sweeper and
//! the listeners, and shut everything down in order.

use crate::config::{Config, SecurityConfig};
use crate::host::Host;
use crate::security::acl::AclPolicy;
use crate::security::{self, tls, wssec, Authorizer, CertDir, Credential, GridMap, OwnerOnly, TrustConfig, VomsConfig};
use crate::server::{self, Authenticate, Edge, GsiListener, MessageSecurity, PlainListener};
use crate::services::manager::{ManagerService, WorkspaceLedger};
use crate::services::{counter, factory, workspace, Dispatcher, Registry, Shared};
use crate::store::Store;
use crate::wsrf::{Home, LifetimePolicy, Sweeper};
use std::sync::Arc;
use std::time::Duration;

/// A running container's parts.
pub struct App {
    pub services: Arc<Registry>,
    pub sweeper: Arc<Sweeper>,
    pub store: Store,
    /// This host's engine (staging, image pool).
    pub host: Arc<Host>,
}

impl App {
    /// Open the store and load every resource home; `auth` is the authorisation policy.
    pub fn open(cfg: &Config, auth: Arc<dyn Authorizer>) -> Result<App, String> {
        crate::wsrf::intern::set_budget(cfg.limits.shared_strings_bytes);
        crate::wsrf::properties::set_max_property_bytes(cfg.limits.max_property_bytes);
        if !crate::wsrf::query::configure(cfg.query_limits()) {
            tracing::debug!("XPath query limits were already set in this process");
        }
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
        // The port types: one line each.
        let mut services = Registry::new();
        services.register(Arc::new(factory::FactoryService {
            shared: shared.clone(),
            policy: cfg.policy.clone(),
            workspaces: workspaces.clone(),
        }))?;
        services.register(Arc::new(workspace::WorkspaceService {
            home: workspaces,
            shared: shared.clone(),
            lifetime,
            operations: vec![manager],
        }))?;
        services.register(Arc::new(counter::CounterService::new(counters, shared.clone(), false)))?;
        services.register(Arc::new(counter::CounterService::new(counters_rw, shared, true)))?;
        Ok(App { services: Arc::new(services), sweeper, store, host })
    }
}

/// GSI: the HTTPS listener's transport and the message security shared by all listeners, from
/// the host credential, trust directory, grid-mapfile and VOMS trust.
/// Accepted signed messages are remembered in `store` for their Timestamp window, so a replay is
/// refused across restarts (kill -9 included: a request is dispatched only after its replay record
/// committed).
fn gsi(sec: &SecurityConfig, store: &Store) -> Result<((openssl::ssl::SslAcceptor, Authenticate), Arc<MessageSecurity>), String> {
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
    let replay = durable_replay_cache(store, wssec::now_ms())?;
    tracing::info!(remembered = replay.len(), "replay records loaded");
    let msec = Arc::new(MessageSecurity { trust: trust.clone(), replay, signer });
    tracing::info!(host = %cred.subject_dn(), trust = %sec.cert_dir.display(), "GSI transport and message security ready");
    let authenticate: Authenticate = Box::new(move |ssl| security::authenticate_peer(ssl, &trust).map_err(|e| e.to_string()));
    Ok(((acceptor, authenticate), msec))
}

/// The store keeps replay keys in its own table, group-committed with every other write and
/// pruned once their window has passed.
struct StoreReplayLog(Store);

impl wssec::ReplayLog for StoreReplayLog {
    fn record<'a>(&'a self, key: &'a str, end_ms: i64, now_ms: i64) -> wssec::ReplayFuture<'a> {
        Box::pin(async move { self.0.record_replay(key, end_ms, now_ms).await.map_err(|e| e.to_string()) })
    }
}

/// The default replay limits, remembering accepted messages in `store` too, and starting with what
/// the store remembers from before (the messages whose window has not ended at `now_ms`).
pub fn durable_replay_cache(store: &Store, now_ms: i64) -> Result<wssec::ReplayCache, String> {
    let remembered = store.replay_keys(now_ms).map_err(|e| format!("reading the replay records: {e}"))?;
    Ok(wssec::ReplayCache::new().with_log(Arc::new(StoreReplayLog(store.clone())), remembered, now_ms))
}

/// Run `vwsd` until SIGTERM / SIGINT.
pub async fn run(cfg: Config) -> Result<(), String> {
    let secure = cfg.security.https.is_some();
    let auth: Arc<dyn Authorizer> =
        if secure { Arc::new(AclPolicy::new(cfg.security.acl.clone())?) } else { Arc::new(OwnerOnly) };
    let http_cfg = Arc::new(cfg.http_config());
    let plain = match &cfg.server.http {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?),
        None => None,
    };
    let app = App::open(&cfg, auth)?;
    let mut msec = None;
    let mut tls = None;
    if let Some(addr) = &cfg.security.https {
        let (t, m) = gsi(&cfg.security, &app.store)?;
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
        tls = Some((l, t));
        msec = Some(m);
    }
    if plain.is_none() && tls.is_none() {
        return Err("no listener configured: set server.http / security.https or pass --http / --https".into());
    }
    let sweeper = tokio::spawn(app.sweeper.clone().run());
    app.host.recover().await;
    let store = app.store.clone();
    let health: server::Health = Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.get("healthz", "-").map(|_| ()).map_err(|e| e.to_string()))
                .await
                .map_err(|e| e.to_string())?
        })
    });
    let services: Arc<dyn Dispatcher> = app.services.clone();
    let router = server::router(Arc::new(Edge { services, cfg: http_cfg.clone(), msec, health }));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    let stop = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = Vec::new();
    let announce = |local: std::net::SocketAddr, scheme: &str| {
        tracing::info!(%local, scheme, data = %cfg.server.data.display(), security = secure, "vwsd listening");
        println!("vwsd listening on {scheme}://{local}");
    };
    if let Some(l) = plain {
        let local = l.local_addr().map_err(|e| e.to_string())?;
        let l = PlainListener::new(l, http_cfg.max_connections, http_cfg.header_timeout);
        servers.push(tokio::spawn(server::serve(l, router.clone(), stop(), grace)));
        announce(local, "http");
    }
    if let Some((l, (acceptor, authenticate))) = tls {
        let local = l.local_addr().map_err(|e| e.to_string())?;
        let l = GsiListener::new(l, acceptor, authenticate, http_cfg.max_connections, http_cfg.header_timeout)
            .map_err(|e| e.to_string())?;
        servers.push(tokio::spawn(server::serve(l, router.clone(), stop(), grace)));
        announce(local, "https");
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
