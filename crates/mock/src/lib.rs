//! The mock upstream (`docs/mock-upstream.md`): OpenAI's cached routes and `GET /v1/models`, and
//! Anthropic's Messages API, in the real APIs' wire formats, deterministic content derived from the request, exact
//! `usage` from the real tokenizer, SSE streams chunked like the real ones, a simulation
//! of the provider's prompt cache that fills `cached_tokens`, configurable latency, and
//! special model names that produce errors, hangs and cut connections. Tests and
//! benchmarks in other crates start it with [`spawn_local`]; `prefixcache mock-upstream`
//! runs it as a process. Decisions and approximations: `docs/mock-upstream.md`.
//!
//! # Layout
//! - [`config`]: [`MockConfig`], [`Latency`] specs, prompt-cache parameters.
//! - [`server`]: [`Mock`] (shared state, counters), [`app`], [`serve`], [`spawn_local`].
//! - [`stats`]: request counters and recorded requests.
//! - `plan`: parsing a request into a prepared answer; special models; the tool rule.
//! - `cache_options`: `prompt_cache_options` / `prompt_cache_breakpoint` validation and
//!   the cache policy (block rules before GPT-5.6, breakpoint rules after).
//! - `chat`, `completions`, `embeddings`, `responses`, `models`: one file per route.
//! - `messages`: Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`),
//!   its headers and error shape, on Anthropic's simulated prompt cache.
//! - [`prompt`], [`prompt_cache`]: prompt token sequences and the simulated provider
//!   prompt cache; re-exported from `prefixcache_core::provider`, where they live so the
//!   offline tools share them without depending on the mock.
//! - [`generate`]: deterministic prose, schema-conforming JSON, logprobs.
//! - `sse`: event framing and the paced, cuttable stream body.
//! - `error`: OpenAI-shaped errors.
//! - [`clock`], [`rng`], [`words`]: injectable time, seeded randomness, the vocabulary.

mod cache_options;
mod chat;
pub mod clock;
mod completions;
pub mod config;
mod embeddings;
mod error;
pub mod generate;
mod messages;
mod models;
mod plan;
mod responses;
pub mod rng;
pub mod server;
mod sse;
pub mod stats;
pub mod words;

pub use config::{Latency, MockConfig, PromptCacheConfig};
pub use embeddings::model_dimensions;
pub use error::ApiError;
pub use prefixcache_core::provider::cache as prompt_cache;
pub use prefixcache_core::provider::prompt;
pub use server::{Mock, MockServer, app, serve, spawn_local};
pub use stats::{MockRoute, RecordedRequest, Stats};
