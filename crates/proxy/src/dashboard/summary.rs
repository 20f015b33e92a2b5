//! The dashboard's JSON (`GET /admin/summary`): this replica's figures now, over the
//! last five minutes, the last hour, today and since start, built from the history's
//! readings and the family tracker. `docs/dashboard.md` documents every field.
//!
//! Counters "since start" are the `/metrics` counters themselves; other windows are
//! differences of two readings of them.

use std::collections::VecDeque;

use prefixcache_core::lint::Rule;
use serde::Serialize;

use super::families::{FamilyView, FindingTally, StaticPrefix};
use super::history::{LATENCY_STATUSES, POLICIES, RESOLUTION_MS, Reading, Rings, WINDOW_MS};
use crate::metrics::{LATENCY_BUCKETS, STATUSES};

/// The schema version; bumped when a field changes meaning or goes away.
pub const VERSION: u32 = 1;
/// The article's alert threshold (`deploy/prometheus/alerts.yml`).
pub const ALERT_HIT_RATIO: f64 = 0.6;
/// "Now" is this window, the recording rule's `rate5m`.
pub const NOW_MS: u64 = 300_000;
/// Families listed.
pub const TOP_FAMILIES: usize = 10;
/// Findings listed in `findings.recent`.
const TOP_FINDINGS: usize = 20;
/// Shortest time a monthly projection is made from.
const MIN_PROJECTION_MS: u64 = 60_000;
const MONTH_S: f64 = 30.0 * 86_400.0;

/// The whole summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub version: u32,
    pub generated_at_ms: u64,
    pub replica: Replica,
    pub history: HistoryInfo,
    pub alert: Alert,
    pub requests: Requests,
    pub hit_ratio: Ratios,
    pub strategies: Vec<StrategyRow>,
    pub money: Money,
    pub tokens: Tokens,
    pub provider_cache: ProviderCache,
    pub families: Vec<FamilyRow>,
    pub families_tracked: usize,
    pub findings: Findings,
    pub store: StoreHealth,
    pub inflight: Inflight,
    pub latency_ms: Latencies,
    pub series: Series,
}

/// Which process this is: the page shows one replica.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    pub host: String,
    /// The main listener (where SDKs point their `base_url`).
    pub listen: String,
    pub started_at_ms: u64,
    pub uptime_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryInfo {
    pub resolution_s: u64,
    pub window_s: u64,
    /// Readings in the ring now.
    pub readings: usize,
    /// Seconds the ring covers (less than `window_s` after a start).
    pub covers_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub hit_ratio_below: f64,
    pub window_s: u64,
}

/// Requests by status (`requests_total{status}`), summed over routes and strategies.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Counts {
    pub hit: u64,
    pub coalesced: u64,
    pub miss: u64,
    pub bypass: u64,
    pub error: u64,
    pub passthrough: u64,
    pub total: u64,
}

impl Counts {
    fn of(row: &[u64; STATUSES.len()]) -> Counts {
        Counts {
            hit: row[0],
            coalesced: row[1],
            miss: row[2],
            bypass: row[3],
            error: row[4],
            passthrough: row[5],
            total: row.iter().sum(),
        }
    }

    fn all(r: &Reading) -> Counts {
        let mut row = [0; STATUSES.len()];
        for (i, n) in row.iter_mut().enumerate() {
            *n = r.status_total(i);
        }
        Counts::of(&row)
    }

    /// (hit + coalesced) / (hit + coalesced + miss), the alert's definition.
    fn hit_ratio(&self) -> Option<f64> {
        ratio(
            self.hit + self.coalesced,
            self.hit + self.coalesced + self.miss,
        )
    }
}

/// Requests per second by status.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    pub hit: f64,
    pub coalesced: f64,
    pub miss: f64,
    pub bypass: f64,
    pub error: f64,
    pub passthrough: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    pub since_start: Counts,
    pub last_hour: Counts,
    pub last_5m: Counts,
    /// Over the last minute.
    pub per_second: Rates,
}

/// A ratio over three windows; `null` where the window has nothing to divide.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    pub last_5m: Option<f64>,
    pub last_hour: Option<f64>,
    pub since_start: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StrategyRow {
    pub name: String,
    pub requests: Counts,
    pub requests_last_hour: Counts,
    pub hit_ratio: Ratios,
}

/// One amount over the dashboard's periods.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Periods<T> {
    pub last_hour: T,
    /// Since midnight UTC (or since start, if later).
    pub today: T,
    pub since_start: T,
}

#[derive(Debug, Clone, Serialize)]
pub struct Money {
    pub spent_usd: Periods<f64>,
    pub saved_usd: Periods<f64>,
    /// At the rate of the last hour (or since start, if shorter), over 30 days;
    /// `null` before a minute of history.
    pub projected_month_spent_usd: Option<f64>,
    pub projected_month_saved_usd: Option<f64>,
    /// Seconds of history the projection is made from.
    pub projection_basis_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tokens {
    /// Prompt and completion tokens answered from the response cache (not paid again).
    pub saved: Periods<u64>,
    /// Prompt and completion tokens paid for upstream.
    pub paid: Periods<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderCache {
    /// Prompt tokens the provider served from its prompt cache over prompt tokens paid
    /// for (`tokens_total{kind="cached_prompt"}` / `{kind="prompt"}`, upstream).
    pub cached_share: Ratios,
    /// Forwarded requests whose static prefix reaches the provider's 1024-token floor.
    pub cacheable_share: Ratios,
    pub policies: Vec<PolicyRow>,
}

/// How the provider's prompt cache was steered for a request. Only
/// `prompt_cache_key` exists today; further members (explicit breakpoints) are added
/// as fields here, and `null` means "not applicable".
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// `caller` (the request carried its own), `conversation` or `family` (derived by
    /// the strategy), `none` (none sent).
    pub prompt_cache_key: &'static str,
    pub breakpoints: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyFigures {
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub cached_share: Option<f64>,
    pub cache_write_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRow {
    pub policy: Policy,
    pub since_start: PolicyFigures,
    pub last_hour: PolicyFigures,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingRow {
    pub rule: &'static str,
    pub kind: &'static str,
    pub severity: &'static str,
    /// Token span in the family's prefix window, `[start, end)`.
    pub tokens: [usize; 2],
    pub count: u64,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FamilyRow {
    /// All 64 hex characters (what `POST /admin/purge {"family": ..}` takes).
    pub id: String,
    /// As in `x-prefixcache-family`.
    pub short: String,
    pub strategy: &'static str,
    pub route: &'static str,
    pub requests_last_hour: u64,
    pub hit_ratio_last_hour: Option<f64>,
    pub requests: u64,
    pub hit_ratio: Option<f64>,
    /// Tokens of the static part its forwarded requests share; `null` before one was
    /// forwarded, or for routes without a static part.
    pub stable_prefix_tokens: Option<u32>,
    /// The count stopped at its limit: the static part is at least this long.
    pub stable_prefix_at_least: bool,
    /// Forwarded requests came with different static parts (the figure is the shortest).
    pub static_varies: bool,
    pub forwarded: u64,
    pub provider_cacheable_share: Option<f64>,
    pub findings: Vec<FindingRow>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleCount {
    pub rule: &'static str,
    pub description: &'static str,
    /// `lint_findings_total{rule}`.
    pub since_start: u64,
    pub last_hour: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TallyRow {
    pub strategy: &'static str,
    pub rule: &'static str,
    pub kind: &'static str,
    pub severity: &'static str,
    pub count: u64,
    pub families: u64,
    pub tokens: [usize; 2],
    /// Short id of the family it was last seen in.
    pub family: String,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    pub by_rule: Vec<RuleCount>,
    pub recent: Vec<TallyRow>,
}

/// The store as `/readyz` sees it, plus its size.
#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    pub backend: &'static str,
    pub degraded: bool,
    pub circuit: Option<Circuit>,
    pub entries: u64,
    pub bytes: u64,
    pub evictions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Circuit {
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub failures: u64,
    pub timeouts: u64,
    pub rejected: u64,
    pub trips: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Inflight {
    /// Upstream responses being read (`inflight_upstream`).
    pub upstream: i64,
    /// Requests others may join (one per distinct request in flight).
    pub flights: usize,
    /// Callers waiting on one of those flights instead of calling upstream.
    pub followers: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyWindows {
    pub last_5m: Quantiles,
    pub last_hour: Quantiles,
    pub since_start: Quantiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    pub hit: LatencyWindows,
    pub coalesced: LatencyWindows,
    pub miss: LatencyWindows,
}

#[derive(Debug, Clone, Serialize)]
pub struct StrategySeries {
    pub strategy: String,
    pub values: Vec<Option<f64>>,
}

/// The last hour, one point per reading (the last point is now).
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub step_s: u64,
    /// Unix ms at the end of each step.
    pub t: Vec<u64>,
    /// Requests per second in each step, by status.
    pub requests_per_s: StatusSeries,
    /// Hit ratio over the 5 minutes ending at each point (the alert's window).
    pub hit_ratio: Vec<Option<f64>>,
    pub hit_ratio_by_strategy: Vec<StrategySeries>,
    /// Dollars in each step.
    pub spent_usd: Vec<f64>,
    pub saved_usd: Vec<f64>,
    pub inflight_upstream: Vec<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusSeries {
    pub hit: Vec<f64>,
    pub coalesced: Vec<f64>,
    pub miss: Vec<f64>,
    pub bypass: Vec<f64>,
    pub error: Vec<f64>,
    pub passthrough: Vec<f64>,
}

/// What the summary needs that the dashboard does not own.
#[derive(Debug, Clone)]
pub struct Live {
    pub now: Reading,
    pub listen: String,
    pub store: StoreHealth,
    pub inflight: Inflight,
}

/// Who the summary is about.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub host: &'a str,
    pub started_at_ms: u64,
    pub strategies: &'a [&'static str],
}

/// Builds the summary from the history (under its lock), the families and `live`.
pub fn build(
    who: Identity<'_>,
    rings: &Rings,
    families: Vec<FamilyView>,
    families_tracked: usize,
    tallies: Vec<FindingTally>,
    live: Live,
) -> Summary {
    let now = &live.now;
    let now_ms = now.at_ms;
    let window = |ms: u64| now.since(rings.at_or_before(now_ms.saturating_sub(ms)));
    let since_start = now.since(&rings.start);
    let hour = window(WINDOW_MS);
    let five = window(NOW_MS);
    let minute_start = rings.at_or_before(now_ms.saturating_sub(60_000));
    let minute = now.since(minute_start);
    let today = now.since(rings.today_start(now_ms));

    let hour_start_ms = rings.at_or_before(now_ms.saturating_sub(WINDOW_MS)).at_ms;
    let basis_ms = now_ms.saturating_sub(hour_start_ms);
    let project = |usd: f64| {
        (basis_ms >= MIN_PROJECTION_MS).then(|| usd / (basis_ms as f64 / 1000.0) * MONTH_S)
    };
    let per_s = |n: u64, ms: u64| {
        if ms == 0 {
            0.0
        } else {
            n as f64 * 1000.0 / ms as f64
        }
    };
    let minute_ms = now_ms.saturating_sub(minute_start.at_ms);
    let m = Counts::all(&minute);

    let counts_of = |r: &Reading, i: usize| r.requests.get(i).map(Counts::of).unwrap_or_default();
    let strategies = who
        .strategies
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let all = counts_of(&since_start, i);
            StrategyRow {
                name: (*name).to_string(),
                requests: all,
                requests_last_hour: counts_of(&hour, i),
                hit_ratio: Ratios {
                    last_5m: counts_of(&five, i).hit_ratio(),
                    last_hour: counts_of(&hour, i).hit_ratio(),
                    since_start: all.hit_ratio(),
                },
            }
        })
        // Label `none` is only requests refused before a strategy was chosen, and
        // passthrough: listed only when it has any.
        .filter(|row| row.name != "none" || row.requests.total > 0)
        .collect();

    let hit_ratio = Ratios {
        last_5m: Counts::all(&five).hit_ratio(),
        last_hour: Counts::all(&hour).hit_ratio(),
        since_start: Counts::all(&since_start).hit_ratio(),
    };
    let tokens_of = |r: &Reading, source: usize| r.tokens[source][0] + r.tokens[source][1];
    let periods = |f: &dyn Fn(&Reading) -> u64| Periods {
        last_hour: f(&hour),
        today: f(&today),
        since_start: f(&since_start),
    };
    let cached_share = |r: &Reading| ratio(r.tokens[0][2], r.tokens[0][0]);
    let cacheable_share = |r: &Reading| ratio(r.cacheable[0], r.cacheable[0] + r.cacheable[1]);
    let policy_figures = |r: &Reading, i: usize| PolicyFigures {
        prompt_tokens: r.policy_tokens[i][0],
        cached_tokens: r.policy_tokens[i][1],
        cache_write_tokens: r.policy_tokens[i][2],
        cached_share: ratio(r.policy_tokens[i][1], r.policy_tokens[i][0]),
        cache_write_usd: r.policy_write_usd[i],
    };
    let policies = POLICIES
        .iter()
        .enumerate()
        .map(|(i, name)| PolicyRow {
            policy: Policy {
                prompt_cache_key: name,
                breakpoints: None,
            },
            since_start: policy_figures(&since_start, i),
            last_hour: policy_figures(&hour, i),
        })
        .filter(|row| row.since_start.prompt_tokens > 0)
        .collect();

    let latency = |status: usize| LatencyWindows {
        last_5m: quantiles(&five.latency[status]),
        last_hour: quantiles(&hour.latency[status]),
        since_start: quantiles(&since_start.latency[status]),
    };
    debug_assert_eq!(LATENCY_STATUSES, ["hit", "coalesced", "miss"]);

    Summary {
        version: VERSION,
        generated_at_ms: now_ms,
        replica: Replica {
            host: who.host.to_string(),
            listen: live.listen,
            started_at_ms: who.started_at_ms,
            uptime_s: now_ms.saturating_sub(who.started_at_ms) as f64 / 1000.0,
        },
        history: HistoryInfo {
            resolution_s: RESOLUTION_MS / 1000,
            window_s: WINDOW_MS / 1000,
            readings: rings.ring.len(),
            covers_s: basis_ms as f64 / 1000.0,
        },
        alert: Alert {
            hit_ratio_below: ALERT_HIT_RATIO,
            window_s: NOW_MS / 1000,
        },
        requests: Requests {
            since_start: Counts::all(&since_start),
            last_hour: Counts::all(&hour),
            last_5m: Counts::all(&five),
            per_second: Rates {
                hit: per_s(m.hit, minute_ms),
                coalesced: per_s(m.coalesced, minute_ms),
                miss: per_s(m.miss, minute_ms),
                bypass: per_s(m.bypass, minute_ms),
                error: per_s(m.error, minute_ms),
                passthrough: per_s(m.passthrough, minute_ms),
                total: per_s(m.total, minute_ms),
            },
        },
        hit_ratio,
        strategies,
        money: Money {
            spent_usd: Periods {
                last_hour: hour.spent_usd,
                today: today.spent_usd,
                since_start: now.spent_usd,
            },
            saved_usd: Periods {
                last_hour: hour.saved_usd,
                today: today.saved_usd,
                since_start: now.saved_usd,
            },
            projected_month_spent_usd: project(hour.spent_usd),
            projected_month_saved_usd: project(hour.saved_usd),
            projection_basis_s: basis_ms as f64 / 1000.0,
        },
        tokens: Tokens {
            saved: periods(&|r| tokens_of(r, 1)),
            paid: periods(&|r| tokens_of(r, 0)),
        },
        provider_cache: ProviderCache {
            cached_share: Ratios {
                last_5m: cached_share(&five),
                last_hour: cached_share(&hour),
                since_start: cached_share(&since_start),
            },
            cacheable_share: Ratios {
                last_5m: cacheable_share(&five),
                last_hour: cacheable_share(&hour),
                since_start: cacheable_share(&since_start),
            },
            policies,
        },
        families: families.into_iter().map(family_row).collect(),
        families_tracked,
        findings: Findings {
            by_rule: Rule::ALL
                .iter()
                .enumerate()
                .map(|(i, rule)| RuleCount {
                    rule: rule.as_str(),
                    description: rule.describe(),
                    since_start: now.findings[i],
                    last_hour: hour.findings[i],
                })
                .filter(|r| r.since_start > 0)
                .collect(),
            recent: tallies
                .into_iter()
                .take(TOP_FINDINGS)
                .map(tally_row)
                .collect(),
        },
        store: live.store,
        inflight: live.inflight,
        latency_ms: Latencies {
            hit: latency(0),
            coalesced: latency(1),
            miss: latency(2),
        },
        series: series(rings, now, who.strategies),
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn family_row(f: FamilyView) -> FamilyRow {
    FamilyRow {
        id: f.id.to_hex(),
        short: f.id.short_hex(),
        strategy: f.strategy,
        route: f.route,
        requests_last_hour: f.requests_last_hour,
        hit_ratio_last_hour: ratio(f.cached_last_hour, f.cached_last_hour + f.missed_last_hour),
        requests: f.requests,
        hit_ratio: ratio(f.cached, f.cached + f.missed),
        stable_prefix_tokens: f.static_prefix.map(|s| s.tokens),
        stable_prefix_at_least: f
            .static_prefix
            .is_some_and(|s| s.tokens as usize >= StaticPrefix::LIMIT),
        static_varies: f.static_varies,
        forwarded: f.forwarded,
        provider_cacheable_share: ratio(f.cacheable, f.forwarded),
        findings: f
            .findings
            .into_iter()
            .map(|l| FindingRow {
                rule: l.rule.as_str(),
                kind: l.kind,
                severity: l.severity.as_str(),
                tokens: [l.tokens.start, l.tokens.end],
                count: l.count,
                last_seen_ms: l.last_seen_ms,
            })
            .collect(),
        first_seen_ms: f.first_seen_ms,
        last_seen_ms: f.last_seen_ms,
    }
}

fn tally_row(t: FindingTally) -> TallyRow {
    TallyRow {
        strategy: t.strategy,
        rule: t.rule.as_str(),
        kind: t.kind,
        severity: t.severity.as_str(),
        count: t.count,
        families: t.families,
        tokens: [t.last_tokens.start, t.last_tokens.end],
        family: t.last_family.short_hex(),
        last_seen_ms: t.last_seen_ms,
    }
}

/// p50 and p99 in milliseconds from bucket counts (not cumulative, last `+Inf`), the
/// way Prometheus' `histogram_quantile` computes them: linear within the bucket; a
/// quantile in the `+Inf` bucket is the highest finite bound.
pub fn quantiles(buckets: &[u64]) -> Quantiles {
    let count: u64 = buckets.iter().sum();
    let q = |q: f64| -> Option<f64> {
        if count == 0 {
            return None;
        }
        let rank = q * count as f64;
        let mut cum = 0u64;
        for (i, &n) in buckets.iter().enumerate() {
            let before = cum;
            cum += n;
            if (cum as f64) >= rank && n > 0 {
                let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                    return LATENCY_BUCKETS.last().map(|b| b * 1000.0);
                };
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let within = (rank - before as f64) / n as f64;
                return Some((lower + (upper - lower) * within) * 1000.0);
            }
        }
        LATENCY_BUCKETS.last().map(|b| b * 1000.0)
    };
    Quantiles {
        count,
        p50: q(0.5),
        p99: q(0.99),
    }
}

fn series(rings: &Rings, now: &Reading, strategies: &[&'static str]) -> Series {
    // The ring's readings, then now (unless the newest reading is now).
    let mut points: VecDeque<&Reading> = rings.ring.iter().collect();
    if points.back().is_none_or(|r| r.at_ms < now.at_ms) {
        points.push_back(now);
    }
    let mut s = Series {
        step_s: RESOLUTION_MS / 1000,
        t: Vec::with_capacity(points.len()),
        requests_per_s: StatusSeries::default(),
        hit_ratio: Vec::with_capacity(points.len()),
        hit_ratio_by_strategy: strategies
            .iter()
            .map(|name| StrategySeries {
                strategy: (*name).to_string(),
                values: Vec::with_capacity(points.len()),
            })
            .collect(),
        spent_usd: Vec::with_capacity(points.len()),
        saved_usd: Vec::with_capacity(points.len()),
        inflight_upstream: Vec::with_capacity(points.len()),
    };
    for i in 1..points.len() {
        let (prev, cur) = (points[i - 1], points[i]);
        let step = cur.since(prev);
        let secs = (cur.at_ms.saturating_sub(prev.at_ms) as f64 / 1000.0).max(0.001);
        s.t.push(cur.at_ms);
        let c = Counts::all(&step);
        // Four decimals are plenty for a chart and keep the hour's JSON small.
        let rate = |n: u64| (n as f64 / secs * 1e4).round() / 1e4;
        let r = &mut s.requests_per_s;
        r.hit.push(rate(c.hit));
        r.coalesced.push(rate(c.coalesced));
        r.miss.push(rate(c.miss));
        r.bypass.push(rate(c.bypass));
        r.error.push(rate(c.error));
        r.passthrough.push(rate(c.passthrough));
        s.spent_usd.push(step.spent_usd);
        s.saved_usd.push(step.saved_usd);
        s.inflight_upstream.push(cur.inflight_upstream);
        // The alert's window ending at this point.
        let from = cur.at_ms.saturating_sub(NOW_MS);
        let j = points.partition_point(|r| r.at_ms < from).min(i - 1);
        let five = cur.since(points[j]);
        s.hit_ratio.push(Counts::all(&five).hit_ratio());
        for (k, row) in s.hit_ratio_by_strategy.iter_mut().enumerate() {
            row.values
                .push(five.requests.get(k).and_then(|r| Counts::of(r).hit_ratio()));
        }
    }
    s.hit_ratio_by_strategy
        .retain(|row| row.values.iter().any(Option::is_some));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_histogram_quantile() {
        let mut b = vec![0u64; LATENCY_BUCKETS.len() + 1];
        assert_eq!(quantiles(&b).p50, None);
        // 10 observations in (1 ms, 2.5 ms].
        let i = LATENCY_BUCKETS.iter().position(|&x| x == 0.0025).unwrap();
        b[i] = 10;
        let q = quantiles(&b);
        assert_eq!(q.count, 10);
        assert!((q.p50.unwrap() - 1.75).abs() < 1e-9, "{q:?}");
        assert!((q.p99.unwrap() - (1.0 + 1.5 * 0.99)).abs() < 1e-9, "{q:?}");
        // Everything above the last bound: the highest finite bound.
        let mut inf = vec![0u64; LATENCY_BUCKETS.len() + 1];
        *inf.last_mut().unwrap() = 3;
        assert_eq!(quantiles(&inf).p99, Some(120_000.0));
    }
}
