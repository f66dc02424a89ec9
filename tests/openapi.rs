//! The admin API's contract: `GET /api/openapi.json` is a valid OpenAPI 3.1 document
//! (openapi-spec-validator) that names every `/api/*` route, the running server keeps to it
//! under schemathesis, and every `/api/*` error is the documented `{"error": "..."}`.

mod common;

use common::admin::{get, post, request, Answer};
use common::agent::{config_hash, Identity, WsAgent};
use common::repo::TestRepo;
use common::server::{eventually, start_with};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use opamp_gitops::server::{ServeOptions, Server};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-token");

/// Every route of the admin API with its methods, as the router serves them.
const API_ROUTES: &[(&str, &[&str])] = &[
    ("/api/agents", &["get"]),
    ("/api/agents/{uid}", &["get", "delete"]),
    ("/api/agents/{uid}/push", &["post"]),
    ("/api/agents/{uid}/restart", &["post"]),
    ("/api/agents/{uid}/history", &["get"]),
    ("/api/attribute-sets", &["get"]),
    ("/api/events", &["get"]),
    ("/api/openapi.json", &["get"]),
    ("/api/refresh", &["post"]),
    ("/api/revision", &["get"]),
    ("/api/revisions/{id}/agents", &["get"]),
    ("/api/rollout", &["get"]),
    ("/api/rollout/pause", &["post"]),
    ("/api/rollout/promote", &["post"]),
    ("/api/rollout/resume", &["post"]),
    ("/api/rules", &["get"]),
    ("/api/summary", &["get"]),
    ("/api/version", &["get"]),
];

/// The bin directory of the venv with openapi-spec-validator and schemathesis, installing
/// them first (idempotent).
fn apitools() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apitools/install.sh");
        let output = Command::new("bash")
            .arg(script)
            .output()
            .expect("run install.sh");
        assert!(
            output.status.success(),
            "tests/apitools/install.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(stdout.lines().last().expect("the venv's bin dir").trim())
    })
    .clone()
}

struct Fixture {
    _tokens: tempfile::TempDir,
    _repo: TestRepo,
    server: Server,
}

async fn fixture(admin_tokens: bool) -> Fixture {
    fixture_with(admin_tokens, "").await
}

/// A server on the test repo with `fleet_prefix` put before its `fleet.yaml`.
async fn fixture_with(admin_tokens: bool, fleet_prefix: &str) -> Fixture {
    let tokens = tempfile::tempdir().unwrap();
    std::fs::write(tokens.path().join("admin"), "alice:admin-token\n").unwrap();
    let repo = TestRepo::new();
    if !fleet_prefix.is_empty() {
        let fleet = repo.read("fleet.yaml");
        repo.write("fleet.yaml", &format!("{fleet_prefix}{fleet}"));
    }
    let mut options = ServeOptions::local(repo.path());
    if admin_tokens {
        options.admin_token_file = Some(tokens.path().join("admin"));
    }
    let server = start_with(options).await;
    Fixture {
        _tokens: tokens,
        _repo: repo,
        server,
    }
}

fn document(fixture: &Fixture) -> Value {
    let answer = get(fixture.server.admin_addr, "/api/openapi.json");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1_and_names_every_api_route() {
    let f = fixture(true).await;
    let doc = tokio::task::block_in_place(|| document(&f));
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "not OpenAPI 3.1: {}",
        doc["openapi"]
    );

    let paths = doc["paths"].as_object().expect("paths");
    for (route, methods) in API_ROUTES {
        let item = paths
            .get(*route)
            .unwrap_or_else(|| panic!("{route} is not in the document"));
        for method in *methods {
            let operation = &item[*method];
            assert!(operation.is_object(), "{method} {route} is not documented");
            // Every failure an operation documents is the one error body.
            for (code, response) in operation["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {route} {code}"
                    );
                }
            }
        }
    }
    let documented_api: Vec<&String> = paths.keys().filter(|p| p.starts_with("/api/")).collect();
    assert_eq!(
        documented_api.len(),
        API_ROUTES.len(),
        "documented: {documented_api:?}"
    );
    // The `kind` filter takes exactly the kinds the server knows (its 400 lists them).
    let refused = tokio::task::block_in_place(|| get(f.server.admin_addr, "/api/events?kind=nope"));
    let message = refused.json()["error"].as_str().unwrap().to_owned();
    let known = message
        .split("(one of ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{message}"));
    let kind = doc["paths"]["/api/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kind")
        .expect("a kind parameter");
    let pattern = kind["schema"]["pattern"].as_str().unwrap().to_owned();
    let documented: Vec<&str> = pattern
        .trim_start_matches("^(")
        .trim_end_matches(")?$")
        .split('|')
        .collect();
    assert_eq!(
        documented,
        known.split(", ").collect::<Vec<_>>(),
        "{pattern}"
    );
    // The mutating operations name the admin token.
    assert_eq!(
        doc["paths"]["/api/refresh"]["post"]["security"][0]["admin_token"],
        serde_json::json!([])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let output = tokio::task::block_in_place(|| {
        Command::new(apitools().join("openapi-spec-validator"))
            .arg(file.path())
            .output()
            .expect("run openapi-spec-validator")
    });
    assert!(
        output.status.success(),
        "openapi-spec-validator:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The answer is the documented JSON error with this status.
fn assert_json_error(answer: &Answer, status: u16, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    let body: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", answer.body));
    let message = body["error"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: no error message: {body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_error_is_the_documented_json_error() {
    let f = fixture(true).await;
    let addr = f.server.admin_addr;
    tokio::task::block_in_place(|| {
        assert_json_error(&get(addr, "/api/no-such-thing"), 404, "unknown path");
        assert_json_error(
            &post(addr, "/api/summary", &[], b""),
            405,
            "POST on a GET route",
        );
        assert_json_error(
            &request("DELETE", addr, "/api/agents", &[], b""),
            405,
            "DELETE on a GET route",
        );
        assert_json_error(&get(addr, "/api/agents/not-a-uuid"), 400, "bad uid");
        // A path parameter that does not decode to UTF-8: axum's own rejection, made JSON.
        assert_json_error(&get(addr, "/api/agents/%FF%FE"), 400, "undecodable uid");
        assert_json_error(
            &get(addr, "/api/agents/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            404,
            "unknown agent",
        );
        assert_json_error(&get(addr, "/api/agents?status=sideways"), 400, "bad status");
        assert_json_error(&get(addr, "/api/events?kind=nope"), 400, "bad kind");
        assert_json_error(&post(addr, "/api/refresh", &[], b""), 401, "no token");
        assert_json_error(
            &post(addr, "/api/rollout/pause", &[ADMIN], b""),
            404,
            "no rollout",
        );
    });

    let without_tokens = fixture(false).await;
    let answer = tokio::task::block_in_place(|| {
        post(without_tokens.server.admin_addr, "/api/refresh", &[], b"")
    });
    assert_json_error(&answer, 403, "mutating endpoints disabled");

    // Outside /api/ the dashboard keeps its own pages.
    let page = tokio::task::block_in_place(|| get(addr, "/no-such-page"));
    assert_eq!(page.status, 404);
    assert!(serde_json::from_str::<Value>(&page.body).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_running_server_true_to_its_document() {
    // A staged rollout, so that its endpoints have something to act on.
    let f = fixture_with(
        true,
        "rollout:\n  canary: { match: { environment: staging } }\n  waves: [50, 100]\n  soak: 1h\n",
    )
    .await;
    // A fleet to describe: two agents that applied their configs.
    let mut agents = Vec::new();
    for env in ["production", "staging"] {
        let id = Identity::new(&[("service.name", "gateway"), ("environment", env)]);
        let mut ws = WsAgent::connect(f.server.opamp_addr, id).await;
        let hello = ws.id.full_state(&[], Unset);
        let reply = ws.exchange(hello).await;
        if let Some(hash) = config_hash(&reply) {
            let applied = ws.id.report(&hash, Applied, "");
            ws.exchange(applied).await;
        }
        agents.push(ws);
    }
    eventually(Duration::from_secs(10), "both agents listed", || {
        (f.server.fleet.summaries().len() == 2).then_some(())
    })
    .await;

    let base = format!("http://{}", f.server.admin_addr);
    let scratch = tempfile::tempdir().unwrap();
    let output = tokio::task::block_in_place(|| {
        Command::new(apitools().join("schemathesis"))
            .args(["run", &format!("{base}/api/openapi.json"), "--url", &base])
            .args(["--header", &format!("{}: {}", ADMIN.0, ADMIN.1)])
            .args([
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--workers",
                "2",
            ])
            .args(["--request-timeout", "10", "--no-color"])
            // Its own state (.schemathesis/) goes to a temp dir, not the checkout.
            .current_dir(scratch.path())
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("run schemathesis")
    });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis:\n{report}");
    // It really exercised the operations.
    assert!(report.contains("/api/agents"), "{report}");
    // The server is still serving its agents afterwards.
    let summary = tokio::task::block_in_place(|| get(f.server.admin_addr, "/api/summary"));
    assert_eq!(summary.json()["total"], 2, "{}", summary.body);
    drop(agents);
}
