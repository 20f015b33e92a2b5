//! Server-sent events as the API writes them (`data: {json}\n\n`, `event: type\ndata:
//! ...\n\n`, `data: [DONE]\n\n`), and the response body that sends them one write per
//! event, paced, optionally cut short.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream;
use serde::Serialize;

use crate::gate::Gates;
use crate::stats::InFlight;

/// `data: <json>\n\n`.
pub fn data<T: Serialize>(payload: &T) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut out, payload);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `event: <type>\ndata: <json>\n\n` (the Responses API names every event).
pub fn event<T: Serialize>(kind: &str, payload: &T) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut out, payload);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The terminator of chat and legacy completion streams.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// How a body is sent.
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    /// Pause before every part but the first.
    pub delay: Duration,
    /// Send this many parts, then fail the body, which makes hyper close the connection
    /// without finishing the message (no terminating chunk, short of `content-length`).
    pub cut_after: Option<usize>,
    /// Hold the rest of the body at a gate after some parts (`x-mock-stream-gate`).
    pub gate: Option<StreamGate>,
}

impl Pacing {
    /// Parts as fast as the client reads them, after `delay` each but the first.
    pub fn paced(delay: Duration) -> Pacing {
        Pacing {
            delay,
            cut_after: None,
            gate: None,
        }
    }
}

/// Where a body waits for a test: after `after` parts, at gate `name`.
#[derive(Debug, Clone)]
pub(crate) struct StreamGate {
    pub gates: Arc<Gates>,
    pub name: String,
    pub after: usize,
}

struct State {
    parts: std::vec::IntoIter<Bytes>,
    sent: usize,
    pacing: Pacing,
    _in_flight: InFlight,
}

/// A body that yields `parts` one at a time (each its own write when paced), keeping the
/// request counted as in flight until it ends.
pub(crate) fn body(parts: Vec<Bytes>, pacing: Pacing, in_flight: InFlight) -> Body {
    let state = State {
        parts: parts.into_iter(),
        sent: 0,
        pacing,
        _in_flight: in_flight,
    };
    Body::from_stream(stream::unfold(state, |mut st| async move {
        if st.pacing.cut_after.is_some_and(|n| st.sent >= n) {
            if st.sent == usize::MAX {
                return None;
            }
            st.sent = usize::MAX;
            // Return Pending once first: hyper flushes what it has buffered while the
            // body is pending, so the parts sent so far reach the client before the close.
            tokio::task::yield_now().await;
            let err = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "mock-cut-stream");
            return Some((Err(err), st));
        }
        if let Some(gate) = st.pacing.gate.take_if(|g| g.after == st.sent) {
            // Returns Pending meanwhile, so the parts sent so far are flushed first.
            let _ = gate.gates.wait(&gate.name).await;
        }
        let part = st.parts.next()?;
        if st.sent > 0 && !st.pacing.delay.is_zero() {
            tokio::time::sleep(st.pacing.delay).await;
        }
        st.sent += 1;
        Some((Ok::<Bytes, std::io::Error>(part), st))
    }))
}
