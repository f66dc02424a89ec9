//! The status an agent shows in the API and dashboard, derived from what it reported and what
//! the current revision wants for it. Nothing here is stored: it is computed when asked.

use crate::opamp::agent_caps;
use crate::opamp::proto::RemoteConfigStatuses;
use crate::opamp::session::AgentState;
use crate::repo::Desired;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The reported hash is the desired one and the agent says it applied it.
    Applied,
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
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Applied,
        Status::Applying,
        Status::Failed,
        Status::Pending,
        Status::Sent,
        Status::RenderError,
        Status::Unmanaged,
        Status::Unsupported,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::Applying => "applying",
            Status::Failed => "failed",
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::RenderError => "render_error",
            Status::Unmanaged => "unmanaged",
            Status::Unsupported => "unsupported",
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

pub fn status(state: &AgentState, desired: &Desired) -> Status {
    let config = match desired {
        Desired::Unmanaged => return Status::Unmanaged,
        _ if !state.has(agent_caps::ACCEPTS_REMOTE_CONFIG) => return Status::Unsupported,
        Desired::Invalid { .. } => return Status::RenderError,
        Desired::Config(config) => config,
    };
    if !state.has(agent_caps::REPORTS_REMOTE_CONFIG) {
        return if state.delivered == Some(config.hash) {
            Status::Sent
        } else {
            Status::Pending
        };
    }
    if state.reported_hash() == Some(&config.hash[..]) {
        return match state.reported_status() {
            Some(RemoteConfigStatuses::Applying) => Status::Applying,
            Some(RemoteConfigStatuses::Failed) => Status::Failed,
            _ => Status::Applied,
        };
    }
    if state.failed_hash == Some(config.hash) {
        return Status::Failed;
    }
    Status::Pending
}
