//! Prometheus metrics: the recorder (`metrics-exporter-prometheus`, installed only when
//! `[metrics] listen` is set — without it every `metrics::` call in vws is a no-op) and the
//! listener of its own that answers `GET /metrics` in the text format. Gauges that are a count of
//! something held elsewhere (live resources by type and state) are filled in by a [`Collect`]
//! hook just before each rendering; everything else is counted where it happens.
//!
//! The series (all prefixed `vws_`): `requests_total{service,operation,outcome}` and
//! `request_duration_seconds{service,operation}`; `resources{type,state}`;
//! `stagings_total{outcome}`, `staging_bytes_total`, `staging_rate_bytes_per_second`,
//! `image_served_bytes_total` (`server/images.rs`);
//! `vm_operations_total{op,outcome}`, `vm_operation_duration_seconds{op}`;
//! `store_commit_seconds`, `store_commit_writes`; `gsi_handshakes_total{outcome}`,
//! `gsi_refusals_total{reason}`; `trust_reloads_total{outcome}`, `trust_generation`;
//! `sweeper_expired_total`, `sweeper_sweep_seconds`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Sets the gauges that count things held elsewhere, just before a rendering.
pub type Collect = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Latency buckets (seconds) for requests, VM operations and commits.
const BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Installs the Prometheus recorder for this process (once; later calls get an error).
pub fn install() -> Result<PrometheusHandle, String> {
    let h = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("vws_store_commit_writes".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 512.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("vws_staging_rate_bytes_per_second".into()),
                &[1e5, 1e6, 1e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 5e9],
            )
        })
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(h)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("vws_requests_total", "SOAP requests by service, operation and outcome (ok, fault, refused)");
    describe_histogram!("vws_request_duration_seconds", Unit::Seconds, "SOAP request handling time");
    describe_gauge!("vws_resources", "Live WS-Resources by type (home) and state");
    describe_counter!("vws_stagings_total", "Image stagings finished, by outcome");
    describe_counter!("vws_staging_bytes_total", Unit::Bytes, "Bytes staged into the image pool");
    describe_counter!("vws_image_served_bytes_total", Unit::Bytes, "Image bytes served by GET /wsrf/images/{sha256}");
    describe_histogram!("vws_staging_rate_bytes_per_second", "Rate of each finished staging");
    describe_counter!("vws_vm_operations_total", "VM operations by operation and outcome");
    describe_histogram!("vws_vm_operation_duration_seconds", Unit::Seconds, "VM operation durations");
    describe_histogram!("vws_store_commit_seconds", Unit::Seconds, "SQLite group-commit latency");
    describe_histogram!("vws_store_commit_writes", "Writes per group commit");
    describe_counter!("vws_gsi_handshakes_total", "GSI TLS handshakes by outcome (ok, refused, failed)");
    describe_counter!("vws_gsi_refusals_total", "Refused GSI credentials by reason");
    describe_counter!("vws_trust_reloads_total", "Trust file reloads by outcome");
    describe_gauge!("vws_trust_generation", "Generation number of the trust in use");
    describe_counter!("vws_sweeper_expired_total", "Resources whose termination time passed, destroyed by the sweeper");
    describe_histogram!("vws_sweeper_sweep_seconds", Unit::Seconds, "Time of each sweep that found work");
}

struct Exporter {
    handle: PrometheusHandle,
    collect: Collect,
}

async fn render(State(e): State<Arc<Exporter>>) -> Response {
    (e.collect)().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], e.handle.render()).into_response()
}

/// The `/metrics` router (everything else is a 404).
pub fn router(handle: PrometheusHandle, collect: Collect) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(render))
        .fallback(|| async { (StatusCode::NOT_FOUND, "metrics live at /metrics\n") })
        .with_state(Arc::new(Exporter { handle, collect }))
}

/// Serves `router` on `listener` until `stop` resolves.
pub async fn serve(listener: tokio::net::TcpListener, router: axum::Router, stop: impl Future<Output = ()> + Send + 'static) {
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "metrics listener failed");
    }
}
