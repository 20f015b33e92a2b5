//! What each answered request cost or saved: token and dollar metrics, whether its
//! stable prefix is long enough for the provider's prompt cache, and its request-log line.
//!
//! A request is accounted once, when its usage is known: a hit at once (the entry keeps
//! the original call's usage), a forwarded request when the upstream response ends, a
//! coalesced follower when the response it shared ends.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prefixcache_core::key::{CacheKey, FamilyId};
use prefixcache_core::prefix::{PrefixScope, count_prefix_tokens, scope_digest};
use prefixcache_core::pricing::Cost;
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::encoding_for_model;
use prefixcache_core::usage::Usage;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::memo::Memo;
use crate::metrics::{CacheableLabels, KindLabels, TokenLabels};
use crate::reqlog::{Record, rfc3339_ms};
use crate::state::AppState;

/// The provider caches prompts of at least this many tokens (OpenAI's documented floor).
pub const PROVIDER_CACHE_MIN_TOKENS: usize = 1024;

/// Distinct unpriced models logged; beyond this they are not logged again.
const UNPRICED_LOGGED: usize = 1000;

/// Memo entries of "is this static prefix long enough?" before it is cleared.
pub const CACHEABLE_MEMO_ENTRIES: usize = 4096;

/// Where a request's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Paid for: an upstream call.
    Upstream,
    /// Free: the response cache (a hit or a coalesced follower).
    Cache,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::Cache => "cache",
        }
    }
}

/// What accounting needs to know about one request, captured when it arrives.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub started: Instant,
    pub route: Route,
    pub strategy: &'static str,
    /// Hex of the first 8 bytes of the caller's namespace.
    pub tenant: String,
    pub key: CacheKey,
    pub family: Option<FamilyId>,
    /// The request body as sent, kept only while the request log is on.
    pub raw: Option<Bytes>,
    /// The parsed request, kept for forwarded requests so provider-cacheability is
    /// decided off the request path, when the response ends.
    pub request: Option<Arc<Map<String, Value>>>,
}

/// How one request ended, for its log line.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub status: &'static str,
    pub http_status: u16,
    pub model: &'a str,
    pub usage: Option<Usage>,
    pub source: Source,
}

/// The cacheable-prefix memo: static prefixes recur, so each is tokenized once.
pub type CacheableMemo = Memo<[u8; 32], bool>;

impl AppState {
    /// Records tokens, dollars and the request-log line of a request that ended.
    pub fn account(&self, ledger: &Ledger, end: Ending<'_>) {
        let m = &self.metrics;
        let mut cost = None;
        if let Some(u) = &end.usage {
            let source = end.source.as_str();
            for (kind, n) in [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
                ("cached_prompt", u.cached_tokens),
                ("cache_write_prompt", u.cache_write_tokens),
            ] {
                m.tokens
                    .get_or_create(&TokenLabels { kind, source })
                    .inc_by(n);
            }
            let parts = self.price(end.model, u);
            cost = parts.map(|c| c.usd);
            if let Some(c) = parts {
                let kind = match end.source {
                    Source::Upstream => "spent",
                    Source::Cache => "saved",
                };
                m.cost_usd.get_or_create(&KindLabels { kind }).inc_by(c.usd);
                if end.source == Source::Upstream {
                    // The provider-cache part of what was spent: reads at the cached rate,
                    // writes at the write rate (GPT-5.6 and later charge 1.25x input).
                    for (kind, usd) in [
                        ("cache_read", c.cached_usd),
                        ("cache_write", c.cache_write_usd),
                    ] {
                        m.provider_cache_usd
                            .get_or_create(&KindLabels { kind })
                            .inc_by(usd);
                    }
                }
            }
            if end.source == Source::Upstream && ledger.route != Route::Embeddings {
                let cacheable = self.provider_cacheable(ledger, end.model, u);
                m.provider_cacheable
                    .get_or_create(&CacheableLabels {
                        cacheable: if cacheable { "true" } else { "false" },
                    })
                    .inc();
            }
        }
        if let (Some(log), Some(raw)) = (&self.request_log, &ledger.raw) {
            let Ok(request) = serde_json::from_slice::<&RawValue>(raw) else {
                return;
            };
            log.write(&Record {
                ts: rfc3339_ms(self.now_ms()),
                route: ledger.route.as_str(),
                strategy: ledger.strategy,
                tenant: ledger.tenant.clone(),
                status: end.status,
                http_status: end.http_status,
                key: ledger.key.short_hex(),
                family: ledger.family.map(|f| f.short_hex()).unwrap_or_default(),
                latency_ms: ledger.started.elapsed().as_secs_f64() * 1000.0,
                model: end.model,
                usage: end.usage.map(Into::into),
                cost_usd: cost.filter(|_| end.source == Source::Upstream),
                saved_usd: cost.filter(|_| end.source == Source::Cache),
                request,
            });
        }
    }

    /// Dollars for `usage` on `model` under the pricing table, by part; `None` when the
    /// model is not in the table (tokens are still counted).
    pub fn price(&self, model: &str, usage: &Usage) -> Option<Cost> {
        if let Some(cost) = self.prices.cost(model, usage) {
            return Some(cost);
        }
        let mut unpriced = self.unpriced.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a caller inventing model names must not grow memory.
        if unpriced.len() < UNPRICED_LOGGED && unpriced.insert(model.to_string()) {
            tracing::warn!(
                model,
                "no price for this model: its tokens are counted, its dollars are not (add it under [pricing.models])"
            );
        }
        None
    }

    /// Whether the provider could cache this request's prompt: at least 1024 prompt
    /// tokens, and (for conversational routes) a static prefix of at least 1024 tokens
    /// that other requests can share.
    fn provider_cacheable(&self, ledger: &Ledger, model: &str, usage: &Usage) -> bool {
        if usage.prompt_tokens < PROVIDER_CACHE_MIN_TOKENS as u64 {
            return false;
        }
        let Some(body) = &ledger.request else {
            return true;
        };
        let Some(digest) = scope_digest(ledger.route, body, PrefixScope::Static) else {
            // Routes without a static part (legacy completions): the prompt length decides.
            return true;
        };
        self.cacheable.get_or_compute(digest, || {
            // Counting stops at 1024 tokens, so a long static prefix costs no more.
            let n = count_prefix_tokens(
                ledger.route,
                body,
                PrefixScope::Static,
                encoding_for_model(model).encoding,
                false,
                PROVIDER_CACHE_MIN_TOKENS,
            );
            n >= PROVIDER_CACHE_MIN_TOKENS
        })
    }
}
