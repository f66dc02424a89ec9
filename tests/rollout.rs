//! Staged rollouts against the real server: several dozen of our own WebSocket agents, each
//! applying (or failing) what it is sent, while commits move the repository on.

mod common;

use common::admin::{api, request};
use common::agent::{Identity, WsAgent};
use common::repo::TestRepo;
use common::server::{eventually, start_with};
use opamp_gitops::opamp::proto::{ComponentHealth, RemoteConfigStatuses};
use opamp_gitops::opamp::FLAG_REPORT_FULL_STATE;
use opamp_gitops::repo::rollout::cohort;
use opamp_gitops::server::{ServeOptions, Server};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-token");
const DEADLINE: Duration = Duration::from_secs(20);

/// Agents per cohort wave, and canary agents (environment: staging).
const PER_WAVE: usize = 8;
const CANARIES: usize = 4;

/// What every simulated agent does with a config: fail it, or apply it and turn unhealthy.
#[derive(Default)]
struct Behaviour {
    fail: Mutex<HashSet<Vec<u8>>>,
    unhealthy: Mutex<HashSet<Vec<u8>>>,
}

/// One simulated agent: a task that answers the server as a Supervisor would.
struct Sim {
    uid: String,
    /// The wave the test expects for it (0: canary), from the contract's cohort formula.
    wave: usize,
    id: Identity,
    /// The hash it runs now.
    running: Arc<Mutex<Vec<u8>>>,
    /// Every config hash it was sent.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sim {
    async fn start(
        addr: SocketAddr,
        id: Identity,
        wave: usize,
        running: Vec<u8>,
        behaviour: Arc<Behaviour>,
    ) -> Sim {
        let running = Arc::new(Mutex::new(running));
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut ws = WsAgent::connect(addr, id.clone()).await;
        let (run, got) = (running.clone(), received.clone());
        let task = tokio::spawn(async move {
            let full = |ws: &mut WsAgent, run: &Arc<Mutex<Vec<u8>>>| {
                let hash = run.lock().unwrap().clone();
                let status = if hash.is_empty() {
                    RemoteConfigStatuses::Unset
                } else {
                    RemoteConfigStatuses::Applied
                };
                ws.id.full_state(&hash, status)
            };
            let msg = full(&mut ws, &run);
            ws.send(msg).await;
            while let Some(reply) = ws.recv_within(Duration::from_secs(3600)).await {
                if reply.flags & FLAG_REPORT_FULL_STATE != 0 {
                    let msg = full(&mut ws, &run);
                    ws.send(msg).await;
                }
                let Some(rc) = reply.remote_config else {
                    continue;
                };
                let hash = rc.config_hash.to_vec();
                got.lock().unwrap().push(hash.clone());
                if behaviour.fail.lock().unwrap().contains(&hash) {
                    let msg =
                        ws.id
                            .report(&hash, RemoteConfigStatuses::Failed, "exporter otlp: bad");
                    ws.send(msg).await;
                    continue;
                }
                *run.lock().unwrap() = hash.clone();
                let msg = ws.id.report(&hash, RemoteConfigStatuses::Applied, "");
                ws.send(msg).await;
                if behaviour.unhealthy.lock().unwrap().contains(&hash) {
                    let mut msg = ws.id.heartbeat();
                    msg.health = Some(ComponentHealth {
                        healthy: false,
                        last_error: "pipeline traces: exporter down".into(),
                        ..Default::default()
                    });
                    ws.send(msg).await;
                }
            }
        });
        Sim {
            uid: id.uid_string(),
            wave,
            id,
            running,
            received,
            task,
        }
    }

    fn running(&self) -> Vec<u8> {
        self.running.lock().unwrap().clone()
    }

    fn got(&self, hash: &[u8]) -> bool {
        self.received.lock().unwrap().iter().any(|h| h == hash)
    }
}

/// Identities for `CANARIES` canary agents and `PER_WAVE` agents in each of `thresholds`'
/// cohort waves (basis points, cumulative), with their expected waves.
fn identities(thresholds: &[u32], canary: bool) -> Vec<(Identity, usize)> {
    let wave_of = |id: &Identity| {
        let c = cohort(&id.uid[..].try_into().unwrap());
        thresholds.iter().position(|&t| c < t).unwrap() + 1
    };
    let mut out = Vec::new();
    for _ in 0..CANARIES {
        let id = Identity::new(&[("environment", "staging"), ("host.name", "c")]);
        let wave = if canary { 0 } else { wave_of(&id) };
        out.push((id, wave));
    }
    let mut per_wave = vec![0; thresholds.len()];
    for _ in 0..100_000 {
        if per_wave.iter().all(|&n| n == PER_WAVE) {
            break;
        }
        let id = Identity::new(&[("environment", "dev")]);
        let c = cohort(&id.uid[..].try_into().unwrap());
        let wave = thresholds.iter().position(|&t| c < t).unwrap();
        if per_wave[wave] < PER_WAVE {
            per_wave[wave] += 1;
            out.push((id, wave + 1));
        }
    }
    assert!(per_wave.iter().all(|&n| n == PER_WAVE));
    out
}

struct Fixture {
    _tokens: tempfile::TempDir,
    repo: TestRepo,
    server: Server,
    sims: Vec<Sim>,
    behaviour: Arc<Behaviour>,
}

fn options(repo: &TestRepo, tokens: &tempfile::TempDir) -> ServeOptions {
    let mut options = ServeOptions::local(repo.path());
    options.admin_token_file = Some(tokens.path().join("admin"));
    options
}

/// A server whose fleet.yaml carries `rollout`, and agents that all run its first revision.
async fn fixture(rollout: &str, thresholds: &[u32]) -> Fixture {
    let tokens = tempfile::tempdir().unwrap();
    std::fs::write(tokens.path().join("admin"), "alice:admin-token\n").unwrap();
    let repo = TestRepo::new();
    repo.write("fleet.yaml", &format!("{}{rollout}", common::repo::FLEET));
    let server = start_with(options(&repo, &tokens)).await;
    let behaviour = Arc::new(Behaviour::default());
    let mut sims = Vec::new();
    for (id, wave) in identities(thresholds, rollout.contains("canary")) {
        sims.push(Sim::start(server.opamp_addr, id, wave, Vec::new(), behaviour.clone()).await);
    }
    let v1 = hash_now(&repo, "dev");
    // Agents that run nothing yet get the current config at once, whatever their wave.
    eventually(DEADLINE, "every agent runs the first revision", || {
        sims.iter()
            .all(|s| s.running() == v1 || s.running() == hash_now(&repo, "staging"))
            .then_some(())
    })
    .await;
    Fixture {
        _tokens: tokens,
        repo,
        server,
        sims,
        behaviour,
    }
}

fn hash_now(repo: &TestRepo, environment: &str) -> Vec<u8> {
    common::repo::expected_hash(repo, &[("environment", environment)])
}

/// A new revision: every agent's config changes (the batch timeout).
async fn commit_timeout(f: &Fixture, from: &str, to: &str) -> (Vec<u8>, Vec<u8>) {
    f.repo.edit(
        "fleet.yaml",
        &format!("timeout: {from}"),
        &format!("timeout: {to}"),
    );
    assert!(f.server.reload().await, "the revision compiles");
    (hash_now(&f.repo, "dev"), hash_now(&f.repo, "staging"))
}

fn target(sim: &Sim, dev: &[u8], staging: &[u8]) -> Vec<u8> {
    if sim.wave == 0 {
        staging.to_vec()
    } else {
        dev.to_vec()
    }
}

fn rollout(addr: SocketAddr) -> Value {
    let all = api(addr, "/api/rollout");
    all["rollouts"][0].clone()
}

fn status_of(server: &Server, uid: &str) -> String {
    common::server::agent(server, uid)
        .map(|a| a.status.as_str().to_owned())
        .unwrap_or_default()
}

/// No agent of a wave above `wave` has moved while a wave at or below it is incomplete.
fn assert_waves_in_order(sims: &[Sim], dev: &[u8], staging: &[u8]) {
    let moved = |s: &Sim| s.running() == target(s, dev, staging);
    let highest_moved = sims.iter().filter(|s| moved(s)).map(|s| s.wave).max();
    if let Some(h) = highest_moved {
        for s in sims.iter().filter(|s| s.wave < h) {
            assert!(
                moved(s),
                "an agent of wave {h} moved while agent {} of wave {} had not",
                s.uid,
                s.wave
            );
        }
    }
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let answer = tokio::task::block_in_place(|| request("POST", addr, path, headers, b""));
    let body = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, body)
}

const WAVES: [u32; 3] = [2500, 5000, 10_000];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waves_move_in_order_after_their_soak_and_the_rollout_completes() {
    let f = fixture(
        "rollout:\n  canary: { match: { environment: staging } }\n  waves: [25, 50, 100]\n  soak: 1s\n",
        &WAVES,
    )
    .await;
    let (old_dev, old_staging) = (hash_now(&f.repo, "dev"), hash_now(&f.repo, "staging"));
    let (dev, staging) = commit_timeout(&f, "5s", "6s").await;
    eventually(DEADLINE, "the canary applied", || {
        f.sims
            .iter()
            .filter(|s| s.wave == 0)
            .all(|s| s.running() == staging)
            .then_some(())
    })
    .await;
    // The others are held: they keep the old hash and show as waiting, until the soak ends.
    let held: Vec<&Sim> = f
        .sims
        .iter()
        .filter(|s| s.wave > 0 && !s.got(&dev))
        .collect();
    assert!(!held.is_empty());
    for s in f.sims.iter().filter(|s| s.wave >= 2) {
        assert_eq!(
            s.running(),
            old_dev,
            "agent {} of wave {} moved early",
            s.uid,
            s.wave
        );
        assert_eq!(status_of(&f.server, &s.uid), "waiting");
    }
    let waiting = api(f.server.admin_addr, "/api/agents?status=waiting&limit=1000");
    assert!(waiting["total"].as_u64().unwrap() >= 2 * PER_WAVE as u64);
    assert!(f
        .sims
        .iter()
        .filter(|s| s.wave == 0)
        .all(|s| s.running() != old_staging));
    let r = rollout(f.server.admin_addr);
    assert_eq!(r["scope"], "fleet");
    assert!(
        ["soaking", "progressing"].contains(&r["state"].as_str().unwrap()),
        "{r}"
    );

    eventually(DEADLINE, "the rollout completes", || {
        assert_waves_in_order(&f.sims, &dev, &staging);
        (rollout(f.server.admin_addr)["state"] == "complete").then_some(())
    })
    .await;
    for s in &f.sims {
        assert_eq!(s.running(), target(s, &dev, &staging), "agent {}", s.uid);
    }
    let r = rollout(f.server.admin_addr);
    assert_eq!(r["wave"], 3);
    assert_eq!(r["applied"].as_u64().unwrap() as usize, f.sims.len());
    assert_eq!(r["waiting"], 0);
    assert_eq!(r["waves"].as_array().unwrap().len(), 4);
    let metrics =
        tokio::task::block_in_place(|| common::admin::get(f.server.admin_addr, "/metrics")).body;
    assert!(
        metrics.contains("opamp_gitops_rollout_state{scope=\"fleet\",state=\"complete\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opamp_gitops_rollout_wave{scope=\"fleet\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "opamp_gitops_rollout_agents{{scope=\"fleet\",state=\"applied\"}} {}",
        f.sims.len()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_halt_at_max_failed_and_a_fix_commit_converges_everyone() {
    let f = fixture(
        "rollout:\n  waves: [25, 50, 100]\n  max_failed: 2\n",
        &WAVES,
    )
    .await;
    // The next revision is one every agent fails to apply.
    let next_dev = {
        f.repo.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
        let h = hash_now(&f.repo, "dev");
        f.repo.edit("fleet.yaml", "timeout: 7s", "timeout: 5s");
        h
    };
    f.behaviour.fail.lock().unwrap().insert(next_dev.clone());
    let (dev, _) = commit_timeout(&f, "5s", "7s").await;
    assert_eq!(dev, next_dev);
    eventually(DEADLINE, "the rollout halts", || {
        (rollout(f.server.admin_addr)["state"] == "halted").then_some(())
    })
    .await;
    let r = rollout(f.server.admin_addr);
    assert!(r["failed"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["failed_agents"][0]["message"], "exporter otlp: bad");
    // The halt holds: a few ticks later, still nobody outside wave 1 was sent it.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        for s in f.sims.iter().filter(|s| s.wave >= 2) {
            assert!(
                !s.got(&dev),
                "agent {} of wave {} was sent the failing config",
                s.uid,
                s.wave
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rollout(f.server.admin_addr)["state"], "halted");

    // A fix commit starts a new rollout, which reaches everyone.
    let (fixed, _) = commit_timeout(&f, "7s", "8s").await;
    eventually(DEADLINE, "everyone runs the fix", || {
        f.sims.iter().all(|s| s.running() == fixed).then_some(())
    })
    .await;
    eventually(DEADLINE, "the new rollout completes", || {
        (rollout(f.server.admin_addr)["state"] == "complete").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_unhealthy_after_applying_counts_as_a_failure() {
    let f = fixture("rollout:\n  waves: [25, 50, 100]\n", &WAVES).await;
    f.repo.edit("fleet.yaml", "timeout: 5s", "timeout: 9s");
    let next = hash_now(&f.repo, "dev");
    f.behaviour.unhealthy.lock().unwrap().insert(next.clone());
    assert!(f.server.reload().await);
    eventually(DEADLINE, "the rollout halts on an unhealthy agent", || {
        let r = rollout(f.server.admin_addr);
        (r["state"] == "halted").then_some(r)
    })
    .await;
    let r = rollout(f.server.admin_addr);
    let message = r["failed_agents"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("unhealthy") && message.contains("exporter down"),
        "{r}"
    );
    for s in f.sims.iter().filter(|s| s.wave >= 2) {
        assert!(!s.got(&next), "agent {} of wave {} got it", s.uid, s.wave);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_in_a_commit_stops_admissions_and_removing_it_resumes() {
    let f = fixture(
        "rollout:\n  waves: [25, 50, 100]\n  paused: false\n",
        &WAVES,
    )
    .await;
    let old = hash_now(&f.repo, "dev");
    f.repo.edit("fleet.yaml", "paused: false", "paused: true");
    let (dev, _) = commit_timeout(&f, "5s", "6s").await;
    eventually(DEADLINE, "the rollout shows paused", || {
        (rollout(f.server.admin_addr)["state"] == "paused").then_some(())
    })
    .await;
    let r = rollout(f.server.admin_addr);
    assert_eq!(r["admitted"], 0, "{r}");
    assert_eq!(r["waiting"].as_u64().unwrap() as usize, f.sims.len());
    assert!(f.sims.iter().all(|s| s.running() == old && !s.got(&dev)));
    f.repo.edit("fleet.yaml", "paused: true", "paused: false");
    assert!(f.server.reload().await);
    eventually(DEADLINE, "everyone moves once unpaused", || {
        assert_waves_in_order(&f.sims, &dev, &dev);
        f.sims.iter().all(|s| s.running() == dev).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_pause_and_resume_through_the_api() {
    let f = fixture("rollout:\n  waves: [25, 50, 100]\n  soak: 1h\n", &WAVES).await;
    let addr = f.server.admin_addr;
    let (status, _) = post(addr, "/api/rollout/promote", &[]);
    assert_eq!(status, 401);
    let (dev, _) = commit_timeout(&f, "5s", "6s").await;
    let wave = |n: usize| f.sims.iter().filter(move |s| s.wave == n);
    eventually(DEADLINE, "wave 1 applied, soaking", || {
        (wave(1).all(|s| s.running() == dev) && rollout(addr)["state"] == "soaking").then_some(())
    })
    .await;
    assert!(wave(2).all(|s| !s.got(&dev)));
    let (status, body) = post(addr, "/api/rollout/promote", &[ADMIN]);
    assert_eq!(
        (status, &body["scopes"][0]),
        (202, &Value::from("fleet")),
        "{body}"
    );
    eventually(DEADLINE, "wave 2 admitted at once", || {
        wave(2).all(|s| s.running() == dev).then_some(())
    })
    .await;
    assert!(wave(3).all(|s| !s.got(&dev)));
    let (status, _) = post(addr, "/api/rollout/pause?scope=fleet", &[ADMIN]);
    assert_eq!(status, 202);
    eventually(DEADLINE, "paused", || {
        (rollout(addr)["state"] == "paused").then_some(())
    })
    .await;
    let (status, _) = post(addr, "/api/rollout/promote?scope=nope", &[ADMIN]);
    assert_eq!(status, 404);
    let (status, _) = post(addr, "/api/rollout/resume", &[ADMIN]);
    assert_eq!(status, 202);
    eventually(DEADLINE, "soaking again", || {
        (rollout(addr)["state"] == "soaking").then_some(())
    })
    .await;
    assert!(
        wave(3).all(|s| !s.got(&dev)),
        "a resume does not skip the soak"
    );
    let (status, _) = post(addr, "/api/rollout/promote", &[ADMIN]);
    assert_eq!(status, 202);
    eventually(DEADLINE, "complete", || {
        (rollout(addr)["state"] == "complete").then_some(())
    })
    .await;
    let events = api(addr, "/api/events?limit=1000");
    let text = events.to_string();
    for kind in ["rollout_paused", "rollout_resumed", "rollout_promoted"] {
        assert!(text.contains(kind), "no {kind} event: {text}");
    }
    assert!(text.contains("\"token\":\"alice\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_mid_rollout_pushes_nothing_to_held_agents_and_continues_from_the_reports() {
    let mut f = fixture("rollout:\n  waves: [25, 50, 100]\n  soak: 1s\n", &WAVES).await;
    // Wave 1 moves, then the soak is made long so the restart lands mid-rollout.
    f.repo.edit("fleet.yaml", "soak: 1s", "soak: 1h");
    let (dev, _) = commit_timeout(&f, "5s", "6s").await;
    eventually(DEADLINE, "wave 1 applied", || {
        f.sims
            .iter()
            .filter(|s| s.wave == 1)
            .all(|s| s.running() == dev)
            .then_some(())
    })
    .await;
    let sims = std::mem::take(&mut f.sims);
    for s in &sims {
        s.task.abort();
    }
    f.server.shutdown(Duration::from_secs(5)).await;

    let server = start_with(options(&f.repo, &f._tokens)).await;
    let mut again = Vec::new();
    for s in &sims {
        again.push(
            Sim::start(
                server.opamp_addr,
                s.id.clone(),
                s.wave,
                s.running(),
                f.behaviour.clone(),
            )
            .await,
        );
    }
    eventually(
        DEADLINE,
        "the new server sees wave 1 done and soaks",
        || {
            let r = rollout(server.admin_addr);
            (r["state"] == "soaking" && r["wave"] == 1).then_some(())
        },
    )
    .await;
    eventually(DEADLINE, "every agent reported to the new server", || {
        again
            .iter()
            .all(|s| {
                common::server::agent(&server, &s.uid).is_some_and(|a| a.reported_hash.is_some())
            })
            .then_some(())
    })
    .await;
    for s in again.iter().filter(|s| s.wave >= 2) {
        assert!(
            s.received.lock().unwrap().is_empty(),
            "held agent {} was sent a config",
            s.uid
        );
        assert_eq!(status_of(&server, &s.uid), "waiting");
    }
    // Promoting from here continues with wave 2, as the reports imply.
    let (status, _) = post(server.admin_addr, "/api/rollout/promote", &[ADMIN]);
    assert_eq!(status, 202);
    eventually(DEADLINE, "wave 2 moves", || {
        again
            .iter()
            .filter(|s| s.wave == 2)
            .all(|s| s.running() == dev)
            .then_some(())
    })
    .await;
    assert!(again.iter().filter(|s| s.wave == 3).all(|s| !s.got(&dev)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_give_each_agent_the_same_wave() {
    let f = fixture(
        "rollout:\n  canary: { match: { environment: staging } }\n  waves: [25, 50, 100]\n  soak: 1h\n",
        &WAVES,
    )
    .await;
    let other = start_with(options(&f.repo, &f._tokens)).await;
    // The same agents (same uids) connect to the second replica too, as twins.
    let mut twins = Vec::new();
    for s in &f.sims {
        let mut id = s.id.clone();
        id.sequence_num = 0;
        twins.push(
            Sim::start(
                other.opamp_addr,
                id,
                s.wave,
                s.running(),
                f.behaviour.clone(),
            )
            .await,
        );
    }
    let (dev, staging) = commit_timeout(&f, "5s", "6s").await;
    assert!(other.reload().await);
    let moved = |sims: &[Sim]| -> BTreeMap<String, bool> {
        sims.iter()
            .map(|s| (s.uid.clone(), s.got(&target(s, &dev, &staging))))
            .collect()
    };
    for server in [&f.server, &other] {
        eventually(DEADLINE, "both replicas soak after the canary", || {
            (rollout(server.admin_addr)["state"] == "soaking").then_some(())
        })
        .await;
    }
    assert_eq!(
        moved(&f.sims),
        moved(&twins),
        "the replicas admitted different agents"
    );
    assert!(f
        .sims
        .iter()
        .all(|s| s.got(&target(s, &dev, &staging)) == (s.wave == 0)));
    for server in [&f.server, &other] {
        let (status, _) = post(server.admin_addr, "/api/rollout/promote", &[ADMIN]);
        assert_eq!(status, 202);
    }
    for sims in [&f.sims, &twins] {
        eventually(DEADLINE, "wave 1 moves on both", || {
            sims.iter()
                .filter(|s| s.wave <= 1)
                .all(|s| s.got(&target(s, &dev, &staging)))
                .then_some(())
        })
        .await;
    }
    assert_eq!(moved(&f.sims), moved(&twins));
    assert_eq!(
        rollout(f.server.admin_addr)["wave"],
        rollout(other.admin_addr)["wave"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_rollout_section_every_agent_moves_at_once() {
    let f = fixture("", &WAVES).await;
    assert_eq!(
        api(f.server.admin_addr, "/api/rollout")["rollouts"],
        Value::Array(vec![])
    );
    let (dev, staging) = commit_timeout(&f, "5s", "6s").await;
    eventually(DEADLINE, "everyone moved", || {
        f.sims
            .iter()
            .all(|s| s.running() == target(s, &dev, &staging))
            .then_some(())
    })
    .await;
    // Each agent's APPLIED report follows its config: the server sees it a moment later.
    eventually(DEADLINE, "everyone applied", || {
        f.sims
            .iter()
            .all(|s| status_of(&f.server, &s.uid) == "applied")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_window_holds_a_new_revision_until_it_ends() {
    let f = fixture("rollout:\n  waves: [25, 50, 100]\n", &WAVES).await;
    // A window that started at this minute and ends three seconds from now.
    let now = chrono::Utc::now();
    use chrono::Timelike;
    let section = format!(
        "  freeze:\n    - {{ schedule: \"{} {} * * *\", duration: {}s, time_zone: UTC }}\n",
        now.minute(),
        now.hour(),
        now.second() + 4
    );
    f.repo.edit(
        "fleet.yaml",
        "  waves: [25, 50, 100]\n",
        &format!("  waves: [25, 50, 100]\n{section}"),
    );
    let (dev, _) = commit_timeout(&f, "5s", "6s").await;
    let r = eventually(DEADLINE, "frozen", || {
        let r = rollout(f.server.admin_addr);
        (r["state"] == "frozen").then_some(r)
    })
    .await;
    assert_eq!(r["admitted"], 0, "{r}");
    assert!(f.sims.iter().all(|s| !s.got(&dev)));
    eventually(DEADLINE, "the window ends and everyone moves", || {
        f.sims.iter().all(|s| s.running() == dev).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnected_agents_never_keep_a_wave_from_completing() {
    let f = fixture("rollout:\n  waves: [25, 50, 100]\n", &WAVES).await;
    // Two agents of wave 1 go away before the revision.
    let gone: Vec<&Sim> = f.sims.iter().filter(|s| s.wave == 1).take(2).collect();
    for s in &gone {
        s.task.abort();
    }
    eventually(DEADLINE, "the server sees them disconnected", || {
        gone.iter()
            .all(|s| common::server::agent(&f.server, &s.uid).is_some_and(|a| !a.connected))
            .then_some(())
    })
    .await;
    let (dev, _) = commit_timeout(&f, "5s", "6s").await;
    eventually(DEADLINE, "every connected agent moved", || {
        f.sims
            .iter()
            .filter(|s| !gone.iter().any(|g| g.uid == s.uid))
            .all(|s| s.running() == dev)
            .then_some(())
    })
    .await;
    eventually(DEADLINE, "complete", || {
        (rollout(f.server.admin_addr)["state"] == "complete").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_agent_of_a_newly_admitted_wave_gets_its_config_on_its_next_poll() {
    let f = fixture("rollout:\n  waves: [25, 50, 100]\n  soak: 1h\n", &WAVES).await;
    // An HTTP agent of the last wave, running the first revision.
    let (mut id, _) = identities(&WAVES, false)
        .into_iter()
        .find(|(_, wave)| *wave == 3)
        .unwrap();
    let v1 = hash_now(&f.repo, "dev");
    let http = common::agent::HttpAgent::new(f.server.opamp_addr, id.clone());
    let msg = id.full_state(&v1, RemoteConfigStatuses::Applied);
    let reply = common::block(|| http.exchange(msg)).await;
    assert!(reply.remote_config.is_none());
    let (dev, _) = commit_timeout(&f, "5s", "6s").await;
    eventually(DEADLINE, "soaking after wave 1", || {
        (rollout(f.server.admin_addr)["state"] == "soaking").then_some(())
    })
    .await;
    let msg = id.heartbeat();
    let reply = common::block(|| http.exchange(msg)).await;
    assert!(reply.remote_config.is_none(), "held over HTTP too");
    assert_eq!(status_of(&f.server, &id.uid_string()), "waiting");
    for _ in 0..2 {
        let (status, _) = post(f.server.admin_addr, "/api/rollout/promote", &[ADMIN]);
        assert_eq!(status, 202);
    }
    let msg = id.heartbeat();
    let reply = common::block(|| http.exchange(msg)).await;
    assert_eq!(
        reply.remote_config.map(|rc| rc.config_hash.to_vec()),
        Some(dev),
        "the next poll after its wave is admitted carries the config"
    );
}
