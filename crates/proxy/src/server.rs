//! The accept loop: every connection is owned by this loop, so shutdown can stop
//! accepting, let open connections finish their requests, and close whatever is still
//! open when `drain_timeout` runs out (not leave it running in the background).
//!
//! It also holds each connection to `[limits]`: a bounded number of open connections
//! (the rest are answered `503`), headers within `header_read_timeout`, no connection
//! idle beyond `idle_timeout`, and HTTP/2 keep-alive pings.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prefixcache_core::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Holding};
use crate::error::{ApiError, Overload};

/// Connections refused at once (answered `503` while over `max_connections`); beyond
/// this many being answered, further ones are closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection is given to send its request and read the answer.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `stop` is cancelled, then drains for at most
/// `drain` and closes the remaining connections.
pub async fn run(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    drain: Duration,
    admission: Arc<Admission>,
) -> std::io::Result<()> {
    let builder = builder(admission.limits());
    let mut connections: JoinSet<()> = JoinSet::new();
    let mut refusing: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            // Reap finished connections so the sets do not grow with traffic.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = refusing.join_next(), if !refusing.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small SSE events and JSON bodies must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let Some(slot) = admission.connection() else {
                    if refusing.len() < MAX_REFUSING {
                        refusing.spawn(refuse(stream));
                    }
                    continue;
                };
                let conn = serve(&builder, stream, router.clone(), slot, admission.clone(), stop.clone());
                connections.spawn(conn);
            }
        }
    }
    drop(listener);
    refusing.abort_all();
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(
            ?drain,
            open = connections.len(),
            "drain timeout reached; closing the remaining connections"
        );
    }
    connections.shutdown().await;
    Ok(())
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Without a timer hyper enforces no header timeout at all. The timer starts
        // when the connection is ready for a request, so an idle kept-alive HTTP/1
        // connection is also closed after it.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(limits.http2_keep_alive_timeout);
    builder
}

/// One connection until it ends: closed gracefully on `stop`, or once it has had no
/// request in progress for `idle_timeout`.
fn serve(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    router: Router,
    slot: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let activity = Arc::new(Activity::new());
    let inner = TowerToHyperService::new(router);
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // The connection is busy from a request's arrival until its response body has
        // been sent (or dropped).
        let guard = Active::new(tracked.clone());
        let response = hyper::service::Service::call(&inner, req);
        async move {
            let resp = response.await?;
            Ok::<_, Infallible>(resp.map(|body| Body::new(Holding::new(body, guard))))
        }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let idle = admission.limits().idle_timeout;
    async move {
        let _slot = slot;
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            let idle_at = activity.idle_deadline(idle);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result
                        && e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
                    {
                        admission.timed_out("header");
                    }
                    // Otherwise a client that hangs up mid-response is routine.
                    return;
                }
                () = stop.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(idle_at), if !closing => {
                    if activity.is_idle_since(idle) {
                        admission.timed_out("idle");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// When a connection last had a request in progress.
#[derive(Debug)]
struct Activity {
    /// Requests in progress.
    active: AtomicUsize,
    /// When the last one ended (or the connection was accepted), as time since `born`.
    last: AtomicU64,
    born: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            active: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn last(&self) -> Instant {
        self.born + Duration::from_micros(self.last.load(Ordering::SeqCst))
    }

    /// When the connection may be closed as idle, if nothing happens before.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.active.load(Ordering::SeqCst) > 0 {
            Instant::now() + idle
        } else {
            self.last() + idle
        }
    }

    fn is_idle_since(&self, idle: Duration) -> bool {
        self.active.load(Ordering::SeqCst) == 0 && self.last().elapsed() >= idle
    }
}

/// A request in progress on a connection.
struct Active(Arc<Activity>);

impl Active {
    fn new(activity: Arc<Activity>) -> Active {
        activity.active.fetch_add(1, Ordering::SeqCst);
        Active(activity)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let since = self.0.born.elapsed().as_micros();
        self.0
            .last
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers a connection over `max_connections` with `503` and closes it. It reads
/// what the client sent first (briefly, a bounded amount), so that closing does not
/// reset the connection before the client has read the answer.
async fn refuse(mut stream: TcpStream) {
    let body = ApiError::Overloaded(Overload::Connections).body();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        crate::error::RETRY_AFTER_SECS,
        body.len()
    );
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        let mut buf = [0u8; 8192];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Drain until the client closes, so our close sends no reset.
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}
