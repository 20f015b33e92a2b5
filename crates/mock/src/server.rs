//! The mock as an HTTP service: shared state ([`Mock`]), the router ([`app`]), and running
//! it on a socket with graceful shutdown ([`serve`], [`spawn_local`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cache_options::{CacheRequest, cache_request};
use crate::chat::{self, ChatPlan, PrepareCtx};
use crate::completions::{self, CompletionsPlan};
use crate::config::{Latency, MockConfig};
use crate::control::Control;
use crate::error::ApiError;
use crate::gate::Gates;
use crate::plan::{self, Special};
use crate::prompt::{Mark, PromptInfo};
use crate::prompt_cache::{BreakpointMode, CachePolicy, PromptCacheSim};
use crate::responses::{self, ResponsesPlan};
use crate::rng::{SplitMix64, alnum, mix64};
use crate::sse::{self, Pacing, StreamGate};
use crate::stats::{Counters, MockRoute, RecordedRequest, Stats};
use crate::{embeddings, messages, models};
use prefixcache_core::provider::anthropic::{
    AnthropicCacheSim, CacheUse as AnthropicCacheUse, MessagesPrompt,
};

/// Largest request body accepted (the proxy's own default limit is 32 MiB).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Prepared answers larger than this are not remembered (big embedding batches).
const MAX_REMEMBERED_PLAN_BYTES: usize = 1024 * 1024;

/// The mock's shared state: configuration, counters, the prompt-cache simulation and the
/// memo of prepared answers.
#[derive(Debug)]
pub struct Mock {
    config: MockConfig,
    counters: Counters,
    sim: Mutex<PromptCacheSim>,
    /// Anthropic's prompt cache (the Messages route).
    anthropic: Mutex<AnthropicCacheSim>,
    plans: Mutex<PlanMemo>,
    /// Latency samples drawn so far: sample `i` depends only on the seed and `i`.
    latency_draws: AtomicU64,
    ids: AtomicU64,
    id_salt: u64,
    shutdown: CancellationToken,
    /// Where tests hold responses (`x-mock-head-gate`, `x-mock-stream-gate`).
    gates: Arc<Gates>,
}

/// Everything known about an answer before the request-specific parts.
#[derive(Debug)]
pub(crate) struct Plan {
    model: String,
    special: Special,
    stream: bool,
    include_usage: bool,
    policy: CachePolicy,
    prompts: Vec<PromptInfo>,
    prompt_tokens: u64,
    kind: Kind,
    weight: usize,
}

#[derive(Debug)]
enum Kind {
    /// Error and timeout models: nothing to generate.
    Empty,
    Chat(ChatPlan),
    Completions(CompletionsPlan),
    Embeddings(Bytes),
    Responses(Box<ResponsesPlan>),
}

/// A bounded FIFO memo of plans by (route, body hash).
#[derive(Debug, Default)]
struct PlanMemo {
    map: HashMap<[u8; 32], Arc<Plan>>,
    order: VecDeque<[u8; 32]>,
}

impl Mock {
    pub fn new(config: MockConfig) -> Mock {
        // Loading a vocabulary takes tens of milliseconds: do it now, not on a request.
        prefixcache_core::tokenizer::Encoding::O200kBase.preload();
        prefixcache_core::tokenizer::Encoding::Cl100kBase.preload();
        let sim = PromptCacheSim::new(config.prompt_cache.clone(), config.seed);
        let id_salt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let anthropic =
            AnthropicCacheSim::new(config.prompt_cache.enabled, config.prompt_cache.lru_entries);
        Mock {
            counters: Counters::new(config.record_requests),
            sim: Mutex::new(sim),
            anthropic: Mutex::new(anthropic),
            plans: Mutex::default(),
            latency_draws: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            id_salt,
            shutdown: CancellationToken::new(),
            gates: Arc::default(),
            config,
        }
    }

    pub fn config(&self) -> &MockConfig {
        &self.config
    }

    /// The counters now (`prompt_cache` sums the OpenAI and the Anthropic caches).
    pub fn stats(&self) -> Stats {
        let mut pc = self.sim.lock().unwrap_or_else(|p| p.into_inner()).stats();
        let a = self
            .anthropic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats();
        pc.lookups += a.lookups;
        pc.hits += a.hits;
        pc.prompt_tokens += a.prompt_tokens;
        pc.cached_tokens += a.cached_tokens;
        pc.cache_write_tokens += a.cache_write_tokens;
        self.counters.snapshot(pc)
    }

    /// The gates tests hold responses at (see `docs/mock-upstream.md`, "Test controls").
    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    /// Zeroes the counters, forgets recorded requests and gates (releasing what they
    /// hold) and empties the simulated caches.
    pub fn reset(&self) {
        self.counters.reset();
        self.gates.reset();
        self.sim.lock().unwrap_or_else(|p| p.into_inner()).reset();
        self.anthropic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
    }

    /// The recorded requests of a route, oldest first.
    pub fn requests(&self, route: MockRoute) -> Vec<Arc<RecordedRequest>> {
        self.counters.requests(route)
    }

    /// The last request received on a route.
    pub fn last_request(&self, route: MockRoute) -> Option<Arc<RecordedRequest>> {
        self.requests(route).pop()
    }

    /// Releases requests that wait forever (`mock-timeout`), so shutdown can finish.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.gates.open_all();
    }

    /// Waits at a head gate, or until the mock shuts down.
    async fn hold_head(&self, gate: &str) {
        tokio::select! {
            _ = self.gates.wait(gate) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    pub(crate) fn next_id(&self, prefix: &str, len: usize) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(self.id_salt ^ mix64(n));
        format!("{prefix}{}", alnum(&mut rng, len))
    }

    /// Anthropic's request ids: `req_011C` and 20 letters and digits.
    pub(crate) fn request_id_anthropic(&self) -> String {
        self.next_id("req_011C", 20)
    }

    pub(crate) fn count_model(&self, model: &str) {
        self.counters.model(model);
    }

    pub(crate) fn count_stream(&self) {
        self.counters.stream();
    }

    /// Resolves when the mock begins to shut down (`mock-timeout` waits for it).
    pub(crate) async fn shutting_down(&self) {
        self.shutdown.cancelled().await;
    }

    /// Serves a Messages prompt from the simulated Anthropic cache at the clock's time.
    pub(crate) fn serve_anthropic(&self, prompt: &MessagesPrompt, scope: u64) -> AnthropicCacheUse {
        let now = self.config.clock.now_ms();
        self.anthropic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .serve(prompt, scope, now)
    }

    fn request_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(self.id_salt ^ mix64(n));
        format!("req_{:016x}{:016x}", rng.next_u64(), rng.next_u64())
    }

    /// The next latency draw of the configured distribution: draw `i` depends only on the
    /// seed and `i`, so a sequential run is reproducible.
    pub fn sample_latency(&self) -> Duration {
        self.draw(self.config.latency)
    }

    pub(crate) fn latency_for(&self, headers: &HeaderMap) -> Duration {
        let spec = headers
            .get("x-mock-latency")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Latency>().ok())
            .unwrap_or(self.config.latency);
        self.draw(spec)
    }

    fn draw(&self, spec: Latency) -> Duration {
        if spec == Latency::Zero {
            return Duration::ZERO;
        }
        let i = self.latency_draws.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(self.config.seed ^ mix64(i.wrapping_add(0x1A7E)));
        spec.sample(rng.unit(), rng.unit())
    }

    pub(crate) fn chunk_delay_for(&self, headers: &HeaderMap) -> Duration {
        headers
            .get("x-mock-chunk-delay")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| crate::config::parse_duration(s).ok())
            .unwrap_or(self.config.chunk_delay)
    }

    /// The plan for a body, from the memo or freshly prepared.
    fn plan(&self, route: MockRoute, body: &Bytes) -> Result<Arc<Plan>, ApiError> {
        let cap = self.config.plan_cache_entries;
        let key = {
            let mut h = blake3::Hasher::new();
            h.update(route.as_str().as_bytes());
            h.update(&[0]);
            h.update(body);
            *h.finalize().as_bytes()
        };
        if cap > 0
            && let Some(p) = self
                .plans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map
                .get(&key)
        {
            return Ok(p.clone());
        }
        let plan = Arc::new(self.prepare(route, body)?);
        if cap > 0 && plan.weight <= MAX_REMEMBERED_PLAN_BYTES {
            let mut memo = self.plans.lock().unwrap_or_else(|p| p.into_inner());
            if memo.map.insert(key, plan.clone()).is_none() {
                memo.order.push_back(key);
            }
            while memo.order.len() > cap {
                if let Some(old) = memo.order.pop_front() {
                    memo.map.remove(&old);
                }
            }
        }
        Ok(plan)
    }

    fn prepare(&self, route: MockRoute, body: &Bytes) -> Result<Plan, ApiError> {
        let map = plan::parse_object(body)?;
        let model = plan::model(&map)?;
        let special = Special::from_model(&model);
        let stream =
            route != MockRoute::Embeddings && plan::bool_field(&map, "stream")?.unwrap_or(false);
        let include_usage = plan::include_usage(&map);
        let CacheRequest {
            key: cache_key,
            policy,
        } = cache_request(route, &model, &map)?;
        let mut plan = Plan {
            model,
            special,
            stream,
            include_usage,
            policy,
            prompts: Vec::new(),
            prompt_tokens: 0,
            kind: Kind::Empty,
            weight: body.len(),
        };
        if matches!(special, Special::Error(_) | Special::Timeout) {
            return Ok(plan);
        }
        let ctx = PrepareCtx {
            seed: self.config.seed,
            output_tokens: self.config.output_tokens.clone(),
        };
        let pc = &self.config.prompt_cache;
        let info = |tokens: &[u32], marks: &[Mark]| {
            PromptInfo::with_marks(
                tokens,
                marks,
                pc.step_tokens,
                pc.route_tokens,
                cache_key.as_deref(),
            )
        };
        match route {
            MockRoute::ChatCompletions => {
                let (seq, p) = chat::prepare(&map, &plan.model, &ctx)?;
                plan.prompts.push(info(&seq.tokens, &seq.marks));
                plan.kind = Kind::Chat(p);
            }
            MockRoute::Completions => {
                let (prompts, p) = completions::prepare(&map, &plan.model, &ctx)?;
                plan.prompts = prompts.iter().map(|t| info(t, &[])).collect();
                plan.kind = Kind::Completions(p);
            }
            MockRoute::Responses => {
                let (seq, p) = responses::prepare(&map, &plan.model, &ctx)?;
                plan.prompts.push(info(&seq.tokens, &seq.marks));
                plan.kind = Kind::Responses(Box::new(p));
            }
            MockRoute::Embeddings => {
                let bytes = embeddings::prepare(&map, &plan.model, self.config.seed)?;
                plan.weight += bytes.len();
                plan.kind = Kind::Embeddings(bytes);
            }
            MockRoute::Models | MockRoute::Messages | MockRoute::CountTokens | MockRoute::Other => {
            }
        }
        plan.prompt_tokens = plan.prompts.iter().map(|p| p.tokens).sum();
        Ok(plan)
    }
}

/// The router: the API routes, `/mock/*` introspection, and OpenAI's 404 for the rest.
pub fn app(mock: Arc<Mock>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(legacy_completions))
        .route("/v1/embeddings", post(embeddings_route))
        .route("/v1/responses", post(responses_route))
        .route("/v1/models", get(models_list))
        .route("/v1/models/{id}", get(models_get))
        .route("/v1/messages", post(messages_route))
        .route("/v1/messages/count_tokens", post(count_tokens_route))
        .route("/mock/stats", get(stats_route))
        .route("/mock/reset", post(reset_route))
        .route("/mock/requests", get(requests_route))
        .route("/mock/gates", get(gates_route))
        .route("/mock/gates/{name}/open", post(open_gate_route))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(mock)
}

async fn chat_completions(
    s: State<Arc<Mock>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    handle(s.0, MockRoute::ChatCompletions, m, u, h, b).await
}

async fn legacy_completions(
    s: State<Arc<Mock>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    handle(s.0, MockRoute::Completions, m, u, h, b).await
}

async fn embeddings_route(
    s: State<Arc<Mock>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    handle(s.0, MockRoute::Embeddings, m, u, h, b).await
}

async fn responses_route(
    s: State<Arc<Mock>>,
    m: Method,
    u: Uri,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    handle(s.0, MockRoute::Responses, m, u, h, b).await
}

/// `POST /v1/messages`: Anthropic's Messages API (`messages.rs`).
async fn messages_route(
    State(mock): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let in_flight = mock.counters.begin(MockRoute::Messages);
    mock.counters.record(
        MockRoute::Messages,
        method.as_str(),
        &uri.to_string(),
        &headers,
        &body,
    );
    let resp = messages::answer(&mock, &headers, &body, in_flight).await;
    mock.counters.status(resp.status().as_u16());
    resp
}

/// `POST /v1/messages/count_tokens`.
async fn count_tokens_route(
    State(mock): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = mock.counters.begin(MockRoute::CountTokens);
    mock.counters.record(
        MockRoute::CountTokens,
        method.as_str(),
        &uri.to_string(),
        &headers,
        &body,
    );
    let resp = messages::count_tokens(&mock, &headers, &body);
    mock.counters.status(resp.status().as_u16());
    resp
}

fn check_auth(mock: &Mock, headers: &HeaderMap) -> Result<(), ApiError> {
    if !mock.config.require_auth {
        return Ok(());
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::no_api_key());
    };
    let value = value.to_str().unwrap_or("");
    let Some(key) = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(ApiError::no_api_key());
    };
    if key.starts_with("sk-invalid") {
        return Err(ApiError::invalid_api_key(key));
    }
    Ok(())
}

/// Headers the API puts on every response.
fn api_headers(
    mock: &Mock,
    resp: &mut Response,
    request: &HeaderMap,
    started: Instant,
    content_type: &'static str,
) {
    let processing = started.elapsed().as_millis().to_string();
    let request_id = mock.request_id();
    let h = resp.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set("content-type", content_type);
    set("x-request-id", &request_id);
    set("openai-version", "2020-10-01");
    set("openai-processing-ms", &processing);
    set(
        "openai-organization",
        request
            .get("openai-organization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("user-mock"),
    );
    if let Some(p) = request.get("openai-project").and_then(|v| v.to_str().ok()) {
        set("openai-project", p);
    }
    set("x-ratelimit-limit-requests", "10000");
    set("x-ratelimit-limit-tokens", "30000000");
    set("x-ratelimit-remaining-requests", "9999");
    set("x-ratelimit-remaining-tokens", "29999000");
    set("x-ratelimit-reset-requests", "6ms");
    set("x-ratelimit-reset-tokens", "2ms");
}

fn error_response(mock: &Mock, e: ApiError, request: &HeaderMap, started: Instant) -> Response {
    let extra = e.headers.clone();
    let mut resp = e.into_response();
    api_headers(mock, &mut resp, request, started, "application/json");
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(
    mock: Arc<Mock>,
    route: MockRoute,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let in_flight = mock.counters.begin(route);
    mock.counters
        .record(route, method.as_str(), &uri.to_string(), &headers, &body);
    let resp = answer(&mock, route, &headers, &body, started, in_flight).await;
    mock.counters.status(resp.status().as_u16());
    resp
}

async fn answer(
    mock: &Arc<Mock>,
    route: MockRoute,
    headers: &HeaderMap,
    body: &Bytes,
    started: Instant,
    in_flight: crate::stats::InFlight,
) -> Response {
    if let Err(e) = check_auth(mock, headers) {
        return error_response(mock, e, headers, started);
    }
    let control = match Control::from_headers(headers, &mock.gates) {
        Ok(c) => c,
        Err(e) => return error_response(mock, e, headers, started),
    };
    let plan = match mock.plan(route, body) {
        Ok(p) => p,
        Err(e) => return error_response(mock, e, headers, started),
    };
    mock.counters.model(&plan.model);
    if let Some(gate) = &control.head_gate {
        mock.hold_head(gate).await;
    }
    match plan.special {
        Special::Error(status) => {
            return error_response(
                mock,
                ApiError::for_status(status, &plan.model),
                headers,
                started,
            );
        }
        Special::Timeout => {
            // Waits until the client gives up (the future is dropped with the connection)
            // or the mock shuts down; never longer, so shutdown cannot hang on it.
            mock.shutdown.cancelled().await;
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The mock is shutting down.",
            );
            return error_response(mock, e, headers, started);
        }
        Special::None | Special::CutStream => {}
    }
    let latency = mock.latency_for(headers);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let cache = if plan.prompts.is_empty() {
        CacheUse::default()
    } else {
        let now = mock.config.clock.now_ms();
        let mut sim = mock.sim.lock().unwrap_or_else(|p| p.into_inner());
        plan.prompts.iter().fold(CacheUse::default(), |acc, p| {
            let o = sim.serve_with(p, plan.policy, now);
            CacheUse {
                cached: acc.cached + o.cached_tokens,
                written: acc.written + o.cache_write_tokens,
                written_12h: acc.written_12h + o.cache_write_12h_tokens,
            }
        })
    };
    let cut = plan.special == Special::CutStream;
    let created = unix_now();
    let delay = mock.chunk_delay_for(headers);

    if plan.stream {
        let events = match &plan.kind {
            Kind::Chat(p) => {
                let id = mock.next_id("chatcmpl-", 29);
                chat::render_events(p, &chat_ctx(&plan, &id, created, cache))
            }
            Kind::Completions(p) => {
                let id = mock.next_id("cmpl-", 29);
                completions::render_events(p, &chat_ctx(&plan, &id, created, cache))
            }
            Kind::Responses(p) => {
                let id = format!("resp_{}", hex48(mock));
                responses::render_events(p, &responses_ctx(&plan, &id, created, cache))
            }
            Kind::Embeddings(_) | Kind::Empty => Vec::new(),
        };
        mock.counters.stream();
        let cut_after = control
            .cut_after
            .or_else(|| cut.then(|| (events.len() / 2).max(1)));
        let gate = control.stream_gate.map(|(name, after)| StreamGate {
            gates: mock.gates.clone(),
            name,
            after,
        });
        let pacing = Pacing {
            delay,
            cut_after,
            gate,
        };
        let mut resp = Response::new(sse::body(events, pacing, in_flight));
        api_headers(
            mock,
            &mut resp,
            headers,
            started,
            "text/event-stream; charset=utf-8",
        );
        return resp;
    }

    let bytes = match &plan.kind {
        Kind::Chat(p) => {
            let id = mock.next_id("chatcmpl-", 29);
            chat::render_json(p, &chat_ctx(&plan, &id, created, cache))
        }
        Kind::Completions(p) => {
            let id = mock.next_id("cmpl-", 29);
            completions::render_json(p, &chat_ctx(&plan, &id, created, cache))
        }
        Kind::Responses(p) => {
            let id = format!("resp_{}", hex48(mock));
            responses::render_json(p, &responses_ctx(&plan, &id, created, cache))
        }
        Kind::Embeddings(b) => b.clone(),
        Kind::Empty => Bytes::new(),
    };
    let mut resp = if cut {
        // Headers promise the whole body; half of it arrives, then the connection closes.
        let full = bytes.len();
        let parts = vec![bytes.slice(..full / 2)];
        let mut r = Response::new(sse::body(
            parts,
            Pacing {
                cut_after: Some(1),
                ..Pacing::paced(Duration::ZERO)
            },
            in_flight,
        ));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
        r
    } else if control.splits_body() {
        // The body in parts at the bytes the test named; the length is the whole body's,
        // so a cut is a short body, as a real connection reset would leave it.
        let full = bytes.len();
        let (parts, gate_at, cut_at) = control.split_json(&bytes);
        let pacing = Pacing {
            cut_after: cut_at,
            gate: control
                .stream_gate
                .zip(gate_at)
                .map(|((name, _), after)| StreamGate {
                    gates: mock.gates.clone(),
                    name,
                    after,
                }),
            ..Pacing::paced(Duration::ZERO)
        };
        let mut r = Response::new(sse::body(parts, pacing, in_flight));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
        r
    } else {
        drop(in_flight);
        Response::new(Body::from(bytes))
    };
    api_headers(mock, &mut resp, headers, started, "application/json");
    resp
}

fn hex48(mock: &Mock) -> String {
    let n = mock.ids.fetch_add(1, Ordering::Relaxed);
    let mut rng = SplitMix64::new(mock.id_salt ^ mix64(n));
    format!(
        "{:016x}{:016x}{:016x}",
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64()
    )
}

/// What one request read from and wrote to the simulated prompt cache.
#[derive(Debug, Clone, Copy, Default)]
struct CacheUse {
    cached: u64,
    written: u64,
    written_12h: u64,
}

/// Whether usage reports writes: under the GPT-5.6 rules only.
fn reports_writes(plan: &Plan) -> bool {
    matches!(plan.policy, CachePolicy::Breakpoints { .. })
}

fn chat_ctx<'a>(plan: &'a Plan, id: &'a str, created: u64, c: CacheUse) -> chat::RenderCtx<'a> {
    chat::RenderCtx {
        id,
        created,
        model: &plan.model,
        prompt_tokens: plan.prompt_tokens,
        cached_tokens: c.cached,
        cache_write_tokens: reports_writes(plan).then_some(c.written),
        include_usage: plan.include_usage,
    }
}

fn responses_ctx<'a>(
    plan: &'a Plan,
    id: &'a str,
    created: u64,
    c: CacheUse,
) -> responses::RenderCtx<'a> {
    let cache_options = match plan.policy {
        CachePolicy::Breakpoints { mode, ttl } => Some((
            match mode {
                BreakpointMode::Implicit => "implicit",
                BreakpointMode::Explicit => "explicit",
            },
            ttl.as_str(),
        )),
        CachePolicy::Blocks(_) => None,
    };
    responses::RenderCtx {
        id,
        created_at: created,
        model: &plan.model,
        input_tokens: plan.prompt_tokens,
        cached_tokens: c.cached,
        cache_write: reports_writes(plan).then_some((c.written, c.written_12h)),
        cache_options,
    }
}

fn json_response(
    mock: &Mock,
    status: StatusCode,
    v: &serde_json::Value,
    request: &HeaderMap,
    started: Instant,
) -> Response {
    let mut resp = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    api_headers(mock, &mut resp, request, started, "application/json");
    resp
}

async fn models_list(
    State(mock): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let _in_flight = mock.counters.begin(MockRoute::Models);
    mock.counters.record(
        MockRoute::Models,
        method.as_str(),
        &uri.to_string(),
        &headers,
        &Bytes::new(),
    );
    let resp = match check_auth(&mock, &headers) {
        Err(e) => error_response(&mock, e, &headers, started),
        Ok(()) => json_response(&mock, StatusCode::OK, &models::list(), &headers, started),
    };
    mock.counters.status(resp.status().as_u16());
    resp
}

async fn models_get(
    State(mock): State<Arc<Mock>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let _in_flight = mock.counters.begin(MockRoute::Models);
    mock.counters.record(
        MockRoute::Models,
        method.as_str(),
        &uri.to_string(),
        &headers,
        &Bytes::new(),
    );
    let resp = match (check_auth(&mock, &headers), models::get(&id)) {
        (Err(e), _) => error_response(&mock, e, &headers, started),
        (Ok(()), Some(m)) => json_response(&mock, StatusCode::OK, &m, &headers, started),
        (Ok(()), None) => error_response(&mock, ApiError::model_not_found(&id), &headers, started),
    };
    mock.counters.status(resp.status().as_u16());
    resp
}

async fn fallback(
    State(mock): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let _in_flight = mock.counters.begin(MockRoute::Other);
    mock.counters.record(
        MockRoute::Other,
        method.as_str(),
        &uri.to_string(),
        &headers,
        &body,
    );
    let e = ApiError::unknown_url(method.as_str(), uri.path());
    let resp = error_response(&mock, e, &headers, started);
    mock.counters.status(resp.status().as_u16());
    resp
}

async fn stats_route(State(mock): State<Arc<Mock>>) -> Response {
    axum::Json(mock.stats()).into_response()
}

/// `GET /mock/gates`: every gate with `open`, `waiting` and `passed`.
async fn gates_route(State(mock): State<Arc<Mock>>) -> Response {
    axum::Json(mock.gates.snapshot()).into_response()
}

/// `POST /mock/gates/{name}/open`: releases what the gate holds, and lets later requests
/// through.
async fn open_gate_route(State(mock): State<Arc<Mock>>, Path(name): Path<String>) -> Response {
    match mock.gates.open(&name) {
        Ok(()) => axum::Json(json!({"opened": name})).into_response(),
        Err(e) => ApiError::invalid(e.to_string()).into_response(),
    }
}

async fn reset_route(State(mock): State<Arc<Mock>>) -> Response {
    mock.reset();
    axum::Json(json!({"reset": true})).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct RequestsQuery {
    route: Option<String>,
}

/// `GET /mock/requests?route=chat_completions`: the recorded requests, oldest first.
async fn requests_route(State(mock): State<Arc<Mock>>, Query(q): Query<RequestsQuery>) -> Response {
    let routes: Vec<MockRoute> = match q.route.as_deref() {
        None => MockRoute::ALL.to_vec(),
        Some(r) => match MockRoute::parse(r) {
            Some(r) => vec![r],
            None => {
                return ApiError::invalid(format!(
                    "unknown route {r:?}: use chat_completions, completions, embeddings, responses, models, messages, count_tokens or other"
                ))
                .into_response();
            }
        },
    };
    let out: serde_json::Map<String, serde_json::Value> = routes
        .into_iter()
        .map(|r| {
            let reqs: Vec<serde_json::Value> =
                mock.requests(r).iter().map(|x| x.to_json()).collect();
            (r.as_str().to_string(), serde_json::Value::Array(reqs))
        })
        .collect();
    axum::Json(out).into_response()
}

/// Serves `mock` on `listener` until `shutdown` completes, then stops accepting, releases
/// waiting `mock-timeout` requests and waits for open responses to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mock: Arc<Mock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let m = mock.clone();
    axum::serve(listener, app(mock))
        .with_graceful_shutdown(async move {
            shutdown.await;
            m.begin_shutdown();
        })
        .await
}

/// A mock running on `127.0.0.1:<free port>`, for tests and benches in any crate.
#[derive(Debug)]
pub struct MockServer {
    pub addr: SocketAddr,
    pub mock: Arc<Mock>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl MockServer {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, what an OpenAI SDK takes as `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.mock.stats()
    }

    /// Stops accepting, ends waiting requests, and waits for the server to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(t) => t.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Without `shutdown()`, the server still stops; its task ends with the runtime.
        self.stop.cancel();
    }
}

/// Starts a mock with `config` on `127.0.0.1:0`.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use prefixcache_mock::{MockConfig, spawn_local, stats::MockRoute};
/// let server = spawn_local(MockConfig::default()).await?;
/// // ... point a client at server.base_url() ...
/// assert_eq!(server.stats().route(MockRoute::ChatCompletions), 0);
/// server.shutdown().await
/// # }
/// ```
pub async fn spawn_local(config: MockConfig) -> std::io::Result<MockServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mock = Arc::new(Mock::new(config));
    let stop = CancellationToken::new();
    let signal = stop.clone();
    // Owned by the returned `MockServer`: `shutdown()` cancels and awaits it, `Drop` cancels it.
    #[allow(clippy::disallowed_methods)]
    let task = tokio::spawn(serve(listener, mock.clone(), async move {
        signal.cancelled().await
    }));
    Ok(MockServer {
        addr,
        mock,
        stop,
        task: Some(task),
    })
}
