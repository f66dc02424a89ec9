//! Accepting connections, bounded: at most so many at once (beyond: 503 with Retry-After), a
//! reserve beyond that for probes (the admin listener), at most so many new ones per second from
//! one source address (beyond: 429), a deadline for the TLS handshake and one for every request
//! head counted from accept or from the previous answer (silent clients and slowloris), then
//! HTTP/1.1 with upgrades served by hyper, drained gracefully on shutdown.

use super::head_deadline::HeadDeadline;
use super::tls::ReloadingAcceptor;
use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
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

/// Marks a request that arrived on a connection of the probe reserve: only probes are served.
#[derive(Debug, Clone, Copy)]
pub struct ReserveSlot;

/// Paths a connection of the probe reserve may ask for.
pub const PROBE_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct Limits {
    /// Connections open at once, per listener; beyond it new ones get 503 with Retry-After.
    #[arg(long, env = "OPAMP_GITOPS_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// Connections beyond `max_connections` kept for probes (`PROBE_PATHS`); 0 for none. Set
    /// by the server for its admin listener.
    #[arg(skip)]
    pub probe_reserve: usize,
    /// New connections per second from one source address; beyond it: 429 with Retry-After.
    #[arg(
        long,
        env = "OPAMP_GITOPS_CONNECTIONS_PER_SECOND",
        default_value_t = 1_000
    )]
    pub connections_per_second: u32,
    /// The TLS handshake, then a complete request head, must arrive within this of accept (and
    /// of the previous answer on a kept-alive connection).
    #[arg(long, env = "OPAMP_GITOPS_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::options::parse_duration)]
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        crate::options::defaults()
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
    let reserve = Arc::new(Semaphore::new(limits.probe_reserve));
    let rate = Arc::new(RateLimiter::default());
    loop {
        let (stream, peer, accepted_at) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, tokio::time::Instant::now()),
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
        let (permit, reserved) = match permits.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) => {
                    tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached: 503");
                    connections.spawn(refuse(stream, "503 Service Unavailable"));
                    continue;
                }
            },
        };
        let (app, tls, shutdown, header_timeout) = (
            app.clone(),
            tls.clone(),
            shutdown.clone(),
            limits.header_timeout,
        );
        connections.spawn(async move {
            let slot = ConnectionSlot(Arc::new(permit));
            let accepted = Accepted {
                peer,
                at: accepted_at,
                slot,
                reserved,
                header_timeout,
            };
            match tls {
                None => serve_connection(stream, accepted, app, shutdown).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout_at(accepted_at + header_timeout, handshake).await {
                        Ok(Ok(stream)) => serve_connection(stream, accepted, app, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// What the accept loop knows of a connection it hands on.
struct Accepted {
    peer: SocketAddr,
    at: tokio::time::Instant,
    slot: ConnectionSlot,
    /// Taken from the probe reserve: only probes are answered.
    reserved: bool,
    header_timeout: Duration,
}

async fn serve_connection<S>(
    stream: S,
    accepted: Accepted,
    app: Router,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        peer,
        at,
        slot,
        reserved,
        header_timeout,
    } = accepted;
    let (stream, progress) = HeadDeadline::new(stream, header_timeout, at);
    let answered = progress.clone();
    let service = app
        .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
            progress.request_started();
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            if reserved {
                request.extensions_mut().insert(ReserveSlot);
            }
            request
        })
        .map_response(move |response: axum::response::Response| {
            answered.request_answered(response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS);
            response
        });
    let service = hyper_util::service::TowerToHyperService::new(service);
    // HTTP/1.1 only: agents and browsers speak it, and a half-sent HTTP/2 preface is then a
    // malformed request instead of a connection waiting for the rest.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
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
