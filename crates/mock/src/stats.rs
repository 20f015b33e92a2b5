//! What the mock has seen: request counters (per route, model and status, in flight) and
//! the last requests per route with their headers and raw bodies, so a proxy test can
//! assert "exactly one upstream call" and "forwarded untouched".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Serialize;

use crate::prompt_cache::PromptCacheStats;

/// The routes the mock tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MockRoute {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    /// `POST /v1/messages` (Anthropic).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    CountTokens,
    /// Any other path (answered 404), and the `/mock/*` endpoints are not counted.
    Other,
}

impl MockRoute {
    pub const ALL: [MockRoute; 8] = [
        MockRoute::ChatCompletions,
        MockRoute::Completions,
        MockRoute::Embeddings,
        MockRoute::Responses,
        MockRoute::Models,
        MockRoute::Messages,
        MockRoute::CountTokens,
        MockRoute::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MockRoute::ChatCompletions => "chat_completions",
            MockRoute::Completions => "completions",
            MockRoute::Embeddings => "embeddings",
            MockRoute::Responses => "responses",
            MockRoute::Models => "models",
            MockRoute::Messages => "messages",
            MockRoute::CountTokens => "count_tokens",
            MockRoute::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<MockRoute> {
        MockRoute::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A snapshot of the counters (`GET /mock/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Requests received on API routes (not `/mock/*`).
    pub total: u64,
    /// Requests whose response (for streams: the whole stream) is not finished yet.
    pub in_flight: u64,
    /// Requests per route, every route listed.
    pub routes: BTreeMap<&'static str, u64>,
    /// Requests per `model` of the body (routes that take one).
    pub models: BTreeMap<String, u64>,
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Responses sent as event streams.
    pub streams: u64,
    pub prompt_cache: PromptCacheStats,
}

impl Stats {
    /// Requests seen on `route`.
    pub fn route(&self, route: MockRoute) -> u64 {
        self.routes.get(route.as_str()).copied().unwrap_or(0)
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every header as received.
    pub headers: HeaderMap,
    /// The raw body, cut at [`MAX_RECORDED_BODY`] bytes.
    pub body: Bytes,
    pub body_truncated: bool,
}

/// Bodies longer than this are recorded cut (and flagged).
pub const MAX_RECORDED_BODY: usize = 8 * 1024 * 1024;

impl RecordedRequest {
    /// The first value of a header (case-insensitive), if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }

    pub fn organization(&self) -> Option<&str> {
        self.header("openai-organization")
    }

    pub fn project(&self) -> Option<&str> {
        self.header("openai-project")
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Debug, Serialize)]
struct RecordedJson<'a> {
    method: &'a str,
    uri: &'a str,
    headers: BTreeMap<&'a str, Vec<String>>,
    /// The body as JSON when it parses, else as a string.
    body: serde_json::Value,
    body_truncated: bool,
}

impl RecordedRequest {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut headers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (k, v) in &self.headers {
            headers
                .entry(k.as_str())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        let body = self.json().unwrap_or_else(|| {
            serde_json::Value::String(String::from_utf8_lossy(&self.body).into())
        });
        serde_json::to_value(RecordedJson {
            method: &self.method,
            uri: &self.uri,
            headers,
            body,
            body_truncated: self.body_truncated,
        })
        .unwrap_or_default()
    }
}

/// The live counters, shared by all handlers.
#[derive(Debug)]
pub(crate) struct Counters {
    total: AtomicU64,
    in_flight: Arc<AtomicU64>,
    streams: AtomicU64,
    routes: [AtomicU64; MockRoute::ALL.len()],
    models: Mutex<HashMap<String, u64>>,
    statuses: Mutex<HashMap<u16, u64>>,
    recorded: Mutex<HashMap<MockRoute, VecDeque<Arc<RecordedRequest>>>>,
    record_limit: usize,
}

/// Counts a request as in flight until dropped (moved into a stream body for streams).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counters {
    pub(crate) fn new(record_limit: usize) -> Counters {
        Counters {
            total: AtomicU64::new(0),
            in_flight: Arc::new(AtomicU64::new(0)),
            streams: AtomicU64::new(0),
            routes: Default::default(),
            models: Mutex::default(),
            statuses: Mutex::default(),
            recorded: Mutex::default(),
            record_limit,
        }
    }

    pub(crate) fn begin(&self, route: MockRoute) -> InFlight {
        self.total.fetch_add(1, Ordering::SeqCst);
        self.routes[route.index()].fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.in_flight.clone())
    }

    pub(crate) fn model(&self, model: &str) {
        let mut m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(model) {
            Some(n) => *n += 1,
            None => {
                m.insert(model.to_string(), 1);
            }
        }
    }

    pub(crate) fn status(&self, status: u16) {
        let mut s = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        *s.entry(status).or_default() += 1;
    }

    pub(crate) fn stream(&self) {
        self.streams.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn record(
        &self,
        route: MockRoute,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) {
        if self.record_limit == 0 {
            return;
        }
        let body_truncated = body.len() > MAX_RECORDED_BODY;
        let req = RecordedRequest {
            method: method.to_string(),
            uri: uri.to_string(),
            // Cheap: header values share the bytes hyper read the request into.
            headers: headers.clone(),
            body: if body_truncated {
                body.slice(..MAX_RECORDED_BODY)
            } else {
                body.clone()
            },
            body_truncated,
        };
        let mut rec = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        let q = rec.entry(route).or_default();
        q.push_back(Arc::new(req));
        while q.len() > self.record_limit {
            q.pop_front();
        }
    }

    /// The recorded requests of `route`, oldest first.
    pub(crate) fn requests(&self, route: MockRoute) -> Vec<Arc<RecordedRequest>> {
        let rec = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        rec.get(&route)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn snapshot(&self, prompt_cache: PromptCacheStats) -> Stats {
        Stats {
            total: self.total.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            routes: MockRoute::ALL
                .iter()
                .map(|r| (r.as_str(), self.routes[r.index()].load(Ordering::SeqCst)))
                .collect(),
            models: self
                .models
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            statuses: self
                .statuses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect(),
            streams: self.streams.load(Ordering::SeqCst),
            prompt_cache,
        }
    }

    /// Zeroes the counters and forgets recorded requests; requests in flight stay counted
    /// as in flight (they still are).
    pub(crate) fn reset(&self) {
        self.total.store(0, Ordering::SeqCst);
        self.streams.store(0, Ordering::SeqCst);
        for r in &self.routes {
            r.store(0, Ordering::SeqCst);
        }
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
