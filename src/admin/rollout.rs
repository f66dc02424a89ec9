//! The staged-rollout endpoints: `GET /api/rollout` (every scope's plan as the fleet's last
//! tick saw it) and the operator's `pause`, `resume` and `promote` (admin token, audited).

use super::error::ApiError;
use super::{require_admin, AdminState};
use crate::audit::AuditKind;
use crate::fleet::rollout::{RolloutAction, RolloutError, RolloutView};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Every scope's rollout of the current revision.
#[derive(Serialize, ToSchema)]
pub struct Rollouts {
    pub rollouts: Vec<RolloutView>,
}

/// What an operator's rollout action reached.
#[derive(Serialize, ToSchema)]
pub struct RolloutAccepted {
    pub accepted: bool,
    /// The scopes the action applied to.
    pub scopes: Vec<String>,
}

/// `GET /api/rollout`: each scope's plan as the fleet's last tick saw it.
#[utoipa::path(get, path = "/api/rollout", operation_id = "listRollouts", tag = "rollout",
    responses((status = 200, description = "Every scope's rollout; empty without a `rollout:` section", body = Rollouts)))]
pub async fn list(State(state): State<AdminState>) -> Json<Rollouts> {
    Json(Rollouts {
        rollouts: state.fleet.rollouts(),
    })
}

/// `POST /api/rollout/pause`: stops admitting waves.
#[utoipa::path(post, path = "/api/rollout/pause", operation_id = "pauseRollout", tag = "rollout",
    params(("scope" = Option<String>, Query, description = "One scope (rule name or `fleet`); every scope when absent")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Paused", body = RolloutAccepted),
        (status = 400, description = "An unknown query parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled (no --admin-token-file)", body = super::openapi::ErrorBody),
        (status = 404, description = "No rollout, or no such scope", body = super::openapi::ErrorBody),
        (status = 409, description = "The rollout cannot take this action now", body = super::openapi::ErrorBody),
    ))]
pub async fn pause(state: State<AdminState>, headers: HeaderMap, query: RawQuery) -> Response {
    act(state, headers, query, RolloutAction::Pause)
}

/// `POST /api/rollout/resume`: admits waves again, forgiving the failures counted so far.
#[utoipa::path(post, path = "/api/rollout/resume", operation_id = "resumeRollout", tag = "rollout",
    params(("scope" = Option<String>, Query, description = "One scope (rule name or `fleet`); every scope when absent")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Resumed", body = RolloutAccepted),
        (status = 400, description = "An unknown query parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled (no --admin-token-file)", body = super::openapi::ErrorBody),
        (status = 404, description = "No rollout, or no such scope", body = super::openapi::ErrorBody),
        (status = 409, description = "The rollout cannot take this action now", body = super::openapi::ErrorBody),
    ))]
pub async fn resume(state: State<AdminState>, headers: HeaderMap, query: RawQuery) -> Response {
    act(state, headers, query, RolloutAction::Resume)
}

/// `POST /api/rollout/promote`: admits the next wave now, without waiting for the soak.
#[utoipa::path(post, path = "/api/rollout/promote", operation_id = "promoteRollout", tag = "rollout",
    params(("scope" = Option<String>, Query, description = "One scope (rule name or `fleet`); every scope when absent")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Promoted", body = RolloutAccepted),
        (status = 400, description = "An unknown query parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled (no --admin-token-file)", body = super::openapi::ErrorBody),
        (status = 404, description = "No rollout, or no such scope", body = super::openapi::ErrorBody),
        (status = 409, description = "The rollout cannot take this action now", body = super::openapi::ErrorBody),
    ))]
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
        Json(RolloutAccepted {
            accepted: true,
            scopes,
        }),
    )
        .into_response()
}
