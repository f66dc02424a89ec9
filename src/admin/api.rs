//! The JSON API: agents (filtered, paginated, one in detail with its configs and their diff),
//! rules with their counts, audit events, and the agent actions (push, restart).

use super::{json_error, require_admin, AdminState};
use crate::audit::{AdminAction, AuditKind};
use crate::fleet::status::Status;
use crate::fleet::view::AgentSummary;
use crate::fleet::{ActionError, AgentAction};
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

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// `?status=&rule=&label=k=v&q=&limit=&offset=` (label may repeat).
#[derive(Debug, Default, Clone)]
pub struct AgentQuery {
    pub status: Option<Status>,
    pub rule: Option<String>,
    pub labels: Vec<(String, String)>,
    pub q: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

impl AgentQuery {
    pub fn parse(raw: Option<&str>) -> Result<AgentQuery, String> {
        let mut query = AgentQuery {
            limit: DEFAULT_LIMIT,
            ..AgentQuery::default()
        };
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "status" if !value.is_empty() => {
                    query.status = Some(
                        Status::parse(&value).ok_or_else(|| format!("unknown status `{value}`"))?,
                    )
                }
                "rule" if !value.is_empty() => query.rule = Some(value),
                "label" if !value.is_empty() => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| format!("label `{value}` is not key=value"))?;
                    query.labels.push((k.to_owned(), v.to_owned()));
                }
                "q" if !value.is_empty() => query.q = Some(value.to_lowercase()),
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .map_err(|_| format!("limit `{value}` is not a number"))?
                        .min(MAX_LIMIT)
                }
                "offset" => {
                    query.offset = value
                        .parse()
                        .map_err(|_| format!("offset `{value}` is not a number"))?
                }
                _ => {}
            }
        }
        Ok(query)
    }

    pub fn matches(&self, agent: &AgentSummary) -> bool {
        self.status.is_none_or(|s| agent.status == s)
            && self
                .rule
                .as_ref()
                .is_none_or(|r| agent.rule.as_ref() == Some(r))
            && self
                .labels
                .iter()
                .all(|(k, v)| agent.attributes.get(k) == Some(v))
            && self.q.as_ref().is_none_or(|q| {
                agent.instance_uid.contains(q.as_str())
                    || agent
                        .rule
                        .as_ref()
                        .is_some_and(|r| r.to_lowercase().contains(q.as_str()))
                    || agent
                        .attributes
                        .values()
                        .any(|v| v.to_lowercase().contains(q.as_str()))
            })
    }
}

pub async fn agents(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let query = match AgentQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let matching: Vec<AgentSummary> = state
        .fleet
        .summaries()
        .into_iter()
        .filter(|a| query.matches(a))
        .collect();
    let total = matching.len();
    let page: Vec<AgentSummary> = matching
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect();
    Json(json!({"total": total, "offset": query.offset, "limit": query.limit, "agents": page}))
        .into_response()
}

/// `GET /api/summary`: counts by status, health and connection over the whole fleet.
pub async fn summary(State(state): State<AdminState>) -> Response {
    Json(crate::fleet::view::counts(&state.fleet.summaries())).into_response()
}

/// Attribute text one page of `/api/attribute-sets` carries at most: a page ends early past it
/// (always with at least one set), so clients page on by the number of sets they received.
pub const MAX_ATTRIBUTE_PAGE_BYTES: usize = 4 << 20;

/// `GET /api/attribute-sets?limit=&offset=`: the registry's distinct attribute sets with their
/// agent counts, the input of `diff --fleet`.
pub async fn attribute_sets(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let (limit, offset) = match page_bounds(raw.as_deref()) {
        Ok(bounds) => bounds,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
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
    effective_config: BTreeMap<String, String>,
    diff: String,
    token_name: Option<String>,
    non_identifying_attributes: BTreeMap<String, String>,
    identifying_attributes: BTreeMap<String, String>,
    health: Option<Value>,
    first_seen: String,
    accepts_restart: bool,
}

/// Why the API refuses a request: the status code and the message of `{"error": …}`.
pub type Refused = (StatusCode, String);

fn refused(refusal: Refused) -> Response {
    json_error(refusal.0, refusal.1)
}

/// The uid of a URL path, or a 400 refusal.
fn parse_uid(text: &str) -> Result<InstanceUid, Refused> {
    text.parse().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            format!("`{text}` is not an instance uid (UUID)"),
        )
    })
}

pub async fn agent(State(state): State<AdminState>, Path(uid): Path<String>) -> Response {
    match agent_detail(&state, &uid) {
        Ok(detail) => Json(detail).into_response(),
        Err(refusal) => refused(refusal),
    }
}

/// One agent in full: what `GET /api/agents/{uid}` serves and the dashboard's agent page shows.
pub fn agent_detail(state: &AdminState, uid: &str) -> Result<Value, Refused> {
    let uid = parse_uid(uid)?;
    let record = state
        .fleet
        .record(&uid)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no agent {uid}")))?;
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
    let effective_config: BTreeMap<String, String> = rec
        .state
        .effective_config
        .as_ref()
        .and_then(|e| e.config_map.as_ref())
        .map(|m| {
            m.config_map
                .iter()
                .map(|(k, f)| (k.clone(), shown(&String::from_utf8_lossy(&f.body))))
                .collect()
        })
        .unwrap_or_default();
    let diff = unified_diff(&desired_config, &effective_config);
    let health = rec.state.health.as_ref().map(|h| {
        json!({"healthy": h.healthy, "status": h.status, "last_error": h.last_error,
               "components": h.component_health_map.iter().map(|(k, c)| (k.clone(), json!({"healthy": c.healthy, "status": c.status, "last_error": c.last_error}))).collect::<BTreeMap<_, _>>()})
    });
    let detail = AgentDetail {
        capabilities: agent_caps::names(rec.state.capabilities),
        accepts_restart: rec.state.has(agent_caps::ACCEPTS_RESTART_COMMAND),
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
    serde_json::to_value(detail).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
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
    let mut agent = None;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "agent" if !value.is_empty() => agent = Some(value.into_owned()),
            "limit" => match value.parse::<usize>() {
                Ok(n) => limit = n.min(MAX_LIMIT),
                Err(_) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        format!("limit `{value}` is not a number"),
                    )
                }
            },
            _ => {}
        }
    }
    Json(state.audit.recent(agent.as_deref(), limit)).into_response()
}

fn action_error(e: ActionError) -> Response {
    match e {
        ActionError::NotFound => json_error(StatusCode::NOT_FOUND, e.to_string()),
        ActionError::Conflict(_) => json_error(StatusCode::CONFLICT, e.to_string()),
        ActionError::Busy => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn act(state: AdminState, headers: HeaderMap, uid: String, action: AgentAction) -> Response {
    let token = match require_admin(&state, &headers) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    let uid = match parse_uid(&uid) {
        Ok(u) => u,
        Err(refusal) => return refused(refusal),
    };
    match state.fleet.act(&uid, action) {
        Ok(()) => {
            state.audit.record(AuditKind::AdminAction {
                action: match action {
                    AgentAction::Push => AdminAction::Push,
                    AgentAction::Restart => AdminAction::Restart,
                },
                agent: Some(uid.to_string()),
                token,
            });
            (StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response()
        }
        Err(e) => action_error(e),
    }
}

pub async fn push(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    act(state, headers, uid, AgentAction::Push).await
}

pub async fn restart(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    act(state, headers, uid, AgentAction::Restart).await
}
