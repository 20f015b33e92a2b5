//! The prefixcache HTTP server: an OpenAI-compatible proxy that answers repeated
//! requests from its cache and forwards everything else faithfully.
//!
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on a listener with
//! graceful shutdown (stop accepting, let in-flight requests and streams finish within
//! `drain_timeout`, wait for background stores, flush the store).
//!
//! # Layout
//! - [`server`]: the accept loop that owns connections (limits, graceful drain).
//! - [`admission`]: budgets of connections, requests and body bytes; body reading.
//! - [`state`]: shared state; store access that fails open and is measured.
//! - [`accounting`]: tokens, dollars and request-log lines of answered requests.
//! - [`cached`]: the cached routes (lookup, coalescing, forwarding, storing).
//! - [`breakpoints`]: automatic prompt-cache breakpoints and the per-family key choice.
//! - [`flight`]: one upstream response read once and fanned out to its callers.
//! - [`passthrough`]: every other route, forwarded unchanged.
//! - [`reqlog`]: the request log (JSON lines, rotated by size).
//! - [`upstream`]: the pooled upstream client and the forwarding rules.
//! - [`warnings`]: live prefix warnings (lint rules on each request's prefix window).
//! - [`tenant`]: callers' namespaces and the tenant secret.
//! - [`headers`]: the contract's request and response headers.
//! - [`admin`]: `/admin/stats`, `/admin/purge`, and the dashboard's routes.
//! - [`dashboard`]: the page at `/dashboard`, its JSON, this replica's history.
//! - [`memo`]: a bounded memo for facts about recurring prompt parts.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: errors in OpenAI's JSON shape.

pub mod accounting;
pub mod admin;
pub mod admission;
pub mod breakpoints;
pub mod cached;
pub mod dashboard;
pub mod error;
pub mod flight;
pub mod headers;
pub mod memo;
pub mod metrics;
pub mod passthrough;
pub mod reqlog;
pub mod server;
pub mod state;
pub mod tenant;
pub mod upstream;
pub mod warnings;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prefixcache_core::route::Route;
use prefixcache_store::StoreStats;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use state::AppState;

/// Open connections the admin listener accepts (dashboards, scrapers, operators).
pub const ADMIN_CONNECTIONS: usize = 64;

/// The proxy's router: health, metrics, the cached routes, and everything else
/// forwarded. Admin routes (the dashboard included) are added here only when an
/// `admin_token` protects them and no separate `admin_listen` is configured. The API
/// routes' handlers (cached and forwarded) take a slot of
/// `limits.max_requests_in_flight`; health, metrics and admin do not, so a saturated
/// proxy still answers its probes.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text));
    for route in Route::ALL {
        // Other methods on a cached path (a GET, say) are not cached but still forwarded.
        router = router.route(
            route.path(),
            post(cached::handle).fallback(passthrough::forward),
        );
    }
    if state.config.admin.listen.is_none() && state.config.admin.token.is_some() {
        router = router.merge(admin::routes());
    }
    router.fallback(passthrough::forward).with_state(state)
}

/// The admin router for `admin_listen`.
pub fn admin_app(state: AppState) -> Router {
    admin::routes()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready while the process can answer requests: a failing store does not make it
/// unready (requests fail open to upstream) but is reported as `degraded`. Once shutdown
/// has begun it answers 503 (`shutting_down`), while requests are still served.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    let timeout = state.config.store.timeout * 2;
    let store = match tokio::time::timeout(timeout, state.store.health()).await {
        Ok(Ok(())) => json!({"backend": state.store.backend(), "status": "ok"}),
        Ok(Err(e)) => {
            json!({"backend": state.store.backend(), "status": "degraded", "error": e.to_string()})
        }
        Err(_) => {
            json!({"backend": state.store.backend(), "status": "degraded", "error": "health check timed out"})
        }
    };
    let circuit = state.guard.as_ref().map(|g| g.snapshot());
    let degraded = store["status"] != "ok"
        || circuit
            .as_ref()
            .is_some_and(|c| c.state.as_str() != "closed");
    state.metrics.store_degraded.set(i64::from(degraded));
    let body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "store": store,
        "circuit": circuit.map(|c| json!({
            "state": c.state.as_str(),
            "consecutive_failures": c.consecutive_failures,
            "failures": c.failures,
            "timeouts": c.timeouts,
            "rejected": c.rejected,
            "trips": c.trips,
        })),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Copies the store's and the admission budgets' figures into their gauges (they are
/// read, not counted) and returns the store's with whether its guard is failing open.
pub(crate) fn refresh_gauges(state: &AppState) -> (StoreStats, bool) {
    let stats = state.store.stats();
    let degraded = state.guard.as_ref().is_some_and(|g| g.is_degraded());
    if state.guard.is_some() {
        state.metrics.store_degraded.set(i64::from(degraded));
    }
    state.metrics.entries.set(stats.entries as i64);
    state.metrics.store_bytes.set(stats.bytes as i64);
    state.metrics.store_evictions.set(stats.evictions as i64);
    let a = &state.admission;
    state.metrics.connections.set(a.open_connections() as i64);
    state
        .metrics
        .requests_in_flight
        .set(a.requests_in_flight() as i64);
    state
        .metrics
        .body_bytes_in_flight
        .set(a.body_bytes_in_flight() as i64);
    (stats, degraded)
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    refresh_gauges(&state);
    let mut resp = state.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Runs the proxy (and the admin listener, if any) until `shutdown` resolves, then
/// drains: `/readyz` fails at once and requests are still served for `shutdown_delay`
/// (so load balancers stop sending new ones), then the listeners close, open connections get `drain_timeout` to finish (then
/// they are closed), background work (reading upstream responses, storing them) is
/// waited for, the request log is flushed and the store is flushed.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain = state.config.drain_timeout;
    let stop = CancellationToken::new();
    let main = server::run(
        listener,
        app(state.clone()),
        stop.clone(),
        drain,
        state.admission.clone(),
    );
    let admin = async {
        match admin_listener {
            Some(l) => {
                // The admin listener has connection slots of its own, so a flood on the
                // main listener cannot lock the operator out.
                let mut limits = state.config.limits.clone();
                limits.max_connections = ADMIN_CONNECTIONS;
                let admission = Arc::new(admission::Admission::new(
                    &limits,
                    state.metrics.rejected.clone(),
                    state.metrics.client_timeouts.clone(),
                ));
                server::run(l, admin_app(state.clone()), stop.clone(), drain, admission).await
            }
            None => Ok(()),
        }
    };
    let servers = async { tokio::try_join!(main, admin).map(|_| ()) };
    tokio::pin!(servers);
    // The dashboard's history: polled here, dropped with this future at shutdown.
    let sampler = state
        .dashboard
        .run_sampler(&state.metrics, || state.now_ms());
    tokio::select! {
        // The listeners only end on their own when they fail.
        r = &mut servers => r?,
        never = sampler => match never {},
        () = shutdown => {
            state.readiness.shut_down();
            let delay = state.config.shutdown_delay;
            if !delay.is_zero() {
                tracing::info!(?delay, "shutting down: /readyz fails, still serving for shutdown_delay");
            }
            // The listeners only end on their own when they fail: then there is
            // nothing left to drain.
            let failed = tokio::select! {
                r = &mut servers => { r?; true }
                () = tokio::time::sleep(delay) => false,
            };
            if !failed {
                tracing::info!(?drain, "shutting down: no new connections, draining in-flight requests");
                stop.cancel();
                servers.await?;
            }
        }
    }
    state.tasks.close();
    if tokio::time::timeout(drain.max(Duration::from_secs(1)), state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks still running after the drain timeout; abandoning them");
    }
    if let Some(log) = &state.request_log {
        log.close();
    }
    match tokio::time::timeout(Duration::from_secs(30), state.store.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing the store failed"),
        Err(_) => tracing::warn!("flushing the store timed out"),
    }
    tracing::info!("stopped");
    Ok(())
}
