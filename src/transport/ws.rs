//! The WebSocket transport: one task per connection that answers every message, pushes the
//! desired config when a new revision arrives, and carries the registry's commands (an
//! operator's push, a restart, "another session replaced you").

use super::OpampState;
use crate::fleet::record::{SessionCommand, Transport};
use crate::fleet::{Connection, Handled};
use crate::metrics::Metrics;
use crate::net::listener::ConnectionSlot;
use crate::opamp::codec::{self, Reply};
use crate::opamp::proto::ServerErrorResponseType;
use crate::opamp::session::{self, ConnectionId};
use crate::opamp::uid::InstanceUid;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::Instrument;

/// Per-connection buffers stay small: thousands of idle agents each hold one session.
const BUFFER_BYTES: usize = 4 * 1024;

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_NORMAL: u16 = 1000;

/// A reader that does not take a message within this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server-initiated close waits for the client's Close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub fn upgrade(
    state: OpampState,
    upgrade: WebSocketUpgrade,
    token_name: Option<String>,
    slot: Option<ConnectionSlot>,
) -> Response {
    let limit = state.max_message_bytes;
    upgrade
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        // A slow reader cannot make the server buffer more than about one message.
        .max_write_buffer_size(limit + 2 * BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let sessions = state.sessions.clone();
            // A span per session; it names the agent once its first message arrives.
            let span = tracing::info_span!(
                "session",
                agent = tracing::field::Empty,
                token = token_name.as_deref()
            );
            sessions.track_future(
                async move {
                    // The session holds its place under the connection limit until it ends.
                    let _slot = slot;
                    run(state, socket, token_name).await
                }
                .instrument(span),
            )
        })
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn run(state: OpampState, socket: WebSocket, token_name: Option<String>) {
    let fleet = state.fleet.clone();
    let connection_id: ConnectionId = fleet.new_connection_id();
    let (commands_tx, mut commands) = mpsc::channel(16);
    let connection = Connection {
        id: connection_id,
        transport: Transport::Ws,
        token_name,
        commands: Some(commands_tx),
    };
    let mut revisions = fleet.subscribe();
    revisions.mark_unchanged();
    let (mut sink, mut stream) = socket.split();
    let mut named = false;
    let mut last_heard = Instant::now();
    // Set when the server ends the session: the close code and reason it sends.
    let mut ending: Option<(u16, &str)> = None;
    let mut ticks = tokio::time::interval(state.ping_interval.min(state.idle_timeout));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.reset();

    loop {
        // Everything to send in answer to one event; the session ends when a send fails.
        let mut outgoing: Vec<Reply> = Vec::new();
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    None => break,
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        if is_over_capacity(e) {
                            tracing::warn!(connection = connection_id, "message over the size limit: closing with 1009");
                            ending = Some((CLOSE_TOO_BIG, "message too big"));
                        }
                        break;
                    }
                };
                last_heard = Instant::now();
                match frame {
                    Message::Binary(data) => {
                        state.metrics.message_in(data.len());
                        // The message is held under the budget until it is handled.
                        match state.budget.try_reserve(data.len()) {
                            Some(_held) => outgoing.extend(on_binary(&state, &connection, &mut named, &data)),
                            None => outgoing.push(busy(&state, &fleet.connection_agents(connection_id))),
                        }
                    }
                    Message::Text(_) => outgoing.push(malformed(&fleet.connection_agents(connection_id), "text frames are not OpAMP messages: send binary frames")),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            changed = revisions.changed() => {
                if changed.is_err() {
                    ending = Some((CLOSE_GOING_AWAY, "server shutting down"));
                    break;
                }
                outgoing.extend(fleet.connection_agents(connection_id).iter().filter_map(|uid| fleet.push(uid, connection_id)));
            }
            command = commands.recv() => match command {
                Some(SessionCommand::Send(reply)) => outgoing.push(*reply),
                Some(SessionCommand::Replaced) => {
                    ending = Some((CLOSE_NORMAL, "replaced by a newer session of this agent"));
                    break;
                }
                None => break,
            },
            _ = ticks.tick() => {
                if last_heard.elapsed() >= state.idle_timeout {
                    tracing::info!(connection = connection_id, "closing a session silent for {:?}", state.idle_timeout);
                    ending = Some((CLOSE_NORMAL, "idle"));
                    break;
                }
                if last_heard.elapsed() >= state.ping_interval
                    && timeout(SEND_TIMEOUT, sink.send(Message::Ping(Bytes::new()))).await.map_or(true, |r| r.is_err())
                {
                    break;
                }
            }
            _ = state.shutdown.cancelled() => {
                ending = Some((CLOSE_GOING_AWAY, "server shutting down"));
                break;
            }
        }
        let mut gone = false;
        for reply in &outgoing {
            if !send_reply(&mut sink, &state.metrics, reply).await {
                gone = true;
                break;
            }
        }
        if gone {
            break;
        }
    }
    fleet.connection_closed(connection_id);
    if let Some((code, reason)) = ending {
        let _ = timeout(SEND_TIMEOUT, sink.send(close(code, reason))).await;
        // Let the client answer the Close before the socket goes, so it reads our close code
        // instead of a reset.
        let _ = timeout(CLOSE_WAIT, async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Whether a read failed because a message or frame is over the size limit.
fn is_over_capacity(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    error
        .into_inner()
        .downcast::<Error>()
        .is_ok_and(|e| matches!(*e, Error::Capacity(_)))
}

/// Sends one reply; `false` when the connection is gone.
async fn send_reply<S>(sink: &mut S, metrics: &Metrics, reply: &Reply) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    let bytes = reply.encode_ws();
    metrics.message_out(bytes.len());
    matches!(
        timeout(SEND_TIMEOUT, sink.send(Message::Binary(bytes.into()))).await,
        Ok(Ok(()))
    )
}

fn on_binary(
    state: &OpampState,
    connection: &Connection,
    named: &mut bool,
    data: &Bytes,
) -> Option<Reply> {
    let message = match codec::ws_payload(data).and_then(codec::decode_agent_message) {
        Ok(m) => m,
        Err(e) => {
            let agents = state.fleet.connection_agents(connection.id);
            return Some(malformed(&agents, &e.to_string()));
        }
    };
    match state.fleet.handle(message, connection) {
        Handled::Reply { uid, reply } => {
            if !*named {
                *named = true;
                tracing::Span::current().record("agent", tracing::field::display(uid));
            }
            Some(reply)
        }
        Handled::Rejected(reply) | Handled::Unavailable { reply, .. } => Some(reply),
    }
}

/// An `UNAVAILABLE` for a message that does not fit in the in-flight budget: the agent
/// reconnects after the retry interval and sends it again.
fn busy(state: &OpampState, agents: &[InstanceUid]) -> Reply {
    state.metrics.inflight_refused.inc();
    session::error_reply(
        reply_uid(agents),
        ServerErrorResponseType::Unavailable,
        format!(
            "the server is receiving its maximum of {} message bytes at once: retry later",
            state.budget.limit()
        ),
        Some(super::http::BUSY_RETRY),
    )
}

/// The uid an error reply carries: the connection's agent when there is exactly one.
fn reply_uid(agents: &[InstanceUid]) -> Bytes {
    match agents {
        [one] => Bytes::copy_from_slice(one.as_bytes()),
        _ => Bytes::new(),
    }
}

/// A `BAD_REQUEST` for a message that could not be read; it names the connection's agent when
/// there is exactly one.
fn malformed(agents: &[InstanceUid], why: &str) -> Reply {
    session::error_reply(
        reply_uid(agents),
        ServerErrorResponseType::BadRequest,
        why,
        None,
    )
}
