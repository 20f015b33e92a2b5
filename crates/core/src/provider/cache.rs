//! The simulated provider prompt cache (DESIGN.md §7, §10), built from OpenAI's documented
//! behaviour only: prompts of at least 1024 tokens can hit, in 128-token steps; a request
//! is routed by a hash of its first ~256 tokens combined with `prompt_cache_key`; past
//! ~15 requests per minute for one such combination, requests overflow to other machines;
//! each machine keeps prefixes in memory for minutes of idleness (24 h with
//! `prompt_cache_retention: "24h"`).
//!
//! Time is an argument of [`PromptCacheSim::serve`], so the mock drives it from its
//! clock and `prefixcache replay` from a log's timestamps.
//!
//! Each machine holds an LRU of prefix identities (one per 128-token boundary at or past
//! 1024 tokens). A request's `cached_tokens` is the longest of its prefixes present on the
//! machine it lands on; after it is served, the machine holds all of its prefixes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::prompt::PromptInfo;
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

/// Parameters of the simulated provider prompt cache (DESIGN.md §7, §10).
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
        }
    }
}

/// Where one request landed and what it found there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOutcome {
    pub machine: usize,
    /// It went to a random machine because its routing key was over the rate.
    pub overflowed: bool,
    pub cached_tokens: u64,
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

    /// Serves one prompt: routes it, looks up its longest cached prefix on that machine,
    /// then caches all its prefixes there. `retention` is how long they stay idle;
    /// `now_ms` is the time of the request on any millisecond clock that does not go
    /// backwards across calls (the mock's clock, or a log's timestamps).
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
            return CacheOutcome {
                machine: 0,
                overflowed: false,
                cached_tokens: 0,
            };
        }
        let overflowed = self.over_rate(route, now);
        let m = self.machines.len() as u64;
        let machine = if overflowed {
            self.stats.overflowed += 1;
            self.rng.below(m) as usize
        } else {
            (route % m) as usize
        };
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
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let expires_ms = now.saturating_add(ttl.as_millis() as u64);
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
}
