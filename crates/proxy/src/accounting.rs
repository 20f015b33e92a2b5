//! What each answered request cost or saved: token and dollar metrics (also by
//! `prompt_cache_key` policy), whether its stable prefix is long enough for the
//! provider's prompt cache, its family's figures on the dashboard, and its request-log
//! line.
//!
//! A request is accounted once, when its usage is known: a hit at once (the entry keeps
//! the original call's usage), a forwarded request when the upstream response ends, a
//! coalesced follower when the response it shared ends.

use std::time::Instant;

use prefixcache_core::config::PromptCacheKeyMode;
use prefixcache_core::key::{CacheKey, FamilyId};
use prefixcache_core::prefix::{PrefixScope, count_prefix_tokens, scope_digest};
use prefixcache_core::pricing::Cost;
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::{Encoding, encoding_for_model};
use prefixcache_core::usage::Usage;
use serde_json::{Map, Value};

use crate::admission::AdmittedBody;
use crate::dashboard::families::{Answer, StaticPrefix};
use crate::memo::Memo;
use crate::metrics::{
    BreakpointKindLabels, CacheableLabels, KindLabels, PolicyLabels, PolicyTokenLabels, TokenLabels,
};
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

/// Where a forwarded request's `prompt_cache_key` came from: the label the provider's
/// prompt-cache figures are broken down by (`provider_prompt_tokens_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptCacheKeySource {
    /// The caller sent its own; the proxy never overwrites it.
    Caller,
    /// Derived by the strategy from the conversation's start.
    Conversation,
    /// Derived by the strategy from the prefix family.
    Family,
    /// None was sent (the strategy's `prompt_cache_key = "off"`, or a route without one).
    #[default]
    None,
}

impl PromptCacheKeySource {
    /// The source for a request that `carried` its own key, or got a `derived` one
    /// under the strategy's `mode`.
    pub fn of(carried: bool, derived: bool, mode: PromptCacheKeyMode) -> PromptCacheKeySource {
        match (carried, derived, mode) {
            (true, _, _) => PromptCacheKeySource::Caller,
            (false, true, PromptCacheKeyMode::Conversation) => PromptCacheKeySource::Conversation,
            (false, true, PromptCacheKeyMode::Family) => PromptCacheKeySource::Family,
            _ => PromptCacheKeySource::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PromptCacheKeySource::Caller => "caller",
            PromptCacheKeySource::Conversation => "conversation",
            PromptCacheKeySource::Family => "family",
            PromptCacheKeySource::None => "none",
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
    /// The request body as sent, kept only while the request log is on (it stays in
    /// the body budget until the line is written).
    pub raw: Option<AdmittedBody>,
    /// The static part of a forwarded prompt, measured before its parsed tree was
    /// dropped.
    pub static_part: StaticPart,
    /// Set once the forwarded body is prepared.
    pub prompt_cache_key: PromptCacheKeySource,
    /// The breakpoint of the forwarded body: its policy (`auto`, `caller`, `none`, the
    /// metrics' label) and the decision behind it (the request log's).
    pub breakpoint: crate::breakpoints::BreakpointNote,
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

/// What is known of a forwarded prompt's static part (tools, schema, instructions,
/// system and developer messages) when its response ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StaticPart {
    /// Not measured: a hit, a route without one, a body whose tree was over budget.
    #[default]
    Unknown,
    Measured(StaticPrefix),
    /// The body is shorter than [`PROVIDER_CACHE_MIN_TOKENS`] bytes, so its static part
    /// is shorter than that many tokens (a token is at least one byte, and the rendered
    /// part is shorter than the JSON it comes from); not worth measuring.
    Short,
}

/// Token counts of static prefixes (up to [`StaticPrefix::LIMIT`]) by digest and
/// encoding: they recur, so each is tokenized once.
pub type CacheableMemo = Memo<([u8; 32], Encoding), u32>;

impl AppState {
    /// Records tokens, dollars, the family's figures and the request-log line of a
    /// request that ended.
    pub fn account(&self, ledger: &Ledger, end: Ending<'_>) {
        let m = &self.metrics;
        let mut cost = None;
        if let Some(family) = ledger.family {
            let answer = match end.status {
                "hit" | "coalesced" => Answer::Cached,
                "bypass" => Answer::Bypassed,
                _ => Answer::Missed,
            };
            self.dashboard.families.request(
                family,
                ledger.strategy,
                ledger.route.as_str(),
                answer,
                self.now_ms(),
            );
        }
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
            let priced = self.price(end.model, u);
            cost = priced.map(|c| c.usd);
            if let Some(c) = priced {
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
                let prompt_cache_key = ledger.prompt_cache_key.as_str();
                for (kind, n) in [
                    ("prompt", u.prompt_tokens),
                    ("cached", u.cached_tokens),
                    ("cache_write", u.cache_write_tokens),
                ] {
                    m.provider_prompt_tokens
                        .get_or_create(&PolicyTokenLabels {
                            prompt_cache_key,
                            kind,
                        })
                        .inc_by(n);
                }
                if let Some(c) = priced {
                    m.provider_cache_write_usd
                        .get_or_create(&PolicyLabels { prompt_cache_key })
                        .inc_by(c.cache_write_usd);
                }
                let breakpoints = ledger.breakpoint.policy;
                for (kind, n) in [
                    ("prompt", u.prompt_tokens),
                    ("cached", u.cached_tokens),
                    ("cache_write", u.cache_write_tokens),
                ] {
                    m.provider_breakpoint_tokens
                        .get_or_create(&BreakpointKindLabels { breakpoints, kind })
                        .inc_by(n);
                }
                if let Some(c) = priced {
                    for (kind, usd) in [
                        ("spent", c.usd),
                        ("cache_read", c.cached_usd),
                        ("cache_write", c.cache_write_usd),
                    ] {
                        m.provider_breakpoint_usd
                            .get_or_create(&BreakpointKindLabels { breakpoints, kind })
                            .inc_by(usd);
                    }
                }
                // A prompt under the floor is not cacheable whatever its static part.
                let long_enough = u.prompt_tokens >= PROVIDER_CACHE_MIN_TOKENS as u64;
                let (static_prefix, cacheable) = match ledger.static_part {
                    StaticPart::Measured(s) => (
                        Some(s),
                        long_enough && s.tokens as usize >= PROVIDER_CACHE_MIN_TOKENS,
                    ),
                    StaticPart::Short => (None, false),
                    StaticPart::Unknown => (None, long_enough),
                };
                m.provider_cacheable
                    .get_or_create(&CacheableLabels {
                        cacheable: if cacheable { "true" } else { "false" },
                    })
                    .inc();
                if let Some(family) = ledger.family {
                    self.dashboard
                        .families
                        .forwarded(family, static_prefix, cacheable);
                }
            }
        }
        if let (Some(log), Some(raw)) = (&self.request_log, &ledger.raw) {
            log.write(
                &Record {
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
                    breakpoint: (end.source == Source::Upstream).then_some(ledger.breakpoint),
                    saved_usd: cost.filter(|_| end.source == Source::Cache),
                },
                raw.bytes(),
            );
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

    /// The static part of a forwarded request's prompt (tools, schema, instructions,
    /// system and developer messages): its digest and its length in tokens up to
    /// [`StaticPrefix::LIMIT`]. The provider can cache a prompt only if this part
    /// reaches 1024 tokens, since it is what other requests can share. Measured when
    /// the body could hold that many tokens, or when the dashboard wants the family's
    /// figure; `body` is the request's parsed tree, `body_len` its size in bytes.
    pub fn static_part(
        &self,
        route: Route,
        body: &Map<String, Value>,
        model: &str,
        body_len: usize,
        family: Option<FamilyId>,
    ) -> StaticPart {
        let wanted = family.is_some_and(|f| self.dashboard.families.wants_static_prefix(f));
        if body_len < PROVIDER_CACHE_MIN_TOKENS && !wanted {
            return StaticPart::Short;
        }
        let Some(digest) = scope_digest(route, body, PrefixScope::Static) else {
            return StaticPart::Unknown;
        };
        let encoding = encoding_for_model(model).encoding;
        let tokens = self.cacheable.get_or_compute((digest, encoding), || {
            // The cost grows with the limit, not with the prompt.
            let n = count_prefix_tokens(
                route,
                body,
                PrefixScope::Static,
                encoding,
                false,
                StaticPrefix::LIMIT,
            );
            u32::try_from(n).unwrap_or(u32::MAX)
        });
        StaticPart::Measured(StaticPrefix { digest, tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_own_key_wins_over_the_strategy() {
        use PromptCacheKeyMode as M;
        use PromptCacheKeySource as S;
        assert_eq!(S::of(true, false, M::Family), S::Caller);
        assert_eq!(S::of(false, true, M::Family), S::Family);
        assert_eq!(S::of(false, true, M::Conversation), S::Conversation);
        // A route that takes no key: nothing derived, nothing sent.
        assert_eq!(S::of(false, false, M::Conversation), S::None);
        assert_eq!(S::of(false, false, M::Off), S::None);
        assert_eq!(S::None.as_str(), "none");
    }
}
