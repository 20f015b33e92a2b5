//! Prometheus metrics (`docs/metrics.md`), one registry per proxy instance so in-process
//! tests can scrape exact deltas. Every label value is drawn from a fixed set or from
//! the configured strategy names: never keys, families, tenants or models.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Buckets from 50 µs (a memory hit) to 2 minutes (a long generation).
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Store operations are bounded by `store.timeout` (default 50 ms): finer buckets.
const STORE_BUCKETS: [f64; 14] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub strategy: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatusLabels {
    pub route: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub backend: &'static str,
    pub op: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreDurationLabels {
    pub backend: &'static str,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub kind: &'static str,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheableLabels {
    pub cacheable: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyTokenLabels {
    pub prompt_cache_key: &'static str,
    pub kind: &'static str,
}

/// Provider prompt-cache figures by breakpoint policy: `auto` (the proxy placed one),
/// `caller` (the caller's own), `none`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakpointKindLabels {
    pub breakpoints: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub prompt_cache_key: &'static str,
}

/// Every `status` label value of `requests_total`, in the order the dashboard shows them.
pub const STATUSES: [&str; 6] = ["hit", "coalesced", "miss", "bypass", "error", "passthrough"];

/// Every `route` label value of `requests_total` and `request_duration_seconds`.
pub const ROUTES: [&str; 5] = [
    "chat_completions",
    "completions",
    "embeddings",
    "responses",
    "other",
];

/// Every `kind` of `provider_prompt_tokens_total`.
pub const PROVIDER_TOKEN_KINDS: [&str; 3] = ["prompt", "cached", "cache_write"];

/// A classic histogram whose buckets can be read back (the dashboard computes quantiles
/// from them); prometheus-client's own keeps them private. Exported exactly like it.
#[derive(Clone, Debug)]
pub struct ReadableHistogram {
    inner: Arc<Mutex<HistogramData>>,
}

/// A histogram's state: per-bucket (not cumulative) counts, the last bucket `+Inf`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramData {
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

impl ReadableHistogram {
    pub fn new(bounds: &[f64]) -> ReadableHistogram {
        let buckets = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        ReadableHistogram {
            inner: Arc::new(Mutex::new(HistogramData {
                sum: 0.0,
                count: 0,
                buckets,
            })),
        }
    }

    pub fn observe(&self, v: f64) {
        let mut d = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        d.sum += v;
        d.count += 1;
        // The last bucket is +Inf, so a value (even NaN) always lands somewhere.
        let i = d
            .buckets
            .iter()
            .position(|(b, _)| v <= *b)
            .unwrap_or(d.buckets.len().saturating_sub(1));
        if let Some(b) = d.buckets.get_mut(i) {
            b.1 += 1;
        }
    }

    /// The current sum, count and bucket counts.
    pub fn data(&self) -> HistogramData {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl TypedMetric for ReadableHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ReadableHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let d = self.data();
        encoder.encode_histogram::<NoLabelSet>(d.sum, d.count, &d.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn readable_latency_histogram() -> ReadableHistogram {
    ReadableHistogram::new(&LATENCY_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

/// All metrics of one proxy.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteStatusLabels, ReadableHistogram, fn() -> ReadableHistogram>,
    pub upstream_duration: Family<RouteStatusLabels, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<CodeLabels, Counter>,
    pub store_operations: Family<StoreOpLabels, Counter>,
    pub store_duration: Family<StoreDurationLabels, Histogram, fn() -> Histogram>,
    pub store_bytes: Gauge,
    pub entries: Gauge,
    pub store_degraded: Gauge,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost_usd: Family<KindLabels, Counter<f64, AtomicU64>>,
    pub provider_cache_usd: Family<KindLabels, Counter<f64, AtomicU64>>,
    pub coalesced: Counter,
    pub lint_findings: Family<RuleLabels, Counter>,
    pub inflight_upstream: Gauge,
    pub provider_cacheable: Family<CacheableLabels, Counter>,
    pub bypassed: Family<ReasonLabels, Counter>,
    pub store_skipped: Family<ReasonLabels, Counter>,
    pub provider_prompt_tokens: Family<PolicyTokenLabels, Counter>,
    pub provider_cache_write_usd: Family<PolicyLabels, Counter<f64, AtomicU64>>,
    pub store_evictions: Gauge,
    pub rejected: Family<ReasonLabels, Counter>,
    pub client_timeouts: Family<ReasonLabels, Counter>,
    pub connections: Gauge,
    pub requests_in_flight: Gauge,
    pub body_bytes_in_flight: Gauge,
    pub oversized_responses: Counter,
    pub breakpoints_injected: Counter,
    pub breakpoint_decisions: Family<DecisionLabels, Counter>,
    pub provider_breakpoint_tokens: Family<BreakpointKindLabels, Counter>,
    pub provider_breakpoint_usd: Family<BreakpointKindLabels, Counter<f64, AtomicU64>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("prefixcache");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route, strategy and cache status (hit, miss, bypass, coalesced, error, passthrough)",
            requests.clone(),
        );
        let request_duration = Family::<
            RouteStatusLabels,
            ReadableHistogram,
            fn() -> ReadableHistogram,
        >::new_with_constructor(readable_latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route and cache status",
            request_duration.clone(),
        );
        let upstream_duration =
            Family::<RouteStatusLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response headers, by route and HTTP status class",
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<CodeLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream calls that failed: HTTP status (429, 5xx, 4xx) or transport error (timeout, unreachable, cut_stream)",
            upstream_errors.clone(),
        );
        let store_operations = Family::<StoreOpLabels, Counter>::default();
        registry.register(
            "store_operations",
            "Cache store operations by backend, operation and result (hit, miss, ok, timeout, error, circuit_open, ...)",
            store_operations.clone(),
        );
        let store_duration =
            Family::<StoreDurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                store_histogram,
            );
        registry.register(
            "store_duration_seconds",
            "Latency of cache store operations",
            store_duration.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Approximate bytes held by the cache store",
            store_bytes.clone(),
        );
        let entries = Gauge::default();
        registry.register(
            "entries",
            "Approximate number of entries in the cache store",
            entries.clone(),
        );
        let store_degraded = Gauge::default();
        registry.register(
            "store_degraded",
            "1 while the store is failing and requests fail open to upstream, else 0",
            store_degraded.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens by kind (prompt, completion, cached_prompt, cache_write_prompt) and source (upstream: paid for; cache: answered from the response cache)",
            tokens.clone(),
        );
        let cost_usd = Family::<KindLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "cost_usd",
            "US dollars spent on upstream calls and saved by cache hits, under the pricing table",
            cost_usd.clone(),
        );
        let provider_cache_usd = Family::<KindLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "provider_cache_usd",
            "US dollars of upstream calls spent on the provider's prompt cache: cache_read (cached input) and cache_write (cache writes, GPT-5.6 and later)",
            provider_cache_usd.clone(),
        );
        let coalesced = Counter::default();
        registry.register(
            "coalesced",
            "Requests answered by joining an identical request already in flight",
            coalesced.clone(),
        );
        let lint_findings = Family::<RuleLabels, Counter>::default();
        registry.register(
            "lint_findings",
            "Prompt-shape findings on live requests, by rule",
            lint_findings.clone(),
        );
        let inflight_upstream = Gauge::default();
        registry.register(
            "inflight_upstream",
            "Upstream responses currently being read",
            inflight_upstream.clone(),
        );
        let provider_cacheable = Family::<CacheableLabels, Counter>::default();
        registry.register(
            "provider_cacheable",
            "Forwarded requests by whether the provider's prompt cache can serve them (a static prefix of at least 1024 tokens)",
            provider_cacheable.clone(),
        );
        let bypassed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "bypass",
            "Requests forwarded without a lookup, by reason (no_cache, sampled, duplicate_keys, body_too_complex, conversation, background, stored_prompt, provider_tool)",
            bypassed.clone(),
        );
        let store_skipped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "store_skipped",
            "Complete upstream answers not stored because upstream said so (upstream_no_store, upstream_private)",
            store_skipped.clone(),
        );
        let provider_prompt_tokens = Family::<PolicyTokenLabels, Counter>::default();
        registry.register(
            "provider_prompt_tokens",
            "Prompt tokens of upstream responses by the prompt_cache_key policy of the request (caller, conversation, family, none) and kind (prompt, cached, cache_write)",
            provider_prompt_tokens.clone(),
        );
        let provider_cache_write_usd = Family::<PolicyLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "provider_cache_write_usd",
            "US dollars paid for writing prompts to the provider's prompt cache, by prompt_cache_key policy (part of cost_usd_total{kind=\"spent\"})",
            provider_cache_write_usd.clone(),
        );
        let store_evictions = Gauge::default();
        registry.register(
            "store_evictions",
            "Entries the store dropped before their expiry for lack of room, since it opened (Redis: the server's evicted_keys)",
            store_evictions.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rejected",
            "Connections and requests refused with 503 because a limit was reached (connections, requests, body_bytes)",
            rejected.clone(),
        );
        let client_timeouts = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "client_timeouts",
            "Client connections closed, or requests refused with 408, for being too slow or idle (header, body, idle)",
            client_timeouts.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open client connections (limits.max_connections)",
            connections.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being served on the API routes (limits.max_requests_in_flight)",
            requests_in_flight.clone(),
        );
        let body_bytes_in_flight = Gauge::default();
        registry.register(
            "request_body_bytes_in_flight",
            "Request-body bytes held by the proxy (limits.max_body_bytes_in_flight)",
            body_bytes_in_flight.clone(),
        );
        let oversized_responses = Counter::default();
        registry.register(
            "oversized_responses",
            "Upstream responses larger than limits.max_response_bytes: streamed through, neither stored nor shared",
            oversized_responses.clone(),
        );
        let breakpoints_injected = Counter::default();
        registry.register(
            "breakpoints_injected",
            "Forwarded requests on which the proxy placed a prompt-cache breakpoint at the family's learned boundary",
            breakpoints_injected.clone(),
        );
        let breakpoint_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "breakpoint_decisions",
            "Breakpoint decisions on forwarded requests to models with breakpoints (injected, caller, caller_explicit_mode, not_recurring, below_minimum, at_implicit, not_worth)",
            breakpoint_decisions.clone(),
        );
        let provider_breakpoint_tokens = Family::<BreakpointKindLabels, Counter>::default();
        registry.register(
            "provider_breakpoint_tokens",
            "Prompt tokens of upstream responses by breakpoint policy (auto, caller, none) and kind (prompt, cached, cache_write)",
            provider_breakpoint_tokens.clone(),
        );
        let provider_breakpoint_usd =
            Family::<BreakpointKindLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "provider_breakpoint_usd",
            "US dollars of upstream responses by breakpoint policy (auto, caller, none) and kind (spent: the whole request, writes included; cache_read; cache_write)",
            provider_breakpoint_usd.clone(),
        );
        Metrics {
            rejected,
            client_timeouts,
            connections,
            requests_in_flight,
            body_bytes_in_flight,
            oversized_responses,
            breakpoints_injected,
            breakpoint_decisions,
            provider_breakpoint_tokens,
            provider_breakpoint_usd,
            provider_cacheable,
            bypassed,
            store_skipped,
            provider_prompt_tokens,
            provider_cache_write_usd,
            store_evictions,
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            store_operations,
            store_duration,
            store_bytes,
            entries,
            store_degraded,
            tokens,
            cost_usd,
            provider_cache_usd,
            coalesced,
            lint_findings,
            inflight_upstream,
        }
    }

    /// Creates every `requests_total` series of these strategies at 0. Prometheus's
    /// `rate()` needs a series to exist before it grows: a series born at its first
    /// request would hide that request from the hit-ratio rules, and a replica that
    /// never had a hit would have no hit series at all, so the ratio (and its alert)
    /// would be empty instead of 0.
    pub fn init_request_series(&self, strategies: impl IntoIterator<Item = &'static str>) {
        for strategy in strategies {
            for route in ROUTES {
                for status in STATUSES {
                    let _created = self.requests.get_or_create(&RequestLabels {
                        route,
                        strategy,
                        status,
                    });
                }
            }
        }
    }

    /// Records one finished request.
    /// Counts one breakpoint decision (and an injection).
    pub fn breakpoint_decision(&self, decision: &'static str) {
        self.breakpoint_decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
        if decision == "injected" {
            self.breakpoints_injected.inc();
        }
    }

    pub fn request(
        &self,
        route: &'static str,
        strategy: &'static str,
        status: &'static str,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                strategy,
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteStatusLabels { route, status })
            .observe(took.as_secs_f64());
    }

    /// Records one store operation.
    pub fn store_op(
        &self,
        backend: &'static str,
        op: &'static str,
        result: &'static str,
        took: Duration,
    ) {
        self.store_operations
            .get_or_create(&StoreOpLabels {
                backend,
                op,
                result,
            })
            .inc();
        self.store_duration
            .get_or_create(&StoreDurationLabels { backend, op })
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The HTTP status class label of an upstream response (`2xx`, `4xx`, `5xx`).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The label of an upstream error status: the common ones by number, the rest by class.
pub fn error_code_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s => status_class(s),
    }
}
