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
        action: String,
        agent: Option<String>,
        token: String,
    },
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
    #[serde(serialize_with = "crate::source::rfc3339")]
    pub at: SystemTime,
    #[serde(flatten)]
    pub kind: AuditKind,
}

pub struct AuditLog {
    events: Mutex<VecDeque<AuditEvent>>,
    capacity: usize,
    next_id: AtomicU64,
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog::with_capacity(DEFAULT_CAPACITY)
    }
}

impl AuditLog {
    pub fn with_capacity(capacity: usize) -> AuditLog {
        AuditLog {
            events: Mutex::default(),
            capacity,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn record(&self, kind: AuditKind) {
        let event = AuditEvent {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at: SystemTime::now(),
            kind,
        };
        if let Ok(json) = serde_json::to_string(&event.kind) {
            tracing::info!(target: "audit", event = %json, "audit");
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == self.capacity {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The most recent events, newest first, optionally only those about one agent.
    pub fn recent(&self, agent: Option<&str>, limit: usize) -> Vec<AuditEvent> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events
            .iter()
            .rev()
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
}
