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
use serde_json::{json, Value};

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

pub async fn agent(
    State(state): State<AdminState>,
    Path(uid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entries = agent_history(&state, &uid)?;
    Ok(Json(json!({"instance_uid": uid, "history": entries})))
}

/// Whether `wanted` names `revision`: the full id, or a prefix of at least 7 characters (a
/// short commit id).
fn names(wanted: &str, revision: &str) -> bool {
    revision == wanted || (wanted.len() >= 7 && revision.starts_with(wanted))
}

pub async fn revision_agents(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Json<Value> {
    let mut agents: Vec<Value> = state
        .fleet
        .visible_records()
        .iter()
        .filter_map(|record| {
            let rec = record.lock().unwrap_or_else(|e| e.into_inner());
            let current = history::current(&rec)?;
            names(&id, current.revision.as_deref()?).then(|| {
                json!({
                    "instance_uid": rec.uid.to_string(),
                    "revision": current.revision,
                    "config_hash": current.config_hash,
                    "applied_at": humantime::format_rfc3339_seconds(current.applied_at).to_string(),
                    "connected": rec.connected,
                })
            })
        })
        .collect();
    agents.sort_by(|a, b| a["instance_uid"].as_str().cmp(&b["instance_uid"].as_str()));
    Json(json!({"revision": id, "total": agents.len(), "agents": agents}))
}
