//! Identical requests in flight cost one upstream call, and a failing leader does not
//! fail its followers. Leaders and followers are ordered with the mock's gates (the
//! upstream holds its answer until the test has seen every follower join), never with
//! sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Harness, Reply, Setup, chat_body};
use prefixcache_core::key::CacheKey;
use prefixcache_store::memory::MemoryStore;
use prefixcache_store::{CacheStore, Entry, ManualClock, PurgeFilter, StoreError, StoreStats};
use serde_json::{Value, json};

/// Sends `n` identical requests that the upstream holds at `gate`; opens the gate once
/// one reached the upstream and the other `n - 1` follow it.
async fn held_together(h: &Harness, body: &Value, n: usize, gate: &str) -> Vec<Reply> {
    let headers = [("x-mock-head-gate", gate)];
    let replies = futures_util::future::join_all((0..n).map(|_| h.chat_with(&headers, body)));
    let release = async {
        h.held_at(gate, 1).await;
        h.followers(n - 1).await;
        h.open_gate(gate);
    };
    tokio::join!(replies, release).0
}

/// The SSE events of a stream body, as the JSON of their `data` (without `[DONE]`).
fn events(r: &Reply) -> Vec<Value> {
    String::from_utf8_lossy(&r.body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn has_usage_chunk(r: &Reply) -> bool {
    events(r)
        .iter()
        .any(|e| e["choices"].as_array().is_some_and(Vec::is_empty) && e["usage"].is_object())
}

#[tokio::test]
async fn fifty_identical_requests_make_one_upstream_call() {
    let h = Harness::start(Setup::default()).await;
    let replies = held_together(&h, &chat_body("coalesce me"), 50, "fifty").await;
    assert_eq!(h.upstream_calls(), 1, "exactly one upstream call");
    let statuses: Vec<&str> = replies.iter().map(Reply::cache).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "MISS").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "COALESCED").count(),
        49,
        "{statuses:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("prefixcache_coalesced_total 49"),
        "{metrics}"
    );
}

#[tokio::test]
async fn fifty_identical_streams_make_one_upstream_call() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("coalesce my stream");
    body["stream"] = json!(true);
    let replies = held_together(&h, &body, 50, "fifty-streams").await;
    assert_eq!(h.upstream_calls(), 1);
    let coalesced = replies.iter().filter(|r| r.cache() == "COALESCED").count();
    assert_eq!(coalesced, 49);
    let content = replies[0].streamed_content();
    assert!(!content.is_empty());
    for r in &replies {
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("text/event-stream")
        );
        assert_eq!(
            r.body, replies[0].body,
            "every follower got the same stream bytes"
        );
    }
}

#[tokio::test]
async fn streaming_followers_receive_the_stream_as_it_arrives() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("live followers");
    body["stream"] = json!(true);
    // The upstream sends two events, then holds the rest until the test opens the gate.
    let leader = tokio::spawn(
        h.post("/v1/chat/completions")
            .header("x-mock-stream-gate", "live@2")
            .json(&body)
            .send(),
    );
    h.held_at("live", 1).await;
    let mut follower = h
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(follower.headers()["x-prefixcache-status"], "COALESCED");
    let first = follower.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(
        h.mock.mock.gates().state("live").waiting,
        1,
        "the follower has data while the upstream still holds the rest of its answer"
    );
    h.open_gate("live");
    let mut rest = first.to_vec();
    while let Some(c) = follower.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let leader = leader.await.unwrap().unwrap().bytes().await.unwrap();
    assert_eq!(leader.as_ref(), rest.as_slice());
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn a_json_follower_of_a_streaming_leader_gets_json() {
    let h = Harness::start(Setup::default()).await;
    let mut stream = chat_body("mixed forms");
    stream["stream"] = json!(true);
    let json_body = chat_body("mixed forms");
    let gate = [("x-mock-head-gate", "mixed")];
    let (a, b) = tokio::join!(h.chat_with(&gate, &stream), async {
        h.held_at("mixed", 1).await;
        let follower = h.chat(&json_body);
        let release = async {
            h.followers(1).await;
            h.open_gate("mixed");
        };
        tokio::join!(follower, release).0
    });
    assert_eq!((a.cache(), b.cache()), ("MISS", "COALESCED"));
    assert_eq!(b.content(), a.streamed_content());
    assert_eq!(h.upstream_calls(), 1);
}

/// Followers that want another form than the leader's, or the usage chunk the leader
/// did not ask for (or not the one it did), get exactly what a request of their own would.
#[tokio::test]
async fn followers_get_their_own_form_and_usage_whatever_the_leader_asked() {
    let h = Harness::start(Setup::default()).await;
    let base = chat_body("forms and usage");
    let with = |stream: Option<bool>, usage: Option<bool>| {
        let mut b = base.clone();
        if let Some(s) = stream {
            b["stream"] = json!(s);
        }
        if let Some(u) = usage {
            b["stream_options"] = json!({"include_usage": u});
        }
        b
    };
    // The leader streams without usage; four followers want other things.
    let leader = with(Some(true), None);
    let followers = [
        with(Some(true), Some(true)),
        with(Some(true), Some(false)),
        with(None, None),
        with(Some(false), None),
    ];
    let gate = [("x-mock-head-gate", "forms")];
    let (lead, replies) = tokio::join!(h.chat_with(&gate, &leader), async {
        h.held_at("forms", 1).await;
        let replies = futures_util::future::join_all(followers.iter().map(|b| h.chat(b)));
        let release = async {
            h.followers(followers.len()).await;
            h.open_gate("forms");
        };
        tokio::join!(replies, release).0
    });
    assert_eq!(lead.cache(), "MISS");
    assert!(!has_usage_chunk(&lead), "the leader did not ask for usage");
    assert!(replies.iter().all(|r| r.cache() == "COALESCED"));
    assert_eq!(h.upstream_calls(), 1);
    let text = lead.streamed_content();
    assert!(has_usage_chunk(&replies[0]), "include_usage: true gets it");
    assert_eq!(replies[0].streamed_content(), text);
    assert!(
        !has_usage_chunk(&replies[1]),
        "include_usage: false does not"
    );
    assert_eq!(replies[1].body, lead.body, "same stream as the leader's");
    for json_reply in &replies[2..] {
        assert!(
            json_reply
                .header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(json_reply.content(), text);
        assert!(
            json_reply.json()["usage"]["prompt_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    // A JSON leader, streaming followers with and without usage.
    h.settle().await;
    let base = chat_body("json leader");
    let mut usage = base.clone();
    usage["stream"] = json!(true);
    usage["stream_options"] = json!({"include_usage": true});
    let mut plain = base.clone();
    plain["stream"] = json!(true);
    let gate = [("x-mock-head-gate", "json-leader")];
    let (lead, replies) = tokio::join!(h.chat_with(&gate, &base), async {
        h.held_at("json-leader", 1).await;
        let replies = futures_util::future::join_all([h.chat(&usage), h.chat(&plain)]);
        let release = async {
            h.followers(2).await;
            h.open_gate("json-leader");
        };
        tokio::join!(replies, release).0
    });
    assert_eq!(h.upstream_calls(), 2);
    assert!(replies.iter().all(|r| r.cache() == "COALESCED"));
    assert!(has_usage_chunk(&replies[0]));
    assert!(!has_usage_chunk(&replies[1]));
    for r in &replies {
        assert_eq!(r.streamed_content(), lead.content());
    }
}

#[tokio::test]
async fn followers_of_a_failed_leader_call_upstream_themselves() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("failing leader");
    body["model"] = json!("mock-error-500");
    // Nine followers provably join the flight before its upstream answers 500.
    let replies = held_together(&h, &body, 10, "failing").await;
    assert!(replies.iter().all(|r| r.status == 500));
    assert!(replies.iter().all(|r| r.cache() != "COALESCED"));
    // The leader's call, then one per follower: none was failed by the leader's error.
    assert_eq!(h.upstream_calls(), 10);
}

/// A follower that joined before the head of a stream that is then cut after its 200:
/// a follower reading live sees the same cut (its response had begun); one that waits
/// for the whole answer calls upstream itself and gets a complete one. Nothing is stored
/// from the cut stream.
#[tokio::test]
async fn followers_of_a_leader_cut_after_its_head() {
    let h = Harness::start(Setup::default()).await;
    let mut stream = chat_body("cut after the head");
    stream["stream"] = json!(true);
    let json_body = chat_body("cut after the head");
    let leader = h
        .post("/v1/chat/completions")
        .header("x-mock-head-gate", "cut")
        .header("x-mock-cut-after", "3")
        .json(&stream)
        .send();
    let (leader, (live, whole)) = tokio::join!(leader, async {
        h.held_at("cut", 1).await;
        // The followers' own headers do not cut: only the leader's upstream call is cut.
        let live = h.post("/v1/chat/completions").json(&stream).send();
        let whole = h.chat(&json_body);
        let release = async {
            h.followers(2).await;
            h.open_gate("cut");
        };
        let (live, whole, ()) = tokio::join!(live, whole, release);
        (live, whole)
    });
    let leader = leader.unwrap();
    assert_eq!(leader.status(), 200);
    assert!(leader.bytes().await.is_err(), "the leader sees the cut");
    let live = live.unwrap();
    assert_eq!(
        (
            live.status().as_u16(),
            live.headers()["x-prefixcache-status"].to_str().unwrap()
        ),
        (200, "COALESCED")
    );
    assert!(
        live.bytes().await.is_err(),
        "a live follower sees the same cut"
    );
    assert_eq!((whole.status, whole.cache()), (200, "MISS"));
    assert!(!whole.content().is_empty());
    assert_eq!(h.upstream_calls(), 2, "the cut call and the follower's own");
    h.settle().await;
    // What is stored is the follower's complete JSON answer, not the cut stream.
    let hit = h.chat(&json_body).await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.body, whole.body);
}

/// A client that disconnects mid-stream: the flight goes on; the same request streamed
/// meanwhile joins it and gets the whole stream from its first event, and afterwards is
/// a hit.
#[tokio::test]
async fn a_client_disconnect_mid_stream_then_the_same_request_streamed() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("disconnect mid-stream");
    body["stream"] = json!(true);
    let mut first = h
        .post("/v1/chat/completions")
        .header("x-mock-stream-gate", "leave@2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["x-prefixcache-status"], "MISS");
    assert!(!first.chunk().await.unwrap().unwrap().is_empty());
    drop(first);
    h.held_at("leave", 1).await;
    let again = h.post("/v1/chat/completions").json(&body).send();
    let release = async {
        h.followers(1).await;
        h.open_gate("leave");
    };
    let (again, ()) = tokio::join!(again, release);
    let again = Reply::read(again.unwrap()).await;
    assert_eq!(again.cache(), "COALESCED");
    assert!(
        String::from_utf8_lossy(&again.body).ends_with("data: [DONE]\n\n"),
        "the whole stream, from its first event"
    );
    h.settle().await;
    let hit = Reply::read(
        h.post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.body, again.body);
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn a_no_cache_request_does_not_join_a_flight() {
    let h = Harness::start(Setup::default()).await;
    let body = chat_body("no-cache does not join");
    let gate = [("x-mock-head-gate", "no-cache")];
    let no_cache = [gate[0], ("cache-control", "no-cache")];
    let (a, b) = tokio::join!(h.chat_with(&gate, &body), async {
        h.held_at("no-cache", 1).await;
        let b = h.chat_with(&no_cache, &body);
        let release = async {
            // Its own upstream call reaches the gate too: it did not join the first.
            h.held_at("no-cache", 2).await;
            assert_eq!(h.state.flights.followers(), 0);
            h.open_gate("no-cache");
        };
        tokio::join!(b, release).0
    });
    assert_eq!((a.cache(), b.cache()), ("MISS", "BYPASS"));
    assert_eq!(h.upstream_calls(), 2);
}

/// A memory store whose writes take a while, as a remote store's can.
#[derive(Debug)]
struct SlowWrites(MemoryStore);

#[async_trait]
impl CacheStore for SlowWrites {
    fn backend(&self) -> &'static str {
        "slow-writes"
    }
    async fn get(&self, k: &CacheKey) -> Result<Option<Entry>, StoreError> {
        self.0.get(k).await
    }
    async fn put(&self, k: &CacheKey, e: &Entry) -> Result<(), StoreError> {
        // Not an ordering device: the outcome below must not depend on this delay; it
        // only makes the window a broken build leaves open wide enough to hit always.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.0.put(k, e).await
    }
    async fn delete(&self, k: &CacheKey) -> Result<(), StoreError> {
        self.0.delete(k).await
    }
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn purge(&self, f: &PurgeFilter) -> Result<u64, StoreError> {
        self.0.purge(f).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

/// The very next request after a leader's last byte is a HIT: the entry is stored
/// before the end of the answer reaches the caller (read-your-writes), streamed or not,
/// even when the store takes its time.
#[tokio::test]
async fn the_request_after_a_complete_answer_is_a_hit() {
    let clock = ManualClock::new(1_800_000_000_000);
    let store = Arc::new(SlowWrites(MemoryStore::new(
        64 << 20,
        Arc::new(clock.clone()),
    )));
    let h = Harness::start(
        Setup::default()
            .clock(clock)
            .store(store)
            .toml("[store]\ntimeout = \"10s\""),
    )
    .await;
    for stream in [false, true] {
        for i in 0..10 {
            let mut body = chat_body(&format!("read your writes {stream} {i}"));
            body["stream"] = json!(stream);
            // Read the answer as an SDK does: up to `[DONE]`, or until the JSON is
            // whole, without waiting for the end of the HTTP body.
            let mut first = h
                .post("/v1/chat/completions")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(first.headers()["x-prefixcache-status"], "MISS");
            let mut got = Vec::new();
            loop {
                let chunk = first.chunk().await.unwrap().expect("a whole answer");
                got.extend_from_slice(&chunk);
                let whole = if stream {
                    got.ends_with(b"data: [DONE]\n\n")
                } else {
                    serde_json::from_slice::<Value>(&got).is_ok()
                };
                if whole {
                    break;
                }
            }
            let second = h.chat(&body).await;
            assert_eq!(second.cache(), "HIT", "stream: {stream}, round {i}");
            drop(first);
        }
    }
    assert_eq!(h.upstream_calls(), 20);
}
