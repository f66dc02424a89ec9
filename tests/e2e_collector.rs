//! End to end with the real agent stack: the OpAMP Supervisor (contrib, v0.149.0) running a real
//! Collector distribution (tests/reference), configured by this server from a git repository.
//! Spans sent to the Collector's OTLP/HTTP receiver come out at a sink the test runs, stamped
//! with `config.revision` by the resource processor the repo configures, so the test sees which
//! commit the running Collector is on.
//!
//! The Go binaries are built by tests/reference/build.sh (cached); a failed build fails the test.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use common::admin::{get, post as admin_post};
use common::e2e::{add_file_exporter, edit, restore_template, set_revision, update_goldens};
use common::git::git;
use common::server::start_with;
use opamp_gitops::server::{ServeOptions, Server};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Bound for every wait on the Supervisor: its start includes a bootstrap run of the Collector,
/// and APPLIED comes `config_apply_timeout` (5 s) after a config arrives.
const WAIT: Duration = Duration::from_secs(90);
const ADMIN_TOKEN: &str = "admin-token";
const AGENT_TOKEN: &str = "agent-token";

/// One real agent stack at a time: two Collectors bootstrapping at once on a 2-core machine can
/// miss the Supervisor's bootstrap deadline.
static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

// ---------------------------------------------------------------------------------------------
// The config repository: a bare "remote" and a work tree that commits and pushes to it.

struct ConfigRepo {
    root: TempDir,
}

impl ConfigRepo {
    fn new(otlp_port: u16, sink_port: u16) -> ConfigRepo {
        let repo = ConfigRepo {
            root: tempfile::tempdir().expect("temp dir"),
        };
        git(
            repo.root.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        std::fs::create_dir(repo.work()).expect("mkdir work");
        git(&repo.work(), &["init", "-q", "-b", "main"]);
        git(
            &repo.work(),
            &["remote", "add", "origin", repo.bare().to_str().unwrap()],
        );
        common::e2e::write_config_repo(&repo.work(), otlp_port, sink_port);
        update_goldens(&repo.work());
        repo.commit_and_push("e2e fleet at v1");
        repo
    }

    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    fn bare(&self) -> PathBuf {
        self.root.path().join("remote.git")
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Commits everything in the work tree and pushes it; returns the commit id.
    fn commit_and_push(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "-m", message]);
        git(&self.work(), &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}

// ---------------------------------------------------------------------------------------------
// The sink: where the Collector's otlphttp exporter (encoding: json) POSTs what it exports.

#[derive(Clone, Default)]
struct Sink {
    bodies: Arc<Mutex<Vec<Value>>>,
    /// The Collector's own telemetry (OTLP/HTTP protobuf): path and Authorization header.
    own: Arc<Mutex<Vec<(String, String)>>>,
}

async fn received_own(
    State(sink): State<Sink>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    if !body.is_empty() {
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        sink.own
            .lock()
            .unwrap()
            .push((uri.path().to_owned(), authorization));
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        Bytes::new(),
    )
}

async fn received(State(sink): State<Sink>, body: Bytes) -> impl axum::response::IntoResponse {
    let value = serde_json::from_slice(&body).unwrap_or_else(
        |e| json!({"unparsed": String::from_utf8_lossy(&body), "error": e.to_string()}),
    );
    sink.bodies.lock().unwrap().push(value);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        "{}",
    )
}

impl Sink {
    /// Starts the sink on a loopback port; returns it and the port.
    async fn start() -> (Sink, u16) {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/v1/traces", post(received))
            .route("/v1/metrics", post(received_own))
            .route("/v1/logs", post(received_own))
            .with_state(sink.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (sink, port)
    }

    /// The `config.revision` resource attribute of the exported span named `name`, once seen.
    fn revision_of(&self, name: &str) -> Option<Option<String>> {
        let bodies = self.bodies.lock().unwrap();
        for body in bodies.iter() {
            for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                let spans = rs["scopeSpans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|ss| ss["spans"].as_array().into_iter().flatten());
                if spans.into_iter().any(|s| s["name"] == name) {
                    let revision = rs["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "config.revision")
                        .and_then(|a| a["value"]["stringValue"].as_str())
                        .map(str::to_owned);
                    return Some(revision);
                }
            }
        }
        None
    }
}

/// One span as OTLP/HTTP JSON.
fn span_body(name: &str) -> String {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "e2e-test"}}]},
        "scopeSpans": [{"scope": {"name": "e2e"}, "spans": [{
            "traceId": trace_id, "spanId": &trace_id[..16], "name": name, "kind": 1,
            "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string()
        }]}]
    }]})
    .to_string()
}

/// Sends a span named `name` to the Collector's receiver (retrying while the Collector is not
/// listening) and returns the `config.revision` it carries at the sink.
async fn span_revision(sink: &Sink, otlp_port: u16, name: &str) -> String {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{otlp_port}/v1/traces");
    let body = span_body(name);
    let until = Instant::now() + WAIT;
    loop {
        let sent = tokio::task::block_in_place(|| {
            http.post(&url)
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
        });
        let last = match sent {
            Ok(r) if r.status() == 200 => break,
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < until,
            "the Collector's receiver on port {otlp_port} did not take span {name}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(revision) = sink.revision_of(name) {
            return revision.unwrap_or_else(|| panic!("span {name} has no config.revision"));
        }
        assert!(
            Instant::now() < until,
            "span {name} was accepted but never reached the sink; the sink got: {:#?}",
            sink.bodies.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The OpAMP Supervisor, with its own log file; the logs are printed when the test panics.

struct Supervisor {
    child: Option<Child>,
    dir: PathBuf,
}

/// `deploy/collector/supervisor.yaml`, the file the README shows, made to run here: this
/// server's endpoint, the test's paths and attributes, and what a loaded 2-core machine needs.
/// The token stays as shipped (`${env:OPAMP_GITOPS_AGENT_TOKEN}`): the Supervisor's
/// environment carries it. Written back as JSON, which is YAML.
fn supervisor_config(
    endpoint: &str,
    uid: &str,
    collector: &Path,
    storage: &Path,
    log: &Path,
) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/collector/supervisor.yaml"),
    )
    .expect("read deploy/collector/supervisor.yaml");
    let mut config: serde_json::Value =
        serde_saphyr::from_str(&shipped).expect("supervisor.yaml is YAML");
    config["server"]["endpoint"] = endpoint.into();
    config["server"]["tls"] = serde_json::json!({"insecure": true});
    let agent = &mut config["agent"];
    agent["executable"] = collector.display().to_string().into();
    agent["instance_id"] = uid.into();
    // The default 3s failed on a loaded 2-core machine.
    agent["bootstrap_timeout"] = "30s".into();
    // The bootstrap Collector's own metrics would bind localhost:8888 otherwise.
    agent["args"] = serde_json::json!(["--set=service.telemetry.metrics.level=none"]);
    agent["description"]["identifying_attributes"] = serde_json::json!({"environment": "e2e"});
    config["storage"]["directory"] = storage.display().to_string().into();
    let log = log.display().to_string();
    config["telemetry"] = serde_json::json!({
        "logs": {"level": "debug", "output_paths": [log], "error_output_paths": [log]}
    });
    serde_json::to_string_pretty(&config).expect("JSON")
}

#[test]
fn the_readme_shows_the_supervisor_config_the_end_to_end_test_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("deploy/collector/supervisor.yaml")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{shipped}```")),
        "README.md must show deploy/collector/supervisor.yaml verbatim"
    );
    // The settings the server relies on, in the shipped file itself.
    let config: serde_json::Value = serde_saphyr::from_str(&shipped).unwrap();
    assert_eq!(config["agent"]["validate_config"], true);
    assert_eq!(config["capabilities"]["accepts_remote_config"], true);
    assert_eq!(config["capabilities"]["reports_remote_config"], true);
    assert_eq!(
        config["server"]["headers"]["Authorization"][0],
        "Bearer ${env:OPAMP_GITOPS_AGENT_TOKEN}"
    );
}

impl Supervisor {
    /// Starts the Supervisor in `dir` (its config, logs and storage go there).
    fn start(dir: &Path, endpoint: &str, uid: &str) -> Supervisor {
        Supervisor::start_with(dir, endpoint, uid, |_| {})
    }

    /// Starts it with `adjust` applied to its config first.
    fn start_with(
        dir: &Path,
        endpoint: &str,
        uid: &str,
        adjust: impl FnOnce(&mut Value),
    ) -> Supervisor {
        let collector = common::reference::collector();
        let binary = common::reference::supervisor();
        std::fs::create_dir_all(dir.join("storage")).expect("mkdir storage");
        let config = supervisor_config(
            endpoint,
            uid,
            &collector,
            &dir.join("storage"),
            &dir.join("supervisor.log"),
        );
        let mut config: Value = serde_json::from_str(&config).expect("JSON");
        adjust(&mut config);
        let config = serde_json::to_string_pretty(&config).expect("JSON");
        std::fs::write(dir.join("supervisor.yaml"), config).expect("write supervisor.yaml");
        let out = std::fs::File::create(dir.join("supervisor.out")).expect("create out file");
        let child = Command::new(&binary)
            .env("OPAMP_GITOPS_AGENT_TOKEN", AGENT_TOKEN)
            .arg("--config")
            .arg(dir.join("supervisor.yaml"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Supervisor {
            child: Some(child),
            dir: dir.to_owned(),
        }
    }

    /// The Supervisor's log, its stdout/stderr and the Collector's output.
    fn logs(&self) -> String {
        let mut all = String::new();
        for file in ["supervisor.log", "supervisor.out", "storage/agent.log"] {
            let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            all.push_str(&format!("===== {file}\n{text}\n"));
        }
        all
    }

    /// SIGTERM (the Supervisor then stops the Collector), SIGKILL after a bound.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("the Supervisor did not stop within 15 s: killing it");
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- Supervisor logs ({})\n{}",
                self.dir.display(),
                self.logs()
            );
        }
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The server and its admin API.

struct Setup {
    dir: TempDir,
    options: ServeOptions,
}

/// `serve --repo file://… --agent-token-file … --admin-token-file … --cache-dir …`.
fn setup(url: &str) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("admin-tokens"),
        format!("ops:{ADMIN_TOKEN}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("agent-tokens"),
        format!("e2e:{AGENT_TOKEN}\n"),
    )
    .unwrap();
    let mut options = ServeOptions::local(".");
    options.repo = url.to_owned();
    options.poll_interval = Duration::from_secs(3600);
    options.cache_dir = dir.path().join("cache");
    options.admin_token_file = Some(dir.path().join("admin-tokens"));
    options.agent_token_file = Some(dir.path().join("agent-tokens"));
    options.fetch_timeout = Duration::from_secs(20);
    options.otelcol = None;
    Setup { dir, options }
}

fn pushes(server: &Server) -> u64 {
    server.metrics.config_pushes.get()
}

/// GET a JSON admin endpoint (off the async worker: the server runs on this runtime too).
fn api(addr: SocketAddr, path: &str) -> Value {
    let answer = tokio::task::block_in_place(|| get(addr, path));
    if answer.status == 404 {
        return Value::Null;
    }
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    answer.json()
}

async fn refresh(addr: SocketAddr) {
    let answer = tokio::task::block_in_place(|| {
        admin_post(
            addr,
            "/api/refresh",
            &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            b"",
        )
    });
    assert_eq!(answer.status, 202, "POST /api/refresh: {}", answer.body);
}

/// Polls `path` until `want` holds for its JSON, failing with the last answer after `WAIT`.
async fn until_api(
    addr: SocketAddr,
    path: &str,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let value = api(addr, path);
        if want(&value) {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {WAIT:?} waiting for {what}; GET {path} last answered:\n{value:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The agent, once it shows `applied` with the reported hash equal to the desired one and
/// `accept` holding for it.
async fn until_applied(
    addr: SocketAddr,
    uid: &str,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    until_api(addr, &format!("/api/agents/{uid}"), what, |a| {
        a["status"] == "applied"
            && a["connected"] == true
            && a["desired_hash"].is_string()
            && a["reported_hash"] == a["desired_hash"]
            && accept(a)
    })
    .await
}

/// Checks over `window` that nothing more is pushed and the agent keeps `status`.
async fn stays(server: &Server, uid: &str, window: Duration, pushed: u64, status: &str) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert_eq!(pushes(server), pushed, "no config re-sent");
        let agent = api(server.admin_addr, &format!("/api/agents/{uid}"));
        assert_eq!(agent["status"], status, "{agent:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------

/// Commits a revision that manages no agent yet. A config answered to the Supervisor's very first
/// message can race with its own start-up, which then runs the Collector without it (see
/// tests/reference/README.md); starting unmanaged and then committing the rule that manages it
/// is also how a change reaches a running fleet.
fn manage_nothing_yet(repo: &ConfigRepo) {
    let work = repo.work();
    edit(
        &work,
        "fleet.yaml",
        "environment: e2e\n",
        "environment: e2e-later\n",
    );
    edit(
        &work,
        "agents/e2e.yaml",
        "environment: e2e\n",
        "environment: e2e-later\n",
    );
    repo.commit_and_push("manage nothing yet");
}

/// Waits until the Supervisor shows as an unmanaged agent, then commits the rule that manages it
/// and refreshes.
async fn manage_it(repo: &ConfigRepo, admin: SocketAddr, uid: &str) {
    until_api(
        admin,
        &format!("/api/agents/{uid}"),
        "the Supervisor connected, unmanaged",
        |a| a["status"] == "unmanaged",
    )
    .await;
    let work = repo.work();
    edit(
        &work,
        "fleet.yaml",
        "environment: e2e-later\n",
        "environment: e2e\n",
    );
    edit(
        &work,
        "agents/e2e.yaml",
        "environment: e2e-later\n",
        "environment: e2e\n",
    );
    repo.commit_and_push("manage the e2e agents");
    refresh(admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_and_collector_follow_git_over_websocket_end_to_end() {
    let _stack = ONE_STACK_AT_A_TIME.lock().await;
    let (sink, sink_port) = Sink::start().await;
    let otlp_port = free_port();
    let repo = ConfigRepo::new(otlp_port, sink_port);
    let work = repo.work();
    manage_nothing_yet(&repo);
    let s = setup(&repo.url());
    let server = start_with(s.options.clone()).await;
    let admin = server.admin_addr;
    let uid = uuid::Uuid::now_v7().to_string();
    let mut supervisor = Supervisor::start(
        &s.dir.path().join("supervisor"),
        &format!("ws://{}/v1/opamp", server.opamp_addr),
        &uid,
    );

    // 1. The Supervisor connects unmanaged; the rule for `environment: e2e` is committed; the
    // Supervisor gets its config and applies it.
    let started = Instant::now();
    manage_it(&repo, admin, &uid).await;
    let first = until_applied(admin, &uid, "the first config applied", |_| true).await;
    println!(
        "supervisor start to first APPLIED: {} ms",
        started.elapsed().as_millis()
    );
    let v1_hash = first["desired_hash"].as_str().unwrap().to_owned();
    assert_eq!(first["rule"], "e2e", "{first:#}");
    assert_eq!(first["transport"], "ws", "{first:#}");
    assert_eq!(first["token_name"], "e2e", "{first:#}");
    assert_eq!(first["attributes"]["environment"], "e2e", "{first:#}");
    assert_eq!(
        first["attributes"]["service.name"], "otelcol-e2e",
        "{first:#}"
    );
    let effective = first["effective_config"][""].as_str().unwrap_or_else(|| {
        panic!("the Supervisor reports its merged config under \"\": {first:#}")
    });
    assert!(
        effective.contains("config.revision") && effective.contains("v1"),
        "the effective config is the one sent: {effective}"
    );
    assert!(
        effective.contains("opamp"),
        "with the Supervisor's own opamp extension: {effective}"
    );
    assert!(
        first["desired_config"]["collector.yaml"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("127.0.0.1:{otlp_port}"))),
        "{first:#}"
    );

    // 2. A span goes through the pipeline the repo configured.
    assert_eq!(span_revision(&sink, otlp_port, "span-1").await, "v1");

    // 3. A commit, then a refresh: the Collector runs it.
    set_revision(&work, "v1", "v2");
    update_goldens(&work);
    let v2_commit = repo.commit_and_push("revision v2");
    let pushed_before = pushes(&server);
    let refreshed = Instant::now();
    refresh(admin).await;
    let second = until_applied(admin, &uid, "v2 applied", |a| a["desired_hash"] != v1_hash).await;
    println!("push-to-applied: {} ms", refreshed.elapsed().as_millis());
    assert_eq!(second["revision"], v2_commit.as_str(), "{second:#}");
    assert_eq!(
        pushes(&server),
        pushed_before + 1,
        "one push for one commit"
    );
    let v2_hash = second["desired_hash"].as_str().unwrap().to_owned();
    assert_eq!(span_revision(&sink, otlp_port, "span-2").await, "v2");

    // 4. A broken commit (a template syntax error) is rejected and never reaches the Collector.
    edit(
        &work,
        common::e2e::TEMPLATE,
        "value: {{ vars.revision | yaml }}",
        "value: {{ vars.revision | yaml }",
    );
    let broken = repo.commit_and_push("a template syntax error");
    let pushed_before = pushes(&server);
    refresh(admin).await;
    let revision = until_api(admin, "/api/revision", "the broken commit rejected", |r| {
        r["rejected"]["id"] == broken.as_str()
    })
    .await;
    assert_eq!(
        revision["current"]["id"],
        v2_commit.as_str(),
        "{revision:#}"
    );
    let diagnostics = revision["rejected"]["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics
            .iter()
            .any(|d| d["file"] == common::e2e::TEMPLATE && d["line"].is_number()),
        "{revision:#}"
    );
    assert_eq!(span_revision(&sink, otlp_port, "span-3").await, "v2");
    assert_eq!(
        pushes(&server),
        pushed_before,
        "nothing sent for a rejected commit"
    );
    let agent = api(admin, &format!("/api/agents/{uid}"));
    assert_eq!(agent["status"], "applied", "{agent:#}");
    assert_eq!(agent["reported_hash"], v2_hash.as_str(), "{agent:#}");

    // 5. A commit our checks accept but this Collector cannot run (no `file` exporter in the
    //    distribution): FAILED with the Supervisor's message, not re-sent, v2 keeps running.
    restore_template(&work);
    add_file_exporter(
        &work,
        common::e2e::TEMPLATE,
        &s.dir.path().join("spans.json"),
    );
    update_goldens(&work);
    let unrunnable = repo.commit_and_push("a file exporter");
    refresh(admin).await;
    let failed = until_api(admin, &format!("/api/agents/{uid}"), "FAILED", |a| {
        a["status"] == "failed"
    })
    .await;
    // It still runs what v2 rendered: its revision is v2's commit, not the one it failed.
    assert_ne!(failed["revision"], unrunnable.as_str(), "{failed:#}");
    assert_eq!(failed["revision"], v2_commit.as_str(), "{failed:#}");
    let message = failed["last_error"].as_str().unwrap_or_default().to_owned();
    println!("the Supervisor's error for the missing component: {message:?}");
    assert!(
        message.contains(r#"unknown type: "file""#),
        "the Supervisor's own message: {failed:#}"
    );
    assert_eq!(
        failed["reported_hash"], failed["desired_hash"],
        "FAILED is reported for the desired hash: {failed:#}"
    );
    assert_ne!(failed["desired_hash"], v2_hash.as_str());
    let pushed_then = pushes(&server);
    stays(&server, &uid, Duration::from_secs(4), pushed_then, "failed").await;
    assert_eq!(span_revision(&sink, otlp_port, "span-4").await, "v2");

    // 6. The fix (the v2 config again, as a revert makes it) converges back to APPLIED.
    restore_template(&work);
    update_goldens(&work);
    let fixed = repo.commit_and_push("remove the file exporter");
    refresh(admin).await;
    let back = until_applied(admin, &uid, "the fix applied", |a| {
        a["revision"] == fixed.as_str()
    })
    .await;
    assert_eq!(back["desired_hash"], v2_hash.as_str(), "{back:#}");
    assert_eq!(back["last_error"], Value::Null, "{back:#}");
    assert_eq!(span_revision(&sink, otlp_port, "span-5").await, "v2");

    // 7. The server restarts on the same ports and cache: the Supervisor reconnects and is sent
    //    nothing, because it reports the hash it should run.
    let (opamp_addr, admin_addr) = (server.opamp_addr, server.admin_addr);
    server.shutdown(Duration::from_secs(5)).await;
    let mut options = s.options.clone();
    options.listen = opamp_addr;
    options.admin_listen = admin_addr;
    let server = start_with(options).await;
    let reconnected = Instant::now();
    let again = until_applied(admin, &uid, "reconnected and applied", |_| true).await;
    println!(
        "server restart to APPLIED: {} ms",
        reconnected.elapsed().as_millis()
    );
    assert_eq!(again["desired_hash"], v2_hash.as_str(), "{again:#}");
    assert_eq!(pushes(&server), 0, "nothing pushed after the restart");
    stays(&server, &uid, Duration::from_secs(3), 0, "applied").await;
    assert_eq!(span_revision(&sink, otlp_port, "span-6").await, "v2");

    supervisor.stop();
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_over_plain_http_converges_on_its_polls() {
    let _stack = ONE_STACK_AT_A_TIME.lock().await;
    let (sink, sink_port) = Sink::start().await;
    let otlp_port = free_port();
    let repo = ConfigRepo::new(otlp_port, sink_port);
    let work = repo.work();
    manage_nothing_yet(&repo);
    let mut s = setup(&repo.url());
    // The heartbeat offer (sent only with an advertised URL) sets the Supervisor's HTTP poll
    // interval, 30 s by default, to 1 s.
    let opamp_port = free_port();
    s.options.listen = SocketAddr::from(([127, 0, 0, 1], opamp_port));
    s.options.fleet.advertise_url = Some(format!("http://127.0.0.1:{opamp_port}/v1/opamp"));
    s.options.fleet.heartbeat_interval = Duration::from_secs(1);
    let server = start_with(s.options.clone()).await;
    let admin = server.admin_addr;
    let uid = uuid::Uuid::now_v7().to_string();
    let _supervisor = Supervisor::start(
        &s.dir.path().join("supervisor-http"),
        &format!("http://127.0.0.1:{opamp_port}/v1/opamp"),
        &uid,
    );

    manage_it(&repo, admin, &uid).await;
    let first = until_applied(admin, &uid, "the first config applied over HTTP", |_| true).await;
    assert_eq!(first["transport"], "http", "{first:#}");
    let v1_hash = first["desired_hash"].as_str().unwrap().to_owned();
    assert_eq!(span_revision(&sink, otlp_port, "http-span-1").await, "v1");

    set_revision(&work, "v1", "v2");
    update_goldens(&work);
    let v2_commit = repo.commit_and_push("revision v2");
    let refreshed = Instant::now();
    refresh(admin).await;
    let second = until_applied(admin, &uid, "v2 applied over HTTP", |a| {
        a["desired_hash"] != v1_hash
    })
    .await;
    println!(
        "push-to-applied over plain HTTP (1 s polls): {} ms",
        refreshed.elapsed().as_millis()
    );
    assert_eq!(second["revision"], v2_commit.as_str(), "{second:#}");
    assert_eq!(span_revision(&sink, otlp_port, "http-span-2").await, "v2");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_sends_its_own_telemetry_where_git_says() {
    let _stack = ONE_STACK_AT_A_TIME.lock().await;
    let (sink, sink_port) = Sink::start().await;
    let otlp_port = free_port();
    let repo = ConfigRepo::new(otlp_port, sink_port);
    let work = repo.work();
    // The rule names where its Collectors send their own metrics and logs; the metrics header
    // is a secret the server reads from a file, never committed.
    let s = setup(&repo.url());
    let secret = s.dir.path().join("otlp-token");
    std::fs::write(&secret, "own-telemetry-secret\n").unwrap();
    edit(
        &work,
        "fleet.yaml",
        "    template: e2e.yaml.j2\n",
        &format!(
            "    template: e2e.yaml.j2\n    telemetry:\n      metrics:\n        endpoint: http://127.0.0.1:{sink_port}/v1/metrics\n        headers: {{authorization: \"Bearer ${{file:{}}}\"}}\n      logs: {{endpoint: \"http://127.0.0.1:{sink_port}/v1/logs\"}}\n",
            secret.display()
        ),
    );
    // The fixture's template turns the Collector's internal metrics off: on, here.
    edit(
        &work,
        common::e2e::TEMPLATE,
        "    metrics:\n      level: none\n",
        "    metrics:\n      level: normal\n",
    );
    update_goldens(&work);
    repo.commit_and_push("own telemetry to the sink");
    manage_nothing_yet(&repo);
    let server = start_with(s.options.clone()).await;
    let admin = server.admin_addr;
    let uid = uuid::Uuid::now_v7().to_string();
    // The shipped config with the own-telemetry capabilities on, and the Collector's internal
    // metrics left on (the other tests turn them off).
    let _supervisor = Supervisor::start_with(
        &s.dir.path().join("supervisor-telemetry"),
        &format!("ws://{}/v1/opamp", server.opamp_addr),
        &uid,
        |config| {
            config["capabilities"]["reports_own_metrics"] = true.into();
            config["capabilities"]["reports_own_logs"] = true.into();
            config["agent"]["args"] = json!([]);
        },
    );

    manage_it(&repo, admin, &uid).await;
    let applied = until_applied(admin, &uid, "the config applied", |_| true).await;
    let capabilities = applied["capabilities"].to_string();
    assert!(
        capabilities.contains("ReportsOwnMetrics") && capabilities.contains("ReportsOwnLogs"),
        "{applied:#}"
    );

    // The Collector's own logs (batched, seconds) and metrics (a periodic reader, a minute)
    // reach the sink, the metrics with the secret the server resolved.
    let until = Instant::now() + WAIT + Duration::from_secs(30);
    loop {
        let own = sink.own.lock().unwrap().clone();
        let logs = own.iter().any(|(path, _)| path == "/v1/logs");
        let metrics = own.iter().find(|(path, _)| path == "/v1/metrics");
        if let (true, Some((_, authorization))) = (logs, metrics) {
            assert_eq!(authorization, "Bearer own-telemetry-secret");
            break;
        }
        assert!(
            Instant::now() < until,
            "the Collector's own telemetry did not reach the sink; it got: {own:?}; the agent: {:#}",
            api(admin, &format!("/api/agents/{uid}"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its effective config carries the Supervisor's own-telemetry section, which is not drift.
    let agent = api(admin, &format!("/api/agents/{uid}"));
    assert_eq!(agent["status"], "applied", "{agent:#}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_using_an_exporter_the_supervisors_collector_lacks_is_never_sent() {
    let _stack = ONE_STACK_AT_A_TIME.lock().await;
    let (sink, sink_port) = Sink::start().await;
    let otlp_port = free_port();
    let repo = ConfigRepo::new(otlp_port, sink_port);
    let work = repo.work();
    manage_nothing_yet(&repo);
    let s = setup(&repo.url());
    let server = start_with(s.options.clone()).await;
    let admin = server.admin_addr;
    let uid = uuid::Uuid::now_v7().to_string();
    let _supervisor = Supervisor::start_with(
        &s.dir.path().join("supervisor-components"),
        &format!("ws://{}/v1/opamp", server.opamp_addr),
        &uid,
        |config| config["capabilities"]["reports_available_components"] = true.into(),
    );

    // The Supervisor reports its Collector's components; a config they cover is applied.
    manage_it(&repo, admin, &uid).await;
    let first = until_applied(admin, &uid, "the first config applied", |a| {
        a["available_components"]["state"] == "known"
    })
    .await;
    let components = &first["available_components"]["components"];
    let exporters = components["exporters"]
        .as_array()
        .expect("exporters listed");
    assert!(exporters.contains(&json!("otlphttp")), "{components:#}");
    assert!(!exporters.contains(&json!("file")), "{components:#}");
    assert!(
        first["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("ReportsAvailableComponents")),
        "{first:#}"
    );
    assert_eq!(
        span_revision(&sink, otlp_port, "components-span-1").await,
        "v1"
    );

    // A commit with a `file` exporter (which this distribution lacks) is not sent: the agent
    // shows render_error naming the exporter and the rule, and keeps running v1.
    add_file_exporter(
        &work,
        common::e2e::TEMPLATE,
        &s.dir.path().join("spans.json"),
    );
    update_goldens(&work);
    repo.commit_and_push("a file exporter");
    let pushed = pushes(&server);
    refresh(admin).await;
    let refused = until_api(admin, &format!("/api/agents/{uid}"), "render_error", |a| {
        a["status"] == "render_error"
    })
    .await;
    let message = refused["last_error"].as_str().unwrap_or_default();
    assert!(message.contains("exporter `file`"), "{refused:#}");
    assert!(message.contains("rule `e2e`"), "{refused:#}");
    assert_eq!(
        refused["reported_hash"], first["desired_hash"],
        "{refused:#}"
    );
    stays(
        &server,
        &uid,
        Duration::from_secs(3),
        pushed,
        "render_error",
    )
    .await;
    assert_eq!(
        span_revision(&sink, otlp_port, "components-span-2").await,
        "v1"
    );
    server.shutdown(Duration::from_secs(5)).await;
}
