//! The admin JSON API and /metrics against the real server with real agents connected.

mod common;

use common::block;

use common::admin::{get, post};
use common::agent::{config_hash, Identity, WsAgent};
use common::repo::TestRepo;
use common::server::start_with;
use opamp_gitops::opamp::agent_caps;
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Failed, Unset};
use opamp_gitops::server::{ServeOptions, Server};
use serde_json::Value;
use std::time::Duration;

const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-token");

struct Fixture {
    _tokens: tempfile::TempDir,
    repo: TestRepo,
    server: Server,
}

async fn fixture() -> Fixture {
    let tokens = tempfile::tempdir().unwrap();
    std::fs::write(tokens.path().join("admin"), "alice:admin-token\n").unwrap();
    let repo = TestRepo::new();
    repo.edit(
        "templates/prod.yaml.j2",
        "    endpoint: tempo-",
        "    headers:\n      authorization: \"Bearer ${env:TEMPO_TOKEN}\"\n    endpoint: tempo-",
    );
    let mut options = ServeOptions::local(repo.path());
    options.admin_token_file = Some(tokens.path().join("admin"));
    let server = start_with(options).await;
    Fixture {
        _tokens: tokens,
        repo,
        server,
    }
}

/// An agent that reports `status` for its first config.
async fn agent_reporting(
    server: &Server,
    attrs: &[(&str, &str)],
    status: opamp_gitops::opamp::proto::RemoteConfigStatuses,
    caps: u64,
) -> WsAgent {
    let mut id = Identity::new(attrs);
    id.capabilities |= caps;
    let mut ws = WsAgent::connect(server.opamp_addr, id).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    if let Some(hash) = config_hash(&reply) {
        let error = if status == Failed {
            "exporter otlp: connection refused"
        } else {
            ""
        };
        let msg = ws.id.report(&hash, status, error);
        ws.exchange(msg).await;
    }
    ws
}

fn uids(page: &Value) -> Vec<String> {
    page["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["instance_uid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_listed_filtered_and_paginated() {
    let f = fixture().await;
    let prod = agent_reporting(
        &f.server,
        &[("environment", "production"), ("team", "a")],
        Applied,
        0,
    )
    .await;
    let failed = agent_reporting(
        &f.server,
        &[("environment", "production"), ("team", "b")],
        Failed,
        0,
    )
    .await;
    let dev = agent_reporting(&f.server, &[("environment", "dev")], Applied, 0).await;
    let addr = f.server.admin_addr;

    let all = block(|| get(addr, "/api/agents")).await.json();
    assert_eq!(all["total"], 3);
    let first = &all["agents"][0];
    for key in [
        "instance_uid",
        "attributes",
        "rule",
        "status",
        "connected",
        "stale",
        "healthy",
        "transport",
        "desired_hash",
        "reported_hash",
        "revision",
        "last_seen",
    ] {
        assert!(first.get(key).is_some(), "summary lacks {key}: {first}");
    }
    let failed_only = block(|| get(addr, "/api/agents?status=failed"))
        .await
        .json();
    assert_eq!(uids(&failed_only), vec![failed.id.uid_string()]);
    let by_rule = block(|| get(addr, "/api/agents?rule=everyone"))
        .await
        .json();
    assert_eq!(uids(&by_rule), vec![dev.id.uid_string()]);
    let by_label = block(|| get(addr, "/api/agents?label=team%3Da"))
        .await
        .json();
    assert_eq!(uids(&by_label), vec![prod.id.uid_string()]);
    let both = block(|| {
        get(
            addr,
            "/api/agents?label=environment%3Dproduction&status=applied",
        )
    })
    .await
    .json();
    assert_eq!(uids(&both), vec![prod.id.uid_string()]);
    let search = block(|| get(addr, "/api/agents?q=DEV")).await.json();
    assert_eq!(search["total"], 1);

    let page1 = block(|| get(addr, "/api/agents?limit=2&offset=0"))
        .await
        .json();
    let page2 = block(|| get(addr, "/api/agents?limit=2&offset=2"))
        .await
        .json();
    assert_eq!(page1["total"], 3);
    assert_eq!(uids(&page1).len(), 2);
    assert_eq!(uids(&page2).len(), 1);
    let mut every: Vec<String> = uids(&page1).into_iter().chain(uids(&page2)).collect();
    every.sort();
    let mut expected = uids(&all);
    expected.sort();
    assert_eq!(every, expected);

    let summary = block(|| get(addr, "/api/summary")).await.json();
    assert_eq!(summary["total"], 3);
    let by_status: std::collections::HashMap<String, u64> = summary["by_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_owned(),
                pair[1].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        (
            by_status["applied"],
            by_status["failed"],
            by_status["pending"]
        ),
        (2, 1, 0)
    );
    assert_eq!(
        (summary["connected"].as_u64(), summary["healthy"].as_u64()),
        (Some(3), Some(3))
    );

    let bad = block(|| get(addr, "/api/agents?status=bogus")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("bogus"));
    f.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shows_its_configs_their_diff_and_redacted_secrets() {
    let f = fixture().await;
    let mut ws = WsAgent::connect(
        f.server.opamp_addr,
        Identity::new(&[("environment", "production")]),
    )
    .await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    let hash = config_hash(&reply).unwrap();
    let body = common::agent::config_file(&reply, "collector.yaml");
    assert!(
        body.contains("Bearer ${env:TEMPO_TOKEN}"),
        "what is sent is never redacted"
    );
    // The agent runs the config merged with its own pieces, as the Supervisor reports it.
    let mut msg = ws.id.report(&hash, Applied, "");
    let effective = format!("{body}extensions:\n  health_check: {{}}\n");
    msg.effective_config = Some(opamp_gitops::opamp::proto::EffectiveConfig {
        config_map: Some(opamp_gitops::opamp::proto::AgentConfigMap {
            config_map: [(
                "".to_string(),
                opamp_gitops::opamp::proto::AgentConfigFile {
                    body: effective.into_bytes().into(),
                    content_type: "text/yaml".into(),
                },
            )]
            .into(),
        }),
    });
    ws.exchange(msg).await;

    let uid = ws.id.uid_string();
    let detail = block(|| get(f.server.admin_addr, &format!("/api/agents/{uid}")))
        .await
        .json();
    assert_eq!(detail["status"], "applied");
    assert_eq!(detail["rule"], "prod");
    let desired = detail["desired_config"]["collector.yaml"].as_str().unwrap();
    assert!(desired.contains("authorization: <redacted>"), "{desired}");
    assert!(!desired.contains("TEMPO_TOKEN"));
    assert!(detail["effective_config"][""]
        .as_str()
        .unwrap()
        .contains("health_check"));
    let diff = detail["diff"].as_str().unwrap();
    assert!(
        diff.contains("--- desired") && diff.contains("+++ effective"),
        "{diff}"
    );
    assert!(diff.contains("+extensions:"), "{diff}");
    assert!(detail["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "AcceptsRemoteConfig"));

    assert_eq!(
        block(|| get(
            f.server.admin_addr,
            "/api/agents/0190d5e6-8b3c-7c2a-9f10-3a4b5c6d7e8f"
        ))
        .await
        .status,
        404
    );
    assert_eq!(
        block(|| get(f.server.admin_addr, "/api/agents/not-a-uid"))
            .await
            .status,
        400
    );
    f.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_resends_a_failed_config_and_is_audited_with_the_token_name() {
    let f = fixture().await;
    let mut ws = agent_reporting(&f.server, &[("environment", "production")], Failed, 0).await;
    let uid = ws.id.uid_string();
    let path = format!("/api/agents/{uid}/push");

    let refused = block(|| post(f.server.admin_addr, &path, &[], b"")).await;
    assert_eq!(refused.status, 401);
    let pushed = block(|| post(f.server.admin_addr, &path, &[ADMIN], b"")).await;
    assert_eq!(pushed.status, 202, "{}", pushed.body);
    assert!(
        config_hash(&ws.recv().await).is_some(),
        "the failed config is sent again"
    );

    let events = block(|| get(f.server.admin_addr, &format!("/api/events?agent={uid}")))
        .await
        .json();
    assert_eq!(
        events["total"].as_u64(),
        Some(events["events"].as_array().unwrap().len() as u64)
    );
    let events = events["events"].as_array().unwrap();
    assert_eq!(events[0]["kind"], "push");
    assert_eq!(events[0]["agent"], uid.as_str());
    assert_eq!(events[0]["token"], "alice");
    assert!(events
        .iter()
        .any(|e| e["kind"] == "status_reported" && e["status"] == "failed"));
    assert!(events.iter().any(|e| e["kind"] == "config_sent"));
    let revisions = block(|| get(f.server.admin_addr, "/api/events"))
        .await
        .json();
    assert!(revisions["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "revision_applied"));
    // By kind, paged: the newest config sent alone, then the one before it.
    let sent = |query: &str| {
        let path = format!("/api/events?kind=config_sent&{query}");
        common::admin::get(f.server.admin_addr, &path).json()
    };
    let all_sent = block(|| sent("limit=100")).await;
    let total = all_sent["total"].as_u64().unwrap();
    assert!(total >= 2, "{all_sent}");
    assert!(all_sent["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["kind"] == "config_sent"));
    let second = block(|| sent("limit=1&offset=1")).await;
    assert_eq!(second["total"].as_u64(), Some(total));
    assert_eq!(second["events"][0]["id"], all_sent["events"][1]["id"]);
    let unknown = block(|| get(f.server.admin_addr, "/api/events?kind=admin_action")).await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json()["error"]
            .as_str()
            .unwrap()
            .contains("config_sent"),
        "{}",
        unknown.body
    );
    assert_eq!(
        block(|| post(
            f.server.admin_addr,
            "/api/agents/0190d5e6-8b3c-7c2a-9f10-3a4b5c6d7e8f/push",
            &[ADMIN],
            b""
        ))
        .await
        .status,
        404
    );
    f.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_goes_to_agents_that_accept_it_and_is_409_otherwise() {
    let f = fixture().await;
    let mut willing = agent_reporting(
        &f.server,
        &[("environment", "dev")],
        Applied,
        agent_caps::ACCEPTS_RESTART_COMMAND,
    )
    .await;
    let unwilling = agent_reporting(&f.server, &[("environment", "dev")], Applied, 0).await;

    let ok = block(|| {
        post(
            f.server.admin_addr,
            &format!("/api/agents/{}/restart", willing.id.uid_string()),
            &[ADMIN],
            b"",
        )
    })
    .await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    let command = willing.recv().await;
    assert_eq!(
        command.command.map(|c| c.r#type),
        Some(0),
        "a Restart command"
    );
    assert!(command.remote_config.is_none());

    let no = block(|| {
        post(
            f.server.admin_addr,
            &format!("/api/agents/{}/restart", unwilling.id.uid_string()),
            &[ADMIN],
            b"",
        )
    })
    .await;
    assert_eq!(no.status, 409);
    assert!(no.json()["error"]
        .as_str()
        .unwrap()
        .contains("AcceptsRestartCommand"));
    f.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_cannot_be_delivered_is_409_and_a_disconnected_agent_can_be_forgotten() {
    let f = fixture().await;
    // An agent that only reports: no AcceptsRemoteConfig.
    let mut id = Identity::new(&[("environment", "dev")]);
    id.capabilities &= !agent_caps::ACCEPTS_REMOTE_CONFIG;
    let mut reporter = WsAgent::connect(f.server.opamp_addr, id).await;
    let msg = reporter.id.full_state(&[], Unset);
    reporter.exchange(msg).await;
    let uid = reporter.id.uid_string();
    let push = block(|| {
        post(
            f.server.admin_addr,
            &format!("/api/agents/{uid}/push"),
            &[ADMIN],
            b"",
        )
    })
    .await;
    assert_eq!(push.status, 409, "{}", push.body);
    assert!(push.body.contains("AcceptsRemoteConfig"), "{}", push.body);

    let path = format!("/api/agents/{uid}");
    let delete = |headers: &'static [(&'static str, &'static str)]| {
        let path = path.clone();
        let addr = f.server.admin_addr;
        move || common::admin::request("DELETE", addr, &path, headers, b"")
    };
    const WITH_TOKEN: &[(&str, &str)] = &[ADMIN];
    assert_eq!(block(delete(&[])).await.status, 401);
    let connected = block(delete(WITH_TOKEN)).await;
    assert_eq!(connected.status, 409, "{}", connected.body);
    drop(reporter);
    common::server::eventually(common::agent::WAIT, "the agent disconnected", || {
        common::server::agent(&f.server, &uid)
            .filter(|a| !a.connected)
            .map(|_| ())
    })
    .await;
    assert_eq!(block(delete(WITH_TOKEN)).await.status, 204);
    assert!(common::server::agent(&f.server, &uid).is_none());
    assert_eq!(block(delete(WITH_TOKEN)).await.status, 404);
    let events = block(|| get(f.server.admin_addr, &format!("/api/events?agent={uid}"))).await;
    assert!(
        events.body.contains("\"agent_forgotten\""),
        "{}",
        events.body
    );
    f.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_show_their_match_template_and_counts() {
    let f = fixture().await;
    let _a = agent_reporting(&f.server, &[("environment", "production")], Applied, 0).await;
    let _b = agent_reporting(&f.server, &[("environment", "production")], Failed, 0).await;
    let rules = block(|| get(f.server.admin_addr, "/api/rules"))
        .await
        .json();
    let prod = &rules[0];
    assert_eq!(prod["name"], "prod");
    assert_eq!(prod["match"]["environment"], "production");
    assert_eq!(prod["template"], "prod.yaml.j2");
    assert_eq!(
        (
            prod["agents"].as_u64(),
            prod["applied"].as_u64(),
            prod["failed"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(rules[1]["agents"], 0);
    f.server.shutdown(Duration::from_secs(5)).await;
}

fn metric(families: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let text = get(addr, "/metrics").body;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_what_happened() {
    let f = fixture().await;
    let addr = f.server.admin_addr;
    let before = block(|| scrape(addr)).await;
    assert_eq!(
        metric(&before, "opamp_gitops_config_pushes_total", &[]),
        0.0
    );
    let revision = f.server.store.current().unwrap().id.clone();
    assert_eq!(
        metric(
            &before,
            "opamp_gitops_revision_info",
            &[("revision", &revision)]
        ),
        1.0
    );

    assert_eq!(metric(&before, "opamp_gitops_revision_rejected", &[]), 0.0);
    // Every status is a series from the start, 0 included.
    for status in opamp_gitops::fleet::status::Status::ALL {
        assert!(
            before
                .samples
                .iter()
                .any(|s| s.metric == "opamp_gitops_agents"
                    && s.labels.get("status") == Some(status.as_str())
                    && s.labels.get("healthy") == Some("unknown")),
            "no agents series for {status}"
        );
    }
    assert_eq!(metric(&before, "opamp_gitops_agents", &[]), 0.0);
    let build = before
        .samples
        .iter()
        .find(|s| s.metric == "opamp_gitops_build_info")
        .expect("build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(build.labels.get("commit"), Some(head.as_str()));
    assert!(metric(&before, "opamp_gitops_process_resident_memory_bytes", &[]) > 1e6);
    assert!(metric(&before, "opamp_gitops_process_open_fds", &[]) >= 3.0);
    // A short test may not have used a whole clock tick of CPU yet: the series must be there.
    assert!(before
        .samples
        .iter()
        .any(|s| s.metric == "opamp_gitops_process_cpu_seconds_total"));

    let _a = agent_reporting(&f.server, &[("environment", "production")], Applied, 0).await;
    let _b = agent_reporting(&f.server, &[("environment", "dev")], Failed, 0).await;
    f.repo.edit(
        "templates/base.yaml.j2",
        "timeout: {{ vars.timeout }}",
        "timeout: {{ vars.timeout }",
    );
    f.server.reload().await;

    let after = block(|| scrape(addr)).await;
    assert_eq!(metric(&after, "opamp_gitops_config_pushes_total", &[]), 2.0);
    assert_eq!(
        metric(
            &after,
            "opamp_gitops_agents",
            &[
                ("status", "applied"),
                ("transport", "ws"),
                ("connected", "true"),
                ("healthy", "true")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(&after, "opamp_gitops_agents", &[("status", "unmanaged")]),
        0.0
    );
    assert_eq!(metric(&after, "opamp_gitops_revision_rejected", &[]), 1.0);
    assert_eq!(
        metric(&after, "opamp_gitops_agents", &[("status", "failed")]),
        1.0
    );
    assert_eq!(
        metric(&after, "opamp_gitops_compile_failures_total", &[]),
        1.0
    );
    assert_eq!(
        metric(&after, "opamp_gitops_push_to_applied_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "opamp_gitops_messages_total",
            &[("direction", "in")]
        ),
        4.0
    );
    assert_eq!(
        metric(
            &after,
            "opamp_gitops_messages_total",
            &[("direction", "out")]
        ),
        4.0
    );
    assert!(metric(&after, "opamp_gitops_sent_bytes_total", &[]) > 0.0);
    assert!(metric(&after, "opamp_gitops_received_bytes_total", &[]) > 0.0);
    assert!(metric(&after, "opamp_gitops_last_sync_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(
        metric(
            &after,
            "opamp_gitops_http_requests_total",
            &[("route", "/metrics"), ("code", "200")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "opamp_gitops_http_requests_total",
            &[("route", "/v1/opamp"), ("code", "101")]
        ),
        2.0
    );
    let durations = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "opamp_gitops_http_request_duration_seconds_count"
                && s.labels.get("route") == Some("/metrics")
        })
        .expect("a duration histogram for /metrics");
    assert!(
        matches!(durations.value, prometheus_parse::Value::Untyped(n) | prometheus_parse::Value::Counter(n) if n == 1.0),
        "{durations:?}"
    );
    f.server.shutdown(Duration::from_secs(5)).await;
}
