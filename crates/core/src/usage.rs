//! Token usage of one response, normalized across routes and providers (`prompt_tokens` /
//! `input_tokens`, `cached_tokens` under `prompt_tokens_details` / `input_tokens_details`,
//! Anthropic's `cache_read_input_tokens` / `cache_creation_input_tokens`).

/// Token counts of one upstream response. `cached_tokens` and `cache_write_tokens` are
/// parts of `prompt_tokens` (every prompt token is read, written or uncached once), and
/// `cache_write_long_tokens` is a part of `cache_write_tokens`.
///
/// Anthropic reports `input_tokens` without the cached and written tokens; parsing adds
/// them back, so `prompt_tokens` means the same for every provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (models that charge writes).
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written with the provider's longer lifetime,
    /// which costs more: Anthropic's 1-hour writes (`ephemeral_1h_input_tokens`), OpenAI's
    /// 12-hour writes (`ttl_12h_tokens`). The rest were written with the default lifetime
    /// (5 minutes, 30 minutes).
    pub cache_write_long_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Written tokens at the default lifetime: `cache_write_tokens` less the long part
    /// (never negative, whatever a usage object claims).
    pub fn cache_write_short_tokens(&self) -> u64 {
        self.cache_write_tokens
            .saturating_sub(self.cache_write_long_tokens)
    }
}
