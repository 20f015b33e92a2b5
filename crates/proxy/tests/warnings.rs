//! Live prefix warnings: content that cannot repeat inside the prefix window,
//! and whitespace drift between requests of one strategy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Harness, Setup, metric};
use serde_json::json;

const PROMPT: &str = "Translate the following customer message to French, keeping names, \
    product codes and the original tone. Reply with the translation only, nothing else. \
    Keep line breaks where the customer put them, do not translate quoted error messages, \
    and keep prices in their original currency with the original number format.";

fn body(system: &str, user: &str) -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": user}]})
}

#[tokio::test]
async fn a_request_id_at_the_start_is_flagged_and_at_the_end_is_not() {
    let h = Harness::start(Setup::default()).await;
    let at_start = h
        .chat(&body(
            &format!("[RequestID: 3f2b8c1e-9a4d-4e6f-8b2a-7c5d9e1f0a3b] {PROMPT}"),
            "Bonjour",
        ))
        .await;
    let w = at_start.header("x-prefixcache-warning").expect("warned");
    assert!(w.starts_with("dynamic-prefix"), "{w}");
    assert!(w.contains("at tokens"), "{w}");
    assert!(
        !w.contains("3f2b8c1e"),
        "the header carries no prompt text: {w}"
    );

    let at_end = h
        .chat(&body(
            &format!("{PROMPT}\n[RequestID: 3f2b8c1e-9a4d-4e6f-8b2a-7c5d9e1f0a3b]"),
            "Bonjour",
        ))
        .await;
    assert_eq!(
        at_end.header("x-prefixcache-warning"),
        None,
        "a UUID after the window is fine"
    );
    let clean = h
        .chat(&body(PROMPT, "Version 3 of the app, 2 apples"))
        .await;
    assert_eq!(clean.header("x-prefixcache-warning"), None);

    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "prefixcache_lint_findings_total",
            &[("rule", "dynamic-prefix")]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn whitespace_drift_between_services_is_flagged() {
    let h = Harness::start(Setup::default()).await;
    let tidy = "Summarize:\nthe text below for an executive audience, in three bullet points.";
    let drifted =
        "Summarize:\n\n\nthe text below for an executive audience, in three bullet points.";
    for _ in 0..2 {
        assert_eq!(
            h.chat(&body(tidy, "Quarterly report"))
                .await
                .header("x-prefixcache-warning"),
            None
        );
    }
    let r = h.chat(&body(drifted, "Quarterly report")).await;
    let w = r.header("x-prefixcache-warning").expect("drift flagged");
    assert!(w.contains("whitespace-drift"), "{w}");
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "prefixcache_lint_findings_total",
            &[("rule", "whitespace-drift")]
        ),
        1.0,
        "{m}"
    );
}
