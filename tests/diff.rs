//! `opamp-gitops diff` on real git repositories in temp dirs: who moves and what changes for
//! the sample agents and for a live fleet of test agents connected to the real server, the
//! findings, redaction, the three formats, the CI step of docs/ci.md, every bad input, and the
//! `/api/attribute-sets` endpoint that `--fleet` reads.

mod common;

use common::admin::{get, request};
use common::agent::{Identity, WsAgent};
use common::git::{git, GitRemote};
use common::repo::TestRepo;
use common::server::start_with;
use common::{block, run_cli, CliResult};
use opamp_gitops::opamp::proto::RemoteConfigStatuses::Unset;
use opamp_gitops::opamp::proto::{any_value, AnyValue, KeyValue};
use opamp_gitops::server::{ServeOptions, Server};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const FLEET: &str = "\
defaults:
  vars:
    timeout: 5s
    tenant: platform
    endpoint: tempo.monitoring.svc:4317
rules:
  - name: prod
    match:
      environment: production
    template: prod.yaml.j2
    vars:
      tenant: payments
  - name: eu
    match:
      region: eu-west-1
    template: base.yaml.j2
    vars:
      timeout: 1s
  - name: staging
    match:
      environment: staging
    template: base.yaml.j2
  - name: everyone
    match: {}
    template: base.yaml.j2
";

const PROD_TEMPLATE: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
processors:
  batch:
    timeout: {{ vars.timeout }}
exporters:
  otlp:
    endpoint: {{ vars.endpoint }}
    headers:
      X-Scope-OrgID: {{ vars.tenant }}
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp, debug]
";

/// A git working copy whose `origin/main` holds the fixture repository: four rules and four
/// sample agents (production in eu-west-1 and us-east-1, staging, dev), none with expectations,
/// so a change that moves them still compiles.
fn fixture() -> GitRemote {
    let remote = GitRemote::new();
    let work = &remote.work;
    for file in [
        "agents/prod.yaml",
        "agents/other.yaml",
        "templates/_macros.j2",
    ] {
        work.remove(file);
    }
    work.write("fleet.yaml", FLEET);
    work.write("templates/prod.yaml.j2", PROD_TEMPLATE);
    work.write(
        "agents/prod-eu.yaml",
        "attributes: {environment: production, region: eu-west-1}\n",
    );
    work.write(
        "agents/prod-us.yaml",
        "attributes: {environment: production, region: us-east-1}\n",
    );
    work.write(
        "agents/staging.yaml",
        "attributes: {environment: staging}\n",
    );
    work.write("agents/dev.yaml", "attributes: {environment: dev}\n");
    publish(&remote, "fixture");
    remote
}

/// Commits the work tree, pushes it to main and fetches, so `origin/main` is this commit.
fn publish(remote: &GitRemote, message: &str) {
    remote.commit(message);
    remote.push();
    git(remote.work.path(), &["fetch", "-q", "origin"]);
}

fn diff(dir: &Path, args: &[&str]) -> CliResult {
    let mut all = vec!["diff"];
    all.extend_from_slice(args);
    run_cli(dir, &all)
}

fn json(result: &CliResult) -> Value {
    assert_eq!(result.code, 0, "{result:?}");
    serde_json::from_str(&result.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {result:?}"))
}

fn diff_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    json(&diff(dir, &all))
}

fn groups(report: &Value) -> &Vec<Value> {
    report["groups"].as_array().expect("groups is a list")
}

fn findings(group: &Value) -> Vec<String> {
    group["findings"]
        .as_array()
        .expect("findings is a list")
        .iter()
        .map(|f| f.as_str().expect("a finding is text").to_owned())
        .collect()
}

/// The one group whose rule at the head is `rule` (`None`: unmanaged).
fn group_after<'a>(report: &'a Value, rule: Option<&str>) -> &'a Value {
    let matching: Vec<&Value> = groups(report)
        .iter()
        .filter(|g| g["rule_after"].as_str() == rule)
        .collect();
    assert_eq!(matching.len(), 1, "one group for {rule:?}: {report:#}");
    matching[0]
}

/// `n` WebSocket agents with these attributes, each having sent its full state.
async fn connect(server: &Server, attrs: &[(&str, &str)], n: usize) -> Vec<WsAgent> {
    let mut agents = Vec::new();
    for _ in 0..n {
        let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(attrs)).await;
        let msg = ws.id.full_state(&[], Unset);
        ws.exchange(msg).await;
        agents.push(ws);
    }
    agents
}

/// A server whose own repository does not matter: `diff --fleet` reads only its registry.
async fn fleet_server() -> (TestRepo, Server) {
    let repo = TestRepo::new();
    let server = start_with(ServeOptions::local(repo.path())).await;
    (repo, server)
}

fn fleet_url(server: &Server) -> String {
    format!("http://{}", server.admin_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_template_variable_moves_only_the_agents_of_its_rule() {
    let remote = fixture();
    let work = &remote.work;
    let (_server_repo, server) = fleet_server().await;
    let _agents = [
        connect(
            &server,
            &[("environment", "production"), ("region", "eu-west-1")],
            12,
        )
        .await,
        connect(
            &server,
            &[("environment", "production"), ("region", "us-east-1")],
            8,
        )
        .await,
        connect(&server, &[("environment", "staging")], 6).await,
        connect(&server, &[("environment", "dev")], 9).await,
    ];
    // Uncommitted: the head is the working tree.
    work.edit("fleet.yaml", "tenant: payments", "tenant: checkout");
    let url = fleet_url(&server);

    let report =
        block(|| diff_json(work.path(), &["--base", "origin/main", "--fleet", &url])).await;
    assert_eq!(report["summary"]["agents"], 35, "{report:#}");
    assert_eq!(report["summary"]["sets"], 4);
    assert_eq!(report["summary"]["moved"], 20);
    assert_eq!(report["summary"]["unchanged"], 15);
    assert_eq!(report["summary"]["groups"], 1);
    let group = &groups(&report)[0];
    assert_eq!(group["count"], 20);
    assert_eq!(
        group["sets"], 2,
        "both production regions render the same config"
    );
    assert_eq!(group["rule_before"], "prod");
    assert_eq!(group["rule_after"], "prod");
    assert_eq!(
        group["attributes"],
        serde_json::json!({"environment": "production"})
    );
    assert_ne!(group["hash_before"], group["hash_after"]);
    let file = group["files"]["collector.yaml"]
        .as_str()
        .expect("a diff of collector.yaml");
    assert!(
        file.contains("\n-      X-Scope-OrgID: payments\n"),
        "{file}"
    );
    assert!(
        file.contains("\n+      X-Scope-OrgID: checkout\n"),
        "{file}"
    );
    assert!(
        !file.contains("timeout"),
        "three lines of context, not the whole file: {file}"
    );

    let human = block(|| diff(work.path(), &["--base", "origin/main", "--fleet", &url])).await;
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human
            .stdout
            .contains("35 agents in 4 attribute sets: 20 agents move in 1 group, 15 unchanged"),
        "{human:?}"
    );
    assert!(
        human
            .stdout
            .contains("20 agents (2 sets): rule prod, hash "),
        "{human:?}"
    );
    assert!(
        !human.stdout.contains("\x1b["),
        "no colour when piped: {human:?}"
    );

    // Without --fleet the sample agents stand in for the fleet.
    let samples = block(|| diff_json(work.path(), &["--base", "origin/main"])).await;
    assert_eq!(samples["summary"]["agents"], 4);
    assert_eq!(samples["summary"]["moved"], 2);
}

#[test]
fn a_reordered_rule_is_shown_as_a_rule_change_with_its_diff() {
    let remote = fixture();
    let work = &remote.work;
    let eu = "  - name: eu\n    match:\n      region: eu-west-1\n    template: base.yaml.j2\n    vars:\n      timeout: 1s\n";
    let reordered = FLEET
        .replace(eu, "")
        .replace("  - name: prod\n", &format!("{eu}  - name: prod\n"));
    work.write("fleet.yaml", &reordered);
    remote.commit("eu before prod");

    let report = diff_json(work.path(), &["--base", "origin/main", "--head", "HEAD"]);
    assert_eq!(report["head"]["ref"], "HEAD");
    assert_eq!(report["summary"]["moved"], 1, "{report:#}");
    let group = group_after(&report, Some("eu"));
    assert_eq!(group["rule_before"], "prod");
    assert_eq!(group["count"], 1);
    assert!(
        findings(group).contains(&"moves from rule `prod` to rule `eu`".to_owned()),
        "{group:#}"
    );
    let file = group["files"]["collector.yaml"].as_str().unwrap();
    assert!(
        file.contains("\n-      X-Scope-OrgID: payments\n"),
        "{file}"
    );
    assert!(file.contains("\n+    timeout: 1s\n"), "{file}");
}

#[test]
fn removed_exporters_changed_endpoints_and_unmanaged_sets_are_findings() {
    let remote = fixture();
    let work = &remote.work;
    work.edit(
        "templates/prod.yaml.j2",
        "exporters: [otlp, debug]",
        "exporters: [debug]",
    );
    work.edit(
        "fleet.yaml",
        "tempo.monitoring.svc:4317",
        "tempo.tracing.svc:4317",
    );
    work.edit(
        "fleet.yaml",
        "  - name: everyone\n    match: {}\n    template: base.yaml.j2\n",
        "",
    );

    let report = diff_json(work.path(), &["--base", "origin/main"]);
    let prod = findings(group_after(&report, Some("prod")));
    assert!(
        prod.contains(&"pipeline `traces`: exporter `otlp` removed".to_owned()),
        "{prod:?}"
    );
    assert!(
        prod.contains(
            &"exporter `otlp` endpoint changed: `tempo.monitoring.svc:4317` → `tempo.tracing.svc:4317`"
                .to_owned()
        ),
        "{prod:?}"
    );
    let unmanaged = group_after(&report, None);
    assert_eq!(unmanaged["rule_before"], "everyone");
    assert!(unmanaged["hash_after"].is_null());
    assert_eq!(
        unmanaged["attributes"],
        serde_json::json!({"environment": "dev"})
    );
    let found = findings(unmanaged);
    assert!(
        found
            .iter()
            .any(|f| f
                .starts_with("becomes unmanaged: no rule matches any more (was rule `everyone`)")),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sets_no_sample_covers_show_render_errors_and_per_agent_configs() {
    let remote = fixture();
    let work = &remote.work;
    work.edit(
        "fleet.yaml",
        "rules:\n",
        "rules:\n  - name: edge\n    match: {role: edge}\n    template: prod.yaml.j2\n  - name: per-agent\n    match: {role: per-agent}\n    template: per-agent.yaml.j2\n",
    );
    work.write(
        "templates/per-agent.yaml.j2",
        &common::repo::BASE_TEMPLATE.replace(
            "processors:\n",
            "processors:\n  resource:\n    attributes:\n      - {key: service.instance.id, value: \"{{ agent.instance_uid }}\", action: upsert}\n",
        ),
    );
    publish(&remote, "edge and per-agent rules");
    let (_server_repo, server) = fleet_server().await;
    let _agents = [
        connect(&server, &[("role", "edge")], 2).await,
        connect(&server, &[("role", "per-agent")], 3).await,
    ];
    // At the head, the edge rule's exporter is not defined: a render error for live agents only.
    work.edit(
        "fleet.yaml",
        "template: prod.yaml.j2\n  - name: per-agent",
        "template: edge.yaml.j2\n  - name: per-agent",
    );
    work.write(
        "templates/edge.yaml.j2",
        &PROD_TEMPLATE.replace("exporters: [otlp, debug]", "exporters: [otlp/missing]"),
    );
    let url = fleet_url(&server);

    let report =
        block(|| diff_json(work.path(), &["--base", "origin/main", "--fleet", &url])).await;
    assert_eq!(report["summary"]["agents"], 5, "{report:#}");
    assert_eq!(report["summary"]["moved"], 2);
    let edge = group_after(&report, Some("edge"));
    assert_eq!(edge["count"], 2);
    assert!(
        edge["hash_after"].is_null(),
        "a render error has no hash: {edge:#}"
    );
    let found = findings(edge);
    assert!(
        found.iter().any(|f| f.starts_with(
            "render error at the head (these agents keep what they run): templates/edge.yaml.j2:"
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&"pipeline `traces` uses exporter `otlp/missing`, which is not defined under `exporters`".to_owned()),
        "{found:?}"
    );
    assert!(edge["files"]["collector.yaml"]
        .as_str()
        .unwrap()
        .contains("+      exporters: [otlp/missing]"));

    let per_agent = group_after(&report, Some("per-agent"));
    assert_eq!(per_agent["count"], 3);
    assert!(per_agent["hash_before"].is_null() && per_agent["hash_after"].is_null());
    assert!(
        findings(per_agent).iter().any(|f| f.starts_with("cannot be judged per attribute set: rule `per-agent` renders a template that reads `agent.instance_uid`")
            && f.ends_with("the config does not change")),
        "{per_agent:#}"
    );
}

#[test]
fn a_config_repository_in_a_subdirectory_is_found_by_path_or_by_dir() {
    let remote = fixture();
    let work = &remote.work;
    std::fs::create_dir(work.file("configs")).unwrap();
    for entry in ["fleet.yaml", "templates", "agents"] {
        git(work.path(), &["mv", entry, &format!("configs/{entry}")]);
    }
    publish(&remote, "the config repository moves to configs/");
    work.edit("configs/fleet.yaml", "tenant: payments", "tenant: checkout");

    for args in [
        &[".", "--path", "configs", "--base", "origin/main"][..],
        &["configs", "--base", "origin/main"][..],
    ] {
        let report = diff_json(work.path(), args);
        assert_eq!(report["base"]["compiles"], true, "{args:?}: {report:#}");
        assert_eq!(report["summary"]["moved"], 2, "{args:?}: {report:#}");
    }
    // Before the move the commit has no configs/: a base without a config repository.
    let before = diff_json(work.path(), &["configs", "--base", "origin/main~1"]);
    assert_eq!(before["base"]["compiles"], false, "{before:#}");
    assert_eq!(before["summary"]["moved"], 4);
    let missing = diff(
        work.path(),
        &[".", "--path", "nowhere", "--base", "origin/main"],
    );
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing.stderr.contains("`./nowhere` is not a directory"),
        "{missing:?}"
    );
}

#[test]
fn a_head_that_does_not_compile_exits_1_with_the_diagnostics_of_check() {
    let remote = fixture();
    let work = &remote.work;
    work.edit(
        "templates/prod.yaml.j2",
        "{{ vars.tenant }}",
        "{{ vars.tenant ",
    );
    let checked = run_cli(work.path(), &["check", "."]);
    assert_eq!(checked.code, 1, "{checked:?}");

    let result = diff(work.path(), &["--base", "origin/main"]);
    assert_eq!(result.code, 1, "{result:?}");
    assert_eq!(result.stdout, checked.stdout);
    assert!(
        result.stdout.contains("templates/prod.yaml.j2:"),
        "{result:?}"
    );
    assert!(
        result
            .stderr
            .contains("error: the head (working tree) does not compile: 1 error"),
        "{result:?}"
    );

    let as_json = diff(work.path(), &["--base", "origin/main", "--format", "json"]);
    let checked_json = run_cli(work.path(), &["check", ".", "--format", "json"]);
    assert_eq!(as_json.code, 1);
    assert_eq!(as_json.stdout, checked_json.stdout);
}

#[test]
fn a_base_that_does_not_compile_moves_every_agent() {
    let remote = fixture();
    let work = &remote.work;
    work.write("fleet.yaml", "rules: [\n");
    publish(&remote, "broken");
    work.write("fleet.yaml", FLEET);

    let report = diff_json(work.path(), &["--base", "origin/main"]);
    assert_eq!(report["base"]["compiles"], false);
    assert_eq!(report["summary"]["moved"], 4, "{report:#}");
    assert_eq!(report["summary"]["unchanged"], 0);
    for group in groups(&report) {
        assert!(group["rule_before"].is_null());
        assert!(
            findings(group)[0].starts_with("the base does not compile"),
            "{group:#}"
        );
    }
    let human = diff(work.path(), &["--base", "origin/main"]);
    assert!(
        human
            .stdout
            .contains("the base origin/main does not compile: every agent counts as moving"),
        "{human:?}"
    );
}

#[test]
fn a_changed_api_key_is_redacted_on_both_sides() {
    let remote = fixture();
    let work = &remote.work;
    work.edit(
        "templates/prod.yaml.j2",
        "      X-Scope-OrgID: {{ vars.tenant }}\n",
        "      X-Scope-OrgID: {{ vars.tenant }}\n      api_key: {{ vars.api_key }}\n",
    );
    work.edit(
        "fleet.yaml",
        "    tenant: platform\n",
        "    tenant: platform\n    api_key: first-0d1e5ecret\n",
    );
    publish(&remote, "api key");
    work.edit("fleet.yaml", "first-0d1e5ecret", "second-9f7a5ecret");

    let report = diff_json(work.path(), &["--base", "origin/main"]);
    assert_eq!(report["summary"]["moved"], 2, "{report:#}");
    let file = group_after(&report, Some("prod"))["files"]["collector.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(file.contains("\n-      api_key: <redacted>\n"), "{file}");
    assert!(file.contains("\n+      api_key: <redacted>\n"), "{file}");
    for format in ["human", "json", "markdown"] {
        let out = diff(work.path(), &["--base", "origin/main", "--format", format]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            !out.stdout.contains("0d1e5ecret") && !out.stdout.contains("9f7a5ecret"),
            "{format} shows a secret: {out:?}"
        );
    }
}

#[test]
fn json_has_the_documented_shape() {
    let remote = fixture();
    remote
        .work
        .edit("fleet.yaml", "tenant: payments", "tenant: checkout");
    let report = diff_json(remote.work.path(), &["--base", "origin/main"]);
    for side in ["base", "head"] {
        assert!(report[side]["ref"].is_string(), "{report:#}");
        assert!(report[side]["compiles"].is_boolean());
    }
    assert_eq!(report["base"]["commit"].as_str().unwrap().len(), 40);
    for key in ["agents", "moved", "unchanged", "groups"] {
        assert!(report["summary"][key].is_u64(), "summary.{key}: {report:#}");
    }
    let group = &groups(&report)[0];
    assert!(group["count"].is_u64());
    for key in ["rule_before", "rule_after", "hash_before", "hash_after"] {
        assert!(group[key].is_string(), "{key}: {group:#}");
    }
    assert_eq!(group["hash_after"].as_str().unwrap().len(), 64);
    assert!(group["files"]
        .as_object()
        .unwrap()
        .values()
        .all(Value::is_string));
    assert!(group["findings"].is_array());
    assert_eq!(group["canary"], false);

    let bare = diff_json(
        remote.work.path(),
        &["--base", "origin/main", "--context", "0"],
    );
    let file = groups(&bare)[0]["files"]["collector.yaml"]
        .as_str()
        .unwrap();
    assert!(
        file.lines().all(|l| l.starts_with(['+', '-', '@'])),
        "no context lines with --context 0: {file}"
    );
}

#[test]
fn agents_in_the_first_wave_of_their_rollout_are_the_canary() {
    let remote = fixture();
    remote.work.edit(
        "fleet.yaml",
        "defaults:\n",
        "rollout:\n  canary: { match: { environment: staging } }\n  waves: [5, 100]\ndefaults:\n",
    );
    publish(&remote, "a staged rollout with a canary on staging");
    remote.work.edit("fleet.yaml", "timeout: 5s", "timeout: 6s");
    let report = diff_json(remote.work.path(), &["--base", "origin/main"]);
    // Staging and dev render alike: one group, which holds the canary.
    let shared = group_after(&report, Some("everyone"));
    assert_eq!(shared["count"], 2, "{report:#}");
    assert_eq!(shared["canary"], true, "{report:#}");
    assert_eq!(
        group_after(&report, Some("prod"))["canary"],
        false,
        "{report:#}"
    );

    // Without a canary selector the first wave is the first percentage, by cohort: 100 % holds
    // every agent.
    remote.work.edit(
        "fleet.yaml",
        "  canary: { match: { environment: staging } }\n  waves: [5, 100]\n",
        "  waves: [100]\n",
    );
    let report = diff_json(remote.work.path(), &["--base", "origin/main"]);
    for group in groups(&report) {
        assert_eq!(group["canary"], true, "{group:#}");
    }
}

#[test]
fn the_markdown_of_a_large_change_is_cut_with_a_note() {
    let remote = fixture();
    let work = &remote.work;
    work.edit(
        "fleet.yaml",
        "rules:\n",
        "rules:\n  - name: big\n    match: {role: big}\n    template: big.yaml.j2\n    vars: {release: r1}\n",
    );
    work.write(
        "templates/big.yaml.j2",
        &common::repo::BASE_TEMPLATE.replace(
            "processors:\n",
            "processors:\n  attributes/big:\n    actions:\n{% for i in range(250) %}      - {key: k{{ i }}, value: \"{{ agent.attributes.name }}-{{ vars.release }}\", action: upsert}\n{% endfor %}",
        ),
    );
    for n in 1..=5 {
        work.write(
            &format!("agents/big-{n}.yaml"),
            &format!("attributes: {{role: big, name: big-{n}}}\n"),
        );
    }
    publish(&remote, "big configs");
    work.edit("fleet.yaml", "release: r1", "release: r2");

    let result = diff(
        work.path(),
        &["--base", "origin/main", "--format", "markdown"],
    );
    assert_eq!(result.code, 0, "{result:?}");
    let comment = &result.stdout;
    assert!(comment.len() <= 60_000, "{} bytes", comment.len());
    assert!(
        comment.starts_with("### opamp-gitops diff: `origin/main` ("),
        "{comment}"
    );
    assert!(comment.contains("| agents | rules | hashes | findings |"));
    assert_eq!(
        comment.matches("\n| 1 | rule big | hash ").count(),
        5,
        "every group in the table"
    );
    let shown = comment.matches("<details>").count();
    assert!((1..5).contains(&shown), "{shown} sections shown");
    assert!(
        comment.trim_end().ends_with(&format!(
            "This comment is cut to stay under 60,000 characters: 5 of 5 groups are in the table and {shown} shown in full. Run `opamp-gitops diff` with `--format json` or `--format human` to see everything."
        )),
        "{}",
        &comment[comment.len() - 400..]
    );
    // Nothing is cut from the other formats.
    let report = diff_json(work.path(), &["--base", "origin/main"]);
    assert_eq!(groups(&report).len(), 5);
}

/// The `run:` line of the "Diff against main" step of docs/ci.md, exactly as written.
fn ci_step_command() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md"))
        .expect("docs/ci.md");
    let mut lines = doc
        .lines()
        .skip_while(|l| l.trim() != "- name: Diff against main");
    lines
        .next()
        .expect("docs/ci.md has a `Diff against main` step");
    let run = lines
        .take_while(|l| !l.trim_start().starts_with("- "))
        .find_map(|l| l.trim().strip_prefix("run: "))
        .expect("the step has a one-line `run:`");
    run.to_owned()
}

#[test]
fn the_ci_step_of_docs_ci_md_runs_as_written() {
    let command = ci_step_command();
    assert!(
        command.starts_with("opamp-gitops diff --base origin/main --format markdown"),
        "{command}"
    );
    let remote = fixture();
    let work = &remote.work;
    git(work.path(), &["checkout", "-q", "-b", "pull-request"]);
    work.edit("fleet.yaml", "tenant: payments", "tenant: checkout");
    remote.commit("a pull request");

    let bin = Path::new(env!("CARGO_BIN_EXE_opamp-gitops"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-e", "-c", &command])
        .env("PATH", path)
        .current_dir(work.path())
        .output()
        .expect("run the CI step");
    let result = CliResult::from(output);
    assert_eq!(result.code, 0, "`{command}`: {result:?}");
    let comment = work.read("fleet-diff.md");
    assert!(
        comment.starts_with("### opamp-gitops diff: `origin/main` ("),
        "{comment}"
    );
    assert!(comment.contains("2 agents move in 1 group"), "{comment}");
    assert!(
        comment.contains("+      X-Scope-OrgID: checkout"),
        "{comment}"
    );
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let remote = fixture();
    let missing = diff(remote.work.path(), &["--base", "origin/no-such-branch"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("--base: `origin/no-such-branch` is not a commit, branch or tag"),
        "{missing:?}"
    );
    let head = diff(
        remote.work.path(),
        &["--base", "origin/main", "--head", "v9"],
    );
    assert_eq!(head.code, 2, "{head:?}");
    assert!(
        head.stderr.contains("--head: `v9` is not a commit"),
        "{head:?}"
    );

    let plain = TestRepo::new();
    let not_git = diff(plain.path(), &["--base", "main"]);
    assert_eq!(not_git.code, 2, "{not_git:?}");
    assert!(
        not_git.stderr.contains("is not in a git repository"),
        "{not_git:?}"
    );

    let no_base = diff(remote.work.path(), &[]);
    assert_eq!(no_base.code, 2, "{no_base:?}");
    assert!(no_base.stderr.contains("--base"), "{no_base:?}");
    let bad_format = diff(remote.work.path(), &["--base", "main", "--format", "yaml"]);
    assert_eq!(bad_format.code, 2, "{bad_format:?}");
}

#[test]
fn a_fleet_url_that_does_not_answer_exits_1() {
    let remote = fixture();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let result = diff(
        remote.work.path(),
        &["--base", "origin/main", "--fleet", &url],
    );
    assert_eq!(result.code, 1, "{result:?}");
    assert!(
        result
            .stderr
            .contains(&format!("error: the fleet at {url} does not answer")),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_with_read_auth_needs_the_admin_token() {
    let remote = fixture();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("admin"), "# ops\nops:admin-token\n").unwrap();
    std::fs::write(secrets.path().join("wrong"), "not-the-token\n").unwrap();
    let repo = TestRepo::new();
    let mut options = ServeOptions::local(repo.path());
    options.admin_token_file = Some(secrets.path().join("admin"));
    options.admin_read_auth = true;
    let server = start_with(options).await;
    let _agents = connect(&server, &[("environment", "production")], 3).await;
    let url = fleet_url(&server);
    let work = remote.work.path();
    let run = |token_file: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"));
        command
            .args([
                "diff",
                "--base",
                "origin/main",
                "--fleet",
                &url,
                "--format",
                "json",
            ])
            .current_dir(work)
            .env_remove("OPAMP_GITOPS_TOKEN_FILE");
        if let Some(file) = token_file {
            command.env("OPAMP_GITOPS_TOKEN_FILE", file);
        }
        CliResult::from(command.output().expect("run opamp-gitops"))
    };

    let without = block(|| run(None)).await;
    assert_eq!(without.code, 1, "{without:?}");
    assert!(
        without.stderr.contains(&format!(
            "error: the fleet at {url} needs an admin token (HTTP 401"
        )),
        "{without:?}"
    );
    let wrong = block(|| run(Some(&secrets.path().join("wrong")))).await;
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stderr.contains("refuses the token (HTTP 401"),
        "{wrong:?}"
    );
    let right = block(|| run(Some(&secrets.path().join("admin")))).await;
    assert_eq!(json(&right)["summary"]["agents"], 3);
}

/// An agent that reports identifying attributes, and non-identifying ones when given.
async fn describe(
    server: &Server,
    identifying: &[(&str, &str)],
    non_identifying: &[(&str, &str)],
) -> WsAgent {
    let mut ws = WsAgent::connect(server.opamp_addr, Identity::new(identifying)).await;
    let mut msg = ws.id.full_state(&[], Unset);
    let description = msg.agent_description.as_mut().unwrap();
    description.non_identifying_attributes = non_identifying
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.to_string())),
            }),
        })
        .collect();
    ws.exchange(msg).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_sets_are_counted_and_paginated() {
    let (_repo, server) = fleet_server().await;
    let mut agents = Vec::new();
    for (n, env) in ["a", "b", "c", "d"].iter().enumerate() {
        agents.extend(connect(&server, &[("environment", env)], n + 1).await);
    }
    agents.push(describe(&server, &[("environment", "a")], &[("host.name", "h1")]).await);
    // An agent that has not described itself has no attribute set yet.
    let mut silent = WsAgent::connect(server.opamp_addr, Identity::new(&[])).await;
    let msg = silent.id.heartbeat();
    silent.exchange(msg).await;
    assert_eq!(server.fleet.len(), 12);
    let addr = server.admin_addr;

    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let page = block(|| {
            get(
                addr,
                &format!("/api/attribute-sets?limit=2&offset={offset}"),
            )
        })
        .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        assert_eq!(page["total"], 5, "{page:#}");
        seen.extend(page["sets"].as_array().unwrap().iter().cloned());
    }
    let count = |environment: &str, non_identifying: Value| {
        seen.iter()
            .find(|s| {
                s["identifying"]["environment"] == environment
                    && s["non_identifying"] == non_identifying
            })
            .unwrap_or_else(|| panic!("no set for {environment}: {seen:#?}"))["count"]
            .as_u64()
    };
    assert_eq!(seen.len(), 5);
    assert_eq!(count("a", serde_json::json!({})), Some(1));
    assert_eq!(count("a", serde_json::json!({"host.name": "h1"})), Some(1));
    assert_eq!(count("d", serde_json::json!({})), Some(4));
    let sum: u64 = seen.iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!(sum, 11);

    let past_the_end = block(|| get(addr, "/api/attribute-sets?offset=5"))
        .await
        .json();
    assert_eq!(past_the_end["sets"], serde_json::json!([]));
    let bad = block(|| request("GET", addr, "/api/attribute-sets?limit=many", &[], b"")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .contains("limit `many`"));
}
