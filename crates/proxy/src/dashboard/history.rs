//! This replica's recent past without Prometheus: cumulative readings of the proxy's
//! metrics taken every [`RESOLUTION_MS`], kept for [`WINDOW_MS`] in a bounded ring.
//!
//! A reading holds counters as they are in `/metrics`, so any window's figure is the
//! difference of two readings and every number on the dashboard can be checked against
//! a scrape. Nothing is counted twice: the ring only copies what the metrics hold.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use prefixcache_core::lint::Rule;

use crate::metrics::{
    CacheableLabels, CodeLabels, KindLabels, LATENCY_BUCKETS, Metrics, PROVIDER_TOKEN_KINDS,
    PolicyLabels, PolicyTokenLabels, ROUTES, RequestLabels, RouteStatusLabels, RuleLabels,
    STATUSES, TokenLabels,
};

/// Time between two readings.
pub const RESOLUTION_MS: u64 = 10_000;
/// How far back the ring reaches.
pub const WINDOW_MS: u64 = 3_600_000;
/// Readings kept: one hour at 10 s, plus the one that opens the hour.
pub const SLOTS: usize = (WINDOW_MS / RESOLUTION_MS) as usize + 1;

/// The statuses whose latency the dashboard shows, in this order in [`Reading::latency`].
pub const LATENCY_STATUSES: [&str; 3] = ["hit", "coalesced", "miss"];

/// Where a forwarded request's `prompt_cache_key` came from, in the order of
/// [`Reading::policy_tokens`]: the `prompt_cache_key` label of the provider metrics.
pub const POLICIES: [&str; 4] = ["caller", "conversation", "family", "none"];

/// `upstream_errors_total{code}` values (every label the proxy records).
const ERROR_CODES: [&str; 19] = [
    "400",
    "401",
    "403",
    "404",
    "408",
    "409",
    "422",
    "429",
    "500",
    "502",
    "503",
    "504",
    "1xx",
    "3xx",
    "4xx",
    "5xx",
    "timeout",
    "unreachable",
    "cut_stream",
];

/// The metrics at one moment: counters cumulative since the process started, gauges as
/// they were.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Unix milliseconds (the proxy's clock).
    pub at_ms: u64,
    /// `requests_total` by strategy (the dashboard's strategy order) and status
    /// ([`STATUSES`] order), summed over routes.
    pub requests: Vec<[u64; STATUSES.len()]>,
    /// `request_duration_seconds` bucket counts (not cumulative, last one `+Inf`) by
    /// status ([`LATENCY_STATUSES`] order), summed over routes.
    pub latency: [Vec<u64>; LATENCY_STATUSES.len()],
    /// `cost_usd_total{kind="spent"}` and `{kind="saved"}`.
    pub spent_usd: f64,
    pub saved_usd: f64,
    /// `tokens_total`: `[source][kind]`, source upstream then cache, kind prompt,
    /// completion, cached_prompt.
    pub tokens: [[u64; 3]; 2],
    /// `provider_prompt_tokens_total` by policy ([`POLICIES`]) and kind
    /// ([`PROVIDER_TOKEN_KINDS`]).
    pub policy_tokens: [[u64; PROVIDER_TOKEN_KINDS.len()]; POLICIES.len()],
    /// `provider_cache_write_usd_total` by policy.
    pub policy_write_usd: [f64; POLICIES.len()],
    /// `provider_cacheable_total`: true, false.
    pub cacheable: [u64; 2],
    /// `lint_findings_total` by rule ([`Rule::ALL`] order).
    pub findings: [u64; Rule::ALL.len()],
    pub coalesced: u64,
    /// `upstream_errors_total`, every code.
    pub upstream_errors: u64,
    /// `inflight_upstream` (a gauge).
    pub inflight_upstream: i64,
}

impl Reading {
    /// Reads the metrics. `strategies` are the strategy label values, in the order the
    /// dashboard lists them. Costs a few hundred map lookups: once per resolution step
    /// and per summary, never on the request path.
    pub fn read(metrics: &Metrics, strategies: &[&'static str], at_ms: u64) -> Reading {
        let mut r = Reading {
            at_ms,
            requests: vec![[0; STATUSES.len()]; strategies.len()],
            latency: std::array::from_fn(|_| vec![0; LATENCY_BUCKETS.len() + 1]),
            ..Reading::default()
        };
        for (row, &strategy) in r.requests.iter_mut().zip(strategies) {
            for (n, &status) in row.iter_mut().zip(STATUSES.iter()) {
                for route in ROUTES {
                    if let Some(c) = metrics.requests.get(&RequestLabels {
                        route,
                        strategy,
                        status,
                    }) {
                        *n += c.get();
                    }
                }
            }
        }
        for (buckets, status) in r.latency.iter_mut().zip(LATENCY_STATUSES) {
            for route in ROUTES {
                if let Some(h) = metrics
                    .request_duration
                    .get(&RouteStatusLabels { route, status })
                {
                    for (n, (_, c)) in buckets.iter_mut().zip(h.data().buckets) {
                        *n += c;
                    }
                }
            }
        }
        let usd = |kind| {
            metrics
                .cost_usd
                .get(&KindLabels { kind })
                .map_or(0.0, |c| c.get())
        };
        r.spent_usd = usd("spent");
        r.saved_usd = usd("saved");
        for (row, source) in r.tokens.iter_mut().zip(["upstream", "cache"]) {
            for (n, kind) in row
                .iter_mut()
                .zip(["prompt", "completion", "cached_prompt"])
            {
                *n = metrics
                    .tokens
                    .get(&TokenLabels { kind, source })
                    .map_or(0, |c| c.get());
            }
        }
        for (i, prompt_cache_key) in POLICIES.into_iter().enumerate() {
            for (n, kind) in r.policy_tokens[i].iter_mut().zip(PROVIDER_TOKEN_KINDS) {
                *n = metrics
                    .provider_prompt_tokens
                    .get(&PolicyTokenLabels {
                        prompt_cache_key,
                        kind,
                    })
                    .map_or(0, |c| c.get());
            }
            r.policy_write_usd[i] = metrics
                .provider_cache_write_usd
                .get(&PolicyLabels { prompt_cache_key })
                .map_or(0.0, |c| c.get());
        }
        for (n, cacheable) in r.cacheable.iter_mut().zip(["true", "false"]) {
            *n = metrics
                .provider_cacheable
                .get(&CacheableLabels { cacheable })
                .map_or(0, |c| c.get());
        }
        for (n, rule) in r.findings.iter_mut().zip(Rule::ALL) {
            *n = metrics
                .lint_findings
                .get(&RuleLabels {
                    rule: rule.as_str(),
                })
                .map_or(0, |c| c.get());
        }
        r.coalesced = metrics.coalesced.get();
        r.upstream_errors = ERROR_CODES
            .into_iter()
            .filter_map(|code| metrics.upstream_errors.get(&CodeLabels { code }))
            .map(|c| c.get())
            .sum();
        r.inflight_upstream = metrics.inflight_upstream.get();
        r
    }

    /// What happened between `earlier` and this reading: counters subtracted (never
    /// below zero), gauges as in this reading.
    pub fn since(&self, earlier: &Reading) -> Reading {
        fn sub<const N: usize>(a: &[u64; N], b: &[u64; N]) -> [u64; N] {
            std::array::from_fn(|i| a[i].saturating_sub(b[i]))
        }
        fn sub_vec(a: &[u64], b: &[u64]) -> Vec<u64> {
            a.iter()
                .enumerate()
                .map(|(i, x)| x.saturating_sub(b.get(i).copied().unwrap_or(0)))
                .collect()
        }
        let usd = |a: f64, b: f64| (a - b).max(0.0);
        Reading {
            at_ms: self.at_ms,
            requests: self
                .requests
                .iter()
                .enumerate()
                .map(|(i, row)| match earlier.requests.get(i) {
                    Some(e) => sub(row, e),
                    None => *row,
                })
                .collect(),
            latency: std::array::from_fn(|i| sub_vec(&self.latency[i], &earlier.latency[i])),
            spent_usd: usd(self.spent_usd, earlier.spent_usd),
            saved_usd: usd(self.saved_usd, earlier.saved_usd),
            tokens: std::array::from_fn(|i| sub(&self.tokens[i], &earlier.tokens[i])),
            policy_tokens: std::array::from_fn(|i| {
                sub(&self.policy_tokens[i], &earlier.policy_tokens[i])
            }),
            policy_write_usd: std::array::from_fn(|i| {
                usd(self.policy_write_usd[i], earlier.policy_write_usd[i])
            }),
            cacheable: sub(&self.cacheable, &earlier.cacheable),
            findings: sub(&self.findings, &earlier.findings),
            coalesced: self.coalesced.saturating_sub(earlier.coalesced),
            upstream_errors: self.upstream_errors.saturating_sub(earlier.upstream_errors),
            inflight_upstream: self.inflight_upstream,
        }
    }

    /// Requests of one status summed over strategies.
    pub fn status_total(&self, status: usize) -> u64 {
        self.requests.iter().map(|row| row[status]).sum()
    }
}

/// The ring of readings, the reading at start and the one that opened the current UTC
/// day. Bounded: [`SLOTS`] readings whose size is fixed by the configured strategies.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Rings>,
}

/// What [`History::with`] lends out.
#[derive(Debug)]
pub struct Rings {
    /// Oldest first; consecutive readings are at least [`RESOLUTION_MS`] apart, except
    /// the newest, which may be replaced within its step.
    pub ring: VecDeque<Reading>,
    /// The reading when the process started (all counters zero).
    pub start: Reading,
    /// The UTC day (days since the epoch) that `day_start` opens.
    day: u64,
    /// The last reading recorded before `day` began, or `start` on the first day.
    day_start: Reading,
}

const DAY_MS: u64 = 86_400_000;

impl History {
    /// A history opened by `start`, the metrics as the process starts.
    pub fn new(start: Reading) -> History {
        let mut ring = VecDeque::with_capacity(SLOTS);
        ring.push_back(start.clone());
        History {
            inner: Mutex::new(Rings {
                ring,
                day: start.at_ms / DAY_MS,
                day_start: start.clone(),
                start,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Rings> {
        // Every update leaves the ring consistent (one push, pop or replace).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a reading. One taken less than [`RESOLUTION_MS`] after the one before the
    /// newest replaces the newest (a clock that stands still, a tick that came early),
    /// so the ring always spans about [`WINDOW_MS`].
    pub fn record(&self, reading: Reading) {
        let mut r = self.lock();
        let day = reading.at_ms / DAY_MS;
        if day > r.day {
            r.day_start = r.ring.back().cloned().unwrap_or_else(|| r.start.clone());
            r.day = day;
        }
        let n = r.ring.len();
        if n > 1 && reading.at_ms.saturating_sub(r.ring[n - 2].at_ms) < RESOLUTION_MS {
            r.ring.pop_back();
        }
        r.ring.push_back(reading);
        while r.ring.len() > SLOTS {
            r.ring.pop_front();
        }
    }

    /// Runs `f` on the readings (under the lock: keep it short).
    pub fn with<T>(&self, f: impl FnOnce(&Rings) -> T) -> T {
        f(&self.lock())
    }
}

impl Rings {
    /// The latest reading taken at or before `at_ms`, else the oldest one kept: the
    /// start of a window ending now.
    pub fn at_or_before(&self, at_ms: u64) -> &Reading {
        match self.ring.partition_point(|r| r.at_ms <= at_ms) {
            0 => self.ring.front().unwrap_or(&self.start),
            i => &self.ring[i - 1],
        }
    }

    /// The baseline of "today" (UTC) for a reading taken at `now_ms`: the last reading
    /// before midnight, so today's figures may include up to one resolution step of
    /// yesterday.
    pub fn today_start(&self, now_ms: u64) -> &Reading {
        if now_ms / DAY_MS > self.day {
            // A new day whose first reading has not been recorded yet.
            return self.ring.back().unwrap_or(&self.day_start);
        }
        &self.day_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_ms: u64, hits: u64) -> Reading {
        let mut r = Reading {
            at_ms,
            requests: vec![[0; STATUSES.len()]],
            latency: std::array::from_fn(|_| vec![0; LATENCY_BUCKETS.len() + 1]),
            ..Reading::default()
        };
        r.requests[0][0] = hits;
        r.spent_usd = hits as f64 / 10.0;
        r
    }

    #[test]
    fn the_ring_is_bounded_and_spans_an_hour() {
        let h = History::new(reading(0, 0));
        for i in 1..=(2 * SLOTS as u64) {
            h.record(reading(i * RESOLUTION_MS, i));
        }
        h.with(|r| {
            assert_eq!(r.ring.len(), SLOTS);
            let newest = r.ring.back().unwrap().at_ms;
            assert_eq!(newest - r.ring.front().unwrap().at_ms, WINDOW_MS);
            let hour_ago = r.at_or_before(newest - WINDOW_MS);
            assert_eq!(r.ring.back().unwrap().since(hour_ago).requests[0][0], 360);
        });
    }

    #[test]
    fn readings_within_one_step_replace_the_newest() {
        let h = History::new(reading(0, 0));
        h.record(reading(10_000, 1));
        h.record(reading(10_000, 2));
        // Less than a step after the one before the newest: replaces the newest (a
        // clock standing still keeps at most two readings per step).
        h.record(reading(15_000, 3));
        h.record(reading(16_000, 4));
        h.with(|r| {
            assert_eq!(r.ring.len(), 3);
            assert_eq!(r.ring.back().unwrap().requests[0][0], 4);
        });
        // Ticks that come a little early (wall clock against the timer) all count.
        let h = History::new(reading(0, 0));
        for i in 1..=10 {
            h.record(reading(i * (RESOLUTION_MS - 1), i));
        }
        h.with(|r| assert_eq!(r.ring.len(), 11));
    }

    #[test]
    fn today_starts_at_the_last_reading_before_midnight() {
        let midnight = 20_000 * DAY_MS;
        let h = History::new(reading(midnight - 3_600_000, 0));
        h.record(reading(midnight - 5_000, 7));
        // Not yet recorded after midnight: the baseline is found in the ring.
        h.with(|r| assert_eq!(r.today_start(midnight + 1_000).requests[0][0], 7));
        h.record(reading(midnight + 5_000, 9));
        h.record(reading(midnight + 15_000, 12));
        h.with(|r| {
            let now = r.ring.back().unwrap();
            assert_eq!(now.since(r.today_start(now.at_ms)).requests[0][0], 5);
        });
    }

    #[test]
    fn windows_never_go_negative() {
        let a = reading(0, 5);
        let b = reading(10, 3);
        assert_eq!(b.since(&a).requests[0][0], 0);
        assert_eq!(b.since(&a).spent_usd, 0.0);
    }
}
