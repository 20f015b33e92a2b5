//! `prefixcache analyze` and its deploy gate, driven through the built binary on small
//! generated logs. Every statistic is recomputed here by brute force from the token ids
//! of each request's prefix text (the rendering of `docs/tokenizer.md`: `role\ncontent\n`
//! per message, encoded with o200k_base), and each gate outcome is exercised: a fresh
//! sample passes, a one-word template change fails (where the article's own gate
//! passes), a moved granularity fails, one family's template change fails, a strategy
//! without new traffic is skipped.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use prefixcache_core::tokenizer::Encoding;
use serde_json::{Value, json};

const ENC: Encoding = Encoding::O200kBase;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prefixcache"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
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
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn prose(words: usize, salt: usize) -> String {
    let w = [
        "review",
        "the",
        "document",
        "carefully",
        "and",
        "report",
        "every",
        "issue",
        "with",
        "its",
        "page",
        "number",
        "summary",
        "owner",
        "deadline",
        "risk",
    ];
    (0..words)
        .map(|i| w[(i * 7 + salt) % w.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// User messages whose first words vary (none starts more than half of them).
fn user(i: usize, salt: usize) -> String {
    let verbs = [
        "Summarize",
        "Translate",
        "Classify",
        "Check",
        "List",
        "Rewrite",
        "Explain",
        "Extract",
        "Compare",
        "Score",
        "Shorten",
        "Title",
        "Tag",
        "Outline",
        "Grade",
        "Rank",
    ];
    format!(
        "{} item {} of batch {} please, focusing on {}",
        verbs[(i * 5 + salt) % verbs.len()],
        i * 31 + salt,
        salt,
        prose(3 + i % 4, i + salt)
    )
}

fn body(system: &str, user: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": user}
    ]})
}

fn line(strategy: &str, body: &Value) -> String {
    json!({"strategy": strategy, "request": body}).to_string() + "\n"
}

/// The tokens of a request's prefix text, as `analyze` counts them.
fn tokens(system: &str, user: &str) -> Vec<u32> {
    ENC.encode(&format!("system\n{system}\nuser\n{user}\n"))
}

fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Longest prefix shared by more than half, and how many start with it.
fn stable(seqs: &[Vec<u32>]) -> (usize, usize) {
    let need = seqs.len() / 2 + 1;
    let mut best = (0, 0);
    for a in seqs {
        let mut l: Vec<usize> = seqs.iter().map(|b| lcp(a, b)).collect();
        l.sort_unstable_by(|x, y| y.cmp(x));
        let len = l[need - 1];
        let count = seqs.iter().filter(|b| b.starts_with(&a[..len])).count();
        if len > best.0 {
            best = (len, count);
        }
    }
    best
}

/// Family hit rate at granularity g: share whose first g tokens another request shares.
fn reuse(seqs: &[Vec<u32>], g: usize) -> f64 {
    let mut heads: Vec<&[u32]> = seqs.iter().map(|s| &s[..g.min(s.len())]).collect();
    heads.sort();
    heads.dedup();
    (seqs.len() - heads.len()) as f64 / seqs.len() as f64
}

fn recommended(seqs: &[Vec<u32>]) -> usize {
    let best = reuse(seqs, 1);
    let longest = seqs.iter().map(Vec::len).max().unwrap();
    (1..=longest)
        .filter(|&g| reuse(seqs, g) >= best - 0.01 - 1e-12)
        .max()
        .unwrap()
}

fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn strategy<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no strategy {name}"))
}

#[test]
fn statistics_match_brute_force() {
    let d = Dir::new();
    let long = format!("You analyze documents. {}", prose(1100, 1));
    let short = format!("Different instructions. {}", prose(100, 2));
    let mut log = String::new();
    let mut all = Vec::new();
    let (mut fam_long, mut fam_short) = (Vec::new(), Vec::new());
    for i in 0..80 {
        let (system, fam) = if i % 4 == 3 {
            (&short, &mut fam_short)
        } else {
            (&long, &mut fam_long)
        };
        let u = user(i, 0);
        log.push_str(&line("docs", &body(system, &u)));
        let t = tokens(system, &u);
        fam.push(t.clone());
        all.push(t);
    }
    let path = d.write("log.jsonl", log);
    let o = run(&["analyze", "--json", s(&path)]);
    assert!(o.status.success());
    let v = json_of(&o);
    assert_eq!(v["schema"], "prefixcache.analyze/1");
    assert_eq!(v["input"]["requests"], 80);
    let st = strategy(&v, "docs");
    assert_eq!(st["requests"], 80);
    assert_eq!(st["encoding"], "o200k_base");
    assert_eq!(st["granularity"], 50);

    let mut lens: Vec<u64> = all.iter().map(|t| t.len() as u64).collect();
    lens.sort_unstable();
    let avg = lens.iter().sum::<u64>() as f64 / 80.0;
    assert!((st["tokens"]["avg"].as_f64().unwrap() - avg).abs() < 1e-9);
    assert_eq!(st["tokens"]["p50"], nearest_rank(&lens, 0.5));
    assert_eq!(st["tokens"]["p95"], nearest_rank(&lens, 0.95));
    assert_eq!(st["tokens"]["min"], lens[0]);
    assert_eq!(st["tokens"]["max"], lens[79]);
    assert_eq!(st["optimal_granularity"], (avg * 0.6) as u64);

    let shared = all.iter().map(|t| lcp(t, &all[0])).min().unwrap();
    assert_eq!(st["shared_prefix_tokens"], shared);
    let (len, count) = stable(&all);
    assert_eq!(st["stable_prefix"]["length"], len);
    assert_eq!(st["stable_prefix"]["requests"], count);
    assert_eq!(st["stable_prefix"]["tokens"], json!(all[0][..len].to_vec()));
    assert_eq!(st["recommended_granularity"], recommended(&all));
    let best = reuse(&all, 1);
    assert!((st["family_hit_rate"]["best"].as_f64().unwrap() - best).abs() < 1e-12);

    // Provider-cacheable: shares >= 1024 tokens with another request.
    let cacheable = all
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            all.iter()
                .enumerate()
                .any(|(j, b)| *i != j && lcp(a, b) >= 1024)
        })
        .count();
    assert_eq!(cacheable, 60, "the long template's requests");
    assert_eq!(st["provider_cacheable"]["requests"], cacheable);

    // The two templates differ within 50 tokens: two families, 60 and 20 requests.
    let fams = st["families"].as_array().unwrap();
    assert_eq!(st["families_total"], 2);
    for (f, seqs) in fams.iter().zip([&fam_long, &fam_short]) {
        assert_eq!(f["requests"], seqs.len());
        assert!((f["share"].as_f64().unwrap() - seqs.len() as f64 / 80.0).abs() < 1e-12);
        assert_eq!(f["id"].as_str().unwrap().len(), 16);
        let shared = seqs.iter().map(|t| lcp(t, &seqs[0])).min().unwrap();
        assert_eq!(f["shared_prefix_tokens"], shared);
        assert_eq!(f["stable_prefix"]["length"], stable(seqs).0);
        assert_eq!(f["recommended_granularity"], recommended(seqs));
    }
    // The text report says the same.
    let text = String::from_utf8(run(&["analyze", s(&path)]).stdout).unwrap();
    assert!(text.contains("strategy docs: 80 requests"), "{text}");
    assert!(
        text.contains(&format!("recommended {}", recommended(&all))),
        "{text}"
    );
}

/// The article's long system prompt and the same prompt with one word added early.
fn template(one_more_word: bool) -> String {
    let head = if one_more_word {
        "You are a very helpful assistant for Acme Corp."
    } else {
        "You are a helpful assistant for Acme Corp."
    };
    format!("{head} {}", prose(1200, 3))
}

fn log_of(system: &str, users: std::ops::Range<usize>, salt: usize) -> String {
    users
        .map(|i| line("support", &body(system, &user(i, salt))))
        .collect()
}

fn gate(d: &Dir, baseline: &Path, log: &str, name: &str) -> (Option<i32>, Value, String) {
    let path = d.write(name, log);
    let o = run(&["analyze", "--json", "--baseline", s(baseline), s(&path)]);
    let text = run(&["analyze", "--baseline", s(baseline), s(&path)]);
    (
        o.status.code(),
        json_of(&o),
        String::from_utf8(text.stdout).unwrap(),
    )
}

#[test]
fn the_gate_passes_fresh_traffic_and_fails_a_one_word_change_the_article_misses() {
    let d = Dir::new();
    let base_log = d.write("base.jsonl", log_of(&template(false), 0..120, 1));
    let o = run(&["analyze", "--json", s(&base_log)]);
    assert_eq!(o.status.code(), Some(0));
    let baseline = d.write("baseline.json", &o.stdout);

    // The same template, other users: passes.
    let (code, v, _) = gate(
        &d,
        &baseline,
        &log_of(&template(false), 0..100, 2),
        "fresh.jsonl",
    );
    assert_eq!(code, Some(0), "{}", v["gate"]);
    assert_eq!(v["gate"]["passed"], true);
    assert!(v["gate"]["reasons"].as_array().unwrap().is_empty());

    // One word added near the start of a 1200-token prompt: fails.
    let (code, v, text) = gate(
        &d,
        &baseline,
        &log_of(&template(true), 0..100, 2),
        "oneword.jsonl",
    );
    assert_eq!(code, Some(1), "{}", v["gate"]);
    let g = &v["gate"];
    assert_eq!(g["passed"], false);
    let st = &g["strategies"][0];
    let check = &st["prefixes"][0];
    assert_eq!(check["scope"], "strategy");
    assert_eq!(check["passed"], false);
    assert!((check["baseline_share"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(check["current_share"], 0.0);
    // Where: the first token that differs, and the tokens on both sides.
    let a = tokens(&template(false), &user(0, 1));
    let b = tokens(&template(true), &user(0, 2));
    let at = lcp(&a, &b);
    let div = &check["divergence"];
    assert_eq!(div["token_index"], at);
    assert_eq!(div["requests"], 100);
    assert_eq!(div["before"], json!(ENC.decode_each_lossy(&a[at - 3..at])));
    assert_eq!(
        div["baseline"],
        json!(ENC.decode_each_lossy(&a[at..at + 3]))
    );
    assert_eq!(div["current"], json!(ENC.decode_each_lossy(&b[at..at + 3])));
    assert_eq!(div["current"][0], " very");
    assert_eq!(
        div["line"], 2,
        "the system prompt starts on line 2 of the prefix text"
    );
    assert!(
        text.contains("FAILED") && text.contains(&format!("at token {at}")),
        "{text}"
    );
    assert!(
        g["reasons"][0].as_str().unwrap().contains("\" very\""),
        "{g}"
    );
    // The article's gate (optimal_granularity moved > 10%) does not see it.
    let article = &st["article"];
    assert_eq!(article["passed"], true, "{article}");
    assert!(article["shift"].as_f64().unwrap() < 0.01);
}

#[test]
fn the_gate_fails_when_the_recommended_granularity_moves() {
    let d = Dir::new();
    let t = template(false);
    let base_log = d.write("base.jsonl", log_of(&t, 0..100, 1));
    let baseline = d.write(
        "baseline.json",
        run(&["analyze", "--json", s(&base_log)]).stdout,
    );
    // Every user message now opens with the same 400-token preamble: the traffic still
    // starts with the stable prefix, but families could be 400 tokens longer.
    let preamble = format!("Background: {}\n", prose(400, 5));
    let log: String = (0..100)
        .map(|i| line("support", &body(&t, &format!("{preamble}{}", user(i, 2)))))
        .collect();
    let (code, v, text) = gate(&d, &baseline, &log, "moved.jsonl");
    assert_eq!(code, Some(1), "{}", v["gate"]);
    let st = &v["gate"]["strategies"][0];
    assert_eq!(st["prefixes"][0]["passed"], true, "{st}");
    let g = &st["granularity"];
    assert_eq!(g["passed"], false);
    let old = g["baseline"].as_f64().unwrap();
    let new = g["current"].as_f64().unwrap();
    assert!((g["shift"].as_f64().unwrap() - (new - old).abs() / old).abs() < 1e-12);
    assert!(new - old > 350.0, "{old} -> {new}");
    assert!(text.contains("recommended granularity moved"), "{text}");
    // A stricter gate lets a small move through.
    let o = run(&[
        "analyze",
        "--baseline",
        s(&baseline),
        "--max-shift",
        "0.9",
        s(&d.write("m2.jsonl", &log)),
    ]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn the_gate_watches_each_family_and_skips_strategies_without_traffic() {
    let d = Dir::new();
    let a = format!("Template A. {}", prose(300, 1));
    let b = format!("Template B. {}", prose(300, 2));
    let b2 = format!("Template B. {} and also be brief", prose(150, 2));
    let mix = |bt: &str, salt: usize| -> String {
        (0..100)
            .map(|i| {
                line(
                    "mixed",
                    &body(if i % 10 < 6 { &a } else { bt }, &user(i, salt)),
                )
            })
            .collect()
    };
    let mut base = mix(&b, 1);
    base.push_str(&log_of("Gone.", 0..5, 1).replace("support", "legacy"));
    let base_log = d.write("base.jsonl", base);
    let baseline = d.write(
        "baseline.json",
        run(&["analyze", "--json", s(&base_log)]).stdout,
    );

    // A (60%) unchanged, B (40%) changed after its first 50 tokens: the strategy's
    // stable prefix (A's) keeps its traffic, B's family prefix loses 40 points.
    let (code, v, _) = gate(&d, &baseline, &mix(&b2, 2), "b-changed.jsonl");
    assert_eq!(code, Some(1), "{}", v["gate"]);
    let st = v["gate"]["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mixed")
        .unwrap();
    let prefixes = st["prefixes"].as_array().unwrap();
    assert_eq!(prefixes[0]["scope"], "strategy");
    assert_eq!(prefixes[0]["passed"], true);
    let failed: Vec<&Value> = prefixes.iter().filter(|p| p["passed"] == false).collect();
    assert_eq!(failed.len(), 1, "{prefixes:?}");
    assert!(failed[0]["scope"].as_str().unwrap().starts_with("family "));
    assert!((failed[0]["lost"].as_f64().unwrap() - 0.4).abs() < 1e-9);
    let legacy = v["gate"]["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "legacy")
        .unwrap();
    assert_eq!(legacy["state"], "missing");
    assert_eq!(legacy["passed"], true);

    // Unchanged traffic passes; a broken baseline is an input error.
    let (code, _, _) = gate(&d, &baseline, &mix(&b, 3), "same.jsonl");
    assert_eq!(code, Some(0));
    let bad = d.write("bad.json", "{\"schema\": \"other\"}");
    assert_eq!(
        run(&["analyze", "--baseline", s(&bad), s(&base_log)])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn findings_and_the_provider_share_appear_in_the_report() {
    let d = Dir::new();
    let log: String = (0..30)
        .map(|i| {
            let system = format!("Request 2026-11-26T13:{:02}:00Z {}", i % 60, prose(60, 1));
            line("stamped", &body(&system, &user(i, 0)))
        })
        .collect();
    let path = d.write("log.jsonl", log);
    let v = json_of(&run(&["analyze", "--json", s(&path)]));
    let st = strategy(&v, "stamped");
    let rules: Vec<&str> = st["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"dynamic-prefix"), "{rules:?}");
    assert!(rules.contains(&"short-prefix"), "{rules:?}");
    assert_eq!(st["provider_cacheable"]["requests"], 0);
    // Each request's timestamp makes its own family.
    assert_eq!(st["families_total"], 30);
}
