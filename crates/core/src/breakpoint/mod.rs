//! Automatic prompt-cache breakpoints: where each prefix family's prompt stops changing,
//! whether a breakpoint there pays for its cache writes, and where exactly it goes in the
//! request. Provider-neutral: blocks, boundaries and the money rule are the same for
//! OpenAI's `prompt_cache_breakpoint` and Anthropic's `cache_control`; the provider's
//! rules come in as [`learn::Rules`]. The byte splice that places a breakpoint in the
//! forwarded request is `wire::plan_splices`; rules and sources in
//! `docs/provider-caching.md`.
//!
//! # Layout
//! - [`blocks`]: a request's prompt as content blocks with chained digests, the places
//!   that can carry a breakpoint, and placing one in a parsed body.
//! - [`learn`]: the per-scope (tenant namespace and family) learner: boundary,
//!   recurrence, key shape, and the decision for one request.
//! - [`cost`]: the money rule (expected reads against the write premium).

pub mod blocks;
pub mod cost;
pub mod learn;

pub use blocks::{BlockPath, Blocks, List, request_blocks};
pub use cost::TokenRates;
pub use learn::{Decision, KeyShape, Learner, Plan, Rules, Scope};
