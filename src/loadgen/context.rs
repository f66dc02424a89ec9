//! What every agent task of one process shares: the run's options, the channel its events go
//! to, counters too frequent to send as events, the stop signal, and the bounds on connection
//! attempts and HTTP requests in flight (which also bound the open files HTTP pollers use).

use super::options::Options;
use super::view::{Event, EventKind};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// WebSocket handshakes in flight at once, per process.
pub const CONNECTS_IN_FLIGHT: usize = 256;
/// Plain-HTTP requests in flight at once, per process: each holds one socket.
pub const REQUESTS_IN_FLIGHT: usize = 512;

pub struct Shared {
    pub options: Options,
    pub events: mpsc::Sender<Event>,
    pub counters: Counters,
    pub stop: CancellationToken,
    pub connect_slots: Semaphore,
    pub request_slots: Semaphore,
}

impl Shared {
    pub fn new(options: Options, events: mpsc::Sender<Event>) -> Shared {
        Shared {
            options,
            events,
            counters: Counters::default(),
            stop: CancellationToken::new(),
            connect_slots: Semaphore::new(CONNECTS_IN_FLIGHT),
            request_slots: Semaphore::new(REQUESTS_IN_FLIGHT),
        }
    }

    pub async fn event(&self, agent: u32, kind: EventKind) {
        let event = Event {
            agent,
            at: Instant::now(),
            kind,
        };
        // The controller outlives every agent task; a closed channel only means the run ends.
        let _ = self.events.send(event).await;
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub heartbeats_sent: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Connection attempts that failed (refused, timed out, handshake refused).
    pub connect_failures: AtomicU64,
    /// Plain-HTTP requests that failed or were not answered 200.
    pub request_failures: AtomicU64,
    /// `error_response` replies other than UNAVAILABLE.
    pub server_errors: AtomicU64,
    /// Server messages that could not be decoded.
    pub bad_messages: AtomicU64,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CounterValues {
    pub heartbeats_sent: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub connect_failures: u64,
    pub request_failures: u64,
    pub server_errors: u64,
    pub bad_messages: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterValues {
            heartbeats_sent: get(&self.heartbeats_sent),
            messages_sent: get(&self.messages_sent),
            messages_received: get(&self.messages_received),
            connect_failures: get(&self.connect_failures),
            request_failures: get(&self.request_failures),
            server_errors: get(&self.server_errors),
            bad_messages: get(&self.bad_messages),
        }
    }
}

impl CounterValues {
    pub fn add(&mut self, other: &CounterValues) {
        self.heartbeats_sent += other.heartbeats_sent;
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
        self.connect_failures += other.connect_failures;
        self.request_failures += other.request_failures;
        self.server_errors += other.server_errors;
        self.bad_messages += other.bad_messages;
    }
}
