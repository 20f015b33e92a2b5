//! The fail-open guard: a decorator that bounds every store operation by a timeout and
//! skips a failing store with a circuit breaker, so a sick store costs requests a miss,
//! never a hang.
//!
//! # Breaker
//! - **Closed**: operations run; `failure_threshold` consecutive failures (errors or
//!   timeouts) open it.
//! - **Open**: operations fail at once with [`StoreError::CircuitOpen`] for the current
//!   interval, which starts at `open_base` and doubles on every failed probe up to
//!   `open_max`.
//! - **Half-open**: once the interval has passed, exactly one operation is let through
//!   as a probe (the others keep failing fast). Success closes the breaker and resets
//!   the interval; failure reopens it for a longer one.
//!
//! Nothing is retried: a failed `put` is reported once and dropped (the proxy serves the
//! response anyway). `purge` and `flush` get `admin_timeout`, not the request-path
//! timeout, because they scan or fsync.
//!
//! # Where it sits
//! Around the backing store of a tiered store (`lib.rs::open`), not around the tier:
//! the memory tier cannot fail or hang, and wrapping it would make a Redis outage
//! disable local hits too. For `kind = "memory"` it wraps the memory store so every
//! backend has the same contract and the same state to report.
//!
//! All timing uses `tokio::time`, so tests drive it with `tokio::time::pause()`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use prefixcache_core::key::CacheKey;
use tokio::time::Instant;

use crate::{CacheStore, Entry, PurgeFilter, StoreError, StoreStats};

/// Consecutive failures that open the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// First open interval.
pub const DEFAULT_OPEN_BASE: Duration = Duration::from_millis(250);
/// Longest open interval: also the longest a recovered store waits to be used again.
pub const DEFAULT_OPEN_MAX: Duration = Duration::from_secs(5);
/// Timeout of `purge` and `flush`.
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Tuning of the guard. `GuardConfig::new(timeout)` gives the defaults above.
///
/// ```
/// use std::time::Duration;
/// use prefixcache_store::guard::GuardConfig;
///
/// let config = GuardConfig {
///     failure_threshold: 3,
///     ..GuardConfig::new(Duration::from_millis(50))
/// };
/// assert_eq!(config.open_max, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Per operation on the request path (`store.timeout`).
    pub timeout: Duration,
    /// Per `purge` / `flush`.
    pub admin_timeout: Duration,
    pub failure_threshold: u32,
    pub open_base: Duration,
    pub open_max: Duration,
}

impl GuardConfig {
    pub fn new(timeout: Duration) -> GuardConfig {
        GuardConfig {
            timeout,
            admin_timeout: DEFAULT_ADMIN_TIMEOUT.max(timeout),
            failure_threshold: DEFAULT_FAILURE_THRESHOLD.max(1),
            open_base: DEFAULT_OPEN_BASE,
            open_max: DEFAULT_OPEN_MAX,
        }
    }
}

/// The breaker's position, for `/readyz`, logs and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// A copy of the guard's state and counters (monotonic since start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSnapshot {
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// Operations that failed or timed out (timeouts included).
    pub failures: u64,
    pub timeouts: u64,
    /// Operations refused because the circuit was open.
    pub rejected: u64,
    /// Times the breaker opened (from closed or after a failed probe).
    pub trips: u64,
    /// Length of the current (or next) open interval.
    pub open_interval: Duration,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// A probe is in flight.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    phase: Phase,
    consecutive: u32,
    interval: Duration,
}

/// Shared, cheap-to-read state of one guard. The proxy keeps an `Arc` of it for
/// `/readyz` and metrics.
#[derive(Debug)]
pub struct GuardState {
    config: GuardConfig,
    breaker: Mutex<Breaker>,
    failures: AtomicU64,
    timeouts: AtomicU64,
    rejected: AtomicU64,
    trips: AtomicU64,
}

impl GuardState {
    pub fn new(config: GuardConfig) -> GuardState {
        GuardState {
            config,
            breaker: Mutex::new(Breaker {
                phase: Phase::Closed,
                consecutive: 0,
                interval: config.open_base,
            }),
            failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            trips: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// True while the breaker is not closed: the store is being skipped or probed.
    pub fn is_degraded(&self) -> bool {
        self.state() != CircuitState::Closed
    }

    pub fn state(&self) -> CircuitState {
        match self.lock().phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen => CircuitState::HalfOpen,
        }
    }

    pub fn snapshot(&self) -> GuardSnapshot {
        let (state, consecutive_failures, open_interval) = {
            let b = self.lock();
            let state = match b.phase {
                Phase::Closed => CircuitState::Closed,
                Phase::Open { .. } => CircuitState::Open,
                Phase::HalfOpen => CircuitState::HalfOpen,
            };
            (state, b.consecutive, b.interval)
        };
        GuardSnapshot {
            state,
            consecutive_failures,
            failures: self.failures.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            trips: self.trips.load(Ordering::Relaxed),
            open_interval,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // The critical sections cannot panic; if one ever did, the state is still a
        // valid breaker, so keep using it rather than failing every request.
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self) -> Result<Permit<'_>, StoreError> {
        let mut b = self.lock();
        let probe = match b.phase {
            Phase::Closed => false,
            Phase::Open { until } if Instant::now() >= until => {
                b.phase = Phase::HalfOpen;
                true
            }
            Phase::Open { .. } | Phase::HalfOpen => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::CircuitOpen);
            }
        };
        Ok(Permit {
            state: self,
            probe,
            settled: false,
        })
    }

    fn settle(&self, probe: bool, ok: bool) {
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut b = self.lock();
        match (&b.phase, probe, ok) {
            (Phase::Closed, _, true) => b.consecutive = 0,
            (Phase::Closed, _, false) => {
                b.consecutive = b.consecutive.saturating_add(1);
                if b.consecutive >= self.config.failure_threshold {
                    b.interval = self.config.open_base;
                    b.phase = Phase::Open {
                        until: Instant::now() + b.interval,
                    };
                    self.trips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(failures = b.consecutive, open_for = ?b.interval,
                        "store circuit opened; serving from upstream");
                }
            }
            (Phase::HalfOpen, true, true) => {
                b.phase = Phase::Closed;
                b.consecutive = 0;
                b.interval = self.config.open_base;
                tracing::info!("store probe succeeded; circuit closed");
            }
            (Phase::HalfOpen, true, false) => {
                b.consecutive = b.consecutive.saturating_add(1);
                b.interval = (b.interval * 2).min(self.config.open_max);
                b.phase = Phase::Open {
                    until: Instant::now() + b.interval,
                };
                self.trips.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(open_for = ?b.interval, "store probe failed; circuit reopened");
            }
            // Results of operations admitted before the breaker opened say nothing
            // about the store now: only the probe decides.
            (Phase::Open { .. } | Phase::HalfOpen, _, _) => {}
        }
    }
}

/// An admitted operation. A probe dropped unsettled (its caller gave up) counts as a
/// failed probe, so the breaker never waits for a probe that will not report.
struct Permit<'a> {
    state: &'a GuardState,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    fn settle(mut self, ok: bool) {
        self.settled = true;
        self.state.settle(self.probe, ok);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.state.settle(true, false);
        }
    }
}

/// Any store, behind timeouts and a circuit breaker.
pub struct GuardedStore {
    inner: Arc<dyn CacheStore>,
    state: Arc<GuardState>,
}

impl GuardedStore {
    pub fn new(inner: Arc<dyn CacheStore>, config: GuardConfig) -> GuardedStore {
        GuardedStore {
            inner,
            state: Arc::new(GuardState::new(config)),
        }
    }

    /// The state to report; shared with the proxy.
    pub fn state(&self) -> Arc<GuardState> {
        self.state.clone()
    }

    pub fn inner(&self) -> &Arc<dyn CacheStore> {
        &self.inner
    }

    async fn run<T>(
        &self,
        timeout: Duration,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let permit = self.state.admit()?;
        let result = match tokio::time::timeout(timeout, op).await {
            Ok(r) => r,
            Err(_) => {
                self.state.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Timeout(timeout))
            }
        };
        permit.settle(result.is_ok());
        result
    }
}

#[async_trait]
impl CacheStore for GuardedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        self.run(self.state.config.timeout, self.inner.get(key))
            .await
    }

    async fn put(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError> {
        self.run(self.state.config.timeout, self.inner.put(key, entry))
            .await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.run(self.state.config.timeout, self.inner.delete(key))
            .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.run(self.state.config.timeout, self.inner.health())
            .await
    }

    async fn purge(&self, filter: &PurgeFilter) -> Result<u64, StoreError> {
        self.run(self.state.config.admin_timeout, self.inner.purge(filter))
            .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.run(self.state.config.admin_timeout, self.inner.flush())
            .await
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

impl std::fmt::Debug for GuardedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStore")
            .field("inner", &self.inner)
            .field("state", &self.state.snapshot())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefixcache_core::key::RequestHash;
    use prefixcache_core::route::Route;
    use prefixcache_core::usage::Usage;
    use std::sync::atomic::AtomicU32;

    /// What the fake store does on its next calls.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Mode {
        Ok,
        Fail,
        Hang,
    }

    struct Fake {
        mode: Mutex<Mode>,
        calls: AtomicU32,
    }

    impl Fake {
        fn new() -> Arc<Fake> {
            Arc::new(Fake {
                mode: Mutex::new(Mode::Ok),
                calls: AtomicU32::new(0),
            })
        }
        fn set(&self, m: Mode) {
            *self.mode.lock().unwrap() = m;
        }
        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
        async fn act(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Ok => Ok(()),
                Mode::Fail => Err(StoreError::Unavailable("connection refused".into())),
                Mode::Hang => std::future::pending().await,
            }
        }
    }

    #[async_trait]
    impl CacheStore for Fake {
        fn backend(&self) -> &'static str {
            "fake"
        }
        async fn get(&self, _key: &CacheKey) -> Result<Option<Entry>, StoreError> {
            self.act().await.map(|()| None)
        }
        async fn put(&self, _key: &CacheKey, _entry: &Entry) -> Result<(), StoreError> {
            self.act().await
        }
        async fn delete(&self, _key: &CacheKey) -> Result<(), StoreError> {
            self.act().await
        }
        async fn health(&self) -> Result<(), StoreError> {
            self.act().await
        }
        async fn purge(&self, _filter: &PurgeFilter) -> Result<u64, StoreError> {
            self.act().await.map(|()| 0)
        }
        async fn flush(&self) -> Result<(), StoreError> {
            self.act().await
        }
        fn stats(&self) -> StoreStats {
            StoreStats::default()
        }
    }

    const KEY: CacheKey = CacheKey([1; 32]);

    fn guarded(fake: &Arc<Fake>) -> GuardedStore {
        GuardedStore::new(
            fake.clone(),
            GuardConfig {
                timeout: Duration::from_millis(50),
                admin_timeout: Duration::from_secs(60),
                failure_threshold: 3,
                open_base: Duration::from_millis(100),
                open_max: Duration::from_millis(350),
            },
        )
    }

    fn entry() -> Entry {
        Entry {
            meta: crate::EntryMeta {
                created_at_ms: 0,
                expires_at_ms: u64::MAX,
                request_hash: RequestHash([0; 32]),
                route: Route::Embeddings,
                form: crate::ContentForm::Json,
                strategy: "default".into(),
                family: None,
                namespace_tag: [0; 8],
                model: "m".into(),
                usage: Usage::default(),
            },
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    async fn advance(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_times_out() {
        let fake = Fake::new();
        fake.set(Mode::Hang);
        let g = guarded(&fake);
        let start = Instant::now();
        let err = g.get(&KEY).await.unwrap_err();
        assert!(matches!(err, StoreError::Timeout(d) if d == Duration::from_millis(50)));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert_eq!(g.state().snapshot().timeouts, 1);
        assert_eq!(err.metric_label(), "timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_skips_the_store() {
        let fake = Fake::new();
        let g = guarded(&fake);
        fake.set(Mode::Fail);
        for _ in 0..2 {
            assert!(matches!(g.get(&KEY).await, Err(StoreError::Unavailable(_))));
        }
        // A success in between resets the count: failures must be consecutive.
        fake.set(Mode::Ok);
        g.get(&KEY).await.unwrap();
        fake.set(Mode::Fail);
        for _ in 0..2 {
            g.get(&KEY).await.unwrap_err();
        }
        assert!(!g.state().is_degraded());
        g.get(&KEY).await.unwrap_err();
        assert_eq!(g.state().state(), CircuitState::Open);
        assert!(g.state().is_degraded());

        let calls = fake.calls();
        for _ in 0..10 {
            assert!(matches!(g.get(&KEY).await, Err(StoreError::CircuitOpen)));
        }
        assert_eq!(
            fake.calls(),
            calls,
            "an open circuit does not touch the store"
        );
        let s = g.state().snapshot();
        assert_eq!((s.rejected, s.trips, s.failures), (10, 1, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_the_interval_and_success_closes() {
        let fake = Fake::new();
        let g = Arc::new(guarded(&fake));
        fake.set(Mode::Fail);
        for _ in 0..3 {
            g.get(&KEY).await.unwrap_err();
        }
        advance(99).await;
        assert!(matches!(g.get(&KEY).await, Err(StoreError::CircuitOpen)));
        advance(1).await;

        // The probe hangs for a while; meanwhile everyone else still fails fast.
        fake.set(Mode::Hang);
        let calls = fake.calls();
        let probe = {
            let g = g.clone();
            #[allow(clippy::disallowed_methods)] // joined below
            tokio::spawn(async move { g.get(&KEY).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(g.state().state(), CircuitState::HalfOpen);
        assert!(matches!(g.get(&KEY).await, Err(StoreError::CircuitOpen)));
        assert_eq!(
            fake.calls(),
            calls + 1,
            "exactly one probe reached the store"
        );
        fake.set(Mode::Ok);
        // The hanging probe times out: a failed probe, a longer interval (2 x 100 ms).
        assert!(matches!(probe.await.unwrap(), Err(StoreError::Timeout(_))));
        assert_eq!(g.state().state(), CircuitState::Open);
        assert_eq!(
            g.state().snapshot().open_interval,
            Duration::from_millis(200)
        );
        advance(199).await;
        assert!(matches!(g.get(&KEY).await, Err(StoreError::CircuitOpen)));
        advance(1).await;
        g.get(&KEY).await.unwrap();
        assert_eq!(g.state().state(), CircuitState::Closed);
        let s = g.state().snapshot();
        assert_eq!(
            s.open_interval,
            Duration::from_millis(100),
            "reset on success"
        );
        g.get(&KEY).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_grows_up_to_the_cap() {
        let fake = Fake::new();
        let g = guarded(&fake);
        fake.set(Mode::Fail);
        for _ in 0..3 {
            g.get(&KEY).await.unwrap_err();
        }
        let mut seen = vec![g.state().snapshot().open_interval.as_millis()];
        for _ in 0..4 {
            advance(seen[seen.len() - 1] as u64).await;
            assert!(matches!(g.get(&KEY).await, Err(StoreError::Unavailable(_))));
            seen.push(g.state().snapshot().open_interval.as_millis());
        }
        assert_eq!(seen, [100, 200, 350, 350, 350]);
        assert_eq!(g.state().snapshot().trips, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_never_retried() {
        let fake = Fake::new();
        let g = guarded(&fake);
        fake.set(Mode::Fail);
        assert!(g.put(&KEY, &entry()).await.is_err());
        assert_eq!(fake.calls(), 1);
        fake.set(Mode::Hang);
        assert!(matches!(
            g.put(&KEY, &entry()).await,
            Err(StoreError::Timeout(_))
        ));
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_counts_as_failed() {
        let fake = Fake::new();
        let g = guarded(&fake);
        fake.set(Mode::Fail);
        for _ in 0..3 {
            g.get(&KEY).await.unwrap_err();
        }
        advance(100).await;
        fake.set(Mode::Hang);
        // The caller gives up before the guard's own timeout.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), g.get(&KEY)).await;
        assert!(gave_up.is_err());
        assert_eq!(g.state().state(), CircuitState::Open, "not stuck half-open");
        advance(200).await;
        fake.set(Mode::Ok);
        g.get(&KEY).await.unwrap();
        assert!(!g.state().is_degraded());
    }

    #[tokio::test(start_paused = true)]
    async fn admin_operations_get_the_long_timeout() {
        let fake = Fake::new();
        let g = guarded(&fake);
        fake.set(Mode::Hang);
        let start = Instant::now();
        assert!(matches!(g.flush().await, Err(StoreError::Timeout(_))));
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
