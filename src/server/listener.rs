//! Accepting connections, bounded: at most so many at once (beyond: 503 with Retry-After), at
//! most so many new ones per second from one source address (beyond: 429), a deadline for the
//! TLS handshake and for request headers (slowloris), then HTTP/1.1 with upgrades served by
//! hyper, drained gracefully on shutdown.

use super::tls::ReloadingAcceptor;
use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A connection's place under the connection limit. Requests carry it, so that a WebSocket
/// session, which outlives the HTTP connection it was upgraded from, keeps it until it ends.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once on one listener.
    pub max_connections: usize,
    /// New connections per second from one source address.
    pub connections_per_second: u32,
    /// TLS handshake and request headers must arrive within this.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16_384,
            connections_per_second: 1_000,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Counts new connections per source address in one-second windows.
#[derive(Default)]
struct RateLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    fn allow(&self, ip: IpAddr, per_second: u32) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= per_second
    }
}

/// Seconds a refused client is told to wait.
const RETRY_AFTER_SECONDS: u64 = 5;

async fn refuse(mut stream: TcpStream, status: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Serves `app` on `listener` until `shutdown`; connections are tracked by `connections`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ReloadingAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let rate = Arc::new(RateLimiter::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        if !rate.allow(peer.ip(), limits.connections_per_second) {
            tracing::warn!(%peer, "connection rate over the limit: 429");
            connections.spawn(refuse(stream, "429 Too Many Requests"));
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached: 503");
            connections.spawn(refuse(stream, "503 Service Unavailable"));
            continue;
        };
        let (app, tls, shutdown, header_timeout) = (
            app.clone(),
            tls.clone(),
            shutdown.clone(),
            limits.header_timeout,
        );
        connections.spawn(async move {
            let slot = ConnectionSlot(Arc::new(permit));
            match tls {
                None => serve_connection(stream, peer, slot, app, header_timeout, shutdown).await,
                Some(tls) => {
                    match tokio::time::timeout(header_timeout, tls.acceptor().accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, slot, app, header_timeout, shutdown)
                                .await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    slot: ConnectionSlot,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(slot.clone());
        request
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}
