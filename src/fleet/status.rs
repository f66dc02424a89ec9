//! The status an agent shows in the API and dashboard, derived from what it reported and what
//! the current revision wants for it. Nothing here is stored: it is computed when asked.

use crate::opamp::agent_caps;
use crate::opamp::session::{sync_state, AgentState, SyncState};
use crate::repo::Desired;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The reported hash is the desired one and the agent says it applied it.
    Applied,
    /// The agent reports the desired hash, but its effective config is no longer the desired one.
    Drifted,
    Applying,
    /// The agent reported FAILED for the desired hash.
    Failed,
    /// The desired config was offered and no report came yet, or an HTTP agent has not polled.
    Pending,
    /// Delivered to an agent that does not report remote-config status.
    Sent,
    /// The agent's render failed or did not validate; it keeps what it runs.
    RenderError,
    /// No rule matches the agent.
    Unmanaged,
    /// The agent does not accept remote config.
    Unsupported,
    /// Held back by a staged rollout: its wave is not admitted yet.
    Waiting,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Applied,
        Status::Drifted,
        Status::Applying,
        Status::Failed,
        Status::Pending,
        Status::Sent,
        Status::RenderError,
        Status::Unmanaged,
        Status::Unsupported,
        Status::Waiting,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Drifted => "drifted",
            Status::Applying => "applying",
            Status::Failed => "failed",
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::RenderError => "render_error",
            Status::Unmanaged => "unmanaged",
            Status::Unsupported => "unsupported",
            Status::Waiting => "waiting",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status shown for an agent: what the current revision wants for it, read against the
/// session's sync verdict.
pub fn status(state: &AgentState, desired: &Desired) -> Status {
    let config = match desired {
        Desired::Unmanaged => return Status::Unmanaged,
        _ if !state.has(agent_caps::ACCEPTS_REMOTE_CONFIG) => return Status::Unsupported,
        Desired::Invalid { .. } => return Status::RenderError,
        Desired::Config(config) => config,
    };
    match sync_state(state, &config.hash, None) {
        SyncState::Unsupported => Status::Unsupported,
        SyncState::Applied => Status::Applied,
        SyncState::Applying => Status::Applying,
        SyncState::Failed => Status::Failed,
        SyncState::Sent => Status::Sent,
        SyncState::Offered | SyncState::Due => Status::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::proto::{RemoteConfigStatus, RemoteConfigStatuses};
    use crate::repo::DesiredConfig;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const SUPERVISED: u64 = agent_caps::ACCEPTS_REMOTE_CONFIG | agent_caps::REPORTS_REMOTE_CONFIG;

    fn desired(hash: u8) -> Desired {
        Desired::Config(Arc::new(DesiredConfig {
            rule: "r".into(),
            files: BTreeMap::new(),
            hash: [hash; 32],
        }))
    }

    fn reporting(capabilities: u64, hash: u8, status: RemoteConfigStatuses) -> AgentState {
        AgentState {
            capabilities,
            remote_config_status: Some(RemoteConfigStatus {
                last_remote_config_hash: vec![hash; 32].into(),
                status: status as i32,
                error_message: String::new(),
            }),
            ..AgentState::default()
        }
    }

    #[test]
    fn the_reported_hash_and_status_decide_when_they_match() {
        let d = desired(1);
        use RemoteConfigStatuses::*;
        assert_eq!(
            status(&reporting(SUPERVISED, 1, Applied), &d),
            Status::Applied
        );
        assert_eq!(
            status(&reporting(SUPERVISED, 1, Applying), &d),
            Status::Applying
        );
        assert_eq!(
            status(&reporting(SUPERVISED, 1, Failed), &d),
            Status::Failed
        );
        assert_eq!(
            status(&reporting(SUPERVISED, 2, Applied), &d),
            Status::Pending
        );
    }

    #[test]
    fn a_remembered_failure_stays_failed_until_the_hash_changes() {
        let mut state = reporting(SUPERVISED, 2, RemoteConfigStatuses::Applied);
        state.failed_hash = Some([1; 32]);
        assert_eq!(status(&state, &desired(1)), Status::Failed);
        assert_eq!(status(&state, &desired(3)), Status::Pending);
    }

    #[test]
    fn agents_without_status_reports_are_sent_once_delivered() {
        let mut state = AgentState {
            capabilities: agent_caps::ACCEPTS_REMOTE_CONFIG,
            ..AgentState::default()
        };
        assert_eq!(status(&state, &desired(1)), Status::Pending);
        state.delivered = Some([1; 32]);
        assert_eq!(status(&state, &desired(1)), Status::Sent);
    }

    #[test]
    fn unmanaged_unsupported_and_render_errors_come_first() {
        let state = AgentState::default();
        assert_eq!(status(&state, &Desired::Unmanaged), Status::Unmanaged);
        assert_eq!(status(&state, &desired(1)), Status::Unsupported);
        let invalid = Desired::Invalid {
            rule: "r".into(),
            diagnostics: Arc::new(Vec::new()),
        };
        assert_eq!(
            status(
                &reporting(SUPERVISED, 1, RemoteConfigStatuses::Applied),
                &invalid
            ),
            Status::RenderError
        );
    }

    #[test]
    fn an_offer_is_made_once_per_connection_and_is_pending_meanwhile() {
        let mut state = reporting(SUPERVISED, 2, RemoteConfigStatuses::Applied);
        let hash = [1; 32];
        assert_eq!(sync_state(&state, &hash, Some(7)), SyncState::Due);
        state.offered = Some((hash, 7));
        assert_eq!(sync_state(&state, &hash, Some(7)), SyncState::Offered);
        assert_eq!(sync_state(&state, &hash, Some(8)), SyncState::Due);
        assert_eq!(sync_state(&state, &hash, None), SyncState::Offered);
        assert_eq!(status(&state, &desired(1)), Status::Pending);
    }
}
