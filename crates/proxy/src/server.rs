//! The accept loop: every connection is owned by this loop, so shutdown can stop
//! accepting, let open connections finish their requests, and close whatever is still
//! open when `drain_timeout` runs out (not leave it running in the background).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `stop` is cancelled, then drains for at most
/// `drain` and closes the remaining connections.
pub async fn run(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            // Reap finished connections so the set does not grow with traffic.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
                let service = TowerToHyperService::new(router.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    // A client that hangs up mid-response is routine, not an error.
                    let _ = conn.await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, open = connections.len(), "drain timeout reached; closing the remaining connections");
        }
    }
    connections.shutdown().await;
    Ok(())
}
