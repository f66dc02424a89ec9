//! A compiled revision and the desired config of an agent under it: pick the rule, render its
//! templates, hash, then validate only renders whose hash this revision has not seen. Renders
//! are memoised by the agent fields they read, validation verdicts by hash.

use super::agent::{AgentInfo, ReadKey, ReadLog};
use super::fleet::{deep_merge, FleetSpec, Rule};
use super::hash::{config_hash, ConfigHash};
use super::locate::{line_offset, locate_path, template_line};
use super::template::{RenderContext, Templates, TEMPLATES_DIR};
use super::validate::Validator;
use super::yaml::yaml_error;
use crate::diagnostics::Diagnostic;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A validated config for an agent: what the server sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredConfig {
    pub rule: String,
    /// Config-file name → rendered body.
    pub files: BTreeMap<String, Bytes>,
    pub hash: ConfigHash,
}

impl DesiredConfig {
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// What the current revision wants an agent to run.
#[derive(Debug, Clone)]
pub enum Desired {
    /// No rule matches: the agent gets no remote config.
    Unmanaged,
    Config(Arc<DesiredConfig>),
    /// The rule's render failed or did not validate: the agent keeps what it runs.
    Invalid {
        rule: String,
        diagnostics: Arc<Vec<Diagnostic>>,
    },
}

impl Desired {
    pub fn rule(&self) -> Option<&str> {
        match self {
            Desired::Unmanaged => None,
            Desired::Config(c) => Some(&c.rule),
            Desired::Invalid { rule, .. } => Some(rule),
        }
    }
}

type Verdict = Result<(), Arc<Vec<Diagnostic>>>;

#[derive(Default)]
struct RuleMemo {
    /// One group per distinct set of fields renders of this rule have read.
    groups: Vec<(ReadLog, HashMap<ReadKey, Desired>)>,
}

/// An immutable, compiled config repository at one revision.
pub struct Revision {
    pub id: String,
    pub fleet: FleetSpec,
    pub(super) templates: Templates,
    pub(super) validator: Validator,
    memo: Vec<Mutex<RuleMemo>>,
    verdicts: Mutex<HashMap<ConfigHash, Verdict>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Revision {
    pub(super) fn new(
        id: String,
        fleet: FleetSpec,
        templates: Templates,
        validator: Validator,
    ) -> Revision {
        let memo = fleet.rules.iter().map(|_| Mutex::default()).collect();
        Revision {
            id,
            fleet,
            templates,
            validator,
            memo,
            verdicts: Mutex::default(),
        }
    }

    pub fn templates(&self) -> impl Iterator<Item = &str> {
        self.templates.names()
    }

    /// Whether a render of this revision produced `hash` and it validated.
    pub fn rendered(&self, hash: &ConfigHash) -> bool {
        matches!(lock(&self.verdicts).get(hash), Some(Ok(())))
    }

    /// Every hash this revision's renders produced that validated.
    pub fn valid_hashes(&self) -> Vec<ConfigHash> {
        lock(&self.verdicts)
            .iter()
            .filter(|(_, verdict)| verdict.is_ok())
            .map(|(hash, _)| *hash)
            .collect()
    }

    /// The desired config of `agent`, rendered at most once per distinct set of read fields.
    pub fn desired(&self, agent: &Arc<AgentInfo>) -> Desired {
        self.memoised(agent, |desired, _| desired.clone())
            .unwrap_or(Desired::Unmanaged)
    }

    /// The desired config of `agent` (memoised as `desired` is) and whether its render read
    /// `agent.instance_uid`: such a config is one agent's own, not that of every agent with the
    /// same attributes. A failed render counts as having read everything.
    pub fn desired_reading_uid(&self, agent: &Arc<AgentInfo>) -> (Desired, bool) {
        self.memoised(agent, |desired, log| {
            (desired.clone(), log.reads_instance_uid())
        })
        .unwrap_or((Desired::Unmanaged, false))
    }

    /// Looks the agent up in the memo of its rule, rendering on a miss; None when no rule
    /// matches. `pick` reads the memoised entry and the fields its render read.
    fn memoised<R>(
        &self,
        agent: &Arc<AgentInfo>,
        pick: impl Fn(&Desired, &ReadLog) -> R,
    ) -> Option<R> {
        let (index, rule) = self.fleet.rule_for(&agent.attributes)?;
        {
            let memo = lock(&self.memo[index]);
            for (log, entries) in &memo.groups {
                if let Some(hit) = entries.get(&log.key_for(agent)) {
                    return Some(pick(hit, log));
                }
            }
        }
        let (desired, log) = self.render_uncached(rule, agent);
        let picked = pick(&desired, &log);
        let mut memo = lock(&self.memo[index]);
        let key = log.key_for(agent);
        match memo.groups.iter_mut().find(|(l, _)| *l == log) {
            Some((_, entries)) => {
                entries.insert(key, desired);
            }
            None => memo.groups.push((log, HashMap::from([(key, desired)]))),
        }
        Some(picked)
    }

    /// The rendered files of `agent`'s rule, whether or not they validate: what `diff` shows
    /// for a config that would be a render error. None when no rule matches or a template fails.
    pub fn rendered_text(&self, agent: &Arc<AgentInfo>) -> Option<BTreeMap<String, String>> {
        let (_, rule) = self.fleet.rule_for(&agent.attributes)?;
        let ctx = RenderContext {
            agent,
            vars: &rule.vars,
            rule_name: &rule.name,
        };
        self.render_files(rule, &ctx).ok().map(|(files, _)| files)
    }

    /// The desired config without the render memo: render, hash, and validate unless this
    /// revision has already validated that hash.
    pub fn desired_uncached(&self, agent: &Arc<AgentInfo>) -> Desired {
        match self.fleet.rule_for(&agent.attributes) {
            None => Desired::Unmanaged,
            Some((_, rule)) => self.render_uncached(rule, agent).0,
        }
    }

    fn render_uncached(&self, rule: &Rule, agent: &Arc<AgentInfo>) -> (Desired, ReadLog) {
        let ctx = RenderContext {
            agent,
            vars: &rule.vars,
            rule_name: &rule.name,
        };
        let (files, log) = match self.render_files(rule, &ctx) {
            Ok(rendered) => rendered,
            Err(d) => {
                let invalid = Desired::Invalid {
                    rule: rule.name.clone(),
                    diagnostics: Arc::new(vec![*d]),
                };
                // A failed render may not have read everything: key it on the whole agent.
                return (invalid, ReadLog::everything());
            }
        };
        let hash = config_hash(&files);
        let verdict = {
            let cached = lock(&self.verdicts).get(&hash).cloned();
            match cached {
                Some(v) => v,
                None => {
                    let v = self.validate(rule, &ctx, &files);
                    lock(&self.verdicts).insert(hash, v.clone());
                    v
                }
            }
        };
        let desired = match verdict {
            Ok(()) => Desired::Config(Arc::new(DesiredConfig {
                rule: rule.name.clone(),
                files: files
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::from(v)))
                    .collect(),
                hash,
            })),
            Err(diagnostics) => Desired::Invalid {
                rule: rule.name.clone(),
                diagnostics,
            },
        };
        (desired, log)
    }

    /// Renders every file of the rule, and what the renders read together.
    fn render_files(
        &self,
        rule: &Rule,
        ctx: &RenderContext,
    ) -> Result<(BTreeMap<String, String>, ReadLog), Box<Diagnostic>> {
        let mut log = ReadLog::default();
        let mut files = BTreeMap::new();
        for (file, template) in rule.output.files() {
            let (text, reads) = self.templates.render(&template, ctx, &rule.name)?;
            log.merge(&reads);
            files.insert(file, text);
        }
        Ok((files, log))
    }

    /// Parses every file, merges them as the OpAMP Supervisor does (file-name order, maps key by
    /// key, later wins) and validates the result; problems point at template lines.
    fn validate(
        &self,
        rule: &Rule,
        ctx: &RenderContext,
        files: &BTreeMap<String, String>,
    ) -> Verdict {
        let templates = rule.output.files();
        let mut merged = serde_json::Value::Null;
        let mut diagnostics = Vec::new();
        for (file, text) in files {
            let template = &templates[file];
            match serde_saphyr::from_str::<serde_json::Value>(text) {
                Ok(doc) => {
                    if merged.is_null() {
                        merged = doc;
                    } else if !doc.is_null() {
                        deep_merge(&mut merged, doc);
                    }
                }
                Err(e) => {
                    let d = yaml_error(file, &e);
                    let line = d.line.unwrap_or(1);
                    let message = format!(
                        "rendered `{file}` is not valid YAML: {} (rendered line {line})",
                        d.message
                    );
                    let at = RenderedAt {
                        template,
                        text,
                        line,
                        column: d.column,
                    };
                    diagnostics.push(self.at_template(rule, ctx, at, message));
                }
            }
        }
        if diagnostics.is_empty() {
            for problem in self.validator.validate(&merged) {
                // Point at the last file that defines the path: its value is the one that counts.
                let (template, text, at) = files
                    .iter()
                    .rev()
                    .find_map(|(file, text)| {
                        locate_path(text, &problem.path).map(|at| (&templates[file], text, at))
                    })
                    .unwrap_or_else(|| {
                        let (file, text) = files
                            .iter()
                            .next()
                            .expect("a rule renders at least one file");
                        (&templates[file], text, (1, 1))
                    });
                let at = RenderedAt {
                    template,
                    text,
                    line: at.0,
                    column: Some(at.1),
                };
                diagnostics.push(self.at_template(rule, ctx, at, problem.message));
            }
        }
        if let (true, Some(otelcol)) = (diagnostics.is_empty(), &self.validator.otelcol) {
            if let Err(message) = otelcol.validate(files) {
                let template = templates
                    .values()
                    .next()
                    .expect("a rule renders at least one file");
                diagnostics.push(
                    Diagnostic::error(format!(
                        "the Collector (`{} validate`) refuses this config: {message}",
                        otelcol
                            .path()
                            .file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default()
                    ))
                    .in_file(format!("{TEMPLATES_DIR}/{template}"))
                    .for_rule(&rule.name),
                );
            }
        }
        if diagnostics.is_empty() {
            Ok(())
        } else {
            Err(Arc::new(diagnostics))
        }
    }

    /// A diagnostic at the template line that produced line `line` of the rendered text.
    fn at_template(
        &self,
        rule: &Rule,
        ctx: &RenderContext,
        at: RenderedAt,
        message: String,
    ) -> Diagnostic {
        let mapped =
            self.templates
                .render_with_spans(at.template, ctx)
                .and_then(|(output, spans)| {
                    (output == at.text)
                        .then(|| template_line(&output, &spans, line_offset(&output, at.line)))?
                });
        let (file, line, column) = match mapped {
            Some((name, line)) => (name, line, None),
            None => (at.template.to_owned(), at.line, at.column),
        };
        Diagnostic::error(message)
            .in_file(format!("{TEMPLATES_DIR}/{file}"))
            .at(Some(line), column)
            .for_rule(&rule.name)
    }
}

/// A position in the rendered output of one template.
struct RenderedAt<'a> {
    template: &'a str,
    text: &'a str,
    line: usize,
    column: Option<usize>,
}

impl ReadLog {
    /// A log that keys on every field of the agent.
    pub fn everything() -> ReadLog {
        let mut log = ReadLog::default();
        log.mark_everything();
        log
    }
}
