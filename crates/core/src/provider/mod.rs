//! The provider side of a request, simulated without I/O: the token sequence OpenAI
//! sees for a request ([`prompt`]) and its prompt cache ([`cache`]), under the rules of
//! models before GPT-5.6 and of GPT-5.6 and later, and Anthropic's prompt cache
//! ([`anthropic`]), built from the documented behaviour only (rules and sources:
//! `docs/provider-caching.md`).
//!
//! Two programs run these: the mock upstream (which fills `cached_tokens` and
//! `cache_write_tokens` in its answers) and `prefixcache replay` (which reports the
//! cached-token share under each `prompt_cache_key` policy). They live here, not in the
//! mock, so the offline tools do not depend on the mock. Time is passed in as
//! milliseconds: the mock reads its clock, replay the log's timestamps.
//!
//! # Layout
//! - [`prompt`]: prompt token sequences (message framing, tools, images), their
//!   breakpoint marks, and their prefix hashes ([`prompt::PromptInfo`]).
//! - [`cache`]: the simulated fleet of machines with expiring prefix LRUs, and the rules
//!   by model generation ([`cache::CacheRules`]).
//! - [`anthropic`]: Anthropic's prompt cache: the Messages prompt's blocks and
//!   `cache_control` breakpoints, and the cache they read and write.
//! - [`rng`]: SplitMix64 and the 64-bit mixer both use (stable across builds).

pub mod anthropic;
pub mod cache;
pub mod prompt;
pub mod rng;
