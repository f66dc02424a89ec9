//! The staged-rollout endpoints: `GET /api/rollout` (every scope's plan as the fleet's last
//! tick saw it) and the operator's `pause`, `resume` and `promote` (admin token, audited).

use super::error::ApiError;
use super::{require_admin, AdminState};
use crate::audit::AuditKind;
use crate::fleet::rollout::{RolloutAction, RolloutError};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn list(State(state): State<AdminState>) -> Response {
    Json(json!({ "rollouts": state.fleet.rollouts() })).into_response()
}

pub async fn pause(state: State<AdminState>, headers: HeaderMap, query: RawQuery) -> Response {
    act(state, headers, query, RolloutAction::Pause)
}

pub async fn resume(state: State<AdminState>, headers: HeaderMap, query: RawQuery) -> Response {
    act(state, headers, query, RolloutAction::Resume)
}

pub async fn promote(state: State<AdminState>, headers: HeaderMap, query: RawQuery) -> Response {
    act(state, headers, query, RolloutAction::Promote)
}

fn act(
    State(state): State<AdminState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    action: RolloutAction,
) -> Response {
    let token = match require_admin(&state, &headers) {
        Ok(token) => token,
        Err(refusal) => return refusal.into_response(),
    };
    let mut scope = None;
    for (key, value) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "scope" if !value.is_empty() => scope = Some(value.into_owned()),
            "scope" => {}
            other => {
                return ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (only `scope` is taken)"
                ))
                .into_response()
            }
        }
    }
    let scopes = match state
        .fleet
        .rollout_act(action, scope.as_deref(), Some(&token))
    {
        Ok(scopes) => scopes,
        Err(e @ (RolloutError::UnknownScope(_) | RolloutError::NoRollout)) => {
            return ApiError::not_found(e.to_string()).into_response()
        }
        Err(e @ RolloutError::Conflict(_)) => {
            return ApiError::new(StatusCode::CONFLICT, e.to_string()).into_response()
        }
    };
    for scope in &scopes {
        let (scope, token) = (scope.clone(), token.clone());
        state.audit.record(match action {
            RolloutAction::Pause => AuditKind::RolloutPaused { scope, token },
            RolloutAction::Resume => AuditKind::RolloutResumed { scope, token },
            RolloutAction::Promote => AuditKind::RolloutPromoted { scope, token },
        });
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"accepted": true, "scopes": scopes})),
    )
        .into_response()
}
