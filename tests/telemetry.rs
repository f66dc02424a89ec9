//! Own telemetry from git: fleet.yaml's `telemetry:` (defaults, merged per rule) is offered to
//! each agent as `ConnectionSettingsOffers.own_metrics` / `own_logs` / `own_traces`, by the
//! capabilities it reports, with secrets resolved on the server, and re-sent only when it changes.

mod common;

use common::agent::{Identity, WsAgent};
use common::repo::TestRepo;
use common::run_cli;
use common::server::{eventually, start_with};
use opamp_gitops::opamp::agent_caps;
use opamp_gitops::opamp::proto::RemoteConfigStatuses::Unset;
use opamp_gitops::opamp::proto::{ServerToAgent, TelemetryConnectionSettings};
use opamp_gitops::server::ServeOptions;
use std::time::Duration;

const OWN: u64 = agent_caps::REPORTS_OWN_METRICS | agent_caps::REPORTS_OWN_LOGS;

/// The test repo with a `telemetry:` section under `defaults:` (metrics, a header from a secret
/// file) and one under the `prod` rule (logs).
fn repo_with_telemetry(secret_file: &std::path::Path) -> TestRepo {
    let repo = TestRepo::new();
    repo.edit(
        "fleet.yaml",
        "    timeout: 5s\n",
        &format!(
            "    timeout: 5s\n  telemetry:\n    metrics:\n      endpoint: https://otlp.example.com:4318/v1/metrics\n      headers:\n        authorization: \"Bearer ${{file:{}}}\"\n        x-team: observability\n",
            secret_file.display()
        ),
    );
    repo.edit(
        "fleet.yaml",
        "    template: prod.yaml.j2\n",
        "    template: prod.yaml.j2\n    telemetry:\n      logs: {endpoint: \"http://logs.example:4318/v1/logs\"}\n",
    );
    repo
}

fn headers(settings: &TelemetryConnectionSettings) -> Vec<(String, String)> {
    settings
        .headers
        .iter()
        .flat_map(|h| &h.headers)
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

async fn hello(
    server_addr: std::net::SocketAddr,
    attrs: &[(&str, &str)],
    extra_caps: u64,
) -> (WsAgent, ServerToAgent) {
    let mut id = Identity::new(attrs);
    id.capabilities |= extra_caps;
    let mut ws = WsAgent::connect(server_addr, id).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    (ws, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_telemetry_is_offered_by_capability_with_server_side_secrets_and_resent_on_change() {
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("otlp-token");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let repo = repo_with_telemetry(&secret);
    let server = start_with(ServeOptions::local(repo.path())).await;

    // A prod agent that reports its own metrics and logs: the defaults' metrics, its rule's logs.
    let (mut prod, reply) = hello(server.opamp_addr, &[("environment", "production")], OWN).await;
    assert_eq!(reply.capabilities & 0x20, 0x20, "OffersConnectionSettings");
    let offer = reply
        .connection_settings
        .expect("connection settings offered");
    assert_eq!(offer.hash.len(), 32);
    let metrics = offer.own_metrics.as_ref().expect("own_metrics");
    assert_eq!(
        metrics.destination_endpoint,
        "https://otlp.example.com:4318/v1/metrics"
    );
    assert_eq!(
        headers(metrics),
        [
            ("authorization".to_owned(), "Bearer s3cret".to_owned()),
            ("x-team".to_owned(), "observability".to_owned()),
        ],
        "the secret comes from the server's file, not from git"
    );
    assert_eq!(
        offer.own_logs.as_ref().unwrap().destination_endpoint,
        "http://logs.example:4318/v1/logs"
    );
    assert!(offer.own_traces.is_none(), "no traces destination in git");
    assert!(
        offer.opamp.is_none(),
        "no heartbeat offer without --advertise-url"
    );

    // Another rule: the defaults only.
    let (_dev, reply) = hello(server.opamp_addr, &[("environment", "dev")], OWN).await;
    let dev_offer = reply.connection_settings.expect("offered to dev");
    assert!(dev_offer.own_metrics.is_some());
    assert!(
        dev_offer.own_logs.is_none(),
        "the prod rule's logs are not dev's"
    );
    assert_ne!(dev_offer.hash, offer.hash);

    // An agent that reports only its metrics is offered only those; one that reports neither,
    // nothing.
    let (_metrics_only, reply) = hello(
        server.opamp_addr,
        &[("environment", "production")],
        agent_caps::REPORTS_OWN_METRICS,
    )
    .await;
    let partial = reply.connection_settings.expect("offered");
    assert!(partial.own_metrics.is_some() && partial.own_logs.is_none());
    let (_plain, reply) = hello(server.opamp_addr, &[("environment", "production")], 0).await;
    assert!(reply.connection_settings.is_none());

    // Unchanged: not offered again.
    let msg = prod.id.heartbeat();
    assert!(prod.exchange(msg).await.connection_settings.is_none());

    // A commit that moves the metrics endpoint: pushed at once over WebSocket, new hash.
    repo.edit(
        "fleet.yaml",
        "https://otlp.example.com:4318/v1/metrics",
        "https://otlp-eu.example.com:4318/v1/metrics",
    );
    let pushed = prod.recv().await;
    let moved = pushed
        .connection_settings
        .expect("the changed settings are pushed");
    assert_eq!(
        moved.own_metrics.unwrap().destination_endpoint,
        "https://otlp-eu.example.com:4318/v1/metrics"
    );
    assert_ne!(moved.hash, offer.hash);
    assert!(
        pushed.remote_config.is_none(),
        "the config itself did not change"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_server_cannot_resolve_rejects_the_revision_with_its_line() {
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("otlp-token");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let repo = repo_with_telemetry(&secret);
    let server = start_with(ServeOptions::local(repo.path())).await;
    let (mut prod, reply) = hello(server.opamp_addr, &[("environment", "production")], OWN).await;
    let before = reply.connection_settings.expect("offered");
    let served = server.store.current().unwrap().id.clone();

    // A commit naming a secret file the server does not have.
    let missing = secrets.path().join("no-such-token");
    repo.edit(
        "fleet.yaml",
        &secret.display().to_string(),
        &missing.display().to_string(),
    );
    let rejected = eventually(Duration::from_secs(20), "the revision rejected", || {
        server.store.status().rejected
    })
    .await;
    let diagnostic = &rejected.diagnostics[0];
    assert_eq!(diagnostic.file.as_deref(), Some("fleet.yaml"));
    assert_eq!(diagnostic.line, Some(5), "the defaults' telemetry: line");
    assert!(
        diagnostic.message.contains("cannot be read on the server")
            && diagnostic.message.contains("no-such-token"),
        "{}",
        diagnostic.message
    );
    // The fleet stays on what it had: same revision, nothing new offered.
    assert_eq!(server.store.current().unwrap().id, served);
    let msg = prod.id.heartbeat();
    let reply = prod.exchange(msg).await;
    assert!(reply.connection_settings.is_none());
    assert!(!before.own_metrics.unwrap().destination_endpoint.is_empty());
    server.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn check_validates_the_section_and_leaves_secrets_to_the_server() {
    // A reference to a file only the server has: `check` passes (it runs in CI, without it).
    let repo = repo_with_telemetry(std::path::Path::new("/run/secrets/otlp-token"));
    let result = run_cli(repo.path(), &["check", "."]);
    assert_eq!(result.code, 0, "{result:?}");

    // A malformed section: an error with file and line, in words.
    repo.edit(
        "fleet.yaml",
        "endpoint: \"http://logs.example:4318/v1/logs\"",
        "endpoint: \"logs.example:4318\"",
    );
    let result = run_cli(repo.path(), &["check", ".", "--format", "json"]);
    assert_eq!(result.code, 1, "{result:?}");
    let report: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    let diagnostic = &report["diagnostics"][0];
    assert_eq!(diagnostic["file"], "fleet.yaml");
    assert_eq!(diagnostic["rule"], "prod");
    assert_eq!(
        diagnostic["line"], 16,
        "the rule's telemetry: line; {report:#}"
    );
    assert!(
        diagnostic["message"]
            .as_str()
            .unwrap()
            .contains("telemetry.logs: endpoint `logs.example:4318` is not an http:// or https:// OTLP/HTTP URL"),
        "{report:#}"
    );
}
