//! The effect of `prompt_cache_key` on the provider's prompt cache, measured with the
//! mock's simulation: many multi-turn conversations sharing one long system
//! prompt, at a rate far above the provider's ~15 requests/minute overflow threshold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Harness, Setup, metric};
use serde_json::{Value, json};

const CONVERSATIONS: usize = 24;
const TURNS: usize = 8;

/// A system prompt shared by every conversation, shorter than the 1024 tokens the
/// provider needs: conversations become cacheable only as they grow, turn by turn.
fn system_prompt() -> String {
    let rule = "Answer as the support assistant of a hardware store. Quote article numbers \
                exactly, never invent stock levels, and explain return rules plainly. ";
    format!("You are a helpful assistant. {}", rule.repeat(12))
}

/// A user turn of about 150 tokens.
fn user_turn(c: usize, turn: usize) -> String {
    format!(
        "Customer {c}, turn {turn}: do you have article 4711-{c} in stock, and can I return it \
         after {turn} weeks? {}",
        "I bought a cordless drill, two packs of screws and a spirit level last month, and \
         the drill stopped charging after a week; the receipt is attached to my account. "
            .repeat(3)
    )
}

/// Runs every conversation turn by turn (all conversations concurrently per turn) and
/// returns (cached share of prompt tokens, dollars spent) from the proxy's metrics.
async fn run(policy: &str) -> (f64, f64) {
    let h = Harness::start(Setup::default().toml(&format!(
        "[strategies.default]\nprompt_cache_key = \"{policy}\""
    )))
    .await;
    let system = system_prompt();
    let mut histories: Vec<Vec<Value>> = (0..CONVERSATIONS)
        .map(|_| vec![json!({"role": "system", "content": system})])
        .collect();
    for turn in 0..TURNS {
        for (c, history) in histories.iter_mut().enumerate() {
            history.push(json!({"role": "user", "content": user_turn(c, turn)}));
        }
        let bodies: Vec<Value> = histories
            .iter()
            .map(|messages| json!({"model": "gpt-4o-mini", "temperature": 0, "messages": messages}))
            .collect();
        let replies = futures_util::future::join_all(bodies.iter().map(|b| h.chat(b))).await;
        for (history, reply) in histories.iter_mut().zip(&replies) {
            assert_eq!(reply.status, 200);
            history.push(json!({"role": "assistant", "content": reply.content()}));
        }
    }
    h.settle().await;
    let m = h.metrics().await;
    let t = "prefixcache_tokens_total";
    let prompt = metric(&m, t, &[("kind", "prompt"), ("source", "upstream")]);
    let cached = metric(&m, t, &[("kind", "cached_prompt"), ("source", "upstream")]);
    let spent = metric(&m, "prefixcache_cost_usd_total", &[("kind", "spent")]);
    assert_eq!(
        metric(&m, "prefixcache_requests_total", &[("status", "miss")]),
        (CONVERSATIONS * TURNS) as f64,
        "every turn is a new request: the response cache plays no part here"
    );
    assert!(prompt > 0.0);
    (cached / prompt, spent)
}

#[tokio::test]
async fn a_conversation_key_raises_provider_cache_hits_and_lowers_cost() {
    let (off_share, off_usd) = run("off").await;
    let (conv_share, conv_usd) = run("conversation").await;
    println!(
        "provider cache, {CONVERSATIONS} conversations x {TURNS} turns: \
         off: cached share {off_share:.3}, ${off_usd:.6}; \
         conversation: cached share {conv_share:.3}, ${conv_usd:.6}"
    );
    assert!(
        conv_share > off_share + 0.1,
        "conversation keys should clearly raise the cached share: off {off_share:.3}, conversation {conv_share:.3}"
    );
    assert!(
        conv_usd < off_usd,
        "and lower the bill: off ${off_usd}, conversation ${conv_usd}"
    );
}
