//! `fleet.yaml`: default vars and the ordered rules that decide which template each agent gets.
//! Parsing is strict (unknown keys, duplicate rule names and malformed selectors are errors) and
//! every error names the line it is about.

use super::rollout::{self, RawRollout, RolloutSpec};
use super::selector::{Pattern, Regex, Selector, Term};
use super::telemetry::{ResolvedTelemetry, TelemetrySpec};
use crate::diagnostics::Diagnostic;
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub const FLEET_FILE: &str = "fleet.yaml";

/// The file name a single-`template` rule renders into.
pub const DEFAULT_CONFIG_FILE: &str = "collector.yaml";

// No `deny_unknown_fields` on these: `yaml::parse` reports every unknown key, not the first.
#[derive(Debug, Deserialize)]
struct RawFleet {
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    rollout: Option<Spanned<RawRollout>>,
}

#[derive(Debug, Deserialize)]
struct RawDefaults {
    #[serde(default)]
    vars: Option<Map<String, Value>>,
    #[serde(default)]
    telemetry: Option<Spanned<Map<String, Value>>>,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    name: Spanned<String>,
    #[serde(rename = "match")]
    selector: Spanned<Option<Map<String, Value>>>,
    #[serde(default)]
    template: Option<Spanned<String>>,
    #[serde(default)]
    files: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    vars: Option<Map<String, Value>>,
    #[serde(default)]
    telemetry: Option<Spanned<Map<String, Value>>>,
    #[serde(default)]
    rollout: Option<Spanned<RawRollout>>,
}

/// What a rule renders: one template as `collector.yaml`, or several named files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutput {
    Template(String),
    Files(BTreeMap<String, String>),
}

impl RuleOutput {
    /// Config-file name → template name.
    pub fn files(&self) -> BTreeMap<String, String> {
        match self {
            RuleOutput::Template(t) => {
                BTreeMap::from([(DEFAULT_CONFIG_FILE.to_owned(), t.clone())])
            }
            RuleOutput::Files(files) => files.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Line of the rule's `name` in fleet.yaml.
    pub line: usize,
    /// Line of the template reference(s).
    pub template_line: usize,
    pub selector: Selector,
    pub output: RuleOutput,
    /// The rule's vars deep-merged over `defaults.vars`.
    pub vars: Value,
    /// The rule's own rollout, which wins over the fleet's for its agents.
    pub rollout: Option<Arc<RolloutSpec>>,
    /// Where its agents send their own telemetry: the rule's `telemetry:` deep-merged over
    /// `defaults.telemetry`.
    pub telemetry: Option<RuleTelemetry>,
}

#[derive(Debug, Clone)]
pub struct RuleTelemetry {
    pub spec: Arc<TelemetrySpec>,
    /// Line of the `telemetry:` key that last set it (the rule's, else the defaults').
    pub line: usize,
    /// The settings offered, secrets resolved: filled in by a server's compile, never by `check`.
    pub resolved: Option<Arc<ResolvedTelemetry>>,
}

#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub rules: Vec<Rule>,
    /// `defaults.telemetry` with its line: what rules without their own inherit.
    pub default_telemetry: Option<(usize, Arc<TelemetrySpec>)>,
    /// The fleet-wide rollout (scope `fleet`).
    pub rollout: Option<Arc<RolloutSpec>>,
}

/// The scope name of the fleet-wide rollout.
pub const FLEET_SCOPE: &str = "fleet";

impl Rule {
    /// The rollout this rule's agents follow: the rule's own, else the fleet's; with its scope.
    pub fn rollout_in<'a>(
        &'a self,
        fleet: &'a FleetSpec,
    ) -> Option<(&'a str, &'a Arc<RolloutSpec>)> {
        match (&self.rollout, &fleet.rollout) {
            (Some(own), _) => Some((self.name.as_str(), own)),
            (None, Some(fleet)) => Some((FLEET_SCOPE, fleet)),
            (None, None) => None,
        }
    }
}

impl FleetSpec {
    /// The first rule whose selector holds for these attributes.
    pub fn rule_for(&self, attributes: &BTreeMap<String, String>) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.selector.matches(attributes))
    }

    /// The rollout scope, plan and wave of an agent whose config comes from `rule`; `None`
    /// when no rollout applies to it.
    pub fn placement(
        &self,
        rule: &str,
        uid16: &[u8; 16],
        attributes: &BTreeMap<String, String>,
    ) -> Option<(&str, &Arc<RolloutSpec>, usize)> {
        let rule = self.rules.iter().find(|r| r.name == rule)?;
        let (scope, spec) = rule.rollout_in(self)?;
        Some((
            scope,
            spec,
            spec.wave_of(rollout::cohort(uid16), attributes),
        ))
    }

    pub fn parse(source: &str) -> Result<FleetSpec, Vec<Diagnostic>> {
        let raw: RawFleet = super::yaml::parse(FLEET_FILE, source)?;
        let (defaults, default_telemetry) = match raw.defaults {
            Some(d) => (d.vars.unwrap_or_default(), d.telemetry),
            None => (Map::new(), None),
        };
        let defaults = Value::Object(defaults);
        let mut errors = Vec::new();
        let default_telemetry = default_telemetry.map(|t| (t.referenced.line() as usize, t.value));
        let mut default_spec = None;
        if let Some((line, value)) = &default_telemetry {
            match TelemetrySpec::parse(Value::Object(value.clone())) {
                Ok(spec) => default_spec = Some((*line, Arc::new(spec))),
                Err(message) => errors.push(
                    Diagnostic::error(format!("defaults.{message}"))
                        .in_file(FLEET_FILE)
                        .at(Some(*line), None),
                ),
            }
        }
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        for spanned in raw.rules {
            let raw_rule = spanned.value;
            let line = raw_rule.name.referenced.line() as usize;
            let name = raw_rule.name.value.clone();
            let at = |message: String, line: usize| {
                Diagnostic::error(message)
                    .in_file(FLEET_FILE)
                    .at(Some(line), None)
                    .for_rule(name.clone())
            };
            if name.trim().is_empty() {
                errors.push(at("a rule needs a non-empty name".into(), line));
                continue;
            }
            if !seen.insert(name.clone()) {
                errors.push(at(format!("duplicate rule name `{name}`"), line));
                continue;
            }
            let selector_line = raw_rule.selector.referenced.line() as usize;
            let selector = match parse_selector(raw_rule.selector.value.unwrap_or_default()) {
                Ok(s) => s,
                Err(message) => {
                    errors.push(at(message, selector_line));
                    continue;
                }
            };
            let (output, template_line) = match (raw_rule.template, raw_rule.files) {
                (Some(t), None) => (RuleOutput::Template(t.value), t.referenced.line() as usize),
                (None, Some(f)) if !f.value.is_empty() => {
                    (RuleOutput::Files(f.value), f.referenced.line() as usize)
                }
                (None, Some(f)) => {
                    errors.push(at(
                        "`files` must name at least one file".into(),
                        f.referenced.line() as usize,
                    ));
                    continue;
                }
                (Some(_), Some(_)) => {
                    errors.push(at(
                        format!("rule `{name}` has both `template` and `files`; give exactly one"),
                        line,
                    ));
                    continue;
                }
                (None, None) => {
                    errors.push(at(
                        format!(
                            "rule `{name}` has neither `template` nor `files`; give exactly one"
                        ),
                        line,
                    ));
                    continue;
                }
            };
            let mut vars = defaults.clone();
            deep_merge(&mut vars, Value::Object(raw_rule.vars.unwrap_or_default()));
            let telemetry = match merged_telemetry(&default_telemetry, raw_rule.telemetry) {
                None => None,
                Some((line, value)) => match TelemetrySpec::parse(value) {
                    Ok(spec) => Some(RuleTelemetry {
                        spec: Arc::new(spec),
                        line,
                        resolved: None,
                    }),
                    // The defaults' own error is reported once, above.
                    Err(_) if Some(line) == default_telemetry.as_ref().map(|(l, _)| *l) => None,
                    Err(message) => {
                        errors.push(at(message, line));
                        continue;
                    }
                },
            };
            let rollout = match raw_rule.rollout.map(|r| rollout::parse(r, Some(&name))) {
                None => None,
                Some(Ok(spec)) => Some(Arc::new(spec)),
                Some(Err(found)) => {
                    errors.extend(found);
                    continue;
                }
            };
            rules.push(Rule {
                name,
                line,
                template_line,
                selector,
                output,
                vars,
                rollout,
                telemetry,
            });
        }
        let rollout = match raw.rollout.map(|r| rollout::parse(r, None)) {
            None => None,
            Some(Ok(spec)) => Some(Arc::new(spec)),
            Some(Err(found)) => {
                errors.extend(found);
                None
            }
        };
        if errors.is_empty() {
            Ok(FleetSpec {
                rules,
                default_telemetry: default_spec,
                rollout,
            })
        } else {
            Err(errors)
        }
    }
}

/// A rule's telemetry deep-merged over the defaults', with the line that set it last.
fn merged_telemetry(
    defaults: &Option<(usize, Map<String, Value>)>,
    own: Option<Spanned<Map<String, Value>>>,
) -> Option<(usize, Value)> {
    match (defaults, own) {
        (None, None) => None,
        (Some((line, base)), None) => Some((*line, Value::Object(base.clone()))),
        (base, Some(own)) => {
            let mut merged =
                Value::Object(base.as_ref().map(|(_, b)| b.clone()).unwrap_or_default());
            deep_merge(&mut merged, Value::Object(own.value));
            Some((own.referenced.line() as usize, merged))
        }
    }
}

pub(super) fn parse_selector(map: Map<String, Value>) -> Result<Selector, String> {
    let mut terms = BTreeMap::new();
    for (key, value) in map {
        let term = match value {
            Value::Object(operator) => parse_operator(&key, operator)?,
            other => Term::AnyOf(patterns(&key, other)?),
        };
        terms.insert(key, term);
    }
    Ok(Selector::new(terms))
}

/// A string or a non-empty list of strings, as patterns.
fn patterns(key: &str, value: Value) -> Result<Vec<Pattern>, String> {
    let patterns = match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| scalar_text(&item).map(Pattern::new))
            .collect::<Option<Vec<_>>>(),
        other => scalar_text(&other).map(|s| vec![Pattern::new(s)]),
    };
    match patterns {
        Some(p) if !p.is_empty() => Ok(p),
        Some(_) => Err(format!("`match.{key}` is an empty list: it would match no agent")),
        None => Err(format!(
            "`match.{key}` must be a string, a list of strings (agent attributes are compared as text) or one operator: {{not: V}}, {{regex: RE}} or {{exists: true|false}}"
        )),
    }
}

/// `{not: V}`, `{regex: RE}` or `{exists: bool}`: exactly one operator.
fn parse_operator(key: &str, operator: Map<String, Value>) -> Result<Term, String> {
    let mut entries = operator.into_iter();
    let (Some((name, value)), None) = (entries.next(), entries.next()) else {
        return Err(format!(
            "`match.{key}` must hold exactly one operator: {{not: V}}, {{regex: RE}} or {{exists: true|false}}"
        ));
    };
    match name.as_str() {
        "not" => patterns(&format!("{key}.not"), value).map(Term::NoneOf),
        "regex" => {
            let Value::String(source) = value else {
                return Err(format!("`match.{key}.regex` must be a string"));
            };
            Regex::new(&source)
                .map(Term::Regex)
                .map_err(|e| format!("`match.{key}.regex` is not a valid regular expression: {e}"))
        }
        "exists" => match value {
            Value::Bool(b) => Ok(Term::Exists(b)),
            _ => Err(format!("`match.{key}.exists` must be true or false")),
        },
        other => Err(format!(
            "`match.{key}` has unknown operator `{other}`: use not, regex or exists"
        )),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Objects merge key by key; anything else in `overlay` replaces what `base` had.
pub fn deep_merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (k, v) in overlay {
                match base.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_are_deep_merged_over_defaults() {
        let fleet = FleetSpec::parse(
            "defaults:\n  vars: {a: 1, nested: {x: 1, y: 2}}\nrules:\n  - name: r\n    match: {}\n    template: t.j2\n    vars: {nested: {y: 3}, b: 2}\n",
        )
        .unwrap();
        assert_eq!(
            fleet.rules[0].vars,
            serde_json::json!({"a": 1, "b": 2, "nested": {"x": 1, "y": 3}})
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let fleet = FleetSpec::parse(
            "rules:\n  - name: prod\n    match: {environment: production}\n    template: a.j2\n  - name: all\n    match: {}\n    template: b.j2\n",
        )
        .unwrap();
        let attrs = BTreeMap::from([("environment".to_string(), "production".to_string())]);
        assert_eq!(fleet.rule_for(&attrs).unwrap().1.name, "prod");
        assert_eq!(fleet.rule_for(&BTreeMap::new()).unwrap().1.name, "all");
    }

    #[test]
    fn duplicate_names_are_reported_at_their_line() {
        let errors = FleetSpec::parse(
            "rules:\n  - name: a\n    match: {}\n    template: a.j2\n  - name: a\n    match: {}\n    template: a.j2\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(5));
        assert!(errors[0].message.contains("duplicate rule name `a`"));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let errors = FleetSpec::parse("rules:\n  - name: a\n    match: {}\n    tempalte: a.j2\n")
            .unwrap_err();
        assert_eq!(errors[0].line, Some(4), "{errors:?}");
        assert!(errors[0].message.contains("tempalte"), "{errors:?}");
    }

    #[test]
    fn a_rule_needs_exactly_one_of_template_and_files() {
        let both = FleetSpec::parse(
            "rules:\n  - name: a\n    match: {}\n    template: a.j2\n    files: {x.yaml: b.j2}\n",
        )
        .unwrap_err();
        assert!(both[0].message.contains("both"));
        let neither = FleetSpec::parse("rules:\n  - name: a\n    match: {}\n").unwrap_err();
        assert!(neither[0].message.contains("neither"));
    }
}
