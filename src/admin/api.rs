//! The JSON API: agents (filtered, paginated, one in detail with its configs and their diff),
//! rules with their counts, audit events, and the agent actions (push, restart).

use super::error::ApiError;
use super::listing::{self, AgentQuery, DEFAULT_LIMIT, MAX_LIMIT};
use super::{require_admin, AdminState};
use crate::audit::{AuditKind, EventQuery, KINDS};
use crate::fleet::status::Status;
use crate::fleet::view::AgentSummary;
use crate::fleet::AgentAction;
use crate::opamp::agent_caps;
use crate::opamp::uid::InstanceUid;
use crate::redact::redact_yaml;
use crate::repo::fleet::RuleOutput;
use crate::repo::Desired;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub async fn agents(
    State(state): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = AgentQuery::parse(raw.as_deref()).map_err(ApiError::bad_request)?;
    let all = state.fleet.summaries();
    let page = listing::page(&all, &query);
    Ok(Json(
        json!({"total": page.total, "offset": query.offset, "limit": query.limit, "agents": page.agents}),
    ))
}

/// `GET /api/summary`: counts by status, health and connection over the whole fleet.
pub async fn summary(State(state): State<AdminState>) -> Response {
    let counts = crate::fleet::view::counts(&state.fleet.summaries());
    let mut body = serde_json::to_value(counts).unwrap_or_default();
    body["store"] = json!(state.fleet.store_status());
    body["replica"] = json!(state.fleet.replica_id());
    Json(body).into_response()
}

/// Attribute text one page of `/api/attribute-sets` carries at most: a page ends early past it
/// (always with at least one set), so clients page on by the number of sets they received.
pub const MAX_ATTRIBUTE_PAGE_BYTES: usize = 4 << 20;

/// `GET /api/attribute-sets?limit=&offset=`: the registry's distinct attribute sets with their
/// agent counts, the input of `diff --fleet`.
pub async fn attribute_sets(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let (limit, offset) = match page_bounds(raw.as_deref()) {
        Ok(bounds) => bounds,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let sets = state.fleet.attribute_sets();
    let total = sets.len();
    let mut bytes = 0;
    let page: Vec<_> = sets
        .into_iter()
        .skip(offset)
        .take(limit)
        .take_while(|set| {
            let size: usize = set
                .identifying
                .iter()
                .chain(&set.non_identifying)
                .map(|(k, v)| k.len() + v.len())
                .sum();
            let fits = bytes == 0 || bytes + size <= MAX_ATTRIBUTE_PAGE_BYTES;
            bytes += size;
            fits
        })
        .collect();
    Json(json!({"total": total, "offset": offset, "limit": limit, "sets": page})).into_response()
}

/// `limit` (default 100, at most 1000) and `offset` of a paginated query.
fn page_bounds(raw: Option<&str>) -> Result<(usize, usize), String> {
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{key} `{value}` is not a number"))
        };
        match key.as_ref() {
            "limit" => limit = number()?.min(MAX_LIMIT),
            "offset" => offset = number()?,
            _ => {}
        }
    }
    Ok((limit, offset))
}

#[derive(Serialize)]
struct AgentDetail {
    #[serde(flatten)]
    summary: AgentSummary,
    capabilities: Vec<&'static str>,
    desired_config: BTreeMap<String, String>,
    /// Null when the agent reports no effective config.
    effective_config: Option<BTreeMap<String, String>>,
    /// Null when there is no effective config to compare with.
    diff: Option<String>,
    token_name: Option<String>,
    non_identifying_attributes: BTreeMap<String, String>,
    identifying_attributes: BTreeMap<String, String>,
    health: Option<Value>,
    first_seen: String,
    accepts_restart: bool,
    available_components: Value,
}

/// The uid of a URL path, or a 400.
fn parse_uid(text: &str) -> Result<InstanceUid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("`{text}` is not an instance uid (UUID)")))
}

pub async fn agent(
    State(state): State<AdminState>,
    Path(uid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    agent_detail(&state, &uid).map(Json)
}

/// One agent in full: what `GET /api/agents/{uid}` serves and the dashboard's agent page shows.
pub fn agent_detail(state: &AdminState, uid: &str) -> Result<Value, ApiError> {
    let uid = parse_uid(uid)?;
    let record = state
        .fleet
        .visible_record(&uid)
        .ok_or_else(|| ApiError::not_found(format!("no agent {uid}")))?;
    let rec = record.lock().unwrap_or_else(|e| e.into_inner());
    let summary = state.fleet.summary(&rec);
    let shown = |text: &str| {
        if state.show_secrets {
            text.to_owned()
        } else {
            redact_yaml(text)
        }
    };
    let desired_config: BTreeMap<String, String> = match state.fleet.desired(&rec) {
        Desired::Config(c) => c
            .files
            .iter()
            .map(|(k, v)| (k.clone(), shown(&String::from_utf8_lossy(v))))
            .collect(),
        _ => BTreeMap::new(),
    };
    let effective_config: Option<BTreeMap<String, String>> = rec.effective_files().map(|files| {
        files
            .iter()
            .map(|(name, body)| (name.clone(), shown(&String::from_utf8_lossy(body))))
            .collect()
    });
    let diff = effective_config
        .as_ref()
        .map(|effective| unified_diff(&desired_config, effective));
    let health = rec.state.health.as_ref().map(|h| {
        json!({"healthy": h.healthy, "status": h.status, "last_error": h.last_error,
               "components": h.component_health_map.iter().map(|(k, c)| (k.clone(), json!({"healthy": c.healthy, "status": c.status, "last_error": c.last_error}))).collect::<BTreeMap<_, _>>()})
    });
    let detail = AgentDetail {
        capabilities: agent_caps::names(rec.state.capabilities),
        accepts_restart: rec.state.has(agent_caps::ACCEPTS_RESTART_COMMAND),
        available_components: rec.components.to_json(),
        identifying_attributes: rec.info.identifying.clone(),
        non_identifying_attributes: rec.info.non_identifying.clone(),
        token_name: rec.token_name.clone(),
        first_seen: humantime::format_rfc3339_seconds(rec.first_seen).to_string(),
        summary,
        desired_config,
        effective_config,
        diff,
        health,
    };
    serde_json::to_value(detail)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A unified diff of the desired files against the effective ones. The Supervisor reports its
/// merged config under one key whatever the file names, so single files are compared directly.
pub fn unified_diff(
    desired: &BTreeMap<String, String>,
    effective: &BTreeMap<String, String>,
) -> String {
    let join = |files: &BTreeMap<String, String>| -> String {
        if files.len() == 1 {
            return files.values().next().cloned().unwrap_or_default();
        }
        files
            .iter()
            .map(|(name, body)| format!("# --- {name}\n{body}"))
            .collect::<Vec<_>>()
            .join("")
    };
    let (a, b) = (join(desired), join(effective));
    if a == b {
        return String::new();
    }
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header("desired", "effective")
        .to_string()
}

pub async fn rules(State(state): State<AdminState>) -> Response {
    Json(rule_views(&state)).into_response()
}

/// Each rule of the current revision with its match, template(s) and agent counts.
pub fn rule_views(state: &AdminState) -> Vec<Value> {
    let Some(revision) = state.store.current() else {
        return Vec::new();
    };
    let summaries = state.fleet.summaries();
    revision
        .fleet
        .rules
        .iter()
        .map(|rule| {
            let mine: Vec<&AgentSummary> = summaries.iter().filter(|a| a.rule.as_deref() == Some(rule.name.as_str())).collect();
            let mut entry = json!({
                "name": rule.name,
                "match": rule.selector.to_json(),
                "agents": mine.len(),
                "applied": mine.iter().filter(|a| a.status == Status::Applied).count(),
                "failed": mine.iter().filter(|a| matches!(a.status, Status::Failed | Status::RenderError)).count(),
            });
            match &rule.output {
                RuleOutput::Template(t) => entry["template"] = json!(t),
                RuleOutput::Files(f) => entry["files"] = json!(f),
            }
            entry
        })
        .collect()
}

pub async fn events(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let mut query = EventQuery {
        limit: DEFAULT_LIMIT,
        ..EventQuery::default()
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("{key} `{value}` is not a number")))
        };
        match key.as_ref() {
            "agent" if !value.is_empty() => query.agent = Some(value.to_string()),
            "kind" if !value.is_empty() => {
                if !KINDS.contains(&value.as_ref()) {
                    return ApiError::bad_request(format!(
                        "unknown kind `{value}` (one of {})",
                        KINDS.join(", ")
                    ))
                    .into_response();
                }
                query.kind = Some(value.to_string());
            }
            "limit" => match number() {
                Ok(n) => query.limit = n.min(MAX_LIMIT),
                Err(e) => return e.into_response(),
            },
            "offset" => match number() {
                Ok(n) => query.offset = n,
                Err(e) => return e.into_response(),
            },
            _ => {}
        }
    }
    Json(state.audit.page(&query)).into_response()
}

async fn act(
    state: AdminState,
    headers: HeaderMap,
    uid: String,
    action: AgentAction,
) -> Result<Response, ApiError> {
    let token = require_admin(&state, &headers)?;
    let uid = parse_uid(&uid)?;
    state.fleet.act(&uid, action)?;
    let agent = uid.to_string();
    state.audit.record(match action {
        AgentAction::Push => AuditKind::Push { agent, token },
        AgentAction::Restart => AuditKind::Restart { agent, token },
    });
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response())
}

/// `DELETE /api/agents/{uid}`: forgets a disconnected agent (204), refuses a connected one (409).
pub async fn forget(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let token = require_admin(&state, &headers)?;
    let uid = parse_uid(&uid)?;
    state.fleet.forget(&uid)?;
    state.audit.record(AuditKind::AgentForgotten {
        agent: uid.to_string(),
        token,
    });
    Ok(StatusCode::NO_CONTENT)
}

pub async fn push(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    act(state, headers, uid, AgentAction::Push)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn restart(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    act(state, headers, uid, AgentAction::Restart)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
