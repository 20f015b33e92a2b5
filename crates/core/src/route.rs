//! The OpenAI routes prefixcache caches, named once so metrics, keys and logs agree.

/// A cached route. Every other path is forwarded without caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions` (legacy text completions)
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/responses`
    Responses,
}

impl Route {
    /// Every cached route, in a fixed order (for metrics pre-registration and docs).
    pub const ALL: [Route; 4] = [
        Route::ChatCompletions,
        Route::Completions,
        Route::Embeddings,
        Route::Responses,
    ];

    /// The route for a request path, if it is a cached one.
    pub fn from_path(path: &str) -> Option<Route> {
        match path {
            "/v1/chat/completions" => Some(Route::ChatCompletions),
            "/v1/completions" => Some(Route::Completions),
            "/v1/embeddings" => Some(Route::Embeddings),
            "/v1/responses" => Some(Route::Responses),
            _ => None,
        }
    }

    /// The request path; part of the cache key.
    pub fn path(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Responses => "/v1/responses",
        }
    }

    /// Short name used as a metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Responses => "responses",
        }
    }

    /// Whether the route can answer with a server-sent-event stream.
    pub fn can_stream(self) -> bool {
        !matches!(self, Route::Embeddings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_round_trips() {
        for r in Route::ALL {
            assert_eq!(Route::from_path(r.path()), Some(r));
        }
        assert_eq!(Route::from_path("/v1/models"), None);
        assert_eq!(Route::from_path("/v1/chat/completions/"), None);
    }
}
