//! Admin endpoints: `/admin/stats` and `/admin/purge`, behind `admin.token` on the main
//! listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Harness, Reply, Setup, chat_body};
use serde_json::json;

const TOKEN: &str = "admin-secret-token";

#[tokio::test]
async fn admin_routes_need_the_token_and_purge_by_strategy() {
    let h = Harness::start(Setup::default().toml(&format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[strategies.other]\nttl = \"1h\""
    )))
    .await;
    let body = chat_body("purge me");
    assert_eq!(h.chat(&body).await.cache(), "MISS");
    let other = h
        .chat_with(&[("x-prefixcache-strategy", "other")], &body)
        .await;
    assert_eq!(other.cache(), "MISS");
    h.settle().await;

    let denied = Reply::read(
        h.client
            .get(format!("{}/admin/stats", h.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"]["code"], "admin_unauthorized");
    let wrong = h
        .client
        .get(format!("{}/admin/stats", h.url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let stats = Reply::read(
        h.client
            .get(format!("{}/admin/stats", h.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["strategies"], json!(["other", "default"]));

    let purged = Reply::read(
        h.client
            .post(format!("{}/admin/purge", h.url))
            .bearer_auth(TOKEN)
            .json(&json!({"strategy": "default"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (purged.status, purged.json()["purged"].clone()),
        (200, json!(1))
    );
    assert_eq!(
        h.chat(&body).await.cache(),
        "MISS",
        "the default strategy's entry is gone"
    );
    let kept = h
        .chat_with(&[("x-prefixcache-strategy", "other")], &body)
        .await;
    assert_eq!(kept.cache(), "HIT", "the other strategy's entry stays");

    let bad = Reply::read(
        h.client
            .post(format!("{}/admin/purge", h.url))
            .bearer_auth(TOKEN)
            .json(&json!({"family": "not-hex"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn without_a_token_admin_routes_are_not_served_on_the_main_listener() {
    let h = Harness::start(Setup::default()).await;
    let r = h
        .client
        .get(format!("{}/admin/stats", h.url))
        .send()
        .await
        .unwrap();
    // Forwarded like any unknown path: the mock answers 404 in OpenAI's shape.
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("x-prefixcache-status").is_none());
}
