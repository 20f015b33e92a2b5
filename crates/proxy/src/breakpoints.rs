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

impl Placement {
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
