//! What a request asks for ([`RequestFlags`]) and the exact bytes the proxy forwards
//! upstream ([`prepare_upstream_body`]): the caller's bytes untouched unless a field is
//! injected, and then spliced in rather than re-serialized whenever that is exact.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{WireError, splice_after_brace};
use crate::route::Route;

/// The facts about a request body that steer caching and forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFlags<'a> {
    /// `stream: true` on a route that can stream.
    pub stream: bool,
    /// The client receives usage in its stream: `stream_options.include_usage: true`
    /// on chat/completions; always on responses (`response.completed` carries it).
    pub include_usage: bool,
    /// The output is sampled: `temperature` absent (the API default is 1) or above 0.
    /// Embeddings are never sampled.
    pub sampled: bool,
    /// The requested `model`.
    pub model: Option<&'a str>,
    /// The caller set a (non-null) `prompt_cache_key`.
    pub has_prompt_cache_key: bool,
}

/// Reads the [`RequestFlags`] of a parsed request body.
pub fn request_flags(route: Route, body: &Map<String, Value>) -> RequestFlags<'_> {
    let stream = route.can_stream() && body.get("stream") == Some(&Value::Bool(true));
    let include_usage = match route {
        Route::ChatCompletions | Route::Completions => {
            stream
                && body
                    .get("stream_options")
                    .and_then(|o| o.get("include_usage"))
                    == Some(&Value::Bool(true))
        }
        Route::Responses => true,
        Route::Embeddings => false,
    };
    let sampled = match route {
        Route::Embeddings => false,
        _ => match body.get("temperature") {
            None | Some(Value::Null) => true,
            Some(t) => t.as_f64().is_none_or(|t| t > 0.0),
        },
    };
    RequestFlags {
        stream,
        include_usage,
        sampled,
        model: body.get("model").and_then(Value::as_str),
        has_prompt_cache_key: body.get("prompt_cache_key").is_some_and(|v| !v.is_null()),
    }
}

/// What the proxy adds to a request before forwarding it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injections<'a> {
    /// Ask for the usage chunk (`stream_options.include_usage`) on streamed chat and
    /// legacy completions requests; ignored elsewhere.
    pub include_usage: bool,
    /// A `prompt_cache_key` to set when the caller set none (chat completions and
    /// responses only: the other routes do not accept the field).
    pub prompt_cache_key: Option<&'a str>,
}

/// The bytes to forward upstream. `body` must be `original` parsed.
///
/// Nothing to inject: `original` itself (a cheap `Bytes` clone). Otherwise the new
/// fields are spliced in right after the opening `{`, leaving every other byte as the
/// caller sent it; only when a field must change inside an existing value (a
/// `stream_options` object without `include_usage: true`, a `prompt_cache_key: null`)
/// is the body re-serialized. A caller's own `prompt_cache_key` is never replaced.
pub fn prepare_upstream_body(
    original: &Bytes,
    body: &Map<String, Value>,
    route: Route,
    inject: &Injections<'_>,
) -> Result<Bytes, WireError> {
    let flags = request_flags(route, body);
    let key = inject
        .prompt_cache_key
        .filter(|_| matches!(route, Route::ChatCompletions | Route::Responses))
        .filter(|_| !flags.has_prompt_cache_key);
    let usage = inject.include_usage
        && matches!(route, Route::ChatCompletions | Route::Completions)
        && flags.stream
        && !flags.include_usage;
    if key.is_none() && !usage {
        return Ok(original.clone());
    }

    let open = original
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .filter(|&i| original[i] == b'{');
    let key_splices = key.is_none() || !body.contains_key("prompt_cache_key");
    let usage_splices = !usage || !body.contains_key("stream_options");
    if let (Some(open), true, true) = (open, key_splices, usage_splices) {
        let mut fields = Vec::with_capacity(64);
        if let Some(k) = key {
            fields.extend_from_slice(b"\"prompt_cache_key\":");
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut fields, k);
        }
        if usage {
            if !fields.is_empty() {
                fields.push(b',');
            }
            fields.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        }
        return Ok(splice_after_brace(original, open, &fields));
    }

    let mut rebuilt = body.clone();
    if let Some(k) = key {
        rebuilt.insert("prompt_cache_key".into(), Value::String(k.into()));
    }
    if usage {
        match rebuilt.get_mut("stream_options") {
            Some(Value::Object(o)) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                let mut o = Map::new();
                o.insert("include_usage".into(), Value::Bool(true));
                rebuilt.insert("stream_options".into(), Value::Object(o));
            }
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&rebuilt)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(b: &[u8]) -> Map<String, Value> {
        serde_json::from_slice(b).unwrap()
    }

    fn prep(route: Route, body: &'static [u8], inject: Injections<'_>) -> Bytes {
        let original = Bytes::from_static(body);
        prepare_upstream_body(&original, &parse(body), route, &inject).unwrap()
    }

    const BOTH: Injections<'static> = Injections {
        include_usage: true,
        prompt_cache_key: Some("pk-1"),
    };

    #[test]
    fn flags_read_the_body() {
        let b = parse(br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"temperature":0}"#);
        let f = request_flags(Route::ChatCompletions, &b);
        assert_eq!(
            f,
            RequestFlags {
                stream: true,
                include_usage: true,
                sampled: false,
                model: Some("gpt-4o"),
                has_prompt_cache_key: false
            }
        );
        let b = parse(br#"{"model":"m","prompt_cache_key":"x","temperature":0.7}"#);
        let f = request_flags(Route::ChatCompletions, &b);
        assert!(!f.stream && !f.include_usage && f.sampled && f.has_prompt_cache_key);
        assert!(
            request_flags(Route::ChatCompletions, &parse(b"{}")).sampled,
            "default temperature is 1"
        );
        let b = parse(br#"{"stream":true,"prompt_cache_key":null}"#);
        assert!(!request_flags(Route::Embeddings, &b).stream);
        assert!(!request_flags(Route::Embeddings, &b).sampled);
        assert!(!request_flags(Route::ChatCompletions, &b).has_prompt_cache_key);
        assert!(request_flags(Route::Responses, &b).include_usage);
    }

    #[test]
    fn nothing_to_inject_returns_the_same_bytes() {
        let body: &'static [u8] = br#"{"model":"m", "stream":false}"#;
        let original = Bytes::from_static(body);
        let out = prepare_upstream_body(
            &original,
            &parse(body),
            Route::ChatCompletions,
            &Injections::default(),
        )
        .unwrap();
        assert_eq!(
            out.as_ptr(),
            original.as_ptr(),
            "no copy, no re-serialization"
        );
        // include_usage on a non-streamed request changes nothing either
        let out = prep(
            Route::ChatCompletions,
            body,
            Injections {
                include_usage: true,
                prompt_cache_key: None,
            },
        );
        assert_eq!(&out[..], body);
        // embeddings accept neither field
        assert_eq!(
            &prep(Route::Embeddings, br#"{"input":"x"}"#, BOTH)[..],
            br#"{"input":"x"}"#
        );
    }

    #[test]
    fn injections_are_spliced_after_the_brace() {
        let out = prep(
            Route::ChatCompletions,
            b" \n{\"model\":\"m\",\"stream\":true}",
            BOTH,
        );
        assert_eq!(
            &out[..],
            &b" \n{\"prompt_cache_key\":\"pk-1\",\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\"stream\":true}"[..]
        );
        let out = prep(Route::Responses, b"{}", BOTH);
        assert_eq!(
            &out[..],
            br#"{"prompt_cache_key":"pk-1"}"#,
            "responses get no stream_options"
        );
        let out = prep(Route::Completions, br#"{"stream":true}"#, BOTH);
        assert_eq!(
            &out[..],
            br#"{"stream_options":{"include_usage":true},"stream":true}"#,
            "no key on legacy completions"
        );
        let odd = Injections {
            include_usage: false,
            prompt_cache_key: Some("a\"b"),
        };
        let out = prep(Route::ChatCompletions, b"{ }", odd);
        assert_eq!(parse(&out), parse(br#"{"prompt_cache_key":"a\"b"}"#));
    }

    #[test]
    fn a_callers_key_is_never_replaced_or_duplicated() {
        let out = prep(
            Route::ChatCompletions,
            br#"{"prompt_cache_key":"mine","stream":false}"#,
            BOTH,
        );
        assert_eq!(&out[..], br#"{"prompt_cache_key":"mine","stream":false}"#);
        // a null key is no key: set ours, by rebuilding (a splice would duplicate it)
        let out = prep(
            Route::ChatCompletions,
            br#"{"prompt_cache_key":null}"#,
            BOTH,
        );
        assert_eq!(parse(&out), parse(br#"{"prompt_cache_key":"pk-1"}"#));
    }

    #[test]
    fn existing_stream_options_are_rebuilt() {
        let out = prep(
            Route::ChatCompletions,
            br#"{"stream":true,"stream_options":{"include_obfuscation":false},"temperature":0.30000000000000004}"#,
            BOTH,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"stream": true, "prompt_cache_key": "pk-1", "temperature": 0.30000000000000004,
                   "stream_options": {"include_obfuscation": false, "include_usage": true}})
        );
        let out = prep(
            Route::ChatCompletions,
            br#"{"stream":true,"stream_options":{"include_usage":false}}"#,
            Injections {
                include_usage: true,
                prompt_cache_key: None,
            },
        );
        assert_eq!(
            parse(&out)["stream_options"],
            json!({"include_usage": true})
        );
        let out = prep(
            Route::ChatCompletions,
            br#"{"stream":true,"stream_options":null}"#,
            Injections {
                include_usage: true,
                prompt_cache_key: None,
            },
        );
        assert_eq!(
            parse(&out)["stream_options"],
            json!({"include_usage": true})
        );
        // already asked for: untouched
        let body: &'static [u8] = br#"{"stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(
            &prep(
                Route::ChatCompletions,
                body,
                Injections {
                    include_usage: true,
                    prompt_cache_key: None
                }
            )[..],
            body
        );
    }
}
