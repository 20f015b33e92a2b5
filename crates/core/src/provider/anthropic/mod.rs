//! Anthropic's prompt cache, simulated without I/O: the prompt a Messages request
//! renders to, cut into the blocks `cache_control` can mark ([`prompt`]), and the cache
//! those markers read and write ([`cache`]), from Anthropic's documented rules only
//! (rules, sources and decisions: `docs/provider-caching.md`, "Anthropic").
//!
//! Claude's tokenizer is not public, so token counts are an estimate (see
//! [`prompt::messages_prompt`]); what the simulation gets right is structure: which
//! prefixes can be cached, where they match, and how many tokens are read, written (by
//! lifetime) and left uncached.
//!
//! # Layout
//! - [`prompt`]: the prompt's blocks (tools → system → messages), their prefix
//!   identities and token estimates, the `cache_control` markers and their validation.
//! - [`cache`]: the cache itself: breakpoints with the 20-block lookback, the minimum
//!   length per model, 5-minute and 1-hour lifetimes refreshed on use, usage by TTL.

pub mod cache;
pub mod prompt;

pub use cache::{AnthropicCacheSim, CacheUse};
pub use prompt::{CacheTtl, MessagesPrompt, PromptError, messages_prompt};

/// The shortest prefix, in tokens, that a model caches: below it a breakpoint is
/// ignored (the request succeeds; both cache counters stay 0).
///
/// From Anthropic's prompt-caching page as quoted in the sources of
/// `docs/provider-caching.md`: 512 for Opus 5, Fable 5 and Mythos 5; 1,024 for Opus 4.8,
/// Sonnet 5, Sonnet 4.6/4.5, Opus 4.1/4, Sonnet 4 and 3.7; 2,048 for Opus 4.7 and the
/// Haiku 3 models; 4,096 for Opus 4.6, Opus 4.5 and Haiku 4.5. Newer models take their
/// family's figure (Opus/Fable/Mythos 5.x: 512; Sonnet 5.x: 1,024; Haiku 5.5: 4,096, the
/// conservative Haiku figure), and a model this table does not know 1,024.
pub fn min_cacheable_tokens(model: &str) -> u64 {
    let m = model.strip_prefix("anthropic/").unwrap_or(model);
    let starts = |p: &str| m == p || m.starts_with(&format!("{p}-"));
    if [
        "claude-opus-4-6",
        "claude-opus-4-5",
        "claude-haiku-4-5",
        "claude-haiku-5",
    ]
    .iter()
    .any(|p| starts(p))
    {
        return 4096;
    }
    if ["claude-opus-4-7", "claude-3-5-haiku", "claude-3-haiku"]
        .iter()
        .any(|p| starts(p))
    {
        return 2048;
    }
    if ["claude-opus-5", "claude-fable-5", "claude-mythos-5"]
        .iter()
        .any(|p| starts(p))
    {
        return 512;
    }
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimums_by_model() {
        for (m, n) in [
            ("claude-opus-5", 512),
            ("claude-opus-5-5", 512),
            ("claude-fable-5-1", 512),
            ("claude-mythos-5-2-20261101", 512),
            ("claude-opus-4-8", 1024),
            ("claude-sonnet-5-5", 1024),
            ("claude-sonnet-4-6", 1024),
            ("claude-sonnet-4-5-20250929", 1024),
            ("claude-opus-4-1", 1024),
            ("claude-opus-4-7", 2048),
            ("claude-3-5-haiku-20241022", 2048),
            ("claude-opus-4-6", 4096),
            ("claude-opus-4-5-20251101", 4096),
            ("claude-haiku-4-5", 4096),
            ("claude-haiku-5-5", 4096),
            ("mock-model", 1024),
            // Not a prefix match on a longer name of another model.
            ("claude-opus-4-50", 1024),
        ] {
            assert_eq!(min_cacheable_tokens(m), n, "{m}");
        }
    }
}
