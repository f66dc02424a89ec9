//! The OpAMP endpoint and its two transports: one path, `/v1/opamp`, where a `POST` with
//! `Content-Type: application/x-protobuf` is plain HTTP (`http`) and anything else is a
//! WebSocket upgrade (`ws`). Both authenticate the agent first and hand every message to the
//! fleet; neither holds any policy.

pub mod budget;
pub mod http;
pub mod ws;

use crate::auth::{bearer, TokenFile};
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::net::listener::ConnectionSlot;
use crate::opamp::OPAMP_PATH;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The OpAMP listener's routes: the endpoint, with every request counted.
pub fn opamp_router(state: OpampState) -> Router {
    Router::new()
        .route(OPAMP_PATH, any(endpoint))
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::count_requests,
        ))
        .with_state(state)
}

pub const PROTOBUF: &str = "application/x-protobuf";

/// What the OpAMP endpoint needs.
#[derive(Clone)]
pub struct OpampState {
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub max_message_bytes: usize,
    /// Bytes of messages being received and handled at once, over both transports.
    pub budget: Arc<budget::InflightBudget>,
    pub shutdown: CancellationToken,
    /// Every live WebSocket session, so shutdown can wait for them to close.
    pub sessions: tokio_util::task::TaskTracker,
    /// Agent tokens; `None` is open mode.
    pub agent_tokens: Option<Arc<TokenFile>>,
    /// Deadline for reading a plain-HTTP body.
    pub body_timeout: std::time::Duration,
    /// WebSocket sessions silent this long are closed; quiet ones are pinged every
    /// `ping_interval`.
    pub idle_timeout: std::time::Duration,
    pub ping_interval: std::time::Duration,
}

pub async fn endpoint(State(state): State<OpampState>, request: Request) -> Response {
    // Authentication comes first: before any body is read or any upgrade is made.
    let token_name = match authenticate(&state, request.headers()) {
        Ok(name) => name,
        Err(response) => return *response,
    };
    if request.method() == Method::POST && is_protobuf(request.headers()) {
        return http::plain_http(state, request, token_name).await;
    }
    let slot = request.extensions().get::<ConnectionSlot>().cloned();
    match axum::extract::WebSocketUpgrade::from_request(request, &()).await {
        Ok(upgrade) => ws::upgrade(state, upgrade, token_name, slot),
        Err(rejection) => rejection.into_response(),
    }
}

/// The name of the agent token presented (`Authorization: Bearer` or `X-API-Key`), `None` in
/// open mode, or a 401.
fn authenticate(state: &OpampState, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    let Some(tokens) = &state.agent_tokens else {
        return Ok(None);
    };
    let api_key = || {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    match bearer(headers)
        .or_else(api_key)
        .and_then(|token| tokens.check(token))
    {
        Some(name) => Ok(Some(name)),
        None => {
            tracing::warn!("OpAMP request without a valid agent token refused");
            let mut response = text(
                StatusCode::UNAUTHORIZED,
                "a valid agent token is required (Authorization: Bearer <token> or X-API-Key)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(Box::new(response))
        }
    }
}

fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(PROTOBUF))
}

pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}
