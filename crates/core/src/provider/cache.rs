//! The simulated provider prompt cache, built from OpenAI's documented behaviour only
//! (rules and sources in `docs/provider-caching.md`). Two generations of rules:
//!
//! - **Blocks** (models before GPT-5.6): prompts of at least 1024 tokens can hit, in
//!   128-token steps; cached prefixes stay minutes while idle (24 h with
//!   `prompt_cache_retention: "24h"`); writes are free.
//! - **Breakpoints** (GPT-5.6 and later): a prefix is cached and matched only at a
//!   breakpoint, exactly (no 128-token rounding): the implicit one at the end of the latest
//!   user or tool message (unless `prompt_cache_options.mode` is `explicit`) and the
//!   caller's `prompt_cache_breakpoint` markers. A request writes at most four
//!   breakpoints (the implicit one and the latest three explicit ones, or the latest four
//!   explicit ones), reads the longest cached prefix among its latest 80 breakpoints, and
//!   reports the tokens it wrote (`cache_write_tokens`, billed at 1.25x input for 30 min,
//!   2.5x for 12 h). Entries live at least their TTL after their last use.
//!
//! Both route a request by a hash of its first ~256 tokens combined with
//! `prompt_cache_key`; past ~15 requests per minute for one such combination, requests
//! overflow to other machines chosen by a seeded generator. Time is an argument, so the
//! mock drives it from its clock and `prefixcache replay` from a log's timestamps: the same
//! seed and the same sequence of (request, time) give the same outcomes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::prompt::{Breakpoint, BreakpointKind, CacheTtl, PromptInfo};
use super::rng::SplitMix64;

const MINUTE_MS: u64 = 60_000;

/// Machines in the simulated provider fleet.
pub const DEFAULT_CACHE_MACHINES: usize = 8;
/// OpenAI's documented overflow threshold: ~15 requests per minute per prefix+key.
pub const DEFAULT_CACHE_OVERFLOW_RPM: u32 = 15;
/// OpenAI: cached prefixes stay 5-10 minutes idle; the low end, so the sim is not optimistic.
pub const DEFAULT_CACHE_IDLE_TTL: Duration = Duration::from_secs(5 * 60);
/// `prompt_cache_retention: "24h"`.
pub const EXTENDED_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Cached prefixes per simulated machine.
pub const DEFAULT_CACHE_LRU_ENTRIES: usize = 100_000;

/// Parameters of the simulated provider prompt cache (`docs/provider-caching.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptCacheConfig {
    /// Off: `cached_tokens` is always 0.
    pub enabled: bool,
    pub machines: usize,
    /// Requests per minute for one (first 256 tokens, `prompt_cache_key`) past which
    /// requests overflow to a random machine.
    pub overflow_rpm: u32,
    pub idle_ttl: Duration,
    pub lru_entries: usize,
    /// Shortest cacheable prompt.
    pub min_tokens: usize,
    /// Granularity of hits above `min_tokens`.
    pub step_tokens: usize,
    /// Tokens of the prompt start that, with `prompt_cache_key`, pick the home machine.
    pub route_tokens: usize,
    /// Breakpoint rules: the shortest cacheable prefix at a breakpoint.
    pub breakpoint_min_tokens: usize,
    /// Breakpoint rules: new cache writes per request.
    pub max_writes: usize,
    /// Breakpoint rules: the latest breakpoints of a request looked up for a match.
    pub lookup_breakpoints: usize,
}

impl Default for PromptCacheConfig {
    fn default() -> Self {
        PromptCacheConfig {
            enabled: true,
            machines: DEFAULT_CACHE_MACHINES,
            overflow_rpm: DEFAULT_CACHE_OVERFLOW_RPM,
            idle_ttl: DEFAULT_CACHE_IDLE_TTL,
            lru_entries: DEFAULT_CACHE_LRU_ENTRIES,
            min_tokens: 1024,
            step_tokens: 128,
            route_tokens: 256,
            breakpoint_min_tokens: 1024,
            max_writes: 4,
            lookup_breakpoints: 80,
        }
    }
}

/// Which generation of OpenAI's caching rules a model follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRules {
    /// Before GPT-5.6: automatic 128-token blocks, free writes.
    Blocks,
    /// GPT-5.6 and later families: breakpoints, `prompt_cache_options`, paid writes.
    Breakpoints,
}

impl CacheRules {
    /// The rules of `model`: `Breakpoints` for `gpt-X[.Y]…` with X.Y at least 5.6
    /// (`gpt-5.6-sol`, `gpt-6-luna`, `gpt-6.1-terra`, fine-tunes `ft:gpt-5.6-…`), `Blocks`
    /// for everything else. OpenAI: "For GPT-5.6 models and later model families".
    pub fn for_model(model: &str) -> CacheRules {
        let m = model.strip_prefix("ft:").unwrap_or(model);
        let Some(version) = m.strip_prefix("gpt-") else {
            return CacheRules::Blocks;
        };
        let end = version
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(version.len());
        let mut parts = version[..end].split('.');
        let major = parts.next().and_then(|p| p.parse::<u32>().ok());
        let minor = parts.next().map_or(Some(0), |p| p.parse::<u32>().ok());
        match (major, minor) {
            (Some(major), Some(minor)) if (major, minor) >= (5, 6) => CacheRules::Breakpoints,
            _ => CacheRules::Blocks,
        }
    }
}

/// `prompt_cache_options.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakpointMode {
    /// The default: OpenAI adds one implicit breakpoint and writes it and the latest
    /// three explicit ones.
    Implicit,
    /// Only the caller's breakpoints, the latest four written; none means no caching.
    Explicit,
}

/// How one request uses the simulated cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Rules before GPT-5.6, with the request's retention.
    Blocks(Retention),
    /// GPT-5.6 rules, with the request's `prompt_cache_options` (the TTL a breakpoint
    /// without its own inherits).
    Breakpoints { mode: BreakpointMode, ttl: CacheTtl },
}

impl CachePolicy {
    /// The GPT-5.6 defaults: implicit mode, 30 minutes.
    pub const BREAKPOINTS_DEFAULT: CachePolicy = CachePolicy::Breakpoints {
        mode: BreakpointMode::Implicit,
        ttl: CacheTtl::Min30,
    };
}

/// Where one request landed and what it found there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheOutcome {
    pub machine: usize,
    /// It went to a random machine because its routing key was over the rate.
    pub overflowed: bool,
    pub cached_tokens: u64,
    /// Prompt tokens written to the cache (breakpoint rules; always 0 under block rules,
    /// whose writes are free and unreported). Disjoint from `cached_tokens`: each prompt
    /// token is uncached, read or written, once.
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written with a 12-hour lifetime.
    pub cache_write_12h_tokens: u64,
}

/// Running totals, for `/mock/stats` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PromptCacheStats {
    /// Prompts looked up (one per prompt; a legacy completion may carry several).
    pub lookups: u64,
    /// Lookups with `cached_tokens > 0`.
    pub hits: u64,
    /// Lookups routed to a random machine by the overflow rule.
    pub overflowed: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    /// Prompt tokens written (breakpoint rules).
    pub cache_write_tokens: u64,
}

/// The fleet of simulated machines.
#[derive(Debug)]
pub struct PromptCacheSim {
    config: PromptCacheConfig,
    machines: Vec<Machine>,
    /// Recent request times per routing key, at most `overflow_rpm` of them.
    rates: HashMap<u64, VecDeque<u64>>,
    prune_rates_at: usize,
    rng: SplitMix64,
    seed: u64,
    stats: PromptCacheStats,
}

impl PromptCacheSim {
    pub fn new(config: PromptCacheConfig, seed: u64) -> PromptCacheSim {
        let machines = (0..config.machines.max(1))
            .map(|_| Machine::default())
            .collect();
        PromptCacheSim {
            config,
            machines,
            rates: HashMap::new(),
            prune_rates_at: 1024,
            rng: SplitMix64::new(seed ^ 0x5EED_CAC4E),
            seed,
            stats: PromptCacheStats::default(),
        }
    }

    pub fn config(&self) -> &PromptCacheConfig {
        &self.config
    }

    pub fn stats(&self) -> PromptCacheStats {
        self.stats
    }

    /// Forgets every cached prefix, rate and total (`POST /mock/reset`).
    pub fn reset(&mut self) {
        *self = PromptCacheSim::new(self.config.clone(), self.seed);
    }

    /// Serves one prompt under block rules: routes it, looks up its longest cached
    /// prefix on that machine, then caches all its prefixes there. `retention` is how
    /// long they stay idle; `now_ms` is the time of the request on any millisecond clock
    /// that does not go backwards across calls (the mock's clock, or a log's timestamps).
    pub fn serve(
        &mut self,
        prompt: &PromptInfo,
        retention: Retention,
        now_ms: u64,
    ) -> CacheOutcome {
        self.serve_parts(
            prompt.tokens,
            &prompt.blocks,
            prompt.route,
            retention,
            now_ms,
        )
    }

    /// Serves one prompt under the rules `policy` names (see the module docs).
    pub fn serve_with(
        &mut self,
        prompt: &PromptInfo,
        policy: CachePolicy,
        now_ms: u64,
    ) -> CacheOutcome {
        match policy {
            CachePolicy::Blocks(retention) => self.serve(prompt, retention, now_ms),
            CachePolicy::Breakpoints { mode, ttl } => {
                self.serve_breakpoints(prompt, prompt.route, mode, ttl, now_ms)
            }
        }
    }

    /// [`PromptCacheSim::serve_with`] under breakpoint rules with another routing key
    /// (replay compares `prompt_cache_key` policies on one prompt).
    pub fn serve_breakpoints(
        &mut self,
        prompt: &PromptInfo,
        route: u64,
        mode: BreakpointMode,
        request_ttl: CacheTtl,
        now_ms: u64,
    ) -> CacheOutcome {
        self.serve_breakpoint_list(
            prompt.tokens,
            &prompt.breakpoints,
            route,
            mode,
            request_ttl,
            now_ms,
        )
    }

    /// [`PromptCacheSim::serve_breakpoints`] on a prompt's parts: its length and its
    /// breakpoints in order of position (replay adds the proxy's breakpoint to a
    /// logged prompt's without rebuilding it).
    pub fn serve_breakpoint_list(
        &mut self,
        tokens: u64,
        breakpoints: &[Breakpoint],
        route: u64,
        mode: BreakpointMode,
        request_ttl: CacheTtl,
        now_ms: u64,
    ) -> CacheOutcome {
        let now = now_ms;
        self.stats.lookups += 1;
        self.stats.prompt_tokens += tokens;
        if !self.config.enabled {
            return CacheOutcome::default();
        }
        let (machine, overflowed) = self.route(route, now);
        let min = self.config.breakpoint_min_tokens as u64;
        // Breakpoints of this request that can be cached at all, in order of position;
        // each with the lifetime it asks for and whether it is explicit (`Some`), the
        // implicit one (`None`) or inherited from an earlier turn (never written).
        #[derive(Clone, Copy, PartialEq)]
        enum Role {
            Explicit,
            Implicit,
            Inherited,
        }
        let mut eligible: Vec<(u64, u64, CacheTtl, Role)> = Vec::new();
        for b in breakpoints.iter().filter(|b| b.tokens >= min) {
            let (ttl, role) = match b.kind {
                BreakpointKind::Explicit(ttl) => (ttl.unwrap_or(request_ttl), Role::Explicit),
                BreakpointKind::Implicit if mode == BreakpointMode::Implicit => {
                    (request_ttl, Role::Implicit)
                }
                BreakpointKind::Implicit | BreakpointKind::Inherited => {
                    (request_ttl, Role::Inherited)
                }
            };
            // One position, one prefix: an explicit marker where an earlier turn's
            // implicit breakpoint sat is that marker (it may write).
            match eligible.last_mut() {
                Some(last) if last.0 == b.tokens => {
                    if last.3 == Role::Inherited {
                        *last = (b.tokens, b.id, ttl, role);
                    } else if role != Role::Inherited {
                        last.2 = last.2.max(ttl);
                    }
                }
                _ => eligible.push((b.tokens, b.id, ttl, role)),
            }
        }
        // "If there are no explicit breakpoints, the request does not use prompt
        // caching" in explicit mode: no read either.
        if mode == BreakpointMode::Explicit
            && !breakpoints
                .iter()
                .any(|b| matches!(b.kind, BreakpointKind::Explicit(_)))
        {
            eligible.clear();
        }
        // Writes: the implicit breakpoint and the latest three explicit ones, or the
        // latest four explicit ones. Earlier breakpoints are read-only.
        let explicit_slots = match mode {
            BreakpointMode::Implicit => self.config.max_writes.saturating_sub(1),
            BreakpointMode::Explicit => self.config.max_writes,
        };
        let explicit_total = eligible.iter().filter(|b| b.3 == Role::Explicit).count();
        let mut explicit_seen = 0usize;
        let writers: Vec<bool> = eligible
            .iter()
            .map(|b| match b.3 {
                Role::Explicit => {
                    explicit_seen += 1;
                    explicit_seen + explicit_slots > explicit_total
                }
                Role::Implicit => true,
                Role::Inherited => false,
            })
            .collect();
        let lookup_from = eligible
            .len()
            .saturating_sub(self.config.lookup_breakpoints.max(1));
        let cap = self.config.lru_entries.max(1);
        let node = &mut self.machines[machine];
        // Read: the longest prefix among the latest breakpoints found on the machine.
        let hit = eligible[lookup_from..]
            .iter()
            .rposition(|b| node.contains(b.1, now))
            .map(|i| lookup_from + i);
        let cached_tokens = hit.map_or(0, |i| eligible[i].0);
        if let Some(i) = hit {
            let (_, id, ttl, _) = eligible[i];
            node.touch_at_least(id, now, ttl.millis(), cap);
        }
        // Write: every writer not already cached; a cached one is only refreshed.
        let mut written: Vec<(u64, CacheTtl)> = Vec::new();
        for (b, writes) in eligible.iter().zip(&writers) {
            if !writes || Some(b.0) == hit.map(|i| eligible[i].0) {
                continue;
            }
            if !node.contains(b.1, now) {
                written.push((b.0, b.2));
            }
            node.touch_at_least(b.1, now, b.2.millis(), cap);
        }
        // Each prompt token is billed once: the written tokens run from the cached
        // prefix to the furthest new write. A token under several new writes is charged
        // at the longest lifetime among them (12 h costs more; an assumption, see docs).
        let furthest = |only_12h: bool| {
            written
                .iter()
                .filter(|w| !only_12h || w.1 == CacheTtl::Hour12)
                .map(|w| w.0)
                .max()
                .unwrap_or(0)
        };
        let cache_write_tokens = furthest(false).saturating_sub(cached_tokens);
        let cache_write_12h_tokens = furthest(true).saturating_sub(cached_tokens);
        if cached_tokens > 0 {
            self.stats.hits += 1;
            self.stats.cached_tokens += cached_tokens;
        }
        self.stats.cache_write_tokens += cache_write_tokens;
        CacheOutcome {
            machine,
            overflowed,
            cached_tokens,
            cache_write_tokens,
            cache_write_12h_tokens,
        }
    }

    /// The machine a request for `route` lands on, and whether it overflowed there.
    fn route(&mut self, route: u64, now: u64) -> (usize, bool) {
        let overflowed = self.over_rate(route, now);
        let m = self.machines.len() as u64;
        if overflowed {
            self.stats.overflowed += 1;
            (self.rng.below(m) as usize, true)
        } else {
            ((route % m) as usize, false)
        }
    }

    /// [`PromptCacheSim::serve`] on a prompt's parts: its length, its prefix blocks and
    /// a routing key (e.g. [`PromptInfo::route_for`] under another `prompt_cache_key`),
    /// so one prompt's blocks serve several simulations without copies.
    pub fn serve_parts(
        &mut self,
        tokens: u64,
        blocks: &[u64],
        route: u64,
        retention: Retention,
        now_ms: u64,
    ) -> CacheOutcome {
        let now = now_ms;
        self.stats.lookups += 1;
        self.stats.prompt_tokens += tokens;
        if !self.config.enabled {
            return CacheOutcome::default();
        }
        let (machine, overflowed) = self.route(route, now);
        let step = self.config.step_tokens.max(1);
        // Blocks before this index end short of `min_tokens` and are never cached.
        let first = self.config.min_tokens.div_ceil(step).max(1) - 1;
        let blocks = blocks.get(first..).unwrap_or(&[]);
        let ttl = match retention {
            Retention::InMemory => self.config.idle_ttl,
            Retention::Extended => EXTENDED_CACHE_TTL,
        };
        let cap = self.config.lru_entries.max(1);
        let node = &mut self.machines[machine];
        let cached_blocks = blocks
            .iter()
            .rposition(|h| node.contains(*h, now))
            .map_or(0, |i| first + i + 1);
        for h in blocks {
            node.touch(*h, now, ttl, cap);
        }
        let cached_tokens = (cached_blocks * step) as u64;
        if cached_tokens > 0 {
            self.stats.hits += 1;
            self.stats.cached_tokens += cached_tokens;
        }
        CacheOutcome {
            machine,
            overflowed,
            cached_tokens,
            ..CacheOutcome::default()
        }
    }

    /// Records a request for `route` and says whether the key was already past the rate.
    fn over_rate(&mut self, route: u64, now: u64) -> bool {
        let limit = self.config.overflow_rpm as usize;
        if self.rates.len() >= self.prune_rates_at {
            self.rates.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_sub(*t) < MINUTE_MS)
            });
            self.prune_rates_at = (self.rates.len() * 2).max(1024);
        }
        let times = self.rates.entry(route).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= MINUTE_MS)
        {
            times.pop_front();
        }
        let over = limit == 0 || times.len() >= limit;
        times.push_back(now);
        while times.len() > limit.max(1) {
            times.pop_front();
        }
        over
    }
}

/// How long a request's prefixes stay cached while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The default: the configured idle TTL (minutes).
    InMemory,
    /// `prompt_cache_retention: "24h"`.
    Extended,
}

impl Retention {
    pub fn from_request(value: Option<&str>) -> Retention {
        match value {
            Some("24h") => Retention::Extended,
            _ => Retention::InMemory,
        }
    }
}

/// One machine's cache: prefix identity → (LRU stamp, expiry), and stamps in LRU order.
#[derive(Debug, Default)]
struct Machine {
    entries: HashMap<u64, Slot>,
    lru: BTreeMap<u64, u64>,
    next_stamp: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    stamp: u64,
    expires_ms: u64,
}

impl Machine {
    fn contains(&mut self, h: u64, now: u64) -> bool {
        match self.entries.get(&h) {
            Some(s) if s.expires_ms > now => true,
            Some(s) => {
                let stamp = s.stamp;
                self.entries.remove(&h);
                self.lru.remove(&stamp);
                false
            }
            None => false,
        }
    }

    fn touch(&mut self, h: u64, now: u64, ttl: Duration, cap: usize) {
        let expires_ms = now.saturating_add(ttl.as_millis() as u64);
        self.put(h, expires_ms, cap);
    }

    /// Uses `h` and keeps it at least `ttl_ms` from now, never shortening a longer life
    /// an earlier request gave it (a TTL is a minimum lifetime).
    fn touch_at_least(&mut self, h: u64, now: u64, ttl_ms: u64, cap: usize) {
        let mut expires_ms = now.saturating_add(ttl_ms);
        if let Some(s) = self.entries.get(&h) {
            expires_ms = expires_ms.max(s.expires_ms);
        }
        self.put(h, expires_ms, cap);
    }

    fn put(&mut self, h: u64, expires_ms: u64, cap: usize) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(old) = self.entries.insert(h, Slot { stamp, expires_ms }) {
            self.lru.remove(&old.stamp);
        }
        self.lru.insert(stamp, h);
        while self.entries.len() > cap {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Test time: clones share it and `advance` moves it, as the mock's `ManualClock`.
    #[derive(Clone, Default)]
    struct ManualClock(Rc<Cell<u64>>);

    impl ManualClock {
        fn new() -> ManualClock {
            ManualClock::default()
        }
        fn advance(&self, by: Duration) {
            self.0.set(self.0.get() + by.as_millis() as u64);
        }
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
    }

    /// A simulation whose requests are served at the clock's time.
    struct Sim {
        sim: PromptCacheSim,
        clock: ManualClock,
    }

    impl Sim {
        fn serve(&mut self, p: &PromptInfo, r: Retention) -> CacheOutcome {
            self.sim.serve(p, r, self.clock.now_ms())
        }
        fn stats(&self) -> PromptCacheStats {
            self.sim.stats()
        }
    }

    fn sim(config: PromptCacheConfig) -> (Sim, ManualClock) {
        let clock = ManualClock::new();
        (
            Sim {
                sim: PromptCacheSim::new(config, 7),
                clock: clock.clone(),
            },
            clock,
        )
    }

    fn prompt(tokens: &[u32], key: Option<&str>) -> PromptInfo {
        PromptInfo::new(tokens, 128, 256, key)
    }

    fn seq(start: u32, len: u32) -> Vec<u32> {
        (start..start + len).collect()
    }

    #[test]
    fn same_prefix_twice_hits_the_second_time() {
        let (mut s, _) = sim(PromptCacheConfig::default());
        let p = prompt(&seq(0, 2000), None);
        assert_eq!(s.serve(&p, Retention::InMemory).cached_tokens, 0);
        // 2000 tokens: the longest 128-step prefix is 15 * 128 = 1920.
        assert_eq!(s.serve(&p, Retention::InMemory).cached_tokens, 1920);
        let st = s.stats();
        assert_eq!(
            (st.lookups, st.hits, st.cached_tokens, st.prompt_tokens),
            (2, 1, 1920, 4000)
        );
    }

    #[test]
    fn prompts_under_1024_tokens_are_never_cached() {
        let (mut s, _) = sim(PromptCacheConfig::default());
        let p = prompt(&seq(0, 1023), None);
        for _ in 0..5 {
            assert_eq!(s.serve(&p, Retention::InMemory).cached_tokens, 0);
        }
        let p = prompt(&seq(0, 1024), None);
        s.serve(&p, Retention::InMemory);
        assert_eq!(s.serve(&p, Retention::InMemory).cached_tokens, 1024);
    }

    #[test]
    fn hits_come_in_128_token_steps_of_the_shared_prefix() {
        let (mut s, _) = sim(PromptCacheConfig::default());
        let base = seq(0, 1500);
        s.serve(&prompt(&base, None), Retention::InMemory);
        for diverge_at in [1024usize, 1100, 1151, 1152, 1280, 1499] {
            let mut other = base.clone();
            other[diverge_at] = 999_999;
            other.extend(seq(50_000, 400));
            let cached = s
                .serve(&prompt(&other, None), Retention::InMemory)
                .cached_tokens;
            assert_eq!(
                cached,
                (diverge_at as u64 / 128) * 128,
                "diverged at {diverge_at}"
            );
            assert!(cached == 0 || (cached >= 1024 && cached % 128 == 0));
        }
        // Diverging before 1024 leaves nothing cacheable in common.
        let mut early = base.clone();
        early[1000] = 999_999;
        assert_eq!(
            s.serve(&prompt(&early, None), Retention::InMemory)
                .cached_tokens,
            0
        );
    }

    #[test]
    fn idle_entries_expire_and_use_refreshes_them() {
        let (mut s, clock) = sim(PromptCacheConfig {
            idle_ttl: Duration::from_secs(300),
            ..PromptCacheConfig::default()
        });
        let p = prompt(&seq(0, 1300), None);
        s.serve(&p, Retention::InMemory);
        clock.advance(Duration::from_secs(299));
        assert_eq!(
            s.serve(&p, Retention::InMemory).cached_tokens,
            1280,
            "refreshed"
        );
        clock.advance(Duration::from_secs(299));
        assert_eq!(s.serve(&p, Retention::InMemory).cached_tokens, 1280);
        clock.advance(Duration::from_secs(301));
        assert_eq!(s.serve(&p, Retention::InMemory).cached_tokens, 0, "expired");
        // 24 h retention outlives the idle TTL.
        let q = prompt(&seq(10_000, 1300), None);
        s.serve(&q, Retention::Extended);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(s.serve(&q, Retention::Extended).cached_tokens, 1280);
    }

    #[test]
    fn lru_evicts_the_least_recently_used_prefix() {
        let (mut s, _) = sim(PromptCacheConfig {
            machines: 1,
            lru_entries: 2,
            ..PromptCacheConfig::default()
        });
        let (a, b, c) = (
            prompt(&seq(0, 1024), None),
            prompt(&seq(10_000, 1024), None),
            prompt(&seq(20_000, 1024), None),
        );
        s.serve(&a, Retention::InMemory);
        s.serve(&b, Retention::InMemory);
        s.serve(&a, Retention::InMemory); // a is now more recent than b
        s.serve(&c, Retention::InMemory); // evicts b
        assert_eq!(s.serve(&a, Retention::InMemory).cached_tokens, 1024);
        assert_eq!(s.serve(&b, Retention::InMemory).cached_tokens, 0);
    }

    #[test]
    fn over_the_rate_requests_overflow_to_random_machines() {
        let (mut s, clock) = sim(PromptCacheConfig {
            machines: 16,
            ..PromptCacheConfig::default()
        });
        let p = prompt(&seq(0, 1100), None);
        let home = s.serve(&p, Retention::InMemory).machine;
        for _ in 1..15 {
            let o = s.serve(&p, Retention::InMemory);
            assert_eq!((o.machine, o.overflowed), (home, false));
        }
        let spread: Vec<CacheOutcome> = (0..40).map(|_| s.serve(&p, Retention::InMemory)).collect();
        assert!(spread.iter().all(|o| o.overflowed));
        let machines: std::collections::HashSet<usize> = spread.iter().map(|o| o.machine).collect();
        assert!(machines.len() > 4, "overflow spread over {machines:?}");
        // A minute later the rate window is empty again.
        clock.advance(Duration::from_secs(61));
        let o = s.serve(&p, Retention::InMemory);
        assert_eq!((o.machine, o.overflowed), (home, false));
    }

    /// Many conversations share one long system prompt and grow turn by turn, at a total
    /// rate far above the overflow threshold. Without a key they all share one routing
    /// key (same first 256 tokens), overflow, and scatter over cold machines; with one key
    /// per conversation each stays on its home machine and hits its previous turn.
    #[test]
    fn a_per_conversation_key_yields_more_cached_tokens_under_high_rate() {
        fn run(with_key: bool) -> PromptCacheStats {
            let clock = ManualClock::new();
            let mut s = Sim {
                sim: PromptCacheSim::new(PromptCacheConfig::default(), 3),
                clock: clock.clone(),
            };
            let system = seq(0, 1200);
            let conversations = 40u32;
            let turns = 8u32;
            let mut histories: Vec<Vec<u32>> = (0..conversations).map(|_| system.clone()).collect();
            for _turn in 0..turns {
                for (c, h) in histories.iter_mut().enumerate() {
                    // Each turn adds a user message and the assistant's reply.
                    let base = 1_000_000 + (c as u32) * 100_000 + h.len() as u32;
                    h.extend(seq(base, 300));
                    let key = format!("conversation-{c}");
                    let p = PromptInfo::new(h, 128, 256, with_key.then_some(key.as_str()));
                    s.serve(&p, Retention::InMemory);
                    // 40 conversations every 20 s: 120 requests per minute in total.
                    clock.advance(Duration::from_millis(500));
                }
            }
            s.stats()
        }
        let without = run(false);
        let with = run(true);
        let share = |st: PromptCacheStats| st.cached_tokens as f64 / st.prompt_tokens as f64;
        assert!(without.overflowed > 0 && with.overflowed == 0);
        eprintln!(
            "cached share: with key {:.3}, without {:.3}",
            share(with),
            share(without)
        );
        assert!(
            share(with) > share(without) + 0.15,
            "with key {:.2}, without {:.2}",
            share(with),
            share(without)
        );
    }

    // ---- Breakpoint rules (GPT-5.6 and later) ------------------------------------------

    use crate::provider::prompt::{Mark, MarkKind};

    const IMPLICIT_30M: CachePolicy = CachePolicy::BREAKPOINTS_DEFAULT;
    const EXPLICIT_30M: CachePolicy = CachePolicy::Breakpoints {
        mode: BreakpointMode::Explicit,
        ttl: CacheTtl::Min30,
    };

    fn user_end(pos: u64) -> Mark {
        Mark {
            pos,
            kind: MarkKind::MessageEnd { eligible: true },
        }
    }

    fn explicit(pos: u64, ttl: Option<CacheTtl>) -> Mark {
        Mark {
            pos,
            kind: MarkKind::Explicit(ttl),
        }
    }

    fn marked(tokens: &[u32], marks: &[Mark]) -> PromptInfo {
        PromptInfo::with_marks(tokens, marks, 128, 256, Some("k"))
    }

    /// A 2000-token system prompt, then a 100-token user message that starts at
    /// `tail_start` in token-id space (a different start = a different message).
    fn agent_prompt(tail_start: u32, breakpoint_on_system: bool) -> PromptInfo {
        let mut t = seq(0, 2000);
        t.extend(seq(tail_start, 100));
        let mut marks = vec![user_end(2000)];
        if breakpoint_on_system {
            marks.push(explicit(2000, None));
        }
        marks.push(user_end(2100));
        marked(&t, &marks)
    }

    fn one_machine() -> PromptCacheConfig {
        PromptCacheConfig {
            machines: 1,
            ..PromptCacheConfig::default()
        }
    }

    fn served(s: &mut Sim, p: &PromptInfo, policy: CachePolicy) -> (u64, u64) {
        let o = s.sim.serve_with(p, policy, s.clock.now_ms());
        (o.cached_tokens, o.cache_write_tokens)
    }

    #[test]
    fn implicit_breakpoint_sits_at_the_latest_user_message() {
        let (mut s, _) = sim(one_machine());
        // The last eligible message end is the implicit breakpoint; the system message's
        // end is an inherited (read-only) one.
        let a = agent_prompt(100_000, false);
        let kinds: Vec<(u64, BreakpointKind)> =
            a.breakpoints.iter().map(|b| (b.tokens, b.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (2000, BreakpointKind::Inherited),
                (2100, BreakpointKind::Implicit)
            ]
        );
        // First call writes the whole prompt; the same prompt again reads it all.
        assert_eq!(served(&mut s, &a, IMPLICIT_30M), (0, 2100));
        assert_eq!(served(&mut s, &a, IMPLICIT_30M), (2100, 0));
        // A new user message behind the same 2000-token system prompt finds nothing:
        // the implicit breakpoint sits after the changing tail (no 128-token fallback).
        let b = agent_prompt(200_000, false);
        assert_eq!(served(&mut s, &b, IMPLICIT_30M), (0, 2100));
    }

    #[test]
    fn an_explicit_breakpoint_on_the_stable_prefix_is_read_by_the_next_request() {
        let (mut s, _) = sim(one_machine());
        let a = agent_prompt(100_000, true);
        // Writes the explicit (2000) and the implicit (2100) breakpoint: 2100 tokens.
        assert_eq!(served(&mut s, &a, IMPLICIT_30M), (0, 2100));
        // Another tail: reads the 2000-token system prompt, writes its own 100 tokens.
        let b = agent_prompt(200_000, true);
        assert_eq!(served(&mut s, &b, IMPLICIT_30M), (2000, 100));
        // Explicit mode: no implicit write, so the tail is neither read nor written.
        let c = agent_prompt(300_000, true);
        assert_eq!(served(&mut s, &c, EXPLICIT_30M), (2000, 0));
        // Explicit mode without markers: no caching and no writes at all.
        let d = agent_prompt(400_000, false);
        assert_eq!(served(&mut s, &d, EXPLICIT_30M), (0, 0));
        assert_eq!(served(&mut s, &d, EXPLICIT_30M), (0, 0));
        let st = s.stats();
        assert_eq!((st.cached_tokens, st.cache_write_tokens), (4000, 2200));
    }

    /// Six explicit breakpoints at 1100..=1600 and the implicit one at 1700.
    fn six_markers(diverge_at: usize) -> PromptInfo {
        let mut t = seq(0, 1700);
        for x in &mut t[diverge_at..] {
            *x += 500_000;
        }
        let mut marks: Vec<Mark> = (11..=16).map(|i| explicit(i * 100, None)).collect();
        marks.push(user_end(1700));
        marked(&t, &marks)
    }

    #[test]
    fn a_request_writes_at_most_four_breakpoints() {
        // Implicit mode writes 1700 and the latest three explicit ones (1400, 1500,
        // 1600); 1100..1300 are read-only. A request sharing only the first 1350 tokens
        // therefore finds nothing.
        let (mut s, _) = sim(one_machine());
        assert_eq!(served(&mut s, &six_markers(1700), IMPLICIT_30M), (0, 1700));
        assert_eq!(served(&mut s, &six_markers(1350), IMPLICIT_30M), (0, 1700));
        // Explicit mode writes the latest four (1300..1600): the same follower reads 1300
        // and writes nothing (its own 1400..1600 are new, but explicit mode writes only the
        // latest four of its own breakpoints, 1300..1600, of which 1400..1600 differ).
        let (mut s, _) = sim(one_machine());
        assert_eq!(served(&mut s, &six_markers(1700), EXPLICIT_30M), (0, 1600));
        assert_eq!(
            served(&mut s, &six_markers(1350), EXPLICIT_30M),
            (1300, 300)
        );
    }

    #[test]
    fn breakpoints_below_1024_tokens_are_never_cached() {
        let (mut s, _) = sim(one_machine());
        let short = marked(&seq(0, 1023), &[user_end(1023)]);
        assert_eq!(served(&mut s, &short, IMPLICIT_30M), (0, 0));
        assert_eq!(served(&mut s, &short, IMPLICIT_30M), (0, 0));
        let exact = marked(&seq(0, 1024), &[user_end(1024)]);
        assert_eq!(served(&mut s, &exact, IMPLICIT_30M), (0, 1024));
        assert_eq!(served(&mut s, &exact, IMPLICIT_30M), (1024, 0));
        // Not rounded to 128: a breakpoint at 1031 tokens hits 1031.
        let odd = marked(&seq(10_000, 1031), &[user_end(1031)]);
        served(&mut s, &odd, IMPLICIT_30M);
        assert_eq!(served(&mut s, &odd, IMPLICIT_30M), (1031, 0));
    }

    #[test]
    fn entries_live_at_least_their_ttl_after_last_use() {
        let (mut s, clock) = sim(one_machine());
        let p = marked(&seq(0, 1500), &[user_end(1500)]);
        served(&mut s, &p, IMPLICIT_30M);
        clock.advance(Duration::from_secs(30 * 60 - 1));
        assert_eq!(served(&mut s, &p, IMPLICIT_30M), (1500, 0), "within 30 min");
        clock.advance(Duration::from_secs(30 * 60 - 1));
        assert_eq!(
            served(&mut s, &p, IMPLICIT_30M),
            (1500, 0),
            "a read refreshes"
        );
        clock.advance(Duration::from_secs(30 * 60 + 1));
        assert_eq!(
            served(&mut s, &p, IMPLICIT_30M),
            (0, 1500),
            "expired, rewritten"
        );
        // 12 hours requested per request (Responses) or per breakpoint.
        let twelve = CachePolicy::Breakpoints {
            mode: BreakpointMode::Implicit,
            ttl: CacheTtl::Hour12,
        };
        let q = marked(&seq(50_000, 1500), &[user_end(1500)]);
        let o = s.sim.serve_with(&q, twelve, clock.now_ms());
        assert_eq!(
            (o.cache_write_tokens, o.cache_write_12h_tokens),
            (1500, 1500)
        );
        clock.advance(Duration::from_secs(11 * 3600));
        // A 30-minute read never shortens the 12-hour life.
        assert_eq!(served(&mut s, &q, IMPLICIT_30M), (1500, 0));
        // That read asked for 30 min (to 11 h 30 min), which ends before the 12 h do.
        clock.advance(Duration::from_secs(3600 + 1));
        assert_eq!(
            served(&mut s, &q, IMPLICIT_30M),
            (0, 1500),
            "12 h 1 s: gone"
        );
    }

    #[test]
    fn written_tokens_are_split_by_lifetime() {
        let (mut s, _) = sim(one_machine());
        // 12 h explicit breakpoint at 1500, implicit 30 min at 2000: tokens 1..=1500 are in
        // the 12 h entry (and the 30 min one), 1501..=2000 only in the 30 min one.
        let p = marked(
            &seq(0, 2000),
            &[explicit(1500, Some(CacheTtl::Hour12)), user_end(2000)],
        );
        let o = s.sim.serve_with(&p, IMPLICIT_30M, 0);
        assert_eq!(
            (
                o.cached_tokens,
                o.cache_write_tokens,
                o.cache_write_12h_tokens
            ),
            (0, 2000, 1500)
        );
        // The same prefix with a new tail: reads 1500, writes 500 at 30 min.
        let mut t = seq(0, 1500);
        t.extend(seq(90_000, 500));
        let q = marked(
            &t,
            &[explicit(1500, Some(CacheTtl::Hour12)), user_end(2000)],
        );
        let o = s.sim.serve_with(&q, IMPLICIT_30M, 1);
        assert_eq!(
            (
                o.cached_tokens,
                o.cache_write_tokens,
                o.cache_write_12h_tokens
            ),
            (1500, 500, 0)
        );
    }

    #[test]
    fn only_the_latest_breakpoints_are_looked_up() {
        let (mut s, _) = sim(PromptCacheConfig {
            lookup_breakpoints: 2,
            ..one_machine()
        });
        let first = marked(&seq(0, 1100), &[explicit(1100, None)]);
        served(&mut s, &first, EXPLICIT_30M);
        // 1100 is cached, but a request with three later breakpoints looks up only its
        // latest two (1300, 1400).
        let marks = [
            explicit(1100, None),
            explicit(1200, None),
            explicit(1300, None),
            explicit(1400, None),
        ];
        let p = marked(&seq(0, 1400), &marks);
        assert_eq!(served(&mut s, &p, EXPLICIT_30M), (0, 1400));
        let near = marked(&seq(0, 1200), &marks[..2]);
        let (mut s2, _) = sim(PromptCacheConfig {
            lookup_breakpoints: 2,
            ..one_machine()
        });
        served(&mut s2, &first, EXPLICIT_30M);
        assert_eq!(served(&mut s2, &near, EXPLICIT_30M), (1100, 100));
    }

    #[test]
    fn the_same_seed_and_requests_give_the_same_outcomes() {
        fn run(seed: u64) -> Vec<CacheOutcome> {
            let mut sim = PromptCacheSim::new(PromptCacheConfig::default(), seed);
            let p = agent_prompt(100_000, true);
            // 40 requests in 20 s: past the overflow rate, so the seeded draw matters.
            (0..40u64)
                .map(|i| sim.serve_with(&p, CachePolicy::BREAKPOINTS_DEFAULT, i * 500))
                .collect()
        }
        assert_eq!(run(1), run(1));
        assert_ne!(
            run(1).iter().map(|o| o.machine).collect::<Vec<_>>(),
            run(2).iter().map(|o| o.machine).collect::<Vec<_>>()
        );
    }

    /// A conversation's next turn reads what the previous turn's implicit breakpoint
    /// wrote: its end is an eligible message end of the longer prompt.
    #[test]
    fn the_next_turn_reads_the_previous_turns_implicit_breakpoint() {
        let (mut s, _) = sim(one_machine());
        let turn1 = seq(0, 1500);
        let p1 = marked(&turn1, &[user_end(1200), user_end(1500)]);
        assert_eq!(served(&mut s, &p1, IMPLICIT_30M), (0, 1500));
        // Turn 2: turn 1's prompt, the assistant's answer, a new user message.
        let mut turn2 = turn1.clone();
        turn2.extend(seq(700_000, 300));
        let asst_end = Mark {
            pos: 1700,
            kind: MarkKind::MessageEnd { eligible: false },
        };
        let p2 = marked(
            &turn2,
            &[user_end(1200), user_end(1500), asst_end, user_end(1800)],
        );
        assert_eq!(served(&mut s, &p2, IMPLICIT_30M), (1500, 300));
        // Explicit mode writes no implicit entry, but a request with a marker still reads
        // an inherited one.
        let mut turn3 = turn2.clone();
        turn3.extend(seq(800_000, 200));
        let p3 = marked(
            &turn3,
            &[
                user_end(1200),
                user_end(1500),
                asst_end,
                user_end(1800),
                explicit(2000, None),
                user_end(2000),
            ],
        );
        assert_eq!(served(&mut s, &p3, EXPLICIT_30M), (1800, 200));
    }

    #[test]
    fn rules_by_model() {
        for m in [
            "gpt-5.6",
            "gpt-5.6-sol",
            "gpt-5.6-terra-2026-07-09",
            "gpt-5.7",
            "gpt-6",
            "gpt-6-luna",
            "gpt-6.1-terra",
            "gpt-6.2-sol",
            "gpt-10",
            "ft:gpt-5.6-luna:acme::x1",
        ] {
            assert_eq!(CacheRules::for_model(m), CacheRules::Breakpoints, "{m}");
        }
        for m in [
            "gpt-5.5",
            "gpt-5.5-pro",
            "gpt-5",
            "gpt-5-mini",
            "gpt-4o",
            "gpt-4.1-nano",
            "o3",
            "text-embedding-3-small",
            "gpt-",
            "gpt-x.6",
            "my-gpt-6",
        ] {
            assert_eq!(CacheRules::for_model(m), CacheRules::Blocks, "{m}");
        }
    }
}
