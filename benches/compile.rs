//! Criterion benchmarks of the config-repository path: compiling the example repository, and
//! the desired config of one agent cold (render + parse + validate + hash) and warm (render +
//! hash + a hit in the per-revision validation cache). Results go into BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
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

criterion_group!(name = group; config = Criterion::default().sample_size(30); targets = benches);
criterion_main!(group);
