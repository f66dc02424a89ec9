//! The WebSocket transport: one task per agent that connects from its source address, keeps
//! its session (first message, heartbeats, answers to every reply and push) and reconnects with
//! jittered backoff when the session drops, until the run stops.

use super::agent::{AgentModel, ServerError};
use super::context::{inc, Shared};
use super::net::{connect_from, Backoff};
use super::options::Endpoint;
use super::view::EventKind;
use crate::opamp::codec;
use crate::opamp::proto::{AgentToServer, ServerToAgent};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Per-connection buffers stay small, as on the server: one process holds thousands.
const BUFFER_BYTES: usize = 4 * 1024;
const MAX_MESSAGE_BYTES: usize = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

type Ws = WebSocketStream<TcpStream>;

/// One agent and where it connects from and to.
pub struct Slot {
    /// The agent's index in this process (its slot in the controller's view).
    pub index: u32,
    pub model: AgentModel,
    pub source: Ipv4Addr,
    pub endpoint: Endpoint,
    /// The server has answered this agent before: a reconnect starts with a compressed
    /// message, as opamp-go's client does, and the server asks for the full state if it needs it.
    pub answered: bool,
}

enum End {
    Stopped,
    Dropped,
    RetryAfter(Option<Duration>),
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_write_buffer_size(MAX_MESSAGE_BYTES + 2 * BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

pub async fn run(mut slot: Slot, shared: Arc<Shared>) {
    let mut backoff = Backoff::default();
    while !shared.stop.is_cancelled() {
        let wait = match connect(&slot, &shared).await {
            Ok(ws) => match session(ws, &mut slot, &shared, &mut backoff).await {
                End::Stopped => return,
                End::Dropped => backoff.next_delay(),
                End::RetryAfter(after) => backoff.next_delay().max(after.unwrap_or_default()),
            },
            Err(_) => {
                inc(&shared.counters.connect_failures);
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = sleep(wait) => {}
            _ = shared.stop.cancelled() => return,
        }
    }
}

async fn connect(slot: &Slot, shared: &Shared) -> Result<Ws, String> {
    let _permit = shared
        .connect_slots
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    let attempt = async {
        let stream = connect_from(slot.source, slot.endpoint.addr)
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("ws://{}{}", slot.endpoint.authority, slot.endpoint.path);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config()))
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    };
    tokio::select! {
        result = timeout(CONNECT_TIMEOUT, attempt) => result.map_err(|_| "connect timed out".to_owned())?,
        _ = shared.stop.cancelled() => Err("stopped".into()),
    }
}

async fn send(ws: &mut Ws, shared: &Shared, message: &AgentToServer) -> bool {
    let mut frame = Vec::with_capacity(1 + message.encoded_len());
    frame.push(0);
    message.encode(&mut frame).expect("a Vec grows as needed");
    let sent = matches!(
        timeout(SEND_TIMEOUT, ws.send(Message::Binary(frame.into()))).await,
        Ok(Ok(()))
    );
    if sent {
        inc(&shared.counters.messages_sent);
    }
    sent
}

fn decode(data: bytes::Bytes) -> Option<ServerToAgent> {
    let header = data.len() - codec::ws_payload(&data).ok()?.len();
    ServerToAgent::decode(data.slice(header..)).ok()
}

async fn session(mut ws: Ws, slot: &mut Slot, shared: &Shared, backoff: &mut Backoff) -> End {
    let first = if slot.answered {
        slot.model.heartbeat()
    } else {
        slot.model.full_state()
    };
    if !send(&mut ws, shared, &first).await {
        return End::Dropped;
    }
    let heartbeat = shared.options.heartbeat;
    let mut next_heartbeat = Instant::now() + heartbeat;
    let mut connected = false;
    let end = loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Binary(data))) => {
                    inc(&shared.counters.messages_received);
                    let Some(message) = decode(data) else {
                        inc(&shared.counters.bad_messages);
                        continue;
                    };
                    if !connected {
                        connected = true;
                        slot.answered = true;
                        backoff.reset();
                        shared.event(slot.index, EventKind::Connected).await;
                    }
                    let answer = slot.model.answer(message);
                    match answer.error {
                        Some(ServerError::Unavailable(after)) => break End::RetryAfter(after),
                        Some(ServerError::Other(_)) => inc(&shared.counters.server_errors),
                        None => {}
                    }
                    if answer.config_received {
                        shared.event(slot.index, EventKind::ConfigReceived).await;
                    }
                    if answer.full_state_requested {
                        shared.event(slot.index, EventKind::FullStateRequested).await;
                    }
                    let mut sent_all = true;
                    for message in &answer.messages {
                        if !send(&mut ws, shared, message).await {
                            sent_all = false;
                            break;
                        }
                    }
                    if !sent_all {
                        break End::Dropped;
                    }
                    if !answer.messages.is_empty() {
                        next_heartbeat = Instant::now() + heartbeat;
                    }
                    if let Some(hash) = answer.applied {
                        shared.event(slot.index, EventKind::Applied(hash)).await;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Dropped,
                // Pings are answered by tungstenite itself; text frames are not OpAMP.
                Some(Ok(_)) => {}
            },
            _ = sleep_until(next_heartbeat) => {
                let beat = slot.model.heartbeat();
                if !send(&mut ws, shared, &beat).await {
                    break End::Dropped;
                }
                inc(&shared.counters.heartbeats_sent);
                next_heartbeat = Instant::now() + heartbeat;
            }
            _ = shared.stop.cancelled() => {
                let goodbye = slot.model.disconnect();
                if send(&mut ws, shared, &goodbye).await {
                    let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                }
                break End::Stopped;
            }
        }
    };
    if connected {
        shared.event(slot.index, EventKind::Disconnected).await;
    }
    end
}
