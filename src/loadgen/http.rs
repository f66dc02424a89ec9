//! The plain-HTTP transport: one task per agent that polls, one new connection per request
//! (`Connection: close`, as a fleet of pollers behind the open-files limit must), and sends
//! its news (status reports, a requested full state) at once after a reply. Also the one POST
//! helper the refresh trigger uses.

use super::agent::{AgentModel, ServerError};
use super::context::{inc, Shared};
use super::net::{connect_from, Backoff};
use super::options::Endpoint;
use super::view::EventKind;
use crate::opamp::proto::{AgentToServer, ServerToAgent};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RESPONSE_BYTES: usize = 16 << 20;
const PROTOBUF: &str = "application/x-protobuf";

pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// One POST on a connection of its own from `source`.
pub async fn post(
    source: Ipv4Addr,
    endpoint: &Endpoint,
    headers: &[(HeaderName, String)],
    body: Bytes,
) -> Result<Response, String> {
    let exchange = async {
        let stream = connect_from(source, endpoint.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let mut request = hyper::Request::post(endpoint.path.as_str())
            .header(HOST, endpoint.authority.as_str())
            .header(CONNECTION, "close")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request.headers_mut().insert(name.clone(), value);
        }
        let response = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>(Response {
                status,
                retry_after,
                body,
            })
        };
        // Drive the connection until the answer is in; then it is dropped (closed).
        tokio::pin!(response, connection);
        let mut connection_done = false;
        loop {
            tokio::select! {
                result = &mut response => break result,
                _ = &mut connection, if !connection_done => connection_done = true,
            }
        }
    };
    timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "request timed out".to_owned())?
}

/// One agent and where it polls from and to.
pub struct Slot {
    pub index: u32,
    pub model: AgentModel,
    pub source: Ipv4Addr,
    pub endpoint: Endpoint,
}

/// A message waiting to go, and the hash it reports APPLIED (announced once it is delivered).
struct Outgoing {
    message: AgentToServer,
    applies: Option<Bytes>,
}

pub async fn run(mut slot: Slot, shared: Arc<Shared>) {
    let headers = vec![
        (CONTENT_TYPE, PROTOBUF.to_owned()),
        (
            HeaderName::from_static("opamp-instance-uid"),
            slot.model.uid_string(),
        ),
    ];
    let poll_interval = shared.options.poll_interval;
    let mut backoff = Backoff::default();
    let mut queue = VecDeque::from([Outgoing {
        message: slot.model.full_state(),
        applies: None,
    }]);
    let mut connected = false;
    // The first idle wait is drawn from the whole interval, so a fleet started at once polls
    // evenly spread afterwards.
    let mut spread = true;
    while !shared.stop.is_cancelled() {
        let outgoing = queue.pop_front().unwrap_or_else(|| {
            // A poll with nothing to say is the plain-HTTP heartbeat.
            inc(&shared.counters.heartbeats_sent);
            Outgoing {
                message: slot.model.heartbeat(),
                applies: None,
            }
        });
        let body = Bytes::from(outgoing.message.encode_to_vec());
        let result = {
            let Ok(_permit) = shared.request_slots.acquire().await else {
                return;
            };
            let started = Instant::now();
            let result = post(slot.source, &slot.endpoint, &headers, body).await;
            (result, started.elapsed())
        };
        let answered = match result {
            (Ok(response), latency) if response.status == 200 => {
                shared.event(slot.index, EventKind::Latency(latency)).await;
                ServerToAgent::decode(response.body).ok()
            }
            (Ok(response), _) => {
                inc(&shared.counters.request_failures);
                queue.push_front(outgoing);
                if connected {
                    connected = false;
                    shared.event(slot.index, EventKind::Disconnected).await;
                }
                let wait = backoff
                    .next_delay()
                    .max(response.retry_after.unwrap_or_default());
                if stopped(&shared, wait).await {
                    break;
                }
                continue;
            }
            (Err(_), _) => None,
        };
        let Some(reply) = answered else {
            inc(&shared.counters.request_failures);
            queue.push_front(outgoing);
            if connected {
                connected = false;
                shared.event(slot.index, EventKind::Disconnected).await;
            }
            if stopped(&shared, backoff.next_delay()).await {
                break;
            }
            continue;
        };
        inc(&shared.counters.messages_sent);
        inc(&shared.counters.messages_received);
        if let Some(hash) = outgoing.applies {
            shared.event(slot.index, EventKind::Applied(hash)).await;
        }
        if !connected {
            connected = true;
            backoff.reset();
            shared.event(slot.index, EventKind::Connected).await;
        }
        let answer = slot.model.answer(reply);
        let mut wait = match answer.error {
            Some(ServerError::Unavailable(after)) => {
                Some(backoff.next_delay().max(after.unwrap_or_default()))
            }
            Some(ServerError::Other(_)) => {
                inc(&shared.counters.server_errors);
                None
            }
            None => None,
        };
        if answer.config_received {
            shared.event(slot.index, EventKind::ConfigReceived).await;
        }
        if answer.full_state_requested {
            shared
                .event(slot.index, EventKind::FullStateRequested)
                .await;
        }
        let last = answer.messages.len().saturating_sub(1);
        for (i, message) in answer.messages.into_iter().enumerate() {
            let applies = if i == last {
                answer.applied.clone()
            } else {
                None
            };
            queue.push_back(Outgoing { message, applies });
        }
        if wait.is_none() && queue.is_empty() {
            wait = Some(if spread {
                spread = false;
                poll_interval.mul_f64(fastrand::f64())
            } else {
                poll_interval
            });
        }
        if let Some(wait) = wait {
            if stopped(&shared, wait).await {
                break;
            }
        }
    }
    if connected {
        // Since opamp-spec#353 an HTTP agent says goodbye; best effort, bounded, and under the
        // same bound on sockets in flight.
        let goodbye = Bytes::from(slot.model.disconnect().encode_to_vec());
        if let Ok(_permit) = shared.request_slots.acquire().await {
            let _ = timeout(
                Duration::from_secs(2),
                post(slot.source, &slot.endpoint, &headers, goodbye),
            )
            .await;
        }
        shared.event(slot.index, EventKind::Disconnected).await;
    }
}

/// Waits `wait`; true when the run stopped meanwhile.
async fn stopped(shared: &Shared, wait: Duration) -> bool {
    tokio::select! {
        _ = sleep(wait) => shared.stop.is_cancelled(),
        _ = shared.stop.cancelled() => true,
    }
}
