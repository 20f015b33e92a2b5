//! The cached routes (`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`): parse once, pick the strategy, derive the key, answer from the
//! store, join an identical request in flight, or forward upstream and store the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use prefixcache_core::canonical::canonicalize;
use prefixcache_core::config::KeyMode;
use prefixcache_core::key::{CacheKey, FamilyId, KeyInput, RequestHash, compute_keys, hex};
use prefixcache_core::prefix::{FamilyParams, derived_prompt_cache_key};
use prefixcache_core::route::Route;
use prefixcache_core::sse::{EventKind, SseSplitter, SseTail, StreamAssembler};
use prefixcache_core::usage::Usage;
use prefixcache_core::wire::{self, Injections, ServerState};
use prefixcache_store::{ContentForm, Entry, EntryMeta};
use serde_json::{Map, Value};

use crate::accounting::{Ending, Ledger, PromptCacheKeySource, Source};
use crate::error::ApiError;
use crate::flight::{Chunk, End, FailKind, Flight, Head, Joined, Next};
use crate::headers::{self, CacheDirectives, UpstreamCaching, end_to_end};
use crate::metrics::{CodeLabels, ReasonLabels, RouteStatusLabels, error_code_label, status_class};
use crate::state::AppState;
use crate::upstream::UpstreamError;

/// How a request was answered; the value of `x-prefixcache-status` and of the
/// `status` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass(BypassReason),
    Coalesced,
}

impl Outcome {
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass(_) => "BYPASS",
            Outcome::Coalesced => "COALESCED",
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass(_) => "bypass",
            Outcome::Coalesced => "coalesced",
        }
    }
}

/// Why a request went upstream without a lookup: the value of `x-prefixcache-bypass`
/// and of `bypass_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The caller sent `Cache-Control: no-cache` (the fresh answer is still stored).
    NoCache,
    /// A sampled request under `cache_sampled = false`.
    Sampled,
    /// An object in the body has a key twice: parsers disagree on which one counts, so
    /// the request is forwarded byte for byte and never cached.
    DuplicateKeys,
    /// The answer depends on state the provider holds (a conversation, a background
    /// response, a stored prompt, a provider-run tool): never cached.
    ServerState(ServerState),
}

impl BypassReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::NoCache => "no_cache",
            BypassReason::Sampled => "sampled",
            BypassReason::DuplicateKeys => "duplicate_keys",
            BypassReason::ServerState(s) => s.as_str(),
        }
    }

    /// Whether the answer may still be stored (only a caller's `no-cache`: it asks for
    /// a fresh answer, not for none to be kept).
    fn stores(self) -> bool {
        matches!(self, BypassReason::NoCache)
    }
}

/// What the caller wants the response to look like.
#[derive(Debug, Clone, Copy)]
struct Want {
    stream: bool,
    include_usage: bool,
    annotate: bool,
}

/// What the request log line and metrics say about one request.
#[derive(Debug, Default)]
struct Ctx {
    strategy: &'static str,
    outcome: Option<Outcome>,
    key: Option<CacheKey>,
}

/// Handler for every cached route.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let Some(route) = Route::from_path(req.uri().path()) else {
        // The router only sends cached paths here.
        return crate::passthrough::forward(State(state), req).await;
    };
    let mut ctx = Ctx {
        strategy: "none",
        ..Default::default()
    };
    let result = handle_inner(&state, route, req, started, &mut ctx).await;
    let took = started.elapsed();
    let (resp, status_label) = match result {
        Ok(resp) => {
            let label = ctx.outcome.map_or("error", Outcome::as_str);
            (resp, label)
        }
        Err(e) => {
            tracing::debug!(error = %e, "request rejected");
            (e.into_response(), "error")
        }
    };
    state
        .metrics
        .request(route.as_str(), ctx.strategy, status_label, took);
    tracing::info!(
        route = route.as_str(),
        status = resp.status().as_u16(),
        outcome = status_label,
        strategy = ctx.strategy,
        latency_ms = took.as_secs_f64() * 1000.0,
        key = %ctx.key.map(|k| k.short_hex()).unwrap_or_default(),
        "request"
    );
    resp
}

async fn handle_inner(
    state: &AppState,
    route: Route,
    req: Request,
    started: Instant,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let raw = read_body(body, &parts.headers, state.config.max_body_bytes).await?;
    let body = parse_object(&raw)?;
    let directives = CacheDirectives::from_headers(&parts.headers)?;
    let flags = wire::request_flags(route, &body);
    let model = flags.model.unwrap_or("");
    let strategy = state
        .config
        .strategy_for(directives.strategy.as_deref(), model, route.path())
        .map_err(|message| ApiError::BadHeader {
            header: "x-prefixcache-strategy",
            message,
        })?;
    ctx.strategy = state.strategy_label(&strategy.name);

    let caller = state.tenancy.caller(&parts.headers, parts.uri.query());
    let namespace = caller.namespace;
    let family = state
        .families
        .family(route, &body, &FamilyParams::for_strategy(strategy, model));
    // The key is read from the bytes the caller sent, not from the parsed tree: member
    // order, exact numbers and duplicate keys are only visible there.
    let canonical = canonicalize(route, &raw, strategy.normalize_whitespace)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let keys = compute_keys(&KeyInput {
        namespace: &namespace,
        strategy: &strategy.name,
        method: parts.method.as_str(),
        route,
        query: parts.uri.query().unwrap_or(""),
        body: &canonical,
        key_mode: strategy.key_mode,
        family: Some(&family.id),
    })
    .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let family_id = Some(family.id);
    ctx.key = Some(keys.key);

    let ttl = strategy.effective_ttl(directives.ttl);
    let sampled_skip = flags.sampled && !strategy.cache_sampled;
    let bypass = if canonical.has_duplicate_keys() {
        Some(BypassReason::DuplicateKeys)
    } else if let Some(s) = flags.server_state {
        Some(BypassReason::ServerState(s))
    } else if sampled_skip {
        Some(BypassReason::Sampled)
    } else if directives.no_cache {
        Some(BypassReason::NoCache)
    } else {
        None
    };
    let lookup = bypass.is_none();
    let store_allowed =
        bypass.is_none_or(BypassReason::stores) && !directives.no_store && !ttl.is_zero();
    let want = Want {
        stream: flags.stream && route.can_stream(),
        include_usage: flags.include_usage,
        annotate: strategy.annotate_body,
    };
    let mut labels = Labels {
        key: keys.key,
        family: family_id,
        warning: None,
        breakpoint: None,
    };
    let mut ledger = Ledger {
        started,
        route,
        strategy: ctx.strategy,
        tenant: hex(&namespace_tag(&namespace)),
        key: keys.key,
        family: family_id,
        raw: state.request_log.is_some().then(|| raw.clone()),
        request: None,
        prompt_cache_key: PromptCacheKeySource::None,
        breakpoint: crate::breakpoints::BreakpointNote::default(),
    };

    if lookup && let Some(entry) = state.store_get(&keys.key).await {
        if entry.meta.request_hash == keys.request_hash && entry.meta.route == route {
            match render(
                route,
                entry.meta.form,
                &entry.body,
                want,
                Some(&keys.key),
                true,
            ) {
                Ok(rendered) => {
                    ctx.outcome = Some(Outcome::Hit);
                    labels.warning = state.lint_request(strategy, &family, &namespace, false);
                    let age = state.now_ms().saturating_sub(entry.meta.created_at_ms) / 1000;
                    let mut resp = rendered.into_response(StatusCode::OK, HeaderMap::new());
                    set_cache_headers(resp.headers_mut(), Outcome::Hit, &labels);
                    resp.headers_mut()
                        .insert(headers::AGE, HeaderValue::from(age));
                    state.account(
                        &ledger,
                        Ending {
                            status: Outcome::Hit.as_str(),
                            http_status: 200,
                            model: &entry.meta.model,
                            usage: Some(entry.meta.usage),
                            source: Source::Cache,
                        },
                    );
                    return Ok(resp);
                }
                Err(e) => {
                    // An entry we cannot render is useless: drop it and serve a miss.
                    tracing::warn!(error = %e, key = %keys.key.short_hex(), "stored entry could not be rendered; treating as a miss");
                    state.store_delete(&keys.key).await;
                }
            }
        } else if strategy.key_mode == KeyMode::Exact {
            // Different requests under one exact key means a hash collision or a bug;
            // the check is the article's guard against serving a wrong answer.
            tracing::warn!(key = %keys.key.short_hex(), "entry's request hash differs from the request's; treating as a miss");
        }
    }

    labels.warning = state.lint_request(strategy, &family, &namespace, true);
    // The provider's prompt cache: the key policy for this family, and a breakpoint
    // where its learned boundary pays (`breakpoints.rs`).
    let placement = if bypass == Some(BypassReason::DuplicateKeys) {
        crate::breakpoints::Placement::default()
    } else {
        state.breakpoints.place(
            &crate::breakpoints::PlaceInput {
                strategy,
                route,
                body: &body,
                model,
                namespace: &namespace,
                family: &family.id,
                now_ms: state.now_ms(),
            },
            &state.prices,
        )
    };
    labels.breakpoint = placement.header();
    let family = family_id;
    let prompt_cache_key = match placement.key_mode {
        // A caller's own key is never overwritten.
        Some(mode) if !flags.has_prompt_cache_key => {
            derived_prompt_cache_key(mode, route, &body, family.as_ref())
        }
        _ => None,
    };
    let injections = if bypass == Some(BypassReason::DuplicateKeys) {
        // Which of two equal keys counts is the provider's reading; the bytes go as sent.
        Injections::default()
    } else {
        Injections {
            include_usage: want.stream,
            prompt_cache_key: prompt_cache_key.as_deref(),
            breakpoint: placement.breakpoint,
        }
    };
    let upstream_body = wire::prepare_upstream_body(&raw, route, &injections)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    ledger.prompt_cache_key = PromptCacheKeySource::of(
        flags.has_prompt_cache_key,
        prompt_cache_key.is_some(),
        placement.key_mode.unwrap_or(strategy.prompt_cache_key),
    );
    ledger.breakpoint = placement.note();
    if let Some(plan) = placement.plan {
        state.metrics.breakpoint_decision(plan.decision.as_str());
    }
    ledger.request = Some(Arc::new(body));
    let outcome = match bypass {
        Some(reason) => {
            state
                .metrics
                .bypassed
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc();
            Outcome::Bypass(reason)
        }
        None => Outcome::Miss,
    };
    let plan = Arc::new(FlightPlan {
        route,
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or(route.path().to_string(), |p| p.as_str().to_string()),
        headers: state
            .upstream
            .forward_headers(&parts.headers, route.path(), true),
        body: upstream_body,
        store: store_allowed.then(|| StorePlan {
            key: keys.key,
            request_hash: keys.request_hash,
            strategy: strategy.name.clone(),
            family,
            namespace_tag: namespace_tag(&namespace),
            own_namespace: caller.own,
            ttl,
        }),
        outcome,
        ledger: ledger.clone(),
    });

    // Flights are joined by identical requests, so they are keyed by the full request
    // hash: in `prefix` key mode, different requests share one slot key.
    let flight_key = CacheKey(keys.request_hash.0);
    if lookup && store_allowed {
        match state.flights.join_or_lead(flight_key) {
            Joined::Leader(flight) => {
                start_flight(state, flight.clone(), plan, Some(flight_key));
                ctx.outcome = Some(outcome);
                return respond_live(flight, want, outcome, &labels).await;
            }
            Joined::Follower(flight) => {
                let shared = follow(state, &flight, route, want, &labels, &ledger, caller.own);
                if let Some(resp) = shared.await {
                    state.metrics.coalesced.inc();
                    ctx.outcome = Some(Outcome::Coalesced);
                    return Ok(resp);
                }
                tracing::debug!(key = %keys.key.short_hex(), "request in flight failed; calling upstream for the follower");
            }
        }
    }

    let (flight, registered) = if store_allowed {
        (state.flights.lead(flight_key), Some(flight_key))
    } else {
        (Flight::new(), None)
    };
    start_flight(state, flight.clone(), plan, registered);
    ctx.outcome = Some(outcome);
    respond_live(flight, want, outcome, &labels).await
}

/// Reads the whole body, bounded by `max_body_bytes` (413 beyond it).
async fn read_body(body: Body, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit_usize).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::BodyTooLarge { limit };
            }
            source = s.source();
        }
        ApiError::BodyRead(e.to_string())
    })
}

fn parse_object(raw: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidJson(
            "request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::InvalidJson(format!(
            "request body is not valid JSON ({e}); send the request as JSON with Content-Type: application/json"
        ))),
    }
}

fn namespace_tag(ns: &prefixcache_core::key::Namespace) -> [u8; 8] {
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&ns.as_bytes()[..8]);
    tag
}

/// The cache headers that identify an answer.
#[derive(Debug, Clone)]
struct Labels {
    key: CacheKey,
    family: Option<FamilyId>,
    /// `x-prefixcache-warning`, when the prefix has findings.
    warning: Option<HeaderValue>,
    /// `x-prefixcache-breakpoint`, on forwarded requests to models with breakpoints.
    breakpoint: Option<HeaderValue>,
}

fn set_cache_headers(h: &mut HeaderMap, outcome: Outcome, labels: &Labels) {
    h.insert(headers::STATUS, outcome.header());
    if let Outcome::Bypass(reason) = outcome {
        h.insert(headers::BYPASS, HeaderValue::from_static(reason.as_str()));
    }
    if let Ok(v) = HeaderValue::from_str(&labels.key.short_hex()) {
        h.insert(headers::KEY, v);
    }
    if let Some(f) = labels.family
        && let Ok(v) = HeaderValue::from_str(&f.short_hex())
    {
        h.insert(headers::FAMILY, v);
    }
    if let Some(w) = &labels.warning {
        h.insert(headers::WARNING, w.clone());
    }
    if let Some(b) = &labels.breakpoint
        && outcome != Outcome::Coalesced
    {
        h.insert(headers::BREAKPOINT, b.clone());
    }
}

/// A response rendered from a complete body.
enum Rendered {
    Json(Bytes),
    Events(Vec<Bytes>),
}

impl Rendered {
    fn into_response(self, status: StatusCode, mut headers: HeaderMap) -> Response {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_TYPE);
        let (content_type, body) = match self {
            Rendered::Json(b) => ("application/json", Body::from(b)),
            Rendered::Events(events) => (
                "text/event-stream; charset=utf-8",
                Body::from_stream(futures_util::stream::iter(
                    events.into_iter().map(Ok::<_, std::convert::Infallible>),
                )),
            ),
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// Renders a complete body (stored entry or finished flight) in the form the caller
/// wants, whatever form it was received in.
fn render(
    route: Route,
    form: ContentForm,
    body: &Bytes,
    want: Want,
    key: Option<&CacheKey>,
    cached: bool,
) -> Result<Rendered, wire::WireError> {
    let rendered = match (form, want.stream) {
        (ContentForm::Json, false) => Rendered::Json(body.clone()),
        (ContentForm::Sse, false) => Rendered::Json(wire::sse_to_json(route, body)?),
        (ContentForm::Json, true) => {
            Rendered::Events(wire::json_to_sse(route, body, want.include_usage)?)
        }
        (ContentForm::Sse, true) => {
            Rendered::Events(wire::replay_sse(route, body, want.include_usage)?)
        }
    };
    if !want.annotate {
        return Ok(rendered);
    }
    let key_hex = key.map(|k| k.to_hex()).unwrap_or_default();
    Ok(match rendered {
        Rendered::Json(b) => Rendered::Json(wire::annotate_json(&b, cached, &key_hex)?),
        Rendered::Events(evs) => Rendered::Events(
            evs.iter()
                .map(|e| wire::annotate_sse_event(e, cached, &key_hex))
                .collect(),
        ),
    })
}

/// Everything the flight task needs to call upstream and store the answer.
#[derive(Debug)]
struct FlightPlan {
    route: Route,
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    store: Option<StorePlan>,
    /// The leader's status (`MISS` or `BYPASS`) and ledger, accounted when it ends.
    outcome: Outcome,
    ledger: Ledger,
}

#[derive(Debug)]
struct StorePlan {
    key: CacheKey,
    request_hash: RequestHash,
    strategy: String,
    family: Option<FamilyId>,
    namespace_tag: [u8; 8],
    /// The namespace is the caller's alone (`Cache-Control: private` may be stored).
    own_namespace: bool,
    ttl: Duration,
}

fn start_flight(
    state: &AppState,
    flight: Arc<Flight>,
    plan: Arc<FlightPlan>,
    registered: Option<CacheKey>,
) {
    let task_state = state.clone();
    state.tasks.spawn(async move {
        run_flight(&task_state, &flight, &plan).await;
        if let Some(key) = registered {
            task_state.flights.remove(&key, &flight);
        }
    });
}

/// Bound on one SSE event still being received; past it the stream is treated as cut.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// Reads one upstream response into the flight and stores it if it completed.
async fn run_flight(state: &AppState, flight: &Arc<Flight>, plan: &FlightPlan) {
    let metrics = &state.metrics;
    metrics.inflight_upstream.inc();
    let started = Instant::now();
    let sent = state
        .upstream
        .send(
            plan.method.clone(),
            &plan.path_and_query,
            plan.headers.clone(),
            reqwest::Body::from(plan.body.clone()),
        )
        .await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            metrics
                .upstream_errors
                .get_or_create(&CodeLabels {
                    code: e.metric_label(),
                })
                .inc();
            tracing::warn!(error = %e, route = plan.route.as_str(), "upstream call failed");
            let http_status = match &e {
                UpstreamError::Unreachable(_) => 502,
                UpstreamError::Timeout(_) => 504,
            };
            flight.end(End::NoResponse(match e {
                UpstreamError::Unreachable(m) => FailKind::Unreachable(m),
                UpstreamError::Timeout(d) => FailKind::Timeout(d),
            }));
            metrics.inflight_upstream.dec();
            state.account(
                &plan.ledger,
                Ending {
                    status: plan.outcome.as_str(),
                    http_status,
                    model: "",
                    usage: None,
                    source: Source::Upstream,
                },
            );
            return;
        }
    };
    let status = resp.status();
    metrics
        .upstream_duration
        .get_or_create(&RouteStatusLabels {
            route: plan.route.as_str(),
            status: status_class(status.as_u16()),
        })
        .observe(started.elapsed().as_secs_f64());
    if !status.is_success() {
        metrics
            .upstream_errors
            .get_or_create(&CodeLabels {
                code: error_code_label(status.as_u16()),
            })
            .inc();
    }
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let head_headers = end_to_end(resp.headers(), |_| false);
    let caching = UpstreamCaching::from_headers(resp.headers());
    flight.set_head(Head {
        status,
        headers: head_headers,
        is_sse,
    });

    let idle = state.upstream.timeout();
    let finish_timeout = state.config.cache.stream_finish_timeout;
    let mut orphaned_since: Option<Instant> = None;
    let mut body = resp.bytes_stream();
    let mut splitter = SseSplitter::new();
    let mut assembler = StreamAssembler::new(plan.route);
    let mut cut = false;
    loop {
        // Keep reading for callers that left (the response will be stored), but not
        // forever: at most `stream_finish_timeout` after the last one left.
        let mut wait = idle;
        if flight.readers() == 0 {
            let since = *orphaned_since.get_or_insert_with(Instant::now);
            let left = finish_timeout.saturating_sub(since.elapsed());
            if left.is_zero() {
                cut = true;
                break;
            }
            wait = wait.min(left);
        } else {
            orphaned_since = None;
        }
        match tokio::time::timeout(wait, body.next()).await {
            Err(_) => {
                metrics
                    .upstream_errors
                    .get_or_create(&CodeLabels { code: "timeout" })
                    .inc();
                cut = true;
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                metrics
                    .upstream_errors
                    .get_or_create(&CodeLabels { code: "cut_stream" })
                    .inc();
                let e = e.without_url();
                tracing::warn!(error = %crate::upstream::error_chain(&e), "upstream body cut");
                cut = true;
                break;
            }
            Ok(Some(Ok(chunk))) => {
                if is_sse {
                    for event in splitter.push_bytes(chunk) {
                        let kind = assembler.push(&event);
                        let chunk = Chunk {
                            bytes: event.raw.clone(),
                            usage_only: kind == EventKind::UsageOnly,
                        };
                        // The event that ends a stream reaches readers once the answer
                        // is stored (read-your-writes, see `finish_flight`).
                        if matches!(kind, EventKind::Done | EventKind::Completed) {
                            flight.push_held(chunk);
                        } else {
                            flight.push(chunk);
                        }
                    }
                    if splitter.pending_len() > MAX_EVENT_BYTES {
                        // No real event is this large: the upstream is not speaking SSE.
                        tracing::warn!(
                            pending = splitter.pending_len(),
                            "upstream SSE event exceeds the size limit; cutting the stream"
                        );
                        cut = true;
                        break;
                    }
                } else {
                    // Any chunk of a JSON body may be its last: each waits for the next.
                    flight.push_held(Chunk {
                        bytes: chunk,
                        usage_only: false,
                    });
                }
            }
        }
    }
    if is_sse && let Some(tail) = splitter.finish() {
        // A trailing event without its blank line: pass its bytes on so nothing the
        // upstream sent is lost; a cut one leaves the stream incomplete.
        if let SseTail::Complete(event) = &tail {
            assembler.push(event);
        }
        flight.push(Chunk {
            bytes: tail.raw().clone(),
            usage_only: false,
        });
    }
    metrics.inflight_upstream.dec();
    if cut {
        flight.end(End::Cut);
        state.account(
            &plan.ledger,
            Ending {
                status: plan.outcome.as_str(),
                http_status: status.as_u16(),
                model: "",
                usage: None,
                source: Source::Upstream,
            },
        );
        return;
    }
    let body = flight.body();
    let (complete, model, usage) = if !status.is_success() {
        (false, None, None)
    } else if is_sse {
        (
            assembler.is_complete(),
            assembler.model().map(str::to_string),
            assembler.usage(),
        )
    } else {
        let summary = wire::json_summary(plan.route, &body);
        (summary.complete, summary.model, summary.usage)
    };
    let model = model.unwrap_or_default();
    state.account(
        &plan.ledger,
        Ending {
            status: plan.outcome.as_str(),
            http_status: status.as_u16(),
            model: &model,
            usage,
            source: Source::Upstream,
        },
    );
    if complete && let Some(store) = &plan.store {
        if let Some(reason) = caching.refusal(store.own_namespace) {
            // The provider said not to keep (or share) this answer.
            metrics
                .store_skipped
                .get_or_create(&ReasonLabels { reason })
                .inc();
        } else {
            let form = if is_sse {
                ContentForm::Sse
            } else {
                ContentForm::Json
            };
            let entry = entry(plan.route, store, state.now_ms(), form, &model, usage, body);
            state.store_put(&store.key, &entry).await;
        }
    }
    // Only now do readers receive the held end of the body: whoever has read a whole
    // answer finds it stored, so the same caller's next request is a HIT rather than a
    // second upstream call or a COALESCED join of this flight. The cost is one store
    // write (bounded by `store.timeout`) before the last bytes.
    flight.finish(complete, usage, model);
}

/// The entry for a complete answer, stored at `now`.
fn entry(
    route: Route,
    store: &StorePlan,
    now: u64,
    form: ContentForm,
    model: &str,
    usage: Option<Usage>,
    body: Bytes,
) -> Entry {
    Entry {
        meta: EntryMeta {
            created_at_ms: now,
            expires_at_ms: now.saturating_add(store.ttl.as_millis() as u64),
            request_hash: store.request_hash,
            route,
            form,
            strategy: store.strategy.clone(),
            family: store.family,
            namespace_tag: store.namespace_tag,
            model: model.to_string(),
            usage: usage.unwrap_or_default(),
        },
        body,
    }
}

/// The response for the caller that leads a flight (or runs one of its own): upstream's
/// status and headers as they arrive, then the body chunk by chunk.
async fn respond_live(
    flight: Arc<Flight>,
    want: Want,
    outcome: Outcome,
    labels: &Labels,
) -> Result<Response, ApiError> {
    // Count as a reader from the start, so the flight task never sees an abandoned
    // response while this caller waits for the head.
    let reader = flight.reader();
    let head = match flight.head().await {
        Ok(head) => head,
        Err(End::NoResponse(FailKind::Timeout(d))) => return Err(ApiError::UpstreamTimeout(d)),
        Err(End::NoResponse(FailKind::Unreachable(m))) => {
            return Err(ApiError::UpstreamUnreachable(m));
        }
        Err(_) => {
            return Err(ApiError::UpstreamUnreachable(
                "upstream closed the connection before answering".into(),
            ));
        }
    };
    // Annotating a JSON body needs all of it; streams are annotated event by event.
    if want.annotate && !head.is_sse && head.status.is_success() {
        let end = flight.finished().await;
        if end == (End::Finished { complete: true }) {
            let body = flight.body();
            let annotated = wire::annotate_json(&body, false, &labels.key.to_hex()).unwrap_or(body);
            let mut resp = Rendered::Json(annotated).into_response(head.status, head.headers);
            set_cache_headers(resp.headers_mut(), outcome, labels);
            return Ok(resp);
        }
    }
    Ok(live_response(
        reader, head, want, outcome, labels, false, None,
    ))
}

fn live_response(
    reader: crate::flight::Reader,
    head: Head,
    want: Want,
    outcome: Outcome,
    labels: &Labels,
    cached: bool,
    on_finish: Option<OnFinish>,
) -> Response {
    let annotate_key = (want.annotate && head.is_sse).then(|| labels.key.to_hex());
    let is_sse = head.is_sse;
    let mut headers = head.headers;
    if is_sse {
        // Events may be dropped or annotated on the way: the length is not upstream's.
        headers.remove(header::CONTENT_LENGTH);
    }
    let stream = futures_util::stream::unfold(
        (reader, 0usize, false, on_finish),
        move |(reader, pos, done, mut on_finish)| {
            let annotate_key = annotate_key.clone();
            async move {
                if done {
                    return None;
                }
                match reader.flight().next(pos).await {
                    Next::Chunks(chunks) => {
                        let next = pos + chunks.len();
                        let mut out = Vec::new();
                        for c in chunks {
                            if c.usage_only && !want.include_usage {
                                continue;
                            }
                            let bytes = match &annotate_key {
                                Some(k) => wire::annotate_sse_event(&c.bytes, cached, k),
                                None => c.bytes,
                            };
                            out.push(bytes);
                        }
                        Some((Ok(coalesce(out)), (reader, next, false, on_finish)))
                    }
                    Next::End(End::Finished { complete }) => {
                        if let Some(f) = on_finish.take()
                            && complete
                        {
                            f(reader.flight());
                        }
                        None
                    }
                    Next::End(_) => Some((
                        Err(std::io::Error::other("upstream response was cut")),
                        (reader, pos, true, None),
                    )),
                }
            }
        },
    )
    .flat_map(|item| {
        futures_util::stream::iter(match item {
            Ok(pieces) => pieces.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    })
    .filter(|item| {
        // Skip empty writes (every event of a batch was dropped).
        let keep = !matches!(item, Ok(b) if b.is_empty());
        std::future::ready(keep)
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = head.status;
    *resp.headers_mut() = headers;
    set_cache_headers(resp.headers_mut(), outcome, labels);
    resp
}

/// Below this, a batch of chunks is copied into one write (many small SSE events);
/// above it, chunks are written as they are, so large bodies are never copied.
const COALESCE_BYTES: usize = 16 * 1024;

/// The writes for a batch of chunks a reader found at once.
fn coalesce(mut pieces: Vec<Bytes>) -> Vec<Bytes> {
    let total: usize = pieces.iter().map(Bytes::len).sum();
    if pieces.len() > 1 && total <= COALESCE_BYTES {
        let mut one = Vec::with_capacity(total);
        for p in pieces.drain(..) {
            one.extend_from_slice(&p);
        }
        pieces.push(Bytes::from(one));
    }
    pieces
}

/// Called when a live response's flight finished complete (a follower's accounting).
type OnFinish = Box<dyn FnOnce(&Flight) + Send>;

/// A request identical to one in flight: answered from that flight. `None` when the
/// flight failed before it could help, or its answer may not be shared with this caller
/// (upstream `Cache-Control: no-store`, or `private` outside the caller's own
/// namespace), and the caller then calls upstream itself.
async fn follow(
    state: &AppState,
    flight: &Arc<Flight>,
    route: Route,
    want: Want,
    labels: &Labels,
    ledger: &Ledger,
    own_namespace: bool,
) -> Option<Response> {
    let bound = state.upstream.timeout();
    // A follower is accounted as served from the cache once the shared response ends.
    let account = {
        let state = state.clone();
        let ledger = ledger.clone();
        move |flight: &Flight| {
            let (usage, model) = flight.summary().unwrap_or_default();
            state.account(
                &ledger,
                Ending {
                    status: Outcome::Coalesced.as_str(),
                    http_status: 200,
                    model: &model,
                    usage,
                    source: Source::Cache,
                },
            );
        }
    };
    let reader = flight.reader();
    let head = tokio::time::timeout(bound, flight.head())
        .await
        .ok()?
        .ok()?;
    if !head.status.is_success() {
        return None;
    }
    if UpstreamCaching::from_headers(&head.headers)
        .refusal(own_namespace)
        .is_some()
    {
        return None;
    }
    // Live only when the caller wants the form upstream is sending, and the body needs
    // no whole-body rewrite (annotating a JSON body).
    let live = head.is_sse == want.stream && (head.is_sse || !want.annotate);
    if live {
        return Some(live_response(
            reader,
            head,
            want,
            Outcome::Coalesced,
            labels,
            true,
            Some(Box::new(account)),
        ));
    }
    let end = tokio::time::timeout(bound, flight.finished()).await.ok()?;
    if end != (End::Finished { complete: true }) {
        return None;
    }
    let form = if head.is_sse {
        ContentForm::Sse
    } else {
        ContentForm::Json
    };
    let rendered = render(route, form, &flight.body(), want, Some(&labels.key), true).ok()?;
    let mut resp = rendered.into_response(StatusCode::OK, HeaderMap::new());
    set_cache_headers(resp.headers_mut(), Outcome::Coalesced, labels);
    account(flight);
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_have_contract_names() {
        assert_eq!(Outcome::Hit.header(), "HIT");
        assert_eq!(Outcome::Coalesced.header(), "COALESCED");
        let bypass = Outcome::Bypass(BypassReason::DuplicateKeys);
        assert_eq!(bypass.as_str(), "bypass");
        assert_eq!(bypass.header(), "BYPASS");
        assert_eq!(
            BypassReason::ServerState(ServerState::Conversation).as_str(),
            "conversation"
        );
    }

    #[test]
    fn non_objects_are_rejected() {
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{").is_err());
        assert!(parse_object(b"{}").is_ok());
    }
}
