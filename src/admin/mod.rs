//! The admin listener: probes now; the JSON API, dashboard, webhook and metrics grow here.

use crate::fleet::Fleet;
use crate::source::RevisionStore;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

#[derive(Clone)]
pub struct AdminState {
    pub fleet: Arc<Fleet>,
    pub store: Arc<RevisionStore>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Ready once any revision is loaded.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> (StatusCode, &'static str) {
    match state.store.current() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no revision loaded yet\n"),
    }
}
