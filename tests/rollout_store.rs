//! The operator's rollout decisions in the fleet store: a pause survives a SIGKILL and a restart
//! on SQLite (held agents get nothing), and a pause sent to one replica stops admissions on
//! another sharing PostgreSQL.

mod common;

use common::admin::{api, request};
use common::agent::*;
use common::postgres;
use common::repo::{expected_hash, TestRepo};
use common::served::ServeProcess;
use common::server::{eventually, start_with};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use opamp_gitops::opamp::FLAG_REPORT_FULL_STATE;
use opamp_gitops::repo::rollout::cohort;
use opamp_gitops::server::ServeOptions;
use serde_json::Value;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-token");
const DEADLINE: Duration = Duration::from_secs(30);
const DEV: &[(&str, &str)] = &[("environment", "dev")];

fn post(addr: SocketAddr, path: &str) -> u16 {
    tokio::task::block_in_place(|| request("POST", addr, path, &[ADMIN], b"")).status
}

fn rollout(addr: SocketAddr) -> Value {
    api(addr, "/api/rollout")["rollouts"][0].clone()
}

fn status(addr: SocketAddr, uid: &str) -> String {
    api(addr, &format!("/api/agents/{uid}"))["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A repository whose fleet has a one-wave rollout: a pause holds every agent.
fn rollout_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "fleet.yaml",
        &format!("{}rollout:\n  waves: [100]\n", common::repo::FLEET),
    );
    repo
}

/// An agent that gets the current config (it runs nothing yet) and applies it.
async fn applied(addr: SocketAddr, id: Identity) -> WsAgent {
    let mut ws = WsAgent::connect(addr, id).await;
    let msg = ws.id.full_state(&[], Unset);
    let hash = config_hash(&ws.exchange(msg).await).expect("the current config at once");
    let msg = ws.id.report(&hash, Applied, "");
    ws.exchange(msg).await;
    ws
}

fn stored_pauses(db: &Path) -> Vec<(String, bool)> {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut s) = c.prepare("SELECT scope, paused FROM rollout_actions") else {
        return Vec::new();
    };
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_killed_server_and_held_agents_get_nothing_after_the_restart() {
    let repo = rollout_repo();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin.tokens");
    std::fs::write(&tokens, "alice:admin-token\n").unwrap();
    let cache = dir.path().join("cache");
    let db = cache.join("fleet.db");
    let args: Vec<&OsStr> = vec![
        OsStr::new("--repo"),
        repo.path().as_os_str(),
        OsStr::new("--cache-dir"),
        cache.as_os_str(),
        OsStr::new("--store-flush-interval"),
        OsStr::new("100ms"),
        OsStr::new("--admin-token-file"),
        tokens.as_os_str(),
    ];
    let mut first = ServeProcess::start(&args);
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(applied(first.opamp, Identity::new(DEV)).await);
    }
    let v1 = expected_hash(&repo, DEV);
    eventually(DEADLINE, "the rollout of the first revision", || {
        (rollout(first.admin)["state"] == "complete").then_some(())
    })
    .await;

    // Arrange: paused through the API, stored, then a new revision the pause holds.
    assert_eq!(post(first.admin, "/api/rollout/pause"), 202);
    eventually(DEADLINE, "the pause stored", || {
        stored_pauses(&db)
            .contains(&("fleet".to_owned(), true))
            .then_some(())
    })
    .await;
    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    let v2 = expected_hash(&repo, DEV);
    assert_ne!(v1, v2);
    assert_eq!(post(first.admin, "/api/refresh"), 202);
    eventually(DEADLINE, "the new revision paused", || {
        let r = rollout(first.admin);
        (r["state"] == "paused" && r["waiting"] == 3).then_some(())
    })
    .await;
    first.kill();

    // Act: a new server on the same store; the agents come back where they were.
    let second = ServeProcess::start(&args);
    for ws in &mut agents {
        let mut again = WsAgent::connect(second.opamp, ws.id.clone()).await;
        let msg = again.id.heartbeat();
        let reply = again.exchange(msg).await;
        assert_eq!(
            reply.flags & FLAG_REPORT_FULL_STATE,
            0,
            "a continuing agent"
        );
        assert!(reply.remote_config.is_none(), "held: nothing pushed");
        *ws = again;
    }

    // Assert: still paused after the restart; the held agents get nothing until a resume.
    eventually(DEADLINE, "the restarted server's rollout paused", || {
        let r = rollout(second.admin);
        (r["state"] == "paused" && r["waiting"] == 3).then_some(())
    })
    .await;
    for ws in &mut agents {
        assert_eq!(status(second.admin, &ws.id.uid_string()), "waiting");
        let msg = ws.id.heartbeat();
        let reply = ws.exchange(msg).await;
        assert!(reply.remote_config.is_none(), "held after the restart");
    }
    assert_eq!(post(second.admin, "/api/rollout/resume"), 202);
    for ws in &mut agents {
        let reply = ws.recv().await;
        assert_eq!(config_hash(&reply), Some(v2.clone()), "resumed: pushed");
    }
}

fn pg_options(repo: &TestRepo, url: &str, replica: &str, tokens: &Path) -> ServeOptions {
    let mut options = ServeOptions::local(repo.path());
    options.fleet_store.store = Some(url.to_owned());
    options.fleet_store.store_flush_interval = Duration::from_millis(100);
    options.fleet_store.replica_id = Some(replica.into());
    options.admin_token_file = Some(tokens.to_owned());
    options
}

/// A dev agent whose cohort puts it in the first (below 50 %) or the second half.
fn in_half(first: bool) -> Identity {
    for _ in 0..10_000 {
        let id = Identity::new(DEV);
        let c = cohort(&id.uid[..].try_into().unwrap());
        if (c < 5000) == first {
            return id;
        }
    }
    unreachable!("half the uids fall in each half")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_sent_to_one_replica_stops_admissions_on_the_other() {
    let url = postgres::database().await;
    let repo = TestRepo::new();
    repo.write(
        "fleet.yaml",
        &format!(
            "{}rollout:\n  waves: [50, 100]\n  soak: 1h\n",
            common::repo::FLEET
        ),
    );
    let secrets = tempfile::tempdir().unwrap();
    let tokens = secrets.path().join("admin.tokens");
    std::fs::write(&tokens, "alice:admin-token\n").unwrap();
    let a = start_with(pg_options(&repo, &url, "replica-a", &tokens)).await;
    let b = start_with(pg_options(&repo, &url, "replica-b", &tokens)).await;
    let mut first_on_a = applied(a.opamp_addr, in_half(true)).await;
    let mut first_on_b = applied(b.opamp_addr, in_half(true)).await;
    let mut second_on_b = applied(b.opamp_addr, in_half(false)).await;

    // Arrange: a new revision; the first wave moves on both replicas, which then soak.
    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    let v2 = expected_hash(&repo, DEV);
    assert!(
        a.reload().await && b.reload().await,
        "both replicas compile it"
    );
    for ws in [&mut first_on_a, &mut first_on_b] {
        assert_eq!(config_hash(&ws.recv().await), Some(v2.clone()), "wave 1");
        let msg = ws.id.report(&v2, Applied, "");
        ws.exchange(msg).await;
    }
    for server in [&a, &b] {
        eventually(DEADLINE, "wave 1 soaking", || {
            (rollout(server.admin_addr)["state"] == "soaking").then_some(())
        })
        .await;
    }

    // Act: paused through replica A.
    assert_eq!(post(a.admin_addr, "/api/rollout/pause"), 202);

    // Assert: B pauses too, and holds its agents from the next revision (no soak) until a
    // resume sent to A.
    eventually(DEADLINE, "B's rollout paused", || {
        (rollout(b.admin_addr)["state"] == "paused").then_some(())
    })
    .await;
    repo.edit("fleet.yaml", "soak: 1h", "soak: 0s");
    repo.edit("fleet.yaml", "timeout: 6s", "timeout: 7s");
    let v3 = expected_hash(&repo, DEV);
    assert!(
        a.reload().await && b.reload().await,
        "both replicas compile it"
    );
    // B's view counts A's agent too (read from the store): all three held.
    eventually(DEADLINE, "B holds the new revision", || {
        let r = rollout(b.admin_addr);
        (r["state"] == "paused" && r["waiting"] == 3).then_some(())
    })
    .await;
    for ws in [&mut first_on_b, &mut second_on_b] {
        let msg = ws.id.heartbeat();
        let reply = ws.exchange(msg).await;
        assert!(reply.remote_config.is_none(), "held on B");
        assert_eq!(status(b.admin_addr, &ws.id.uid_string()), "waiting");
    }
    assert_eq!(post(a.admin_addr, "/api/rollout/resume"), 202);
    for ws in [&mut first_on_b, &mut second_on_b] {
        let reply = ws.recv().await;
        assert_eq!(config_hash(&reply), Some(v3.clone()), "resumed on B");
        let msg = ws.id.report(&v3, Applied, "");
        ws.exchange(msg).await;
    }
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}
