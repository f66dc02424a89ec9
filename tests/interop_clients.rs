//! The server against third-party OpAMP clients installed unmodified from their registries:
//! PyPI `opentelemetry-opamp-client` and npm `@elastic/opamp-client-node` (plain HTTP both).

mod common;

use common::process::Peer;
use common::repo::{expected_hash, TestRepo};
use common::server::{agent, eventually, start};
use opamp_gitops::fleet::record::Transport;
use opamp_gitops::fleet::status::Status;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn client_applies_its_config(name: &str, mut command: Command) {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    command.args([
        "--endpoint",
        &format!("http://{}/v1/opamp", server.opamp_addr),
    ]);
    command.args([
        "--attr",
        "environment=production",
        "--attr",
        "service.name=checkout",
        "--poll-interval",
        "1s",
    ]);
    let mut peer = Peer::spawn(name, command);
    let uid = peer.wait_event(WAIT, "started")["uid"]
        .as_str()
        .expect("the driver prints its uid")
        .to_owned();
    let config = peer.wait_event(WAIT, "remote_config");
    let hash = config["hash"].as_str().unwrap().to_owned();
    let expected = expected_hash(
        &repo,
        &[("environment", "production"), ("service.name", "checkout")],
    );
    assert_eq!(hash, hex::encode(expected));
    assert!(config["files"]["collector.yaml"]
        .as_str()
        .unwrap()
        .contains("tempo-production.monitoring.svc:4317"));
    peer.wait_event(WAIT, "applied");
    let summary = eventually(WAIT, "applied in the registry", || {
        agent(&server, &uid).filter(|a| a.status == Status::Applied)
    })
    .await;
    assert_eq!(summary.transport, Transport::Http);
    assert_eq!(summary.rule.as_deref(), Some("prod"));
    assert_eq!(summary.reported_hash.as_deref(), Some(hash.as_str()));

    // A new revision reaches it on a later poll.
    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    server.reload().await;
    let newer = peer.wait_for(WAIT, "the new config", |e| {
        e["event"] == "remote_config" && e["hash"] != hash.as_str()
    });
    assert!(newer["files"]["collector.yaml"]
        .as_str()
        .unwrap()
        .contains("timeout: 6s"));
    let new_hash = newer["hash"].as_str().unwrap().to_owned();
    eventually(WAIT, "the new hash applied", || {
        agent(&server, &uid).filter(|a| {
            a.status == Status::Applied && a.reported_hash.as_deref() == Some(new_hash.as_str())
        })
    })
    .await;
    peer.stop();
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypi_opentelemetry_opamp_client_applies_its_config() {
    client_applies_its_config("python opamp client", common::clients::python_driver()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_elastic_opamp_client_node_applies_its_config() {
    client_applies_its_config("node opamp client", common::clients::node_driver()).await;
}
