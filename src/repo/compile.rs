//! Snapshot → revision: the one gate both `check` and `serve` go through. A snapshot compiles
//! when fleet.yaml and every template compile and every sample agent renders, validates, matches
//! its expected rule and its golden files. Anything less is a list of diagnostics and no revision.

use super::components::{missing_message, ComponentSet, UsedComponents};
use super::fleet::{FleetSpec, Rule, RuleOutput, FLEET_FILE};
use super::render::{Desired, DesiredConfig, Revision};
use super::samples::{self, GoldenSpec, Sample};
use super::snapshot::Snapshot;
use super::telemetry::{ProcessSecrets, Secrets};
use super::template::{Templates, TEMPLATES_DIR};
use super::validate::Validator;
use crate::diagnostics::Diagnostic;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Instead of comparing golden files, return their new contents.
    pub update_goldens: bool,
    /// A Collector binary whose `validate` command must accept every render too.
    pub otelcol: Option<std::path::PathBuf>,
    /// The repository directory as the user named it, for the `check DIR --update` hint.
    pub repo_dir: Option<String>,
    /// Resolve the `${env:…}` / `${file:…}` references of `telemetry:` sections (a server does;
    /// `check` runs where those secrets are not, and validates their form only).
    pub resolve_telemetry: bool,
    /// `check --components FILE`: the build of every sample agent without its own
    /// `available_components:`.
    pub components: Option<Arc<ComponentSet>>,
}

impl CompileOptions {
    /// The command that rewrites the golden files.
    fn update_command(&self) -> String {
        match &self.repo_dir {
            Some(dir) => format!("opamp-gitops check {dir} --update"),
            None => "opamp-gitops check DIR --update".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rules: usize,
    pub templates: usize,
    pub agents: usize,
    pub errors: usize,
    pub warnings: usize,
}

pub struct CompileOutput {
    /// Present exactly when there are no errors.
    pub revision: Option<Arc<Revision>>,
    /// Present when fleet.yaml, templates and schemas compile, whatever the sample agents say:
    /// enough to render (the `render` command), never to serve.
    pub renderable: Option<Arc<Revision>>,
    pub diagnostics: Vec<Diagnostic>,
    pub summary: Summary,
    /// Golden path → new content (with `update_goldens`).
    pub golden_updates: BTreeMap<String, String>,
    /// For each sample agent, the rule it got (None: unmanaged or failed).
    pub sample_rules: BTreeMap<String, Option<String>>,
    /// Each sample agent with its rule and its place in a staged rollout, in file order.
    pub samples: Vec<SampleReport>,
}

/// A sample agent as `check` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    pub name: String,
    pub file: String,
    pub rule: Option<String>,
    pub rollout: Option<SampleRollout>,
}

/// The rollout scope and wave a sample agent falls in (wave 0: the canary).
#[derive(Debug, Clone, Serialize)]
pub struct SampleRollout {
    pub scope: String,
    pub wave: usize,
    /// "canary" or the wave's cumulative percentage ("25 %").
    pub label: String,
}

impl CompileOutput {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

/// Resolves every rule's telemetry settings. A reference the server cannot resolve is an error
/// at the `telemetry:` line that wrote it: the defaults' (once), or the rule's own.
fn resolve_telemetry(fleet: &mut FleetSpec, secrets: &dyn Secrets) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let default_error = fleet.default_telemetry.as_ref().and_then(|(line, spec)| {
        let message = spec.resolve(secrets).err()?;
        errors.push(
            Diagnostic::error(format!("defaults.{message}"))
                .in_file(FLEET_FILE)
                .at(Some(*line), None),
        );
        Some(message)
    });
    for rule in &mut fleet.rules {
        if let Some(telemetry) = &mut rule.telemetry {
            match telemetry.spec.resolve(secrets) {
                Ok(resolved) => telemetry.resolved = Some(Arc::new(resolved)),
                Err(message) if Some(&message) == default_error.as_ref() => {}
                Err(message) => errors.push(
                    Diagnostic::error(message)
                        .in_file(FLEET_FILE)
                        .at(Some(telemetry.line), None)
                        .for_rule(&rule.name),
                ),
            }
        }
    }
    errors
}

pub fn compile(
    snapshot: &Snapshot,
    id: impl Into<String>,
    options: &CompileOptions,
) -> CompileOutput {
    let mut diagnostics = snapshot.problems().to_vec();
    let mut output = CompileOutput {
        revision: None,
        renderable: None,
        diagnostics: Vec::new(),
        summary: Summary::default(),
        golden_updates: BTreeMap::new(),
        sample_rules: BTreeMap::new(),
        samples: Vec::new(),
    };

    let fleet = match snapshot.get(FLEET_FILE) {
        None => {
            diagnostics.push(
                Diagnostic::error("fleet.yaml not found at the repository root")
                    .in_file(FLEET_FILE),
            );
            None
        }
        Some(body) => match std::str::from_utf8(body) {
            Err(_) => {
                diagnostics
                    .push(Diagnostic::error("fleet.yaml is not valid UTF-8").in_file(FLEET_FILE));
                None
            }
            Ok(text) => match FleetSpec::parse(text) {
                Ok(mut fleet) => {
                    if options.resolve_telemetry {
                        diagnostics.extend(resolve_telemetry(&mut fleet, &ProcessSecrets));
                    }
                    Some(fleet)
                }
                Err(errors) => {
                    diagnostics.extend(errors);
                    None
                }
            },
        },
    };
    let (templates, template_errors) = Templates::compile(snapshot);
    diagnostics.extend(template_errors);
    let otelcol = options.otelcol.clone().map(super::otelcol::Otelcol::new);
    let (validator, schema_errors) = Validator::compile(snapshot, otelcol);
    diagnostics.extend(schema_errors);
    output.summary.templates = templates.names().count();

    if let Some(fleet) = &fleet {
        output.summary.rules = fleet.rules.len();
        for rule in &fleet.rules {
            for template in rule.output.files().values() {
                if !templates.contains(template)
                    && !snapshot.contains(&format!("{TEMPLATES_DIR}/{template}"))
                {
                    let mut message =
                        format!("template `{template}` not found in {TEMPLATES_DIR}/");
                    if let Some(close) = closest_template(snapshot, template) {
                        message.push_str(&format!(": did you mean \"{close}\"?"));
                    }
                    diagnostics.push(
                        Diagnostic::error(message)
                            .in_file(FLEET_FILE)
                            .at(Some(rule.template_line), None)
                            .for_rule(&rule.name),
                    );
                }
            }
        }
        for name in unused_templates(fleet, &templates, snapshot) {
            diagnostics.push(
                Diagnostic::warning(format!("template `{name}` is not used by any rule"))
                    .in_file(format!("{TEMPLATES_DIR}/{name}")),
            );
        }
    }

    let (samples, sample_errors) = samples::load(snapshot);
    diagnostics.extend(sample_errors);
    output.summary.agents = samples.len();

    let blocked = diagnostics.iter().any(Diagnostic::is_error);
    if let (Some(fleet), false) = (fleet, blocked) {
        let revision = Arc::new(Revision::new(id.into(), fleet, templates, validator));
        let mut exercised = BTreeSet::new();
        for sample in &samples {
            let rule = check_sample(
                &revision,
                snapshot,
                sample,
                options,
                &mut diagnostics,
                &mut output.golden_updates,
            );
            if let Some(rule) = &rule {
                exercised.insert(rule.clone());
            }
            output.samples.push(SampleReport {
                name: sample.name().to_owned(),
                file: sample.file.clone(),
                rule: rule.clone(),
                rollout: rule
                    .as_deref()
                    .and_then(|r| sample_rollout(&revision, r, sample)),
            });
            output.sample_rules.insert(sample.file.clone(), rule);
        }
        for (index, rule) in revision.fleet.rules.iter().enumerate() {
            if !exercised.contains(&rule.name) {
                let message =
                    shadowed(&revision.fleet.rules, index, &samples).unwrap_or_else(|| {
                        format!(
                            "no sample agent in {}/ exercises rule `{}`",
                            samples::AGENTS_DIR,
                            rule.name
                        )
                    });
                diagnostics.push(
                    Diagnostic::warning(message)
                        .in_file(FLEET_FILE)
                        .at(Some(rule.line), None)
                        .for_rule(&rule.name),
                );
            }
        }
        if !diagnostics.iter().any(Diagnostic::is_error) {
            output.revision = Some(revision.clone());
        }
        output.renderable = Some(revision);
    }
    let diagnostics = crate::diagnostics::merge_shared(diagnostics);
    output.summary.errors = diagnostics.iter().filter(|d| d.is_error()).count();
    output.summary.warnings = diagnostics.len() - output.summary.errors;
    output.diagnostics = diagnostics;
    output
}

/// Where a sample agent falls in its rule's staged rollout, by the same cohort formula the
/// server uses on its uid.
fn sample_rollout(revision: &Revision, rule: &str, sample: &Sample) -> Option<SampleRollout> {
    let uid = uuid::Uuid::parse_str(&sample.agent.instance_uid).ok()?;
    let (scope, spec, wave) =
        revision
            .fleet
            .placement(rule, uid.as_bytes(), &sample.agent.attributes)?;
    Some(SampleRollout {
        scope: scope.to_owned(),
        wave,
        label: spec.wave_label(wave),
    })
}

/// Why rule `index` is reached by no sample agent, when an earlier rule is the reason: it
/// matches every agent this one matches (shadowed whatever the agents), or it takes every
/// sample agent this one matches.
fn shadowed(rules: &[Rule], index: usize, samples: &[samples::Sample]) -> Option<String> {
    let rule = &rules[index];
    let earlier = &rules[..index];
    if let Some(winner) = earlier
        .iter()
        .find(|e| rule.selector.covered_by(&e.selector))
    {
        return Some(format!(
            "rule `{}` is shadowed: every agent it matches is matched by the earlier rule `{}`, which wins",
            rule.name, winner.name
        ));
    }
    let matched: Vec<&samples::Sample> = samples
        .iter()
        .filter(|s| rule.selector.matches(&s.agent.attributes))
        .collect();
    if matched.is_empty() {
        return None;
    }
    let winners: BTreeSet<&str> = matched
        .iter()
        .filter_map(|s| {
            earlier
                .iter()
                .find(|e| e.selector.matches(&s.agent.attributes))
        })
        .map(|e| e.name.as_str())
        .collect();
    let names: Vec<&str> = matched.iter().map(|s| s.name()).collect();
    Some(format!(
        "rule `{}` is reached by no sample agent: the ones it matches ({}) all go to the earlier rule{} {}",
        rule.name,
        names.join(", "),
        if winners.len() == 1 { "" } else { "s" },
        winners.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
    ))
}

/// Renders one sample agent through the same path as a live agent and checks what it expects.
/// Returns the rule it got when it rendered.
fn check_sample(
    revision: &Revision,
    snapshot: &Snapshot,
    sample: &Sample,
    options: &CompileOptions,
    diagnostics: &mut Vec<Diagnostic>,
    golden_updates: &mut BTreeMap<String, String>,
) -> Option<String> {
    let agent = Arc::new(sample.agent.clone());
    let desired = revision.desired(&agent);
    let got_rule = desired.rule().map(str::to_owned);
    if let Some(expected) = &sample.expect_rule {
        if got_rule.as_deref() != Some(expected.as_str()) {
            let got = got_rule
                .as_deref()
                .map(|r| format!("rule `{r}`"))
                .unwrap_or_else(|| "no rule".into());
            diagnostics.push(
                Diagnostic::error(format!(
                    "sample agent expects rule `{expected}` but matches {got}"
                ))
                .in_file(&sample.file)
                .for_agent(sample.name()),
            );
        }
    }
    let config = match desired {
        Desired::Unmanaged => return None,
        Desired::Invalid {
            diagnostics: found, ..
        } => {
            diagnostics.extend(found.iter().map(|d| d.clone().for_agent(sample.name())));
            return got_rule;
        }
        Desired::Config(config) => config,
    };
    let components = sample.components.as_ref().or(options.components.as_deref());
    if let Some(have) = components {
        let missing = have.missing(&UsedComponents::of_files(&config.files));
        if !missing.is_empty() {
            let whose = if sample.components.is_some() {
                "this sample agent's (available_components)"
            } else {
                "the --components"
            };
            diagnostics.push(
                Diagnostic::error(missing_message(&config.rule, &missing, whose))
                    .in_file(&sample.file)
                    .for_rule(&config.rule)
                    .for_agent(sample.name()),
            );
        }
    }
    if let Some(golden) = &sample.expect_config {
        check_golden(
            revision,
            snapshot,
            sample,
            &config,
            golden,
            options,
            diagnostics,
            golden_updates,
        );
    }
    got_rule
}

#[allow(clippy::too_many_arguments)]
fn check_golden(
    revision: &Revision,
    snapshot: &Snapshot,
    sample: &Sample,
    config: &DesiredConfig,
    golden: &GoldenSpec,
    options: &CompileOptions,
    diagnostics: &mut Vec<Diagnostic>,
    golden_updates: &mut BTreeMap<String, String>,
) {
    let pairs: Vec<(String, String)> = match (
        golden,
        revision
            .fleet
            .rules
            .iter()
            .find(|r| r.name == config.rule)
            .map(|r| &r.output),
    ) {
        (GoldenSpec::One(path), _) if config.files.len() == 1 => {
            vec![(
                config.files.keys().next().cloned().unwrap_or_default(),
                path.clone(),
            )]
        }
        (GoldenSpec::Files(map), Some(RuleOutput::Files(_))) => {
            map.iter().map(|(f, p)| (f.clone(), p.clone())).collect()
        }
        _ => {
            diagnostics.push(
                Diagnostic::error(format!(
                    "`expect.config` must be one path for a `template` rule and a map of file name to path for a `files` rule (rule `{}` renders {} file(s))",
                    config.rule,
                    config.files.len()
                ))
                .in_file(&sample.file)
                .for_agent(sample.name()),
            );
            return;
        }
    };
    for (file, path) in pairs {
        let Some(body) = config.files.get(&file) else {
            diagnostics.push(
                Diagnostic::error(format!("rule `{}` renders no file `{file}`", config.rule))
                    .in_file(&sample.file)
                    .for_agent(sample.name()),
            );
            continue;
        };
        let rendered = String::from_utf8_lossy(body).into_owned();
        if options.update_goldens {
            golden_updates.insert(path, rendered);
            continue;
        }
        let Some(expected) = snapshot.get(&path) else {
            diagnostics.push(
                Diagnostic::error(format!(
                    "golden file `{path}` does not exist (run `{}` to write it)",
                    options.update_command()
                ))
                .in_file(&sample.file)
                .for_agent(sample.name())
                .for_rule(&config.rule),
            );
            continue;
        };
        let expected = String::from_utf8_lossy(expected);
        if expected != rendered {
            let diff = similar::TextDiff::from_lines(expected.as_ref(), rendered.as_str())
                .unified_diff()
                .context_radius(2)
                .header(&path, &format!("rendered {file}"))
                .to_string();
            let line = first_difference_line(&expected, &rendered);
            diagnostics.push(
                Diagnostic::error(format!(
                    "rendered `{file}` differs from golden file (run `{}` to accept):\n{diff}",
                    options.update_command()
                ))
                .in_file(&path)
                .at(Some(line), None)
                .for_agent(sample.name())
                .for_rule(&config.rule),
            );
        }
    }
}

fn first_difference_line(a: &str, b: &str) -> usize {
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
        + 1
}

/// The file below templates/ whose name is closest to `wanted`, when one is close enough to be
/// a likely typo.
fn closest_template(snapshot: &Snapshot, wanted: &str) -> Option<String> {
    snapshot
        .under(TEMPLATES_DIR)
        .map(|(path, _)| path[TEMPLATES_DIR.len() + 1..].to_owned())
        .map(|name| (strsim::normalized_damerau_levenshtein(wanted, &name), name))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// Templates no rule names, directly or through an include, import or extends of a used one.
/// Sources come from the snapshot, so a template that does not compile still marks what it uses.
fn unused_templates(fleet: &FleetSpec, templates: &Templates, snapshot: &Snapshot) -> Vec<String> {
    let mut used: BTreeSet<String> = fleet
        .rules
        .iter()
        .flat_map(|r| r.output.files().into_values())
        .collect();
    let mut frontier: Vec<String> = used.iter().cloned().collect();
    while let Some(name) = frontier.pop() {
        let Some(source) = snapshot
            .get(&format!("{TEMPLATES_DIR}/{name}"))
            .and_then(|body| std::str::from_utf8(body).ok())
        else {
            continue;
        };
        for other in templates.names() {
            if !used.contains(other)
                && (source.contains(&format!("\"{other}\""))
                    || source.contains(&format!("'{other}'")))
            {
                used.insert(other.to_owned());
                frontier.push(other.to_owned());
            }
        }
    }
    templates
        .names()
        .filter(|n| !used.contains(*n))
        .map(str::to_owned)
        .collect()
}
