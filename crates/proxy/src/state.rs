//! The state every handler shares: config, store, upstream client, in-flight responses,
//! metrics, and the task tracker that owns every background task until shutdown.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prefixcache_core::config::Config;
use prefixcache_core::key::{CacheKey, TenantSecret};
use prefixcache_core::lint::WhitespaceDrift;
use prefixcache_core::prefix::FamilyMemo;
use prefixcache_core::pricing::PriceTable;
use prefixcache_store::guard::GuardState;
use prefixcache_store::{CacheStore, Clock, Entry, StoreError};
use tokio_util::task::TaskTracker;

use crate::accounting::CacheableMemo;
use crate::admission::Admission;
use crate::breakpoints::Breakpoints;
use crate::dashboard::Dashboard;
use crate::flight::Flights;
use crate::metrics::Metrics;
use crate::reqlog::RequestLog;
use crate::tenant::Tenancy;
use crate::upstream::{SetupError, UpstreamClient};
use crate::warnings::LintMemo;

/// Shared, cheaply clonable handle to the proxy's state.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn CacheStore>,
    pub upstream: UpstreamClient,
    /// How callers are told apart (namespaces).
    pub tenancy: Tenancy,
    pub clock: Arc<dyn Clock>,
    pub flights: Flights,
    /// Budgets of connections, requests and body bytes (`[limits]`).
    pub admission: Arc<Admission>,
    /// Memo of recent prefix windows: static system prompts recur constantly.
    pub families: FamilyMemo,
    /// The fail-open guard of the store, when it has one (degraded state for `/readyz`).
    pub guard: Option<Arc<GuardState>>,
    pub metrics: Metrics,
    /// The dashboard's history and family tracker (`/dashboard`, `/admin/summary`).
    pub dashboard: Dashboard,
    /// Owns upstream-reading and store-writing tasks; waited for at shutdown.
    pub tasks: TaskTracker,
    /// Whether the process is shutting down (`/readyz` then fails).
    pub readiness: Readiness,
    /// The request log (`log.path`), if enabled.
    pub request_log: Option<RequestLog>,
    /// Which static prefixes are long enough for the provider's prompt cache.
    pub cacheable: CacheableMemo,
    /// Prices of models (built-in table, then `[pricing]` file and inline models).
    pub prices: PriceTable,
    /// Models without a price, each logged once (bounded).
    pub unpriced: Mutex<HashSet<String>>,
    /// Detects prefixes that differ only in whitespace across requests of a strategy
    /// within one namespace.
    pub drift: WhitespaceDrift,
    /// Dynamic-content findings per recent family.
    pub lint_memo: LintMemo,
    /// Elements of a token-id prompt the request tree keeps: enough for the largest
    /// family window of any strategy.
    prompt_elements: usize,
    /// Learned prompt boundaries per namespace and family (automatic breakpoints).
    pub breakpoints: Breakpoints,
    /// Strategy names as `'static` metric labels (see [`AppState::strategy_label`]).
    strategy_labels: HashMap<String, &'static str>,
    /// When each lint rule last wrote a log line (rate limit), in Unix ms.
    pub lint_logged: Mutex<HashMap<&'static str, u64>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("store", &self.store)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// Whether this replica should get new traffic. It stops being ready once shutdown
/// begins, while it still serves, so load balancers and Kubernetes move traffic away
/// before the listener closes (`shutdown_delay`).
#[derive(Debug, Default)]
pub struct Readiness {
    shutting_down: AtomicBool,
}

impl Readiness {
    /// From now on `/readyz` answers 503.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// The `result` label of a successful store operation.
trait StoreResult {
    fn label(&self) -> &'static str;
}

impl StoreResult for Option<Entry> {
    fn label(&self) -> &'static str {
        if self.is_some() { "hit" } else { "miss" }
    }
}

impl StoreResult for () {
    fn label(&self) -> &'static str {
        "ok"
    }
}

/// What can go wrong building the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("upstream client: {0}")]
    Upstream(#[from] SetupError),
    #[error("pricing: {0}")]
    Pricing(String),
    #[error("cache.tenant_headers: {0:?} is not a valid header name")]
    TenantHeader(String),
    #[error("opening the request log {path}: {source}")]
    RequestLog {
        path: String,
        source: std::io::Error,
    },
}

impl AppState {
    /// Builds the state from a validated config, an opened store, the clock entries are
    /// dated by, and the tenant secret text (configured, generated or shared via Redis).
    pub fn new(
        config: Config,
        store: Arc<dyn CacheStore>,
        clock: Arc<dyn Clock>,
        tenant_secret: &str,
    ) -> Result<AppState, StateError> {
        let upstream = UpstreamClient::new(&config)?;
        let pricing_file = match &config.pricing.file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| StateError::Pricing(format!("reading {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let prices = config
            .pricing
            .table(pricing_file.as_deref())
            .map_err(|e| StateError::Pricing(e.to_string()))?;
        let request_log = match &config.log.path {
            Some(path) => Some(
                RequestLog::open(
                    path,
                    config.log.max_bytes,
                    config.log.keep,
                    config.log.queue_bytes,
                )
                .map_err(|source| StateError::RequestLog {
                    path: path.display().to_string(),
                    source,
                })?,
            ),
            None => None,
        };
        let fallback_authorization = config
            .upstream_api_key
            .as_ref()
            .map(|k| format!("Bearer {k}").into_bytes());
        let tenant_headers = config
            .cache
            .tenant_headers
            .iter()
            .map(|h| {
                axum::http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| StateError::TenantHeader(h.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tenancy = Tenancy::new(
            config.cache.tenant,
            TenantSecret::from_text(tenant_secret),
            fallback_authorization,
            tenant_headers,
        );
        // Leaked once per process: a bounded set (the configured strategies), so label
        // sets on the hot path need no allocation.
        let strategy_labels: HashMap<String, &'static str> = config
            .strategies
            .iter()
            .map(|s| {
                let label: &'static str = Box::leak(s.name.clone().into_boxed_str());
                (s.name.clone(), label)
            })
            .collect();
        let prompt_elements = config
            .strategies
            .iter()
            .map(|s| {
                prefixcache_core::prefix::window_limit(
                    s.prefix_granularity.max(s.min_prefix_tokens),
                )
            })
            .max()
            .unwrap_or(prefixcache_core::prefix::MAX_WINDOW_BYTES)
            + 64;
        let metrics = Metrics::new();
        let admission = Arc::new(Admission::new(
            &config.limits,
            metrics.rejected.clone(),
            metrics.client_timeouts.clone(),
        ));
        metrics.init_request_series(strategy_labels.values().copied());
        let dashboard = Dashboard::new(
            config
                .strategies
                .iter()
                .filter_map(|s| strategy_labels.get(&s.name).copied()),
            &metrics,
            clock.now_ms(),
        );
        Ok(AppState {
            inner: Arc::new(Inner {
                upstream,
                tenancy,
                store,
                clock,
                flights: Flights::default(),
                admission,
                families: FamilyMemo::default(),
                guard: None,
                metrics,
                dashboard,
                tasks: TaskTracker::new(),
                readiness: Readiness::default(),
                request_log,
                cacheable: CacheableMemo::new(crate::accounting::CACHEABLE_MEMO_ENTRIES),
                prices,
                unpriced: Mutex::new(HashSet::new()),
                drift: WhitespaceDrift::default(),
                lint_memo: LintMemo::new(crate::warnings::MEMO_FAMILIES),
                prompt_elements,
                breakpoints: Breakpoints::default(),
                strategy_labels,
                lint_logged: Mutex::new(HashMap::new()),
                config,
            }),
        })
    }

    /// Attaches the store's guard state, so `/readyz` and the metrics report it.
    /// Call before the state is cloned.
    pub fn with_guard(mut self, guard: Arc<GuardState>) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.guard = Some(guard);
        }
        self
    }

    /// A configured strategy's name as a `'static` label (metrics, logs, ledger).
    pub fn strategy_label(&self, name: &str) -> &'static str {
        self.strategy_labels
            .get(name)
            .copied()
            .unwrap_or(prefixcache_core::config::DEFAULT_STRATEGY)
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// What the request tree of a body of `len` bytes may hold.
    pub fn tree_limits(&self, len: usize) -> prefixcache_core::wire::TreeLimits {
        prefixcache_core::wire::TreeLimits {
            prompt_elements: self.prompt_elements,
            ..prefixcache_core::wire::TreeLimits::for_body(len)
        }
    }

    /// Looks a key up. A store error or timeout is recorded and becomes a miss: the
    /// request is then served from upstream (fail open).
    pub async fn store_get(&self, key: &CacheKey) -> Option<Entry> {
        self.guarded("get", self.store.get(key)).await?
    }

    /// Stores an entry; failures are recorded and otherwise ignored (never retried).
    pub async fn store_put(&self, key: &CacheKey, entry: &Entry) {
        self.guarded("put", self.store.put(key, entry)).await;
    }

    /// Deletes an entry (used when an entry cannot be rendered); failures are recorded.
    pub async fn store_delete(&self, key: &CacheKey) {
        self.guarded("delete", self.store.delete(key)).await;
    }

    /// Runs one store operation under the outer timeout and records it: `None` when it
    /// failed (logged and counted by its error), else its value.
    async fn guarded<T: StoreResult>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.store_timeout(), fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.store_timeout())),
        };
        match result {
            Ok(v) => {
                self.metrics
                    .store_op(self.store.backend(), op, v.label(), started.elapsed());
                Some(v)
            }
            Err(e) => {
                self.store_failed(op, &e, started.elapsed());
                None
            }
        }
    }

    fn store_failed(&self, op: &'static str, e: &StoreError, took: Duration) {
        self.metrics
            .store_op(self.store.backend(), op, e.metric_label(), took);
        tracing::warn!(op, error = %e, "store operation failed; serving from upstream");
    }

    /// The bound on one store operation. The store's own guard applies `store.timeout`
    /// too; this outer bound (twice as long) only catches a store without a guard.
    fn store_timeout(&self) -> Duration {
        self.config.store.timeout * 2
    }
}
