//! The proxy's side of automatic prompt-cache breakpoints: one call per forwarded
//! request ([`Breakpoints::place`]) that learns from it, decides where a breakpoint goes
//! and which `prompt_cache_key` to derive, and says so in `x-prefixcache-breakpoint`.
//! The logic is `core::breakpoint`; the byte splice is `core::wire::plan_splices`.

use std::sync::Mutex;

use axum::http::HeaderValue;
use prefixcache_core::breakpoint::learn::{EncodingCounter, ScopeSummary};
use prefixcache_core::breakpoint::{
    BlockPath, Decision, KeyShape, Learner, Plan, Rules, Scope, TokenRates, request_blocks,
};
use prefixcache_core::config::{BreakpointsMode, PromptCacheKeyMode, Strategy};
use prefixcache_core::key::{FamilyId, Namespace};
use prefixcache_core::pricing::PriceTable;
use prefixcache_core::provider::cache::CacheRules;
use prefixcache_core::route::Route;
use prefixcache_core::tokenizer::encoding_for_model;
use serde_json::{Map, Value};

/// What the proxy does about the provider's prompt cache on one forwarded request.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The `prompt_cache_key` policy to derive a key under (`Auto` resolved).
    pub key_mode: Option<PromptCacheKeyMode>,
    /// Where to splice a breakpoint, if anywhere.
    pub breakpoint: Option<BlockPath>,
    /// The decision and its inputs (`None` for models without breakpoints or `off`).
    pub plan: Option<Plan>,
}

/// What the request log says about the breakpoint of a forwarded request: its policy,
/// and for a model with breakpoints the decision and its inputs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BreakpointNote {
    /// `auto` (the proxy placed one), `caller` (the caller's own), `none`.
    pub policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    /// The learned boundary: block index and prompt tokens before its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<f64>,
}

impl Default for BreakpointNote {
    fn default() -> Self {
        BreakpointNote {
            policy: "none",
            decision: None,
            block: None,
            tokens: None,
            recurrence: None,
        }
    }
}

impl Placement {
    /// The request log's note of this placement.
    pub fn note(&self) -> BreakpointNote {
        let plan = self.plan;
        BreakpointNote {
            policy: self.policy(),
            decision: plan.map(|p| p.decision.as_str()),
            block: plan.and_then(|p| p.boundary).map(|b| b.block),
            tokens: plan.and_then(|p| p.boundary).map(|b| b.tokens),
            recurrence: plan.map(|p| (p.recurrence * 1000.0).round() / 1000.0),
        }
    }

    /// The policy label of the figures (`breakpoints` label): `auto` when one was
    /// placed, `caller` for the caller's own, `none` otherwise.
    pub fn policy(&self) -> &'static str {
        match self.plan.map(|p| p.decision) {
            Some(Decision::Inject) if self.breakpoint.is_some() => "auto",
            Some(Decision::Caller) => "caller",
            _ => "none",
        }
    }

    /// `x-prefixcache-breakpoint`: where the breakpoint went (block index, path, prompt
    /// tokens before it) or why none was placed, with the family's recurrence.
    pub fn header(&self) -> Option<HeaderValue> {
        let plan = self.plan?;
        let text = match (plan.decision, plan.boundary, self.breakpoint) {
            (Decision::Inject, Some(b), Some(path)) => format!(
                "injected; block={}; path={path}; tokens={}; recurrence={:.2}",
                b.block, b.tokens, plan.recurrence
            ),
            (decision, Some(b), _) => format!(
                "none; reason={}; block={}; tokens={}; recurrence={:.2}",
                decision.as_str(),
                b.block,
                b.tokens,
                plan.recurrence
            ),
            (decision, None, _) => format!(
                "none; reason={}; recurrence={:.2}",
                decision.as_str(),
                plan.recurrence
            ),
        };
        HeaderValue::from_str(&text).ok()
    }
}

/// What one call to [`Breakpoints::place`] needs.
#[derive(Debug)]
pub struct PlaceInput<'a> {
    pub strategy: &'a Strategy,
    pub route: Route,
    pub body: &'a Map<String, Value>,
    pub model: &'a str,
    pub namespace: &'a Namespace,
    pub family: &'a FamilyId,
    pub now_ms: u64,
}

/// The learner shared by every request (per tenant namespace and family inside).
#[derive(Debug, Default)]
pub struct Breakpoints {
    learner: Mutex<Learner>,
}

fn first16(b: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&b[..16]);
    out
}

/// The GPT-5.6 rules at `model`'s prices (the documented multiples when unpriced).
pub fn openai_rules(prices: &PriceTable, model: &str) -> Rules {
    let rates = prices
        .lookup(model)
        .map(|(_, p)| TokenRates::from_rates(&p.base))
        .unwrap_or(TokenRates::OPENAI_BREAKPOINTS);
    Rules::openai(rates)
}

impl Breakpoints {
    /// Learns from a request about to be forwarded and decides what to add to it. Only
    /// Chat Completions and Responses requests to models with breakpoint rules are
    /// learned from; others keep the strategy's key policy (`auto` is the family's key,
    /// which routes as sending none) and get nothing else.
    pub fn place(&self, input: &PlaceInput<'_>, prices: &PriceTable) -> Placement {
        let strategy = input.strategy;
        let conversational = matches!(input.route, Route::ChatCompletions | Route::Responses);
        let breakpoint_rules = CacheRules::for_model(input.model) == CacheRules::Breakpoints;
        let wants_shape = strategy.prompt_cache_key == PromptCacheKeyMode::Auto;
        let wants_breakpoint = strategy.breakpoints == BreakpointsMode::Auto && breakpoint_rules;
        if !conversational || !(wants_shape || wants_breakpoint) {
            return Placement {
                key_mode: Some(resolve(strategy.prompt_cache_key, KeyShape::Family)),
                ..Placement::default()
            };
        }
        let scope = Scope {
            namespace: first16(input.namespace.as_bytes()),
            family: first16(input.family.as_bytes()),
        };
        let rules = openai_rules(prices, input.model);
        let blocks = request_blocks(input.route, input.body);
        let mut count = EncodingCounter {
            blocks: &blocks,
            encoding: encoding_for_model(input.model).encoding,
        };
        let plan = {
            let mut learner = self.learner.lock().unwrap_or_else(|p| p.into_inner());
            learner.plan(scope, &blocks, input.now_ms, &rules, &mut count)
        };
        let breakpoint = if wants_breakpoint && plan.decision == Decision::Inject {
            plan.boundary.map(|b| b.path)
        } else {
            None
        };
        Placement {
            key_mode: Some(resolve(strategy.prompt_cache_key, plan.shape)),
            breakpoint,
            plan: wants_breakpoint.then_some(plan),
        }
    }

    /// Every learned scope's figures.
    pub fn summaries(&self, prices: &PriceTable, model: &str) -> Vec<ScopeSummary> {
        let learner = self.learner.lock().unwrap_or_else(|p| p.into_inner());
        learner.summaries(&openai_rules(prices, model))
    }
}

/// The key policy to derive under: `Auto` becomes the shape's.
pub fn resolve(mode: PromptCacheKeyMode, shape: KeyShape) -> PromptCacheKeyMode {
    match (mode, shape) {
        (PromptCacheKeyMode::Auto, KeyShape::Conversation) => PromptCacheKeyMode::Conversation,
        (PromptCacheKeyMode::Auto, KeyShape::Family) => PromptCacheKeyMode::Family,
        (other, _) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefixcache_core::breakpoint::List;
    use prefixcache_core::breakpoint::learn::Boundary;

    #[test]
    fn the_header_and_the_log_say_where_and_why() {
        let path = BlockPath {
            list: List::Messages,
            item: 1,
            part: None,
        };
        let plan = Plan {
            decision: Decision::Inject,
            boundary: Some(Boundary {
                block: 2,
                path,
                tokens: 4120,
                support: 3,
            }),
            recurrence: 0.96666,
            expected_value: 1.0,
            shape: KeyShape::Family,
        };
        let placed = Placement {
            key_mode: Some(PromptCacheKeyMode::Family),
            breakpoint: Some(path),
            plan: Some(plan),
        };
        assert_eq!(
            placed.header().unwrap(),
            "injected; block=2; path=messages[1].content; tokens=4120; recurrence=0.97"
        );
        assert_eq!(
            serde_json::to_value(placed.note()).unwrap(),
            serde_json::json!({"policy": "auto", "decision": "injected", "block": 2,
                "tokens": 4120, "recurrence": 0.967})
        );
        let skipped = Placement {
            breakpoint: None,
            plan: Some(Plan {
                decision: Decision::NotRecurring,
                boundary: None,
                ..plan
            }),
            ..placed
        };
        assert_eq!(
            skipped.header().unwrap(),
            "none; reason=not_recurring; recurrence=0.97"
        );
        assert_eq!(skipped.policy(), "none");
        let older = Placement::default();
        assert!(older.header().is_none());
        assert_eq!(
            serde_json::to_value(older.note()).unwrap(),
            serde_json::json!({"policy": "none"})
        );
    }
}
