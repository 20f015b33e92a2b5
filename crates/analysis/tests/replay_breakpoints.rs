//! `replay` on GPT-5.6 traffic: the proxy's automatic breakpoints against none, and the
//! default `prompt_cache_key = "auto"` against sending no key, on every population of a
//! generated log (single-turn agents behind a long stable prompt, busy multi-turn
//! conversations, one-off prompts that never recur, and an older model).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use prefixcache_analysis::input::format_ts;
use prefixcache_analysis::progress::Progress;
use prefixcache_analysis::replay::spec::SimSpec;
use prefixcache_analysis::replay::{ReplayOptions, ReplayReport, SimResult, replay};
use prefixcache_analysis::traffic::Traffic;
use prefixcache_core::pricing::PriceTable;
use prefixcache_core::provider::cache::PromptCacheConfig;
use serde_json::{Value, json};

fn words(seed: usize, n: usize) -> String {
    const W: [&str; 12] = [
        "clause", "payment", "delivery", "supplier", "term", "days", "within", "invoice", "party",
        "agrees", "shall", "notice",
    ];
    (0..n)
        .map(|i| W[(seed * 31 + i * 7 + i / 3) % W.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn line(ts_ms: i64, strategy: &str, tenant: &str, model: &str, body: Value) -> String {
    json!({"ts": format_ts(ts_ms), "route": "chat_completions", "strategy": strategy,
        "tenant": tenant, "status": "miss", "http_status": 200, "model": model,
        "request": body})
    .to_string()
}

fn write_log() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let agent_prompt = format!("Agent rules.\n{}", words(1, 6000));
    let support_prompt = format!("Support rules.\n{}", words(2, 1300));
    let classic_prompt = format!("Old rules.\n{}", words(3, 1500));
    let t0 = 1_795_651_200_000i64;
    let mut histories: Vec<Vec<Value>> = (0..12)
        .map(|_| vec![json!({"role": "system", "content": support_prompt})])
        .collect();
    let mut lines = Vec::new();
    for i in 0..120usize {
        let ts = t0 + i as i64 * 4000;
        // An agent task every 4 s: one family, single turn.
        lines.push(line(
            ts,
            "agent",
            "aa",
            "gpt-5.6-terra",
            json!({"model": "gpt-5.6-terra",
            "temperature": 0, "messages": [
                {"role": "developer", "content": agent_prompt},
                {"role": "user", "content": format!("Task {i}: {}", words(100 + i, 40))}]}),
        ));
        // A conversation turn every 4 s, twelve conversations in turn (15 a minute).
        let c = i % 12;
        let h = &mut histories[c];
        h.push(json!({"role": "user", "content": format!("Conversation {c} asks {i}: {}", words(500 + i, 30))}));
        lines.push(line(
            ts + 1000,
            "support",
            "bb",
            "gpt-5.6-luna",
            json!({"model": "gpt-5.6-luna", "temperature": 0, "messages": h.clone()}),
        ));
        h.push(json!({"role": "assistant", "content": words(900 + i, 60)}));
        if i % 10 == 0 {
            // A long prompt that never comes back.
            lines.push(line(ts + 2000, "oneoff", "cc", "gpt-5.6-terra", json!({"model": "gpt-5.6-terra",
                "temperature": 0, "messages": [
                    {"role": "system", "content": format!("One-off {i}.\n{}", words(2000 + i, 1400))},
                    {"role": "user", "content": "Summarize."}]})));
        }
        if i % 3 == 0 {
            lines.push(line(
                ts + 3000,
                "classic",
                "dd",
                "gpt-4o-mini",
                json!({"model": "gpt-4o-mini",
                "temperature": 0, "messages": [
                    {"role": "system", "content": classic_prompt},
                    {"role": "user", "content": format!("Question {i}")}]}),
            ));
        }
    }
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.flush().unwrap();
    f
}

fn run() -> ReplayReport {
    let log = write_log();
    let opts = ReplayOptions {
        traffic: Traffic::new(None, None, None),
        specs: vec![SimSpec::parse("none").unwrap()],
        provider: Some(PromptCacheConfig::default()),
        prices: PriceTable::builtin().clone(),
        max_bad_lines: 0,
        threads: 2,
        seed: 0,
    };
    replay(log.path(), &opts, &Progress::hidden()).unwrap().0
}

fn group<'a>(r: &'a ReplayReport, name: &str) -> &'a SimResult {
    &r.groups.iter().find(|g| g.name == name).unwrap().results[0]
}

#[test]
fn breakpoints_and_the_default_key_on_every_population() {
    let r = run();
    println!("{}", r.to_text());
    let mut rows: Vec<(&str, &SimResult)> = vec![("overall", &r.overall[0])];
    for g in &r.groups {
        rows.push((g.name.as_str(), &g.results[0]));
        assert_eq!(
            (g.prompt_cache_key.as_str(), g.breakpoints.as_str()),
            ("auto", "auto")
        );
    }
    for (name, res) in rows {
        let p = res.provider.as_ref().unwrap();
        // The default key is never worse than sending none, with or without breakpoints.
        assert!(p.auto.cached_share >= p.off.cached_share, "{name}: key");
        assert!(
            p.auto.usd_spent <= p.off.usd_spent * 1.000_001,
            "{name}: key $"
        );
        let b = &p.breakpoints_auto;
        assert!(
            b.auto.cached_share >= b.off.cached_share,
            "{name}: key with breakpoints"
        );
        // Breakpoints never cost more than none.
        assert!(
            b.auto.usd_spent <= p.auto.usd_spent * 1.000_001,
            "{name}: breakpoints $"
        );
        assert_eq!(
            res.usd_spent, b.auto.usd_spent,
            "{name}: the strategy's own figure"
        );
    }
    // The agent's stable prompt: written on every request without a breakpoint, read
    // with one.
    let agent = group(&r, "agent").provider.as_ref().unwrap();
    assert!(
        agent.auto.cached_share < 0.05,
        "{}",
        agent.auto.cached_share
    );
    assert!(agent.breakpoints_auto.auto.cached_share > 0.9);
    assert!(agent.breakpoints_auto.auto.usd_spent < 0.5 * agent.auto.usd_spent);
    assert!(agent.breakpoints_injected >= 118);
    // One-off prompts: no breakpoint, the same figures.
    let oneoff = group(&r, "oneoff").provider.as_ref().unwrap();
    assert_eq!(oneoff.breakpoints_injected, 0);
    assert_eq!(
        oneoff.breakpoints_auto.auto.usd_spent,
        oneoff.auto.usd_spent
    );
    // An older model: never a breakpoint.
    let classic = group(&r, "classic").provider.as_ref().unwrap();
    assert_eq!(classic.breakpoints_injected, 0);
    assert!(classic.auto.cached_share > 0.5);
}

/// `analyze` (and so `lint` on a log) says when a family's stable text ends inside a
/// content block, and where; a family whose fixed text is a block of its own gets its
/// boundary and no such finding.
#[test]
fn analyze_reports_the_boundary_and_where_a_block_needs_splitting() {
    use prefixcache_analysis::analyze::{AnalyzeOptions, analyze};
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let instructions = format!("Review instructions.\n{}", words(7, 1500));
    let t0 = 1_795_651_200_000i64;
    for i in 0..20usize {
        // One block: the fixed instructions and the document together.
        let inline = json!({"model": "gpt-5.6-terra", "temperature": 0, "messages": [
            {"role": "user", "content": format!("{instructions}\nDocument {i}: {}", words(300 + i, 30))}]});
        writeln!(
            f,
            "{}",
            line(
                t0 + i as i64 * 5000,
                "inline",
                "aa",
                "gpt-5.6-terra",
                inline
            )
        )
        .unwrap();
        // Two blocks: the instructions, then the document.
        let split = json!({"model": "gpt-5.6-terra", "temperature": 0, "messages": [
            {"role": "system", "content": instructions},
            {"role": "user", "content": format!("Document {i}: {}", words(300 + i, 30))}]});
        writeln!(
            f,
            "{}",
            line(
                t0 + i as i64 * 5000 + 1,
                "split",
                "aa",
                "gpt-5.6-terra",
                split
            )
        )
        .unwrap();
    }
    f.flush().unwrap();
    let done = analyze(
        f.path(),
        &AnalyzeOptions {
            traffic: Traffic::new(None, None, None),
            max_bad_lines: 0,
            threads: 2,
        },
        &Progress::hidden(),
    )
    .unwrap();
    let strategy = |name: &str| {
        done.report
            .strategies
            .iter()
            .find(|s| s.name == name)
            .unwrap()
    };
    let inline = strategy("inline");
    let b = inline.families[0].breakpoint.as_ref().unwrap();
    assert_eq!((b.block, b.injected), (None, 0));
    assert!(b.split_at_tokens.unwrap() > 1024, "{b:?}");
    let finding = inline
        .findings
        .iter()
        .find(|f| f.rule == "breakpoint-split")
        .unwrap();
    assert_eq!(finding.count, 20);
    assert!(
        finding
            .message
            .contains("they share no whole content block"),
        "{}",
        finding.message
    );
    let split = strategy("split");
    let b = split.families[0].breakpoint.as_ref().unwrap();
    assert_eq!(b.path.as_deref(), Some("messages[0].content"));
    assert!(
        b.tokens.unwrap() > 1024 && b.pays && b.injected == 19,
        "{b:?}"
    );
    assert!(b.expected_saving_usd > 0.0);
    assert!(split.findings.iter().all(|f| f.rule != "breakpoint-split"));
    let text = done.report.to_text();
    assert!(
        text.contains("breakpoint: block 0 (messages[0].content) at"),
        "{text}"
    );
}
