//! Criterion benchmarks of the config-repository path: compiling the example repository, the
//! desired config of one agent cold (render + parse + validate + hash) and warm (render + hash +
//! a hit in the per-revision validation cache), and `diff`'s comparison of two revisions of a
//! 50-rule repository over 500 attribute sets. Results go into BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use opamp_gitops::preview::compare::Version;
use opamp_gitops::preview::{compare, AgentSet, Side};
use opamp_gitops::repo::{compile, AgentInfo, CompileOptions, Desired, Revision, Snapshot};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn example_snapshot() -> Snapshot {
    Snapshot::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo")).unwrap()
}

fn compiled(snapshot: &Snapshot) -> Arc<Revision> {
    compile(snapshot, "bench", &CompileOptions::default())
        .revision
        .expect("the example repo compiles")
}

/// A production agent whose team no sample agent has, so its config is one no sample rendered.
fn agent(team: &str) -> Arc<AgentInfo> {
    let attrs = [
        ("service.name", "otel-collector"),
        ("environment", "production"),
        ("region", "eu-west-1"),
        ("team", team),
        ("host.name", "node-1"),
    ];
    Arc::new(AgentInfo::new(
        "0190d5e6-8b3c-7c2a-9f10-3a4b5c6d7e8f",
        attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        BTreeMap::new(),
    ))
}

fn config_size(revision: &Revision) -> usize {
    match revision.desired(&agent("payments")) {
        Desired::Config(c) => c.files.values().map(|b| b.len()).sum(),
        other => panic!("expected a config, got {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let snapshot = example_snapshot();
    eprintln!(
        "rendered config size: {} bytes",
        config_size(&compiled(&snapshot))
    );

    c.bench_function("check example repo (read + compile + samples)", |b| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-config-repo");
        b.iter(|| {
            let snapshot = Snapshot::from_dir(&dir).unwrap();
            compile(&snapshot, "bench", &CompileOptions::default())
        })
    });

    c.bench_function(
        "desired config cold (render + parse + validate + hash)",
        |b| {
            let who = agent("payments");
            b.iter_batched(
                || compiled(&snapshot),
                |revision| revision.desired_uncached(&who),
                BatchSize::SmallInput,
            )
        },
    );

    let revision = compiled(&snapshot);
    let who = agent("payments");
    revision.desired(&who);
    c.bench_function(
        "desired config warm (render + hash + validation cache hit)",
        |b| b.iter(|| revision.desired_uncached(&who)),
    );
    c.bench_function(
        "desired config memo hit (another agent, same read attributes)",
        |b| {
            let other = agent("payments");
            b.iter(|| revision.desired(&other))
        },
    );
}

/// Rules, teams and regions of the `diff` benchmark: one rule per team, every team in every
/// region, so each of the 500 attribute sets renders a config of its own.
const RULES: usize = 50;
const REGIONS: usize = 10;
const AGENTS_PER_SET: usize = 20;

const BENCH_TEMPLATE: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
processors:
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
  batch:
    timeout: {{ vars.timeout }}
  resource:
    attributes:
      - {key: team, value: {{ agent.attributes.team | yaml }}, action: upsert}
      - {key: cloud.region, value: {{ agent.attributes.region | yaml }}, action: upsert}
exporters:
  otlp:
    endpoint: tempo-{{ agent.attributes.region }}.monitoring.svc:4317
    headers:
      X-Scope-OrgID: {{ vars.tenant }}
  otlphttp:
    endpoint: http://mimir-{{ agent.attributes.region }}.monitoring.svc/otlp
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, resource, batch]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, resource, batch]
      exporters: [otlphttp]
";

/// A 50-rule repository; `tenant_of_rule_0` is the one variable the head changes.
fn fifty_rules(tenant_of_rule_0: &str) -> Snapshot {
    let mut fleet = String::from("defaults:\n  vars: {timeout: 5s}\nrules:\n");
    for rule in 0..RULES {
        let tenant = if rule == 0 {
            tenant_of_rule_0.to_owned()
        } else {
            format!("tenant-{rule}")
        };
        fleet.push_str(&format!(
            "  - name: team-{rule}\n    match: {{team: team-{rule}}}\n    template: agent.yaml.j2\n    vars: {{tenant: {tenant}}}\n"
        ));
    }
    let mut snapshot = Snapshot::new();
    snapshot.insert("fleet.yaml", fleet);
    snapshot.insert("templates/agent.yaml.j2", BENCH_TEMPLATE);
    snapshot
}

fn live_sets() -> Vec<AgentSet> {
    (0..RULES)
        .flat_map(|team| {
            (0..REGIONS).map(move |region| AgentSet {
                identifying: BTreeMap::from([
                    ("team".to_owned(), format!("team-{team}")),
                    ("region".to_owned(), format!("region-{region}")),
                ]),
                non_identifying: BTreeMap::new(),
                instance_uid: None,
                count: AGENTS_PER_SET,
            })
        })
        .collect()
}

fn diff_bench(c: &mut Criterion) {
    let (base, head) = (fifty_rules("payments"), fifty_rules("checkout"));
    let sets = live_sets();
    let side = |name: &str| Side {
        name: name.to_owned(),
        commit: None,
        compiles: true,
    };
    let run = || {
        let options = CompileOptions::default();
        let base_revision = compile(&base, "base", &options)
            .revision
            .expect("base compiles");
        let head_revision = compile(&head, "head", &options)
            .revision
            .expect("head compiles");
        compare(
            &Version {
                side: side("base"),
                revision: Some(&base_revision),
            },
            &Version {
                side: side("head"),
                revision: Some(&head_revision),
            },
            &sets,
            3,
        )
    };
    let result = run();
    assert_eq!(result.summary.agents, RULES * REGIONS * AGENTS_PER_SET);
    assert_eq!(result.summary.moved, REGIONS * AGENTS_PER_SET);
    c.bench_function(
        "diff: compile 2 revisions of 50 rules + render, validate and compare 500 attribute sets (10k agents)",
        |b| b.iter(run),
    );
}

criterion_group!(name = group; config = Criterion::default().sample_size(30); targets = benches);
criterion_group!(name = diff_group; config = Criterion::default().sample_size(10); targets = diff_bench);
criterion_main!(group, diff_group);
