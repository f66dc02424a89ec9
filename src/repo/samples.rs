//! Sample agents (`agents/*.yaml`): attributes that `check` renders, validates and compares
//! against the rule and golden files they expect.

use super::agent::AgentInfo;
use super::components::ComponentSet;
use super::snapshot::Snapshot;
use crate::diagnostics::Diagnostic;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

pub const AGENTS_DIR: &str = "agents";

// No `deny_unknown_fields`: `yaml::parse` reports every unknown key, not the first.
#[derive(Debug, Deserialize)]
struct RawSample {
    #[serde(default)]
    instance_uid: Option<String>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    identifying: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    non_identifying: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    expect: Option<RawExpect>,
    /// The component types of the agent's build: `{receivers: [...], exporters: [...], ...}`.
    #[serde(default)]
    available_components: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RawExpect {
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    config: Option<GoldenSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GoldenSpec {
    /// One golden file for a `template` rule.
    One(String),
    /// Config-file name → golden path, for a `files` rule.
    Files(BTreeMap<String, String>),
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// The file it came from, e.g. `agents/prod-eu.yaml`.
    pub file: String,
    pub agent: AgentInfo,
    pub expect_rule: Option<String>,
    pub expect_config: Option<GoldenSpec>,
    /// Its build's components: renders using others are errors.
    pub components: Option<ComponentSet>,
}

impl Sample {
    /// A short name for messages: the file stem.
    pub fn name(&self) -> &str {
        let base = self.file.rsplit('/').next().unwrap_or(&self.file);
        base.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(base)
    }
}

/// Every sample agent of the snapshot, and a diagnostic for each one that does not parse.
pub fn load(snapshot: &Snapshot) -> (Vec<Sample>, Vec<Diagnostic>) {
    let mut samples = Vec::new();
    let mut diagnostics = Vec::new();
    for (path, body) in snapshot.under(AGENTS_DIR) {
        if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
            continue;
        }
        match parse(path, body) {
            Ok(sample) => samples.push(sample),
            Err(found) => diagnostics.extend(found),
        }
    }
    (samples, diagnostics)
}

/// One sample agent file (`path` as it is to be named in messages).
pub fn parse(path: &str, body: &[u8]) -> Result<Sample, Vec<Diagnostic>> {
    let error = |message: String| vec![Diagnostic::error(message).in_file(path)];
    let text = std::str::from_utf8(body).map_err(|_| error("not valid UTF-8".into()))?;
    let raw: RawSample = super::yaml::parse(path, text)?;
    let texts = |map: Option<BTreeMap<String, Value>>| {
        map.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                Value::Bool(_) | Value::Number(_) => Ok((k, v.to_string())),
                _ => Err(error(format!("attribute `{k}` must be a scalar"))),
            })
            .collect::<Result<BTreeMap<String, String>, _>>()
    };
    if raw.attributes.is_some() && (raw.identifying.is_some() || raw.non_identifying.is_some()) {
        return Err(error(
            "give either `attributes` or `identifying`/`non_identifying`, not both".into(),
        ));
    }
    let (identifying, non_identifying) = match raw.attributes {
        Some(attributes) => (texts(Some(attributes))?, BTreeMap::new()),
        None => (texts(raw.identifying)?, texts(raw.non_identifying)?),
    };
    let uid = match raw.instance_uid {
        Some(text) => Uuid::parse_str(&text)
            .map_err(|e| error(format!("instance_uid `{text}` is not a UUID: {e}")))?,
        None => uid_from_file_name(path),
    };
    let components = match &raw.available_components {
        None => None,
        Some(value) => Some(
            ComponentSet::from_value(value, false)
                .map_err(|e| error(format!("available_components: {e}")))?,
        ),
    };
    let expect = raw.expect.unwrap_or(RawExpect {
        rule: None,
        config: None,
    });
    Ok(Sample {
        file: path.to_owned(),
        agent: AgentInfo::new(uid.to_string(), identifying, non_identifying),
        expect_rule: expect.rule,
        expect_config: expect.config,
        components,
    })
}

/// A stable uid for a sample agent without one: derived from its file name.
fn uid_from_file_name(path: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("opamp-gitops sample agent {path}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}
