//! Token usage of one response, normalized across routes (`prompt_tokens` /
//! `input_tokens`, `cached_tokens` under `prompt_tokens_details` / `input_tokens_details`).

/// Token counts of one upstream response. `cached_tokens` and `cache_write_tokens` are
/// parts of `prompt_tokens`, as the API reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (models that charge writes).
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}
