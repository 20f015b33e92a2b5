//! The cached routes (`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`): analyse the body (parse the members the proxy reads, pick the
//! strategy, derive the family and the key), answer from the store, join an identical
//! request in flight, or prepare the forwarded bytes (dropping the parsed tree), forward
//! upstream and store the result.

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
use prefixcache_core::key::{
    CacheKey, FamilyId, KeyInput, Keys, Namespace, RequestHash, compute_keys, hex,
};
use prefixcache_core::prefix::{Family, FamilyParams, derived_prompt_cache_key};
use prefixcache_core::route::Route;
use prefixcache_core::sse::{EventKind, SseSplitter, SseTail, StreamAssembler};
use prefixcache_core::usage::Usage;
use prefixcache_core::wire::{self, Injections, ServerState};
use prefixcache_store::{ContentForm, Entry, EntryMeta};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::accounting::{Ending, Ledger, PromptCacheKeySource, Source, StaticPart};
use crate::admission::{AdmittedBody, hold};
use crate::breakpoints::{PlaceInput, Placement};
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
    /// The members the proxy reads would not fit the request tree's memory budget
    /// (many thousands of tiny values): forwarded without a family, never cached.
    TooComplex,
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
            BypassReason::TooComplex => "body_too_complex",
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
    // Held until the response body has been sent; with none free, 503 at once.
    let slot = match state.admission.request() {
        Ok(slot) => slot,
        Err(e) => return e.into_response(),
    };
    let Some(route) = Route::from_path(req.uri().path()) else {
        // The router only sends cached paths here.
        return hold(crate::passthrough::relay(&state, req).await, slot);
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
    hold(resp, slot)
}

async fn handle_inner(
    state: &AppState,
    route: Route,
    req: Request,
    started: Instant,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let raw = state
        .admission
        .read_body(body, &parts.headers, state.config.max_body_bytes)
        .await?;
    let directives = CacheDirectives::from_headers(&parts.headers)?;
    let caller = state.tenancy.caller(&parts.headers, parts.uri.query());
    let namespace = caller.namespace;
    let line = RequestLine {
        method: parts.method.as_str().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        strategy: directives.strategy.clone(),
    };
    let Analysis {
        strategy: strategy_index,
        flags,
        family,
        keys,
        body_bypass,
        tree,
    } = off_worker(state, raw.bytes().len(), {
        let (state, raw) = (state.clone(), raw.clone());
        move || analyse(&state, route, raw.bytes(), &line, &namespace)
    })
    .await?;
    let strategy = &state.config.strategies[strategy_index];
    ctx.strategy = state.strategy_label(&strategy.name);
    ctx.key = Some(keys.key);
    let family_id = family.as_ref().map(|f| f.id);

    let ttl = strategy.effective_ttl(directives.ttl);
    let sampled_skip = flags.sampled && !strategy.cache_sampled;
    let bypass = if let Some(reason) = body_bypass {
        Some(reason)
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
        static_part: StaticPart::Unknown,
        prompt_cache_key: PromptCacheKeySource::None,
        breakpoint: crate::breakpoints::BreakpointNote::default(),
    };

    if lookup && let Some(entry) = state.store_get(&keys.key).await {
        if entry.meta.request_hash == keys.request_hash && entry.meta.route == route {
            match render(
                state,
                route,
                entry.meta.form,
                &entry.body,
                want,
                Some(&keys.key),
                true,
            )
            .await
            {
                Ok(rendered) => {
                    ctx.outcome = Some(Outcome::Hit);
                    labels.warning = family
                        .as_ref()
                        .and_then(|f| state.lint_request(strategy, f, &namespace, false));
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

    labels.warning = family
        .as_ref()
        .and_then(|f| state.lint_request(strategy, f, &namespace, true));
    // What forwarding and accounting need from the tree is taken now (the provider's
    // prompt-cache key and breakpoint, the prompt's static part); the tree is dropped
    // before the upstream round trip, which may last minutes.
    let forward = Forward {
        route,
        strategy: strategy_index,
        namespace,
        family: family_id,
        model: flags.model,
        has_prompt_cache_key: flags.has_prompt_cache_key,
        stream: want.stream,
        splice: bypass != Some(BypassReason::DuplicateKeys),
        complete: body_bypass != Some(BypassReason::TooComplex),
    };
    let Prepared {
        upstream,
        prompt_cache_key,
        static_part,
        placement,
    } = off_worker(state, raw.bytes().len(), {
        let (state, raw) = (state.clone(), raw.clone());
        move || prepare(&state, &forward, tree, &raw)
    })
    .await?;
    drop(raw);
    labels.breakpoint = placement.header();
    ledger.prompt_cache_key = prompt_cache_key;
    ledger.static_part = static_part;
    ledger.breakpoint = placement.note();
    if let Some(plan) = placement.plan {
        state.metrics.breakpoint_decision(plan.decision.as_str());
    }
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
        store: store_allowed.then(|| StorePlan {
            key: keys.key,
            request_hash: keys.request_hash,
            strategy: strategy.name.clone(),
            family: family_id,
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
                start_flight(state, flight.clone(), plan, upstream, Some(flight_key));
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
    start_flight(state, flight.clone(), plan, upstream, registered);
    ctx.outcome = Some(outcome);
    respond_live(flight, want, outcome, &labels).await
}

/// Bodies up to this size are analysed on the async worker: parsing, keying and the
/// family take well under a millisecond there (`docs/BENCHMARKS.md`, "Large request
/// bodies"). Larger ones go to the blocking pool, so a 32 MiB body never stalls the
/// other requests of a worker.
const INLINE_BODY_BYTES: usize = 64 * 1024;

/// Runs `f` here for a small body, on the blocking pool (owned by the state's task
/// tracker) for a large one.
async fn off_worker<T: Send + 'static>(
    state: &AppState,
    body_len: usize,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if body_len <= INLINE_BODY_BYTES {
        return f();
    }
    match state.tasks.spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            // A bug in the analysis: fail this request as it would have inline.
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only at runtime shutdown.
            Err(_) => Err(ApiError::ShuttingDown),
        },
    }
}

/// The parts of the request line and headers the analysis needs.
struct RequestLine {
    method: String,
    query: String,
    /// `x-prefixcache-strategy`.
    strategy: Option<String>,
}

/// The flags of a request, owned (they outlive the tree they were read from).
#[derive(Debug, Clone)]
struct Flags {
    stream: bool,
    include_usage: bool,
    sampled: bool,
    model: String,
    has_prompt_cache_key: bool,
}

/// What a request is, read from its body.
struct Analysis {
    /// Index of the strategy in `config.strategies`.
    strategy: usize,
    flags: Flags,
    /// `None` when the tree was over its budget.
    family: Option<Family>,
    keys: Keys,
    /// A reason in the body itself never to cache it.
    body_bypass: Option<BypassReason>,
    /// Kept until the request is prepared for forwarding, then dropped.
    tree: Map<String, Value>,
}

/// Parses the members the proxy reads, picks the strategy, and derives the family and
/// the keys (from the raw bytes: member order, exact numbers and duplicate keys are
/// only visible there).
fn analyse(
    state: &AppState,
    route: Route,
    raw: &Bytes,
    line: &RequestLine,
    namespace: &Namespace,
) -> Result<Analysis, ApiError> {
    let parsed =
        wire::parse_request(route, raw, state.tree_limits(raw.len())).map_err(invalid_json)?;
    let f = wire::request_flags(route, &parsed.body);
    let model = f.model.unwrap_or("");
    let strategy = state
        .config
        .strategy_for(line.strategy.as_deref(), model, route.path())
        .map_err(|message| ApiError::BadHeader {
            header: "x-prefixcache-strategy",
            message,
        })?;
    let index = state
        .config
        .strategies
        .iter()
        .position(|s| std::ptr::eq(s, strategy))
        .unwrap_or(state.config.strategies.len() - 1);
    let family = parsed.complete.then(|| {
        state.families.family(
            route,
            &parsed.body,
            &FamilyParams::for_strategy(strategy, model),
        )
    });
    let canonical = canonicalize(route, raw, strategy.normalize_whitespace)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let keys = compute_keys(&KeyInput {
        namespace,
        strategy: &strategy.name,
        method: &line.method,
        route,
        query: &line.query,
        body: &canonical,
        // Without a family (a tree over budget) the request is never looked up or
        // stored; its exact key only labels it.
        key_mode: if family.is_some() {
            strategy.key_mode
        } else {
            KeyMode::Exact
        },
        family: family.as_ref().map(|f| &f.id),
    })
    .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let body_bypass = if canonical.has_duplicate_keys() {
        Some(BypassReason::DuplicateKeys)
    } else if !parsed.complete {
        Some(BypassReason::TooComplex)
    } else {
        f.server_state.map(BypassReason::ServerState)
    };
    let flags = Flags {
        stream: f.stream,
        include_usage: f.include_usage,
        sampled: f.sampled,
        model: model.to_owned(),
        has_prompt_cache_key: f.has_prompt_cache_key,
    };
    Ok(Analysis {
        strategy: index,
        flags,
        family,
        keys,
        body_bypass,
        tree: parsed.body,
    })
}

fn invalid_json(e: wire::WireError) -> ApiError {
    match e {
        wire::WireError::NotAnObject => {
            ApiError::InvalidJson("request body must be a JSON object".into())
        }
        e => ApiError::InvalidJson(format!(
            "request body is not valid JSON ({e}); send the request as JSON with Content-Type: application/json"
        )),
    }
}

/// What [`prepare`] needs besides the tree and the body.
struct Forward {
    route: Route,
    strategy: usize,
    namespace: Namespace,
    family: Option<FamilyId>,
    model: String,
    has_prompt_cache_key: bool,
    stream: bool,
    /// Splices allowed (not for a body with duplicate keys).
    splice: bool,
    /// The tree holds every member the proxy reads.
    complete: bool,
}

/// A missed request, ready to forward.
struct Prepared {
    /// The caller's bytes with the documented splices, under the body's admission.
    upstream: AdmittedBody,
    prompt_cache_key: PromptCacheKeySource,
    static_part: StaticPart,
    /// The provider's prompt cache: the key policy and the breakpoint placed.
    placement: Placement,
}

/// Places the provider's prompt-cache key and breakpoint (`breakpoints.rs`), splices
/// them and `include_usage` into the caller's bytes, and measures what accounting will
/// need of the prompt; consumes the tree.
fn prepare(
    state: &AppState,
    f: &Forward,
    tree: Map<String, Value>,
    raw: &AdmittedBody,
) -> Result<Prepared, ApiError> {
    let strategy = &state.config.strategies[f.strategy];
    let placement = match (&f.family, f.splice && f.complete) {
        (Some(family), true) => state.breakpoints.place(
            &PlaceInput {
                strategy,
                route: f.route,
                body: &tree,
                model: &f.model,
                namespace: &f.namespace,
                family,
                now_ms: state.now_ms(),
            },
            &state.prices,
        ),
        // Duplicate keys: the bytes go as sent. A tree over budget: nothing to learn from.
        _ => Placement::default(),
    };
    let derived = match placement.key_mode {
        // A caller's own key is never overwritten.
        Some(mode) if !f.has_prompt_cache_key => {
            derived_prompt_cache_key(mode, f.route, &tree, f.family.as_ref())
        }
        _ => None,
    };
    let injections = if f.splice {
        Injections {
            include_usage: f.stream,
            prompt_cache_key: derived.as_deref(),
            breakpoint: placement.breakpoint,
        }
    } else {
        // Which of two equal keys counts is the provider's reading; the bytes go as sent.
        Injections::default()
    };
    let upstream = wire::prepare_upstream_body(raw.bytes(), f.route, &injections)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let static_part = if f.complete {
        state.static_part(f.route, &tree, &f.model, raw.bytes().len(), f.family)
    } else {
        StaticPart::Unknown
    };
    Ok(Prepared {
        upstream: raw.derived(upstream),
        prompt_cache_key: PromptCacheKeySource::of(
            f.has_prompt_cache_key,
            derived.is_some(),
            placement.key_mode.unwrap_or(strategy.prompt_cache_key),
        ),
        static_part,
        placement,
    })
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
    /// Events rendered on the blocking pool as the client takes them.
    Stream(mpsc::Receiver<Bytes>),
}

impl Rendered {
    fn into_response(self, status: StatusCode, mut headers: HeaderMap) -> Response {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_TYPE);
        let sse = HeaderValue::from_static("text/event-stream; charset=utf-8");
        let (content_type, body) = match self {
            Rendered::Json(b) => (HeaderValue::from_static("application/json"), Body::from(b)),
            Rendered::Events(events) => (
                sse,
                Body::from_stream(futures_util::stream::iter(
                    events.into_iter().map(Ok::<_, std::convert::Infallible>),
                )),
            ),
            Rendered::Stream(mut rx) => (
                sse,
                Body::from_stream(
                    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
                        .map(Ok::<_, std::convert::Infallible>),
                ),
            ),
        };
        headers.insert(header::CONTENT_TYPE, content_type);
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// Bodies above this are rendered on the blocking pool, and a JSON body rendered as
/// SSE is handed out event by event as the client reads (its events are about seven
/// times its size). Below it, rendering takes well under a millisecond.
const LARGE_ENTRY_BYTES: usize = 256 * 1024;
/// Events rendered ahead of a slow reader.
const RENDER_AHEAD: usize = 64;

/// Renders a complete body (stored entry or finished flight) in the form the caller
/// wants, whatever form it was received in.
async fn render(
    state: &AppState,
    route: Route,
    form: ContentForm,
    body: &Bytes,
    want: Want,
    key: Option<&CacheKey>,
    cached: bool,
) -> Result<Rendered, wire::WireError> {
    let key_hex = want
        .annotate
        .then(|| key.map(|k| k.to_hex()).unwrap_or_default());
    if body.len() <= LARGE_ENTRY_BYTES {
        return render_now(route, form, body, want, key_hex.as_deref(), cached);
    }
    let body = body.clone();
    if form == ContentForm::Json && want.stream {
        let (tx, rx) = mpsc::channel(RENDER_AHEAD);
        let (checked, check) = oneshot::channel();
        state.tasks.spawn_blocking(move || {
            let rendering = match wire::SseRendering::new(route, &body, want.include_usage) {
                Ok(r) => r,
                Err(e) => {
                    let _ = checked.send(Err(e));
                    return;
                }
            };
            let _ = checked.send(Ok(()));
            // Stops when the client is gone (the receiver is dropped).
            let _ = rendering.render(&mut |event| {
                let event = match &key_hex {
                    Some(k) => wire::annotate_sse_event(&event, cached, k),
                    None => event,
                };
                tx.blocking_send(event).is_ok()
            });
        });
        return match check.await {
            Ok(Ok(())) => Ok(Rendered::Stream(rx)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(wire::WireError::Shape("the renderer stopped")),
        };
    }
    let rendered = state
        .tasks
        .spawn_blocking(move || render_now(route, form, &body, want, key_hex.as_deref(), cached))
        .await;
    match rendered {
        Ok(r) => r,
        Err(_) => Err(wire::WireError::Shape("the renderer stopped")),
    }
}

/// [`render`], all at once.
fn render_now(
    route: Route,
    form: ContentForm,
    body: &Bytes,
    want: Want,
    key_hex: Option<&str>,
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
    let Some(key_hex) = key_hex else {
        return Ok(rendered);
    };
    Ok(match rendered {
        Rendered::Json(b) => Rendered::Json(wire::annotate_json(&b, cached, key_hex)?),
        Rendered::Events(evs) => Rendered::Events(
            evs.iter()
                .map(|e| wire::annotate_sse_event(e, cached, key_hex))
                .collect(),
        ),
        stream @ Rendered::Stream(_) => stream,
    })
}

/// Everything the flight task needs to call upstream and store the answer.
#[derive(Debug)]
struct FlightPlan {
    route: Route,
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
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
    body: AdmittedBody,
    registered: Option<CacheKey>,
) {
    let task_state = state.clone();
    state.tasks.spawn(async move {
        run_flight(&task_state, &flight, &plan, body, registered).await;
        if let Some(key) = registered {
            task_state.flights.remove(&key, &flight);
        }
    });
}

/// Bound on one SSE event still being received; past it the stream is treated as cut.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// An oversized response is read upstream at most this far ahead of its slowest reader.
const OVERSIZED_AHEAD_BYTES: usize = 1 << 20;

/// Reads one upstream response into the flight and stores it if it completed.
/// `registered` is the key the flight may be joined under.
async fn run_flight(
    state: &AppState,
    flight: &Arc<Flight>,
    plan: &FlightPlan,
    body: AdmittedBody,
    registered: Option<CacheKey>,
) {
    let metrics = &state.metrics;
    metrics.inflight_upstream.inc();
    let started = Instant::now();
    let sent = state
        .upstream
        .send(
            plan.method.clone(),
            &plan.path_and_query,
            plan.headers.clone(),
            reqwest::Body::from(body.bytes().clone()),
        )
        .await;
    // Sent: the body's bytes leave the budget (the request log keeps its own copy).
    drop(body);
    let max_response =
        usize::try_from(state.config.limits.max_response_bytes).unwrap_or(usize::MAX);
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
                if !flight.is_oversized() && flight.buffered() + chunk.len() > max_response {
                    // Too large to keep: streamed through, neither stored nor shared.
                    metrics.oversized_responses.inc();
                    flight.set_oversized();
                    if let Some(key) = registered {
                        state.flights.remove(&key, flight);
                    }
                }
                if flight.is_oversized() && !flight.room(OVERSIZED_AHEAD_BYTES).await {
                    // Every reader left, and nothing will be stored.
                    cut = true;
                    break;
                }
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
    // An oversized body's start is gone: it is not stored, and a JSON body's usage is
    // unknown (a stream's was read event by event).
    let oversized = flight.is_oversized();
    let body = if oversized {
        Bytes::new()
    } else {
        flight.body()
    };
    let (complete, model, usage) = if !status.is_success() {
        (false, None, None)
    } else if is_sse {
        (
            assembler.is_complete() && !oversized,
            assembler.model().map(str::to_string),
            assembler.usage(),
        )
    } else if oversized {
        (false, None, None)
    } else {
        let summary = json_summary(state, plan.route, &body).await;
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

/// Usage, model and completeness of a JSON response; a large one is parsed on the
/// blocking pool.
async fn json_summary(state: &AppState, route: Route, body: &Bytes) -> wire::JsonSummary {
    if body.len() <= LARGE_ENTRY_BYTES {
        return wire::json_summary(route, body);
    }
    let body = body.clone();
    state
        .tasks
        .spawn_blocking(move || wire::json_summary(route, &body))
        .await
        .unwrap_or_default()
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
    // Annotating a JSON body needs all of it; streams are annotated event by event. An
    // oversized body is not held whole: it goes out as it comes, unannotated.
    if want.annotate && !head.is_sse && head.status.is_success() {
        let end = flight.finished_whole().await;
        if end == Some(End::Finished { complete: true }) {
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
        (reader, false, on_finish),
        move |(mut reader, done, mut on_finish)| {
            let annotate_key = annotate_key.clone();
            async move {
                if done {
                    return None;
                }
                match reader.next().await {
                    Next::Chunks(chunks) => {
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
                        Some((Ok(coalesce(out)), (reader, false, on_finish)))
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
                        (reader, true, None),
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
    // An oversized response is not shared: its start may be gone already.
    if !head.status.is_success() || flight.is_oversized() {
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
    // Not an oversized one: it will not end complete, and waiting would hold it whole.
    let end = tokio::time::timeout(bound, flight.finished_whole())
        .await
        .ok()??;
    if end != (End::Finished { complete: true }) {
        return None;
    }
    let form = if head.is_sse {
        ContentForm::Sse
    } else {
        ContentForm::Json
    };
    let rendered = render(
        state,
        route,
        form,
        &flight.body(),
        want,
        Some(&labels.key),
        true,
    )
    .await
    .ok()?;
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
}
