//! The desired config of agents under a compiled revision, through the library: rule choice,
//! shared renders, per-agent render errors.

mod common;

use common::repo::TestRepo;
use opamp_gitops::repo::{compile, AgentInfo, CompileOptions, Desired, Snapshot};
use std::collections::BTreeMap;
use std::sync::Arc;

fn agent(uid: &str, attrs: &[(&str, &str)]) -> Arc<AgentInfo> {
    let map = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(AgentInfo::new(uid, map, BTreeMap::new()))
}

fn config(desired: Desired) -> Arc<opamp_gitops::repo::DesiredConfig> {
    match desired {
        Desired::Config(c) => c,
        other => panic!("expected a config, got {other:?}"),
    }
}

#[test]
fn agents_that_differ_only_in_unread_attributes_share_one_render() {
    let repo = TestRepo::new();
    let snapshot = Snapshot::from_dir(repo.path()).unwrap();
    let revision = compile(&snapshot, "r1", &CompileOptions::default())
        .revision
        .expect("compiles");
    let a = config(revision.desired(&agent(
        "a",
        &[("environment", "production"), ("host.name", "a")],
    )));
    let b = config(revision.desired(&agent(
        "b",
        &[("environment", "production"), ("host.name", "b")],
    )));
    assert!(Arc::ptr_eq(&a, &b), "the same render is shared");
    assert_eq!(a.rule, "prod");

    let staging = config(revision.desired(&agent("c", &[("environment", "dev")])));
    assert_eq!(staging.rule, "everyone");
    assert_ne!(staging.hash, a.hash);
}

#[test]
fn a_template_reading_the_uid_renders_per_agent() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/base.yaml.j2",
        "  debug:\n",
        "  debug:\n    # {{ agent.instance_uid }}\n",
    );
    let snapshot = Snapshot::from_dir(repo.path()).unwrap();
    let revision = compile(&snapshot, "r1", &CompileOptions::default())
        .revision
        .expect("compiles");
    let a = config(revision.desired(&agent("a", &[])));
    let b = config(revision.desired(&agent("b", &[])));
    assert_ne!(a.hash, b.hash);
    assert!(String::from_utf8_lossy(&a.files["collector.yaml"]).contains("# a\n"));
}

#[test]
fn the_same_inputs_hash_the_same_in_every_revision() {
    let repo = TestRepo::new();
    let snapshot = Snapshot::from_dir(repo.path()).unwrap();
    let one = compile(&snapshot, "r1", &CompileOptions::default())
        .revision
        .unwrap();
    let two = compile(&snapshot, "r2", &CompileOptions::default())
        .revision
        .unwrap();
    let who = agent("x", &[("environment", "production")]);
    assert_eq!(
        config(one.desired(&who)).hash,
        config(two.desired(&who)).hash
    );
}

#[test]
fn a_render_error_for_one_agent_names_template_and_line() {
    let repo = TestRepo::new();
    repo.edit(
        "templates/prod.yaml.j2",
        "agent.attributes.environment | yaml",
        "agent.attributes.team | yaml",
    );
    repo.write(
        "agents/prod.yaml",
        "attributes: {environment: production, team: a}\n",
    );
    let snapshot = Snapshot::from_dir(repo.path()).unwrap();
    let revision = compile(&snapshot, "r1", &CompileOptions::default())
        .revision
        .expect("compiles");
    match revision.desired(&agent("x", &[("environment", "production")])) {
        Desired::Invalid { rule, diagnostics } => {
            assert_eq!(rule, "prod");
            assert_eq!(
                diagnostics[0].file.as_deref(),
                Some("templates/prod.yaml.j2")
            );
            assert_eq!(diagnostics[0].line, Some(11));
        }
        other => panic!("expected a render error, got {other:?}"),
    }
    assert!(matches!(
        revision.desired(&agent("y", &[("environment", "production"), ("team", "t")])),
        Desired::Config(_)
    ));
}

#[test]
fn an_agent_matching_no_rule_is_unmanaged() {
    let repo = TestRepo::new();
    repo.edit("fleet.yaml", "match: {}", "match: {environment: dev}");
    let snapshot = Snapshot::from_dir(repo.path()).unwrap();
    let revision = compile(&snapshot, "r1", &CompileOptions::default())
        .revision
        .unwrap();
    assert!(matches!(
        revision.desired(&agent("x", &[("environment", "qa")])),
        Desired::Unmanaged
    ));
}
