//! The audit trail: every revision applied or rejected, every config sent, every status an
//! agent reports and every admin action, as structured log lines (target `audit`) and as a
//! bounded in-memory list that `GET /api/events` serves newest first.

use crate::store::StoredEvent;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Events kept in memory; older ones are dropped (they stay in the logs).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Bytes (of their JSON form) the events kept in memory may take together.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditKind {
    RevisionApplied {
        revision: String,
        source: String,
        from_cache: bool,
    },
    RevisionRejected {
        revision: String,
        errors: usize,
        first_error: String,
    },
    ConfigSent {
        agent: String,
        hash: String,
        revision: String,
    },
    StatusReported {
        agent: String,
        hash: String,
        status: String,
        error: Option<String>,
    },
    /// An operator asked for a sync now (`POST /api/refresh`).
    Refresh { token: String },
    /// An operator pushed an agent's desired config again.
    Push { agent: String, token: String },
    /// An operator asked an agent to restart.
    Restart { agent: String, token: String },
    /// An operator forgot a disconnected agent (`DELETE /api/agents/{uid}`).
    AgentForgotten { agent: String, token: String },
    /// An operator paused a staged rollout (`POST /api/rollout/pause`).
    RolloutPaused { scope: String, token: String },
    /// An operator resumed one, forgiving the failures counted so far.
    RolloutResumed { scope: String, token: String },
    /// An operator admitted the next wave now.
    RolloutPromoted { scope: String, token: String },
    /// A second agent claimed a live agent's uid with other identifying attributes and was
    /// told to take `new_uid`.
    DuplicateUid {
        agent: String,
        new_uid: String,
        transport: String,
    },
}

/// The kinds of events, as `GET /api/events?kind=` names them.
pub const KINDS: [&str; 12] = [
    "revision_applied",
    "revision_rejected",
    "config_sent",
    "status_reported",
    "refresh",
    "push",
    "restart",
    "agent_forgotten",
    "rollout_paused",
    "rollout_resumed",
    "rollout_promoted",
    "duplicate_uid",
];

impl AuditKind {
    fn agent(&self) -> Option<&str> {
        match self {
            AuditKind::ConfigSent { agent, .. }
            | AuditKind::StatusReported { agent, .. }
            | AuditKind::Push { agent, .. }
            | AuditKind::Restart { agent, .. }
            | AuditKind::AgentForgotten { agent, .. }
            | AuditKind::DuplicateUid { agent, .. } => Some(agent),
            _ => None,
        }
    }

    /// The event's kind, as it is serialized.
    pub fn name(&self) -> &'static str {
        match self {
            AuditKind::RevisionApplied { .. } => "revision_applied",
            AuditKind::RevisionRejected { .. } => "revision_rejected",
            AuditKind::ConfigSent { .. } => "config_sent",
            AuditKind::StatusReported { .. } => "status_reported",
            AuditKind::Refresh { .. } => "refresh",
            AuditKind::Push { .. } => "push",
            AuditKind::Restart { .. } => "restart",
            AuditKind::AgentForgotten { .. } => "agent_forgotten",
            AuditKind::RolloutPaused { .. } => "rollout_paused",
            AuditKind::RolloutResumed { .. } => "rollout_resumed",
            AuditKind::RolloutPromoted { .. } => "rollout_promoted",
            AuditKind::DuplicateUid { .. } => "duplicate_uid",
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: u64,
    #[serde(serialize_with = "crate::diagnostics::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: SystemTime,
    #[serde(flatten)]
    pub kind: AuditKind,
}

pub struct AuditLog {
    /// Events with the size of their JSON form, oldest first, and the sizes' sum.
    events: Mutex<(VecDeque<(AuditEvent, usize)>, usize)>,
    capacity: usize,
    max_bytes: usize,
    next_id: AtomicU64,
    /// Events the fleet store has not written yet, when there is a store (bounded like the
    /// list: during a long outage the oldest are dropped).
    unsaved: Mutex<Option<VecDeque<AuditEvent>>>,
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog::with_capacity(DEFAULT_CAPACITY)
    }
}

impl AuditLog {
    pub fn with_capacity(capacity: usize) -> AuditLog {
        AuditLog::bounded(capacity, DEFAULT_MAX_BYTES)
    }

    /// At most `capacity` events taking at most `max_bytes` together.
    pub fn bounded(capacity: usize, max_bytes: usize) -> AuditLog {
        AuditLog {
            events: Mutex::default(),
            capacity,
            max_bytes,
            next_id: AtomicU64::new(1),
            unsaved: Mutex::new(None),
        }
    }

    pub fn record(&self, kind: AuditKind) {
        let event = AuditEvent {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at: SystemTime::now(),
            kind,
        };
        let json = serde_json::to_string(&event.kind).unwrap_or_default();
        tracing::info!(target: "audit", event = %json, "audit");
        let size = json.len();
        if let Some(unsaved) = self
            .unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            unsaved.push_back(event.clone());
            while unsaved.len() > self.capacity {
                unsaved.pop_front();
            }
        }
        self.push(event, size);
    }

    fn push(&self, event: AuditEvent, size: usize) {
        let mut guard = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let (events, bytes) = &mut *guard;
        events.push_back((event, size));
        *bytes += size;
        while events.len() > self.capacity || (*bytes > self.max_bytes && events.len() > 1) {
            if let Some((_, dropped)) = events.pop_front() {
                *bytes -= dropped;
            }
        }
    }

    /// Puts events loaded from the fleet store (oldest first) in the list, and keeps every
    /// new event for the store from now on; ids continue after the stored ones.
    pub fn restore(&self, stored: Vec<StoredEvent>) {
        for s in stored {
            let Ok(kind) = serde_json::from_str::<AuditKind>(&s.body) else {
                continue;
            };
            self.next_id.fetch_max(s.id + 1, Ordering::Relaxed);
            let size = s.body.len();
            self.push(
                AuditEvent {
                    id: s.id,
                    at: s.at,
                    kind,
                },
                size,
            );
        }
        self.unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(VecDeque::new);
    }

    /// The events the store has not written yet, oldest first.
    pub fn take_unsaved(&self) -> Vec<AuditEvent> {
        self.unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(|u| u.drain(..).collect())
            .unwrap_or_default()
    }

    /// A write failed: `events` (taken earlier) go back before the newer ones.
    pub fn requeue(&self, events: Vec<AuditEvent>) {
        if let Some(unsaved) = self
            .unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            for event in events.into_iter().rev() {
                unsaved.push_front(event);
            }
            while unsaved.len() > self.capacity {
                unsaved.pop_front();
            }
        }
    }

    /// An event as the store keeps it.
    pub fn stored(event: &AuditEvent) -> StoredEvent {
        StoredEvent {
            id: event.id,
            at: event.at,
            body: serde_json::to_string(&event.kind).unwrap_or_default(),
        }
    }

    /// The most recent events, newest first, optionally only those about one agent.
    pub fn recent(&self, agent: Option<&str>, limit: usize) -> Vec<AuditEvent> {
        let guard = self.events.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .iter()
            .rev()
            .map(|(event, _)| event)
            .filter(|e| agent.is_none_or(|a| e.kind.agent() == Some(a)))
            .take(limit)
            .cloned()
            .collect()
    }

    /// One page of the events, newest first, of one kind and about one agent when asked, with
    /// how many matched in all.
    pub fn page(&self, query: &EventQuery) -> EventPage {
        let guard = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let matching = guard.0.iter().rev().map(|(event, _)| event).filter(|e| {
            query.kind.as_deref().is_none_or(|k| e.kind.name() == k)
                && query
                    .agent
                    .as_deref()
                    .is_none_or(|a| e.kind.agent() == Some(a))
        });
        let mut total = 0;
        let mut events = Vec::new();
        for event in matching {
            if total >= query.offset && events.len() < query.limit {
                events.push(event.clone());
            }
            total += 1;
        }
        EventPage { total, events }
    }
}

/// `GET /api/events?kind=&agent=&limit=&offset=`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub kind: Option<String>,
    pub agent: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub total: usize,
    pub events: Vec<AuditEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(agent: &str) -> AuditKind {
        AuditKind::ConfigSent {
            agent: agent.into(),
            hash: "h".into(),
            revision: "r".into(),
        }
    }

    #[test]
    fn bounded_newest_first_and_filterable() {
        let log = AuditLog::with_capacity(3);
        for agent in ["a", "b", "a", "c"] {
            log.record(sent(agent));
        }
        let all = log.recent(None, 10);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].kind, sent("c"));
        assert_eq!(log.recent(Some("a"), 10).len(), 1);
        assert_eq!(log.recent(None, 1).len(), 1);
    }

    #[test]
    fn bounded_in_bytes_too() {
        let one = serde_json::to_string(&sent("a")).unwrap().len();
        let log = AuditLog::bounded(100, one * 3);
        for _ in 0..10 {
            log.record(sent("a"));
        }
        assert_eq!(log.recent(None, 100).len(), 3);
    }

    #[test]
    fn stored_events_come_back_and_new_ones_continue_their_ids() {
        let first = AuditLog::default();
        first.restore(Vec::new());
        first.record(sent("a"));
        let stored: Vec<StoredEvent> = first.take_unsaved().iter().map(AuditLog::stored).collect();
        assert_eq!(stored.len(), 1);
        let second = AuditLog::default();
        second.restore(stored);
        second.record(sent("b"));
        let all = second.recent(None, 10);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, 2);
        assert_eq!(all[1].kind, sent("a"));
        let unsaved = second.take_unsaved();
        assert_eq!(unsaved.len(), 1);
        second.requeue(unsaved);
        assert_eq!(second.take_unsaved().len(), 1);
    }
}
