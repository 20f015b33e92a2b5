//! The busiest prefix families of this replica: requests and hit rate over the last
//! hour, the static prefix and whether the provider can cache it, and the live lint
//! findings on their prefix windows (rule, kind and token span: never prompt text).
//!
//! Bounded: at most [`CAPACITY`] families; when full, a new family replaces the one
//! with the least traffic in the last hour, so busy families stay and one-off families
//! (a request id at the start of every prompt) take turns in the last places.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use prefixcache_core::key::FamilyId;
use prefixcache_core::lint::{Finding, Rule, Severity};
use rustc_hash::FxHashMap;

/// Families tracked at most.
pub const CAPACITY: usize = 256;
/// Distinct findings remembered per family (the most recent win).
const FINDINGS_PER_FAMILY: usize = 6;
/// A family's static prefix is measured on its first forwarded requests and then on
/// every this many (when the prompt is too short for the provider's cache to need it
/// anyway): enough to see it vary, without tokenizing every miss.
const STATIC_SAMPLE_EVERY: u64 = 32;
/// Forwarded requests of a family whose static prefix is always measured.
const STATIC_FIRST: u64 = 8;
/// Width of one per-family traffic bucket.
pub const BUCKET_MS: u64 = 600_000;
/// Buckets kept per family: the last hour at 10-minute granularity (the current
/// bucket and the six before it).
const BUCKETS: usize = 7;

/// How one request of a family was answered, as far as hit rates go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// From the response cache: a hit or a coalesced follower.
    Cached,
    /// Looked up, not found, forwarded.
    Missed,
    /// Forwarded without a lookup (`no-cache`, sampled requests).
    Bypassed,
}

/// The static part of a forwarded request's prompt (tools, schema, instructions,
/// system and developer messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticPrefix {
    /// BLAKE3 of its text: tells whether requests of a family share it.
    pub digest: [u8; 32],
    /// Its length in tokens, counted up to [`StaticPrefix::LIMIT`].
    pub tokens: u32,
}

impl StaticPrefix {
    /// Counting stops here: the figure means "at least" at this value.
    pub const LIMIT: usize = 4096;
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// `at_ms / BUCKET_MS` of the requests counted.
    epoch: u64,
    requests: u64,
    cached: u64,
    missed: u64,
}

/// A finding as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFinding {
    pub rule: Rule,
    pub kind: &'static str,
    pub severity: Severity,
    /// Token indices in the family's prefix window.
    pub tokens: Range<usize>,
    /// Requests that carried it.
    pub count: u64,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone)]
struct Stats {
    strategy: &'static str,
    route: &'static str,
    first_seen_ms: u64,
    last_seen_ms: u64,
    buckets: [Bucket; BUCKETS],
    requests: u64,
    cached: u64,
    missed: u64,
    forwarded: u64,
    cacheable: u64,
    static_prefix: Option<StaticPrefix>,
    /// Forwarded requests of the family came with different static parts.
    static_varies: bool,
    findings: Vec<LiveFinding>,
}

impl Stats {
    fn new(strategy: &'static str, route: &'static str, now_ms: u64) -> Stats {
        Stats {
            strategy,
            route,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            buckets: [Bucket::default(); BUCKETS],
            requests: 0,
            cached: 0,
            missed: 0,
            forwarded: 0,
            cacheable: 0,
            static_prefix: None,
            static_varies: false,
            findings: Vec::new(),
        }
    }

    fn bucket(&mut self, now_ms: u64) -> &mut Bucket {
        let epoch = now_ms / BUCKET_MS;
        let b = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b
    }

    /// (requests, cached, missed) in the buckets of the last hour.
    fn last_hour(&self, now_ms: u64) -> (u64, u64, u64) {
        let now = now_ms / BUCKET_MS;
        self.buckets
            .iter()
            .filter(|b| b.epoch + (BUCKETS as u64) > now && b.epoch <= now)
            .fold((0, 0, 0), |(r, c, m), b| {
                (r + b.requests, c + b.cached, m + b.missed)
            })
    }
}

/// A family as the summary shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyView {
    pub id: FamilyId,
    pub strategy: &'static str,
    pub route: &'static str,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub requests_last_hour: u64,
    pub cached_last_hour: u64,
    pub missed_last_hour: u64,
    pub requests: u64,
    pub cached: u64,
    pub missed: u64,
    pub forwarded: u64,
    pub cacheable: u64,
    pub static_prefix: Option<StaticPrefix>,
    pub static_varies: bool,
    pub findings: Vec<LiveFinding>,
}

/// Findings of one rule and kind in one strategy, over every family.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingTally {
    pub strategy: &'static str,
    pub rule: Rule,
    pub kind: &'static str,
    pub severity: Severity,
    pub count: u64,
    /// Families it was seen in (each counted once while tracked).
    pub families: u64,
    pub last_tokens: Range<usize>,
    pub last_family: FamilyId,
    pub last_seen_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Family ids are BLAKE3 output already: FxHash is plenty, and cheaper on the hit
    /// path than SipHash.
    families: FxHashMap<FamilyId, Stats>,
    /// By (strategy, rule, kind): bounded by the configured strategies, the rules and
    /// the kinds the rules name (a fixed set of words).
    tallies: HashMap<(&'static str, Rule, &'static str), FindingTally>,
}

/// The family tracker (see the module docs).
#[derive(Debug, Default)]
pub struct Families {
    inner: Mutex<Inner>,
}

impl Families {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each update is a handful of field writes on one entry: a poisoned map is
        // still consistent enough to show.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one answered request of `family`.
    pub fn request(
        &self,
        family: FamilyId,
        strategy: &'static str,
        route: &'static str,
        answer: Answer,
        now_ms: u64,
    ) {
        let mut inner = self.lock();
        let s = entry(&mut inner.families, family, strategy, route, now_ms);
        s.last_seen_ms = s.last_seen_ms.max(now_ms);
        s.strategy = strategy;
        s.route = route;
        let (cached, missed) = match answer {
            Answer::Cached => (1, 0),
            Answer::Missed => (0, 1),
            Answer::Bypassed => (0, 0),
        };
        s.requests += 1;
        s.cached += cached;
        s.missed += missed;
        let b = s.bucket(now_ms);
        b.requests += 1;
        b.cached += cached;
        b.missed += missed;
    }

    /// Whether the next forwarded request of `family` should have its static prefix
    /// measured for the dashboard (see [`STATIC_SAMPLE_EVERY`]).
    pub fn wants_static_prefix(&self, family: FamilyId) -> bool {
        // A family not in the table yet is about to be: its first requests are measured.
        self.lock().families.get(&family).is_none_or(|s| {
            s.static_prefix.is_none()
                || s.forwarded < STATIC_FIRST
                || s.forwarded % STATIC_SAMPLE_EVERY == 0
        })
    }

    /// Records what is known about a forwarded request's prompt: its static part
    /// (`None` when not measured, or for routes without one) and whether the provider
    /// could cache it.
    pub fn forwarded(
        &self,
        family: FamilyId,
        static_prefix: Option<StaticPrefix>,
        cacheable: bool,
    ) {
        let mut inner = self.lock();
        let Some(s) = inner.families.get_mut(&family) else {
            return;
        };
        s.forwarded += 1;
        s.cacheable += u64::from(cacheable);
        if let Some(new) = static_prefix {
            match s.static_prefix {
                Some(old) if old.digest != new.digest => {
                    s.static_varies = true;
                    // Keep the shorter: what the requests can have in common at most.
                    if new.tokens < old.tokens {
                        s.static_prefix = Some(new);
                    }
                }
                Some(_) => {}
                None => s.static_prefix = Some(new),
            }
        }
    }

    /// Records the findings on one request of `family` (the same set
    /// `lint_findings_total` counts).
    pub fn findings(
        &self,
        family: FamilyId,
        strategy: &'static str,
        findings: &[Finding],
        now_ms: u64,
    ) {
        if findings.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let Inner { families, tallies } = &mut *inner;
        // The request is recorded (with its route) when it has been answered.
        let s = entry(families, family, strategy, "", now_ms);
        for f in findings {
            let tokens = f.token_span.clone();
            let new_in_family = match s
                .findings
                .iter_mut()
                .find(|l| l.rule == f.rule && l.kind == f.kind && l.tokens == tokens)
            {
                Some(l) => {
                    l.count += 1;
                    l.last_seen_ms = now_ms;
                    false
                }
                None => {
                    let seen_before = s
                        .findings
                        .iter()
                        .any(|l| l.rule == f.rule && l.kind == f.kind);
                    if s.findings.len() >= FINDINGS_PER_FAMILY
                        && let Some(oldest) = s
                            .findings
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, l)| l.last_seen_ms)
                            .map(|(i, _)| i)
                    {
                        s.findings.swap_remove(oldest);
                    }
                    s.findings.push(LiveFinding {
                        rule: f.rule,
                        kind: f.kind,
                        severity: f.severity,
                        tokens: tokens.clone(),
                        count: 1,
                        last_seen_ms: now_ms,
                    });
                    !seen_before
                }
            };
            let t = tallies
                .entry((strategy, f.rule, f.kind))
                .or_insert_with(|| FindingTally {
                    strategy,
                    rule: f.rule,
                    kind: f.kind,
                    severity: f.severity,
                    count: 0,
                    families: 0,
                    last_tokens: tokens.clone(),
                    last_family: family,
                    last_seen_ms: now_ms,
                });
            t.count += 1;
            t.families += u64::from(new_in_family);
            t.severity = t.severity.max(f.severity);
            t.last_tokens = tokens;
            t.last_family = family;
            t.last_seen_ms = now_ms;
        }
    }

    /// The `n` families with the most requests in the last hour (then the most recent).
    pub fn top(&self, n: usize, now_ms: u64) -> Vec<FamilyView> {
        let inner = self.lock();
        let mut views: Vec<FamilyView> = inner
            .families
            .iter()
            .map(|(id, s)| {
                let (requests_last_hour, cached_last_hour, missed_last_hour) = s.last_hour(now_ms);
                let mut findings = s.findings.clone();
                findings.sort_by(|a, b| {
                    (b.severity, a.rule, a.tokens.start).cmp(&(a.severity, b.rule, b.tokens.start))
                });
                FamilyView {
                    id: *id,
                    strategy: s.strategy,
                    route: s.route,
                    first_seen_ms: s.first_seen_ms,
                    last_seen_ms: s.last_seen_ms,
                    requests_last_hour,
                    cached_last_hour,
                    missed_last_hour,
                    requests: s.requests,
                    cached: s.cached,
                    missed: s.missed,
                    forwarded: s.forwarded,
                    cacheable: s.cacheable,
                    static_prefix: s.static_prefix,
                    static_varies: s.static_varies,
                    findings,
                }
            })
            .filter(|v| v.requests_last_hour > 0)
            .collect();
        views.sort_by(|a, b| {
            (b.requests_last_hour, b.last_seen_ms, a.id.as_bytes()).cmp(&(
                a.requests_last_hour,
                a.last_seen_ms,
                b.id.as_bytes(),
            ))
        });
        views.truncate(n);
        views
    }

    /// Every finding tally, most frequent first.
    pub fn tallies(&self) -> Vec<FindingTally> {
        let mut t: Vec<FindingTally> = self.lock().tallies.values().cloned().collect();
        t.sort_by(|a, b| {
            (b.count, a.strategy, a.rule, a.kind).cmp(&(a.count, b.strategy, b.rule, b.kind))
        });
        t
    }

    /// Families tracked now.
    pub fn len(&self) -> usize {
        self.lock().families.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The family's entry, making room for it if needed.
fn entry<'a>(
    families: &'a mut FxHashMap<FamilyId, Stats>,
    family: FamilyId,
    strategy: &'static str,
    route: &'static str,
    now_ms: u64,
) -> &'a mut Stats {
    if !families.contains_key(&family) && families.len() >= CAPACITY {
        // Linear, but only when a new family arrives at a full table.
        let victim = families
            .iter()
            .min_by_key(|(_, s)| (s.last_hour(now_ms).0, s.last_seen_ms))
            .map(|(id, _)| *id);
        if let Some(v) = victim {
            families.remove(&v);
        }
    }
    families
        .entry(family)
        .or_insert_with(|| Stats::new(strategy, route, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> FamilyId {
        FamilyId([n; 32])
    }

    #[test]
    fn hit_rates_and_hour_windows() {
        let f = Families::default();
        let t0 = 1_800_000_000_000;
        f.request(id(1), "default", "chat_completions", Answer::Missed, t0);
        f.request(id(1), "default", "chat_completions", Answer::Cached, t0 + 1);
        f.request(id(1), "default", "chat_completions", Answer::Cached, t0 + 2);
        let top = f.top(10, t0 + 3);
        assert_eq!(top.len(), 1);
        assert_eq!(
            (
                top[0].requests_last_hour,
                top[0].cached_last_hour,
                top[0].missed_last_hour
            ),
            (3, 2, 1)
        );
        // Two hours later the family has no traffic in the last hour: not listed.
        assert!(f.top(10, t0 + 2 * 3_600_000).is_empty());
    }

    #[test]
    fn busy_families_survive_a_flood_of_one_off_ones() {
        let f = Families::default();
        let t0 = 1_800_000_000_000;
        for _ in 0..50 {
            f.request(id(0), "default", "chat_completions", Answer::Cached, t0);
        }
        for i in 0..10_000u32 {
            let mut b = [7u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            f.request(
                FamilyId(b),
                "default",
                "chat_completions",
                Answer::Missed,
                t0 + 1,
            );
        }
        assert!(f.len() <= CAPACITY);
        assert_eq!(f.top(1, t0 + 2)[0].id, id(0));
    }

    #[test]
    fn a_static_part_that_changes_is_flagged() {
        let f = Families::default();
        f.request(id(1), "default", "chat_completions", Answer::Missed, 0);
        let a = StaticPrefix {
            digest: [1; 32],
            tokens: 1500,
        };
        f.forwarded(id(1), Some(a), true);
        f.forwarded(id(1), Some(a), true);
        let v = &f.top(1, 0)[0];
        assert_eq!(
            (v.static_prefix, v.static_varies, v.cacheable),
            (Some(a), false, 2)
        );
        f.forwarded(
            id(1),
            Some(StaticPrefix {
                digest: [2; 32],
                tokens: 900,
            }),
            false,
        );
        let v = &f.top(1, 0)[0];
        assert!(v.static_varies);
        assert_eq!(v.static_prefix.map(|s| s.tokens), Some(900));
        assert_eq!((v.forwarded, v.cacheable), (3, 2));
    }

    #[test]
    fn the_static_prefix_is_measured_first_then_sampled() {
        let f = Families::default();
        assert!(
            f.wants_static_prefix(id(9)),
            "a family's first request is measured before it is in the table"
        );
        f.request(id(1), "default", "chat_completions", Answer::Missed, 0);
        let mut measured = 0;
        for _ in 0..100 {
            let want = f.wants_static_prefix(id(1));
            measured += u64::from(want);
            let s = want.then_some(StaticPrefix {
                digest: [1; 32],
                tokens: 10,
            });
            f.forwarded(id(1), s, false);
        }
        // The first eight, then every 32nd (32, 64, 96).
        assert_eq!(measured, STATIC_FIRST + 3);
        assert_eq!(f.top(1, 0)[0].static_prefix.map(|s| s.tokens), Some(10));
    }
}
