//! Per-request test controls, read from request headers: hold the response head at a
//! gate (`x-mock-head-gate`), hold the body part way through (`x-mock-stream-gate`), or
//! cut it after a number of parts (`x-mock-cut-after`). They let a test put events in
//! order (a follower joins before the head; a reader has its first chunk while the
//! upstream is still sending) and make cuts where it wants them, without sleeping.

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::error::ApiError;
use crate::gate::{Gates, valid_name};

pub const HEAD_GATE: &str = "x-mock-head-gate";
pub const STREAM_GATE: &str = "x-mock-stream-gate";
pub const CUT_AFTER: &str = "x-mock-cut-after";

/// What the headers of one request ask for. Positions count SSE events in a stream and
/// bytes in a JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// Wait at this gate before sending the response head.
    pub head_gate: Option<String>,
    /// Wait at this gate after sending this many events (or bytes).
    pub stream_gate: Option<(String, usize)>,
    /// Send this many events (or bytes), then close the connection mid-body.
    pub cut_after: Option<usize>,
}

impl Control {
    /// Reads the controls; a malformed value is the API's 400.
    pub fn from_headers(headers: &HeaderMap, gates: &Gates) -> Result<Control, ApiError> {
        let text = |name: &str| -> Result<Option<&str>, ApiError> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
                    ApiError::invalid(format!("{name}: the value must be visible ASCII"))
                }),
            }
        };
        let gate = |name: &str, value: &str| -> Result<String, ApiError> {
            if !valid_name(value) {
                return Err(ApiError::invalid(format!(
                    "{name}: {value:?} is not a gate name (1 to 128 of A-Z a-z 0-9 . _ -)"
                )));
            }
            gates
                .check(value)
                .map_err(|e| ApiError::invalid(format!("{name}: {e}")))?;
            Ok(value.to_string())
        };
        let count = |name: &str, value: &str| -> Result<usize, ApiError> {
            value.parse::<usize>().map_err(|_| {
                ApiError::invalid(format!("{name}: {value:?} is not a non-negative integer"))
            })
        };
        let head_gate = text(HEAD_GATE)?.map(|v| gate(HEAD_GATE, v)).transpose()?;
        let stream_gate = text(STREAM_GATE)?
            .map(|v| {
                // `NAME` holds after the first part; `NAME@N` after N parts.
                let (name, at) = match v.rsplit_once('@') {
                    Some((n, at)) => (n, count(STREAM_GATE, at)?),
                    None => (v, 1),
                };
                Ok::<_, ApiError>((gate(STREAM_GATE, name)?, at))
            })
            .transpose()?;
        let cut_after = text(CUT_AFTER)?.map(|v| count(CUT_AFTER, v)).transpose()?;
        Ok(Control {
            head_gate,
            stream_gate,
            cut_after,
        })
    }

    /// Whether the body must be sent in parts (a gate or a cut inside it).
    pub fn splits_body(&self) -> bool {
        self.stream_gate.is_some() || self.cut_after.is_some()
    }

    /// A JSON body as parts, split at the byte positions the controls name (clamped to
    /// the body), so the gate and the cut fall between parts; with the number of parts
    /// before the gate and before the cut.
    pub fn split_json(&self, body: &Bytes) -> (Vec<Bytes>, Option<usize>, Option<usize>) {
        let mut cuts: Vec<usize> = [self.stream_gate.as_ref().map(|g| g.1), self.cut_after]
            .into_iter()
            .flatten()
            .map(|n| n.min(body.len()))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut parts = Vec::with_capacity(cuts.len() + 1);
        let mut from = 0;
        for &at in &cuts {
            parts.push(body.slice(from..at));
            from = at;
        }
        parts.push(body.slice(from..));
        let parts_before = |n: usize| cuts.iter().position(|&c| c == n.min(body.len()));
        let gate_at = self
            .stream_gate
            .as_ref()
            .and_then(|g| parts_before(g.1).map(|i| i + 1));
        let cut_at = self.cut_after.and_then(|n| parts_before(n).map(|i| i + 1));
        (parts, gate_at, cut_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn headers_parse_into_controls() {
        let gates = Gates::default();
        assert_eq!(
            Control::from_headers(&HeaderMap::new(), &gates).unwrap(),
            Control::default()
        );
        let c = Control::from_headers(
            &headers(&[
                (HEAD_GATE, "lead"),
                (STREAM_GATE, "mid@3"),
                (CUT_AFTER, "7"),
            ]),
            &gates,
        )
        .unwrap();
        assert_eq!(c.head_gate.as_deref(), Some("lead"));
        assert_eq!(c.stream_gate, Some(("mid".into(), 3)));
        assert_eq!(c.cut_after, Some(7));
        let c = Control::from_headers(&headers(&[(STREAM_GATE, "mid")]), &gates).unwrap();
        assert_eq!(c.stream_gate, Some(("mid".into(), 1)));
        for bad in [
            (HEAD_GATE, "a b"),
            (STREAM_GATE, "x@y"),
            (CUT_AFTER, "-1"),
            (CUT_AFTER, "many"),
        ] {
            assert!(
                Control::from_headers(&headers(&[bad]), &gates).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn json_bodies_split_where_the_controls_say() {
        let body = Bytes::from_static(b"0123456789");
        let c = Control {
            stream_gate: Some(("g".into(), 4)),
            cut_after: Some(6),
            ..Default::default()
        };
        let (parts, gate, cut) = c.split_json(&body);
        assert_eq!(parts, vec!["0123", "45", "6789"]);
        assert_eq!((gate, cut), (Some(1), Some(2)));
        let c = Control {
            cut_after: Some(100),
            ..Default::default()
        };
        let (parts, gate, cut) = c.split_json(&body);
        assert_eq!(parts, vec!["0123456789", ""]);
        assert_eq!((gate, cut), (None, Some(1)));
    }
}
