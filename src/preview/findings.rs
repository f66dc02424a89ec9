//! Findings read from the parsed configs of a group, the lines a reviewer must not miss in a
//! diff: components and pipelines added or removed, a pipeline's receivers, processors and
//! exporters changed, an exporter endpoint changed, and a component that a pipeline uses but
//! the config does not define.

use crate::repo::fleet::deep_merge;
use crate::repo::validate::{ids, section};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Component sections and what one of their entries is called.
const SECTIONS: [(&str, &str); 5] = [
    ("receivers", "receiver"),
    ("processors", "processor"),
    ("exporters", "exporter"),
    ("connectors", "connector"),
    ("extensions", "extension"),
];

/// The lists of a pipeline and what one of their entries is called.
const MEMBERS: [(&str, &str); 3] = [
    ("receivers", "receiver"),
    ("processors", "processor"),
    ("exporters", "exporter"),
];

/// The files parsed and merged as the OpAMP Supervisor merges them (file-name order, maps key
/// by key, later wins); None when one of them is not YAML.
pub fn merged(files: &BTreeMap<String, String>) -> Option<Value> {
    let mut config = Value::Null;
    for text in files.values() {
        let doc: Value = serde_saphyr::from_str(text).ok()?;
        if config.is_null() {
            config = doc;
        } else if !doc.is_null() {
            deep_merge(&mut config, doc);
        }
    }
    Some(config)
}

/// What changed from `before` to `after`. Without a `before` (the agents had no config) only
/// the problems of `after` are reported; without an `after`, nothing.
pub fn config_changes(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let Some(after) = after else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(before) = before {
        for (name, noun) in SECTIONS {
            let (old, new) = (keys(section(before, name)), keys(section(after, name)));
            added_removed(&mut found, "", noun, &old, &new);
        }
        let (old, new) = (pipelines(before), pipelines(after));
        added_removed(&mut found, "", "pipeline", &keys(old), &keys(new));
        if let (Some(old), Some(new)) = (old, new) {
            for (id, new_body) in new {
                if let Some(old_body) = old.get(id) {
                    pipeline_changes(&mut found, id, old_body, new_body);
                }
            }
        }
        endpoint_changes(&mut found, before, after);
    }
    let known = before.map(undefined).unwrap_or_default();
    found.extend(undefined(after).into_iter().filter(|p| !known.contains(p)));
    found
}

fn pipelines(config: &Value) -> Option<&Map<String, Value>> {
    config
        .get("service")
        .and_then(|s| s.get("pipelines"))
        .and_then(Value::as_object)
}

fn keys(map: Option<&Map<String, Value>>) -> Vec<String> {
    map.map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn added_removed(
    found: &mut Vec<String>,
    prefix: &str,
    noun: &str,
    old: &[String],
    new: &[String],
) {
    for id in old.iter().filter(|id| !new.contains(id)) {
        found.push(format!("{prefix}{noun} `{id}` removed"));
    }
    for id in new.iter().filter(|id| !old.contains(id)) {
        found.push(format!("{prefix}{noun} `{id}` added"));
    }
}

fn pipeline_changes(found: &mut Vec<String>, id: &str, old: &Value, new: &Value) {
    let prefix = format!("pipeline `{id}`: ");
    for (list, noun) in MEMBERS {
        let (before, after) = (ids(old.get(list)), ids(new.get(list)));
        added_removed(found, &prefix, noun, &before, &after);
        let kept = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter().filter(|x| b.contains(x)).cloned().collect()
        };
        // Processors run in order: the same processors in another order is a change.
        let (a, b) = (kept(&before, &after), kept(&after, &before));
        if list == "processors" && a != b {
            found.push(format!(
                "{prefix}processors reordered: `{}` → `{}`",
                a.join(", "),
                b.join(", ")
            ));
        }
    }
}

/// `endpoint` and `*_endpoint` keys of exporters defined on both sides.
fn endpoint_changes(found: &mut Vec<String>, before: &Value, after: &Value) {
    let (Some(old), Some(new)) = (section(before, "exporters"), section(after, "exporters")) else {
        return;
    };
    for (id, new_body) in new {
        let Some(old_body) = old.get(id) else {
            continue;
        };
        let endpoints = |body: &Value| -> BTreeMap<String, String> {
            body.as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| *k == "endpoint" || k.ends_with("_endpoint"))
                        .map(|(k, v)| (k.clone(), shown(v)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (a, b) = (endpoints(old_body), endpoints(new_body));
        let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in names {
            match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) if x != y => {
                    found.push(format!("exporter `{id}` {key} changed: `{x}` → `{y}`"))
                }
                (Some(x), None) => found.push(format!("exporter `{id}` {key} removed (was `{x}`)")),
                (None, Some(y)) => found.push(format!("exporter `{id}` {key} set to `{y}`")),
                _ => {}
            }
        }
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Components that `service` names and the config does not define.
fn undefined(config: &Value) -> Vec<String> {
    let defined = |name: &str| keys(section(config, name));
    let connectors = defined("connectors");
    let mut found = Vec::new();
    for id in ids(config.get("service").and_then(|s| s.get("extensions"))) {
        if !defined("extensions").contains(&id) {
            found.push(format!(
                "service.extensions names `{id}`, which is not defined under `extensions`"
            ));
        }
    }
    for (pipeline, body) in pipelines(config).into_iter().flatten() {
        for (list, noun) in MEMBERS {
            let mut known = defined(list);
            if list != "processors" {
                known.extend(connectors.iter().cloned());
            }
            for id in ids(body.get(list))
                .into_iter()
                .filter(|id| !known.contains(id))
            {
                found.push(format!(
                    "pipeline `{pipeline}` uses {noun} `{id}`, which is not defined under `{list}`"
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(exporters: Value, pipeline_exporters: &[&str]) -> Value {
        json!({
            "receivers": {"otlp": {}},
            "processors": {"batch": {}, "memory_limiter": {}},
            "exporters": exporters,
            "service": {"pipelines": {"traces": {
                "receivers": ["otlp"],
                "processors": ["memory_limiter", "batch"],
                "exporters": pipeline_exporters,
            }}}
        })
    }

    #[test]
    fn an_exporter_removed_from_a_pipeline_and_its_section_is_named_twice() {
        let before = config(
            json!({"otlp": {"endpoint": "a:4317"}, "debug": {}}),
            &["otlp", "debug"],
        );
        let after = config(json!({"debug": {}}), &["debug"]);
        let found = config_changes(Some(&before), Some(&after));
        assert_eq!(
            found,
            vec![
                "exporter `otlp` removed".to_owned(),
                "pipeline `traces`: exporter `otlp` removed".to_owned(),
            ]
        );
    }

    #[test]
    fn an_endpoint_change_shows_both_values() {
        let before = config(json!({"otlp": {"endpoint": "a:4317"}}), &["otlp"]);
        let after = config(json!({"otlp": {"endpoint": "b:4317"}}), &["otlp"]);
        assert_eq!(
            config_changes(Some(&before), Some(&after)),
            vec!["exporter `otlp` endpoint changed: `a:4317` → `b:4317`".to_owned()]
        );
    }

    #[test]
    fn reordered_processors_and_new_pipelines_are_findings() {
        let before = config(json!({"debug": {}}), &["debug"]);
        let mut after = before.clone();
        after["service"]["pipelines"]["traces"]["processors"] = json!(["batch", "memory_limiter"]);
        after["service"]["pipelines"]["logs"] =
            json!({"receivers": ["otlp"], "exporters": ["debug"]});
        let found = config_changes(Some(&before), Some(&after));
        assert!(
            found.contains(&"pipeline `logs` added".to_owned()),
            "{found:?}"
        );
        assert!(
            found.contains(
                &"pipeline `traces`: processors reordered: `memory_limiter, batch` → `batch, memory_limiter`"
                    .to_owned()
            ),
            "{found:?}"
        );
    }

    #[test]
    fn an_undefined_component_is_reported_once_it_appears() {
        let before = config(json!({"debug": {}}), &["debug"]);
        let after = config(json!({"debug": {}}), &["debug", "otlp/missing"]);
        let found = config_changes(Some(&before), Some(&after));
        assert!(
            found.contains(&"pipeline `traces` uses exporter `otlp/missing`, which is not defined under `exporters`".to_owned()),
            "{found:?}"
        );
        assert!(config_changes(Some(&after), Some(&after)).is_empty());
        assert!(config_changes(Some(&before), None).is_empty());
    }

    #[test]
    fn files_merge_as_the_supervisor_merges_them() {
        let files = BTreeMap::from([
            ("a.yaml".to_owned(), "exporters:\n  debug: {}\n".to_owned()),
            (
                "b.yaml".to_owned(),
                "exporters:\n  otlp: {endpoint: x}\n".to_owned(),
            ),
        ]);
        let merged = merged(&files).unwrap();
        assert!(merged["exporters"].get("debug").is_some());
        assert_eq!(merged["exporters"]["otlp"]["endpoint"], "x");
        let broken = BTreeMap::from([("a.yaml".to_owned(), "a: [".to_owned())]);
        assert!(super::merged(&broken).is_none());
    }
}
