//! `prefixcache replay`, driven through the built binary on small generated logs: each
//! simulated strategy's hits checked against an independent model of it written here
//! (exact keys with tenants, strategies, TTL and failed calls; the article's prefix
//! slots; LRU capacity), tokens and dollars, the provider's cached-token share, every
//! input form, malformed lines, the HTML report, and agreement with the real proxy
//! (`serve` + `mock-upstream` processes, traffic sent with `replay --live`).

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use prefixcache_core::provider::prompt::request_prompts;
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::Encoding;
use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prefixcache"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small deterministic generator (64-bit LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn chat(system: &str, user: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": user}
    ]})
}

/// A line of the proxy's request log.
#[allow(clippy::too_many_arguments)]
fn proxy_line(
    ts_ms: i64,
    strategy: &str,
    tenant: &str,
    http_status: u16,
    prompt: u64,
    completion: u64,
    cached: u64,
    body: &Value,
) -> String {
    let secs = ts_ms / 1000;
    let ts = format!(
        "2026-11-26T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        ts_ms % 1000
    );
    json!({
        "ts": ts, "route": "chat_completions", "strategy": strategy, "tenant": tenant,
        "status": "miss", "http_status": http_status, "key": "0000000000000000",
        "family": "0000000000000000", "latency_ms": 1.0, "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached, "cache_write_tokens": 0},
        "cost_usd": null, "saved_usd": null, "request": body
    })
    .to_string()
}

fn result<'a>(v: &'a Value, strategy: &str) -> &'a Value {
    v["overall"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["strategy"] == strategy)
        .unwrap_or_else(|| panic!("no result for {strategy}: {v}"))
}

fn group_result<'a>(v: &'a Value, group: &str, strategy: &str) -> &'a Value {
    let g = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == group)
        .unwrap();
    g["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["strategy"] == strategy)
        .unwrap()
}

/// Prices of the test's model, USD per 1M tokens: input, cached input, output.
const PRICES: (f64, f64, f64) = (1.0, 0.5, 2.0);

fn pricing_file(d: &Dir) -> PathBuf {
    d.write(
        "pricing.toml",
        format!(
            "[models.\"gpt-4o-mini\"]\ninput = {}\ncached_input = {}\noutput = {}\n",
            PRICES.0, PRICES.1, PRICES.2
        ),
    )
}

fn cost(prompt: u64, completion: u64, cached: u64) -> f64 {
    ((prompt - cached) as f64 * PRICES.0 + cached as f64 * PRICES.1 + completion as f64 * PRICES.2)
        / 1e6
}

#[test]
fn exact_hits_tokens_and_dollars_match_an_independent_model() {
    let d = Dir::new();
    let config = d.write(
        "prefixcache.toml",
        "[strategies.a]\nttl = \"60s\"\n[strategies.b]\nttl = \"1h\"\n",
    );
    let tenants = ["aaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbb2", "ccccccccccccccc3"];
    let mut rng = Lcg(7);
    let mut log = String::new();
    // The model: entries by (tenant, strategy, item), with expiry and the stored cost.
    let mut store: HashMap<(usize, &str, u64), (i64, f64)> = HashMap::new();
    let (mut hits, mut hits_a, mut tokens_saved) = (0u64, 0u64, 0u64);
    let (mut spent, mut saved) = (0.0f64, 0.0f64);
    for i in 0..400u64 {
        let tenant = rng.below(3) as usize;
        let strategy = if rng.below(2) == 0 { "a" } else { "b" };
        let item = rng.below(20);
        let ts = i as i64 * 7_000;
        let status = if i % 13 == 5 { 500 } else { 200 };
        let (prompt, completion, cached) = (100 + item, 10 + item % 7, 32);
        let mut body = chat("You are terse.", &format!("item {item}"));
        // Fields that cannot change the answer do not change the key.
        match i % 3 {
            0 => body["stream"] = json!(true),
            1 => body["user"] = json!(format!("user-{i}")),
            _ => {}
        }
        log.push_str(&proxy_line(
            ts,
            strategy,
            tenants[tenant],
            status,
            prompt,
            completion,
            cached,
            &body,
        ));
        log.push('\n');
        let ttl = if strategy == "a" { 60_000 } else { 3_600_000 };
        let k = (tenant, strategy, item);
        match store.get(&k) {
            Some(&(exp, c)) if exp > ts => {
                hits += 1;
                hits_a += u64::from(strategy == "a");
                tokens_saved += prompt + completion;
                saved += c;
            }
            _ => {
                let c = cost(prompt, completion, cached);
                spent += c;
                if status == 200 {
                    store.insert(k, (ts + ttl, c));
                }
            }
        }
    }
    let path = d.write("log.jsonl", &log);
    let pricing = pricing_file(&d);
    let v = json_of(&run(&[
        "replay",
        "--json",
        "--no-provider",
        "--config",
        s(&config),
        "--pricing",
        s(&pricing),
        "--strategy",
        "none",
        "--strategy",
        "exact",
        s(&path),
    ]));
    assert_eq!(v["schema"], "prefixcache.replay/2");
    let exact = result(&v, "exact");
    assert_eq!(exact["requests"], 400);
    assert_eq!(exact["hits"], hits, "{exact}");
    assert!(
        hits > 50 && hits < 350,
        "the log should exercise both outcomes: {hits}"
    );
    assert_eq!(exact["tokens_saved"], tokens_saved);
    assert!((exact["hit_rate"].as_f64().unwrap() - hits as f64 / 400.0).abs() < 1e-12);
    assert!(
        (exact["usd_spent"].as_f64().unwrap() - spent).abs() < 1e-9,
        "{exact}"
    );
    assert!(
        (exact["usd_saved"].as_f64().unwrap() - saved).abs() < 1e-9,
        "{exact}"
    );
    assert_eq!(group_result(&v, "a", "exact")["hits"], hits_a);
    let none = result(&v, "none");
    assert_eq!(none["hits"], 0);
    assert!((none["usd_spent"].as_f64().unwrap() - (spent + saved)).abs() < 1e-9);
}

#[test]
fn prefix_slots_lose_hits_as_the_article_s_design_does() {
    let d = Dir::new();
    let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa ".repeat(8);
    let templates: Vec<String> = (0..3).map(|k| format!("Template {k}: {words}")).collect();
    let mut rng = Lcg(11);
    let mut log = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut slot_by_template: HashMap<usize, u64> = HashMap::new();
    let mut one_slot: Option<(usize, u64)> = None;
    let (mut exact, mut by_family, mut by_one) = (0u64, 0u64, 0u64);
    for i in 0..300u64 {
        let t = rng.below(3) as usize;
        let item = rng.below(6);
        let body = chat(&templates[t], &format!("question {item}"));
        log.push_str(&proxy_line(
            i as i64 * 1000,
            "p",
            "aaaaaaaaaaaaaaa1",
            200,
            50,
            5,
            0,
            &body,
        ));
        log.push('\n');
        exact += u64::from(!seen.insert((t, item)));
        // prefix:50: the templates differ at their second token, so one slot each.
        if slot_by_template.get(&t) == Some(&item) {
            by_family += 1;
        } else {
            slot_by_template.insert(t, item);
        }
        // prefix:1: every prompt starts with the same token; one slot for all.
        if one_slot == Some((t, item)) {
            by_one += 1;
        } else {
            one_slot = Some((t, item));
        }
    }
    let path = d.write("log.jsonl", &log);
    let v = json_of(&run(&[
        "replay",
        "--json",
        "--no-provider",
        "--strategy",
        "exact",
        "--strategy",
        "prefix:50",
        "--strategy",
        "prefix:1",
        s(&path),
    ]));
    assert_eq!(result(&v, "exact")["hits"], exact);
    assert_eq!(result(&v, "prefix:50")["hits"], by_family);
    assert_eq!(result(&v, "prefix:1")["hits"], by_one);
    assert!(
        by_one < by_family && by_family < exact,
        "{by_one} {by_family} {exact}"
    );
    assert_eq!(result(&v, "prefix:50")["kind"], "prefix");
    assert_eq!(result(&v, "prefix:50")["granularity"], 50);
}

#[test]
fn capacity_evicts_least_recently_used_entries() {
    let d = Dir::new();
    let mut rng = Lcg(3);
    let mut log = String::new();
    let cap = 4usize;
    let mut lru: VecDeque<u64> = VecDeque::new();
    let mut hits = 0u64;
    for i in 0..500u64 {
        let item = rng.below(9);
        let body = chat("You are terse.", &format!("item {item}"));
        log.push_str(&proxy_line(
            i as i64 * 1000,
            "default",
            "aaaaaaaaaaaaaaa1",
            200,
            50,
            5,
            0,
            &body,
        ));
        log.push('\n');
        if let Some(pos) = lru.iter().position(|x| *x == item) {
            hits += 1;
            lru.remove(pos);
        } else if lru.len() == cap {
            lru.pop_front();
        }
        lru.push_back(item);
    }
    let path = d.write("log.jsonl", &log);
    let v = json_of(&run(&[
        "replay",
        "--json",
        "--no-provider",
        "--strategy",
        "exact,capacity=4",
        "--strategy",
        "exact,ttl=0",
        s(&path),
    ]));
    let r = result(&v, "exact,capacity=4");
    assert_eq!(r["hits"], hits);
    assert!(r["evictions"].as_u64().unwrap() > 0);
    assert_eq!(
        result(&v, "exact,ttl=0s")["hits"],
        0,
        "a zero TTL stores nothing"
    );
}

/// A system prompt past the provider's 1024-token minimum.
fn long_system() -> String {
    "Follow the house style guide for every answer you write. ".repeat(120)
}

fn wrapped_line(ts_s: i64, body: &Value) -> String {
    json!({"ts": ts_s, "service": "s", "api_key": "sk-test", "request": body}).to_string()
}

#[test]
fn provider_cached_share_follows_the_simulated_prompt_cache() {
    let d = Dir::new();
    let body = chat(&long_system(), "Summarize the policy.");
    let len = request_prompts(
        Route::ChatCompletions,
        body.as_object().unwrap(),
        Encoding::O200kBase,
    )[0]
    .len() as u64;
    assert!(len >= 1024, "{len}");
    let cached_each = len / 128 * 128;
    // 20 requests 10 s apart: 6 a minute, under the overflow rate, within the idle TTL.
    let close: String = (0..20)
        .map(|i| wrapped_line(1_795_698_000 + i * 10, &body) + "\n")
        .collect();
    let path = d.write("close.jsonl", close);
    let v = json_of(&run(&[
        "replay",
        "--json",
        "--strategy",
        "none",
        "--strategy",
        "exact",
        s(&path),
    ]));
    let none = result(&v, "none");
    assert_eq!(
        none["prompt_tokens"],
        20 * len,
        "prompt tokens counted by the recipe"
    );
    for policy in ["off", "conversation", "family"] {
        let p = &none["provider"][policy];
        assert_eq!(p["prompt_tokens"], 20 * len);
        assert_eq!(p["cached_tokens"], 19 * cached_each, "{policy}: {p}");
        let share = (19 * cached_each) as f64 / (20 * len) as f64;
        assert!((p["cached_share"].as_f64().unwrap() - share).abs() < 1e-12);
    }
    // The response cache answers the repeats: the provider sees one cold request.
    let exact = result(&v, "exact");
    assert_eq!(exact["hits"], 19);
    assert_eq!(exact["provider"]["conversation"]["cached_tokens"], 0);
    assert_eq!(exact["provider"]["conversation"]["prompt_tokens"], len);

    // Six minutes apart: past the 5-minute idle TTL, nothing stays cached.
    let far: String = (0..5)
        .map(|i| wrapped_line(1_795_698_000 + i * 360, &body) + "\n")
        .collect();
    let path = d.write("far.jsonl", far);
    let v = json_of(&run(&["replay", "--json", "--strategy", "none", s(&path)]));
    assert_eq!(result(&v, "none")["provider"]["off"]["cached_tokens"], 0);
    let v = json_of(&run(&[
        "replay",
        "--json",
        "--strategy",
        "none",
        "--cache-idle-ttl",
        "10m",
        s(&path),
    ]));
    assert_eq!(
        result(&v, "none")["provider"]["off"]["cached_tokens"],
        4 * cached_each
    );
}

#[test]
fn every_input_form_and_gzip_give_the_same_hits() {
    let d = Dir::new();
    let mut rng = Lcg(5);
    let (mut proxy, mut bare, mut wrapped) = (String::new(), String::new(), String::new());
    let mut seen = std::collections::HashSet::new();
    let mut hits = 0;
    for i in 0..200i64 {
        let item = rng.below(30);
        let body = chat("You are terse.", &format!("item {item}"));
        hits += u64::from(!seen.insert(item));
        proxy.push_str(
            &(proxy_line(
                i * 1000,
                "default",
                "aaaaaaaaaaaaaaa1",
                200,
                10,
                1,
                0,
                &body,
            ) + "\n"),
        );
        bare.push_str(&(body.to_string() + "\n"));
        wrapped.push_str(&(json!({"ts": 1_795_698_000 + i, "strategy": "default", "tenant": "t", "request": body}).to_string() + "\n"));
    }
    let mut paths = vec![
        d.write("proxy.jsonl", proxy),
        d.write("bare.jsonl", bare),
        d.write("wrapped.jsonl", wrapped),
    ];
    let gz = d.path("proxy.jsonl.gz");
    let out = Command::new("gzip")
        .arg("-c")
        .arg(&paths[0])
        .output()
        .unwrap();
    std::fs::write(&gz, out.stdout).unwrap();
    paths.push(gz);
    for p in &paths {
        let v = json_of(&run(&[
            "replay",
            "--json",
            "--no-provider",
            "--strategy",
            "exact",
            s(p),
        ]));
        assert_eq!(result(&v, "exact")["hits"], hits, "{}", p.display());
        assert_eq!(v["input"]["requests"], 200);
    }
}

#[test]
fn malformed_lines_are_reported_and_skipped_up_to_the_limit() {
    let d = Dir::new();
    let body = chat("You are terse.", "hi");
    let text = format!(
        "{b}\nnot json\n{b}\n[1,2]\n\n{{\"model\":\"x\"}}\n{b}\n",
        b = body
    );
    let path = d.write("log.jsonl", text);
    let o = run(&[
        "replay",
        "--json",
        "--no-provider",
        "--strategy",
        "exact",
        s(&path),
    ]);
    let v = json_of(&o);
    assert_eq!(v["input"]["bad_lines"], 3);
    assert_eq!(result(&v, "exact")["hits"], 2);
    let err = stderr(&o);
    for line in [
        ":2: skipped: invalid JSON",
        ":4: skipped: not a JSON object",
        ":6: skipped: neither",
    ] {
        assert!(err.contains(line), "{line} in {err}");
    }
    let o = run(&["replay", "--max-bad-lines", "2", s(&path)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("3 malformed lines"), "{}", stderr(&o));
    assert_eq!(
        run(&["replay", s(&d.path("missing.jsonl"))]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["replay", "--strategy", "lru", s(&path)])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn the_html_report_is_self_contained() {
    let d = Dir::new();
    let mut log = String::new();
    for i in 0..60i64 {
        let body = chat(
            &format!("Template {}: {}", i % 2, long_system()),
            &format!("item {}", i % 7),
        );
        log.push_str(
            &(proxy_line(
                i * 1000,
                if i % 2 == 0 { "docs" } else { "faq" },
                "aaaaaaaaaaaaaaa1",
                200,
                1500,
                20,
                0,
                &body,
            ) + "\n"),
        );
    }
    let path = d.write("log.jsonl", log);
    let report = d.path("report.html");
    let o = run(&["replay", "--report", s(&report), s(&path)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.contains("prefix:50") && stdout.contains("strategy docs"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    assert!(html.contains("Hit rate by granularity") && html.contains("<table>"));
    assert!(html.contains("docs") && html.contains("faq") && html.contains("prefix:500"));
    // Nothing to fetch: no scripts, links, images or external URLs (the SVG namespace
    // is a name, not a request).
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    for needle in [
        "<script", "src=", "href=", "http://", "https://", "@import", "url(",
    ] {
        assert!(!without_ns.contains(needle), "{needle} in the report");
    }
}

/// A child process killed (by its own id) when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Starts `prefixcache ARGS` and waits for its "listening on URL" line.
    fn start(args: &[&str]) -> (Proc, String) {
        let mut child = bin()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the process exited before listening")
                .unwrap();
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (Proc(child), url)
    }

    /// SIGTERM by pid (the proxy flushes its request log on it) and wait.
    fn terminate(mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.0.wait();
    }
}

#[test]
fn exact_replay_agrees_with_the_real_proxy() {
    let d = Dir::new();
    let mut rng = Lcg(21);
    let mut log = String::new();
    let mut seen = std::collections::HashSet::new();
    let n = 80u64;
    for _ in 0..n {
        let item = rng.below(25);
        let mut body = chat("You are terse.", &format!("item {item}"));
        if item.is_multiple_of(4) {
            body["model"] = json!("gpt-4o");
        }
        seen.insert(item);
        log.push_str(&(body.to_string() + "\n"));
    }
    let expected_hits = n - seen.len() as u64;
    let traffic = d.write("traffic.jsonl", log);
    let (mock, mock_url) = Proc::start(&["mock-upstream", "--listen", "127.0.0.1:0"]);
    let reqlog = d.path("requests.jsonl");
    let (proxy, proxy_url) = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &mock_url,
        "--store",
        "memory",
        "--data-dir",
        s(&d.path("data")),
        "--log-requests",
        s(&reqlog),
    ]);
    let live = json_of(&run(&[
        "replay",
        "--json",
        "--live",
        &proxy_url,
        "--concurrency",
        "1",
        "--api-key",
        "sk-test",
        s(&traffic),
    ]));
    assert_eq!(live["completed"], n, "{live}");
    assert_eq!(live["errors"], 0);
    assert_eq!(live["statuses"]["200"], n);
    assert_eq!(live["cache"]["HIT"], expected_hits, "{live}");
    assert_eq!(live["cache"]["MISS"], seen.len() as u64);
    assert!((live["hit_rate"].as_f64().unwrap() - expected_hits as f64 / n as f64).abs() < 1e-12);
    assert!(live["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    proxy.terminate();
    drop(mock);

    // The proxy's own log, replayed offline: the simulator's exact hits are the proxy's.
    let text = std::fs::read_to_string(&reqlog).unwrap();
    let logged_hits = text
        .lines()
        .filter(|l| l.contains("\"status\":\"hit\""))
        .count() as u64;
    assert_eq!(text.lines().count() as u64, n);
    assert_eq!(logged_hits, expected_hits);
    let v = json_of(&run(&[
        "replay",
        "--json",
        "--strategy",
        "exact",
        s(&reqlog),
    ]));
    assert_eq!(result(&v, "exact")["hits"], logged_hits);
    // The logged usage is the mock's exact count; replay reports it as logged.
    assert_eq!(v["input"]["usage_logged"], n);
}

#[test]
fn live_errors_are_counted_not_fatal() {
    let d = Dir::new();
    let log = d.write(
        "t.jsonl",
        format!("{}\n{}\n", chat("a", "b"), chat("a", "c")),
    );
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = json_of(&run(&[
        "replay",
        "--json",
        "--live",
        &format!("http://127.0.0.1:{port}"),
        "--timeout",
        "5s",
        s(&log),
    ]));
    assert_eq!(v["requests"], 2);
    assert_eq!(
        v["errors"].as_u64().unwrap() + v["timeouts"].as_u64().unwrap(),
        2
    );
    assert_eq!(v["completed"], 0);
}
