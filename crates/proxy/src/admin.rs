//! Admin endpoints: `GET /admin/stats`, `POST /admin/purge`, and the dashboard
//! (`GET /dashboard`, its files, and `GET /admin/summary`), served on `admin.listen`,
//! or on the main listener when `admin.token` protects them.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prefixcache_core::key::FamilyId;
use prefixcache_store::PurgeFilter;
use serde::Deserialize;
use serde_json::json;

use crate::dashboard::page;
use crate::dashboard::summary::{Circuit, Inflight, Live, StoreHealth};
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/purge", post(purge))
        .route("/admin/summary", get(summary))
        .route("/dashboard", get(dashboard_page))
        .route("/dashboard/{file}", get(dashboard_file))
}

/// What a call may do, which decides the credentials it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Reading (the dashboard and its JSON): `Bearer <token>`, or HTTP Basic with the
    /// token as password, so a browser can open the page (it asks for the password
    /// once and sends it with every request the page makes).
    Read,
    /// Changing the cache (purge): `Bearer <token>` only. A browser re-sends Basic
    /// credentials on its own, also for a form another site posts here; a bearer token
    /// it never sends by itself, so a page elsewhere cannot purge (CSRF).
    Write,
}

/// With a configured token, every admin call must carry it.
fn authorize(state: &AppState, headers: &HeaderMap, access: Access) -> Result<(), ApiError> {
    let Some(token) = &state.config.admin.token else {
        return Ok(());
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let given = if let Some(bearer) = value.strip_prefix("Bearer ") {
        Some(bearer.as_bytes().to_vec())
    } else if let Some(basic) = value.strip_prefix("Basic ")
        && access == Access::Read
    {
        basic_password(basic.trim())
    } else {
        None
    };
    // Compare hashes so the comparison takes the same time wherever they differ.
    match given {
        Some(g) if blake3::hash(&g) == blake3::hash(token.as_bytes()) => Ok(()),
        _ => Err(ApiError::AdminUnauthorized),
    }
}

/// The password of HTTP Basic credentials (`base64(user:password)`); any user name.
fn basic_password(encoded: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// A 401 for the page: the challenge makes a browser ask for the token.
fn challenge(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"prefixcache admin\", charset=\"UTF-8\""),
    );
    resp
}

async fn dashboard_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers, Access::Read) {
        return challenge(e);
    }
    page::asset("").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

async fn dashboard_file(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers, Access::Read) {
        return challenge(e);
    }
    page::asset(&format!("/{file}")).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// `GET /admin/summary`: the dashboard's JSON (`docs/dashboard.md`).
async fn summary(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers, Access::Read) {
        return e.into_response();
    }
    let (stats, degraded) = crate::refresh_gauges(&state);
    let live = Live {
        now: state.dashboard.read_now(&state.metrics, state.now_ms()),
        listen: state.config.listen.to_string(),
        store: StoreHealth {
            backend: state.store.backend(),
            degraded,
            circuit: state.guard.as_ref().map(|g| {
                let c = g.snapshot();
                Circuit {
                    state: c.state.as_str(),
                    consecutive_failures: c.consecutive_failures,
                    failures: c.failures,
                    timeouts: c.timeouts,
                    rejected: c.rejected,
                    trips: c.trips,
                }
            }),
            entries: stats.entries,
            bytes: stats.bytes,
            evictions: stats.evictions,
        },
        inflight: Inflight {
            upstream: state.metrics.inflight_upstream.get(),
            flights: state.flights.len(),
            followers: state.flights.followers(),
        },
    };
    let mut resp = Json(state.dashboard.summary(live)).into_response();
    page::secure(resp.headers_mut());
    resp
}

async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers, Access::Read) {
        return e.into_response();
    }
    let s = state.store.stats();
    Json(json!({
        "store": {
            "backend": state.store.backend(),
            "entries": s.entries,
            "bytes": s.bytes,
        },
        "inflight": state.flights.len(),
        "strategies": state.config.strategies.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// Body of `POST /admin/purge`; every given field must match, `{}` purges everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    /// The 16-hex-character tenant tag of the request log.
    namespace: Option<String>,
    strategy: Option<String>,
    /// A family as 64 hex characters.
    family: Option<String>,
}

async fn purge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = authorize(&state, &headers, Access::Write) {
        return e.into_response();
    }
    let req: PurgeRequest = if body.is_empty() {
        PurgeRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return ApiError::InvalidJson(format!(
                    "purge takes {{\"namespace\"?, \"strategy\"?, \"family\"?}}: {e}"
                ))
                .into_response();
            }
        }
    };
    let mut filter = PurgeFilter {
        strategy: req.strategy,
        ..Default::default()
    };
    if let Some(ns) = req.namespace {
        match prefixcache_core::key::CacheKey::from_hex(&format!("{ns:0<64}")) {
            Some(k) if ns.len() == 16 => {
                let mut tag = [0u8; 8];
                tag.copy_from_slice(&k.0[..8]);
                filter.namespace_tag = Some(tag);
            }
            _ => {
                return ApiError::InvalidJson("namespace must be 16 hex characters".into())
                    .into_response();
            }
        }
    }
    if let Some(f) = req.family {
        match FamilyId::from_hex(&f) {
            Some(id) => filter.family = Some(id),
            None => {
                return ApiError::InvalidJson("family must be 64 hex characters".into())
                    .into_response();
            }
        }
    }
    match state.store.purge(&filter).await {
        Ok(n) => Json(json!({"purged": n})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"message": format!("purge failed: {e}"), "type": "store_error", "param": null, "code": e.metric_label()}})),
        )
            .into_response(),
    }
}
