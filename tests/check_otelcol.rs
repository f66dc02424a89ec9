//! `--otelcol PATH`: the Collector distribution a team runs validates renders too, so a config
//! that passes our own checks but names a component the distribution lacks is caught by `check`
//! (CI), by `serve` for the sample agents (the revision is rejected), and by `serve` for a live
//! agent no sample covers (its own `render_error`). The Collector is the reference distribution
//! (tests/reference: no `file` exporter); a failed build fails the test.

mod common;

use common::admin::api;

use common::agent::{config_hash, Identity, WsAgent};
use common::e2e::{add_file_exporter, update_goldens, write_config_repo, TEMPLATE};
use common::run_cli;
use common::server::start_with;
use opamp_gitops::opamp::proto::RemoteConfigStatuses::Unset;
use opamp_gitops::server::ServeOptions;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const MISSING: &str = r#"unknown type: "file""#;

fn collector() -> String {
    common::reference::collector().display().to_string()
}

#[test]
fn the_example_repo_passes_check_with_the_reference_collector() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checked = run_cli(
        root,
        &["check", "example-config-repo", "--otelcol", &collector()],
    );
    assert_eq!(checked.code, 0, "{checked:?}");
}

#[test]
fn a_render_using_a_component_the_collector_lacks_fails_check_naming_it_the_rule_and_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    write_config_repo(repo, 4318, 4319);
    add_file_exporter(repo, TEMPLATE, &repo.join("spans.json"));
    update_goldens(repo); // which also shows that our own checks accept it

    let human = run_cli(repo, &["check", ".", "--otelcol", &collector()]);
    assert_eq!(human.code, 1, "{human:?}");
    let text = format!("{}{}", human.stdout, human.stderr);
    assert!(text.contains(MISSING), "{human:?}");
    assert!(
        text.contains("rule e2e") && text.contains("agent e2e"),
        "{human:?}"
    );

    let json = run_cli(
        repo,
        &["check", ".", "--otelcol", &collector(), "--format", "json"],
    );
    assert_eq!(json.code, 1, "{json:?}");
    let report: Value = serde_json::from_str(&json.stdout).expect("JSON report");
    assert_eq!(report["ok"], false);
    let diagnostics = report["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1, "{report:#}");
    let d = &diagnostics[0];
    assert_eq!(d["severity"], "error", "{report:#}");
    assert_eq!(d["rule"], "e2e", "{report:#}");
    assert_eq!(d["agent"], "e2e", "{report:#}");
    assert_eq!(d["file"], TEMPLATE, "{report:#}");
    assert!(
        d["message"].as_str().unwrap().contains(MISSING),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_otelcol_rejects_a_refused_sample_and_marks_a_refused_live_agent_render_error() {
    // The fixture, plus a rule for `environment: legacy` whose template has a `file` exporter and
    // that no sample agent covers: the revision is accepted.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    write_config_repo(&repo, 4318, 4319);
    std::fs::copy(repo.join(TEMPLATE), repo.join("templates/legacy.yaml.j2")).unwrap();
    add_file_exporter(
        &repo,
        "templates/legacy.yaml.j2",
        &dir.path().join("spans.json"),
    );
    common::e2e::edit(
        &repo,
        "fleet.yaml",
        "rules:\n",
        "rules:\n  - name: legacy\n    match:\n      environment: legacy\n    template: legacy.yaml.j2\n    vars:\n      otlp_endpoint: 127.0.0.1:4318\n      sink: http://127.0.0.1:4319\n",
    );
    update_goldens(&repo);

    let mut options = ServeOptions::local(&repo);
    options.cache_dir = dir.path().join("cache");
    options.otelcol = Some(common::reference::collector());
    let server = start_with(options).await;
    let revision = api(server.admin_addr, "/api/revision");
    let good = revision["current"]["id"].clone();
    assert!(good.is_string(), "{revision:#}");
    assert_eq!(revision["rejected"], Value::Null, "{revision:#}");

    // A live agent the Collector accepts the render of gets its config.
    let mut fine =
        WsAgent::connect(server.opamp_addr, Identity::new(&[("environment", "e2e")])).await;
    let msg = fine.id.full_state(&[], Unset);
    assert!(
        config_hash(&fine.exchange(msg).await).is_some(),
        "a config for e2e"
    );

    // A live agent whose render the Collector refuses: render_error, with its message, no config.
    let mut legacy = WsAgent::connect(
        server.opamp_addr,
        Identity::new(&[("environment", "legacy")]),
    )
    .await;
    let msg = legacy.id.full_state(&[], Unset);
    let reply = legacy.exchange(msg).await;
    assert!(config_hash(&reply).is_none(), "no config sent: {reply:?}");
    let agent = api(
        server.admin_addr,
        &format!("/api/agents/{}", legacy.id.uid_string()),
    );
    assert_eq!(agent["status"], "render_error", "{agent:#}");
    assert_eq!(agent["rule"], "legacy", "{agent:#}");
    assert!(
        agent["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(MISSING),
        "{agent:#}"
    );
    assert!(
        legacy
            .recv_within(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing sent later either"
    );

    // A sample agent for that rule makes the revision one `check --otelcol` refuses: rejected.
    std::fs::write(
        repo.join("agents/legacy.yaml"),
        "attributes: {environment: legacy}\nexpect: {rule: legacy}\n",
    )
    .unwrap();
    server.reload().await;
    let revision = api(server.admin_addr, "/api/revision");
    assert_eq!(revision["current"]["id"], good, "{revision:#}");
    let diagnostics = revision["rejected"]["diagnostics"]
        .as_array()
        .unwrap_or_else(|| panic!("the revision is rejected: {revision:#}"));
    assert!(
        diagnostics.iter().any(
            |d| d["message"].as_str().is_some_and(|m| m.contains(MISSING))
                && d["agent"] == "legacy"
                && d["rule"] == "legacy"
        ),
        "{revision:#}"
    );
    server.shutdown(Duration::from_secs(5)).await;
}
