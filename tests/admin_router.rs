//! The admin router in-process, with `tower::ServiceExt::oneshot`: what its routes answer does
//! not need a loopback server, only a store and a fleet.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use opamp_gitops::admin::{self, AdminState};
use opamp_gitops::audit::AuditLog;
use opamp_gitops::fleet::{Fleet, FleetConfig};
use opamp_gitops::metrics::Metrics;
use opamp_gitops::repo::{CompileOptions, Snapshot};
use opamp_gitops::source::RevisionStore;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

fn router() -> (axum::Router, Arc<RevisionStore>) {
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(AuditLog::default());
    let (store, revisions) =
        RevisionStore::new(CompileOptions::default(), metrics.clone(), audit.clone());
    let fleet = Arc::new(Fleet::new(
        FleetConfig::default(),
        revisions,
        metrics.clone(),
        audit.clone(),
    ));
    let router = admin::router(AdminState {
        fleet,
        metrics,
        audit,
        store: store.clone(),
        refresh: Arc::new(tokio::sync::Notify::new()),
        admin_tokens: None,
        webhook_secret_file: None,
        tracked_branch: None,
        show_secrets: false,
        body_timeout: Duration::from_secs(5),
    });
    (router, store)
}

async fn call(router: &axum::Router, method: &str, path: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn ready_only_once_a_revision_is_loaded() {
    let (router, store) = router();
    assert_eq!(
        call(&router, "GET", "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let repo = common::repo::TestRepo::new();
    let snapshot = Snapshot::from_dir(repo.path()).unwrap();
    store.submit(&snapshot, "r1", "test", false, None);
    assert_eq!(call(&router, "GET", "/readyz").await.0, StatusCode::OK);
    assert_eq!(call(&router, "GET", "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_bad_uid_is_a_json_400_and_mutations_are_disabled_without_tokens() {
    let (router, _store) = router();
    let (status, body) = call(&router, "GET", "/api/agents/not-a-uid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("not-a-uid"),
        "{body}"
    );
    let (status, body) = call(&router, "POST", "/api/refresh").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("--admin-token-file"), "{body}");
}

#[tokio::test]
async fn an_unknown_api_path_is_the_documented_json_error() {
    let (router, _store) = router();
    let (status, body) = call(&router, "GET", "/api/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("/api/no-such-thing"),
        "{body}"
    );
    assert_eq!(
        call(&router, "GET", "/nowhere").await.0,
        StatusCode::NOT_FOUND
    );
}
