//! The timing client of `bench/run.sh` for what `oha` cannot measure: time to first byte
//! of streamed responses (`ttfb`), a realistic mix of repeated and unique requests with
//! their cost (`mix`, the article's before/after), and the proxy's memory while its cache
//! fills (`fill`). It prints one JSON object on stdout; `bench/run.sh` builds the table.
//!
//! ```text
//! bench_client ttfb --target direct=URL --target proxy=URL --mode miss|hit [--requests N]
//!                   [--chunk-delay 1ms]
//! bench_client mix  --url URL [--requests 10000] [--concurrency 50] [--docs N] [--zipf 1.1]
//!                   [--seed 7] [--model gpt-4o]
//! bench_client fill --url URL --pid PID [--requests 1500] [--concurrency 16] [--inputs 8]
//! ```
//!
//! Why a Rust example and not a script: TTFB differences of tens of microseconds must be
//! visible, so the client's own cost per request must be small and steady (no interpreter
//! or GC pauses), and this crate already has the HTTP client (`reqwest`, as a
//! dev-dependency) and the JSON parser. `ttfb` alternates its targets request by request,
//! so a load spike on this shared machine hits both sides alike.
//!
//! Build: `cargo build --release -p prefixcache-mock --example bench_client`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prefixcache_core::pricing::PriceTable;
use prefixcache_core::usage::Usage;
use serde_json::{Value, json};
use tokio::task::JoinSet;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: bench_client ttfb|mix|fill [flags] (see the file's header)");
        return ExitCode::from(2);
    };
    let flags = match Flags::parse(rest) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bench_client: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "ttfb" => ttfb(&flags).await,
        "mix" => mix(&flags).await,
        "fill" => fill(&flags).await,
        other => Err(format!("unknown command {other:?}").into()),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_client {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs; a name may repeat (`--target`).
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, Error> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, got {a:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            out.push((name.to_string(), value.clone()));
        }
        Ok(Flags(out))
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.all(name).last().copied()
    }

    fn req(&self, name: &str) -> Result<&str, Error> {
        self.str(name)
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v:?}").into()),
        }
    }
}

fn client() -> Result<reqwest::Client, Error> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?)
}

/// Milliseconds, for the JSON output.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut samples: Vec<Duration>) -> Value {
    samples.sort_unstable();
    let n = samples.len().max(1) as f64;
    let avg = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / n * 1e3;
    json!({
        "n": samples.len(),
        "avg_ms": avg,
        "p50_ms": ms(pct(&samples, 50.0)),
        "p90_ms": ms(pct(&samples, 90.0)),
        "p99_ms": ms(pct(&samples, 99.0)),
        "max_ms": ms(samples.last().copied().unwrap_or_default()),
    })
}

fn status_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-prefixcache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("DIRECT")
        .to_string()
}

/// A run id so a re-run against a warm proxy still misses.
fn run_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// ttfb: scenario 3

/// The streamed request of scenario 3: a ~1.5 KB chat body like scenario 1's.
fn stream_body(nonce: Option<String>) -> String {
    let system = "You are a support assistant for Acme Corp. Answer in at most three \
        sentences, cite the policy section you rely on, and never promise refunds that the \
        policy does not allow. "
        .repeat(5);
    let user = match nonce {
        Some(n) => format!("How long do I have to return a damaged item? (ticket {n})"),
        None => "How long do I have to return a damaged item?".to_string(),
    };
    json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    })
    .to_string()
}

struct Timing {
    ttfb: Duration,
    total: Duration,
    status: String,
    bytes: usize,
}

async fn timed_stream(
    client: &reqwest::Client,
    url: &str,
    body: String,
    chunk_delay: Option<&str>,
) -> Result<Timing, Error> {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(body);
    if let Some(d) = chunk_delay {
        req = req.header("x-mock-chunk-delay", d);
    }
    let started = Instant::now();
    let mut resp = req.send().await?;
    if !resp.status().is_success() {
        return Err(format!("{url}: status {}", resp.status()).into());
    }
    let status = status_of(&resp);
    let mut ttfb = None;
    let mut bytes = 0;
    while let Some(chunk) = resp.chunk().await? {
        if !chunk.is_empty() && ttfb.is_none() {
            ttfb = Some(started.elapsed());
        }
        bytes += chunk.len();
    }
    let total = started.elapsed();
    Ok(Timing {
        ttfb: ttfb.unwrap_or(total),
        total,
        status,
        bytes,
    })
}

async fn ttfb(flags: &Flags) -> Result<String, Error> {
    let targets: Vec<(String, String)> = flags
        .all("target")
        .into_iter()
        .map(|t| match t.split_once('=') {
            Some((name, url)) => Ok((name.to_string(), url.to_string())),
            None => Err(format!("--target NAME=URL, got {t:?}")),
        })
        .collect::<Result<_, _>>()?;
    if targets.is_empty() {
        return Err("at least one --target NAME=URL".into());
    }
    let mode = flags.str("mode").unwrap_or("miss");
    let hit = match mode {
        "miss" => false,
        "hit" => true,
        _ => return Err(format!("--mode miss|hit, got {mode:?}").into()),
    };
    let n: usize = flags.num("requests", 1000)?;
    let chunk_delay = flags.str("chunk-delay");
    let client = client()?;
    let run = run_id();
    let urls: Vec<String> = targets
        .iter()
        .map(|(_, u)| format!("{}/v1/chat/completions", u.trim_end_matches('/')))
        .collect();
    // Warm-up: connections, and for `hit` the entry itself. Not recorded.
    for url in &urls {
        for i in 0..20 {
            let nonce = (!hit).then(|| format!("warm-{run}-{i}"));
            timed_stream(&client, url, stream_body(nonce), chunk_delay).await?;
        }
    }
    let mut ttfbs = vec![Vec::with_capacity(n); urls.len()];
    let mut totals = vec![Vec::with_capacity(n); urls.len()];
    let mut statuses = vec![BTreeMap::<String, usize>::new(); urls.len()];
    let mut bytes = vec![0usize; urls.len()];
    for i in 0..n {
        // Alternate the order too, so neither side always runs right after the other.
        for j in 0..urls.len() {
            let t = if i % 2 == 0 { j } else { urls.len() - 1 - j };
            let nonce = (!hit).then(|| format!("{run}-{i}"));
            let timing = timed_stream(&client, &urls[t], stream_body(nonce), chunk_delay).await?;
            ttfbs[t].push(timing.ttfb);
            totals[t].push(timing.total);
            *statuses[t].entry(timing.status).or_default() += 1;
            bytes[t] = timing.bytes;
        }
    }
    let mut out = serde_json::Map::new();
    for (t, (name, _)) in targets.iter().enumerate() {
        out.insert(
            name.clone(),
            json!({
                "ttfb": summary(std::mem::take(&mut ttfbs[t])),
                "total": summary(std::mem::take(&mut totals[t])),
                "statuses": statuses[t],
                "response_bytes": bytes[t],
            }),
        );
    }
    Ok(json!({"mode": mode, "requests": n, "targets": out}).to_string())
}

// ---------------------------------------------------------------------------------------
// mix: scenario 5

/// SplitMix64: a small seeded generator, so the request sequence is the same for the
/// "before" and "after" runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The article's strategies as templates: (name, share of traffic, instructions). Each
/// system prompt is padded to about 1,400 tokens (80 policy sentences), so the provider's
/// prompt cache (≥ 1024 tokens) can serve it whatever the user content, as it would a real
/// long template. (With 56 sentences, ~960 tokens, the first cacheable 1024-token prefix
/// ended inside the user's document, and only exact repeats were ever provider-cached.)
const TEMPLATES: [(&str, f64, &str); 4] = [
    (
        "document_analysis",
        0.4,
        "You are a document analyzer. Analyze the following contract and extract: 1. Key \
         entities 2. Main topics 3. Sentiment score (-1 to 1). Answer in JSON.",
    ),
    (
        "code_review",
        0.3,
        "Review this Python code for: - Security vulnerabilities - Performance issues - Best \
         practices violations. Quote the lines you comment on.",
    ),
    (
        "support_faq",
        0.2,
        "You are the support assistant of Acme Corp. Answer the customer's question from the \
         policy below in at most three sentences, and cite the section.",
    ),
    (
        "translation",
        0.1,
        "Translate the user's text to French. Keep the formatting, names and numbers exactly \
         as they are; do not add explanations.",
    ),
];

const FILLER: [&str; 8] = [
    "Policy section {n}: requests are answered in the order received and escalated after two business days.",
    "Section {n} applies to every customer account, including trial accounts and accounts under review.",
    "Where section {n} conflicts with a signed agreement, the signed agreement prevails for that customer.",
    "Amounts in section {n} are stated in US dollars and exclude taxes unless stated otherwise.",
    "Section {n} was last revised in the third quarter; earlier versions no longer apply.",
    "Exceptions to section {n} require written approval from a team lead and are logged.",
    "Personal data mentioned under section {n} is processed only for the purpose stated here.",
    "Section {n} does not limit any right the customer has under applicable consumer law.",
];

const WORDS: [&str; 32] = [
    "invoice",
    "delivery",
    "clause",
    "payment",
    "supplier",
    "warranty",
    "schedule",
    "party",
    "amount",
    "notice",
    "termination",
    "liability",
    "goods",
    "service",
    "period",
    "interest",
    "function",
    "variable",
    "request",
    "buffer",
    "thread",
    "error",
    "return",
    "module",
    "customer",
    "refund",
    "damaged",
    "order",
    "account",
    "shipping",
    "week",
    "policy",
];

fn system_prompt(template: usize) -> String {
    let (_, _, head) = TEMPLATES[template];
    let mut s = String::from(head);
    for n in 0..80 {
        s.push(' ');
        s.push_str(&FILLER[(n + template) % FILLER.len()].replace("{n}", &n.to_string()));
    }
    s
}

/// The user content of document `doc` of a template: 80–200 deterministic words.
fn user_content(template: usize, doc: usize) -> String {
    let mut rng = Rng((template as u64) << 32 | doc as u64);
    let words = 80 + (rng.next() % 121) as usize;
    let mut s = format!("Item {doc}:");
    for _ in 0..words {
        s.push(' ');
        s.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
    }
    s
}

/// Zipf over `n` ranks: a sampled rank in 0..n (rank 0 most frequent).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for k in 1..=n.max(1) {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

struct MixResult {
    latency: Duration,
    status: String,
    prompt: u64,
    cached: u64,
    completion: u64,
}

async fn mix(flags: &Flags) -> Result<String, Error> {
    let url = format!(
        "{}/v1/chat/completions",
        flags.req("url")?.trim_end_matches('/')
    );
    let total: usize = flags.num("requests", 10_000)?;
    let concurrency: usize = flags.num("concurrency", 50)?;
    let docs: usize = flags.num("docs", (total / 5).max(1))?;
    let s: f64 = flags.num("zipf", 1.1)?;
    let seed: u64 = flags.num("seed", 7)?;
    let model = flags.str("model").unwrap_or("gpt-4o").to_string();
    // Dollars as the proxy counts them: the project's price table (core::pricing).
    let (priced_as, price) = PriceTable::builtin()
        .lookup(&model)
        .ok_or_else(|| format!("--model {model:?} is not in the price table"))?;
    let rates = &price.base;

    // The request sequence: template by share, document by Zipf within it.
    let zipf = Zipf::new(docs, s);
    let mut rng = Rng(seed);
    let systems: Vec<String> = (0..TEMPLATES.len()).map(system_prompt).collect();
    let mut seen = std::collections::HashSet::new();
    let bodies: Vec<String> = (0..total)
        .map(|_| {
            let u = rng.unit();
            let mut acc = 0.0;
            let mut t = TEMPLATES.len() - 1;
            for (i, (_, share, _)) in TEMPLATES.iter().enumerate() {
                acc += share;
                if u < acc {
                    t = i;
                    break;
                }
            }
            let d = zipf.sample(&mut rng);
            seen.insert((t, d));
            json!({
                "model": model,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": systems[t]},
                    {"role": "user", "content": user_content(t, d)},
                ],
            })
            .to_string()
        })
        .collect();
    let distinct = seen.len();
    let bodies = Arc::new(bodies);

    let client = client()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) =
            (client.clone(), url.clone(), bodies.clone(), next.clone());
        set.spawn(async move {
            let mut out: Vec<Result<MixResult, String>> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                out.push(one_mix(&client, &url, body.clone()).await);
            }
            out
        });
    }
    let mut results = Vec::with_capacity(total);
    while let Some(r) = set.join_next().await {
        results.extend(r?);
    }
    let wall = started.elapsed();

    let mut latencies = Vec::with_capacity(total);
    let mut statuses = BTreeMap::<String, usize>::new();
    let mut errors = BTreeMap::<String, usize>::new();
    let (mut prompt, mut cached, mut completion, mut dollars) = (0u64, 0u64, 0u64, 0.0f64);
    let mut billed = 0usize;
    for r in results {
        match r {
            Ok(r) => {
                latencies.push(r.latency);
                // A hit or a coalesced answer made no upstream call: it cost nothing.
                let paid = !matches!(r.status.as_str(), "HIT" | "COALESCED");
                if paid {
                    billed += 1;
                    prompt += r.prompt;
                    cached += r.cached;
                    completion += r.completion;
                    dollars += price
                        .cost(&Usage {
                            prompt_tokens: r.prompt,
                            completion_tokens: r.completion,
                            cached_tokens: r.cached,
                            cache_write_tokens: 0,
                            cache_write_long_tokens: 0,
                        })
                        .usd;
                }
                *statuses.entry(r.status).or_default() += 1;
            }
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    let n = latencies.len();
    Ok(json!({
        "requests": total,
        "concurrency": concurrency,
        "docs_per_template": docs,
        "zipf": s,
        "distinct_bodies": distinct,
        "wall_s": wall.as_secs_f64(),
        "latency": summary(latencies),
        "statuses": statuses,
        "errors": errors,
        "billed_requests": billed,
        "billed_tokens": {"prompt": prompt, "cached_prompt": cached, "completion": completion},
        "priced_as": priced_as,
        "prices_per_million": {"input": rates.input, "cached_input": rates.cached_input, "output": rates.output},
        "dollars_total": dollars,
        "dollars_per_request": if n > 0 { dollars / n as f64 } else { 0.0 },
    })
    .to_string())
}

async fn one_mix(client: &reqwest::Client, url: &str, body: String) -> Result<MixResult, String> {
    let started = Instant::now();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let code = resp.status();
    let status = status_of(&resp);
    let bytes = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    let latency = started.elapsed();
    if !code.is_success() {
        return Err(format!("status {}", code.as_u16()));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("json: {e}"))?;
    let usage = &v["usage"];
    Ok(MixResult {
        latency,
        status,
        prompt: usage["prompt_tokens"].as_u64().unwrap_or(0),
        cached: usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
        completion: usage["completion_tokens"].as_u64().unwrap_or(0),
    })
}

// ---------------------------------------------------------------------------------------
// fill: the memory measurement

/// Resident set size (and its peak) of a process, in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

async fn fill(flags: &Flags) -> Result<String, Error> {
    let url = format!("{}/v1/embeddings", flags.req("url")?.trim_end_matches('/'));
    let pid: u32 = flags.num("pid", 0)?;
    let total: usize = flags.num("requests", 1500)?;
    let concurrency: usize = flags.num("concurrency", 16)?;
    let inputs: usize = flags.num("inputs", 8)?;
    let (idle, _) = rss_kib(pid).ok_or("--pid: no such process")?;

    // Sample RSS while the load runs.
    let stop = Arc::new(AtomicUsize::new(0));
    let mut sampler = JoinSet::new();
    {
        let stop = stop.clone();
        sampler.spawn(async move {
            let mut max = 0u64;
            while stop.load(Ordering::Relaxed) == 0 {
                if let Some((rss, _)) = rss_kib(pid) {
                    max = max.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            max
        });
    }

    let run = run_id();
    let client = client()?;
    let next = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..concurrency {
        let (client, url, next, received) =
            (client.clone(), url.clone(), next.clone(), received.clone());
        set.spawn(async move {
            let mut rng = Rng(run ^ w as u64);
            let mut statuses = BTreeMap::<String, usize>::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                // One request in four repeats an earlier one (a hit), the rest are new.
                let doc = if i > 0 && rng.next().is_multiple_of(4) {
                    (rng.next() % i as u64) as usize
                } else {
                    i
                };
                let input: Vec<String> = (0..inputs)
                    .map(|k| format!("bench fill {run} document {doc} part {k}"))
                    .collect();
                let body = json!({"model": "text-embedding-3-large", "input": input}).to_string();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = status_of(&resp);
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                received.fetch_add(bytes.len(), Ordering::Relaxed);
                *statuses.entry(status).or_default() += 1;
            }
            Ok::<_, String>(statuses)
        });
    }
    let mut statuses = BTreeMap::<String, usize>::new();
    while let Some(r) = set.join_next().await {
        for (k, v) in r?? {
            *statuses.entry(k).or_default() += v;
        }
    }
    let wall = started.elapsed();
    // Let the last stores land before the final reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(1, Ordering::Relaxed);
    let max_during = sampler.join_next().await.transpose()?.unwrap_or(0);
    let (end, hwm) = rss_kib(pid).ok_or("the proxy exited during the load")?;
    Ok(json!({
        "requests": total,
        "concurrency": concurrency,
        "statuses": statuses,
        "bytes_received": received.load(Ordering::Relaxed),
        "wall_s": wall.as_secs_f64(),
        "rss_kib": {"before": idle, "max_during": max_during.max(end), "end": end, "hwm": hwm},
    })
    .to_string())
}
