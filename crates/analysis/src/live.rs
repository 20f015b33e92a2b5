//! `replay --live URL`: sends a log's requests to a running proxy (or any
//! OpenAI-compatible endpoint) instead of simulating, with bounded concurrency and an
//! optional rate, and reports what really happened: HTTP statuses, the proxy's
//! `x-prefixcache-status` counts and hit rate, latency (average, p50, p99) overall and
//! by cache status. Transport errors and timeouts are counted, never fatal. Requests
//! go only to the given URL, in the log's timestamp order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::AnalysisError;
use crate::input::{BadLines, LogInput, parse_line};
use crate::parallel::map_lines;
use crate::progress::Progress;

/// How to send.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Base URL (`http://127.0.0.1:8080`); the route's path is appended.
    pub url: String,
    pub concurrency: usize,
    /// Sent as `Authorization: Bearer KEY` on every request (none when absent: the
    /// proxy then uses its `upstream_api_key`).
    pub api_key: Option<String>,
    /// Requests started per second at most.
    pub rate: Option<f64>,
    /// Per request, from sending to the last byte of the body.
    pub timeout: Duration,
    /// Send the logged strategy as `x-prefixcache-strategy` (the target must know it).
    pub send_strategy: bool,
    /// Send at most this many requests.
    pub limit: Option<u64>,
    pub max_bad_lines: u64,
    pub threads: usize,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    pub schema: &'static str,
    pub url: String,
    pub concurrency: usize,
    pub requests: u64,
    /// Answers received (any HTTP status).
    pub completed: u64,
    /// No answer: connection refused or reset, invalid response.
    pub errors: u64,
    pub timeouts: u64,
    /// Answers by HTTP status code.
    pub statuses: BTreeMap<String, u64>,
    /// Answers by `x-prefixcache-status` (`HIT`, `MISS`, `BYPASS`, `COALESCED`, or `none`
    /// when the header was absent).
    pub cache: BTreeMap<String, u64>,
    /// `HIT` answers over answers that carried the header.
    pub hit_rate: f64,
    pub latency_ms: Latency,
    /// Latency by `x-prefixcache-status`.
    pub latency_by_cache: BTreeMap<String, Latency>,
    pub duration_s: f64,
    pub requests_per_second: f64,
    /// A few transport errors, for the person reading.
    pub error_samples: Vec<String>,
}

/// Latency summary in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(samples: &mut [f64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Latency {
            count: n as u64,
            avg: samples.iter().sum::<f64>() / n as f64,
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[n - 1],
        }
    }
}

/// One request to send.
struct Outgoing {
    ts_ms: Option<i64>,
    path: &'static str,
    strategy: Option<String>,
    body: Vec<u8>,
}

/// What one request came back with.
enum Outcome {
    Answer {
        status: u16,
        cache: Option<String>,
        ms: f64,
    },
    Timeout,
    Error(String),
}

const ERROR_SAMPLES: usize = 5;

/// Reads the log and sends it.
pub fn live(path: &Path, opts: &LiveOptions) -> Result<(LiveReport, BadLines), AnalysisError> {
    let mut input = LogInput::open(path)?;
    let reading = Progress::for_terminal(input.size, "reading");
    let (mut out, bad) = map_lines(
        &mut input,
        opts.threads,
        || (),
        |_, line, n| {
            let Some(rec) = parse_line(line, n)? else {
                return Ok(None);
            };
            let body = serde_json::to_vec(&rec.body).map_err(|e| e.to_string())?;
            Ok(Some(Outgoing {
                ts_ms: rec.ts_ms,
                path: rec.route.path(),
                strategy: rec.group,
                body,
            }))
        },
        &reading,
    )?;
    reading.finish();
    bad.check(path, opts.max_bad_lines)?;
    if out.is_empty() {
        return Err(AnalysisError::Empty {
            path: path.to_path_buf(),
        });
    }
    // Timestamp order (stable: lines without one keep their place after the previous).
    let mut last = i64::MIN;
    let mut keyed: Vec<(i64, Outgoing)> = out
        .drain(..)
        .map(|o| {
            let t = o.ts_ms.unwrap_or(last);
            last = t;
            (t, o)
        })
        .collect();
    keyed.sort_by_key(|(t, _)| *t);
    let mut reqs: Vec<Outgoing> = keyed.into_iter().map(|(_, o)| o).collect();
    if let Some(limit) = opts.limit {
        reqs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| AnalysisError::Live(format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(send_all(reqs, opts))?;
    Ok((report, bad))
}

async fn send_all(reqs: Vec<Outgoing>, opts: &LiveOptions) -> Result<LiveReport, AnalysisError> {
    let base = opts.url.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(AnalysisError::Live(format!(
            "--live needs an http:// or https:// URL, got {:?}",
            opts.url
        )));
    }
    let concurrency = opts.concurrency.max(1);
    let client = reqwest::Client::builder()
        .timeout(opts.timeout)
        .pool_max_idle_per_host(concurrency)
        // The bundled roots only, as before the proxy's `upstream_native_roots` option
        // brought the OS trust store into the shared reqwest build.
        .tls_built_in_native_certs(false)
        .build()
        .map_err(|e| AnalysisError::Live(format!("cannot build the HTTP client: {e}")))?;
    let total = reqs.len() as u64;
    let progress = Progress::for_terminal_count(total, "sending");
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut pacing = opts.rate.filter(|r| *r > 0.0).map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let auth = opts.api_key.as_ref().map(|k| format!("Bearer {k}"));
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(reqs.len());
    let started = Instant::now();
    for r in reqs {
        if let Some(p) = pacing.as_mut() {
            p.tick().await;
        }
        // Closed only if dropped, which it is not while we hold it.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        while let Some(done) = tasks.try_join_next() {
            outcomes.push(done.unwrap_or_else(|e| Outcome::Error(e.to_string())));
            progress.inc(1);
        }
        let mut req = client
            .post(format!("{base}{}", r.path))
            .header("content-type", "application/json")
            .body(r.body);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        if opts.send_strategy
            && let Some(s) = &r.strategy
        {
            req = req.header("x-prefixcache-strategy", s);
        }
        tasks.spawn(async move {
            let _permit = permit;
            send_one(req).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.unwrap_or_else(|e| Outcome::Error(e.to_string())));
        progress.inc(1);
    }
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    Ok(summarize(&base, concurrency, total, outcomes, elapsed))
}

async fn send_one(req: reqwest::RequestBuilder) -> Outcome {
    let t = Instant::now();
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(e) => return Outcome::Error(error_chain(&e)),
    };
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("x-prefixcache-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The whole body: a streamed answer's latency is its last byte.
    match resp.bytes().await {
        Ok(_) => Outcome::Answer {
            status,
            cache,
            ms: t.elapsed().as_secs_f64() * 1000.0,
        },
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(e) => Outcome::Error(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn summarize(
    url: &str,
    concurrency: usize,
    total: u64,
    outcomes: Vec<Outcome>,
    elapsed: f64,
) -> LiveReport {
    let mut statuses = BTreeMap::new();
    let mut cache = BTreeMap::new();
    let mut all = Vec::new();
    let mut by_cache: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (mut errors, mut timeouts) = (0u64, 0u64);
    let mut samples = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Answer {
                status,
                cache: c,
                ms,
            } => {
                *statuses.entry(status.to_string()).or_insert(0u64) += 1;
                let c = c.unwrap_or_else(|| "none".to_string());
                *cache.entry(c.clone()).or_insert(0u64) += 1;
                all.push(ms);
                by_cache.entry(c).or_default().push(ms);
            }
            Outcome::Timeout => timeouts += 1,
            Outcome::Error(e) => {
                errors += 1;
                if samples.len() < ERROR_SAMPLES {
                    samples.push(e);
                }
            }
        }
    }
    let with_header: u64 = cache
        .iter()
        .filter(|(k, _)| k.as_str() != "none")
        .map(|(_, v)| *v)
        .sum();
    let hits = cache.get("HIT").copied().unwrap_or(0);
    let completed = all.len() as u64;
    LiveReport {
        schema: "prefixcache.replay-live/1",
        url: url.to_string(),
        concurrency,
        requests: total,
        completed,
        errors,
        timeouts,
        statuses,
        cache,
        hit_rate: crate::analyze::ratio(hits, with_header),
        latency_ms: Latency::of(&mut all),
        latency_by_cache: by_cache
            .into_iter()
            .map(|(k, mut v)| (k, Latency::of(&mut v)))
            .collect(),
        duration_s: elapsed,
        requests_per_second: if elapsed > 0.0 {
            total as f64 / elapsed
        } else {
            0.0
        },
        error_samples: samples,
    }
}

impl LiveReport {
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{}: {} requests, concurrency {}, {:.2} s ({:.1} requests/s)",
            self.url, self.requests, self.concurrency, self.duration_s, self.requests_per_second
        );
        let _ = writeln!(
            o,
            "  answered {}, transport errors {}, timeouts {}",
            self.completed, self.errors, self.timeouts
        );
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(o, "  HTTP status: {}", join(&self.statuses));
        let _ = writeln!(
            o,
            "  x-prefixcache-status: {} (hit rate {:.1}%)",
            join(&self.cache),
            self.hit_rate * 100.0
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            o,
            "  latency: avg {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.avg, l.p50, l.p99, l.max
        );
        for (k, l) in &self.latency_by_cache {
            let _ = writeln!(
                o,
                "    {k:<10} {:>7} answers: avg {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
                l.count, l.avg, l.p50, l.p99
            );
        }
        for e in &self.error_samples {
            let _ = writeln!(o, "  error: {e}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.count, l.p50, l.p99, l.max), (100, 50.0, 99.0, 100.0));
        assert!((l.avg - 50.5).abs() < 1e-9);
        assert_eq!(Latency::of(&mut []).count, 0);
    }
}
