//! Collector component types: which receivers, processors, exporters, connectors and extensions
//! a rendered config uses, which ones an agent's build has (what it reports as its available
//! components, a sample agent's `available_components:`, or `otelcol components` output), and
//! which of the used ones the build lacks. Nothing here knows about OpAMP.

use super::fleet::deep_merge;
use crate::diagnostics::Diagnostic;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The component kinds of a Collector config, as its top-level sections name them.
pub const KINDS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
];

/// Component types by kind (`exporters` → {`otlp`, `debug`}). A kind that is absent is not
/// known: nothing of that kind is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ComponentSet {
    pub kinds: BTreeMap<String, BTreeSet<String>>,
}

/// A component a config uses that the build lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The kind, singular: `exporter`.
    pub kind: &'static str,
    /// The type: `kafka`.
    pub component_type: String,
    /// The id the config uses: `kafka/eu`.
    pub id: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.id == self.component_type {
            write!(f, "{} `{}`", self.kind, self.component_type)
        } else {
            write!(
                f,
                "{} `{}` (type `{}`)",
                self.kind, self.id, self.component_type
            )
        }
    }
}

fn singular(kind: &str) -> &'static str {
    match kind {
        "receivers" => "receiver",
        "processors" => "processor",
        "exporters" => "exporter",
        "connectors" => "connector",
        _ => "extension",
    }
}

/// The type of a component id: `otlp/eu` → `otlp`.
pub fn component_type(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

impl ComponentSet {
    /// The list form of `agents/*.yaml` and `--components`: for each kind a list of types
    /// (`exporters: [otlp, debug]`), or of `{name: type, ...}` entries as `otelcol components`
    /// prints them. Other top-level keys (`buildinfo`, `providers`, `converters`) are ignored
    /// when `lenient`, errors otherwise.
    pub fn from_value(value: &Value, lenient: bool) -> Result<ComponentSet, String> {
        let Some(map) = value.as_object() else {
            return Err(format!(
                "the components list must be a map of kinds ({}) to lists of component types",
                KINDS.join(", ")
            ));
        };
        let mut kinds = BTreeMap::new();
        for (kind, entries) in map {
            if !KINDS.contains(&kind.as_str()) {
                if lenient {
                    continue;
                }
                return Err(format!(
                    "unknown component kind `{kind}`: use {}",
                    KINDS.join(", ")
                ));
            }
            let items = match entries {
                Value::Null => Vec::new(),
                Value::Array(items) => items.clone(),
                _ => return Err(format!("`{kind}` must be a list of component types")),
            };
            let mut types = BTreeSet::new();
            for item in &items {
                let name = match item {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(entry) => entry.get("name").and_then(Value::as_str),
                    _ => None,
                };
                match name {
                    Some(name) if !name.is_empty() => {
                        types.insert(component_type(name).to_owned());
                    }
                    _ => {
                        return Err(format!(
                            "`{kind}` entries must be component types (or `{{name: type}}` maps)"
                        ))
                    }
                }
            }
            kinds.insert(kind.clone(), types);
        }
        Ok(ComponentSet { kinds })
    }

    /// A `--components FILE`: YAML (or JSON) in the list form, `otelcol components` output
    /// included.
    pub fn parse_file(path: &str, text: &str) -> Result<ComponentSet, Vec<Diagnostic>> {
        let value: Value =
            serde_saphyr::from_str(text).map_err(|e| vec![super::yaml::yaml_error(path, &e)])?;
        let set = ComponentSet::from_value(&value, true)
            .map_err(|message| vec![Diagnostic::error(message).in_file(path)])?;
        if set.kinds.is_empty() {
            return Err(vec![Diagnostic::error(format!(
                "lists no components: give at least one of {}",
                KINDS.join(", ")
            ))
            .in_file(path)]);
        }
        Ok(set)
    }

    pub fn total(&self) -> usize {
        self.kinds.values().map(BTreeSet::len).sum()
    }

    /// The components of `used` this set lacks, in kind order; kinds the set does not list
    /// are not checked.
    pub fn missing(&self, used: &UsedComponents) -> Vec<Missing> {
        let mut missing = Vec::new();
        for kind in KINDS {
            let (Some(have), Some(ids)) = (self.kinds.get(kind), used.ids.get(kind)) else {
                continue;
            };
            for id in ids {
                let component_type = component_type(id);
                if !have.contains(component_type) {
                    missing.push(Missing {
                        kind: singular(kind),
                        component_type: component_type.to_owned(),
                        id: id.clone(),
                    });
                }
            }
        }
        missing
    }
}

/// The component ids a rendered config defines, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsedComponents {
    pub ids: BTreeMap<&'static str, BTreeSet<String>>,
}

impl UsedComponents {
    /// Parses the files and merges them as the OpAMP Supervisor does (file-name order, later
    /// wins); a file that does not parse contributes nothing (validation reports it).
    pub fn of_files(files: &BTreeMap<String, Bytes>) -> UsedComponents {
        let mut merged = Value::Null;
        for body in files.values() {
            let Ok(text) = std::str::from_utf8(body) else {
                continue;
            };
            let Ok(doc) = serde_saphyr::from_str::<Value>(text) else {
                continue;
            };
            if merged.is_null() {
                merged = doc;
            } else if !doc.is_null() {
                deep_merge(&mut merged, doc);
            }
        }
        UsedComponents::of_config(&merged)
    }

    pub fn of_config(config: &Value) -> UsedComponents {
        let mut ids = BTreeMap::new();
        for kind in KINDS {
            if let Some(section) = super::validate::section(config, kind) {
                ids.insert(kind, section.keys().cloned().collect());
            }
        }
        UsedComponents { ids }
    }
}

/// The message for a config whose components a build lacks: names each one and the rule.
pub fn missing_message(rule: &str, missing: &[Missing], whose: &str) -> String {
    let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
    format!(
        "rule `{rule}` uses {} that {whose} build lacks: {}; it is not sent (use components the build has, or a Collector build with them)",
        if missing.len() == 1 {
            "a component"
        } else {
            "components"
        },
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_and_otelcol_components_output_both_read() {
        let plain = ComponentSet::from_value(
            &json!({"receivers": ["otlp"], "exporters": ["debug", "otlp"]}),
            false,
        )
        .unwrap();
        assert_eq!(plain.total(), 3);
        let otelcol = ComponentSet::from_value(
            &json!({"buildinfo": {"command": "otelcol"}, "exporters": [{"name": "otlp", "module": "x"}], "providers": [{"name": "env"}]}),
            true,
        )
        .unwrap();
        assert_eq!(
            otelcol.kinds["exporters"],
            BTreeSet::from(["otlp".to_owned()])
        );
        assert!(!otelcol.kinds.contains_key("providers"));
        assert!(ComponentSet::from_value(&json!({"exporter": ["x"]}), false)
            .unwrap_err()
            .contains("unknown component kind `exporter`"));
    }

    #[test]
    fn missing_types_are_named_by_kind_and_id() {
        let have = ComponentSet::from_value(
            &json!({"receivers": ["otlp"], "exporters": ["debug"]}),
            false,
        )
        .unwrap();
        let used = UsedComponents::of_config(&json!({
            "receivers": {"otlp": {}},
            "processors": {"batch": {}},
            "exporters": {"debug": {}, "kafka/eu": {}},
        }));
        let missing = have.missing(&used);
        assert_eq!(
            missing.len(),
            1,
            "processors are not listed, so not checked"
        );
        assert_eq!(missing[0].to_string(), "exporter `kafka/eu` (type `kafka`)");
        assert!(
            missing_message("prod", &missing, "the agent's").starts_with(
                "rule `prod` uses a component that the agent's build lacks: exporter `kafka/eu`"
            )
        );
    }
}
