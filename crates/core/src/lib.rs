//! Pure logic of prefixcache: everything that can be decided without I/O.
//!
//! The proxy, the stores, the mock upstream and the offline tools all build on these
//! types, so each concept lives here exactly once. Nothing in this crate touches the
//! network, the disk or the clock (time is passed in).
//!
//! # Layout
//! - [`route`]: the cached OpenAI routes and their paths.
//! - [`config`]: `prefixcache.toml` (raw, validated), strategies and their matchers.
//! - [`rawjson`]: JSON text as written: validation, value spans, string decoding.
//! - [`canonical`]: the canonical form of a request body (what a cache entry is keyed on).
//! - [`key`]: tenants' namespaces, cache keys and request hashes.
//! - [`tokenizer`]: tiktoken-exact encodings and the model-name table.
//! - [`prefix`]: the prefix text of a request, prefix families and their memo.
//! - [`boundary`]: where two prompts' tokens first diverge (`prefixcache diff`).
//! - [`breakpoint`]: automatic prompt-cache breakpoints (boundary learning per family,
//!   the money rule, where a breakpoint goes).
//! - [`lint`]: prompt-shape rules (dynamic prefixes, placeholders, whitespace drift,
//!   short prefixes, unstable tool serialization) and the warning header.
//! - [`pricing`]: the price table (embedded `pricing.toml`, config overrides) and the cost
//!   of a response's usage.
//! - [`usage`]: token usage of a response, normalized across routes.
//! - [`provider`]: the provider's view of a request: prompt token sequences and the
//!   simulated prompt cache (used by the mock upstream and `prefixcache replay`).
//! - [`sse`]: server-sent-event framing and assembly of streamed responses.
//! - [`wire`]: request flags and upstream bodies, rendering entries as JSON or SSE, usage.

pub mod boundary;
pub mod breakpoint;
pub mod canonical;
pub mod config;
pub mod key;
pub mod lint;
pub mod prefix;
pub mod pricing;
pub mod provider;
pub mod rawjson;
pub mod route;
pub mod sse;
pub mod tokenizer;
pub mod usage;
pub mod wire;
