//! The monitoring bundle in deploy/monitoring: the alert rules pass promtool (syntax and their
//! unit tests), and every metric that the rules and the Grafana dashboard query is one the live
//! server exports.

mod common;

use common::admin::get;
use common::agent::{config_hash, Identity, WsAgent};
use common::block;
use common::repo::TestRepo;
use common::server::start;
use opamp_gitops::opamp::proto::RemoteConfigStatuses::{Applied, Unset};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

/// Runs promtool in deploy/monitoring, failing with its output when it fails.
fn promtool(args: &[&str]) -> String {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(monitoring_dir())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "promtool could not be run ({e}): run scripts/test.sh, which installs it \
             (Debian package `prometheus`)"
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts-test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The `opamp_gitops_*` names in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let name = regex::Regex::new(r"\bopamp_gitops_[A-Za-z0-9_]+").unwrap();
    into.extend(name.find_iter(expr).map(|m| m.as_str().to_owned()));
}

fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("alerts.yaml")).unwrap();
    let rules: Value = serde_saphyr::from_str(&text).expect("alerts.yaml is YAML");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .map(|r| r["expr"].as_str().expect("expr").to_owned())
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").clone())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// Sample names in an exposition text (`name{labels} value` or `name value`).
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_rules_and_dashboard_is_in_a_live_scrape() {
    let repo = TestRepo::new();
    let server = start(&repo).await;
    let mut ws =
        WsAgent::connect(server.opamp_addr, Identity::new(&[("environment", "dev")])).await;
    let msg = ws.id.full_state(&[], Unset);
    let reply = ws.exchange(msg).await;
    let hash = config_hash(&reply).expect("the agent is sent its config");
    let msg = ws.id.report(&hash, Applied, "");
    ws.exchange(msg).await;

    let addr = server.admin_addr;
    // The first scrape's own duration is recorded after it is answered: scrape twice.
    block(move || get(addr, "/metrics")).await;
    let text = block(move || get(addr, "/metrics").body).await;
    let scraped = scraped_names(&text);

    for (what, exprs) in [
        ("alerts.yaml", rule_exprs()),
        ("the dashboard", dashboard_exprs()),
    ] {
        let mut used = BTreeSet::new();
        for expr in &exprs {
            metric_names(expr, &mut used);
        }
        assert!(used.len() >= 4, "{what} names too few metrics: {used:?}");
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(
            missing.is_empty(),
            "{what} queries metrics that /metrics does not export: {missing:?}\n{text}"
        );
    }
    server.shutdown(Duration::from_secs(5)).await;
}
