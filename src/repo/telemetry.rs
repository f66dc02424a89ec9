//! The `telemetry:` section of fleet.yaml (under `defaults:` and per rule, deep-merged like
//! `vars`): where collectors send their own metrics, logs and traces. The server offers it to
//! each agent as `ConnectionSettingsOffers.own_metrics` / `own_logs` / `own_traces`.
//!
//! Secrets stay out of git: an endpoint or header value may hold `${env:NAME}` and
//! `${file:/path}` references (`Bearer ${env:OTLP_TOKEN}`), resolved by the server (from its environment, or a file it can read, such as
//! a mounted Kubernetes Secret) when it loads the revision. `check` validates the form and
//! leaves references unresolved; a reference the server cannot resolve rejects the revision.

use crate::opamp::proto::{Header, Headers, TelemetryConnectionSettings, TlsConnectionSettings};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The three signals of a collector's own telemetry, as written in fleet.yaml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySpec {
    #[serde(default)]
    pub metrics: Option<Destination>,
    #[serde(default)]
    pub logs: Option<Destination>,
    #[serde(default)]
    pub traces: Option<Destination>,
}

/// One OTLP/HTTP destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// The full OTLP/HTTP URL (`https://otlp.example.com:4318/v1/metrics`).
    pub endpoint: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// A CA bundle (PEM) on the server, sent to the agent as its contents.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Do not verify the destination's certificate.
    #[serde(default)]
    pub insecure: bool,
}

/// The settings an agent is offered for each signal, secrets resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedTelemetry {
    pub metrics: Option<TelemetryConnectionSettings>,
    pub logs: Option<TelemetryConnectionSettings>,
    pub traces: Option<TelemetryConnectionSettings>,
}

/// Where the server looks up `${env:NAME}` and `${file:/path}`.
pub trait Secrets {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> Result<String, String>;
}

/// The server's own environment and file system.
pub struct ProcessSecrets;

impl Secrets for ProcessSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

/// A piece of a value as written: text, or a reference for the server to resolve.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Env(&'a str),
    File(&'a str),
}

/// Splits a value into text and `${env:NAME}` / `${file:/path}` references.
fn pieces(value: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{value}`: a `${{` without its `}}`"))?;
        out.push(match after[..end].split_once(':') {
            Some(("env", name)) if !name.is_empty() => Piece::Env(name),
            Some(("file", path)) if path.starts_with('/') => Piece::File(path),
            _ => {
                return Err(format!(
                    "`{value}`: only `${{env:NAME}}` and `${{file:/absolute/path}}` are resolved (on the server)"
                ))
            }
        });
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// The value with its references resolved through `secrets`.
fn resolve_text(value: &str, secrets: &dyn Secrets) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(value)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Env(name) => out.push_str(
                &secrets
                    .env(name)
                    .ok_or_else(|| format!("`${{env:{name}}}` is not set on the server"))?,
            ),
            Piece::File(path) => out.push_str(
                secrets
                    .file(path)
                    .map_err(|e| format!("`${{file:{path}}}` cannot be read on the server: {e}"))?
                    .trim_end_matches(['\n', '\r']),
            ),
        }
    }
    Ok(out)
}

impl TelemetrySpec {
    /// Parses the merged `telemetry:` mapping; the error says what is wrong, in words.
    pub fn parse(value: Value) -> Result<TelemetrySpec, String> {
        let spec: TelemetrySpec = serde_json::from_value(value).map_err(|e| {
            format!("telemetry: {e} (signals are metrics, logs and traces, each {{endpoint, headers, tls: {{ca_file, insecure}}}})")
        })?;
        for (signal, destination) in spec.signals() {
            if let Some(destination) = destination {
                destination
                    .validate()
                    .map_err(|e| format!("telemetry.{signal}: {e}"))?;
            }
        }
        Ok(spec)
    }

    fn signals(&self) -> [(&'static str, &Option<Destination>); 3] {
        [
            ("metrics", &self.metrics),
            ("logs", &self.logs),
            ("traces", &self.traces),
        ]
    }

    /// The settings to offer, every reference resolved through `secrets`.
    pub fn resolve(&self, secrets: &dyn Secrets) -> Result<ResolvedTelemetry, String> {
        let resolve = |signal: &str, destination: &Option<Destination>| {
            destination
                .as_ref()
                .map(|d| d.resolve(secrets))
                .transpose()
                .map_err(|e| format!("telemetry.{signal}: {e}"))
        };
        Ok(ResolvedTelemetry {
            metrics: resolve("metrics", &self.metrics)?,
            logs: resolve("logs", &self.logs)?,
            traces: resolve("traces", &self.traces)?,
        })
    }
}

impl Destination {
    fn validate(&self) -> Result<(), String> {
        match pieces(&self.endpoint)?.as_slice() {
            [Piece::Text(url)] => {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))
                    .ok_or_else(|| {
                        format!("endpoint `{url}` is not an http:// or https:// OTLP/HTTP URL")
                    })?;
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(format!("endpoint `{url}` has no host"));
                }
            }
            [] => return Err("endpoint is empty".into()),
            _ => {}
        }
        for (name, value) in &self.headers {
            if name.is_empty() {
                return Err("a header needs a name".into());
            }
            pieces(value).map_err(|e| format!("header `{name}`: {e}"))?;
        }
        if let Some(Tls {
            ca_file: Some(path),
            ..
        }) = &self.tls
        {
            if !path.starts_with('/') {
                return Err(format!(
                    "tls.ca_file `{path}` must be an absolute path on the server"
                ));
            }
        }
        Ok(())
    }

    fn resolve(&self, secrets: &dyn Secrets) -> Result<TelemetryConnectionSettings, String> {
        let text = |value: &str| resolve_text(value, secrets);
        let headers = self
            .headers
            .iter()
            .map(|(key, value)| {
                Ok(Header {
                    key: key.clone(),
                    value: text(value).map_err(|e| format!("header `{key}`: {e}"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let tls = match &self.tls {
            None => None,
            Some(tls) => Some(TlsConnectionSettings {
                ca_pem_contents: match &tls.ca_file {
                    Some(path) => secrets
                        .file(path)
                        .map_err(|e| format!("tls.ca_file `{path}` cannot be read: {e}"))?,
                    None => String::new(),
                },
                include_system_ca_certs_pool: tls.ca_file.is_none(),
                insecure_skip_verify: tls.insecure,
                ..Default::default()
            }),
        };
        Ok(TelemetryConnectionSettings {
            destination_endpoint: text(&self.endpoint)?,
            headers: (!headers.is_empty()).then_some(Headers { headers }),
            tls,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fake;

    impl Secrets for Fake {
        fn env(&self, name: &str) -> Option<String> {
            (name == "OTLP_TOKEN").then(|| "s3cret".to_owned())
        }

        fn file(&self, path: &str) -> Result<String, String> {
            match path {
                "/run/secrets/key" => Ok("from-file\n".into()),
                _ => Err("No such file or directory".into()),
            }
        }
    }

    #[test]
    fn references_are_resolved_on_the_server() {
        let spec = TelemetrySpec::parse(json!({
            "metrics": {"endpoint": "https://otlp.example.com:4318/v1/metrics",
                        "headers": {"authorization": "Bearer ${env:OTLP_TOKEN}", "x-key": "key=${file:/run/secrets/key};", "x-team": "obs"}},
        }))
        .unwrap();
        let resolved = spec.resolve(&Fake).unwrap();
        let metrics = resolved.metrics.unwrap();
        assert_eq!(
            metrics.destination_endpoint,
            "https://otlp.example.com:4318/v1/metrics"
        );
        let headers: Vec<(String, String)> = metrics
            .headers
            .unwrap()
            .headers
            .into_iter()
            .map(|h| (h.key, h.value))
            .collect();
        assert_eq!(
            headers,
            [
                ("authorization".into(), "Bearer s3cret".into()),
                ("x-key".into(), "key=from-file;".into()),
                ("x-team".into(), "obs".into())
            ]
        );
        assert!(resolved.logs.is_none() && resolved.traces.is_none());
    }

    #[test]
    fn an_unresolvable_reference_says_which_and_why() {
        let spec = TelemetrySpec::parse(json!({
            "logs": {"endpoint": "http://sink:4318/v1/logs", "headers": {"authorization": "${env:MISSING}"}},
        }))
        .unwrap();
        assert_eq!(
            spec.resolve(&Fake).unwrap_err(),
            "telemetry.logs: header `authorization`: `${env:MISSING}` is not set on the server"
        );
        let spec = TelemetrySpec::parse(json!({
            "traces": {"endpoint": "http://sink:4318/v1/traces", "tls": {"ca_file": "/nope.pem"}},
        }))
        .unwrap();
        assert!(spec
            .resolve(&Fake)
            .unwrap_err()
            .starts_with("telemetry.traces: tls.ca_file `/nope.pem` cannot be read"));
    }

    #[test]
    fn malformed_sections_are_refused_in_words() {
        let cases = [
            (
                json!({"metric": {"endpoint": "http://x/v1/metrics"}}),
                "unknown field `metric`",
            ),
            (
                json!({"metrics": {"endpoint": "otlp:4318"}}),
                "not an http:// or https://",
            ),
            (
                json!({"metrics": {"endpoint": "http:///v1/metrics"}}),
                "has no host",
            ),
            (
                json!({"metrics": {"endpoint": "http://x", "headers": {"a": "Bearer ${env:T"}}}),
                "without its `}`",
            ),
            (
                json!({"metrics": {"endpoint": "http://x", "headers": {"a": "${vault:T}"}}}),
                "only `${env:NAME}` and `${file:/absolute/path}`",
            ),
            (
                json!({"metrics": {"endpoint": "http://x", "tls": {"ca_file": "ca.pem"}}}),
                "absolute path",
            ),
        ];
        for (value, want) in cases {
            let error = TelemetrySpec::parse(value.clone()).unwrap_err();
            assert!(error.contains(want), "{value}: {error}");
        }
    }
}
