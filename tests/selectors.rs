//! Selector forms beyond a string and a list, through `check` on a real repository: `{not: V}`,
//! `{regex: RE}` (anchored), `{exists: bool}` route sample agents as documented; a bad pattern
//! or operator is an error with file and line; a rule that an earlier rule always beats is a
//! warning that says which.

mod common;

use common::repo::TestRepo;
use common::run_cli;

fn check(repo: &TestRepo) -> common::CliResult {
    run_cli(repo.path(), &["check", "."])
}

/// A repo with `fleet` as fleet.yaml (every rule renders base.yaml.j2) and these sample agents
/// (file stem, attributes, expected rule).
fn repo_with(fleet: &str, agents: &[(&str, &str, &str)]) -> TestRepo {
    let repo = TestRepo::new();
    repo.remove("agents/prod.yaml");
    repo.remove("agents/other.yaml");
    repo.remove("templates/prod.yaml.j2");
    repo.remove("templates/_macros.j2");
    repo.write("fleet.yaml", fleet);
    for (name, attributes, rule) in agents {
        repo.write(
            &format!("agents/{name}.yaml"),
            &format!("attributes: {attributes}\nexpect: {{rule: {rule}}}\n"),
        );
    }
    repo
}

const OPERATORS: &str = "\
defaults:
  vars: { timeout: 5s }
rules:
  - name: web
    match:
      host.name: { regex: \"web-[0-9]+\" }
    template: base.yaml.j2
  - name: pods
    match:
      k8s.pod.name: { exists: true }
    template: base.yaml.j2
  - name: not-prod
    match:
      environment: { not: [production, staging] }
    template: base.yaml.j2
  - name: everyone
    match: {}
    template: base.yaml.j2
";

#[test]
fn not_regex_and_exists_route_each_sample_agent_as_documented() {
    let repo = repo_with(
        OPERATORS,
        &[
            ("web", "{environment: production, host.name: web-12}", "web"),
            // The regex is anchored: `web-12.example` is not `web-[0-9]+`.
            (
                "pod",
                "{environment: production, host.name: web-12.example, k8s.pod.name: p-1}",
                "pods",
            ),
            ("dev", "{environment: dev, host.name: db-1}", "not-prod"),
            // `not` holds for an attribute that is not reported at all.
            ("bare", "{host.name: db-2}", "not-prod"),
            (
                "prod",
                "{environment: production, host.name: db-3}",
                "everyone",
            ),
            ("staging", "{environment: staging}", "everyone"),
        ],
    );
    let result = check(&repo);
    assert_eq!(result.code, 0, "{result:?}");
    assert!(result.stdout.contains("0 errors, 0 warnings"), "{result:?}");

    // A sample expecting the wrong rule fails: the forms do not match everything.
    repo.write(
        "agents/prod.yaml",
        "attributes: {environment: production, host.name: db-3}\nexpect: {rule: not-prod}\n",
    );
    let result = check(&repo);
    assert_eq!(result.code, 1, "{result:?}");
    assert!(result.stdout.contains("agents/prod.yaml"), "{result:?}");
}

#[test]
fn a_bad_regex_is_a_check_error_with_file_and_line() {
    let repo = repo_with(
        &OPERATORS.replace("web-[0-9]+", "web-([0-9]+"),
        &[("dev", "{environment: dev}", "not-prod")],
    );
    let result = check(&repo);
    assert_eq!(result.code, 1, "{result:?}");
    let line = result
        .stdout
        .lines()
        .find(|l| l.contains(": error: "))
        .unwrap_or_else(|| panic!("no error: {result:?}"));
    assert!(line.starts_with("fleet.yaml:6:"), "{line}");
    assert!(
        line.contains("`match.host.name.regex` is not a valid regular expression"),
        "{line}"
    );
    assert!(line.contains("[rule web]"), "{line}");
}

#[test]
fn an_unknown_operator_is_a_check_error_naming_the_known_ones() {
    let repo = repo_with(
        &OPERATORS.replace("{ exists: true }", "{ present: true }"),
        &[],
    );
    let result = check(&repo);
    assert_eq!(result.code, 1, "{result:?}");
    assert!(
        result.stdout.contains("fleet.yaml:10:")
            && result
                .stdout
                .contains("unknown operator `present`: use not, regex or exists"),
        "{result:?}"
    );
}

#[test]
fn a_rule_an_earlier_rule_always_beats_is_a_shadowed_warning() {
    // Statically: `prod` asks for a subset of what `staging-or-prod` takes.
    let repo = repo_with(
        "\
defaults:
  vars: { timeout: 5s }
rules:
  - name: staging-or-prod
    match: { environment: [staging, production] }
    template: base.yaml.j2
  - name: prod
    match: { environment: production, region: { regex: \"eu-.*\" } }
    template: base.yaml.j2
  - name: web
    match: { host.name: { regex: \"web-.*\" } }
    template: base.yaml.j2
  - name: linux
    match: { os.type: linux }
    template: base.yaml.j2
  - name: everyone
    match: {}
    template: base.yaml.j2
",
        &[
            (
                "a",
                "{environment: production, region: eu-west-1}",
                "staging-or-prod",
            ),
            // By the samples: the only one `linux` matches goes to `web` first.
            ("b", "{host.name: web-1, os.type: linux}", "web"),
            ("c", "{environment: dev}", "everyone"),
        ],
    );
    let result = check(&repo);
    assert_eq!(result.code, 0, "warnings only: {result:?}");
    assert!(
        result.stdout.contains("fleet.yaml:7: warning: rule `prod` is shadowed: every agent it matches is matched by the earlier rule `staging-or-prod`, which wins"),
        "{result:?}"
    );
    assert!(
        result.stdout.contains("fleet.yaml:13: warning: rule `linux` is reached by no sample agent: the ones it matches (b) all go to the earlier rule `web`"),
        "{result:?}"
    );
    assert!(!result.stdout.contains("rule `web` is"), "{result:?}");
}
