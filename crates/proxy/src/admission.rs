//! Admission control: what all clients together may hold (connections, requests in
//! flight, request-body bytes in flight) is budgeted, and a request beyond a budget is
//! refused at once (`503` with `Retry-After`) rather than queued; a body must arrive
//! at a minimum rate.
//!
//! Body bytes are budgeted for as long as the bytes live: an [`AdmittedBody`] carries
//! its share of the budget and returns it when its last copy is dropped (after the body
//! was analysed and sent upstream, or, with the request log on, when the log line is
//! written).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prefixcache_core::config::Limits;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{ApiError, Overload};
use crate::metrics::ReasonLabels;

/// The body budget counts in KiB, so a permit count fits the semaphore's `u32`.
const UNIT: u64 = 1024;
/// A body of unknown length is admitted in steps of this many bytes as it arrives.
const STEP: u64 = 64 * 1024;

/// The shared budgets and the counters of what they refused.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    connections: Arc<Semaphore>,
    requests: Arc<Semaphore>,
    body_units: Arc<Semaphore>,
    body_units_max: u64,
    rejected: Family<ReasonLabels, Counter>,
    timeouts: Family<ReasonLabels, Counter>,
}

impl Admission {
    /// Budgets from `[limits]`; refusals and slow bodies are counted in the given
    /// families (`prefixcache_rejected_total`, `prefixcache_client_timeouts_total`).
    pub fn new(
        limits: &Limits,
        rejected: Family<ReasonLabels, Counter>,
        timeouts: Family<ReasonLabels, Counter>,
    ) -> Admission {
        let body_units_max = limits
            .max_body_bytes_in_flight
            .div_ceil(UNIT)
            .min(Semaphore::MAX_PERMITS as u64);
        Admission {
            limits: limits.clone(),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            requests: Arc::new(Semaphore::new(limits.max_requests_in_flight)),
            body_units: Arc::new(Semaphore::new(body_units_max as usize)),
            body_units_max,
            rejected,
            timeouts,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn refuse(&self, what: Overload) -> ApiError {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: what.as_str(),
            })
            .inc();
        ApiError::Overloaded(what)
    }

    /// Counts a client cut off for being slow or idle (`header`, `body`, `idle`).
    pub fn timed_out(&self, reason: &'static str) {
        self.timeouts.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A slot for a new client connection, if one is free (counted when not).
    pub fn connection(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.connections.clone().try_acquire_owned().ok();
        if permit.is_none() {
            let _ = self.refuse(Overload::Connections);
        }
        permit
    }

    /// A slot for a request on the API routes, held until its response has been sent.
    pub fn request(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refuse(Overload::Requests))
    }

    fn body_units(&self, bytes: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        self.body_units
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| self.refuse(Overload::BodyBytes))
    }

    pub fn open_connections(&self) -> usize {
        self.limits.max_connections - self.connections.available_permits()
    }

    pub fn requests_in_flight(&self) -> usize {
        self.limits.max_requests_in_flight - self.requests.available_permits()
    }

    pub fn body_bytes_in_flight(&self) -> u64 {
        (self.body_units_max - self.body_units.available_permits() as u64) * UNIT
    }

    /// Reads a whole request body: at most `max_bytes` (413 beyond, also without a
    /// declared length), admitted against the body budget (503 when it is spent), and
    /// at the minimum rate (408 when slower). The declared length is admitted before
    /// anything is read, so a client cannot reserve memory it was refused.
    pub async fn read_body(
        &self,
        body: Body,
        headers: &HeaderMap,
        max_bytes: u64,
    ) -> Result<AdmittedBody, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes) {
            return Err(ApiError::BodyTooLarge { limit: max_bytes });
        }
        let mut admitted = declared.unwrap_or(0);
        let mut permit = self.body_units(admitted)?;
        let started = Instant::now();
        let mut buf = BytesMut::with_capacity(usize::try_from(admitted).unwrap_or(0));
        let mut body = body;
        loop {
            // A frame already received needs no timer (a small body arrives whole).
            let ready = body.frame().now_or_never();
            let next = match ready {
                Some(frame) => Ok(frame),
                None => {
                    let deadline = started + self.limits.body_deadline(buf.len() as u64);
                    tokio::time::timeout_at(deadline, body.frame()).await
                }
            };
            let frame = match next {
                Err(_) => {
                    self.timed_out("body");
                    return Err(ApiError::BodyTimeout);
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(ApiError::BodyRead(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let len = (buf.len() + data.len()) as u64;
            if len > max_bytes {
                return Err(ApiError::BodyTooLarge { limit: max_bytes });
            }
            if len > admitted {
                let more = (len - admitted).max(STEP).min(max_bytes - admitted);
                permit.merge(self.body_units(more)?);
                admitted += more;
            }
            buf.extend_from_slice(&data);
        }
        Ok(AdmittedBody {
            bytes: buf.freeze(),
            _permit: Arc::new(permit),
        })
    }

    /// A request body streamed upstream unread (uncached routes): held to the same
    /// minimum rate, so a slow sender cannot keep an upstream connection and a worker
    /// waiting forever. When it is too slow the stream fails and `slow` is set.
    pub fn rate_limited(&self, body: Body) -> (RateLimited, Arc<AtomicBool>) {
        let slow = Arc::new(AtomicBool::new(false));
        let stream = RateLimited {
            body,
            limits: self.limits.clone(),
            started: Instant::now(),
            received: 0,
            sleep: None,
            slow: slow.clone(),
        };
        (stream, slow)
    }
}

/// Request-body bytes with their share of the body budget, returned when the last
/// clone is dropped. A derived copy (the body with the proxy's splices) shares it.
#[derive(Debug, Clone)]
pub struct AdmittedBody {
    bytes: Bytes,
    _permit: Arc<OwnedSemaphorePermit>,
}

impl AdmittedBody {
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Other bytes made from this body (of about its size), under the same admission.
    pub fn derived(&self, bytes: Bytes) -> AdmittedBody {
        AdmittedBody {
            bytes,
            _permit: self._permit.clone(),
        }
    }
}

/// `resp` with `guard` held until its body has been sent or dropped.
pub fn hold<G: Unpin + Send + 'static>(
    resp: axum::response::Response,
    guard: G,
) -> axum::response::Response {
    resp.map(|body| Body::new(Holding::new(body, guard)))
}

/// A response body that holds `G` (an in-flight slot, a connection's activity mark)
/// until the body has been sent or dropped.
pub struct Holding<G> {
    body: Body,
    _guard: G,
}

impl<G> Holding<G> {
    pub fn new(body: Body, guard: G) -> Holding<G> {
        Holding {
            body,
            _guard: guard,
        }
    }
}

impl<G: Unpin> HttpBody for Holding<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// See [`Admission::rate_limited`].
pub struct RateLimited {
    body: Body,
    limits: Limits,
    started: Instant,
    received: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    slow: Arc<AtomicBool>,
}

impl Stream for RateLimited {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    this.sleep = None;
                    if let Ok(data) = frame.into_data() {
                        this.received += data.len() as u64;
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Pending => {
                    let deadline = this.started + this.limits.body_deadline(this.received);
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if sleep.deadline() != deadline {
                        sleep.as_mut().reset(deadline);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        this.slow.store(true, Ordering::SeqCst);
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "request body too slow",
                        ))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admission(toml: &str) -> Admission {
        let config = prefixcache_core::config::Config::load(prefixcache_core::config::Layers {
            file: Some(toml.into()),
            ..Default::default()
        })
        .unwrap();
        Admission::new(&config.limits, Family::default(), Family::default())
    }

    fn headers(len: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, len.into());
        h
    }

    #[tokio::test]
    async fn body_bytes_are_budgeted_while_the_body_lives() {
        let a =
            admission("max_body_bytes = \"1MiB\"\n[limits]\nmax_body_bytes_in_flight = \"2MiB\"");
        let mb = vec![b' '; 1 << 20];
        let one = a
            .read_body(Body::from(mb.clone()), &headers(mb.len()), 1 << 20)
            .await
            .unwrap();
        let copy = one.derived(Bytes::from_static(b"{}"));
        let two = a
            .read_body(Body::from(mb.clone()), &headers(mb.len()), 1 << 20)
            .await
            .unwrap();
        assert_eq!(a.body_bytes_in_flight(), 2 << 20);
        let refused = a.read_body(Body::from("{}"), &headers(2), 1 << 20).await;
        assert!(matches!(
            refused,
            Err(ApiError::Overloaded(Overload::BodyBytes))
        ));
        drop(one);
        assert_eq!(a.body_bytes_in_flight(), 2 << 20, "the copy still holds it");
        drop(copy);
        assert_eq!(a.body_bytes_in_flight(), 1 << 20);
        drop(two);
        assert_eq!(a.body_bytes_in_flight(), 0);
        // Too large is 413 before anything is admitted.
        let big = a
            .read_body(Body::from("x"), &headers(2 << 20), 1 << 20)
            .await;
        assert!(matches!(big, Err(ApiError::BodyTooLarge { .. })));
        // Without a declared length, too large is found while reading.
        let stream = futures_util::stream::iter(
            (0..40).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 << 10]))),
        );
        let big = a
            .read_body(Body::from_stream(stream), &HeaderMap::new(), 1 << 20)
            .await;
        assert!(matches!(big, Err(ApiError::BodyTooLarge { .. })));
        assert_eq!(a.body_bytes_in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_minimum_rate_is_refused() {
        let a = admission("[limits]\nbody_read_timeout = \"2s\"\nbody_min_rate = 100");
        // 100 bytes at once, then nothing: allowed 2 s + 1 s.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from(vec![b' '; 100]))).await.unwrap();
        let body = Body::from_stream(tokio_stream_of(rx));
        let started = Instant::now();
        let r = a.read_body(body, &HeaderMap::new(), 1 << 20).await;
        assert!(matches!(r, Err(ApiError::BodyTimeout)), "{r:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(tx);
    }

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[test]
    fn requests_and_connections_are_counted_slots() {
        let a = admission("[limits]\nmax_requests_in_flight = 1\nmax_connections = 1");
        let r = a.request().unwrap();
        assert!(matches!(
            a.request(),
            Err(ApiError::Overloaded(Overload::Requests))
        ));
        assert_eq!(a.requests_in_flight(), 1);
        drop(r);
        assert!(a.request().is_ok());
        let c = a.connection().unwrap();
        assert!(a.connection().is_none());
        assert_eq!(a.open_connections(), 1);
        drop(c);
        assert!(a.connection().is_some());
    }
}
