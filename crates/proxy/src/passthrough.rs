//! Every route that is not cached: forwarded unchanged (method, path, query, end-to-end
//! headers, body, status, streaming in both directions), never stored. A path that
//! would leave the upstream's base path is refused first; the body is held to the same
//! budget and minimum rate as on the cached routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};

use crate::admission::{AdmittedBody, hold};
use crate::error::ApiError;
use crate::headers::end_to_end;
use crate::metrics::{CodeLabels, error_code_label};
use crate::state::AppState;

/// Forwards a request as it is and streams the answer back; it holds a request slot
/// until the answer has been sent (503 at once when none is free).
pub async fn forward(State(state): State<AppState>, req: Request) -> Response {
    match state.admission.request() {
        Ok(slot) => hold(relay(&state, req).await, slot),
        Err(e) => e.into_response(),
    }
}

/// [`forward`] for a request that already holds its slot.
pub(crate) async fn relay(state: &AppState, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let headers = state
        .upstream
        .forward_headers(&parts.headers, parts.uri.path(), false);
    let body = match crate::upstream::check_path(parts.uri.path()) {
        Ok(()) => upstream_body(state, body, &parts.headers).await,
        Err(e) => Err(ApiError::BadPath(e.to_string())),
    };
    let result = match body {
        Ok(Outgoing {
            body,
            admitted,
            slow,
        }) => {
            let sent = state
                .upstream
                .send(parts.method.clone(), &path_and_query, headers, body)
                .await;
            // Sent: a buffered body leaves the budget.
            drop(admitted);
            sent.map_err(|e| {
                if slow.is_some_and(|s| s.load(Ordering::SeqCst)) {
                    ApiError::BodyTimeout
                } else {
                    ApiError::from(e)
                }
            })
        }
        Err(e) => Err(e),
    };
    let proxy_error = result.is_err();
    let resp = match result {
        Ok(resp) => {
            let status = resp.status();
            if !status.is_success() {
                state
                    .metrics
                    .upstream_errors
                    .get_or_create(&CodeLabels {
                        code: error_code_label(status.as_u16()),
                    })
                    .inc();
            }
            let mut out: HeaderMap = end_to_end(resp.headers(), |_| false);
            // The body is passed through as it is, so its length still holds.
            if let Some(len) = resp.headers().get(header::CONTENT_LENGTH) {
                out.insert(header::CONTENT_LENGTH, len.clone());
            }
            let idle = state.upstream.timeout();
            // Errors name the upstream URL unless told not to.
            let stream = resp.bytes_stream().map_err(reqwest::Error::without_url);
            let body = Body::from_stream(idle_bounded(stream, idle));
            let mut r = Response::new(body);
            *r.status_mut() = status;
            *r.headers_mut() = out;
            r
        }
        Err(e) => {
            if let ApiError::UpstreamTimeout(_) | ApiError::UpstreamUnreachable(_) = &e {
                state
                    .metrics
                    .upstream_errors
                    .get_or_create(&CodeLabels {
                        code: e.metric_label(),
                    })
                    .inc();
            }
            e.into_response()
        }
    };
    let status_label = if proxy_error { "error" } else { "passthrough" };
    state
        .metrics
        .request("other", "none", status_label, started.elapsed());
    tracing::info!(
        route = "other",
        method = %parts.method,
        path = parts.uri.path(),
        status = resp.status().as_u16(),
        outcome = "passthrough",
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// A request body on its way upstream.
struct Outgoing {
    body: reqwest::Body,
    /// A buffered body's bytes and their share of the body budget.
    admitted: Option<AdmittedBody>,
    /// Set when a streamed body was cut for arriving too slowly.
    slow: Option<Arc<AtomicBool>>,
}

/// The request body as it goes upstream: bodies of known length up to `max_body_bytes`
/// are read first (admitted against the body budget, at the minimum rate) and sent with
/// that length, since some servers reject chunked uploads; others are streamed, held to
/// the same minimum rate.
async fn upstream_body(
    state: &AppState,
    body: Body,
    headers: &HeaderMap,
) -> Result<Outgoing, ApiError> {
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    match declared {
        Some(n) if n <= limit && !chunked => {
            let admitted = state.admission.read_body(body, headers, limit).await?;
            Ok(Outgoing {
                body: reqwest::Body::from(admitted.bytes().clone()),
                admitted: Some(admitted),
                slow: None,
            })
        }
        // No length and not chunked: HTTP/1 says there is no body; HTTP/2 may still
        // carry one, which the body itself knows.
        None if !chunked && HttpBody::is_end_stream(&body) => Ok(Outgoing {
            body: reqwest::Body::from(bytes::Bytes::new()),
            admitted: None,
            slow: None,
        }),
        _ => {
            let (stream, slow) = state.admission.rate_limited(body);
            Ok(Outgoing {
                body: reqwest::Body::wrap_stream(stream),
                admitted: None,
                slow: Some(slow),
            })
        }
    }
}

/// Ends the body with an error when upstream sends nothing for `idle`, so a stalled
/// upstream cannot hold a client connection forever.
fn idle_bounded<S, E>(
    stream: S,
    idle: std::time::Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    futures_util::stream::unfold((stream, false), move |(mut stream, done)| async move {
        if done {
            return None;
        }
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), (stream, false))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e.to_string())), (stream, true))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::other("upstream body idle timeout")),
                (stream, true),
            )),
        }
    })
}
