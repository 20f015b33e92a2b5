//! Generates a synthetic request log for `analyze`/`replay` benchmarks and demos:
//! three services with the article's shapes (a long document-analysis prompt, a code
//! review prompt, a FAQ bot), Zipf-distributed user content so some requests repeat,
//! eight tenants, 20 requests a second. Deterministic for a seed.
//!
//! `--mix agents` makes GPT-5.6 traffic instead (the shapes that decide automatic
//! breakpoints and the `prompt_cache_key` choice): an `agent` service (a ~9k-token
//! stable developer prompt and tools, a new task each call), an `assistant` service
//! (multi-turn conversations behind a ~1.5k-token system prompt, turn by turn), and a
//! `oneoff` service (a different long prompt each time: nothing recurs).
//!
//! ```text
//! cargo run --release -p prefixcache-analysis --example gen_log -- \
//!     --lines 1000000 [--seed 1] [--form proxy|bare|wrapped] [--mix classic|agents] \
//!     [--gzip] > requests.jsonl
//! ```
//!
//! `proxy` lines follow the request log of `serve --log-requests` (usage estimated at
//! four bytes a token; `status` is `hit` for a repeat of the same request by the same
//! tenant and strategy); `bare` lines are request bodies; `wrapped` lines are
//! `{"ts", "service", "api_key", "request"}`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashSet;
use std::io::{BufWriter, Write};

use prefixcache_core::provider::rng::{SplitMix64, mix64};
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "the",
    "report",
    "shows",
    "growth",
    "in",
    "revenue",
    "across",
    "all",
    "regions",
    "while",
    "costs",
    "remained",
    "stable",
    "during",
    "quarter",
    "customer",
    "contract",
    "renewal",
    "terms",
    "include",
    "payment",
    "within",
    "thirty",
    "days",
    "of",
    "invoice",
    "delivery",
    "service",
    "level",
    "agreement",
    "defines",
    "uptime",
    "support",
    "hours",
    "response",
    "times",
    "for",
    "critical",
    "incidents",
    "parties",
    "agree",
    "to",
    "confidentiality",
    "obligations",
    "and",
    "data",
    "protection",
    "requirements",
    "under",
    "applicable",
    "law",
    "supplier",
    "shall",
    "provide",
    "monthly",
    "reports",
    "on",
    "performance",
    "metrics",
    "security",
    "audit",
    "findings",
    "were",
    "addressed",
    "by",
    "engineering",
    "team",
    "before",
    "release",
    "deadline",
    "product",
    "roadmap",
    "prioritizes",
    "reliability",
    "over",
    "new",
    "features",
    "this",
    "year",
    "budget",
    "allocation",
    "favors",
    "infrastructure",
    "investment",
    "hiring",
    "plan",
    "adds",
    "two",
    "engineers",
    "per",
    "team",
    "onboarding",
    "takes",
    "about",
    "six",
    "weeks",
    "training",
    "materials",
    "are",
    "updated",
    "every",
    "season",
    "market",
    "analysis",
    "indicates",
    "demand",
    "is",
    "rising",
];

struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// Zipf-like over 0..n (s ≈ 1): inverse transform of a log-uniform draw.
    fn zipf(&mut self, n: u64) -> u64 {
        let u = self.0.unit();
        (((n as f64 + 1.0).powf(u) - 1.0) as u64).min(n - 1)
    }
}

fn text(seed: u64, words: usize) -> String {
    let mut r = SplitMix64::new(mix64(seed));
    let mut s = String::with_capacity(words * 7);
    for i in 0..words {
        if i > 0 {
            s.push(if i % 17 == 0 { '\n' } else { ' ' });
        }
        s.push_str(WORDS[r.below(WORDS.len() as u64) as usize]);
    }
    s
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let lines: u64 = arg(&args, "--lines", 100_000);
    let seed: u64 = arg(&args, "--seed", 1);
    let form: String = arg(&args, "--form", "proxy".to_string());
    let gzip = args.iter().any(|a| a == "--gzip");
    let agents = arg(&args, "--mix", "classic".to_string()) == "agents";

    // Static prompts: ~1150, ~260 and ~650 tokens (one word is about one token here).
    let doc_system = format!(
        "You are a document analyzer. Analyze the document the user sends and extract:\n\
         1. Key entities\n2. Main topics\n3. Sentiment score (-1 to 1)\n\nGuidelines:\n{}",
        text(11, 1120)
    );
    let review_system = format!(
        "Review this code for:\n- Security vulnerabilities\n- Performance issues\n- Best practices violations\n\n{}",
        text(12, 240)
    );
    let faq_system = format!("You answer questions about our product.\n{}", text(13, 640));
    let agent_developer = format!(
        "You are a coding agent. Follow the repository's rules.\n{}",
        text(14, 8800)
    );
    let agent_tools = json!([
        {"type": "function", "function": {"name": "read_file", "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "run_tests", "description": "Run the tests.",
            "parameters": {"type": "object", "properties": {"filter": {"type": "string"}}}}}
    ]);
    let assistant_system = format!("You are the support assistant.\n{}", text(15, 1500));
    // Conversations of the assistant service in progress: (id, history).
    let mut conversations: Vec<(u64, Vec<Value>)> = Vec::new();
    let mut next_conversation = 0u64;
    let tenants: Vec<String> = (0..8u64)
        .map(|t| format!("{:016x}", mix64(t + 99)))
        .collect();

    let stdout = std::io::stdout().lock();
    let mut out: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            BufWriter::with_capacity(1 << 20, stdout),
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(BufWriter::with_capacity(1 << 20, stdout))
    };
    let mut rng = Rng(SplitMix64::new(seed));
    let mut seen: HashSet<u64> = HashSet::new();
    let start_ms: i64 = 1_795_651_200_000; // 2026-11-26T00:00:00Z
    let mut line = Vec::with_capacity(16 * 1024);
    for i in 0..lines {
        let tenant_ix = rng.below(tenants.len() as u64);
        let pick = rng.below(100);
        let (strategy, model, body, item) = if agents {
            if pick < 50 {
                let task = rng.below(1 << 40);
                let body = json!({
                    "model": "gpt-5.6-terra",
                    "temperature": 0,
                    "tools": agent_tools,
                    "messages": [
                        {"role": "developer", "content": agent_developer},
                        {"role": "user", "content": format!("Task {task}: {}", text(4_000_000 + task, 60))}
                    ]
                });
                ("agent", "gpt-5.6-terra", body, task)
            } else if pick < 90 {
                if conversations.len() < 40 || rng.below(8) == 0 {
                    next_conversation += 1;
                    conversations.push((
                        next_conversation,
                        vec![json!({"role": "system", "content": assistant_system})],
                    ));
                }
                let c = rng.below(conversations.len() as u64) as usize;
                let (id, history) = &mut conversations[c];
                let turn = history.len() as u64;
                history.push(json!({"role": "user", "content": format!("Turn {turn} of {id}: {}", text(5_000_000 + *id * 64 + turn, 50))}));
                let body =
                    json!({"model": "gpt-5.6-luna", "temperature": 0, "messages": history.clone()});
                history.push(
                    json!({"role": "assistant", "content": text(6_000_000 + *id * 64 + turn, 120)}),
                );
                let item = *id * 64 + turn;
                if history.len() > 17 {
                    conversations.swap_remove(c);
                }
                ("assistant", "gpt-5.6-luna", body, item)
            } else {
                let n = rng.below(1 << 40);
                let body = json!({
                    "model": "gpt-5.6-terra",
                    "temperature": 0,
                    "messages": [
                        {"role": "system", "content": text(7_000_000 + n, 1300)},
                        {"role": "user", "content": "Summarize the above."}
                    ]
                });
                ("oneoff", "gpt-5.6-terra", body, n)
            }
        } else if pick < 35 {
            let d = rng.zipf(20_000);
            let body = json!({
                "model": "gpt-4o-mini",
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": doc_system},
                    {"role": "user", "content": format!("Document: {}", text(1_000_000 + d, 90))}
                ]
            });
            ("document_analysis", "gpt-4o-mini", body, d)
        } else if pick < 60 {
            let c = rng.zipf(10_000);
            let body = json!({
                "model": "gpt-4o",
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": review_system},
                    {"role": "user", "content": format!("Code:\nfn handler_{c}() {{\n    {}\n}}", text(2_000_000 + c, 40))}
                ]
            });
            ("code_review", "gpt-4o", body, c)
        } else {
            let q = rng.zipf(2_000);
            let body = json!({
                "model": "gpt-4.1-mini",
                "messages": [
                    {"role": "system", "content": faq_system},
                    {"role": "user", "content": format!("Question {q}: {}?", text(3_000_000 + q, 12))}
                ]
            });
            ("faq", "gpt-4.1-mini", body, q)
        };
        let ts_ms = start_ms + i as i64 * 50 + rng.below(20) as i64;
        let tenant = &tenants[tenant_ix as usize];
        let service = u64::from(pick >= 35) + u64::from(pick >= 60);
        let id = mix64(mix64(item ^ (service << 40)) ^ tenant_ix.wrapping_mul(0x9E37));
        let repeat = !seen.insert(id);
        let raw_len = serde_json::to_string(&body).map_or(0, |s| s.len()) as u64;
        line.clear();
        let v: Value = match form.as_str() {
            "bare" => body,
            "wrapped" => json!({
                "ts": ts_ms / 1000,
                "service": strategy,
                "api_key": format!("sk-tenant-{tenant_ix}"),
                "request": body
            }),
            _ => {
                let prompt = raw_len / 4;
                let completion = 40 + (id % 160);
                json!({
                    "ts": prefixcache_analysis::input::format_ts(ts_ms),
                    "route": "chat_completions",
                    "strategy": strategy,
                    "tenant": tenant,
                    "status": if repeat { "hit" } else { "miss" },
                    "http_status": 200,
                    "key": format!("{:016x}", id),
                    "family": format!("{:016x}", mix64(service)),
                    "latency_ms": if repeat { 0.4 } else { 900.0 },
                    "model": model,
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": 0, "cache_write_tokens": 0},
                    "cost_usd": null,
                    "saved_usd": null,
                    "request": body
                })
            }
        };
        serde_json::to_writer(&mut line, &v)?;
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()?;
    drop(out);
    eprintln!("{lines} lines");
    Ok(())
}
