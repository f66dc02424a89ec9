//! The load generator against the real server, as CI runs it: 300 WebSocket agents and 40
//! plain-HTTP pollers (two `loadgen` processes) against `opamp-gitops serve` on a git
//! repository, one commit that changes every agent's config, then a restart of the server on
//! the same ports. Correctness only, no timing: every agent reports APPLIED for its desired
//! hash after the refresh, and the restarted server sends no config to agents that already run
//! the desired one. A second test runs the load generator over several processes, as it does
//! past one process's open-files limit. Deadlines are generous and every wait polls, for a
//! loaded 2-core machine.

mod common;

use common::git::GitRemote;
use common::process::Peer;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WS_AGENTS: u64 = 300;
const HTTP_AGENTS: u64 = 40;
const WAIT: Duration = Duration::from_secs(180);

/// `opamp-gitops serve` as a process, with the addresses it logged.
struct Served {
    child: Child,
    opamp: String,
    admin: String,
}

impl Served {
    fn start(repo_url: &str, dir: &Path, opamp: &str, admin: &str) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"))
            .args(["serve", "--repo", repo_url, "--poll-interval", "1h"])
            .args(["--listen", opamp, "--admin-listen", admin])
            .arg("--admin-token-file")
            .arg(dir.join("admin.tokens"))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .env("OPAMP_GITOPS_LOG", "warn,opamp_gitops::cli=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start opamp-gitops serve");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening opamp=") {
                    let _ = tx.send(line.clone());
                }
                if line.contains("ERROR") {
                    eprintln!("[serve] {line}");
                }
            }
        });
        let line = lines
            .recv_timeout(WAIT)
            .expect("the server logs its addresses");
        let field = |name: &str| {
            let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
            line[start..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .expect("an address")
                .to_owned()
        };
        Served {
            opamp: field("opamp"),
            admin: field("admin"),
            child,
        }
    }

    /// SIGTERM, and the wait for a clean exit (bounded).
    fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not stop on SIGTERM");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(admin: &str, path: &str) -> String {
    http()
        .get(format!("http://{admin}{path}"))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .unwrap_or_default()
}

fn metric(admin: &str, name: &str) -> Option<f64> {
    get(admin, "/metrics").lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Polls the agent API until `want` agents are connected and APPLIED at their desired hash
/// under `revision`; returns the agents.
fn all_applied(admin: &str, revision: &str, want: usize) -> Vec<Value> {
    let until = Instant::now() + WAIT;
    loop {
        let page: Value =
            serde_json::from_str(&get(admin, "/api/agents?limit=1000")).unwrap_or_default();
        let agents = page["agents"].as_array().cloned().unwrap_or_default();
        let done = agents.len() == want
            && agents.iter().all(|a| {
                a["connected"] == true
                    && a["status"] == "applied"
                    && a["reported_hash"] == a["desired_hash"]
                    && a["revision"] == revision
            });
        if done {
            return agents;
        }
        let applied = agents.iter().filter(|a| a["status"] == "applied").count();
        assert!(
            Instant::now() < until,
            "not every agent APPLIED revision {revision} in time: {} agents, {applied} applied",
            agents.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn loadgen(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"));
    command
        .arg("loadgen")
        .args(args)
        .args(["--duration", "15m", "--json"]);
    command
}

/// A git repository served by `opamp-gitops serve`, and a next commit, pushed, that changes
/// every agent's config: the server learns of it only when the load generator posts the
/// refresh (it polls git once an hour).
struct Setup {
    remote: GitRemote,
    dir: tempfile::TempDir,
    server: Served,
    first: String,
    second: String,
}

impl Setup {
    fn new() -> Setup {
        let remote = GitRemote::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.tokens"), "smoke:smoke-token\n").unwrap();
        let server = Served::start(&remote.file_url(), dir.path(), "127.0.0.1:0", "127.0.0.1:0");
        let first = remote.head();
        remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
        let second = remote.commit("every agent's batch timeout");
        remote.push();
        Setup {
            remote,
            dir,
            server,
            first,
            second,
        }
    }

    fn refresh_args(&self) -> [String; 4] {
        [
            "--refresh".into(),
            format!("http://{}/api/refresh", self.server.admin),
            "--admin-token-file".into(),
            self.dir.path().join("admin.tokens").display().to_string(),
        ]
    }
}

#[test]
fn a_fleet_converges_after_a_refresh_and_a_restart_pushes_nothing() {
    let setup = Setup::new();
    let Setup {
        remote,
        dir,
        mut server,
        first,
        second,
    } = setup;

    let opamp = server.opamp.clone();
    let admin = server.admin.clone();
    let mut pollers = Peer::spawn(
        "loadgen-http",
        loadgen(&[
            "--endpoint",
            &format!("http://{opamp}"),
            "--transport",
            "http",
            "--agents",
            &HTTP_AGENTS.to_string(),
            "--poll-interval",
            "1s",
            "--attr",
            "environment=production,dev",
            "--source-subnet",
            "127.3.0.0/16",
        ]),
    );
    let tokens = dir.path().join("admin.tokens");
    let mut fleet = Peer::spawn(
        "loadgen-ws",
        loadgen(&[
            "--endpoint",
            &format!("ws://{opamp}"),
            "--agents",
            &WS_AGENTS.to_string(),
            "--heartbeat",
            "5s",
            "--attr",
            "environment=production,dev",
            "--source-subnet",
            "127.2.0.0/16",
            "--refresh",
            &format!("http://{admin}/api/refresh"),
            "--admin-token-file",
            tokens.to_str().unwrap(),
        ]),
    );

    let connected = fleet.wait_event(WAIT, "all_connected");
    assert!(connected["after_ms"].is_u64(), "{connected}");
    let refresh = fleet.wait_event(WAIT, "refresh");
    assert_eq!(refresh["status"], 202, "{refresh}");
    let converged = fleet.wait_event(WAIT, "converged");
    assert_eq!(converged["agents"], WS_AGENTS, "{converged}");
    assert!(converged["p100_ms"].is_u64(), "{converged}");
    assert_ne!(first, second);
    let before = all_applied(&admin, &second, (WS_AGENTS + HTTP_AGENTS) as usize);
    assert_eq!(
        before.iter().filter(|a| a["transport"] == "http").count() as u64,
        HTTP_AGENTS
    );

    // A restart on the same ports: every agent comes back, nothing has changed, nothing is sent.
    server.stop();
    let server = Served::start(&remote.file_url(), dir.path(), &opamp, &admin);
    assert_eq!(
        (server.opamp.as_str(), server.admin.as_str()),
        (opamp.as_str(), admin.as_str())
    );
    let back = fleet.wait_event(WAIT, "reconnected");
    assert_eq!(back["dropped"], WS_AGENTS, "{back}");
    assert!(back["after_ms"].is_u64(), "every agent came back: {back}");
    assert_eq!(
        back["configs_received"], 0,
        "no config pushed on reconnect: {back}"
    );
    let after = all_applied(&admin, &second, (WS_AGENTS + HTTP_AGENTS) as usize);
    let hashes = |agents: &[Value]| {
        let mut h: Vec<(String, String)> = agents
            .iter()
            .map(|a| {
                (
                    a["instance_uid"].as_str().unwrap_or_default().to_owned(),
                    a["desired_hash"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        h.sort();
        h
    };
    assert_eq!(
        hashes(&before),
        hashes(&after),
        "the same agents at the same hashes"
    );
    assert_eq!(
        metric(&admin, "opamp_gitops_config_pushes_total"),
        Some(0.0),
        "the restarted server pushed a config to agents that already run it"
    );
    let full_states = metric(&admin, "opamp_gitops_full_state_requests_total").unwrap_or_default();
    eprintln!("full-state requests after the restart: {full_states}");

    // The reports agree with the server.
    fleet.stop();
    let report = fleet.wait_event(WAIT, "report");
    assert_eq!(report["convergence"]["converged"], WS_AGENTS, "{report}");
    assert_eq!(report["refresh"]["status"], 202);
    let applied_ws: u64 = report["applied_hashes"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or_default();
    assert_eq!(applied_ws, WS_AGENTS);
    pollers.stop();
    let report = pollers.wait_event(WAIT, "report");
    assert!(
        report["http_latency"]["requests"].as_u64().unwrap_or(0) >= HTTP_AGENTS,
        "{report}"
    );
    assert_eq!(report["server_errors"], 0, "{report}");
}

#[test]
fn a_run_over_several_processes_reports_as_one() {
    let setup = Setup::new();
    let refresh = setup.refresh_args();
    let mut args = vec![
        "--endpoint".to_owned(),
        format!("ws://{}", setup.server.opamp),
        "--agents".into(),
        "60".into(),
        "--agents-per-process".into(),
        "25".into(),
        "--heartbeat".into(),
        "5s".into(),
        "--source-subnet".into(),
        "127.4.0.0/16".into(),
    ];
    args.extend(refresh);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut fleet = Peer::spawn("loadgen-processes", loadgen(&args));
    let start = fleet.wait_event(WAIT, "start");
    assert_eq!(start["processes"], 3, "{start}");
    let converged = fleet.wait_event(WAIT, "converged");
    assert_eq!(converged["agents"], 60, "{converged}");
    all_applied(&setup.server.admin, &setup.second, 60);
    fleet.stop();
    let report = fleet.wait_event(WAIT, "report");
    assert_eq!(report["processes"], 3, "{report}");
    assert_eq!(report["connected"], 60, "{report}");
    assert_eq!(report["convergence"]["converged"], 60, "{report}");
    assert_eq!(report["refresh"]["status"], 202, "{report}");
}
