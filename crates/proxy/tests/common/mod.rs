//! Harness for the proxy's real-socket tests: a mock upstream and the proxy, each on
//! `127.0.0.1:0`, in this process, reading like the setup they describe:
//! `let h = Harness::start(Setup::default().config("[strategies.a]\n...")).await;`

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::Duration;

use prefixcache_core::canonical::canonicalize;
use prefixcache_core::config::{Config, Layers};
use prefixcache_core::key::{CacheKey, KeyInput, compute_keys};
use prefixcache_core::prefix::{FamilyParams, family};
use prefixcache_core::route::Route;
use prefixcache_mock::{MockConfig, MockServer, spawn_local};
use prefixcache_proxy::AppState;
use prefixcache_store::memory::MemoryStore;
use prefixcache_store::{CacheStore, Clock, ManualClock};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-tenant-secret-0123456789";
pub const KEY_A: &str = "Bearer sk-test-a";

/// How to start a harness.
pub struct Setup {
    pub mock: MockConfig,
    /// Extra TOML for the proxy's config (the upstream is filled in).
    pub toml: String,
    /// The store; memory by default.
    pub store: Option<Arc<dyn CacheStore>>,
    pub clock: ManualClock,
    /// Point the proxy at this upstream instead of the mock.
    pub upstream: Option<String>,
    /// Serve the admin routes on a listener of their own (`Harness::admin_url`).
    pub admin_listener: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            mock: MockConfig::default(),
            toml: String::new(),
            store: None,
            clock: ManualClock::new(1_800_000_000_000),
            upstream: None,
            admin_listener: false,
        }
    }
}

impl Setup {
    pub fn toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_string();
        self
    }
    pub fn mock(mut self, mock: MockConfig) -> Self {
        self.mock = mock;
        self
    }
    pub fn store(mut self, store: Arc<dyn CacheStore>) -> Self {
        self.store = Some(store);
        self
    }
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = clock;
        self
    }
    pub fn upstream(mut self, url: &str) -> Self {
        self.upstream = Some(url.to_string());
        self
    }
    /// An admin listener of its own (`admin.listen`), as `Harness::admin_url`.
    pub fn admin_listener(mut self) -> Self {
        self.admin_listener = true;
        self
    }
}

/// A running mock upstream and proxy.
pub struct Harness {
    pub mock: MockServer,
    pub url: String,
    /// The admin listener, with [`Setup::admin_listener`].
    pub admin_url: Option<String>,
    pub state: AppState,
    pub clock: ManualClock,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    pub async fn start(setup: Setup) -> Harness {
        let mock = spawn_local(setup.mock).await.unwrap();
        let upstream = setup.upstream.clone().unwrap_or_else(|| mock.url());
        let admin = if setup.admin_listener {
            "[admin]\nlisten = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        let toml = format!(
            "upstream = \"{upstream}\"\nlisten = \"127.0.0.1:0\"\n{}\n{admin}",
            setup.toml
        );
        let config = Config::load(Layers {
            file: Some(toml),
            ..Default::default()
        })
        .unwrap();
        let clock = setup.clock.clone();
        let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
        let store = setup
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new(64 << 20, clock_dyn.clone())));
        let state = AppState::new(config, store, clock_dyn, SECRET).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let admin_listener = if setup.admin_listener {
            Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let admin_url = admin_listener
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().unwrap()));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(prefixcache_proxy::serve(
            state.clone(),
            listener,
            admin_listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            mock,
            url,
            admin_url,
            state,
            clock,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Sends SIGTERM's equivalent without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Sends SIGTERM's equivalent and waits for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.server.take() {
            t.await.unwrap().unwrap();
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{}", self.url, path))
            .header("authorization", KEY_A)
    }

    /// POSTs a JSON body to a path and returns (status header, status code, body).
    pub async fn send(&self, path: &str, body: &Value) -> Reply {
        Reply::read(self.post(path).json(body).send().await.unwrap()).await
    }

    pub async fn chat(&self, body: &Value) -> Reply {
        self.send("/v1/chat/completions", body).await
    }

    /// POSTs a JSON body to a path with extra request headers.
    pub async fn send_with(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut req = self.post(path).json(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        Reply::read(req.send().await.unwrap()).await
    }

    /// A chat request with extra request headers.
    pub async fn chat_with(&self, headers: &[(&str, &str)], body: &Value) -> Reply {
        self.send_with("/v1/chat/completions", headers, body).await
    }

    /// The proxy's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Upstream calls the mock has seen.
    pub fn upstream_calls(&self) -> u64 {
        self.mock.stats().total
    }

    /// Waits until the mock has no request in flight and the proxy has no upstream
    /// response being read (polling; never a timing assertion).
    pub async fn settle(&self) {
        wait_until("the proxy settles", || {
            self.mock.stats().in_flight == 0 && self.state.tasks.is_empty()
        })
        .await;
    }

    /// Opens a mock gate: the responses held there continue.
    pub fn open_gate(&self, gate: &str) {
        self.mock.mock.gates().open(gate).unwrap();
    }

    /// Waits until `n` upstream responses are held at `gate` (the requests reached the
    /// mock and wait for the test).
    pub async fn held_at(&self, gate: &str, n: usize) {
        let gates = self.mock.mock.gates();
        wait_until(&format!("{n} held at gate {gate}"), || {
            gates.state(gate).waiting == n
        })
        .await;
    }

    /// Waits until `n` requests follow flights in progress instead of calling upstream.
    pub async fn followers(&self, n: usize) {
        wait_until(&format!("{n} followers"), || {
            self.state.flights.followers() == n
        })
        .await;
    }

    /// The cache key the proxy derives for a chat request from caller `authorization`
    /// (the body sent as `reqwest`'s `.json()` writes it: `serde_json::to_vec`).
    pub fn chat_key(&self, authorization: &str, body: &Value, strategy: &str) -> CacheKey {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", authorization.parse().unwrap());
        let ns = self.state.tenancy.caller(&headers, None).namespace;
        let strategy = self.state.config.strategy(strategy).unwrap();
        let raw = serde_json::to_vec(body).unwrap();
        let canonical =
            canonicalize(Route::ChatCompletions, &raw, strategy.normalize_whitespace).unwrap();
        let body = body.as_object().unwrap();
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        let fam = family(
            Route::ChatCompletions,
            body,
            &FamilyParams::for_strategy(strategy, model),
        );
        compute_keys(&KeyInput {
            namespace: &ns,
            strategy: &strategy.name,
            method: "POST",
            route: Route::ChatCompletions,
            query: "",
            body: &canonical,
            key_mode: strategy.key_mode,
            family: Some(&fam.id),
        })
        .unwrap()
        .key
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Polls `cond` until it holds. Not a timing assertion: the bound is there only so a
/// broken build fails instead of hanging, and is generous for a loaded machine.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 120 s for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub cache: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let cache = headers
            .get("x-prefixcache-status")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.bytes().await.unwrap();
        Reply {
            status,
            cache,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn cache(&self) -> &str {
        self.cache.as_deref().unwrap_or("<none>")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The assistant text of a chat completion body.
    pub fn content(&self) -> String {
        self.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The concatenated content deltas of a streamed chat completion body.
    pub fn streamed_content(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut out = String::new();
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                out.push_str(c);
            }
        }
        out
    }
}

/// The sum of a metric's samples whose labels include all of `labels`, from a
/// Prometheus text exposition (`name` without labels, e.g. `prefixcache_requests_total`).
pub fn metric(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A chat request body with one user message.
pub fn chat_body(text: &str) -> Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
    })
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, exactly as received.
    pub uri: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

/// A scripted upstream for what the mock does not do: it records every request (any
/// method and path) and answers each with a complete chat completion (content
/// `answer N`, N counting from 1) carrying the given extra response headers.
pub struct Recorder {
    pub url: String,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    pub async fn start(headers: &[(&'static str, &'static str)]) -> Recorder {
        use axum::body::Body;
        use axum::extract::Request;
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let extra: Vec<(&'static str, &'static str)> = headers.to_vec();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let log = log.clone();
            let extra = extra.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(Seen {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts.headers.clone(),
                        body,
                    });
                    log.len()
                };
                let json = serde_json::json!({
                    "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": 1,
                    "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": format!("answer {n}")}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                });
                let mut resp = axum::response::Response::new(Body::from(json.to_string()));
                resp.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                for (k, v) in extra {
                    resp.headers_mut().append(k, v.parse().unwrap());
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder { url, seen, task }
    }

    /// The requests received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends one raw HTTP/1.1 request (a request target no HTTP client library would send
/// as written, such as one with dot segments) and returns the status code and the
/// whole response text.
pub async fn raw_http(url: &str, request_target: &str, extra_headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {request_target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra_headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}
