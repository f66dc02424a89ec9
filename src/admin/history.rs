//! What agents ran over time: `GET /api/agents/{uid}/history` (the configs one agent applied,
//! newest first, with the revision that rendered each) and `GET /api/revisions/{id}/agents`
//! (who runs a config rendered by a given revision now).

use super::error::ApiError;
use super::AdminState;
use crate::fleet::history;
use crate::opamp::uid::InstanceUid;
use crate::store::HistoryEntry;
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The configs one agent ran, newest first.
#[derive(Serialize, ToSchema)]
pub struct AgentHistory {
    pub instance_uid: String,
    pub history: Vec<HistoryEntry>,
}

/// The agents that run a config rendered by one revision.
#[derive(Serialize, ToSchema)]
pub struct RevisionAgents {
    /// The revision as asked for (a full id or a prefix of at least 7 characters).
    pub revision: String,
    pub total: usize,
    pub agents: Vec<RevisionAgent>,
}

#[derive(Serialize, ToSchema)]
pub struct RevisionAgent {
    pub instance_uid: String,
    /// The full id of the revision.
    pub revision: Option<String>,
    pub config_hash: String,
    #[schema(format = DateTime)]
    pub applied_at: String,
    pub connected: bool,
}

/// The history of one agent, newest first.
pub fn agent_history(state: &AdminState, uid: &str) -> Result<Vec<HistoryEntry>, ApiError> {
    let parsed: InstanceUid = uid
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{uid}` is not an instance uid (UUID)")))?;
    let record = state
        .fleet
        .visible_record(&parsed)
        .ok_or_else(|| ApiError::not_found(format!("no agent {parsed}")))?;
    let rec = record.lock().unwrap_or_else(|e| e.into_inner());
    Ok(rec.history.iter().rev().cloned().collect())
}

/// `GET /api/agents/{uid}/history`: the configs the agent ran, newest first.
#[utoipa::path(get, path = "/api/agents/{uid}/history", operation_id = "getAgentHistory", tag = "agents",
    params(("uid" = uuid::Uuid, Path, description = "The agent's instance uid")),
    responses(
        (status = 200, description = "The agent's history", body = AgentHistory),
        (status = 400, description = "Not a UUID", body = super::openapi::ErrorBody),
        (status = 404, description = "No such agent", body = super::openapi::ErrorBody),
    ))]
pub async fn agent(
    State(state): State<AdminState>,
    Path(uid): Path<String>,
) -> Result<Json<AgentHistory>, ApiError> {
    let history = agent_history(&state, &uid)?;
    Ok(Json(AgentHistory {
        instance_uid: uid,
        history,
    }))
}

/// Whether `wanted` names `revision`: the full id, or a prefix of at least 7 characters (a
/// short commit id).
fn names(wanted: &str, revision: &str) -> bool {
    revision == wanted || (wanted.len() >= 7 && revision.starts_with(wanted))
}

/// `GET /api/revisions/{id}/agents`: who runs a config rendered by the revision now.
#[utoipa::path(get, path = "/api/revisions/{id}/agents", operation_id = "listRevisionAgents", tag = "revisions",
    params(("id" = String, Path, description = "A revision id, or a prefix of at least 7 characters")),
    responses((status = 200, description = "The agents, by instance uid", body = RevisionAgents)))]
pub async fn revision_agents(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Json<RevisionAgents> {
    let mut agents: Vec<RevisionAgent> = state
        .fleet
        .visible_records()
        .iter()
        .filter_map(|record| {
            let rec = record.lock().unwrap_or_else(|e| e.into_inner());
            let current = history::current(&rec)?;
            names(&id, current.revision.as_deref()?).then(|| RevisionAgent {
                instance_uid: rec.uid.to_string(),
                revision: current.revision.clone(),
                config_hash: current.config_hash.clone(),
                applied_at: humantime::format_rfc3339_seconds(current.applied_at).to_string(),
                connected: rec.connected,
            })
        })
        .collect();
    agents.sort_by(|a, b| a.instance_uid.cmp(&b.instance_uid));
    Json(RevisionAgents {
        revision: id,
        total: agents.len(),
        agents,
    })
}
