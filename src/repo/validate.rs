//! Validation of a rendered collector config: the built-in collector schema, the repository's
//! own schemas (org policy), and the semantic checks JSON Schema cannot express.

use super::otelcol::Otelcol;
use super::snapshot::Snapshot;
use crate::diagnostics::Diagnostic;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::OnceLock;

pub const BUILTIN_SCHEMA_NAME: &str = "collector.schema.json";
const BUILTIN_SCHEMA: &str = include_str!("../../schemas/collector.schema.json");
pub const REPO_SCHEMAS_DIR: &str = "schemas";

/// A validation finding inside one config document, located by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: Vec<String>,
    pub message: String,
}

impl Problem {
    fn new(path: &[&str], message: impl Into<String>) -> Problem {
        Problem {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }
}

/// The schemas of one revision, compiled once.
pub struct Validator {
    repo_schemas: Vec<(String, jsonschema::Validator)>,
    /// The Collector that also validates each distinct render (`--otelcol`).
    pub otelcol: Option<Otelcol>,
}

fn builtin() -> &'static jsonschema::Validator {
    static BUILTIN: OnceLock<jsonschema::Validator> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(BUILTIN_SCHEMA).expect("built-in schema is valid JSON");
        jsonschema::validator_for(&schema).expect("built-in schema compiles")
    })
}

impl Validator {
    /// Compiles every `schemas/*.json` of the snapshot; a broken schema is a diagnostic.
    pub fn compile(snapshot: &Snapshot, otelcol: Option<Otelcol>) -> (Validator, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let mut repo_schemas = Vec::new();
        for (path, body) in snapshot.under(REPO_SCHEMAS_DIR) {
            if !path.ends_with(".json") {
                continue;
            }
            let schema: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    diagnostics.push(
                        Diagnostic::error(format!("schema is not valid JSON: {e}"))
                            .in_file(path)
                            .at(Some(e.line()), Some(e.column())),
                    );
                    continue;
                }
            };
            match jsonschema::validator_for(&schema) {
                Ok(v) => repo_schemas.push((path.to_owned(), v)),
                Err(e) => diagnostics
                    .push(Diagnostic::error(format!("invalid JSON Schema: {e}")).in_file(path)),
            }
        }
        (
            Validator {
                repo_schemas,
                otelcol,
            },
            diagnostics,
        )
    }

    /// Every problem of a parsed config, schema violations first.
    pub fn validate(&self, config: &Value) -> Vec<Problem> {
        if is_empty(config) {
            return semantic_problems(config);
        }
        let mut problems = Vec::new();
        for error in builtin().iter_errors(config) {
            problems.extend(schema_problems(&error, BUILTIN_SCHEMA_NAME));
        }
        for (path, validator) in &self.repo_schemas {
            for error in validator.iter_errors(config) {
                problems.extend(schema_problems(&error, path));
            }
        }
        problems.extend(semantic_problems(config));
        problems
    }
}

fn is_empty(config: &Value) -> bool {
    config.as_object().is_none_or(Map::is_empty)
}

/// A schema violation as problems at the keys concerned: one per unexpected key, so each is
/// reported at its own line.
fn schema_problems(error: &jsonschema::ValidationError, schema: &str) -> Vec<Problem> {
    let path: Vec<String> = error
        .instance_path()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let shown = |path: &[String]| {
        if path.is_empty() {
            "the config".to_owned()
        } else {
            format!("`{}`", path.join("."))
        }
    };
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
        error.kind()
    {
        return unexpected
            .iter()
            .map(|key| {
                let mut at = path.clone();
                at.push(key.clone());
                Problem {
                    message: format!(
                        "{}: `{key}` is not allowed here (schema {schema})",
                        shown(&at)
                    ),
                    path: at,
                }
            })
            .collect();
    }
    vec![Problem {
        message: format!("{}: {error} (schema {schema})", shown(&path)),
        path,
    }]
}

const SIGNALS: &[&str] = &["traces", "metrics", "logs", "profiles"];

fn component_type(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

/// A top-level section of a config (`receivers`, `exporters`…) as a map, if it is one.
pub(crate) fn section<'a>(config: &'a Value, name: &str) -> Option<&'a Map<String, Value>> {
    config.get(name).and_then(Value::as_object)
}

/// The component ids of a list (a pipeline's `receivers`, say); anything else is none.
pub(crate) fn ids(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What a Collector would refuse at start, beyond the schema: wiring and ownership rules.
pub fn semantic_problems(config: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(root) = config.as_object().filter(|_| !is_empty(config)) else {
        problems.push(Problem::new(&[], "the rendered config is empty: the OpAMP Supervisor stops the collector when it receives an empty config"));
        return problems;
    };
    if let Some(extensions) = section(config, "extensions") {
        for id in extensions.keys().filter(|id| component_type(id) == "opamp") {
            problems.push(Problem::new(&["extensions", id], format!(
                "`extensions.{id}` must not be set: the OpAMP Supervisor owns the opamp extension, and overriding it cuts the collector off from its server"
            )));
        }
    }
    let defined = |name: &str| -> BTreeSet<String> {
        section(config, name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let (receivers, processors, exporters, connectors, extensions) = (
        defined("receivers"),
        defined("processors"),
        defined("exporters"),
        defined("connectors"),
        defined("extensions"),
    );
    let service = root.get("service");
    for (index, id) in ids(service.and_then(|s| s.get("extensions")))
        .iter()
        .enumerate()
    {
        if !extensions.contains(id) {
            problems.push(Problem {
                path: vec!["service".into(), "extensions".into(), index.to_string()],
                message: format!(
                    "service.extensions names `{id}`, which is not defined under `extensions`"
                ),
            });
        }
    }
    let pipelines = service
        .and_then(|s| s.get("pipelines"))
        .and_then(Value::as_object);
    let Some(pipelines) = pipelines.filter(|p| !p.is_empty()) else {
        problems.push(Problem::new(
            &["service"],
            "`service.pipelines` must define at least one pipeline",
        ));
        return problems;
    };
    let (mut connector_as_exporter, mut connector_as_receiver) = (BTreeSet::new(), BTreeSet::new());
    for (pipeline, body) in pipelines {
        let signal = component_type(pipeline);
        if !SIGNALS.contains(&signal) || pipeline.ends_with('/') {
            problems.push(Problem::new(&["service", "pipelines", pipeline], format!(
                "pipeline `{pipeline}` must be named traces, metrics, logs or profiles, optionally followed by /name"
            )));
        }
        for (kind, sections) in [
            ("receivers", [&receivers, &connectors]),
            ("processors", [&processors, &processors]),
            ("exporters", [&exporters, &connectors]),
        ] {
            let listed = ids(body.get(kind));
            if listed.is_empty() && kind != "processors" {
                problems.push(Problem::new(
                    &["service", "pipelines", pipeline],
                    format!(
                        "pipeline `{pipeline}` needs at least one {}",
                        &kind[..kind.len() - 1]
                    ),
                ));
            }
            for (index, id) in listed.iter().enumerate() {
                let path = vec![
                    "service".into(),
                    "pipelines".into(),
                    pipeline.clone(),
                    kind.into(),
                    index.to_string(),
                ];
                if !sections.iter().any(|s| s.contains(id)) {
                    let where_ = if kind == "processors" {
                        "`processors`".to_owned()
                    } else {
                        format!("`{kind}` or `connectors`")
                    };
                    problems.push(Problem { path, message: format!(
                        "pipeline `{pipeline}` uses {} `{id}`, which is not defined under {where_}", &kind[..kind.len() - 1]
                    ) });
                } else if connectors.contains(id) {
                    if kind == "exporters" {
                        connector_as_exporter.insert(id.clone());
                    } else if kind == "receivers" {
                        connector_as_receiver.insert(id.clone());
                    }
                }
            }
        }
    }
    for id in &connectors {
        let (exported, received) = (
            connector_as_exporter.contains(id),
            connector_as_receiver.contains(id),
        );
        if exported != received || !exported {
            let missing = if exported {
                "as a receiver in another pipeline"
            } else if received {
                "as an exporter in another pipeline"
            } else {
                "as an exporter in one pipeline and a receiver in another"
            };
            problems.push(Problem::new(
                &["connectors", id],
                format!("connector `{id}` must be used {missing}"),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(config: Value) -> Vec<String> {
        semantic_problems(&config)
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    fn valid() -> Value {
        json!({
            "receivers": {"otlp": {"protocols": {"grpc": null}}},
            "exporters": {"debug": null},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}
        })
    }

    #[test]
    fn a_wired_config_has_no_problems() {
        assert!(messages(valid()).is_empty());
        let (validator, errors) = Validator::compile(&Snapshot::new(), None);
        assert!(errors.is_empty());
        assert!(validator.validate(&valid()).is_empty());
    }

    #[test]
    fn an_undefined_exporter_is_named() {
        let mut c = valid();
        c["service"]["pipelines"]["traces"]["exporters"] = json!(["otlp/tempo"]);
        let m = messages(c);
        assert!(m.iter().any(|m| m.contains("`otlp/tempo`")), "{m:?}");
    }

    #[test]
    fn opamp_extension_and_empty_configs_are_refused() {
        let mut c = valid();
        c["extensions"] = json!({"opamp": {}});
        assert!(messages(c).iter().any(|m| m.contains("extensions.opamp")));
        assert!(messages(json!(null))[0].contains("empty"));
        assert!(messages(json!({}))[0].contains("empty"));
    }

    #[test]
    fn a_connector_must_bridge_two_pipelines() {
        let mut c = valid();
        c["connectors"] = json!({"forward": null});
        c["service"]["pipelines"]["traces"]["exporters"] = json!(["forward"]);
        let m = messages(c);
        assert!(m.iter().any(|m| m.contains("as a receiver")), "{m:?}");
    }
}
