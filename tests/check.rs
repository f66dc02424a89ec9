//! `opamp-gitops check` and `render` against real repositories on disk: the clean case, every
//! kind of bad input (exit code and the file and line named), the formats and the exit codes.

mod common;

use common::repo::TestRepo;
use common::run_cli;

/// Runs `check .` in the repo and returns the result.
fn check(repo: &TestRepo, extra: &[&str]) -> common::CliResult {
    let mut args = vec!["check", "."];
    args.extend_from_slice(extra);
    run_cli(repo.path(), &args)
}

/// Asserts exit 1 and that an error line names `location` (e.g. `fleet.yaml:4:`) and contains
/// every one of `words`.
fn assert_error(result: &common::CliResult, location: &str, words: &[&str]) {
    assert_eq!(result.code, 1, "{result:?}");
    let line = result
        .stdout
        .lines()
        .find(|l| l.starts_with(location) && l.contains(": error: "))
        .unwrap_or_else(|| panic!("no error at `{location}`:\n{result:?}"));
    for word in words {
        assert!(line.contains(word), "`{word}` missing from `{line}`");
    }
}

#[test]
fn the_example_repo_is_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    let result = run_cli(std::path::Path::new(root), &["check"]);
    assert_eq!(result.code, 0, "{result:?}");
    assert!(result.stdout.contains("0 errors, 0 warnings"), "{result:?}");
}

#[test]
fn a_valid_repo_passes_with_a_summary() {
    let repo = TestRepo::new();
    let result = check(&repo, &[]);
    assert_eq!(result.code, 0, "{result:?}");
    assert!(
        result
            .stdout
            .contains("checked 2 rules, 3 templates, 2 sample agents: 0 errors, 0 warnings"),
        "{result:?}"
    );
}

#[test]
fn yaml_syntax_error_in_fleet_yaml() {
    let repo = TestRepo::new();
    repo.edit("fleet.yaml", "    match: {}\n", "    match: {\n");
    assert_error(&check(&repo, &[]), "fleet.yaml:", &[]);
    let line: usize = check(&repo, &[])
        .stdout
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((10..=12).contains(&line), "line {line}");
}

#[test]
fn unknown_key_in_fleet_yaml() {
    let repo = TestRepo::new();
    repo.edit(
        "fleet.yaml",
        "    template: base.yaml.j2\n",
        "    template: base.yaml.j2\n    tempalte: x\n",
    );
    assert_error(&check(&repo, &[]), "fleet.yaml:12:", &["tempalte"]);
}

#[test]
fn duplicate_rule_name() {
    let repo = TestRepo::new();
    repo.edit("fleet.yaml", "name: everyone", "name: prod");
    assert_error(
        &check(&repo, &[]),
        "fleet.yaml:9:",
        &["duplicate rule name `prod`"],
    );
}

#[test]
fn rule_naming_a_missing_template() {
    let repo = TestRepo::new();
    repo.edit(
        "fleet.yaml",
        "template: base.yaml.j2",
        "template: nope.yaml.j2",
    );
    assert_error(
        &check(&repo, &[]),
        "fleet.yaml:11:",
        &["`nope.yaml.j2` not found", "[rule everyone]"],
    );
}

#[test]
fn template_syntax_error() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "timeout: {{ vars.timeout }}",
        "timeout: {{ vars.timeout }",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:9:",
        &["syntax error"],
    );
}

#[test]
fn undefined_variable() {
    let repo = TestRepo::new();
    repo.edit("templates/base.yaml.j2", "vars.timeout", "vars.tiemout");
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:9:",
        &["undefined", "[rule everyone, agent other]"],
    );
}

#[test]
fn undefined_attribute_in_an_imported_macro_names_the_macro_file() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/_macros.j2",
        "timeout: {{ timeout }}",
        "timeout: {{ timeout }}{{ agent.attributes.nope }}",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/_macros.j2:2:",
        &["undefined"],
    );
}

#[test]
fn include_leaving_templates_dir() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "exporters:\n",
        "{% include \"../fleet.yaml\" %}\nexporters:\n",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:5:",
        &["outside templates/"],
    );
}

#[test]
fn rendered_output_that_is_not_yaml() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "  debug:\n",
        "  debug: [unclosed\n",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:",
        &["not valid YAML"],
    );
}

#[test]
fn schema_violation_points_at_the_template_line() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "    timeout: {{ vars.timeout }}\n",
        "    timeout: {{ vars.timeout }}\n    send_batch_sise: 10\n",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:10:",
        &["send_batch_sise", "collector.schema.json"],
    );
}

#[test]
fn pipeline_naming_an_undefined_exporter() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "exporters: [debug]",
        "exporters: [otlp/tempo]",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:15:",
        &["`otlp/tempo`", "not defined"],
    );
}

#[test]
fn repo_schema_policy_violation() {
    let repo = TestRepo::new();
    repo.write(
        "schemas/no-debug.json",
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema",
            "properties": {"exporters": {"not": {"required": ["debug"]}}}}"#,
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:",
        &["schemas/no-debug.json"],
    );
}

#[test]
fn opamp_extension_in_the_output() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "exporters:\n",
        "extensions:\n  opamp:\n    server: {}\nexporters:\n",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:6:",
        &["extensions.opamp", "Supervisor"],
    );
}

#[test]
fn empty_output() {
    let repo = TestRepo::new();
    repo.write("templates/base.yaml.j2", "# nothing for {{ rule.name }}\n");
    assert_error(&check(&repo, &[]), "templates/base.yaml.j2:", &["empty"]);
}

#[test]
fn sample_agent_expecting_another_rule() {
    let repo = TestRepo::new();
    repo.write(
        "agents/other.yaml",
        "attributes: {environment: dev}\nexpect: {rule: prod}\n",
    );
    assert_error(
        &check(&repo, &[]),
        "agents/other.yaml",
        &["expects rule `prod`", "rule `everyone`"],
    );
}

#[test]
fn golden_file_mismatch_prints_a_unified_diff() {
    let repo = TestRepo::new();
    repo.write(
        "agents/other.yaml",
        "attributes: {environment: dev}\nexpect: {rule: everyone, config: expected/other.yaml}\n",
    );
    let update = check(&repo, &["--update"]);
    assert_eq!(update.code, 0, "{update:?}");
    assert!(repo.read("expected/other.yaml").contains("timeout: 5s"));
    assert_eq!(check(&repo, &[]).code, 0);

    repo.edit("fleet.yaml", "timeout: 5s", "timeout: 7s");
    let result = check(&repo, &[]);
    assert_error(
        &result,
        "expected/other.yaml:9:",
        &["differs from golden file"],
    );
    assert!(
        result.stdout.contains("-    timeout: 5s\n+    timeout: 7s"),
        "{result:?}"
    );
}

#[test]
fn warnings_for_unexercised_rules_and_unused_templates() {
    let repo = TestRepo::new();
    repo.remove("agents/prod.yaml");
    repo.write("templates/orphan.yaml.j2", "x: 1\n");
    let result = check(&repo, &[]);
    assert_eq!(result.code, 0, "{result:?}");
    assert!(
        result
            .stdout
            .contains("fleet.yaml:5: warning: no sample agent"),
        "{result:?}"
    );
    assert!(
        result
            .stdout
            .contains("templates/orphan.yaml.j2: warning: template `orphan.yaml.j2` is not used"),
        "{result:?}"
    );
    assert!(
        !result.stdout.contains("_macros.j2: warning"),
        "an imported template is used: {result:?}"
    );
}

#[test]
fn json_format_has_the_documented_shape() {
    let repo = TestRepo::new();
    repo.edit("fleet.yaml", "name: everyone", "name: prod");
    let result = check(&repo, &["--format", "json"]);
    assert_eq!(result.code, 1);
    let report: serde_json::Value = serde_json::from_str(&result.stdout).expect("JSON output");
    assert_eq!(report["ok"], false);
    assert_eq!(report["summary"]["errors"], 1);
    for key in ["rules", "templates", "agents", "warnings"] {
        assert!(report["summary"][key].is_number(), "{key}");
    }
    let d = &report["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "fleet.yaml");
    assert_eq!(d["line"], 9);
    assert_eq!(d["rule"], "prod");
    assert!(d["agent"].is_null());
    assert!(d.get("column").is_some());
}

#[test]
fn github_format_prints_annotations_relative_to_the_working_directory() {
    let repo = TestRepo::new();
    repo.edit("fleet.yaml", "name: everyone", "name: prod");
    let parent = repo.path().parent().unwrap();
    let name = repo.path().file_name().unwrap().to_str().unwrap();
    let result = run_cli(parent, &["check", name, "--format", "github"]);
    assert_eq!(result.code, 1);
    let expected =
        format!("::error file={name}/fleet.yaml,line=9::duplicate rule name `prod` [rule prod]");
    assert!(result.stdout.lines().any(|l| l == expected), "{result:?}");
}

#[test]
fn a_missing_directory_is_a_usage_error() {
    let repo = TestRepo::new();
    let result = run_cli(repo.path(), &["check", "does-not-exist"]);
    assert_eq!(result.code, 2, "{result:?}");
    assert!(result.stderr.contains("does-not-exist"));
    assert_eq!(
        run_cli(repo.path(), &["check", ".", "--format", "xml"]).code,
        2
    );
}

#[test]
fn render_prints_rule_hash_and_files() {
    let repo = TestRepo::new();
    let result = run_cli(
        repo.path(),
        &["render", ".", "--attr", "environment=production"],
    );
    assert_eq!(result.code, 0, "{result:?}");
    let mut lines = result.stdout.lines();
    assert_eq!(lines.next(), Some("rule: prod"));
    let hash = lines.next().unwrap().strip_prefix("hash: ").unwrap();
    assert_eq!(hash.len(), 64);
    assert!(hash
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(lines.next(), Some("--- collector.yaml"));
    assert!(result
        .stdout
        .contains("endpoint: tempo-production.monitoring.svc:4317"));
    assert!(result.stdout.contains("value: \"production\""));

    let other = run_cli(repo.path(), &["render", ".", "--attr", "environment=dev"]);
    assert!(other.stdout.starts_with("rule: everyone\n"), "{other:?}");
}

#[test]
fn render_exit_codes() {
    let repo = TestRepo::new();
    repo.edit("fleet.yaml", "match: {}", "match: {environment: dev}");
    let none = run_cli(repo.path(), &["render", ".", "--attr", "environment=qa"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("no rule matches"));
    assert_eq!(
        run_cli(repo.path(), &["render", ".", "--attr", "novalue"]).code,
        2
    );

    repo.edit(
        "templates/prod.yaml.j2",
        "agent.attributes.environment | yaml",
        "agent.attributes.team | yaml",
    );
    let failed = run_cli(
        repo.path(),
        &["render", ".", "--attr", "environment=production"],
    );
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("templates/prod.yaml.j2:11"),
        "{failed:?}"
    );
}

#[test]
fn yaml_filter_keeps_hostile_attribute_values_as_data() {
    let repo = TestRepo::new();
    repo.write(
        "templates/base.yaml.j2",
        &common::repo::BASE_TEMPLATE.replace(
            "  debug:\n",
            "  debug:\n    verbosity: {{ agent.attributes.level | yaml }}\n",
        ),
    );
    repo.write(
        "agents/other.yaml",
        "attributes: {environment: dev, level: basic}\n",
    );
    let evil = run_cli(
        repo.path(),
        &["render", ".", "--attr", "level=basic\"\n  injected: true"],
    );
    // Spliced as one string, the value stays data: the schema refuses it as a verbosity,
    // and no `injected` key appears in the config.
    assert_eq!(evil.code, 1, "{evil:?}");
    assert!(
        evil.stderr
            .contains(r#"`exporters.debug.verbosity`: "basic\"\n  injected: true""#),
        "{evil:?}"
    );
}

#[test]
fn a_runaway_template_runs_out_of_fuel_instead_of_hanging() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "exporters:\n",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\nexporters:\n",
    );
    assert_error(
        &check(&repo, &[]),
        "templates/base.yaml.j2:",
        &["out of fuel"],
    );
}

#[test]
fn a_render_over_the_output_limit_fails() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "exporters:\n",
        "# {{ \"x\" * 5000000 }}\nexporters:\n",
    );
    assert_error(&check(&repo, &[]), "templates/base.yaml.j2", &["limit"]);
}

/// A repo with a fleet-wide rollout and a rule with its own; `uid` for the dev sample agent.
fn rollout_repo(uid: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "fleet.yaml",
        &format!(
            "{}rollout:\n  canary: {{ match: {{ environment: staging }} }}\n  waves: [5, 25, 100]\n  soak: 60s\n",
            common::repo::FLEET
        ),
    );
    repo.write(
        "agents/other.yaml",
        &format!(
            "instance_uid: {uid}\nattributes: {{environment: dev}}\nexpect: {{rule: everyone}}\n"
        ),
    );
    repo.write(
        "agents/stage.yaml",
        "attributes: {environment: staging}\nexpect: {rule: everyone}\n",
    );
    repo
}

#[test]
fn check_prints_each_sample_agents_rollout_scope_and_wave() {
    let uid = "0190d5e6-8b3c-7c2a-9f10-3a4b5c6d7e8f";
    let cohort =
        opamp_gitops::repo::rollout::cohort(uuid::Uuid::parse_str(uid).unwrap().as_bytes());
    let (wave, label) = match cohort {
        c if c < 500 => (1, "5 %"),
        c if c < 2500 => (2, "25 %"),
        _ => (3, "100 %"),
    };
    let repo = rollout_repo(uid);
    let human = check(&repo, &[]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human.stdout.contains(&format!(
            "agent other: rollout fleet, wave {wave} ({label})"
        )),
        "{human:?}"
    );
    assert!(
        human
            .stdout
            .contains("agent stage: rollout fleet, wave 0 (canary)"),
        "{human:?}"
    );
    let json = check(&repo, &["--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let other = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "other")
        .unwrap()
        .clone();
    assert_eq!(
        other["rollout"],
        serde_json::json!({"scope": "fleet", "wave": wave})
    );
    let prod = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "prod")
        .unwrap()
        .clone();
    assert!(prod["rollout"]["wave"].as_u64().is_some(), "{prod}");
}

#[test]
fn bad_rollout_sections_are_errors_with_file_and_line() {
    let repo = TestRepo::new();
    let fleet = common::repo::FLEET;
    let line = fleet.lines().count() + 2;
    repo.write(
        "fleet.yaml",
        &format!("{fleet}rollout:\n  waves: [25, 5, 100]\n"),
    );
    assert_error(
        &check(&repo, &[]),
        &format!("fleet.yaml:{line}:"),
        &["ascend"],
    );
    repo.write(
        "fleet.yaml",
        &format!("{fleet}rollout:\n  waves: [100]\n  soak: -1s\n"),
    );
    assert_error(
        &check(&repo, &[]),
        &format!("fleet.yaml:{}:", line + 1),
        &["negative"],
    );
    repo.write(
        "fleet.yaml",
        &format!("{fleet}rollout:\n  freeze:\n    - {{ schedule: \"not cron\", duration: 1h }}\n"),
    );
    assert_error(
        &check(&repo, &[]),
        &format!("fleet.yaml:{}:", line + 1),
        &["cron"],
    );
    repo.write(
        "fleet.yaml",
        &format!("{fleet}rollout:\n  freeze:\n    - {{ schedule: \"0 1 * * *\", duration: 1h, time_zone: Nowhere/City }}\n"),
    );
    assert_error(
        &check(&repo, &[]),
        &format!("fleet.yaml:{}:", line + 1),
        &["time zone"],
    );
}
