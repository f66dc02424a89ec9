//! The floor of the scale benchmarks (`scripts/bench.sh`): the least an OpAMP server can do
//! per agent with tokio-tungstenite. It answers every WebSocket binary message (and every
//! plain-HTTP POST) with one fixed `ServerToAgent`, keeps no state per agent, and on
//! `POST /push` sends one `RemoteConfig` of a realistic size to every connection. Buffers are
//! the server's (`src/opamp/ws.rs`): 4 KiB for reading and writing.
//!
//! ```text
//! cargo bench --bench floor -- --listen 127.0.0.1:4330 [--config-bytes 4096]
//! ```
//!
//! Endpoints on the one listener: `/v1/opamp` (WebSocket or plain HTTP), `POST /push` (answers
//! 202 with the number of connections), `GET /stats`. It prints `{"event":"listening",...}` on
//! stdout once it listens and stops on SIGTERM or SIGINT.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opamp_gitops::opamp::proto::{
    AgentConfigFile, AgentConfigMap, AgentRemoteConfig, ServerToAgent,
};
use prost::Message as _;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BUFFER_BYTES: usize = 4 * 1024;
const MAX_MESSAGE_BYTES: usize = 4 << 20;
const SERVER_CAPS: u64 = 0x7;

struct Floor {
    /// The fixed reply, with and without the WebSocket header.
    ws_reply: Bytes,
    http_reply: Bytes,
    pushes: broadcast::Sender<Bytes>,
    config_bytes: usize,
    generation: Mutex<u64>,
    connections: AtomicU64,
    pushed: AtomicU64,
}

type Body = Full<Bytes>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_write_buffer_size(MAX_MESSAGE_BYTES + 2 * BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// A Collector config of about `size` bytes that differs per generation.
fn config(generation: u64, size: usize) -> AgentRemoteConfig {
    let mut body = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n\
         processors:\n  batch:\n    timeout: 10s\n  resource:\n    attributes:\n\
         \x20     - key: deployment.generation\n        value: \"{generation}\"\n        action: upsert\n"
    );
    let mut i = 0;
    while body.len() + 200 < size {
        body.push_str(&format!(
            "      - key: bench.attribute.{i:04}\n        value: value-{i:04}\n        action: insert\n"
        ));
        i += 1;
    }
    body.push_str(
        "exporters:\n  otlp:\n    endpoint: tempo-distributor.monitoring.svc:4317\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [resource, batch]\n      exporters: [otlp]\n",
    );
    let hash = Sha256::digest(body.as_bytes()).to_vec();
    AgentRemoteConfig {
        config: Some(AgentConfigMap {
            config_map: [(
                "collector.yaml".to_owned(),
                AgentConfigFile {
                    body: Bytes::from(body),
                    content_type: "text/yaml".into(),
                },
            )]
            .into(),
        }),
        config_hash: hash.into(),
    }
}

fn ws_frame(message: &ServerToAgent) -> Bytes {
    let mut frame = vec![0u8];
    message.encode(&mut frame).expect("a Vec grows as needed");
    frame.into()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn session(floor: Arc<Floor>, mut ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) {
    let mut pushes = floor.pushes.subscribe();
    floor.connections.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Binary(_))) => {
                    if ws.send(Message::Binary(floor.ws_reply.clone())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            push = pushes.recv() => match push {
                Ok(frame) => {
                    if ws.send(Message::Binary(frame)).await.is_err() {
                        break;
                    }
                    floor.pushed.fetch_add(1, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    floor.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn handle(floor: Arc<Floor>, mut request: Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (_, "/v1/opamp") if request.headers().contains_key(UPGRADE) => {
            let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY) else {
                return text(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
            };
            let accept = derive_accept_key(key.as_bytes());
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(ws_config()),
                    )
                    .await;
                    session(floor, ws).await;
                }
            });
            let mut response = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
            let headers = response.headers_mut();
            headers.insert(UPGRADE, "websocket".parse().expect("valid"));
            headers.insert(CONNECTION, "Upgrade".parse().expect("valid"));
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept.parse().expect("valid"));
            response
        }
        (&Method::POST, "/v1/opamp") => {
            let body = Limited::new(request.into_body(), MAX_MESSAGE_BYTES);
            if body.collect().await.is_err() {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "too large");
            }
            let mut response = text(StatusCode::OK, floor.http_reply.clone());
            response.headers_mut().insert(
                CONTENT_TYPE,
                "application/x-protobuf".parse().expect("valid"),
            );
            response
        }
        (&Method::POST, "/push") => {
            let generation = {
                let mut g = floor.generation.lock().unwrap_or_else(|e| e.into_inner());
                *g += 1;
                *g
            };
            let frame = ws_frame(&ServerToAgent {
                capabilities: SERVER_CAPS,
                remote_config: Some(config(generation, floor.config_bytes)),
                ..ServerToAgent::default()
            });
            let receivers = floor.pushes.send(frame).unwrap_or(0);
            text(
                StatusCode::ACCEPTED,
                format!("{{\"accepted\":true,\"generation\":{generation},\"connections\":{receivers}}}\n"),
            )
        }
        (&Method::GET, "/stats") => text(
            StatusCode::OK,
            format!(
                "{{\"ws_connections\":{},\"pushes\":{}}}\n",
                floor.connections.load(Ordering::Relaxed),
                floor.pushed.load(Ordering::Relaxed)
            ),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn accept(listener: tokio::net::TcpListener, floor: Arc<Floor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, most likely: let some close.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let floor = floor.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(floor, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("floor: {problem}\nusage: floor --listen 127.0.0.1:PORT [--config-bytes N]");
    std::process::exit(2)
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:4330".parse().expect("valid");
    let mut config_bytes = 4096;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| usage("--listen needs an address"))
            }
            "--config-bytes" => {
                config_bytes = args
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| usage("--config-bytes needs a number"))
            }
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if !listen.ip().is_loopback() {
        usage("--listen must be a loopback address");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| usage(&format!("cannot listen on {listen}: {e}")));
        println!(
            "{{\"event\":\"listening\",\"addr\":\"{}\"}}",
            listener.local_addr().expect("bound")
        );
        let ack = ServerToAgent {
            capabilities: SERVER_CAPS,
            ..ServerToAgent::default()
        };
        let floor = Arc::new(Floor {
            ws_reply: ws_frame(&ack),
            http_reply: ack.encode_to_vec().into(),
            pushes: broadcast::channel(4).0,
            config_bytes,
            generation: Mutex::new(0),
            connections: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
        });
        // The accept loop runs on the worker threads, as the server's does, not on the thread
        // that waits for the signal.
        tokio::spawn(accept(listener, floor));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    // Exiting drops every connection at once, as a crash or a restart would.
    std::process::exit(0);
}
