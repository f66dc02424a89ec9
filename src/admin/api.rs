//! The JSON API: agents (filtered, paginated, one in detail with its configs and their diff),
//! rules with their counts, audit events, and the agent actions (push, restart).

use super::error::ApiError;
use super::listing::{self, AgentQuery, DEFAULT_LIMIT, MAX_LIMIT};
use super::{require_admin, AdminState};
use crate::audit::{AuditKind, EventQuery, KINDS};
use crate::fleet::persist::StoreStatus;
use crate::fleet::status::Status;
use crate::fleet::view::AgentSummary;
use crate::fleet::view::{AttributeSet, FleetCounts};
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
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One page of agents, in the order asked for.
#[derive(Serialize, ToSchema)]
pub struct AgentPage<'a> {
    /// How many agents match the filters (on every page).
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    #[schema(value_type = Vec<AgentSummary>)]
    pub agents: Vec<&'a AgentSummary>,
}

/// `GET /api/agents`: the agents that match the filters, one page of them.
#[utoipa::path(get, path = "/api/agents", operation_id = "listAgents", tag = "agents",
    params(
        ("status" = Option<Status>, Query, description = "Only agents with this status"),
        ("rule" = Option<String>, Query, description = "Only agents the named rule matches"),
        ("label" = Option<Vec<String>>, Query, explode = true, pattern = "^([^=]*=.*)?$",
            description = "`key=value`: only agents with this attribute (repeat for several)",
            example = json!(["environment=production"])),
        ("q" = Option<String>, Query, description = "Free text, matched case-insensitively against the uid and the attributes"),
        ("sort" = Option<String>, Query, pattern = "^(-?(agent|rule|status|health|revision|last_seen))?$",
            description = "Order: agent, rule, status, health, revision or last_seen; a leading `-` reverses it (empty: by uid)"),
        ("limit" = Option<i32>, Query, minimum = 0, description = "Page size (default 100; larger values are capped at 1000)"),
        ("offset" = Option<i32>, Query, minimum = 0, description = "Agents to skip"),
    ),
    responses(
        (status = 200, description = "A page of agents", body = AgentPage),
        (status = 400, description = "A filter that does not parse", body = super::openapi::ErrorBody),
    ))]
pub async fn agents(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let query = match AgentQuery::parse(raw.as_deref()) {
        Ok(query) => query,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let all = state.fleet.summaries();
    let page = listing::page(&all, &query);
    Json(AgentPage {
        total: page.total,
        offset: query.offset,
        limit: query.limit,
        agents: page.agents,
    })
    .into_response()
}

/// The fleet at a glance, with the store's state and the replica that answered.
#[derive(Serialize, ToSchema)]
pub struct FleetSummary {
    #[serde(flatten)]
    pub counts: FleetCounts,
    pub store: StoreStatus,
    /// The replica that answered (with a fleet store).
    pub replica: Option<String>,
}

/// `GET /api/summary`: counts by status, health and connection over the whole fleet.
#[utoipa::path(get, path = "/api/summary", operation_id = "getSummary", tag = "agents",
    responses((status = 200, description = "Counts over the whole fleet", body = FleetSummary)))]
pub async fn summary(State(state): State<AdminState>) -> Json<FleetSummary> {
    Json(FleetSummary {
        counts: state.fleet.counts(),
        store: state.fleet.store_status(),
        replica: state.fleet.replica_id(),
    })
}

/// Attribute text one page of `/api/attribute-sets` carries at most: a page ends early past it
/// (always with at least one set), so clients page on by the number of sets they received.
pub const MAX_ATTRIBUTE_PAGE_BYTES: usize = 4 << 20;

/// One page of the fleet's distinct attribute sets.
#[derive(Serialize, ToSchema)]
pub struct AttributeSetPage {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub sets: Vec<AttributeSet>,
}

/// `GET /api/attribute-sets?limit=&offset=`: the registry's distinct attribute sets with their
/// agent counts, the input of `diff --fleet`.
#[utoipa::path(get, path = "/api/attribute-sets", operation_id = "listAttributeSets", tag = "agents",
    params(
        ("limit" = Option<i32>, Query, minimum = 0, description = "Page size (default 100, capped at 1000); a page also ends past 4 MiB of attribute text"),
        ("offset" = Option<i32>, Query, minimum = 0, description = "Sets to skip"),
    ),
    responses(
        (status = 200, description = "A page of attribute sets", body = AttributeSetPage),
        (status = 400, description = "A bound that is not a number", body = super::openapi::ErrorBody),
    ))]
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
    Json(AttributeSetPage {
        total,
        offset,
        limit,
        sets: page,
    })
    .into_response()
}

/// `limit` (default 100, at most 1000) and `offset` of a paginated query.
fn page_bounds(raw: Option<&str>) -> Result<(usize, usize), String> {
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => limit = listing::count(&key, &value)?.min(MAX_LIMIT),
            "offset" => offset = listing::count(&key, &value)?,
            _ => {}
        }
    }
    Ok((limit, offset))
}

/// One agent in full: its summary, what it can do, its configs and their diff.
#[derive(Serialize, ToSchema)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub summary: AgentSummary,
    /// The agent's capabilities by their OpAMP names (`AcceptsRemoteConfig`, ...).
    pub capabilities: Vec<&'static str>,
    /// The desired files by name (secret-looking values redacted unless `--show-secrets`).
    pub desired_config: BTreeMap<String, String>,
    /// Null when the agent reports no effective config.
    pub effective_config: Option<BTreeMap<String, String>>,
    /// A unified diff, desired against effective; null when there is no effective config.
    pub diff: Option<String>,
    /// The name of the agent token it connected with (with `name:token` agent tokens).
    pub token_name: Option<String>,
    pub non_identifying_attributes: BTreeMap<String, String>,
    pub identifying_attributes: BTreeMap<String, String>,
    /// The agent's own health report; null when it sent none.
    pub health: Option<Health>,
    #[schema(format = DateTime)]
    pub first_seen: String,
    pub accepts_restart: bool,
    /// The components the agent's build has (`ReportsAvailableComponents`); null when unknown.
    #[schema(value_type = Object)]
    pub available_components: Value,
}

/// An agent's health report, with that of its components (pipelines, receivers, ...).
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub healthy: bool,
    pub status: String,
    pub last_error: String,
    #[schema(no_recursion)]
    pub components: BTreeMap<String, Health>,
}

impl Health {
    fn of(report: &crate::opamp::proto::ComponentHealth) -> Health {
        Health {
            healthy: report.healthy,
            status: report.status.clone(),
            last_error: report.last_error.clone(),
            components: report
                .component_health_map
                .iter()
                .map(|(name, component)| (name.clone(), Health::of(component)))
                .collect(),
        }
    }
}

/// The uid of a URL path, or a 400.
fn parse_uid(text: &str) -> Result<InstanceUid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("`{text}` is not an instance uid (UUID)")))
}

/// `GET /api/agents/{uid}`: one agent in full.
#[utoipa::path(get, path = "/api/agents/{uid}", operation_id = "getAgent", tag = "agents",
    params(("uid" = uuid::Uuid, Path, description = "The agent's instance uid")),
    responses(
        (status = 200, description = "The agent", body = AgentDetail),
        (status = 400, description = "Not a UUID", body = super::openapi::ErrorBody),
        (status = 404, description = "No such agent", body = super::openapi::ErrorBody),
    ))]
pub async fn agent(
    State(state): State<AdminState>,
    Path(uid): Path<String>,
) -> Result<Json<AgentDetail>, ApiError> {
    agent_detail(&state, &uid).map(Json)
}

/// One agent in full: what `GET /api/agents/{uid}` serves and the dashboard's agent page shows.
pub fn agent_detail(state: &AdminState, uid: &str) -> Result<AgentDetail, ApiError> {
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
    let health = rec.state.health.as_ref().map(Health::of);
    Ok(AgentDetail {
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
    })
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

/// A rule of the current revision with its agent counts.
#[derive(Serialize, ToSchema)]
pub struct RuleView {
    pub name: String,
    /// The rule's `match:` selector as written (attribute → value or list of values).
    #[serde(rename = "match")]
    #[schema(value_type = Object)]
    pub selector: Value,
    /// The template it renders (rules with one config file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Config-file name → template (rules with several files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
    /// Agents the rule matches, and how many of them applied or failed its config.
    pub agents: usize,
    pub applied: usize,
    pub failed: usize,
}

/// `GET /api/rules`: the current revision's rules, in order.
#[utoipa::path(get, path = "/api/rules", operation_id = "listRules", tag = "revisions",
    responses((status = 200, description = "The rules, empty before a revision loads", body = Vec<RuleView>)))]
pub async fn rules(State(state): State<AdminState>) -> Json<Vec<RuleView>> {
    Json(rule_views(&state))
}

/// Each rule of the current revision with its match, template(s) and agent counts.
pub fn rule_views(state: &AdminState) -> Vec<RuleView> {
    let Some(revision) = state.store.current() else {
        return Vec::new();
    };
    let summaries = state.fleet.summaries();
    revision
        .fleet
        .rules
        .iter()
        .map(|rule| {
            let mine: Vec<&AgentSummary> = summaries
                .iter()
                .filter(|a| a.rule.as_deref() == Some(rule.name.as_str()))
                .collect();
            let (template, files) = match &rule.output {
                RuleOutput::Template(t) => (Some(t.clone()), None),
                RuleOutput::Files(f) => (None, Some(f.clone())),
            };
            RuleView {
                name: rule.name.clone(),
                selector: rule.selector.to_json(),
                template,
                files,
                agents: mine.len(),
                applied: mine.iter().filter(|a| a.status == Status::Applied).count(),
                failed: mine
                    .iter()
                    .filter(|a| matches!(a.status, Status::Failed | Status::RenderError))
                    .count(),
            }
        })
        .collect()
}

/// `GET /api/events`: the audit trail, newest first.
#[utoipa::path(get, path = "/api/events", operation_id = "listEvents", tag = "events",
    params(
        ("kind" = Option<String>, Query, pattern = "^(revision_applied|revision_rejected|config_sent|status_reported|refresh|push|restart|agent_forgotten|rollout_paused|rollout_resumed|rollout_promoted|duplicate_uid)?$",
            description = "Only events of this kind (empty: every kind)"),
        ("agent" = Option<String>, Query, description = "Only events about this agent (instance uid)"),
        ("limit" = Option<i32>, Query, minimum = 0, description = "Page size (default 100; larger values are capped at 1000)"),
        ("offset" = Option<i32>, Query, minimum = 0, description = "Events to skip"),
    ),
    responses(
        (status = 200, description = "A page of events", body = crate::audit::EventPage),
        (status = 400, description = "An unknown kind or a bound that is not a number", body = super::openapi::ErrorBody),
    ))]
pub async fn events(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let mut query = EventQuery {
        limit: DEFAULT_LIMIT,
        ..EventQuery::default()
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let number = || listing::count(&key, &value).map_err(ApiError::bad_request);
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
    Json(state.fleet.event_page(&state.audit, &query)).into_response()
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
    Ok((StatusCode::ACCEPTED, Json(super::openapi::Accepted::yes())).into_response())
}

/// `DELETE /api/agents/{uid}`: forgets a disconnected agent (204), refuses a connected one (409).
#[utoipa::path(delete, path = "/api/agents/{uid}", operation_id = "forgetAgent", tag = "agents",
    params(("uid" = uuid::Uuid, Path, description = "The agent's instance uid")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 400, description = "Not a UUID", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled (no --admin-token-file)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such agent", body = super::openapi::ErrorBody),
        (status = 409, description = "The agent is connected", body = super::openapi::ErrorBody),
    ))]
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

/// `POST /api/agents/{uid}/push`: sends the agent its desired config again.
#[utoipa::path(post, path = "/api/agents/{uid}/push", operation_id = "pushAgent", tag = "agents",
    params(("uid" = uuid::Uuid, Path, description = "The agent's instance uid")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Queued for the agent", body = super::openapi::Accepted),
        (status = 400, description = "Not a UUID", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled (no --admin-token-file)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such agent", body = super::openapi::ErrorBody),
        (status = 409, description = "The agent does not accept remote config, or has none to receive", body = super::openapi::ErrorBody),
        (status = 503, description = "The agent's session is too busy to take it now", body = super::openapi::ErrorBody),
    ))]
pub async fn push(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    act(state, headers, uid, AgentAction::Push)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/agents/{uid}/restart`: asks the agent to restart.
#[utoipa::path(post, path = "/api/agents/{uid}/restart", operation_id = "restartAgent", tag = "agents",
    params(("uid" = uuid::Uuid, Path, description = "The agent's instance uid")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Queued for the agent", body = super::openapi::Accepted),
        (status = 400, description = "Not a UUID", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled (no --admin-token-file)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such agent", body = super::openapi::ErrorBody),
        (status = 409, description = "The agent does not accept restart commands, or is not connected", body = super::openapi::ErrorBody),
        (status = 503, description = "The agent's session is too busy to take it now", body = super::openapi::ErrorBody),
    ))]
pub async fn restart(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    act(state, headers, uid, AgentAction::Restart)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
