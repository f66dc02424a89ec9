//! `opamp-gitops render` for a sample agent file (`--agent`, the format of `agents/*.yaml`) and
//! for non-identifying attributes given on the command line.

mod common;

use common::repo::{expected_hash, TestRepo};
use common::run_cli;

/// A repo whose base template shows the agent's `os.type` non-identifying attribute.
fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "exporters:\n",
        "# os: {{ agent.non_identifying[\"os.type\"] | default(\"none\") }}\nexporters:\n",
    );
    repo
}

fn hash_line(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("hash: "))
        .unwrap_or_else(|| panic!("no hash line in {stdout}"))
        .to_owned()
}

#[test]
fn render_takes_non_identifying_attributes() {
    let repo = repo();
    let plain = run_cli(repo.path(), &["render", ".", "--attr", "environment=dev"]);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(plain.stdout.contains("# os: none\n"), "{plain:?}");

    let linux = run_cli(
        repo.path(),
        &[
            "render",
            ".",
            "--attr",
            "environment=dev",
            "--non-identifying",
            "os.type=linux",
        ],
    );
    assert_eq!(linux.code, 0, "{linux:?}");
    assert!(linux.stdout.contains("# os: linux\n"), "{linux:?}");
    assert_ne!(hash_line(&plain.stdout), hash_line(&linux.stdout));
}

#[test]
fn render_takes_a_sample_agent_file() {
    let repo = repo();
    repo.write(
        "agents/mac.yaml",
        "identifying: {environment: dev}\nnon_identifying: {os.type: darwin}\n",
    );
    let mac = run_cli(repo.path(), &["render", ".", "--agent", "agents/mac.yaml"]);
    assert_eq!(mac.code, 0, "{mac:?}");
    assert!(mac.stdout.starts_with("rule: everyone\n"), "{mac:?}");
    assert!(mac.stdout.contains("# os: darwin\n"), "{mac:?}");

    let prod = run_cli(repo.path(), &["render", ".", "--agent", "agents/prod.yaml"]);
    assert_eq!(prod.code, 0, "{prod:?}");
    assert!(prod.stdout.starts_with("rule: prod\n"), "{prod:?}");
    let expected = expected_hash(&repo, &[("environment", "production"), ("host.name", "a")]);
    assert_eq!(hash_line(&prod.stdout), hex::encode(expected));

    // The command line wins over the file.
    let moved = run_cli(
        repo.path(),
        &[
            "render",
            ".",
            "--agent",
            "agents/mac.yaml",
            "--non-identifying",
            "os.type=linux",
        ],
    );
    assert!(moved.stdout.contains("# os: linux\n"), "{moved:?}");
    let other = run_cli(
        repo.path(),
        &[
            "render",
            ".",
            "--agent",
            "agents/prod.yaml",
            "--attr",
            "environment=qa",
        ],
    );
    assert!(other.stdout.starts_with("rule: everyone\n"), "{other:?}");
}

#[test]
fn a_bad_agent_file_is_a_usage_error_naming_file_and_line() {
    let repo = repo();
    let missing = run_cli(repo.path(), &["render", ".", "--agent", "agents/nope.yaml"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("agents/nope.yaml"), "{missing:?}");

    repo.write(
        "agents/bad.yaml",
        "attributes: {environment: dev}\nattrs: {}\n",
    );
    let bad = run_cli(repo.path(), &["render", ".", "--agent", "agents/bad.yaml"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert_eq!(
        bad.stderr.trim(),
        "agents/bad.yaml:2:1: error: unknown key `attrs`",
        "{bad:?}"
    );
}
