//! Wiring, in one place: open the store, build the homes and services, start the sweeper and
//! the listeners, and shut everything down in order.

use crate::config::{under, Config, SecurityConfig};
use crate::host::ca::HostCa;
use crate::host::qemu::{Accel, QemuConfig, QemuDriver, UserNet};
use crate::host::vm::{EngineConfig, VmEngine};
use crate::host::Host;
use crate::security::acl::AclPolicy;
use crate::security::reload::{LiveTrust, Session, TrustFiles};
use crate::security::{self, tls, wssec, Authorizer, Credential, OwnerOnly};
use crate::server::{self, Authenticate, Edge, GsiListener, MessageSecurity, PlainListener};
use crate::services::manager::{ManagerService, Vms, WorkspaceLedger};
use crate::services::repository::{self, Checkouts, RepositoryService, RepositorySettings};
use crate::services::subscription::SubscriptionService;
use crate::services::{counter, factory, host_manager, workspace, Dispatcher, Registry, Shared};
use crate::store::leases::Leases;
use crate::store::Store;
use crate::wsrf::notification::{self, ConsumerTls, Notifier};
use crate::wsrf::{Home, LifetimePolicy, Sweeper};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// A running container's parts.
pub struct App {
    pub services: Arc<Registry>,
    pub sweeper: Arc<Sweeper>,
    pub store: Store,
    /// This host's engine (staging, image pool).
    pub host: Arc<Host>,
    pub manager: Arc<ManagerService>,
    /// WS-BaseNotification subscriptions and delivery (started by [`App::start`]).
    pub notifier: Arc<Notifier>,
    /// Every resource home by name (the workspace home first), for the metrics.
    pub homes: Vec<(&'static str, Arc<Home>)>,
    pub repository: Arc<RepositoryService>,
}

impl App {
    /// Open the store and load every resource home; `auth` is the authorisation policy.
    pub async fn open(cfg: &Config, auth: Arc<dyn Authorizer>) -> Result<App, String> {
        crate::wsrf::intern::set_budget(cfg.limits.shared_strings_bytes);
        crate::wsrf::properties::set_max_property_bytes(cfg.limits.max_property_bytes);
        if !crate::wsrf::query::configure(cfg.query_limits()) {
            tracing::debug!("XPath query limits were already set in this process");
        }
        let store = Store::open(&cfg.server.data).map_err(|e| format!("opening store in {}: {e}", cfg.server.data.display()))?;
        let sweeper = Sweeper::new();
        let home = |name: &str, key, rtype| {
            Home::open(name, key, rtype, store.clone(), sweeper.clone()).map_err(|e| format!("loading {name}: {e}"))
        };
        let subscriptions = home(notification::SERVICE, notification::key_name(), notification::resource_type())?;
        let notifier = Notifier::new(subscriptions, cfg.notification.settings());
        let shared = Arc::new(Shared { auth, notifier: Some(notifier.clone()) });
        let workspaces = home(workspace::NAME, workspace::key_name(), workspace::resource_type())?;
        let counters = home(counter::NAME, counter::key_name(), counter::resource_type(false))?;
        let counters_rw = home(counter::NAME_RW, counter::key_name(), counter::resource_type(true))?;
        let lifetime = LifetimePolicy { max_lifetime_ms: cfg.policy.max_lifetime_secs.map(|s| s as i64 * 1000) };
        // Producers: every resource home whose properties can be subscribed to.
        for h in [&workspaces, &counters, &counters_rw] {
            notifier.watch(h.clone());
        }
        let engine = engine(cfg)?;
        let vms = Vms::new(workspaces.clone(), engine.clone(), &cfg.server.data)?;
        let ledger = Arc::new(WorkspaceLedger { home: workspaces.clone(), vms: vms.clone() });
        let host = Host::new(&cfg.staging.settings(&cfg.server.data), ledger, engine)?;
        let manager = ManagerService::new(workspaces.clone(), shared.clone(), host.clone(), vms);
        let homes = vec![
            (workspace::NAME, workspaces.clone()),
            (counter::NAME, counters.clone()),
            (counter::NAME_RW, counters_rw.clone()),
        ];
        let repository = open_repository(cfg, &store, &sweeper, &shared, &workspaces, &host).await?;
        manager.set_checkouts(repository.clone());
        // The port types: one line each.
        let mut services = Registry::new();
        services.register(Arc::new(factory::FactoryService {
            shared: shared.clone(),
            policy: cfg.policy.clone(),
            workspaces: workspaces.clone(),
            checkouts: Some(repository.checkouts.clone()),
        }))?;
        services.register(Arc::new(workspace::WorkspaceService {
            home: workspaces,
            shared: shared.clone(),
            lifetime,
            operations: vec![manager.clone()],
        }))?;
        services.register(Arc::new(host_manager::HostManagerService { manager: manager.clone(), shared: shared.clone() }))?;
        services.register(repository.clone())?;
        services.register(Arc::new(counter::CounterService::new(counters, shared.clone(), false)))?;
        services.register(Arc::new(counter::CounterService::new(counters_rw, shared.clone(), true)))?;
        services.register(Arc::new(SubscriptionService { notifier: notifier.clone(), shared, lifetime }))?;
        Ok(App { services: Arc::new(services), sweeper, store, host, manager, notifier, homes, repository })
    }
}

/// The site's Repository over the workspace home (`[repository]`): its singleton resource, its
/// tables, and the image store under `<data>/repository`, which deploys stage through.
async fn open_repository(
    cfg: &Config,
    store: &Store,
    sweeper: &Arc<Sweeper>,
    shared: &Arc<Shared>,
    workspaces: &Arc<Home>,
    host: &Arc<Host>,
) -> Result<Arc<RepositoryService>, String> {
    let r = &cfg.repository;
    let home = Home::open(repository::NAME, repository::key_name(), repository::resource_type(), store.clone(), sweeper.clone())
        .map_err(|e| format!("loading {}: {e}", repository::NAME))?;
    let tables = Arc::new(crate::store::repo::RepoTables::open(&cfg.server.data).map_err(|e| format!("repository tables: {e}"))?);
    let quotas = crate::store::repo::Quotas { site_bytes: r.quota_bytes, owner_bytes: r.owner_quota_bytes };
    let images = Arc::new(crate::host::images::ImageStore::open(&cfg.server.data.join("repository"), tables.clone(), quotas)?);
    host.set_images(images.clone());
    let lease_ms = (r.lease_secs.max(1) as i64).saturating_mul(1000);
    let site = match &r.url {
        None => repository::Site::Local,
        Some(url) => {
            let client = if url.starts_with("https://") {
                let s = &cfg.security;
                let cred = crate::security::Credential::load(&s.host_cert, &s.host_key)
                    .map_err(|e| format!("repository.url {url}: the host credential: {e}"))?;
                crate::client::Client::with_credential(&cred, &s.cert_dir).map_err(|e| format!("repository.url {url}: {e}"))?
            } else {
                crate::client::Client::new()
            };
            tracing::info!(url, "using the remote site Repository");
            let remote = repository::RemoteSite::new(url, client, Duration::from_secs(r.timeout_secs.max(1)));
            // Images this host's store lacks come from the site's store by digest.
            host.set_image_source(Arc::new(remote.images()));
            repository::Site::Remote(Box::new(remote))
        }
    };
    let checkouts = Arc::new(Checkouts::with_site(tables, lease_ms, site));
    let settings = RepositorySettings { lease_ms, gc_grace_ms: (r.gc_grace_secs as i64).saturating_mul(1000) };
    RepositoryService::new(
        shared.clone(),
        cfg.policy.clone(),
        home,
        workspaces.clone(),
        checkouts,
        images,
        host.clone(),
        settings,
    )
    .await
}

/// This host's VM engine from `[vmm]`, `[network]`, `[credentials]` (None: `vmm.driver = "none"`).
pub fn engine(cfg: &Config) -> Result<Option<Arc<VmEngine>>, String> {
    let v = &cfg.vmm;
    if v.driver == "none" {
        return Ok(None);
    }
    if v.driver != "qemu" && v.driver != "xen" {
        return Err(format!("vmm.driver '{}': expected \"qemu\", \"xen\" or \"none\" (deploy only stages)", v.driver));
    }
    let data = std::path::absolute(&cfg.server.data).map_err(|e| format!("{}: {e}", cfg.server.data.display()))?;
    let abs = |p: &std::path::Path| {
        let p = under(&data, p);
        p.canonicalize().unwrap_or(p)
    };
    let n = &cfg.network;
    let ip = |what: &str, s: &str| s.parse::<Ipv4Addr>().map_err(|_| format!("network.{what}: '{s}' is not an IPv4 address"));
    let (net, prefix) = n.subnet.split_once('/').ok_or_else(|| format!("network.subnet '{}' is not ADDR/PREFIX", n.subnet))?;
    let prefix: u8 =
        prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("network.subnet '{}': bad prefix", n.subnet))?;
    let net = ip("subnet", net)?;
    let (first, last) = (ip("first", &n.first)?, ip("last", &n.last)?);
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
    let inside = |a: Ipv4Addr| u32::from(a) & mask == u32::from(net) & mask;
    if !inside(first) || !inside(last) || u32::from(first) > u32::from(last) {
        return Err(format!("network: {}..{} is not a range inside {}", n.first, n.last, n.subnet));
    }
    let gateway = n.gateway.as_deref().map(|g| ip("gateway", g)).transpose()?;
    let mac: Vec<u8> = n.mac_prefix.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    let mac: [u8; 3] = mac.try_into().map_err(|_| format!("network.mac_prefix '{}' is not XX:XX:XX", n.mac_prefix))?;
    let run_root = under(&data, &v.run_dir);
    std::fs::create_dir_all(&run_root).map_err(|e| format!("vmm.run_dir {}: {e}", run_root.display()))?;
    let run_root = run_root.canonicalize().map_err(|e| format!("vmm.run_dir {}: {e}", run_root.display()))?;
    let pool = cfg.staging.pool_dir(&data);
    std::fs::create_dir_all(&pool).map_err(|e| format!("image pool {}: {e}", pool.display()))?;
    let pool = pool.canonicalize().map_err(|e| format!("image pool {}: {e}", pool.display()))?;
    let kernel = v.kernel.as_deref().map(abs);
    let ramdisk = v.ramdisk.as_deref().map(abs);
    let accel = Accel::parse(&v.accel).ok_or_else(|| format!("vmm.accel '{}': expected auto, kvm or tcg", v.accel))?;
    let qemu: Arc<dyn crate::host::vmm::Vmm> = if v.driver == "xen" {
        Arc::new(crate::host::xl::XlDriver::new(v.xl.clone()))
    } else {
        Arc::new(QemuDriver::new(QemuConfig {
            binary: v.qemu.clone(),
            accel,
            run_root: run_root.clone(),
            probe: kernel.clone().zip(ramdisk.clone()),
            user_net: match (&n.bridge, gateway) {
                (None, Some(g)) => Some(UserNet { net: n.subnet.clone(), host: g.to_string() }),
                _ => None,
            },
        }))
    };
    let leases = Leases::open(&data, first, last, mac).map_err(|e| format!("address leases: {e}"))?;
    let c = &cfg.credentials;
    let ca = match (&c.ca_cert, &c.ca_key) {
        (Some(cert), Some(key)) => HostCa::load(&abs(cert), &abs(key), c.days)?,
        (None, None) => HostCa::load_or_make(&data.join("ca"), c.days)?,
        _ => return Err("credentials: set both ca_cert and ca_key, or neither".into()),
    };
    tracing::info!(driver = %v.driver, run = %run_root.display(), ca = %ca.subject(), pool = %format!("{first}-{last}"), "VM engine ready");
    Ok(Some(Arc::new(VmEngine {
        vmm: qemu,
        leases,
        ca,
        cfg: EngineConfig {
            pool,
            run_root,
            kernel,
            ramdisk,
            cmdline: v.cmdline.clone(),
            memory_mib: v.memory_mib,
            vcpus: v.vcpus,
            stop_timeout: Duration::from_secs(v.stop_timeout_secs),
            ready_marker: v.ready_marker.clone(),
            ready_timeout: Duration::from_secs(v.ready_timeout_secs),
            prefix,
            gateway,
            bridge: n.bridge.clone(),
            qemu_img: v.qemu_img.clone(),
        },
    })))
}

/// GSI: the HTTPS listener's transport and the message security shared by all listeners, from
/// the host credential, trust directory, grid-mapfile and VOMS trust.
/// Accepted signed messages are remembered in `store` for their Timestamp window, so a replay is
/// refused across restarts (kill -9 included: a request is dispatched only after its replay record
/// is in the WAL; after a system crash see [`Store::replay_may_be_lost`]).
type Gsi = ((openssl::ssl::SslAcceptor, Authenticate), Arc<MessageSecurity>, Arc<LiveTrust>);

/// The trust files of `[security]`, loaded (see [`crate::security::reload`]).
pub fn live_trust(sec: &SecurityConfig) -> Result<Arc<LiveTrust>, String> {
    let crl_policy = crate::security::certdir::CrlPolicy::parse(&sec.crl_policy)
        .ok_or_else(|| format!("security.crl_policy '{}': expected \"refuse\" or \"warn\"", sec.crl_policy))?;
    let files =
        TrustFiles { cert_dir: sec.cert_dir.clone(), gridmap: sec.gridmap.clone(), vomsdir: sec.vomsdir.clone(), crl_policy };
    LiveTrust::load(files).map_err(|e| {
        format!(
            "trust ({}, grid-mapfile {:?}): {e}",
            sec.cert_dir.display(),
            sec.gridmap.as_deref().map(|p| p.display().to_string())
        )
    })
}

fn gsi(sec: &SecurityConfig, store: &Store) -> Result<Gsi, String> {
    security::proxy::set_chain_cache_ttl(Duration::from_secs(sec.chain_cache_secs));
    let cred = Credential::load(&sec.host_cert, &sec.host_key)
        .map_err(|e| format!("host credential ({}, {}): {e}", sec.host_cert.display(), sec.host_key.display()))?;
    let trust = live_trust(sec)?;
    let acceptor = tls::acceptor(&cred).map_err(|e| format!("TLS set-up: {e}"))?.build();
    let signer = wssec::Signer::new(&cred).map_err(|e| format!("message signing set-up: {e}"))?;
    let replay = durable_replay_cache(store, wssec::now_ms())?;
    tracing::info!(remembered = replay.len(), "replay records loaded");
    let msec = Arc::new(MessageSecurity { trust: trust.clone(), replay, signer });
    tracing::info!(host = %cred.subject_dn(), trust = %sec.cert_dir.display(), "GSI transport and message security ready");
    let live = trust.clone();
    let authenticate: Authenticate = Box::new(move |ssl| Session::start(&live, tls::peer_chain(ssl)));
    Ok(((acceptor, authenticate), msec, trust))
}

/// How the notifier reaches `https://` consumers: with security on, presenting the host
/// credential and trusting the live trust directory of the HTTPS listener (`trust`); with
/// security off, the same if `security.cert_dir` holds trusted CAs (the host credential only
/// when it loads), else Subscribe refuses https consumers, saying why.
fn consumer_tls(sec: &SecurityConfig, trust: Option<&Arc<LiveTrust>>, notifier: &Notifier) {
    let host = || Credential::load(&sec.host_cert, &sec.host_key);
    let tls = match trust {
        Some(t) => host()
            .map(|c| ConsumerTls { credential: Some(c), trust: t.clone() })
            .map_err(|e| format!("the host credential ({}): {e}", sec.host_cert.display())),
        None => match crate::security::CertDir::load(&sec.cert_dir) {
            Ok(dir) if !dir.cas().is_empty() => {
                let credential =
                    host().inspect_err(|e| tracing::debug!(error = %e, "https consumers: no host credential to present")).ok();
                Ok(ConsumerTls { credential, trust: LiveTrust::fixed(security::TrustConfig::new(dir)) })
            }
            Ok(_) => Err(format!("security is off and security.cert_dir {} holds no trusted CA", sec.cert_dir.display())),
            Err(e) => Err(format!("security is off and security.cert_dir {} cannot be read: {e}", sec.cert_dir.display())),
        },
    };
    match tls.and_then(|t| notifier.use_tls(t)) {
        Ok(()) => tracing::info!(trust = %sec.cert_dir.display(), "https consumers: GSI transport"),
        Err(why) => {
            tracing::info!(reason = %why, "https consumers are refused");
            notifier.refuse_https(why);
        }
    }
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
    let cache = wssec::ReplayCache::new();
    let cache = if store.replay_may_be_lost() {
        let floor = now_ms + cache.skew_ms();
        tracing::warn!("the system crashed while vwsd ran: the last replay records may be lost; signed messages created before {} are refused", crate::soap::time::format_ms(floor));
        cache.refuse_created_before(floor)
    } else {
        cache
    };
    Ok(cache.with_log(Arc::new(StoreReplayLog(store.clone())), remembered, now_ms))
}

/// `vwsd --check`: the configuration's values, then what it names — with security on the host
/// credential and the trust files (loaded as the service would), the ACL policy, the metrics
/// address — without opening the store or binding anything. Ok: a one-line summary.
pub fn check(cfg: &Config) -> Result<String, String> {
    cfg.check_values()?;
    let mut parts = vec![format!("data {}", cfg.server.data.display())];
    if let Some(h) = &cfg.server.http {
        h.parse::<std::net::SocketAddr>().map_err(|e| format!("server.http '{h}': {e}"))?;
        parts.push(format!("http {h}"));
    }
    if let Some(h) = &cfg.security.https {
        h.parse::<std::net::SocketAddr>().map_err(|e| format!("security.https '{h}': {e}"))?;
        AclPolicy::new(cfg.security.acl.clone())?;
        let sec = &cfg.security;
        Credential::load(&sec.host_cert, &sec.host_key)
            .map_err(|e| format!("host credential ({}, {}): {e}", sec.host_cert.display(), sec.host_key.display()))?;
        let t = live_trust(sec)?;
        let g = t.current();
        if !g.config.cert_dir.problems().is_empty() {
            return Err(format!("trust directory: {}", g.config.cert_dir.problems().join("; ")));
        }
        parts.push(format!("https {h} with {} trusted CAs", g.config.cert_dir.cas().len()));
    } else if cfg.server.http.is_none() {
        return Err("no listener configured: set server.http or security.https".into());
    }
    if let Some(m) = &cfg.metrics.listen {
        parts.push(format!("metrics {m}"));
    }
    Ok(parts.join(", "))
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
    // The metrics recorder goes in before anything counts.
    let metrics = match &cfg.metrics.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding metrics.listen {addr}: {e}"))?;
            Some((l, server::metrics::install()?))
        }
        None => None,
    };
    let app = App::open(&cfg, auth).await?;
    let mut msec = None;
    let mut tls = None;
    let mut trust = None;
    if let Some(addr) = &cfg.security.https {
        let (t, m, live) = gsi(&cfg.security, &app.store)?;
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
        tls = Some((l, t));
        msec = Some(m);
        trust = Some(live);
    }
    consumer_tls(&cfg.security, trust.as_ref(), &app.notifier);
    // The trust files are watched (inotify, and a periodic check) and re-read on SIGHUP.
    let _watch = trust.as_ref().map(|t| t.watch(Duration::from_secs(cfg.security.reload_check_secs.max(1))));
    let hup = tokio::spawn(reload_on_sighup(trust.clone()));
    if plain.is_none() && tls.is_none() {
        return Err("no listener configured: set server.http / security.https or pass --http / --https".into());
    }
    let sweeper = tokio::spawn(app.sweeper.clone().run());
    app.notifier.start().await;
    app.manager.recover().await;
    let reconciler = {
        let m = app.manager.clone();
        let every = Duration::from_secs(cfg.host.reconcile_secs.max(1));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                m.reconcile().await;
            }
        })
    };
    // The Repository: the local Manager renews its checkout leases; unreferenced images go.
    let renewer = {
        let (repo, host) = (app.repository.clone(), app.host.clone());
        let every = Duration::from_millis((repo.checkouts.lease_ms / 3).max(1000) as u64);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                repo.checkouts.renew_local(&repo.catalogue.workspaces, |k| host.is_staging(k)).await;
            }
        })
    };
    // With a remote site Repository: this host's workspaces' states and destruction go there.
    let enroller = app.repository.checkouts.remote().is_some().then(|| {
        let repo = app.repository.clone();
        let mut changes = repo.catalogue.workspaces.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let state = crate::soap::xml::QName::new(crate::soap::ns::NIMBUS, "CurrentState");
            loop {
                match changes.recv().await {
                    Ok(c) => match c.kind {
                        crate::wsrf::home::ChangeKind::Destroy => repo.checkouts.withdraw(&c.key).await,
                        crate::wsrf::home::ChangeKind::Update if c.get(&state).is_none() => {}
                        _ => {
                            if let Err(e) = repo.checkouts.enrol(&repo.catalogue.workspaces, &c.key).await {
                                tracing::warn!(key = c.key, "site Repository entry not updated: {}", e.description);
                            }
                        }
                    },
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "site Repository updates fell behind"),
                    Err(RecvError::Closed) => break,
                }
            }
        })
    });
    let collector = (cfg.repository.gc_interval_secs > 0).then(|| {
        let repo = app.repository.clone();
        let every = Duration::from_secs(cfg.repository.gc_interval_secs);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                match repo.gc(repo.settings.gc_grace_ms).await {
                    Ok(r) if !r.is_empty() => tracing::info!(removed = r.len(), "scheduled image store gc"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "scheduled image store gc failed"),
                }
            }
        })
    });
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
    let router =
        server::router(Arc::new(Edge { services, cfg: http_cfg.clone(), msec, health, images: Some(app.repository.clone()) }));
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
        if let Some(r) = app.repository.checkouts.remote() {
            // The Manager address this host takes checkout locks as at the site Repository.
            let base = cfg.server.public_url.clone().unwrap_or_else(|| format!("{scheme}://{local}"));
            r.manager.get_or_init(|| format!("{}/wsrf/services/{}", base.trim_end_matches('/'), workspace::NAME));
        }
        tracing::info!(%local, scheme, data = %cfg.server.data.display(), security = secure, "vwsd listening");
        println!("vwsd listening on {scheme}://{local}");
    };
    if let Some((l, handle)) = metrics {
        let local = l.local_addr().map_err(|e| e.to_string())?;
        let collect = resource_gauges(&app.homes);
        tokio::spawn(server::metrics::serve(l, server::metrics::router(handle, collect), stop()));
        tracing::info!(%local, "metrics at http://{local}/metrics");
    }
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
    reconciler.abort();
    hup.abort();
    renewer.abort();
    for c in [collector, enroller].into_iter().flatten() {
        c.abort();
    }
    if let Err(e) = app.store.close().await {
        tracing::error!(error = %e, "closing the store");
    }
    drop(app);
    tracing::info!("vwsd stopped");
    Ok(())
}

/// `vws_resources{type,state}`, set before each rendering: the workspaces by state, the other
/// homes' resources as state "live".
fn resource_gauges(homes: &[(&'static str, Arc<Home>)]) -> server::metrics::Collect {
    let homes: Vec<(&'static str, Arc<Home>)> = homes.to_vec();
    Arc::new(move || {
        let homes = homes.clone();
        Box::pin(async move {
            for (name, home) in &homes {
                if *name == workspace::NAME {
                    let counts = crate::services::manager::state_counts(home).await;
                    for s in crate::workspace::State::ALL {
                        let n = counts.get(s.as_str()).copied().unwrap_or(0);
                        metrics::gauge!("vws_resources", "type" => *name, "state" => s.as_str()).set(n as f64);
                    }
                } else {
                    metrics::gauge!("vws_resources", "type" => *name, "state" => "live").set(home.len() as f64);
                }
            }
        })
    })
}

/// SIGHUP: read the trust files again (a failed reload keeps the last good trust).
async fn reload_on_sighup(trust: Option<Arc<LiveTrust>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        match &trust {
            Some(t) => {
                let t = t.clone();
                let _ = tokio::task::spawn_blocking(move || t.reload("SIGHUP")).await;
            }
            None => tracing::info!("SIGHUP: security is off, no trust files to reload"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
