//! Entry points of the fuzz targets (`fuzz/`) and of their regression tests: the same code runs
//! under libFuzzer and in `cargo test`, so every input a fuzzer ever found stays a test.

use crate::fleet::record::Transport;
use crate::fleet::{Connection, Fleet, FleetConfig};
use crate::opamp::codec;
use crate::repo::{compile, AgentInfo, CompileOptions, Revision, Snapshot};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

const SAMPLE_FLEET: &str = "rules:\n  - name: all\n    match: {}\n    template: t.yaml.j2\n";
const SAMPLE_TEMPLATE: &str = "receivers:\n  otlp:\n    protocols:\n      grpc:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";

fn fleet() -> &'static Fleet {
    static FLEET: OnceLock<Fleet> = OnceLock::new();
    FLEET.get_or_init(|| {
        let mut snapshot = Snapshot::new();
        snapshot.insert("fleet.yaml", SAMPLE_FLEET);
        snapshot.insert("templates/t.yaml.j2", SAMPLE_TEMPLATE);
        let revision = compile(&snapshot, "fuzz", &CompileOptions::default())
            .revision
            .expect("the sample compiles");
        let (_sender, receiver) = tokio::sync::watch::channel(Some(revision));
        // The sender may go: the receiver keeps the last revision.
        let config = FleetConfig {
            max_agents: 1024,
            ..FleetConfig::default()
        };
        Fleet::new(config, receiver, Default::default(), Default::default())
    })
}

/// Bytes from the network: a WebSocket frame (header stripped), a gzip body, then the session
/// with the registry. Nothing here may panic, whatever the bytes.
pub fn opamp_message(data: &[u8]) {
    let fleet = fleet();
    let connection = Connection {
        id: 1,
        transport: Transport::Http,
        token_name: None,
        commands: None,
    };
    if let Ok(message) = codec::ws_payload(data).and_then(codec::decode_agent_message) {
        let _ = fleet.handle(message, &connection);
    }
    if let Ok(body) = codec::gunzip_limited(data, 1 << 20) {
        if let Ok(message) = codec::decode_agent_message(&body) {
            let _ = fleet.handle(message, &connection);
        }
    }
    if fleet.len() > 512 {
        fleet.forget_all();
    }
}

/// A repository from one input: `fleet.yaml`, then after a 0xFF byte a template that
/// fleet.yaml may name as `t.yaml.j2`, then after another 0xFF an included `inc.j2`. Compiles
/// and renders for a sample agent; errors are fine, panics and hangs are not.
pub fn repo_compile(data: &[u8]) -> Option<Arc<Revision>> {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let mut snapshot = Snapshot::new();
    snapshot.insert("fleet.yaml", parts.next().unwrap_or_default());
    snapshot.insert("templates/t.yaml.j2", parts.next().unwrap_or_default());
    snapshot.insert("templates/inc.j2", parts.next().unwrap_or_default());
    let output = compile(&snapshot, "fuzz", &CompileOptions::default());
    let revision = output.renderable?;
    let attributes = BTreeMap::from([("environment".to_string(), "production".to_string())]);
    let _ = revision.desired(&Arc::new(AgentInfo::new("0", attributes, BTreeMap::new())));
    Some(revision)
}

/// A template from one input, named by a fixed rule and rendered for a sample agent: the render
/// path with attacker-chosen templates. Whatever the template does, the render stays within the
/// memory bound and ends with a config or a diagnostic.
pub fn template_render(data: &[u8]) -> crate::repo::Desired {
    let mut snapshot = Snapshot::new();
    snapshot.insert("fleet.yaml", SAMPLE_FLEET);
    snapshot.insert("templates/t.yaml.j2", data);
    let output = compile(&snapshot, "fuzz", &CompileOptions::default());
    let Some(revision) = output.renderable else {
        return crate::repo::Desired::Unmanaged;
    };
    let attributes = BTreeMap::from([("environment".to_string(), "production".to_string())]);
    revision.desired_uncached(&Arc::new(AgentInfo::new("0", attributes, BTreeMap::new())))
}
