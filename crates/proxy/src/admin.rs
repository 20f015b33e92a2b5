//! Admin endpoints (DESIGN.md §3): `GET /admin/stats` and `POST /admin/purge`, served on
//! `admin.listen`, or on the main listener when `admin.token` protects them.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prefixcache_core::key::FamilyId;
use prefixcache_store::PurgeFilter;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/purge", post(purge))
}

/// With a configured token, every admin call must carry it as a bearer token.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.config.admin.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compare hashes so the comparison takes the same time wherever they differ.
    match given {
        Some(g) if blake3::hash(g.as_bytes()) == blake3::hash(token.as_bytes()) => Ok(()),
        _ => Err(ApiError::AdminUnauthorized),
    }
}

async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
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
    if let Err(e) = authorize(&state, &headers) {
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
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"message": format!("purge failed: {e}"), "type": "store_error", "param": null, "code": e.metric_label()}})),
        )
            .into_response(),
    }
}
