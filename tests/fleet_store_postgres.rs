//! The fleet store on PostgreSQL (the throwaway cluster of scripts/test.sh, a database per
//! test): migrations from an empty database, a newer schema refused, the password from a file,
//! and a restart that keeps the fleet and sends nothing to agents that continue.

mod common;

use common::admin::api;
use common::agent::*;
use common::postgres;
use common::repo::TestRepo;
use common::server::{eventually, start_with};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use opamp_gitops::opamp::FLAG_REPORT_FULL_STATE;
use opamp_gitops::server::{self, ServeOptions};
use std::time::Duration;

const PROD: &[(&str, &str)] = &[("environment", "production"), ("service.name", "otel")];

fn options(repo: &TestRepo, url: &str) -> ServeOptions {
    let mut options = ServeOptions::local(repo.path());
    options.fleet_store.store = Some(url.to_owned());
    options.fleet_store.store_flush_interval = Duration::from_millis(100);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_on_an_empty_database_and_a_newer_schema_is_refused() {
    let url = postgres::database().await;
    let repo = TestRepo::new();
    let server = start_with(options(&repo, &url)).await;
    let summary = api(server.admin_addr, "/api/summary");
    assert_eq!(summary["store"]["backend"], "postgres", "{summary}");
    assert_eq!(summary["store"]["ok"], true, "{summary}");
    server.shutdown(Duration::from_secs(5)).await;

    let db = postgres::connect(&url).await;
    let version: i32 = db
        .query_one("SELECT version FROM opamp_gitops_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
    let tables: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN
             ('agents', 'agent_history', 'events', 'replicas')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 4);

    db.execute("UPDATE opamp_gitops_schema SET version = 99", &[])
        .await
        .unwrap();
    let refused = server::start(options(&repo, &url))
        .await
        .err()
        .expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("schema version 99, newer than this binary"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_its_fleet_in_postgres_and_sends_nothing_to_agents_that_continue()
{
    let (url, password) = postgres::split_password(&postgres::database().await);
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let repo = TestRepo::new();
    let mut opts = options(&repo, &url);
    opts.fleet_store.store_password_file = Some(password_file);

    let first = start_with(opts.clone()).await;
    let mut agents = Vec::new();
    for _ in 0..3 {
        let mut ws = WsAgent::connect(first.opamp_addr, Identity::new(PROD)).await;
        let msg = ws.id.full_state(&[], Unset);
        let hash = config_hash(&ws.exchange(msg).await).expect("a config");
        let msg = ws.id.report(&hash, Applied, "");
        ws.exchange(msg).await;
        agents.push(ws);
    }
    let db = postgres::connect(&postgres::with_database(
        &postgres::admin_url(),
        url.rsplit_once('/').unwrap().1,
    ))
    .await;
    let wanted: Vec<(Vec<u8>, i64)> = agents
        .iter()
        .map(|a| (a.id.uid.to_vec(), a.id.sequence_num as i64))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = db
            .query(
                "SELECT instance_uid, sequence_num FROM agents
                 WHERE remote_config_status = 'applied' AND reported_hash = desired_hash",
                &[],
            )
            .await
            .unwrap();
        let stored: Vec<(Vec<u8>, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if wanted.iter().all(|w| stored.contains(w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents not flushed: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.shutdown(Duration::from_secs(5)).await;
    drop(agents);

    let second = start_with(opts).await;
    let mut reconnected = Vec::new();
    for id in wanted.iter().map(|(uid, seq)| (uid.clone(), *seq)) {
        let mut identity = Identity::new(PROD);
        identity.uid = id.0.into();
        identity.sequence_num = id.1 as u64;
        let mut ws = WsAgent::connect(second.opamp_addr, identity).await;
        let msg = ws.id.heartbeat();
        let reply = ws.exchange(msg).await;
        assert_eq!(reply.flags & FLAG_REPORT_FULL_STATE, 0);
        assert!(reply.remote_config.is_none());
        reconnected.push(ws);
    }
    let uid = uuid::Uuid::from_slice(&wanted[0].0).unwrap().to_string();
    let history = api(second.admin_addr, &format!("/api/agents/{uid}/history"));
    assert_eq!(history["history"].as_array().unwrap().len(), 1, "{history}");
    let events = api(second.admin_addr, &format!("/api/events?agent={uid}")).to_string();
    assert!(
        events.contains("config_sent"),
        "the audit trail from before: {events}"
    );
    eventually(Duration::from_secs(10), "connected again", || {
        let a = common::server::agent(&second, &uid)?;
        (a.connected && a.status.as_str() == "applied").then_some(())
    })
    .await;
    assert_eq!(second.metrics.config_pushes.get(), 0);
    assert_eq!(second.metrics.full_state_requests.get(), 0);
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_agents_still_converge_and_the_store_catches_up_after() {
    let cluster = postgres::PrivateCluster::start();
    let repo = TestRepo::new();
    let server = start_with(options(&repo, &cluster.url)).await;
    let mut agents = Vec::new();
    for _ in 0..2 {
        let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
        let msg = ws.id.full_state(&[], Unset);
        let hash = config_hash(&ws.exchange(msg).await).expect("a config");
        let msg = ws.id.report(&hash, Applied, "");
        ws.exchange(msg).await;
        agents.push(ws);
    }

    // Act: PostgreSQL goes away; a commit changes every agent's config.
    cluster.pause();
    eventually(Duration::from_secs(20), "the store reported down", || {
        let status = server.fleet.store_status();
        (!status.ok && status.last_error.is_some()).then_some(())
    })
    .await;
    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
    server.reload().await;
    let mut new_hash = Vec::new();
    for ws in &mut agents {
        new_hash = config_hash(&ws.recv().await).expect("the new config is pushed");
        let msg = ws.id.report(&new_hash, Applied, "");
        ws.exchange(msg).await;
    }
    let summary = api(server.admin_addr, "/api/summary");
    assert_eq!(summary["store"]["ok"], false, "{summary}");
    assert!(summary["store"]["last_error"].is_string(), "{summary}");
    assert!(server.metrics.store_errors.get() > 0);
    for ws in &agents {
        let a = common::server::agent(&server, &ws.id.uid_string()).unwrap();
        assert_eq!(a.status.as_str(), "applied", "served from memory meanwhile");
    }

    // Assert: PostgreSQL back, the store catches up with the agents' latest statuses.
    cluster.resume();
    eventually(Duration::from_secs(30), "the store ok again", || {
        server.fleet.store_status().ok.then_some(())
    })
    .await;
    let db = postgres::connect(&cluster.url).await;
    let rows = db
        .query(
            "SELECT instance_uid FROM agents WHERE reported_hash = $1 AND remote_config_status = 'applied'",
            &[&hex::encode(&new_hash)],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        agents.len(),
        "every agent's latest status stored"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// Agents of `server` (by its admin API) with their replica and connection.
fn listed(admin: std::net::SocketAddr) -> Vec<(String, String, bool)> {
    let agents = api(admin, "/api/agents");
    agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["instance_uid"].as_str().unwrap().to_owned(),
                a["replica"].as_str().unwrap_or_default().to_owned(),
                a["connected"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_fleet_forward_actions_and_a_dead_one_lapses() {
    let url = postgres::database().await;
    let repo = TestRepo::new();
    let secrets = tempfile::tempdir().unwrap();
    let tokens = secrets.path().join("admin.tokens");
    std::fs::write(&tokens, "ops:admin-secret\n").unwrap();
    let mut a_options = options(&repo, &url);
    a_options.fleet_store.replica_id = Some("replica-a".into());
    a_options.admin_token_file = Some(tokens);
    let a = start_with(a_options).await;
    let b_cache = tempfile::tempdir().unwrap();
    let mut b = common::served::ServeProcess::start(&[
        std::ffi::OsStr::new("--repo"),
        repo.path().as_os_str(),
        std::ffi::OsStr::new("--cache-dir"),
        b_cache.path().as_os_str(),
        std::ffi::OsStr::new("--store"),
        std::ffi::OsStr::new(&url),
        std::ffi::OsStr::new("--replica-id"),
        std::ffi::OsStr::new("replica-b"),
        std::ffi::OsStr::new("--store-flush-interval"),
        std::ffi::OsStr::new("100ms"),
    ]);

    let mut on_a = WsAgent::connect(a.opamp_addr, Identity::new(PROD)).await;
    let mut id = Identity::new(PROD);
    id.capabilities |= opamp_gitops::opamp::agent_caps::ACCEPTS_RESTART_COMMAND;
    let mut on_b = WsAgent::connect(b.opamp, id).await;
    let mut hash = Vec::new();
    for ws in [&mut on_a, &mut on_b] {
        let msg = ws.id.full_state(&[], Unset);
        hash = config_hash(&ws.exchange(msg).await).expect("a config");
        let msg = ws.id.report(&hash, Applied, "");
        ws.exchange(msg).await;
    }
    let (uid_a, uid_b) = (on_a.id.uid_string(), on_b.id.uid_string());

    // Every replica lists every agent, with the replica that holds it.
    for admin in [a.admin_addr, b.admin] {
        eventually(
            Duration::from_secs(20),
            "both agents on both replicas",
            || {
                let all = listed(admin);
                let has = |uid: &str, replica: &str| {
                    all.iter().any(|(u, r, c)| u == uid && r == replica && *c)
                };
                (has(&uid_a, "replica-a") && has(&uid_b, "replica-b")).then_some(())
            },
        )
        .await;
    }

    let summary = api(a.admin_addr, "/api/summary");
    assert_eq!(summary["replica"], "replica-a", "{summary}");
    assert_eq!(summary["total"], 2, "{summary}");

    // A push and a restart sent to A for B's agent reach it.
    let auth = [("Authorization", "Bearer admin-secret")];
    let push = common::block(|| {
        common::admin::post(
            a.admin_addr,
            &format!("/api/agents/{uid_b}/push"),
            &auth,
            b"",
        )
    })
    .await;
    assert_eq!(push.status, 202, "{}", push.body);
    let pushed = on_b.recv().await;
    assert_eq!(
        config_hash(&pushed),
        Some(hash.clone()),
        "the push reached B's agent"
    );
    let restart = common::block(|| {
        common::admin::post(
            a.admin_addr,
            &format!("/api/agents/{uid_b}/restart"),
            &auth,
            b"",
        )
    })
    .await;
    assert_eq!(restart.status, 202, "{}", restart.body);
    let command = on_b.recv().await;
    assert!(
        command.command.is_some(),
        "the restart reached B's agent: {command:?}"
    );

    // A commit reaches the agents of both replicas.
    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
    a.reload().await;
    let new_a = config_hash(&on_a.recv().await).expect("A's agent gets the commit");
    let new_b = config_hash(&on_b.recv().await).expect("B's agent gets the commit");
    assert_eq!(new_a, new_b);
    for ws in [&mut on_a, &mut on_b] {
        let msg = ws.id.report(&new_a, Applied, "");
        ws.exchange(msg).await;
    }

    // B dies: its agent shows disconnected on A after the lease, then reconnects to A and is
    // sent nothing.
    b.kill();
    eventually(
        Duration::from_secs(30),
        "B's agent disconnected after the lease",
        || {
            listed(a.admin_addr)
                .iter()
                .any(|(u, _, c)| *u == uid_b && !c)
                .then_some(())
        },
    )
    .await;
    let pushes = a.metrics.config_pushes.get();
    let mut moved = WsAgent::connect(a.opamp_addr, on_b.id.clone()).await;
    let msg = moved.id.full_state(&new_a, Applied);
    let reply = moved.exchange(msg).await;
    assert!(reply.remote_config.is_none(), "nothing re-sent");
    assert_eq!(a.metrics.config_pushes.get(), pushes);
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_rollouts_and_attribute_sets_of_one_replica_show_the_other_replicas_agents() {
    let url = postgres::database().await;
    let repo = TestRepo::new();
    repo.write(
        "fleet.yaml",
        &format!("{}rollout:\n  waves: [100]\n", common::repo::FLEET),
    );
    let mut a_options = options(&repo, &url);
    a_options.fleet_store.replica_id = Some("replica-a".into());
    let mut b_options = options(&repo, &url);
    b_options.fleet_store.replica_id = Some("replica-b".into());
    let a = start_with(a_options).await;
    let b = start_with(b_options).await;
    let mut agents = Vec::new();
    for (server, attrs) in [(&a, PROD), (&b, &[("environment", "dev")][..])] {
        let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(attrs)).await;
        let msg = ws.id.full_state(&[], Unset);
        let hash = config_hash(&ws.exchange(msg).await).expect("a config");
        let msg = ws.id.report(&hash, Applied, "");
        ws.exchange(msg).await;
        agents.push(ws);
    }
    let uid_b = agents[1].id.uid_string();

    // B's agent (its attribute set, its place in the rollout, its events) shows on A.
    eventually(Duration::from_secs(20), "both attribute sets on A", || {
        let sets = api(a.admin_addr, "/api/attribute-sets");
        let dev = sets["sets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["identifying"]["environment"] == "dev" && s["count"] == 1);
        (sets["total"] == 2 && dev).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "both agents in A's rollout",
        || {
            let r = &api(a.admin_addr, "/api/rollout")["rollouts"][0];
            (r["applied"] == 2).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(20), "B's events on A", || {
        let page = api(a.admin_addr, &format!("/api/events?agent={uid_b}"));
        let kinds: Vec<&str> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        (kinds.contains(&"config_sent") && page["total"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let own = api(b.admin_addr, &format!("/api/events?agent={uid_b}"));
    assert!(own["total"].as_u64().unwrap() >= 1, "{own}");
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_postgres_is_down_serves_agents_and_catches_up_when_it_returns() {
    let cluster = postgres::PrivateCluster::start();
    cluster.pause();
    let repo = TestRepo::new();

    // Act: the server starts without its database; agents converge from git.
    let server = start_with(options(&repo, &cluster.url)).await;
    let summary = api(server.admin_addr, "/api/summary");
    assert_eq!(summary["store"]["backend"], "postgres", "{summary}");
    assert_eq!(summary["store"]["ok"], false, "{summary}");
    assert!(summary["store"]["last_error"].is_string(), "{summary}");
    assert!(server.metrics.store_errors.get() > 0);
    let mut agents = Vec::new();
    let mut hash = Vec::new();
    for _ in 0..2 {
        let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
        let msg = ws.id.full_state(&[], Unset);
        hash = config_hash(&ws.exchange(msg).await).expect("served from git");
        let msg = ws.id.report(&hash, Applied, "");
        ws.exchange(msg).await;
        agents.push(ws);
    }
    for ws in &agents {
        let a = common::server::agent(&server, &ws.id.uid_string()).unwrap();
        assert_eq!(a.status.as_str(), "applied");
    }

    // Assert: PostgreSQL back, the store is migrated and holds the agents' statuses.
    cluster.resume();
    eventually(Duration::from_secs(30), "the store ok", || {
        server.fleet.store_status().ok.then_some(())
    })
    .await;
    let db = postgres::connect(&cluster.url).await;
    let version: i32 = db
        .query_one("SELECT version FROM opamp_gitops_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2, "migrated once it answered");
    let mut stored = 0;
    for _ in 0..100 {
        stored = db
            .query(
                "SELECT 1 FROM agents WHERE reported_hash = $1 AND remote_config_status = 'applied'",
                &[&hex::encode(&hash)],
            )
            .await
            .unwrap()
            .len();
        if stored == agents.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, agents.len(), "every agent's status caught up");
    let summary = api(server.admin_addr, "/api/summary");
    assert_eq!(summary["store"]["ok"], true, "{summary}");
    server.shutdown(Duration::from_secs(5)).await;
}
