//! Wiring, in one place: open the store, build the homes and services, start the sweeper and
//! the listeners, and shut everything down in order.

use crate::config::Config;
use crate::security::OwnerOnly;
use crate::services::{counter, factory, workspace, Services, Shared};
use crate::soap::http;
use crate::store::Store;
use crate::wsrf::{Home, LifetimePolicy, Sweeper};
use std::sync::Arc;
use std::time::Duration;

/// A running container's parts.
pub struct App {
    pub services: Arc<Services>,
    pub sweeper: Arc<Sweeper>,
    pub store: Store,
}

impl App {
    /// Open the store and load every resource home.
    pub fn open(cfg: &Config) -> Result<App, String> {
        let store = Store::open(&cfg.server.data).map_err(|e| format!("opening store in {}: {e}", cfg.server.data.display()))?;
        let sweeper = Sweeper::new();
        let shared = Arc::new(Shared { auth: Arc::new(OwnerOnly) });
        let home = |name: &str, key, rtype| {
            Home::open(name, key, rtype, store.clone(), sweeper.clone()).map_err(|e| format!("loading {name}: {e}"))
        };
        let workspaces = home(workspace::NAME, workspace::key_name(), workspace::resource_type())?;
        let counters = home(counter::NAME, counter::key_name(), counter::resource_type(false))?;
        let counters_rw = home(counter::NAME_RW, counter::key_name(), counter::resource_type(true))?;
        let lifetime = LifetimePolicy { max_lifetime_ms: cfg.policy.max_lifetime_secs.map(|s| s as i64 * 1000) };
        let services = Services {
            factory: factory::FactoryService { shared: shared.clone(), policy: cfg.policy.clone(), workspaces: workspaces.clone() },
            workspace: workspace::WorkspaceService { home: workspaces, shared: shared.clone(), lifetime },
            counter: counter::CounterService::new(counters, shared.clone(), false),
            counter_rw: counter::CounterService::new(counters_rw, shared, true),
        };
        Ok(App { services: Arc::new(services), sweeper, store })
    }
}

/// Run `vwsd` until SIGTERM / SIGINT.
pub async fn run(cfg: Config) -> Result<(), String> {
    let app = App::open(&cfg)?;
    let addr = cfg.server.http.clone().ok_or("no listener configured: set server.http or pass --http")?;
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let sweeper = tokio::spawn(app.sweeper.clone().run());
    tracing::info!(%local, data = %cfg.server.data.display(), "vwsd started");
    println!("vwsd listening on http://{local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    http::serve(
        listener,
        app.services.clone(),
        Arc::new(cfg.http_config()),
        shutdown_signal(),
        Duration::from_secs(cfg.server.shutdown_grace_secs),
    )
    .await;
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
