//! The web dashboard in a real headless Chromium: the real server in-process with real
//! WebSocket agents, the browser driven over WebDriver (tests/common/browser.rs).

mod common;

use common::agent::{config_file, config_hash, http_client, Identity, WsAgent};
use common::browser::{Browser, WAIT};
use common::server::start_with;
use opamp_gitops::opamp::agent_caps;
use opamp_gitops::opamp::proto::{
    AgentConfigFile, AgentConfigMap, ComponentHealth, EffectiveConfig,
    RemoteConfigStatuses::{Applied, Failed, Unset},
    ServerToAgent,
};
use opamp_gitops::server::{ServeOptions, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::runtime::Runtime;

const TOKEN: &str = "admin-token";
const TOKEN_KEY: &str = "opamp-gitops-admin-token";
const STAGING_ERROR: &str = "cannot start pipelines: failed to start \"otlp\" exporter: tls: \
                             failed to verify certificate: x509: certificate signed by unknown authority";
const SCRIPT_ATTR: &str = "<script>window.__pwned=1</script>";
const IMG_ATTR: &str = "<img src=x onerror=\"window.__pwned=2\">";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The example config repo, copied so a test may break it.
fn example_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo"),
        &dir.path().join("example-config-repo"),
    );
    dir
}

struct Fixture {
    rt: Runtime,
    server: Server,
    repo: tempfile::TempDir,
    _tokens: tempfile::TempDir,
}

impl Fixture {
    fn start(with_admin_token: bool) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let repo = example_repo();
        let tokens = tempfile::tempdir().expect("temp dir");
        std::fs::write(tokens.path().join("admin"), format!("ops:{TOKEN}\n")).unwrap();
        let mut options = ServeOptions::local(repo.path().join("example-config-repo"));
        if with_admin_token {
            options.admin_token_file = Some(tokens.path().join("admin"));
        }
        let server = rt.block_on(start_with(options));
        Fixture {
            rt,
            server,
            repo,
            _tokens: tokens,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.admin_addr)
    }

    fn connect(&self, attrs: &[(&str, &str)], outcome: Outcome) -> WsAgent {
        self.rt.block_on(connect(&self.server, attrs, outcome))
    }

    fn stop(self) {
        let Fixture { rt, server, .. } = self;
        rt.block_on(server.shutdown(Duration::from_secs(5)));
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    /// Applies its config and reports it as its effective config.
    Applied,
    /// Fails to apply it: keeps running an older config and turns unhealthy.
    Failed(&'static str),
    /// Takes the config and has not reported on it yet.
    Pending,
    /// Does not accept remote config at all.
    Unsupported,
}

fn effective(body: String) -> Option<EffectiveConfig> {
    Some(EffectiveConfig {
        config_map: Some(AgentConfigMap {
            // The Supervisor reports its merged config under one unnamed file.
            config_map: [(
                String::new(),
                AgentConfigFile {
                    body: body.into_bytes().into(),
                    content_type: "text/yaml".into(),
                },
            )]
            .into(),
        }),
    })
}

async fn connect(server: &Server, attrs: &[(&str, &str)], outcome: Outcome) -> WsAgent {
    let mut id = Identity::new(attrs);
    if let Outcome::Unsupported = outcome {
        id.capabilities = agent_caps::REPORTS_STATUS
            | agent_caps::REPORTS_EFFECTIVE_CONFIG
            | agent_caps::REPORTS_HEALTH;
    }
    let mut ws = WsAgent::connect(server.opamp_addr, id).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    match outcome {
        Outcome::Applied => {
            let hash = config_hash(&reply).expect("a config for the agent");
            let mut msg = ws.id.report(&hash, Applied, "");
            msg.effective_config = effective(config_file(&reply, "collector.yaml"));
            ws.exchange(msg).await;
        }
        Outcome::Failed(error) => {
            let hash = config_hash(&reply).expect("a config for the agent");
            let mut msg = ws.id.report(&hash, Failed, error);
            // It still runs last week's config.
            let older = config_file(&reply, "collector.yaml")
                .replace("timeout: 2s", "timeout: 10s")
                .replace("send_batch_size: 1024", "send_batch_size: 8192")
                .replace("level: debug", "level: info");
            msg.effective_config = effective(older);
            msg.health = Some(ComponentHealth {
                healthy: false,
                status: "StatusRecoverableError".into(),
                last_error: error.into(),
                ..Default::default()
            });
            ws.exchange(msg).await;
        }
        Outcome::Pending | Outcome::Unsupported => {}
    }
    ws
}

/// Waits on the agent's WebSocket for a config with `hash`.
fn config_arrives(rt: &Runtime, ws: &mut WsAgent, hash: &str) {
    rt.block_on(async {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let reply: ServerToAgent = ws
                .recv_within(left)
                .await
                .expect("the pushed config reaches the agent");
            if config_hash(&reply).map(hex::encode).as_deref() == Some(hash) {
                return;
            }
        }
    })
}

fn api(f: &Fixture, path: &str) -> Value {
    common::admin::get(f.server.admin_addr, path).json()
}

/// `[uid, status]` of every row of the agents table.
fn rows(b: &Browser) -> Vec<(String, String)> {
    let v = b.exec(
        "return Array.from(document.querySelectorAll('#agent-rows tr[data-uid]'))\
           .map(r => [r.dataset.uid, r.dataset.status]);",
        json!([]),
    );
    serde_json::from_value(v).expect("rows")
}

fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

/// Waits until the table holds exactly `want` (in any order).
fn wait_rows(b: &Browser, what: &str, want: &[(String, String)]) {
    let want = sorted(want.to_vec());
    b.wait_for(
        WAIT,
        what,
        |b| (sorted(rows(b)) == want).then_some(()),
        |b| format!("rows {:?}, want {want:?}", sorted(rows(b))),
    );
}

/// Waits until the page's script has polled the API once since the page loaded.
fn wait_live(b: &Browser) {
    b.wait_script(
        "the page's first poll",
        "return document.body.dataset.live === 'ok' && Number(document.body.dataset.polls) >= 1",
        json!([]),
    );
}

fn text_of(b: &Browser, css: &str) -> String {
    b.exec(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        json!([css]),
    )
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

fn wait_text(b: &Browser, css: &str, want: &str) -> String {
    b.wait_script(
        &format!("`{css}` to contain `{want}`"),
        "const e = document.querySelector(arguments[0]);\
         return e && !e.closest('[hidden]') && e.textContent.includes(arguments[1]) ? e.textContent : null;",
        json!([css, want]),
    )
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

fn not_pwned(b: &Browser) {
    assert_eq!(
        b.exec("return typeof window.__pwned", json!([])),
        "undefined",
        "agent-provided markup ran as code"
    );
    assert_eq!(
        b.exec(
            "return document.querySelectorAll('main script, main img').length",
            json!([])
        ),
        0,
        "agent-provided markup became elements"
    );
}

fn save_screenshot(b: &Browser, name: &str, docs: bool) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    b.screenshot(&path);
    eprintln!("screenshot: {}", path.display());
    if docs && std::env::var("OPAMP_GITOPS_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        b.screenshot(&docs);
        eprintln!("screenshot: {}", docs.display());
    }
}

fn pair(ws: &WsAgent, status: &str) -> (String, String) {
    (ws.id.uid_string(), status.to_owned())
}

/// The fleet every page test starts from: seven agents over the example repository, in every
/// status the dashboard shows.
struct SevenAgents {
    us: WsAgent,
    eu: WsAgent,
    gateways: Vec<WsAgent>,
    staging: WsAgent,
    laptop: WsAgent,
    legacy: WsAgent,
}

impl SevenAgents {
    fn connect(f: &Fixture) -> SevenAgents {
        // A small production fleet over the example config repo.
        let us = f.connect(
            &[
                ("service.name", "otel-collector"),
                ("environment", "production"),
                ("region", "us-east-1"),
                ("team", "checkout"),
                ("host.name", "ip-10-0-12-34.ec2.internal"),
                ("os.type", "linux"),
            ],
            Outcome::Applied,
        );
        let eu = f.connect(
            &[
                ("service.name", "otel-collector"),
                ("environment", "production"),
                ("region", "eu-west-1"),
                ("host.name", "ip-172-31-8-19.eu-west-1.compute.internal"),
                ("host.arch", "arm64"),
            ],
            Outcome::Applied,
        );
        let gateways: Vec<WsAgent> = ["x2kqp", "m8d4t"]
            .iter()
            .map(|pod| {
                f.connect(
                    &[
                        ("service.name", "otel-gateway"),
                        ("role", "gateway"),
                        ("environment", "production"),
                        ("region", "us-east-1"),
                        ("host.name", &format!("otel-gateway-7d9f8c6b5-{pod}")),
                        ("k8s.namespace.name", "monitoring"),
                    ],
                    Outcome::Applied,
                )
            })
            .collect();
        let staging = f.connect(
            &[
                ("service.name", "otel-collector"),
                ("environment", "staging-2"),
                ("host.name", "staging-2-node-3"),
            ],
            Outcome::Failed(STAGING_ERROR),
        );
        let laptop = f.connect(
            &[
                ("service.name", "otel-collector"),
                ("environment", "development"),
                ("host.name", "dev-laptop-042"),
                ("os.type", "darwin"),
            ],
            Outcome::Pending,
        );
        let legacy = f.connect(
            &[
                ("service.name", "otelcol-contrib"),
                ("environment", "development"),
                ("host.name", "ci-runner-17"),
            ],
            Outcome::Unsupported,
        );
        SevenAgents {
            us,
            eu,
            gateways,
            staging,
            laptop,
            legacy,
        }
    }

    /// `[uid, status]` of each, as the agents table shows them.
    fn rows(&self) -> Vec<(String, String)> {
        vec![
            pair(&self.us, "applied"),
            pair(&self.eu, "applied"),
            pair(&self.gateways[0], "applied"),
            pair(&self.gateways[1], "applied"),
            pair(&self.staging, "failed"),
            pair(&self.laptop, "pending"),
            pair(&self.legacy, "unsupported"),
        ]
    }
}

/// The fleet page: every agent with its status, the counts and the revision; filters narrow
/// the table in place; pages of a given size.
#[test]
fn the_fleet_page_counts_filters_and_pages_the_fleet() {
    let f = Fixture::start(true);
    let agents = SevenAgents::connect(&f);
    let SevenAgents {
        us,
        eu,
        gateways,
        staging,
        ..
    } = &agents;
    let fleet = agents.rows();
    let b = Browser::start();

    // The fleet page: every agent with its status, the counts, the revision.
    b.goto(&f.url("/"));
    wait_rows(&b, "the fleet", &fleet);
    wait_live(&b);
    let counts = b.exec(
        "return ['total','applied','failed','pending','unsupported','healthy','unhealthy','connected']\
           .map(n => [n, document.getElementById('count-' + n).textContent]);",
        json!([]),
    );
    assert_eq!(
        counts,
        json!([
            ["total", "7"],
            ["applied", "4"],
            ["failed", "1"],
            ["pending", "1"],
            ["unsupported", "1"],
            ["healthy", "6"],
            ["unhealthy", "1"],
            ["connected", "7"]
        ])
    );
    let revision = api(&f, "/api/revision")["current"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text_of(&b, "#rev-id"), revision);
    assert!(text_of(&b, "#rev-source").ends_with("/example-config-repo"));
    assert!(text_of(
        &b,
        &format!("tr[data-uid=\"{}\"] td.attrs", us.id.uid_string())
    )
    .contains("ip-10-0-12-34.ec2.internal"));
    assert_eq!(text_of(&b, "#showing"), "showing 1–7 of 7");
    let why = b.exec(
        "return document.querySelector(`tr[data-uid='${arguments[0]}'] .badge`).title",
        json!([staging.id.uid_string()]),
    );
    assert!(why.as_str().unwrap().contains("x509"), "{why}");
    save_screenshot(&b, "dashboard.png", true);

    // Filters narrow the table in place (no reload: the page's own variable survives).
    b.exec("window.__samePage = 'yes'", json!([]));
    b.click(&b.find("#filter-status option[value=\"failed\"]"));
    wait_rows(&b, "the status filter", &[pair(staging, "failed")]);
    assert_eq!(
        b.exec("return location.search", json!([])),
        "?status=failed"
    );
    b.click(&b.find("#filter-status option[value=\"\"]"));
    wait_rows(&b, "the status filter cleared", &fleet);
    b.click(&b.find("#filter-rule option[value=\"gateway\"]"));
    wait_rows(
        &b,
        "the rule filter",
        &[pair(&gateways[0], "applied"), pair(&gateways[1], "applied")],
    );
    b.click(&b.find("#filter-rule option[value=\"\"]"));
    wait_rows(&b, "the rule filter cleared", &fleet);
    b.type_text(&b.find("#search"), "EU-West");
    wait_rows(&b, "the search", &[pair(eu, "applied")]);
    assert_eq!(b.exec("return location.search", json!([])), "?q=EU-West");
    b.exec(
        "const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'));",
        json!([]),
    );
    wait_rows(&b, "the search cleared", &fleet);
    assert_eq!(b.exec("return window.__samePage", json!([])), "yes");

    // Pagination: limit/offset with "showing X–Y of N".
    b.goto(&f.url("/?limit=3"));
    assert_eq!(rows(&b).len(), 3);
    assert_eq!(text_of(&b, "#showing"), "showing 1–3 of 7");
    b.click(&b.find("#next"));
    wait_text(&b, "#showing", "showing 4–6 of 7");
    b.click(&b.find("#next"));
    wait_text(&b, "#showing", "showing 7–7 of 7");
    assert_eq!(rows(&b).len(), 1);
    b.click(&b.find("#prev"));
    wait_text(&b, "#showing", "showing 4–6 of 7");

    drop(b);
    drop(agents);
    f.stop();
}

/// Agents that connect after the page loaded show up without a reload, and markup in their
/// attributes is text, in the browser and in the server-rendered HTML.
#[test]
fn agents_that_connect_later_show_live_and_their_markup_stays_text() {
    let f = Fixture::start(true);
    let agents = SevenAgents::connect(&f);
    let fleet = agents.rows();
    let b = Browser::start();

    // Live: agents that connect after the page loaded show up without a reload, and their
    // markup-laden attributes show as text.
    b.goto(&f.url("/"));
    wait_live(&b);
    b.exec("window.__samePage = 'yes'", json!([]));
    let script = f.connect(
        &[("environment", "development"), ("host.name", SCRIPT_ATTR)],
        Outcome::Applied,
    );
    let img = f.connect(
        &[("environment", "development"), ("host.name", IMG_ATTR)],
        Outcome::Applied,
    );
    let mut fleet = fleet;
    fleet.push(pair(&script, "applied"));
    fleet.push(pair(&img, "applied"));
    wait_rows(&b, "the agents that connected later", &fleet);
    assert_eq!(b.exec("return window.__samePage", json!([])), "yes");
    wait_text(&b, "#count-total", "9");
    for (ws, attr) in [(&script, SCRIPT_ATTR), (&img, IMG_ATTR)] {
        let cell = format!("tr[data-uid=\"{}\"] td.attrs", ws.id.uid_string());
        assert!(
            text_of(&b, &cell).contains(attr),
            "{cell}: {}",
            text_of(&b, &cell)
        );
    }
    not_pwned(&b);
    // Server-rendered, the same: escaped in the HTML, text in the browser.
    let html = common::admin::get(f.server.admin_addr, "/").body;
    assert!(html.contains("&lt;script&gt;window.__pwned=1&lt;&#x2f;script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;"));
    assert!(!html.contains(SCRIPT_ATTR) && !html.contains(IMG_ATTR));
    b.goto(&f.url("/"));
    let cell = format!("tr[data-uid=\"{}\"] td.attrs", script.id.uid_string());
    assert!(text_of(&b, &cell).contains(SCRIPT_ATTR));
    not_pwned(&b);
    wait_live(&b);
    assert!(text_of(&b, &cell).contains(SCRIPT_ATTR));
    not_pwned(&b);
    b.goto(&f.url(&format!("/agents/{}", img.id.uid_string())));
    wait_live(&b);
    assert!(text_of(&b, "#attrs-identifying").contains(IMG_ATTR));
    not_pwned(&b);

    drop(b);
    drop((agents, script, img));
    f.stop();
}

/// A failed agent's page: its error and the diff of what it runs against what it should; a push
/// with the token the page keeps, a refused restart, a refused token asked again, and the page
/// following the agent's apply.
#[test]
fn the_agent_page_shows_a_failure_pushes_with_the_token_and_follows_the_apply() {
    let f = Fixture::start(true);
    let mut staging = f.connect(
        &[
            ("service.name", "otel-collector"),
            ("environment", "staging-2"),
            ("host.name", "staging-2-node-3"),
        ],
        Outcome::Failed(STAGING_ERROR),
    );
    let b = Browser::start();

    // The failed agent's page: its error, the diff of what it runs against what it should.
    let uid = staging.id.uid_string();
    let detail = api(&f, &format!("/api/agents/{uid}"));
    let desired_hash = detail["desired_hash"].as_str().unwrap().to_owned();
    b.goto(&f.url(&format!("/agents/{uid}")));
    assert_eq!(text_of(&b, "#status"), "failed");
    assert!(
        text_of(&b, "#last-error-text").contains("x509: certificate signed by unknown authority")
    );
    let diff = b.exec(
        "const d = document.getElementById('diff');\
         return [d.hidden, d.textContent, d.querySelectorAll('.add').length, d.querySelectorAll('.del').length];",
        json!([]),
    );
    assert_eq!(diff[0], false);
    let diff_text = diff[1].as_str().unwrap();
    assert!(
        diff_text.contains("--- desired") && diff_text.contains("+++ effective"),
        "{diff_text}"
    );
    assert!(diff_text.contains("-    timeout: 2s") && diff_text.contains("+    timeout: 10s"));
    assert_eq!((diff[2].as_u64(), diff[3].as_u64()), (Some(3), Some(3)));
    assert!(
        text_of(&b, "#desired-config").contains("tempo-staging-2-us-east-1.monitoring.svc:4317")
    );
    assert!(text_of(&b, "#desired-config").contains("authorization: <redacted>"));
    assert!(text_of(&b, "#effective-config").contains("timeout: 10s"));
    assert!(text_of(&b, "#capabilities").contains("AcceptsRemoteConfig"));
    assert_eq!(text_of(&b, "#desired-hash"), desired_hash);
    wait_live(&b);
    assert!(text_of(&b, "#health-detail").contains("StatusRecoverableError"));
    save_screenshot(&b, "dashboard-agent.png", false);

    // A push asks for confirmation first: cancelled, nothing is sent.
    b.click(&b.find("#push"));
    let question = wait_text(&b, "#confirm-text", "again");
    assert!(question.contains(&uid), "{question}");
    b.click(&b.find("#confirm-no"));
    wait_text(&b, "#action-message", "Cancelled");
    let nothing =
        f.rt.block_on(staging.recv_within(Duration::from_millis(500)));
    assert!(nothing.is_none(), "a cancelled push sends nothing");

    // Confirmed without a token: the sign-in form (no window.prompt) asks for one, then the
    // push goes out with it.
    b.click(&b.find("#push"));
    wait_text(&b, "#confirm-text", "again");
    b.click(&b.find("#confirm-yes"));
    wait_text(&b, "#sign-in-note", "admin token");
    assert_eq!(b.alert_text(), None, "no browser prompt");
    b.type_text(&b.find("#sign-in-token"), TOKEN);
    b.click(&b.find("#sign-in-submit"));
    config_arrives(&f.rt, &mut staging, &desired_hash);
    wait_text(&b, "#action-message", "Push sent");
    assert!(b.exec("return document.getElementById('sign-in').hidden && !document.getElementById('sign-out').hidden", json!([])).as_bool().unwrap());

    // Restart is refused (409) for an agent without AcceptsRestartCommand: the page says why.
    b.click(&b.find("#restart"));
    wait_text(&b, "#confirm-text", "Restart agent");
    b.click(&b.find("#confirm-yes"));
    wait_text(&b, "#action-message", "AcceptsRestartCommand");
    assert!(text_of(&b, "#action-message").contains("409"));

    // A refused token is forgotten and asked for again in the form.
    b.exec(
        "sessionStorage.setItem(arguments[0], 'not-the-token')",
        json!([TOKEN_KEY]),
    );
    b.click(&b.find("#push"));
    wait_text(&b, "#confirm-text", "again");
    b.click(&b.find("#confirm-yes"));
    wait_text(&b, "#sign-in-note", "refused");
    b.type_text(&b.find("#sign-in-token"), TOKEN);
    b.click(&b.find("#sign-in-submit"));
    config_arrives(&f.rt, &mut staging, &desired_hash);
    wait_text(&b, "#action-message", "Push sent");
    assert_eq!(
        b.exec(
            "return sessionStorage.getItem(arguments[0])",
            json!([TOKEN_KEY])
        ),
        TOKEN
    );

    // The agent applies it: the page follows without a reload.
    b.exec("window.__samePage = 'yes'", json!([]));
    f.rt.block_on(async {
        let hash = hex::decode(&desired_hash).unwrap();
        let mut msg = staging.id.report(&hash, Applied, "");
        msg.effective_config = effective(
            detail["desired_config"]["collector.yaml"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        msg.health = Some(ComponentHealth {
            healthy: true,
            status: "StatusOK".into(),
            ..Default::default()
        });
        staging.exchange(msg).await;
    });
    wait_text(&b, "#status", "applied");
    b.wait_script(
        "the error and the diff to go",
        "return document.getElementById('last-error').hidden && document.getElementById('diff').hidden \
                && !document.getElementById('diff-empty').hidden",
        json!([]),
    );
    assert_eq!(b.exec("return window.__samePage", json!([])), "yes");

    drop(b);
    drop(staging);
    f.stop();
}

/// The rules page shows what /api/rules says; a rejected revision shows live with its
/// diagnostics while the current one stays.
#[test]
fn the_rules_page_matches_the_api_and_a_rejected_revision_shows_live() {
    let f = Fixture::start(true);
    // The rules page counts them: two gateways, one failed staging agent, and so on.
    let agents = SevenAgents::connect(&f);
    let b = Browser::start();

    // The rules page shows what /api/rules says.
    b.goto(&f.url("/rules"));
    let shown = b.exec(
        "return Array.from(document.querySelectorAll('#rule-rows tr[data-rule]')).map(r => [\
           r.dataset.rule, r.querySelector('.agents').textContent, r.querySelector('.applied').textContent,\
           r.querySelector('.failed').textContent, r.querySelector('.files').textContent.trim()]);",
        json!([]),
    );
    let expected: Vec<Value> = api(&f, "/api/rules")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["name"],
                r["agents"].to_string(),
                r["applied"].to_string(),
                r["failed"].to_string(),
                r["template"]
            ])
        })
        .collect();
    assert_eq!(shown, Value::Array(expected));
    assert_eq!(shown[0][0], "gateway");
    assert_eq!(shown[0][1], "2");
    save_screenshot(&b, "dashboard-rules.png", false);

    let revision = api(&f, "/api/revision")["current"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A rejected revision shows live with its diagnostics, and the current one stays.
    b.goto(&f.url("/"));
    wait_live(&b);
    assert_eq!(
        b.exec(
            "return document.getElementById('rejected').hidden",
            json!([])
        ),
        true
    );
    let fleet_yaml = f.repo.path().join("example-config-repo/fleet.yaml");
    let text = std::fs::read_to_string(&fleet_yaml).unwrap();
    std::fs::write(&fleet_yaml, format!("{text}\nwavez: [5, 100]\n")).unwrap();
    let diagnostics = wait_text(&b, "#rejected-diagnostics", "fleet.yaml:");
    assert!(diagnostics.contains("wavez"), "{diagnostics}");
    assert_eq!(text_of(&b, "#rev-id"), revision);
    save_screenshot(&b, "dashboard-rejected.png", false);

    drop(b);
    drop(agents);
    f.stop();
}

/// Static assets with their content types and the page's CSP; errors as HTML pages.
#[test]
fn assets_have_their_types_and_errors_are_pages() {
    let f = Fixture::start(true);

    // Assets with their types; errors as pages.
    let http = http_client();
    for (path, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let response = http.get(f.url(path)).call().unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
    let page = http.get(f.url("/")).call().unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for (path, status) in [
        ("/agents/not-a-uid", 400),
        ("/agents/0190d5e6-8b3c-7c2a-9f10-3a4b5c6d7e8f", 404),
        ("/?status=bogus", 400),
    ] {
        let answer = common::admin::get(f.server.admin_addr, path);
        assert_eq!(answer.status, status, "{path}");
        assert!(answer.body.contains("<h1>"), "{path}: an HTML page");
    }

    f.stop();
}

#[test]
fn actions_show_the_servers_refusal_when_they_are_disabled() {
    let f = Fixture::start(false);
    let agent = f.connect(
        &[("environment", "production"), ("region", "us-east-1")],
        Outcome::Applied,
    );
    let b = Browser::start();
    b.goto(&f.url(&format!("/agents/{}", agent.id.uid_string())));
    assert_eq!(text_of(&b, "#status"), "applied");
    b.exec(
        "sessionStorage.setItem(arguments[0], arguments[1])",
        json!([TOKEN_KEY, TOKEN]),
    );
    b.click(&b.find("#push"));
    wait_text(&b, "#confirm-text", "again");
    b.click(&b.find("#confirm-yes"));
    let message = wait_text(&b, "#action-message", "403");
    assert!(message.contains("--admin-token-file"), "{message}");
    drop(b);
    drop(agent);
    f.stop();
}

/// `[uid]` of every row, in the table's order.
fn row_order(b: &Browser) -> Vec<String> {
    rows(b).into_iter().map(|(uid, _)| uid).collect()
}

/// The fleet page names agents by host, sorts by any column, fits a 1280 px window, says when
/// a sync failed, and refreshes the source through the sign-in form.
#[test]
fn the_fleet_page_labels_sorts_fits_and_refreshes() {
    let f = Fixture::start(true);
    let agents = SevenAgents::connect(&f);
    let b = Browser::start();
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 1280, "height": 900})),
    );
    b.goto(&f.url("/"));
    wait_live(&b);

    // Agents are labelled by host.name, with the uid as a second line.
    let us = agents.us.id.uid_string();
    let cell = b.exec(
        "const td = document.querySelector(`tr[data-uid='${arguments[0]}'] td.uid`);\
         return [td.querySelector('a').textContent, td.querySelector('.sub').textContent];",
        json!([us]),
    );
    assert_eq!(cell, json!(["ip-10-0-12-34.ec2.internal", us]));

    // Every status tile fits inside its card at 1280 px, and nothing scrolls sideways.
    let fits = b.exec(
        "const card = document.querySelector('#summary .tiles').getBoundingClientRect();\
         const tiles = Array.from(document.querySelectorAll('#status-counts .tile'));\
         return [tiles.length, tiles.every(t => t.getBoundingClientRect().right <= card.right + 0.5),\
                 document.documentElement.scrollWidth <= window.innerWidth];",
        json!([]),
    );
    assert_eq!(fits[1], true, "a status tile overflows its card: {fits}");
    assert_eq!(
        fits[2], true,
        "the page scrolls sideways at 1280 px: {fits}"
    );
    assert!(fits[0].as_u64().unwrap() >= 9, "{fits}");

    // Sorting by agent orders by label; a second click reverses; the API sorts the same way.
    let mut by_label: Vec<(String, String)> = api(&f, "/api/agents")["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attributes"]["host.name"]
                    .as_str()
                    .unwrap()
                    .to_lowercase(),
                a["instance_uid"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_label.sort();
    let ascending: Vec<String> = by_label.into_iter().map(|(_, uid)| uid).collect();
    let descending: Vec<String> = ascending.iter().rev().cloned().collect();
    b.click(&b.find("th.sortable a[data-sort='agent']"));
    b.wait_for(
        WAIT,
        "rows sorted by agent",
        |b| (row_order(b) == ascending).then_some(()),
        |b| format!("{:?}", row_order(b)),
    );
    assert!(b.url().contains("sort=agent"), "{}", b.url());
    b.click(&b.find("th.sortable a[data-sort='agent']"));
    b.wait_for(
        WAIT,
        "rows sorted by agent, descending",
        |b| (row_order(b) == descending).then_some(()),
        |b| format!("{:?}", row_order(b)),
    );
    let listed: Vec<String> = api(&f, "/api/agents?sort=-agent")["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["instance_uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, descending);
    // Without the script, the server renders the same order.
    b.goto(&f.url("/?sort=-agent"));
    assert_eq!(row_order(&b), descending);
    assert_eq!(
        common::admin::get(f.server.admin_addr, "/api/agents?sort=color").status,
        400
    );

    // A failed sync does not read as success.
    wait_text(&b, "#last-sync .sync", "ok");
    let repo = f.repo.path().join("example-config-repo");
    let moved = f.repo.path().join("moved-away");
    std::fs::rename(&repo, &moved).unwrap();
    assert!(!f.rt.block_on(f.server.reload()));
    wait_text(&b, "#last-sync .sync.failed", "failed");
    assert!(text_of(&b, "#last-sync").contains("cannot read"));
    std::fs::rename(&moved, &repo).unwrap();
    assert!(f.rt.block_on(f.server.reload()));
    wait_text(&b, "#last-sync .sync.ok", "ok");

    // Refresh (admin): the sign-in form asks for the token, then the refresh is accepted.
    b.click(&b.find("#refresh-now"));
    wait_text(&b, "#sign-in-note", "admin token");
    b.type_text(&b.find("#sign-in-token"), TOKEN);
    b.click(&b.find("#sign-in-submit"));
    wait_text(&b, "#refresh-message", "Refresh requested");
    save_screenshot(&b, "dashboard-fleet-1280.png", false);

    drop(b);
    drop(agents);
    f.stop();
}

/// The events page lists the audit trail and filters it by kind and agent.
#[test]
fn the_events_page_lists_and_filters_the_audit_trail() {
    let f = Fixture::start(true);
    let agents = SevenAgents::connect(&f);
    let us = agents.us.id.uid_string();
    let b = Browser::start();
    b.goto(&f.url("/events"));
    wait_live(&b);
    let kinds = |b: &Browser| -> Vec<String> {
        serde_json::from_value(b.exec(
            "return Array.from(document.querySelectorAll('#event-rows tr')).map(r => r.dataset.kind);",
            json!([]),
        ))
        .unwrap()
    };
    let all = kinds(&b);
    for kind in ["revision_applied", "config_sent", "status_reported"] {
        assert!(all.iter().any(|k| k == kind), "{kind} in {all:?}");
    }

    // By kind: only configs sent, one per managed agent that got one.
    b.exec(
        "const s = document.getElementById('event-kind'); s.value = 'config_sent';\
         s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    b.wait_for(
        WAIT,
        "only config_sent rows",
        |b| {
            let k = kinds(b);
            (!k.is_empty() && k.iter().all(|k| k == "config_sent")).then_some(())
        },
        |b| format!("{:?}", kinds(b)),
    );
    let total = api(&f, "/api/events?kind=config_sent")["total"]
        .as_u64()
        .unwrap();
    wait_text(&b, "#events-showing", &format!("of {total}"));

    // And by agent: that agent's events only.
    b.type_text(&b.find("#event-agent"), &us);
    b.wait_for(
        WAIT,
        "one agent's config_sent rows",
        |b| {
            let agents: Vec<String> = serde_json::from_value(b.exec(
                "return Array.from(document.querySelectorAll('#event-rows tr td.agent')).map(td => td.textContent);",
                json!([]),
            ))
            .unwrap();
            (!agents.is_empty() && agents.iter().all(|a| *a == us)).then_some(())
        },
        |b| format!("{:?}", kinds(b)),
    );
    assert!(b.url().contains("kind=config_sent"), "{}", b.url());
    not_pwned(&b);
    drop(b);
    drop(agents);
    f.stop();
}

/// The fleet page's rollout panel: the current revision's waves with their progress, the held
/// and applied counts, and the Promote button admitting the next wave.
#[test]
fn the_rollout_panel_shows_the_waves_and_promotes_through_the_api() {
    let f = Fixture::start(true);
    let dir = f.repo.path().join("example-config-repo");
    let fleet_yaml = dir.join("fleet.yaml");
    let text = std::fs::read_to_string(&fleet_yaml).unwrap();
    std::fs::write(
        &fleet_yaml,
        format!("{text}\nrollout:\n  waves: [50, 100]\n  soak: 1h\n"),
    )
    .unwrap();
    assert!(f.rt.block_on(f.server.reload()));
    let mut agents = Vec::new();
    for i in 0..12 {
        let host = format!("host-{i}");
        agents.push(f.connect(
            &[
                ("service.name", "otel-collector"),
                ("environment", "production"),
                ("region", "us-east-1"),
                ("host.name", host.as_str()),
            ],
            Outcome::Applied,
        ));
    }
    // A new revision: every agent's config changes; half of them wait behind wave 1.
    let text = std::fs::read_to_string(&fleet_yaml).unwrap();
    std::fs::write(
        &fleet_yaml,
        text.replacen("timeout: 10s", "timeout: 11s", 1),
    )
    .unwrap();
    common::e2e::update_goldens(&dir);
    assert!(f.rt.block_on(f.server.reload()));

    let b = Browser::start();
    b.goto(&f.url("/"));
    wait_live(&b);
    wait_text(&b, "#rollouts .rollout[data-scope=fleet] h3", "wave 1");
    let counts = wait_text(&b, "#rollouts .rollout-counts", "held");
    assert!(!counts.starts_with("0 held"), "{counts}");
    assert_eq!(
        b.find_all("#rollouts .wave").len(),
        3,
        "canary slot, 50 %, 100 %"
    );
    assert!(text_of(&b, "#rollouts .wave[data-wave='1']").contains("50 %"));
    b.click(&b.find("#rollouts [data-rollout-action=promote]"));
    wait_text(&b, "#sign-in-note", "admin token");
    b.type_text(&b.find("#sign-in-token"), TOKEN);
    b.click(&b.find("#sign-in-submit"));
    wait_text(&b, "#rollout-message", "promote accepted");
    wait_text(&b, "#rollouts .rollout[data-scope=fleet] h3", "wave 2");
    wait_text(&b, "#rollouts .rollout-counts", "0 held");
    let events = common::admin::get(f.server.admin_addr, "/api/events?limit=1000").body;
    assert!(events.contains("rollout_promoted"), "{events}");
    drop(b);
    drop(agents);
    f.stop();
}
