//! The admin listener: probes, the revision API, refresh, and the git webhook. Mutating
//! endpoints need an admin token; without a token file they are disabled.

pub mod api;
pub mod dashboard;
pub mod error;
pub mod history;
pub mod listing;
pub mod openapi;
pub mod read_auth;
pub mod rollout;
pub mod version;
pub mod webhook;

use crate::auth::{self, TokenFile};
use crate::fleet::Fleet;
use crate::net::listener::{ReserveSlot, PROBE_PATHS};
use crate::source::RevisionStore;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AdminState {
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub store: Arc<RevisionStore>,
    /// Wakes the source for an immediate sync.
    pub refresh: Arc<Notify>,
    pub admin_tokens: Option<Arc<TokenFile>>,
    pub webhook_secret_file: Option<PathBuf>,
    /// The branch a git source tracks, when set explicitly.
    pub tracked_branch: Option<String>,
    /// Show secret-looking config values instead of `<redacted>`.
    pub show_secrets: bool,
    /// Deadline for reading a request body (a webhook's, say).
    pub body_timeout: std::time::Duration,
}

/// The largest admin request body: GitHub's largest webhook payload is 25 MB.
pub const MAX_BODY_BYTES: usize = 25 << 20;

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/revision", get(revision))
        .route("/api/version", get(version::get))
        .route("/api/refresh", post(refresh))
        .route("/webhook/git", post(webhook::receive))
        .route("/api/agents", get(api::agents))
        .route("/api/summary", get(api::summary))
        .route("/api/attribute-sets", get(api::attribute_sets))
        .route("/api/agents/{uid}", get(api::agent).delete(api::forget))
        .route("/api/agents/{uid}/push", post(api::push))
        .route("/api/agents/{uid}/restart", post(api::restart))
        .route("/api/agents/{uid}/history", get(history::agent))
        .route("/api/revisions/{id}/agents", get(history::revision_agents))
        .route("/api/rules", get(api::rules))
        .route("/api/events", get(api::events))
        .route("/api/rollout", get(rollout::list))
        .route("/api/rollout/pause", post(rollout::pause))
        .route("/api/rollout/resume", post(rollout::resume))
        .route("/api/rollout/promote", post(rollout::promote))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(metrics))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::count_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.body_timeout,
            bounded_request,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// A route that exists, asked with a method it does not serve.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not serve {method}", uri.path()),
    )
    .into_response()
}

/// The error bodies axum writes itself (a path parameter that does not decode, say) are plain
/// text; under `/api/` every error is the documented `{"error": "..."}`.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut json = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// A path no route serves: the API's JSON error under `/api/`, plain text elsewhere.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::not_found(format!("no endpoint {method} {}", uri.path())).into_response();
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Every admin request is read whole before its handler runs: within the body deadline and the
/// size limit. A connection of the probe reserve is answered only for probes.
async fn bounded_request(
    State(body_timeout): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.extensions().get::<ReserveSlot>().is_some()
        && !PROBE_PATHS.contains(&request.uri().path())
    {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin listener is at its connection limit: only probes are answered",
        )
        .into_response();
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, 5.into());
        return response;
    }
    let (parts, body) = request.into_parts();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} MiB",
                MAX_BODY_BYTES >> 20
            ),
        )
        .into_response()
    };
    if axum::body::HttpBody::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        return too_large();
    }
    let bytes = match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return ApiError::bad_request(format!("the request body could not be read: {e}"))
                .into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {body_timeout:?}"),
            )
            .into_response()
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let metrics = &state.metrics;
    metrics.observe_fleet(&state.fleet.summaries());
    metrics
        .revision_rejected
        .set(i64::from(state.store.status().rejected.is_some()));
    metrics.set_rollouts(&state.fleet.rollouts());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// The admin token's name, or why the request is refused.
pub fn require_admin(state: &AdminState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(tokens) = &state.admin_tokens else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: start the server with --admin-token-file to enable them",
        ));
    };
    auth::bearer(headers)
        .and_then(|presented| tokens.check(presented))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a valid admin token is required (Authorization: Bearer <token>)",
            )
        })
}

/// Alive while the process serves.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "probes",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once any revision is loaded.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "probes",
    responses(
        (status = 200, description = "A revision is loaded", body = String, content_type = "text/plain"),
        (status = 503, description = "No revision loaded yet", body = String, content_type = "text/plain"),
    ))]
async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    match state.store.current() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no revision loaded yet\n"),
    }
}

/// `GET /api/revision`: the current revision, the last sync, and the last rejected revision.
#[utoipa::path(get, path = "/api/revision", operation_id = "getRevision", tag = "revisions",
    responses((status = 200, description = "What the source last did", body = crate::source::SourceStatus)))]
async fn revision(State(state): State<AdminState>) -> Json<crate::source::SourceStatus> {
    Json(state.store.status())
}

/// `POST /api/refresh`: syncs the source now.
#[utoipa::path(post, path = "/api/refresh", operation_id = "refresh", tag = "revisions",
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "A sync is on its way", body = openapi::Accepted),
        (status = 401, description = "No valid admin token", body = openapi::ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled (no --admin-token-file)", body = openapi::ErrorBody),
    ))]
async fn refresh(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let who = match require_admin(&state, &headers) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    state
        .audit
        .record(crate::audit::AuditKind::Refresh { token: who });
    state.refresh.notify_one();
    (StatusCode::ACCEPTED, Json(openapi::Accepted::yes())).into_response()
}
