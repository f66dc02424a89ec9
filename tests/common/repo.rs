//! Config repositories for tests: a small valid repo written into a temp dir, which a test then
//! breaks in exactly one way.

use opamp_gitops::repo::{compile, AgentInfo, CompileOptions, Desired, Snapshot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

pub const FLEET: &str = "\
defaults:
  vars:
    timeout: 5s
rules:
  - name: prod
    match:
      environment: production
    template: prod.yaml.j2
  - name: everyone
    match: {}
    template: base.yaml.j2
";

pub const BASE_TEMPLATE: &str = "\
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  debug:
processors:
  batch:
    timeout: {{ vars.timeout }}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
";

pub const PROD_TEMPLATE: &str = "\
{% import \"_macros.j2\" as m %}
receivers:
  otlp:
    protocols:
      grpc:
processors:
{{ m.batch(vars.timeout) }}
  resource:
    attributes:
      - key: environment
        value: {{ agent.attributes.environment | yaml }}
        action: upsert
exporters:
  otlp:
    endpoint: tempo-{{ agent.attributes.environment }}.monitoring.svc:4317
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [resource, batch]
      exporters: [otlp]
";

pub const MACROS: &str = "\
{% macro batch(timeout) %}  batch:
    timeout: {{ timeout }}
{%- endmacro %}
";

/// A config repository in a temp dir: valid until a test changes it.
pub struct TestRepo {
    dir: TempDir,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let repo = TestRepo {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        repo.write("fleet.yaml", FLEET);
        repo.write("templates/base.yaml.j2", BASE_TEMPLATE);
        repo.write("templates/prod.yaml.j2", PROD_TEMPLATE);
        repo.write("templates/_macros.j2", MACROS);
        repo.write(
            "agents/prod.yaml",
            "attributes: {environment: production, host.name: a}\nexpect: {rule: prod}\n",
        );
        repo.write(
            "agents/other.yaml",
            "attributes: {environment: dev}\nexpect: {rule: everyone}\n",
        );
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn write(&self, relative: &str, content: &str) {
        let path = self.file(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.file(relative)).expect("read")
    }

    pub fn remove(&self, relative: &str) {
        std::fs::remove_file(self.file(relative)).expect("remove");
    }

    /// Replaces the one occurrence of `from` in a file.
    pub fn edit(&self, relative: &str, from: &str, to: &str) {
        let text = self.read(relative);
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` must occur once in {relative}"
        );
        self.write(relative, &text.replacen(from, to, 1));
    }
}

/// The hash the repository renders for an agent with these attributes, through the library.
pub fn expected_hash(repo: &TestRepo, attrs: &[(&str, &str)]) -> Vec<u8> {
    let snapshot = Snapshot::from_dir(repo.path()).expect("read the repo");
    let revision = compile(&snapshot, "expected", &CompileOptions::default())
        .revision
        .expect("the repo compiles");
    let map = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match revision.desired(&Arc::new(AgentInfo::new("x", map, BTreeMap::new()))) {
        Desired::Config(c) => c.hash.to_vec(),
        other => panic!("no config: {other:?}"),
    }
}
