//! The server against opamp-go, the reference OpAMP implementation, through a small agent on its
//! `client` package (tests/reference/opampgo-agent), over WebSocket and plain HTTP.

mod common;

use common::process::Peer;
use common::repo::TestRepo;
use common::server::{agent, eventually, start};
use opamp_gitops::fleet::status::Status;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn opampgo(endpoint: &str, uid: &str, extra: &[&str]) -> Peer {
    let mut command = Command::new(common::reference::opampgo_agent());
    command.args([
        "--endpoint",
        endpoint,
        "--uid",
        uid,
        "--attr",
        "environment=production",
        "--attr",
        "service.name=otel",
    ]);
    command.args(["--poll-interval", "200ms"]);
    command.args(extra);
    Peer::spawn("opampgo-agent", command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opamp_go_over_websocket_applies_reconnects_without_a_push_and_receives_new_revisions() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let state = tempfile::tempdir().unwrap();
    let uid = uuid::Uuid::now_v7().to_string();
    let endpoint = format!("ws://{}/v1/opamp", server.opamp_addr);
    let state_dir = state.path().to_str().unwrap().to_owned();

    let mut go = opampgo(&endpoint, &uid, &["--state-dir", &state_dir]);
    let config = go.wait_event(WAIT, "remote_config");
    assert!(config["files"]["collector.yaml"]
        .as_str()
        .unwrap()
        .contains("tempo-production.monitoring.svc:4317"));
    let hash = config["hash"].as_str().unwrap().to_owned();
    go.wait_event(WAIT, "applied");
    let summary = eventually(WAIT, "applied in the registry", || {
        agent(&server, &uid).filter(|a| a.status == Status::Applied)
    })
    .await;
    assert_eq!(summary.desired_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(summary.rule.as_deref(), Some("prod"));

    // The agent restarts and reconnects reporting the hash it runs: nothing is sent.
    go.stop();
    let pushes = server.metrics.config_pushes.get();
    eventually(WAIT, "disconnected", || {
        agent(&server, &uid).filter(|a| !a.connected)
    })
    .await;
    let mut go = opampgo(&endpoint, &uid, &["--state-dir", &state_dir]);
    go.wait_event(WAIT, "restored");
    eventually(WAIT, "reconnected and applied", || {
        agent(&server, &uid).filter(|a| a.connected && a.status == Status::Applied)
    })
    .await;
    assert_eq!(
        server.metrics.config_pushes.get(),
        pushes,
        "no config re-sent to an agent whose hash matches"
    );

    // A new revision is pushed over the WebSocket without the agent asking.
    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 8s");
    server.reload().await;
    let pushed = go.wait_for(WAIT, "the new config", |e| {
        e["event"] == "remote_config" && e["hash"] != hash.as_str()
    });
    assert!(pushed["files"]["collector.yaml"]
        .as_str()
        .unwrap()
        .contains("timeout: 8s"));
    let new_hash = pushed["hash"].as_str().unwrap().to_owned();
    eventually(WAIT, "new hash applied", || {
        agent(&server, &uid).filter(|a| {
            a.status == Status::Applied && a.reported_hash.as_deref() == Some(new_hash.as_str())
        })
    })
    .await;
    assert!(
        go.drain()
            .iter()
            .all(|e| e["event"] != "remote_config" || e["hash"] != hash.as_str()),
        "the old config was not re-sent"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opamp_go_over_plain_http_applies_and_picks_up_a_new_revision_on_its_next_poll() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let uid = uuid::Uuid::now_v7().to_string();
    let mut go = opampgo(&format!("http://{}/v1/opamp", server.opamp_addr), &uid, &[]);
    let config = go.wait_event(WAIT, "remote_config");
    let hash = config["hash"].as_str().unwrap().to_owned();
    go.wait_event(WAIT, "applied");
    let summary = eventually(WAIT, "applied", || {
        agent(&server, &uid).filter(|a| a.status == Status::Applied)
    })
    .await;
    assert_eq!(
        summary.transport,
        opamp_gitops::fleet::record::Transport::Http
    );

    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    server.reload().await;
    let pushed = go.wait_for(WAIT, "the new config", |e| {
        e["event"] == "remote_config" && e["hash"] != hash.as_str()
    });
    assert!(pushed["files"]["collector.yaml"]
        .as_str()
        .unwrap()
        .contains("timeout: 6s"));
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opamp_go_reporting_failed_is_not_sent_the_same_config_again() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let uid = uuid::Uuid::now_v7().to_string();
    let mut go = opampgo(
        &format!("ws://{}/v1/opamp", server.opamp_addr),
        &uid,
        &["--fail"],
    );
    go.wait_event(WAIT, "remote_config");
    go.wait_event(WAIT, "failed");
    let summary = eventually(WAIT, "failed", || {
        agent(&server, &uid).filter(|a| a.status == Status::Failed)
    })
    .await;
    assert_eq!(
        summary.last_error.as_deref(),
        Some("rejected by test agent")
    );
    let pushes = server.metrics.config_pushes.get();
    // A new connection of the same agent: the FAILED hash is remembered.
    go.stop();
    let mut go = opampgo(
        &format!("ws://{}/v1/opamp", server.opamp_addr),
        &uid,
        &["--fail"],
    );
    go.wait_event(WAIT, "connected");
    eventually(WAIT, "reconnected", || {
        agent(&server, &uid).filter(|a| a.connected)
    })
    .await;
    assert_eq!(server.metrics.config_pushes.get(), pushes);
    server.shutdown(Duration::from_secs(5)).await;
}
