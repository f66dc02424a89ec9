//! What an operator reads must be true: the revision an agent shows is the one whose render
//! produced the config it runs (not the server's current one), a git revision names its commit,
//! a changed effective config shows as `drifted`, a disconnected agent's health is unknown, and
//! health errors stay apart from config errors.

mod common;

use bytes::Bytes;
use common::admin::api;
use common::agent::{config_hash, Identity, WsAgent};
use common::git::GitRemote;
use common::repo::TestRepo;
use common::server::{agent, eventually, start, start_with};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Failed, Unset};
use opamp_gitops::opamp::proto::{
    AgentConfigFile, AgentConfigMap, AgentToServer, ComponentHealth, EffectiveConfig, ServerToAgent,
};
use opamp_gitops::server::{ServeOptions, Server};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const PROD: &[(&str, &str)] = &[("environment", "production")];
const STAGING: &[(&str, &str)] = &[("environment", "staging")];

/// An effective config made of `files`, as a collector reports it.
fn effective(files: &[(&str, &str)]) -> EffectiveConfig {
    EffectiveConfig {
        config_map: Some(AgentConfigMap {
            config_map: files
                .iter()
                .map(|(name, body)| {
                    (
                        name.to_string(),
                        AgentConfigFile {
                            body: Bytes::copy_from_slice(body.as_bytes()),
                            content_type: "text/yaml".into(),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }),
    }
}

/// The files of a reply's remote config.
fn files_of(reply: &ServerToAgent) -> Vec<(String, String)> {
    let map = &reply
        .remote_config
        .as_ref()
        .unwrap()
        .config
        .as_ref()
        .unwrap()
        .config_map;
    map.iter()
        .map(|(k, f)| (k.clone(), String::from_utf8_lossy(&f.body).into_owned()))
        .collect()
}

/// A connected agent that got its config and reported it applied, with that config as its
/// effective config; returns the agent and its hash.
async fn applied(server: &Server, attrs: &[(&str, &str)]) -> (WsAgent, Vec<u8>) {
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(attrs)).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    let hash = config_hash(&reply).expect("a config");
    let files = files_of(&reply);
    let mut report = ws.id.report(&hash, Applied, "");
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    report.effective_config = Some(effective(&borrowed));
    ws.exchange(report).await;
    let uid = ws.id.uid_string();
    eventually(WAIT, "the agent applied", || {
        agent(server, &uid).filter(|a| a.status.as_str() == "applied")
    })
    .await;
    (ws, hash)
}

fn current_id(server: &Server) -> String {
    server.store.status().current.expect("a revision").id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shows_the_revision_that_rendered_the_config_it_runs() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let first = current_id(&server);
    let (mut prod, _) = applied(&server, PROD).await;
    let (mut staging, staging_hash) = applied(&server, STAGING).await;
    let (prod_uid, staging_uid) = (prod.id.uid_string(), staging.id.uid_string());
    assert_eq!(
        agent(&server, &staging_uid).unwrap().revision.as_deref(),
        Some(first.as_str())
    );

    // A commit that changes only the staging agents' config.
    repo.edit(
        "templates/base.yaml.j2",
        "timeout: {{ vars.timeout }}",
        "timeout: 9s",
    );
    assert!(server.reload().await);
    let second = current_id(&server);
    assert_ne!(first, second);
    let pushed = staging.recv().await;
    let new_hash = config_hash(&pushed).expect("the new config is pushed");
    assert_ne!(new_hash, staging_hash);

    // The staging agent fails the new config: it still runs what the first revision rendered.
    let msg = staging.id.report(&new_hash, Failed, "exporter debug: boom");
    staging.exchange(msg).await;
    let failed = eventually(WAIT, "the failure is reported", || {
        agent(&server, &staging_uid).filter(|a| a.status.as_str() == "failed")
    })
    .await;
    assert_eq!(
        failed.revision.as_deref(),
        Some(first.as_str()),
        "not the current revision"
    );
    // The production agent's config is the same under the new revision, which rendered it too.
    assert_eq!(
        agent(&server, &prod_uid).unwrap().revision.as_deref(),
        Some(second.as_str())
    );

    // Once it applies the new config, it runs the new revision.
    let msg = staging.id.report(&new_hash, Applied, "");
    staging.send(msg).await;
    eventually(WAIT, "the staging agent runs the new revision", || {
        agent(&server, &staging_uid).filter(|a| a.revision.as_deref() == Some(second.as_str()))
    })
    .await;

    // An agent that runs a config no revision of this server rendered: unknown.
    let mut stranger = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = stranger.id.full_state(&[7u8; 32], Applied);
    stranger.exchange(msg).await;
    let uid = stranger.id.uid_string();
    let listed = api(server.admin_addr, &format!("/api/agents/{uid}"));
    assert!(listed["revision"].is_null(), "{listed}");
    // The production agent stayed connected throughout.
    let heartbeat = prod.id.heartbeat();
    prod.exchange(heartbeat).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_revision_carries_its_commits_subject_author_and_time() {
    let remote = GitRemote::new();
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
    let sha = remote.commit("Raise the batch timeout for the gateways");
    remote.push();
    let cache = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::local(".");
    options.repo = remote.file_url();
    options.cache_dir = cache.path().to_owned();
    options.poll_interval = Duration::from_secs(3600);
    let server = start_with(options).await;
    let revision = api(server.admin_addr, "/api/revision");
    let current = &revision["current"];
    assert_eq!(current["id"], sha.as_str());
    let commit = &current["commit"];
    assert_eq!(
        commit["subject"],
        "Raise the batch timeout for the gateways"
    );
    assert_eq!(commit["author"], "Test <test@example.com>");
    let time = commit["time"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    // A file:// remote is on no forge: no link.
    assert!(commit["url"].is_null(), "{commit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_revision_has_no_commit() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let revision = api(server.admin_addr, "/api/revision");
    assert!(revision["current"]["commit"].is_null(), "{revision}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effective_config_that_left_the_desired_one_is_drifted() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let (mut ws, hash) = applied(&server, STAGING).await;
    let uid = ws.id.uid_string();

    // The collector reports the desired hash but runs something else (edited by hand, say).
    let mut msg = ws.id.report(&hash, Applied, "");
    msg.effective_config = Some(effective(&[(
        "collector.yaml",
        "receivers: {otlp: {protocols: {grpc: null}}}\nexporters: {debug: null}\nprocessors: {batch: {timeout: 1h}}\nservice: {pipelines: {traces: {receivers: [otlp], processors: [batch], exporters: [debug]}}}\n",
    )]));
    ws.send(msg).await;
    eventually(WAIT, "drifted", || {
        agent(&server, &uid).filter(|a| a.status.as_str() == "drifted")
    })
    .await;
    let summary = api(server.admin_addr, "/api/summary");
    assert!(
        summary["by_status"].to_string().contains("[\"drifted\",1]"),
        "{summary}"
    );

    // The same config as the Supervisor writes it back (reordered, its own extension added):
    // applied again.
    let mut msg = ws.id.report(&hash, Applied, "");
    msg.effective_config = Some(effective(&[(
        "",
        "exporters:\n  debug: null\nextensions:\n  opamp: {server: {ws: {endpoint: 'ws://127.0.0.1:4320/v1/opamp'}}}\nprocessors:\n  batch:\n    timeout: 5s\nreceivers:\n  otlp:\n    protocols:\n      grpc: null\nservice:\n  extensions: [opamp]\n  pipelines:\n    traces:\n      exporters: [debug]\n      processors: [batch]\n      receivers: [otlp]\n",
    )]));
    ws.send(msg).await;
    eventually(WAIT, "applied again", || {
        agent(&server, &uid).filter(|a| a.status.as_str() == "applied")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_reports_no_effective_config_shows_not_reported() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(STAGING)).await;
    // The test agent's full state carries an empty effective config: a report of nothing.
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    let hash = config_hash(&reply).unwrap();
    let msg = ws.id.report(&hash, Applied, "");
    ws.exchange(msg).await;
    let uid = ws.id.uid_string();
    let detail = api(server.admin_addr, &format!("/api/agents/{uid}"));
    assert_eq!(detail["status"], "applied", "{detail}");
    assert!(detail["effective_config"].is_null(), "{detail}");
    assert!(
        detail["diff"].is_null(),
        "no diff against nothing: {detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_errors_stay_apart_from_config_errors_and_go_unknown_on_disconnect() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let (mut ws, hash) = applied(&server, STAGING).await;
    let uid = ws.id.uid_string();

    let unhealthy = |msg: &mut AgentToServer| {
        msg.health = Some(ComponentHealth {
            healthy: false,
            last_error: "exporter debug: queue is full".into(),
            ..Default::default()
        });
    };
    let mut msg = ws.id.heartbeat();
    unhealthy(&mut msg);
    ws.exchange(msg).await;
    let detail = api(server.admin_addr, &format!("/api/agents/{uid}"));
    assert_eq!(detail["status"], "applied");
    assert_eq!(detail["healthy"], false);
    assert!(
        detail["last_error"].is_null(),
        "a health error is not a config error: {detail}"
    );
    assert_eq!(detail["health_error"], "exporter debug: queue is full");

    // A config failure on top: each error in its own field.
    let mut msg = ws.id.report(&hash, Failed, "cannot start pipeline traces");
    unhealthy(&mut msg);
    ws.exchange(msg).await;
    let detail = api(server.admin_addr, &format!("/api/agents/{uid}"));
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["last_error"], "cannot start pipeline traces");
    assert_eq!(detail["health_error"], "exporter debug: queue is full");
    let summary = api(server.admin_addr, "/api/summary");
    assert_eq!(
        (
            summary["unhealthy"].as_u64(),
            summary["disconnected"].as_u64()
        ),
        (Some(1), Some(0))
    );

    // Gone: its health is unknown, and it counts as disconnected, not as unhealthy.
    drop(ws);
    let gone = eventually(WAIT, "disconnected", || {
        agent(&server, &uid).filter(|a| !a.connected)
    })
    .await;
    assert_eq!(gone.healthy, None);
    assert_eq!(gone.health_error, None);
    let summary = api(server.admin_addr, "/api/summary");
    assert_eq!(summary["disconnected"], 1, "{summary}");
    assert_eq!(summary["unhealthy"], 0, "{summary}");
    assert_eq!(summary["healthy"], 0, "{summary}");
    assert_eq!(summary["health_unknown"], 0, "{summary}");
}
