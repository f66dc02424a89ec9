//! The audit trail as `/api/events` shows it: this replica's own log, and with a shared store
//! the other replicas' recent events (read with their agents every flush), newest first.

use super::Fleet;
use crate::audit::{AuditEvent, AuditLog, EventPage, EventQuery};

impl Fleet {
    /// One page of every replica's events, of one kind and about one agent when asked.
    pub fn event_page(&self, audit: &AuditLog, query: &EventQuery) -> EventPage {
        let remote = self.remote_events();
        if remote.is_empty() {
            return audit.page(query);
        }
        // Enough of this replica's events to fill the page wherever the others' fall.
        let own = audit.page(&EventQuery {
            offset: 0,
            limit: query.offset.saturating_add(query.limit),
            ..query.clone()
        });
        let theirs: Vec<&AuditEvent> = remote.iter().rev().filter(|e| matches(e, query)).collect();
        let mut merged: Vec<&AuditEvent> =
            own.events.iter().chain(theirs.iter().copied()).collect();
        merged.sort_by_key(|e| std::cmp::Reverse(e.at));
        EventPage {
            total: own.total + theirs.len(),
            events: merged
                .into_iter()
                .skip(query.offset)
                .take(query.limit)
                .cloned()
                .collect(),
        }
    }
}

/// Whether an event is of the kind and about the agent asked for.
fn matches(event: &AuditEvent, query: &EventQuery) -> bool {
    let about = || {
        serde_json::to_value(&event.kind)
            .ok()
            .and_then(|v| v.get("agent").and_then(|a| a.as_str()).map(str::to_owned))
    };
    query.kind.as_deref().is_none_or(|k| event.kind.name() == k)
        && query
            .agent
            .as_deref()
            .is_none_or(|a| about().as_deref() == Some(a))
}
