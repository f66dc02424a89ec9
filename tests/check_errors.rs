//! `opamp-gitops check` names each problem precisely: the undefined expression at its column, the
//! block left open, every problem of a file, a duplicate key by name, the closest template name,
//! one report for a problem several sample agents share, and the same place in every format.

mod common;

use common::repo::TestRepo;
use common::run_cli;
use serde_json::Value;

fn check(repo: &TestRepo, extra: &[&str]) -> common::CliResult {
    let mut args = vec!["check", "."];
    args.extend_from_slice(extra);
    run_cli(repo.path(), &args)
}

/// The diagnostic lines of human output (everything but the summary line).
fn lines(result: &common::CliResult) -> Vec<&str> {
    result
        .stdout
        .lines()
        .filter(|l| !l.starts_with("checked "))
        .collect()
}

#[test]
fn an_undefined_variable_is_named_at_the_column_of_its_expression() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "timeout: {{ vars.timeout }}",
        "timeout: {{ vars.timeout }} {{ vars.mimir_endpont.url }}",
    );
    let result = check(&repo, &[]);
    assert_eq!(result.code, 1, "{result:?}");
    assert_eq!(
        lines(&result),
        ["templates/base.yaml.j2:9:36: error: `vars.mimir_endpont` is undefined [rule everyone, agent other]"]
    );
}

#[test]
fn an_undefined_value_given_to_yaml_is_named() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "vars.timeout",
        "vars.mimir_endpont | yaml",
    );
    assert_eq!(
        lines(&check(&repo, &[])),
        ["templates/base.yaml.j2:9:17: error: `vars.mimir_endpont` is undefined (given to `yaml`; use `| default(...)` if it is optional) [rule everyone, agent other]"]
    );
}

#[test]
fn an_unclosed_block_points_at_its_opening_tag() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "exporters:\n",
        "{% if vars.debug | default(false) %}\nexporters:\n",
    );
    let result = check(&repo, &[]);
    assert_eq!(result.code, 1, "{result:?}");
    assert_eq!(
        lines(&result),
        ["templates/base.yaml.j2:5:1: error: syntax error: `{% if %}` is never closed: `{% endif %}` is missing"]
    );

    let repo = TestRepo::new();
    repo.edit(
        "templates/prod.yaml.j2",
        "exporters:\n",
        "exporters:\n  {%- for x in [1] %}{% if x %}{% endif %}\n",
    );
    assert_eq!(
        lines(&check(&repo, &[]))[0],
        "templates/prod.yaml.j2:14:3: error: syntax error: `{% for %}` is never closed: `{% endfor %}` is missing"
    );
}

#[test]
fn no_message_says_error_twice() {
    let broken = [
        (
            "fleet.yaml",
            "    template: base.yaml.j2\n",
            "    template: base.yaml.j2\n    tempalte: x\n",
        ),
        ("fleet.yaml", "    match: {}\n", "    match: {\n"),
        ("agents/other.yaml", "expect:", "expect: [\n"),
    ];
    for (file, from, to) in broken {
        let repo = TestRepo::new();
        repo.edit(file, from, to);
        let result = check(&repo, &[]);
        assert_eq!(result.code, 1, "{result:?}");
        assert!(!result.stdout.contains("error: error"), "{result:?}");
        let json: Value =
            serde_json::from_str(&check(&repo, &["--format", "json"]).stdout).unwrap();
        for d in json["diagnostics"].as_array().unwrap() {
            let message = d["message"].as_str().unwrap();
            assert!(!message.starts_with("error"), "{message}");
            assert!(
                !message.contains(" line "),
                "the position is the diagnostic's: {message}"
            );
        }
    }
}

#[test]
fn every_unknown_key_and_every_schema_violation_of_a_file_is_reported() {
    let repo = TestRepo::new();
    repo.edit(
        "fleet.yaml",
        "    template: base.yaml.j2\n",
        "    template: base.yaml.j2\n    tempalte: x\n    varz: {}\n",
    );
    repo.write(
        "agents/other.yaml",
        "atributes: {environment: dev}\nexpect:\n  rule: everyone\n  rul: x\n",
    );
    assert_eq!(
        lines(&check(&repo, &[])),
        [
            "fleet.yaml:12:5: error: unknown key `tempalte` in `rules[1]`",
            "fleet.yaml:13:5: error: unknown key `varz` in `rules[1]`",
            "agents/other.yaml:1:1: error: unknown key `atributes`",
            "agents/other.yaml:4:3: error: unknown key `rul` in `expect`",
        ]
    );

    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "    timeout: {{ vars.timeout }}\n",
        "    timeout: {{ vars.timeout }}\n    send_batch_sise: 10\n    timeuot: 1s\n",
    );
    let result = check(&repo, &[]);
    let shown = lines(&result);
    assert_eq!(shown.len(), 2, "{result:?}");
    for (line, key) in [(10, "send_batch_sise"), (11, "timeuot")] {
        let expected = format!(
            "templates/base.yaml.j2:{line}: error: `processors.batch.{key}`: `{key}` is not allowed here (schema collector.schema.json) [rule everyone, agent other]"
        );
        assert!(shown.contains(&expected.as_str()), "{expected}\n{result:?}");
    }
}

#[test]
fn a_duplicate_key_is_named_in_our_words() {
    let repo = TestRepo::new();
    repo.edit(
        "fleet.yaml",
        "    template: base.yaml.j2\n",
        "    template: base.yaml.j2\n    match: {}\n",
    );
    let result = check(&repo, &[]);
    assert_eq!(
        lines(&result),
        ["fleet.yaml:12:5: error: duplicate key `match`: a key may appear only once in a mapping"]
    );
    assert!(!result.stdout.contains("Options"), "{result:?}");
}

#[test]
fn a_missing_template_suggests_the_closest_name() {
    let repo = TestRepo::new();
    repo.edit(
        "fleet.yaml",
        "template: base.yaml.j2",
        "template: bse.yaml.j2",
    );
    let result = check(&repo, &[]);
    assert_eq!(
        lines(&result)[0],
        "fleet.yaml:11: error: template `bse.yaml.j2` not found in templates/: did you mean \"base.yaml.j2\"? [rule everyone]"
    );

    let repo = TestRepo::new();
    repo.edit(
        "fleet.yaml",
        "template: base.yaml.j2",
        "template: something-else.txt",
    );
    let result = check(&repo, &[]);
    assert!(
        lines(&result)[0].ends_with("not found in templates/ [rule everyone]"),
        "{result:?}"
    );
}

#[test]
fn a_problem_shared_by_sample_agents_is_reported_once_listing_them() {
    let repo = TestRepo::new();
    repo.write(
        "agents/other2.yaml",
        "attributes: {environment: qa}\nexpect: {rule: everyone}\n",
    );
    repo.edit(
        "templates/base.yaml.j2",
        "vars.timeout",
        "vars.mimir_endpont",
    );
    let result = check(&repo, &[]);
    assert_eq!(
        lines(&result),
        ["templates/base.yaml.j2:9:17: error: `vars.mimir_endpont` is undefined [rule everyone, agents other, other2]"]
    );
    assert!(result.stdout.contains(": 1 errors"), "{result:?}");

    let github = check(&repo, &["--format", "github"]);
    let annotations: Vec<&str> = github
        .stdout
        .lines()
        .filter(|l| l.starts_with("::"))
        .collect();
    assert_eq!(
        annotations,
        ["::error file=templates/base.yaml.j2,line=9,col=17::`vars.mimir_endpont` is undefined [rule everyone] [agents other, other2]"]
    );

    let json: Value = serde_json::from_str(&check(&repo, &["--format", "json"]).stdout).unwrap();
    let diagnostics = json["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1, "{json}");
    assert_eq!(
        diagnostics[0]["agents"],
        serde_json::json!(["other", "other2"])
    );
    assert_eq!(diagnostics[0]["agent"], "other");
}

#[test]
fn the_golden_file_hint_names_the_directory() {
    let repo = TestRepo::new();
    repo.write(
        "agents/other.yaml",
        "attributes: {environment: dev}\nexpect: {rule: everyone, config: expected/other.yaml}\n",
    );
    let parent = repo.path().parent().unwrap();
    let name = repo.path().file_name().unwrap().to_str().unwrap();
    let result = run_cli(parent, &["check", name]);
    assert_eq!(result.code, 1, "{result:?}");
    let hint = format!(
        "golden file `expected/other.yaml` does not exist (run `opamp-gitops check {name} --update` to write it)"
    );
    assert!(result.stdout.contains(&hint), "{hint}\n{result:?}");
}

#[test]
fn update_says_unchanged_for_golden_files_it_did_not_change() {
    let repo = TestRepo::new();
    repo.write(
        "agents/other.yaml",
        "attributes: {environment: dev}\nexpect: {rule: everyone, config: expected/other.yaml}\n",
    );
    repo.write(
        "agents/prod.yaml",
        "attributes: {environment: production, host.name: a}\nexpect: {rule: prod, config: expected/prod.yaml}\n",
    );
    let first = check(&repo, &["--update"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first.stderr.contains("wrote ./expected/other.yaml"),
        "{first:?}"
    );
    assert!(
        first.stderr.contains("wrote ./expected/prod.yaml"),
        "{first:?}"
    );

    repo.edit("templates/prod.yaml.j2", "action: upsert", "action: insert");
    let second = check(&repo, &["--update"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(
        second.stderr.lines().collect::<Vec<_>>(),
        [
            "unchanged ./expected/other.yaml",
            "wrote ./expected/prod.yaml"
        ],
        "{second:?}"
    );
}

#[test]
fn human_output_and_json_agree_on_line_and_column() {
    let repo = TestRepo::new();
    repo.remove("agents/prod.yaml");
    repo.edit("templates/base.yaml.j2", "vars.timeout", "vars.nope");
    repo.edit(
        "fleet.yaml",
        "template: prod.yaml.j2",
        "template: prd.yaml.j2",
    );
    let human = check(&repo, &[]);
    let json: Value = serde_json::from_str(&check(&repo, &["--format", "json"]).stdout).unwrap();
    let places: Vec<String> = json["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let mut place = d["file"].as_str().unwrap().to_owned();
            for key in ["line", "column"] {
                if let Some(n) = d[key].as_u64() {
                    place.push_str(&format!(":{n}"));
                }
            }
            format!("{place}: {}: ", d["severity"].as_str().unwrap())
        })
        .collect();
    let shown = lines(&human);
    assert_eq!(places.len(), shown.len(), "{places:?}\n{human:?}");
    assert!(places.len() >= 2, "{human:?}");
    for (place, line) in places.iter().zip(shown) {
        assert!(
            line.starts_with(place),
            "`{line}` does not start with `{place}`"
        );
    }
}
