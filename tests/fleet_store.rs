//! The fleet store on SQLite: the server killed (SIGKILL) and started again keeps its fleet,
//! its agents' history and its audit trail, and sends nothing to agents that continue where
//! they were; a store file it cannot use is refused at start with its path and what to do.

mod common;

use common::admin::{api, get};
use common::agent::*;
use common::repo::TestRepo;
use common::served::{metric, ServeProcess};
use common::server::{eventually, start_with};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use opamp_gitops::opamp::FLAG_REPORT_FULL_STATE;
use opamp_gitops::server::ServeOptions;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

const PROD: &[(&str, &str)] = &[("environment", "production"), ("service.name", "otel")];

fn store_args<'a>(repo: &'a TestRepo, cache: &'a Path) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("--repo"),
        repo.path().as_os_str(),
        OsStr::new("--cache-dir"),
        cache.as_os_str(),
        OsStr::new("--store-flush-interval"),
        OsStr::new("100ms"),
    ]
}

/// Connects an agent, gets its config and reports it applied; returns it with the hash.
async fn applied_agent(server: &ServeProcess) -> (WsAgent, Vec<u8>) {
    let mut ws = WsAgent::connect(server.opamp, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    let hash = config_hash(&ws.exchange(msg).await).expect("the first reply carries a config");
    let msg = ws.id.report(&hash, Applied, "");
    ws.exchange(msg).await;
    (ws, hash)
}

/// Stored agents that report the hash they should run, with the sequence numbers stored.
fn stored_applied(db: &Path) -> Vec<(String, i64, bool)> {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut s) = c.prepare(
        "SELECT instance_uid, sequence_num, connected FROM agents
         WHERE remote_config_status = 'applied' AND reported_hash = desired_hash",
    ) else {
        return Vec::new();
    };
    s.query_map([], |r| {
        let uid: Vec<u8> = r.get(0)?;
        Ok((
            uuid::Uuid::from_slice(&uid).unwrap().to_string(),
            r.get(1)?,
            r.get(2)?,
        ))
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_with_its_fleet_and_sends_nothing_to_agents_that_continue() {
    let repo = TestRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let db = cache.path().join("fleet.db");
    let mut first = ServeProcess::start(&store_args(&repo, cache.path()));
    let mut staying = Vec::new();
    for _ in 0..3 {
        staying.push(applied_agent(&first).await);
    }
    let (gapped, _) = applied_agent(&first).await;
    let (leaver, leaver_hash) = applied_agent(&first).await;
    let leaver_uid = leaver.id.uid_string();
    drop(leaver);

    // Arrange: everything flushed (the leaver as disconnected) before the kill.
    let wanted: Vec<(String, i64)> = staying
        .iter()
        .map(|(a, _)| a)
        .chain([&gapped])
        .map(|a| (a.id.uid_string(), a.id.sequence_num as i64))
        .collect();
    eventually(Duration::from_secs(20), "every agent flushed", || {
        let stored = stored_applied(&db);
        let all = wanted
            .iter()
            .all(|(uid, seq)| stored.iter().any(|(u, s, c)| u == uid && s == seq && *c));
        let left = stored.iter().any(|(u, _, c)| *u == leaver_uid && !c);
        (all && left).then_some(())
    })
    .await;
    let metrics = get(first.admin, "/metrics").body;
    assert!(metric(&metrics, "opamp_gitops_store_writes_total") >= 1.0);
    assert!(
        metric(&metrics, "opamp_gitops_store_agent_writes_total") >= 5.0,
        "each of the five agents written: {metrics}"
    );
    first.kill();

    // Act: a new server on the same store; the agents reconnect.
    let second = ServeProcess::start(&store_args(&repo, cache.path()));
    let listed = api(second.admin, &format!("/api/agents/{leaver_uid}"));
    assert_eq!(listed["connected"], false, "{listed}");
    assert_eq!(listed["status"], "applied", "{listed}");
    for (agent, _) in &mut staying {
        let mut ws = WsAgent::connect(second.opamp, agent.id.clone()).await;
        let msg = ws.id.heartbeat();
        let reply = ws.exchange(msg).await;
        assert_eq!(
            reply.flags & FLAG_REPORT_FULL_STATE,
            0,
            "a continuing agent"
        );
        assert!(reply.remote_config.is_none(), "its hash matches: no push");
        *agent = ws;
    }
    let mut ws = WsAgent::connect(second.opamp, gapped.id.clone()).await;
    ws.id.sequence_num += 5;
    let msg = ws.id.heartbeat();
    let reply = ws.exchange(msg).await;
    assert_ne!(
        reply.flags & FLAG_REPORT_FULL_STATE,
        0,
        "a sequence gap asks for the full state"
    );

    // Assert: nothing pushed, one full-state request (the gap), the leaver listed with its
    // history, and the audit trail from before the kill.
    let metrics = get(second.admin, "/metrics").body;
    assert_eq!(metric(&metrics, "opamp_gitops_config_pushes_total"), 0.0);
    assert_eq!(
        metric(&metrics, "opamp_gitops_full_state_requests_total"),
        1.0
    );
    let summary = api(second.admin, "/api/summary");
    assert_eq!(summary["store"]["backend"], "sqlite", "{summary}");
    assert_eq!(summary["store"]["ok"], true, "{summary}");
    for (agent, _) in &staying {
        let a = api(
            second.admin,
            &format!("/api/agents/{}", agent.id.uid_string()),
        );
        assert_eq!(a["connected"], true);
        assert_eq!(a["status"], "applied");
    }
    let history = api(second.admin, &format!("/api/agents/{leaver_uid}/history"));
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!(entries[0]["config_hash"], hex::encode(&leaver_hash));
    assert!(entries[0]["left_at"].is_null());
    let revision = entries[0]["revision"]
        .as_str()
        .expect("a revision")
        .to_owned();
    let running = api(second.admin, &format!("/api/revisions/{revision}/agents"));
    assert_eq!(running["total"], 5, "{running}");
    let events = api(second.admin, &format!("/api/events?agent={leaver_uid}"));
    let text = events.to_string();
    assert!(text.contains("config_sent"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_follows_the_configs_an_agent_applies() {
    let repo = TestRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::local(repo.path());
    options.cache_dir = cache.path().to_owned();
    options.fleet_store.store = None;
    let server = start_with(options).await;
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = ws.id.full_state(&[], Unset);
    let first = config_hash(&ws.exchange(msg).await).unwrap();
    let msg = ws.id.report(&first, Applied, "");
    ws.exchange(msg).await;
    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
    server.reload().await;
    let second = config_hash(&ws.recv().await).expect("the new config is pushed");
    let msg = ws.id.report(&second, Applied, "");
    ws.exchange(msg).await;

    let uid = ws.id.uid_string();
    let history = api(server.admin_addr, &format!("/api/agents/{uid}/history"));
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(
        entries[0]["config_hash"],
        hex::encode(&second),
        "newest first"
    );
    assert!(entries[0]["left_at"].is_null());
    assert_eq!(entries[1]["config_hash"], hex::encode(&first));
    assert!(entries[1]["left_at"].is_string());
    assert_ne!(entries[0]["revision"], entries[1]["revision"]);
    let old = entries[1]["revision"].as_str().unwrap();
    let running = api(server.admin_addr, &format!("/api/revisions/{old}/agents"));
    assert_eq!(
        running["total"], 0,
        "nobody runs the old revision's config: {running}"
    );
    let page = get(server.admin_addr, &format!("/agents/{uid}")).body;
    let history_section = page.split("<h2>History</h2>").nth(1).unwrap_or_default();
    assert!(
        history_section.contains(&hex::encode(&first)),
        "the agent page shows its history: {page}"
    );
    assert_eq!(
        get(server.admin_addr, "/api/agents/not-a-uid/history").status,
        400
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_use_corrupt_or_foreign_is_refused_at_start_with_its_path() {
    let repo = TestRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let _holder = ServeProcess::start(&store_args(&repo, cache.path()));
    let (code, stderr) = ServeProcess::refused(&store_args(&repo, cache.path()));
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("in use by another running opamp-gitops server"),
        "{stderr}"
    );

    let other = tempfile::tempdir().unwrap();
    let garbage = other.path().join("fleet.db");
    std::fs::write(
        &garbage,
        "this is not a database, but it is long enough to look like one: ".repeat(200),
    )
    .unwrap();
    let (code, stderr) = ServeProcess::refused(&store_args(&repo, other.path()));
    assert_ne!(code, Some(0));
    assert!(stderr.contains(&garbage.display().to_string()), "{stderr}");
    assert!(stderr.contains("move the file away"), "{stderr}");
}
