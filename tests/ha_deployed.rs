//! The `ha` overlay as deployed: two `serve` processes started with the flags and variables the
//! rendered Deployment gives its pods (read from the manifests, so they cannot drift), on
//! loopback, sharing a throwaway PostgreSQL database as the Secret's store URL. Through either
//! replica: the same agent gets the same desired hash, an agent moving from A to B is sent
//! nothing again, a commit reaches the agents of both, and each lists the whole fleet.

mod common;

use common::admin::{api, github_push};
use common::agent::{config_hash, Identity, WsAgent};
use common::deploy::{object, render, Launch};
use common::git::GitRemote;
use common::served::{metric, ServeProcess};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const PROD: &[(&str, &str)] = &[("environment", "production"), ("service.name", "otel")];
const AGENT_TOKEN: &str = "agent-secret";
const ADMIN_TOKEN: &str = "admin-secret";
const WEBHOOK_SECRET: &str = "webhook-secret";

/// What the cluster's Secrets hold, for a replica on loopback.
fn secret(secret: &str, key: &str) -> String {
    match (secret, key) {
        ("opamp-gitops-agent-tokens", "tokens") => format!("collector:{AGENT_TOKEN}\n"),
        ("opamp-gitops-admin-tokens", "tokens") => format!("ops:{ADMIN_TOKEN}\n"),
        ("opamp-gitops-webhook", "secret") => format!("{WEBHOOK_SECRET}\n"),
        ("opamp-gitops-git", "token") => "unused-for-a-local-remote\n".into(),
        other => panic!("the ha Deployment reads a Secret this test does not know: {other:?}"),
    }
}

struct Replica {
    name: String,
    process: ServeProcess,
    _volumes: tempfile::TempDir,
}

/// One pod of the rendered `ha` Deployment, as the kubelet would start it.
fn replica(objects: &[Value], name: &str, store_url: &str, repo_url: &str) -> Replica {
    let deployment = object(objects, "Deployment", None);
    let mut launch = Launch::of(objects, deployment, |var, from| match var {
        "OPAMP_GITOPS_STORE" => {
            assert_eq!(from["secretKeyRef"]["name"], "opamp-gitops-store");
            assert_eq!(from["secretKeyRef"]["key"], "url");
            store_url.to_owned()
        }
        "OPAMP_GITOPS_REPLICA_ID" => {
            assert_eq!(from["fieldRef"]["fieldPath"], "metadata.name");
            name.to_owned()
        }
        other => panic!("the ha Deployment sets {other} from {from}: give the test its value"),
    });
    let volumes = tempfile::tempdir().unwrap();
    launch.materialize(deployment, volumes.path(), secret);
    launch.on_loopback();
    assert!(launch.env_value("OPAMP_GITOPS_REPO").is_some());
    launch.set_env("OPAMP_GITOPS_REPO", repo_url);
    Replica {
        name: name.to_owned(),
        process: launch.start(),
        _volumes: volumes,
    }
}

/// The agents `admin` lists: uid, replica, connected, desired hash.
fn listed(admin: SocketAddr) -> Vec<(String, String, bool, String)> {
    api(admin, "/api/agents")["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["instance_uid"].as_str().unwrap().to_owned(),
                a["replica"].as_str().unwrap_or_default().to_owned(),
                a["connected"].as_bool().unwrap(),
                a["desired_hash"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until every replica lists exactly `want` (uid, holding replica, desired hash), all
/// connected.
async fn every_replica_lists(replicas: &[&Replica], want: &[(String, String, String)]) {
    let mut want = want.to_vec();
    want.sort();
    for r in replicas {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = listed(r.process.admin);
            let mut all: Vec<(String, String, String)> = seen
                .iter()
                .filter(|(_, _, connected, _)| *connected)
                .map(|(u, r, _, h)| (u.clone(), r.clone(), h.clone()))
                .collect();
            all.sort();
            if all == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{} lists {seen:#?}, not {want:#?}",
                r.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pushes(r: &Replica) -> f64 {
    let text = common::admin::get(r.process.admin, "/metrics").body;
    metric(&text, "opamp_gitops_config_pushes_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_as_the_ha_overlay_deploys_them_serve_one_fleet() {
    if std::env::var_os("OPAMP_GITOPS_TEST_POSTGRES_URL").is_none() {
        eprintln!(
            "SKIPPED: OPAMP_GITOPS_TEST_POSTGRES_URL is not set (scripts/test.sh sets it; or \
             `scripts/postgres.sh start` and export the URL it prints)"
        );
        return;
    }
    let objects = render("deploy/kubernetes/overlays/ha");
    let store = common::postgres::database().await;
    let remote = GitRemote::new();
    let a = replica(&objects, "opamp-gitops-a", &store, &remote.file_url());
    let b = replica(&objects, "opamp-gitops-b", &store, &remote.file_url());

    // Arrange: one agent on each replica, each applying what it is sent.
    let mut on_a =
        WsAgent::connect_with_token(a.process.opamp, Identity::new(PROD), AGENT_TOKEN).await;
    let mut on_b =
        WsAgent::connect_with_token(b.process.opamp, Identity::new(PROD), AGENT_TOKEN).await;
    let mut hashes = Vec::new();
    for ws in [&mut on_a, &mut on_b] {
        let msg = ws.id.full_state(&[], Unset);
        let hash = config_hash(&ws.exchange(msg).await).expect("a config for a new agent");
        let msg = ws.id.report(&hash, Applied, "");
        ws.exchange(msg).await;
        hashes.push(hash);
    }
    assert_eq!(
        hashes[0], hashes[1],
        "two replicas on one repository compute the same desired hash"
    );
    let (uid_a, uid_b) = (on_a.id.uid_string(), on_b.id.uid_string());
    let hash = hex::encode(&hashes[0]);

    // Either replica lists the whole fleet, each agent with the replica that holds it and the
    // same desired hash.
    every_replica_lists(
        &[&a, &b],
        &[
            (uid_a.clone(), a.name.clone(), hash.clone()),
            (uid_b.clone(), b.name.clone(), hash.clone()),
        ],
    )
    .await;

    // A commit reaches the agents of both: the forge's webhook reaches one replica through the
    // Service (A here); A announces the commit it took, and B, which the webhook did not reach
    // and whose next poll is up to 30 s away, fetches at once.
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
    remote.commit("a longer batch timeout");
    remote.push();
    let hook = common::block(|| github_push(a.process.admin, WEBHOOK_SECRET, "main")).await;
    assert_eq!(hook.status, 202, "{}", hook.body);
    let new_a = config_hash(&on_a.recv().await).expect("A's agent gets the commit");
    let new_b = config_hash(&on_b.recv().await).expect("B's agent gets the commit");
    assert_eq!(new_a, new_b);
    assert_ne!(new_a, hashes[0]);
    for ws in [&mut on_a, &mut on_b] {
        let msg = ws.id.report(&new_a, Applied, "");
        ws.exchange(msg).await;
    }
    let new_hash = hex::encode(&new_a);

    // A's agent moves to B (its pod restarted, or the Service balanced it elsewhere) and,
    // reporting the desired hash, is sent nothing again.
    let before = pushes(&b);
    let identity = on_a.id.clone();
    drop(on_a);
    let mut moved = WsAgent::connect_with_token(b.process.opamp, identity, AGENT_TOKEN).await;
    let msg = moved.id.full_state(&new_a, Applied);
    let reply = moved.exchange(msg).await;
    assert!(reply.remote_config.is_none(), "nothing re-sent: {reply:?}");
    assert!(
        moved
            .recv_within(Duration::from_millis(500))
            .await
            .is_none(),
        "and nothing later"
    );
    assert_eq!(pushes(&b), before, "B pushed nothing");

    every_replica_lists(
        &[&a, &b],
        &[
            (uid_a.clone(), b.name.clone(), new_hash.clone()),
            (uid_b.clone(), b.name.clone(), new_hash.clone()),
        ],
    )
    .await;
}
