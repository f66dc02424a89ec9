//! Component-aware validation with our own test agents and `check`: an agent's
//! `available_components` are cached by hash (the full list asked for only when the hash is
//! new), a desired config using a component type the build lacks is never sent and shows as a
//! `render_error` naming the component and the rule, and the API shows each agent's components;
//! `check` validates sample agents against their `available_components:` or `--components`.

mod common;

use bytes::Bytes;
use common::admin::api;
use common::agent::*;
use common::block;
use common::repo::TestRepo;
use common::run_cli;
use common::server::{agent, eventually, start};
use opamp_gitops::fleet::status::Status;
use opamp_gitops::opamp::proto::{
    AgentToServer, AvailableComponents, ComponentDetails, RemoteConfigStatuses::Unset,
};
use opamp_gitops::opamp::{agent_caps, FLAG_REPORT_AVAILABLE_COMPONENTS};
use std::time::Duration;

const PROD: &[(&str, &str)] = &[("environment", "production"), ("service.name", "otel")];

/// What the test repo's `prod` template uses, minus `exporter` types left out by the caller.
fn build(exporters: &[&str], hash: &str) -> AvailableComponents {
    let kind = |types: &[&str]| ComponentDetails {
        metadata: vec![],
        sub_component_map: types
            .iter()
            .map(|t| (t.to_string(), ComponentDetails::default()))
            .collect(),
    };
    AvailableComponents {
        components: [
            ("receivers".to_owned(), kind(&["otlp"])),
            ("processors".to_owned(), kind(&["batch", "resource"])),
            ("exporters".to_owned(), kind(exporters)),
            ("connectors".to_owned(), kind(&[])),
            ("extensions".to_owned(), kind(&["health_check"])),
        ]
        .into(),
        hash: Bytes::copy_from_slice(hash.as_bytes()),
    }
}

fn hash_only(hash: &str) -> AvailableComponents {
    AvailableComponents {
        components: Default::default(),
        hash: Bytes::copy_from_slice(hash.as_bytes()),
    }
}

fn reporting(attributes: &[(&str, &str)]) -> Identity {
    let mut id = Identity::new(attributes);
    id.capabilities |= agent_caps::REPORTS_AVAILABLE_COMPONENTS;
    id
}

fn first(id: &mut Identity, components: AvailableComponents) -> AgentToServer {
    let mut msg = id.full_state(&[], Unset);
    msg.available_components = Some(components);
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_using_an_exporter_the_build_lacks_is_never_sent_and_names_it() {
    let repo = TestRepo::new();
    let server = start(&repo).await;

    // The handshake: the first message carries only the hash; the server asks for the list.
    let mut lacking = WsAgent::connect(server.opamp_addr, reporting(PROD)).await;
    let msg = first(&mut lacking.id, hash_only("build-without-otlp"));
    let reply = lacking.exchange(msg).await;
    assert_eq!(
        reply.flags & FLAG_REPORT_AVAILABLE_COMPONENTS,
        FLAG_REPORT_AVAILABLE_COMPONENTS,
        "an unknown hash is asked for"
    );
    assert!(
        reply.remote_config.is_none(),
        "nothing before the build is known"
    );
    let mut msg = lacking.id.heartbeat();
    msg.available_components = Some(build(&["debug"], "build-without-otlp"));
    let reply = lacking.exchange(msg).await;
    assert_eq!(reply.flags & FLAG_REPORT_AVAILABLE_COMPONENTS, 0);
    assert!(
        reply.remote_config.is_none(),
        "the prod config needs the otlp exporter"
    );
    let uid = lacking.id.uid_string();
    let summary = agent(&server, &uid).unwrap();
    assert_eq!(summary.status, Status::RenderError);
    let error = summary.last_error.expect("the reason");
    assert!(error.contains("rule `prod`"), "{error}");
    assert!(error.contains("exporter `otlp`"), "{error}");
    let detail = block(|| api(server.admin_addr, &format!("/api/agents/{uid}"))).await;
    assert_eq!(detail["available_components"]["state"], "known");
    assert_eq!(
        detail["available_components"]["components"]["exporters"],
        serde_json::json!(["debug"])
    );
    assert_eq!(detail["status"], "render_error");
    let page = block(|| common::admin::get(server.admin_addr, &format!("/agents/{uid}"))).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<dt>exporters</dt><dd>debug</dd>"),
        "the agent page lists the components: {}",
        page.body
    );

    // Another agent of the same build sends only the hash: known, not asked again.
    let mut twin = WsAgent::connect(server.opamp_addr, reporting(PROD)).await;
    let msg = first(&mut twin.id, hash_only("build-without-otlp"));
    let reply = twin.exchange(msg).await;
    assert_eq!(
        reply.flags & FLAG_REPORT_AVAILABLE_COMPONENTS,
        0,
        "cached by hash"
    );
    assert!(reply.remote_config.is_none());
    assert_eq!(
        agent(&server, &twin.id.uid_string()).unwrap().status,
        Status::RenderError
    );

    // A build with the exporter gets the config.
    let mut able = HttpAgent::new(server.opamp_addr, reporting(PROD));
    let msg = first(&mut able.id, build(&["otlp", "debug"], "build-with-otlp"));
    let reply = block(|| able.exchange(msg)).await;
    assert!(
        config_hash(&reply).is_some(),
        "its build has every component"
    );
    let detail = block(|| {
        api(
            server.admin_addr,
            &format!("/api/agents/{}", able.id.uid_string()),
        )
    })
    .await;
    assert_eq!(
        detail["available_components"]["components"]["exporters"],
        serde_json::json!(["debug", "otlp"])
    );

    // A new revision that only needs what the lacking build has reaches it at once.
    repo.write(
        "templates/prod.yaml.j2",
        &common::repo::BASE_TEMPLATE.replace("debug:", "debug:\n    verbosity: basic"),
    );
    server.reload().await;
    let pushed = lacking.recv().await;
    assert!(
        config_hash(&pushed).is_some(),
        "sent once the build can run it"
    );
    eventually(WAIT, "no longer a render error", || {
        agent(&server, &uid).filter(|a| a.status != Status::RenderError)
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_without_the_capability_are_not_asked_nor_checked() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut plain = WsAgent::connect(server.opamp_addr, Identity::new(PROD)).await;
    let msg = first(&mut plain.id, hash_only("whatever"));
    let reply = plain.exchange(msg).await;
    assert_eq!(reply.flags & FLAG_REPORT_AVAILABLE_COMPONENTS, 0);
    assert!(config_hash(&reply).is_some());
    let detail = block(|| {
        api(
            server.admin_addr,
            &format!("/api/agents/{}", plain.id.uid_string()),
        )
    })
    .await;
    assert!(detail["available_components"].is_null());
    server.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn check_validates_sample_agents_against_their_components_and_a_components_file() {
    let repo = TestRepo::new();
    // The prod sample's build lacks the otlp exporter its rule uses.
    repo.write(
        "agents/prod.yaml",
        "attributes: {environment: production, host.name: a}\nexpect: {rule: prod}\navailable_components:\n  receivers: [otlp]\n  processors: [batch, resource]\n  exporters: [debug]\n",
    );
    let result = run_cli(repo.path(), &["check", "."]);
    assert_eq!(result.code, 1, "{result:?}");
    let line = result
        .stdout
        .lines()
        .find(|l| l.contains(": error: "))
        .unwrap_or_else(|| panic!("{result:?}"));
    assert!(line.starts_with("agents/prod.yaml: error: rule `prod` uses a component that this sample agent's (available_components) build lacks: exporter `otlp`"), "{line}");

    // With the components listed, the prod sample passes; the other sample takes
    // `--components`, in the shape `otelcol components` prints.
    repo.write(
        "agents/prod.yaml",
        "attributes: {environment: production, host.name: a}\nexpect: {rule: prod}\navailable_components:\n  receivers: [otlp]\n  exporters: [otlp]\n",
    );
    let otelcol = repo.file("components.yaml");
    std::fs::write(
        &otelcol,
        "buildinfo:\n  command: otelcol-custom\nreceivers:\n  - name: otlp\n    module: go.opentelemetry.io/collector/receiver/otlpreceiver v0.149.0\nprocessors:\n  - name: batch\nexporters:\n  - name: otlp\n",
    )
    .unwrap();
    let components = otelcol.display().to_string();
    let result = run_cli(repo.path(), &["check", ".", "--components", &components]);
    assert_eq!(result.code, 1, "{result:?}");
    assert!(
        result.stdout.contains("agents/other.yaml: error: rule `everyone` uses a component that the --components build lacks: exporter `debug`"),
        "{result:?}"
    );
    std::fs::write(
        &otelcol,
        "receivers: [otlp]\nprocessors: [batch]\nexporters: [debug, otlp]\n",
    )
    .unwrap();
    let result = run_cli(repo.path(), &["check", ".", "--components", &components]);
    assert_eq!(result.code, 0, "{result:?}");

    // A components file that is not one is a usage error.
    std::fs::write(&otelcol, "exporter: [x]\n").unwrap();
    let result = run_cli(repo.path(), &["check", ".", "--components", &components]);
    assert_eq!(result.code, 2, "{result:?}");
    assert!(result.stderr.contains("lists no components"), "{result:?}");
    let result = run_cli(
        repo.path(),
        &["check", ".", "--components", "/nonexistent/components.yaml"],
    );
    assert_eq!(result.code, 2, "{result:?}");
}
