//! What a slow, idle or greedy client can hold of the proxy is bounded (`[limits]`), on
//! real sockets: slow headers and bodies are cut, idle connections closed, and overload
//! refused early with `503`, `Retry-After` and OpenAI's error shape. Responses above
//! `max_response_bytes` stream through uncached; a large entry replayed as SSE is
//! rendered event by event, byte for byte as it would be all at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use common::{Harness, Setup, chat_body, metric};
use futures_util::StreamExt;
use prefixcache_core::route::Route;
use prefixcache_mock::MockConfig;
use prefixcache_proxy::metrics::ReasonLabels;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Generous bound for events the proxy must cause on its own (a 1 s timeout firing):
/// far above the configured value, so a slow machine never fails the test.
const WITHIN: Duration = Duration::from_secs(20);

async fn connect(h: &Harness) -> TcpStream {
    TcpStream::connect(h.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or it is reset); what was read.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(WITHIN, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the proxy did not close the connection; read so far: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one whole response with a `content-length` from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(WITHIN, s.read(&mut buf))
            .await
            .expect("response")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
}

fn timeouts(h: &Harness, reason: &'static str) -> u64 {
    h.state
        .metrics
        .client_timeouts
        .get_or_create(&ReasonLabels { reason })
        .get()
}

/// Asserts a raw HTTP response is a 503 overload refusal in OpenAI's error shape.
fn assert_overloaded(response: &str, what: &str) {
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("\r\nretry-after: 1\r\n"), "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "overloaded", "{v}");
    assert_eq!(v["error"]["type"], "proxy_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(what), "{message}");
}

#[tokio::test]
async fn a_slow_loris_trickling_header_bytes_is_cut_at_the_header_timeout() {
    let h = Harness::start(Setup::default().toml("[limits]\nheader_read_timeout = \"1s\"")).await;
    let s = connect(&h).await;
    let (mut read, mut write) = s.into_split();
    // One header byte every 100 ms, for as long as the connection takes them.
    let trickle = tokio::spawn(async move {
        write
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-pad: ")
            .await
            .unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    let closed = tokio::time::timeout(WITHIN, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "a trickling header kept the connection open"
    );
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "));
    assert_eq!(timeouts(&h, "header"), 1);
}

#[tokio::test]
async fn a_slow_body_is_refused_with_408_and_the_connection_closed() {
    let h = Harness::start(
        Setup::default().toml("[limits]\nbody_read_timeout = \"1s\"\nbody_min_rate = \"1MiB\""),
    )
    .await;
    let mut s = connect(&h).await;
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n\
          content-type: application/json\r\ncontent-length: 1000000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    // One body byte every 100 ms: far below the minimum rate.
    let (mut read, mut write) = s.into_split();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut s_read = Vec::new();
    let closed = tokio::time::timeout(WITHIN, read.read_to_end(&mut s_read)).await;
    trickle.abort();
    assert!(closed.is_ok(), "a slow body kept the connection open");
    let response = String::from_utf8_lossy(&s_read);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "body_timeout", "{v}");
    assert_eq!(timeouts(&h, "body"), 1);
    assert_eq!(h.upstream_calls(), 0);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    // The header timeout is long, so the close comes from the idle timeout.
    let h = Harness::start(
        Setup::default().toml("[limits]\nidle_timeout = \"1s\"\nheader_read_timeout = \"10m\""),
    )
    .await;
    let mut s = connect(&h).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(
        read_to_close(&mut s).await,
        "",
        "closed without another answer"
    );
    assert_eq!(timeouts(&h, "idle"), 1);

    // HTTP/2 has no header timeout to fall back on: the same idle bound applies.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let closed = tokio::time::timeout(WITHIN, async {
        while timeouts(&h, "idle") < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection was not closed");
}

#[tokio::test]
async fn the_header_timeout_also_closes_a_connection_waiting_for_its_next_request() {
    let h = Harness::start(
        Setup::default().toml("[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"10m\""),
    )
    .await;
    let mut s = connect(&h).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    read_to_close(&mut s).await;
    assert_eq!(timeouts(&h, "idle"), 0);
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_503_and_retry_after() {
    let h = Harness::start(Setup::default().toml("[limits]\nmax_connections = 1")).await;
    // The one slot: a kept-alive connection that answered a request.
    let mut held = connect(&h).await;
    held.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut held).await.starts_with("HTTP/1.1 200"));
    assert_eq!(h.state.admission.open_connections(), 1);

    let mut extra = connect(&h).await;
    let body = serde_json::to_vec(&chat_body("refused")).unwrap();
    extra
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    extra.write_all(&body).await.unwrap();
    assert_overloaded(&read_to_close(&mut extra).await, "max_connections");
    assert_eq!(h.upstream_calls(), 0);
    let m = h.metrics_via(&mut held).await;
    assert_eq!(
        metric(
            &m,
            "prefixcache_rejected_total",
            &[("reason", "connections")]
        ),
        1.0
    );

    // Once the slot is free again, connections are served.
    drop(held);
    let freed = tokio::time::timeout(WITHIN, async {
        while h.state.admission.open_connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(freed.is_ok());
    assert_eq!(h.chat(&chat_body("served")).await.status, 200);
}

/// An upstream that answers every request with a chat stream whose first event comes
/// at once and the rest only when the test opens the gate; it counts the requests.
struct Gated {
    url: String,
    open: watch::Sender<bool>,
    calls: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Gated {
    async fn start() -> Gated {
        let (open, gate) = watch::channel(false);
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let mut gate = gate.clone();
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
                let event = |content: &str, finish: Value| {
                    let chunk = json!({"id": "chatcmpl-g", "object": "chat.completion.chunk",
                        "created": 1, "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "delta": {"content": content},
                            "finish_reason": finish}]});
                    Bytes::from(format!("data: {chunk}\n\n"))
                };
                let first = event("held", Value::Null);
                let last = event(" open", json!("stop"));
                let stream =
                    futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                        .chain(futures_util::stream::once(async move {
                            let _ = gate.wait_for(|open| *open).await;
                            Ok(last)
                        }))
                        .chain(futures_util::stream::once(async {
                            Ok(Bytes::from_static(b"data: [DONE]\n\n"))
                        }));
                let mut resp = axum::response::Response::new(Body::from_stream(stream));
                resp.headers_mut()
                    .insert("content-type", "text/event-stream".parse().unwrap());
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Gated {
            url,
            open,
            calls,
            task,
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn requests_over_the_limit_are_refused_with_503_and_retry_after() {
    let upstream = Gated::start().await;
    let h = Harness::start(
        Setup::default()
            .upstream(&upstream.url)
            .toml("[limits]\nmax_requests_in_flight = 1"),
    )
    .await;
    let mut body = chat_body("hold the only slot");
    body["stream"] = json!(true);
    let mut held = h
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let first = held.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("held"));
    assert_eq!(h.state.admission.requests_in_flight(), 1);

    // Cached and forwarded routes alike are refused at once, without an upstream call.
    for path in ["/v1/chat/completions", "/v1/models"] {
        let r = h
            .client
            .post(format!("{}{path}", h.url))
            .json(&chat_body("refused"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "1");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "overloaded", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_requests_in_flight")
        );
    }
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    // Probes are not API requests: a saturated proxy still answers them.
    let health = h
        .client
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "prefixcache_rejected_total", &[("reason", "requests")]),
        2.0
    );
    assert_eq!(metric(&m, "prefixcache_requests_in_flight", &[]), 1.0);

    upstream.open.send_replace(true);
    let rest = held.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    let freed = tokio::time::timeout(WITHIN, async {
        while h.state.admission.requests_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        freed.is_ok(),
        "the slot is returned once the response is sent"
    );
    assert_eq!(h.chat(&chat_body("now served")).await.status, 200);
}

#[tokio::test]
async fn body_bytes_over_the_budget_are_refused_with_503() {
    let h = Harness::start(
        Setup::default()
            .toml("max_body_bytes = \"1MiB\"\n[limits]\nmax_body_bytes_in_flight = \"1MiB\""),
    )
    .await;
    // A body of the largest size, still arriving: it holds the whole budget.
    let mut slow = connect(&h).await;
    slow.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 1048576\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let admitted = tokio::time::timeout(WITHIN, async {
        while h.state.admission.body_bytes_in_flight() < 1 << 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(admitted.is_ok());
    let r = h.chat(&chat_body("no room")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "overloaded");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes_in_flight")
    );
    drop(slow);
    let freed = tokio::time::timeout(WITHIN, async {
        while h.state.admission.body_bytes_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(freed.is_ok(), "an abandoned body returns its budget");
    assert_eq!(h.chat(&chat_body("room again")).await.status, 200);
}

/// An upstream that answers every request with one chat completion whose content is
/// `size` bytes; it counts the requests.
struct Big {
    url: String,
    calls: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Big {
    async fn start(size: usize) -> Big {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
                let words = "lorem ipsum dolor sit amet ".repeat(size / 27 + 1);
                let json = json!({
                    "id": format!("chatcmpl-big-{n}"), "object": "chat.completion",
                    "created": 1, "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": &words[..size]}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 50000, "total_tokens": 50005},
                });
                let mut resp = axum::response::Response::new(Body::from(json.to_string()));
                resp.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Big { url, calls, task }
    }
}

impl Drop for Big {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_response_over_max_response_bytes_streams_through_uncached_and_is_counted() {
    let upstream = Big::start(200_000).await;
    let h = Harness::start(
        Setup::default()
            .upstream(&upstream.url)
            .toml("[limits]\nmax_response_bytes = \"64KiB\""),
    )
    .await;
    let body = chat_body("a long answer");
    let first = h.chat(&body).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    assert_eq!(
        first.content().len(),
        200_000,
        "the whole answer went through"
    );
    h.settle().await;
    let second = h.chat(&body).await;
    assert_eq!(second.cache(), "MISS", "it was not stored");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "prefixcache_oversized_responses_total", &[]),
        2.0
    );
    assert_eq!(h.state.store.stats().entries, 0);

    // A stream over the limit likewise (the mock's events for 2000 tokens).
    let mock = MockConfig {
        output_tokens: 2000..=2000,
        ..Default::default()
    };
    let h = Harness::start(
        Setup::default()
            .mock(mock)
            .toml("[limits]\nmax_response_bytes = \"16KiB\""),
    )
    .await;
    let mut body = chat_body("a long stream");
    body["stream"] = json!(true);
    let first = h.chat(&body).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    let text = String::from_utf8_lossy(&first.body);
    assert!(text.len() > 16 * 1024);
    assert!(text.trim_end().ends_with("data: [DONE]"), "complete");
    assert!(!first.streamed_content().is_empty());
    h.settle().await;
    assert_eq!(h.chat(&body).await.cache(), "MISS");
    assert_eq!(h.upstream_calls(), 2);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "prefixcache_oversized_responses_total", &[]),
        2.0
    );
}

#[tokio::test]
async fn a_large_entry_replayed_as_sse_is_rendered_event_by_event_as_it_would_be_at_once() {
    let upstream = Big::start(400_000).await;
    let h = Harness::start(Setup::default().upstream(&upstream.url)).await;
    let body = chat_body("a stored answer larger than the rendering threshold");
    let stored = h.chat(&body).await;
    assert_eq!(stored.cache(), "MISS");
    h.settle().await;
    for include_usage in [false, true] {
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        if include_usage {
            streamed["stream_options"] = json!({"include_usage": true});
        }
        let hit = h.chat(&streamed).await;
        assert_eq!(hit.cache(), "HIT");
        assert_eq!(
            hit.header("content-type"),
            Some("text/event-stream; charset=utf-8")
        );
        let eager: Vec<u8> = prefixcache_core::wire::json_to_sse(
            Route::ChatCompletions,
            &stored.body,
            include_usage,
        )
        .unwrap()
        .concat();
        assert!(hit.body == eager, "lazy and eager renderings differ");
        assert_eq!(hit.streamed_content(), stored.content());
    }
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
}

impl Harness {
    /// `/metrics` over an already open connection (when no other may be opened).
    async fn metrics_via(&self, s: &mut TcpStream) -> String {
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(s).await
    }
}
