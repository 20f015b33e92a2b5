//! Helpers shared by the mock's integration tests: a client, JSON posts, and a plain SSE
//! splitter (deliberately not the proxy's parser, so the two check each other).

#![allow(dead_code)]
// Test helpers: a failed expectation should panic with its message, like in a #[test].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prefixcache_mock::MockServer;
use serde_json::Value;

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub async fn post_raw(
    server: &MockServer,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client()
        .post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post(server: &MockServer, path: &str, body: &Value) -> Reply {
    post_raw(
        server,
        path,
        &body.to_string(),
        &[("authorization", "Bearer sk-test")],
    )
    .await
}

pub async fn get(server: &MockServer, path: &str) -> Reply {
    let resp = client()
        .get(format!("{}{path}", server.url()))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// One server-sent event: its `event:` name (if any) and its `data:` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data not JSON ({e}): {}", self.data))
    }
}

/// Splits a complete SSE body on blank lines; every block must end with "\n\n".
pub fn sse_events(body: &str) -> Vec<Event> {
    assert!(
        body.ends_with("\n\n"),
        "stream does not end with a blank line: {body:?}"
    );
    body.split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            Event {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// A text of about `n` tokens that differs from others by `seed` only at its end.
pub fn long_text(n_words: usize) -> String {
    let words = [
        "cache", "prefix", "token", "model", "request", "system", "prompt", "stable",
    ];
    (0..n_words)
        .map(|i| words[i % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}
