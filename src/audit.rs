//! The audit trail: every revision applied or rejected, every config sent, every status an
//! agent reports and every admin action, as structured log lines (target `audit`) and as a
//! bounded in-memory list that `GET /api/events` serves newest first.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Events kept in memory; older ones are dropped (they stay in the logs).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Bytes (of their JSON form) the events kept in memory may take together.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    AdminAction {
        action: AdminAction,
        agent: Option<String>,
        token: String,
    },
    /// An operator paused a staged rollout (`POST /api/rollout/pause`).
    RolloutPaused { scope: String, token: String },
    /// An operator resumed one, forgiving the failures counted so far.
    RolloutResumed { scope: String, token: String },
    /// An operator admitted the next wave now.
    RolloutPromoted { scope: String, token: String },
}

/// What an operator did through the admin API.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    Refresh,
    Push,
    Restart,
    /// A disconnected agent forgotten (`DELETE /api/agents/{uid}`).
    Forget,
}

impl AuditKind {
    fn agent(&self) -> Option<&str> {
        match self {
            AuditKind::ConfigSent { agent, .. } | AuditKind::StatusReported { agent, .. } => {
                Some(agent)
            }
            AuditKind::AdminAction { agent, .. } => agent.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub id: u64,
    #[serde(serialize_with = "crate::diagnostics::rfc3339")]
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
}
