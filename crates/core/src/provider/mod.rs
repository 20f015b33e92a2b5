//! The provider side of a request, simulated without I/O: the token sequence OpenAI
//! sees for a request ([`prompt`]) and its prompt cache ([`cache`]), built from the
//! documented behaviour only (DESIGN.md §7, §10).
//!
//! Two programs run these: the mock upstream (which fills `cached_tokens` in its
//! answers) and `prefixcache replay` (which reports the cached-token share under each
//! `prompt_cache_key` policy). They live here, not in the mock, so the offline tools do
//! not depend on the mock (DESIGN.md §2). Time is passed in as milliseconds: the mock
//! reads its clock, replay the log's timestamps.
//!
//! # Layout
//! - [`prompt`]: prompt token sequences (message framing, tools, images) and their
//!   prefix-block hashes ([`prompt::PromptInfo`]).
//! - [`cache`]: the simulated fleet of machines with idle-expiring prefix LRUs.
//! - [`rng`]: SplitMix64 and the 64-bit mixer both use (stable across builds).

pub mod cache;
pub mod prompt;
pub mod rng;
