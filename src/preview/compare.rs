//! The comparison: every attribute set's outcome at the base and at the head, and the groups of
//! sets that move from the same outcome to the same outcome. Renders go through
//! `Revision::desired` as the server's do, so each revision renders a distinct set of read
//! fields once and validates a distinct hash once.

use super::findings;
use super::unified::unified_diff;
use crate::diagnostics::Diagnostic;
use crate::opamp::uid::InstanceUid;
use crate::repo::hash::{config_hash, ConfigHash};
use crate::repo::rollout::cohort;
use crate::repo::{samples, AgentInfo, Desired, DesiredConfig, Revision, Snapshot};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The uid a live attribute set renders with: it stands for many agents, none of them in
/// particular.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Agents that look the same to a template: one attribute set and how many agents have it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgentSet {
    pub identifying: BTreeMap<String, String>,
    pub non_identifying: BTreeMap<String, String>,
    /// A sample agent's own uid. Live sets stand for many agents and have none.
    pub instance_uid: Option<String>,
    pub count: usize,
}

impl AgentSet {
    /// The sample agents of these snapshots, each once (a sample that did not change between
    /// base and head is one agent, not two).
    pub fn samples<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Vec<AgentSet> {
        let unique: BTreeSet<AgentSet> = snapshots
            .into_iter()
            .flat_map(|snapshot| samples::load(snapshot).0)
            .map(|sample| AgentSet {
                identifying: sample.agent.identifying,
                non_identifying: sample.agent.non_identifying,
                instance_uid: Some(sample.agent.instance_uid),
                count: 1,
            })
            .collect();
        unique.into_iter().collect()
    }

    fn agent(&self) -> Arc<AgentInfo> {
        Arc::new(AgentInfo::new(
            self.instance_uid.as_deref().unwrap_or(PLACEHOLDER_UID),
            self.identifying.clone(),
            self.non_identifying.clone(),
        ))
    }
}

/// One side of the comparison as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    /// The ref as given (`origin/main`), or `working tree`.
    #[serde(rename = "ref")]
    pub name: String,
    /// The commit the ref resolved to; none for the working tree.
    pub commit: Option<String>,
    pub compiles: bool,
}

impl Side {
    /// `origin/main (3f2a1c9d0b1e)`, or `working tree`.
    pub fn label(&self) -> String {
        match &self.commit {
            Some(commit) => format!("{} ({})", self.name, short(commit)),
            None => self.name.clone(),
        }
    }
}

/// The first 12 hex digits of a hash or commit id, as the reports show them.
pub fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

impl Group {
    /// `rule a → rule b`, `rule a` when it stays, `unmanaged → rule b`.
    pub fn rules_text(&self) -> String {
        let name = |rule: &Option<String>| match rule {
            Some(rule) => format!("rule {rule}"),
            None => "unmanaged".to_owned(),
        };
        if self.rule_before == self.rule_after {
            name(&self.rule_after)
        } else {
            format!("{} → {}", name(&self.rule_before), name(&self.rule_after))
        }
    }

    /// `hash 1a2b… → 3c4d…` with short hashes; `render error` or `no config` for a side
    /// without a valid config.
    pub fn hashes_text(&self) -> String {
        if self.per_agent {
            return "hashes differ per agent".to_owned();
        }
        let name = |hash: &Option<String>, rule: &Option<String>| match (hash, rule) {
            (Some(hash), _) => short(hash).to_owned(),
            (None, Some(_)) => "render error".to_owned(),
            (None, None) => "no config".to_owned(),
        };
        format!(
            "hash {} → {}",
            name(&self.hash_before, &self.rule_before),
            name(&self.hash_after, &self.rule_after)
        )
    }
}

/// A side and its compiled revision (none when it does not compile).
pub struct Version<'a> {
    pub side: Side,
    pub revision: Option<&'a Revision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Agents compared, the sum of the sets' counts.
    pub agents: usize,
    pub moved: usize,
    pub unchanged: usize,
    /// Groups listed.
    pub groups: usize,
    /// Distinct attribute sets compared (each rendered once per side).
    pub sets: usize,
}

/// Agents that move from the same base outcome to the same head outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub count: usize,
    pub rule_before: Option<String>,
    pub rule_after: Option<String>,
    /// Absent when the side has no valid config, or when configs differ per agent.
    pub hash_before: Option<String>,
    pub hash_after: Option<String>,
    /// Config-file name → unified diff, secret-looking values redacted; unchanged files left out.
    pub files: BTreeMap<String, String>,
    pub findings: Vec<String>,
    /// Some agent of the group is in the first wave of its scope's rollout at the head: the
    /// canary selector when the plan has one, else the first percentage wave by its uid's
    /// cohort (a live set has no uid, so only a canary selector places it).
    pub canary: bool,
    /// Distinct attribute sets in the group.
    pub sets: usize,
    /// The attributes every set of the group has, with the same value.
    pub attributes: BTreeMap<String, String>,
    /// The configs read `agent.instance_uid`: the group was judged for a placeholder uid.
    #[serde(skip)]
    pub per_agent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    pub base: Side,
    pub head: Side,
    pub summary: Summary,
    pub groups: Vec<Group>,
}

/// What one revision gives one attribute set.
#[derive(Debug, Clone)]
enum Outcome {
    NotCompiled,
    Unmanaged,
    Config(Arc<DesiredConfig>),
    /// A render error: the agents keep what they run. `files` is the rendered text when the
    /// templates rendered and only validation failed.
    Invalid {
        rule: String,
        diagnostics: Arc<Vec<Diagnostic>>,
        files: Option<BTreeMap<String, String>>,
    },
}

/// Outcomes that are the same for an agent: it moves exactly when its keys differ.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    NotCompiled,
    Unmanaged,
    Config(ConfigHash),
    Invalid { rule: String, render: ConfigHash },
}

impl Outcome {
    fn of(revision: Option<&Revision>, agent: &Arc<AgentInfo>) -> (Outcome, bool) {
        let Some(revision) = revision else {
            return (Outcome::NotCompiled, false);
        };
        match revision.desired_reading_uid(agent) {
            (Desired::Unmanaged, _) => (Outcome::Unmanaged, false),
            (Desired::Config(config), reads_uid) => (Outcome::Config(config), reads_uid),
            // A failed render counts as having read everything: that says nothing about the uid.
            (Desired::Invalid { rule, diagnostics }, _) => (
                Outcome::Invalid {
                    rule,
                    diagnostics,
                    files: revision.rendered_text(agent),
                },
                false,
            ),
        }
    }

    fn key(&self) -> Key {
        match self {
            Outcome::NotCompiled => Key::NotCompiled,
            Outcome::Unmanaged => Key::Unmanaged,
            Outcome::Config(config) => Key::Config(config.hash),
            Outcome::Invalid {
                rule,
                diagnostics,
                files,
            } => {
                let render = match files {
                    Some(files) => config_hash(files),
                    None => {
                        let text: Vec<String> = diagnostics.iter().map(Diagnostic::human).collect();
                        config_hash(&BTreeMap::from([(String::new(), text.join("\n"))]))
                    }
                };
                Key::Invalid {
                    rule: rule.clone(),
                    render,
                }
            }
        }
    }

    fn rule(&self) -> Option<&str> {
        match self {
            Outcome::NotCompiled | Outcome::Unmanaged => None,
            Outcome::Config(config) => Some(&config.rule),
            Outcome::Invalid { rule, .. } => Some(rule),
        }
    }

    fn hash(&self) -> Option<String> {
        match self {
            Outcome::Config(config) => Some(config.hash_hex()),
            _ => None,
        }
    }

    /// The rendered files, when there are any.
    fn texts(&self) -> Option<BTreeMap<String, String>> {
        match self {
            Outcome::Config(config) => Some(
                config
                    .files
                    .iter()
                    .map(|(name, body)| (name.clone(), String::from_utf8_lossy(body).into_owned()))
                    .collect(),
            ),
            Outcome::Invalid { files, .. } => files.clone(),
            Outcome::NotCompiled | Outcome::Unmanaged => None,
        }
    }
}

/// Whether an agent with this outcome at `revision` is in the first wave of its scope's
/// rollout there (wave 0 with a canary selector, else wave 1).
fn leads_rollout(
    revision: Option<&Revision>,
    outcome: &Outcome,
    agent: &AgentInfo,
    uid: Option<&str>,
) -> bool {
    let (Some(revision), Outcome::Config(config)) = (revision, outcome) else {
        return false;
    };
    let fleet = &revision.fleet;
    let Some(rule) = fleet.rules.iter().find(|r| r.name == config.rule) else {
        return false;
    };
    let Some((_, spec)) = rule.rollout_in(fleet) else {
        return false;
    };
    if spec.canary.is_some() {
        return spec.wave_of(0, &agent.attributes) == 0;
    }
    let Some(uid) = uid.and_then(|u| u.parse::<InstanceUid>().ok()) else {
        return false;
    };
    spec.wave_of(cohort(uid.as_bytes()), &agent.attributes) == 1
}

/// Sets that share a pair of outcomes; the first set's outcomes stand for all of them.
struct Pending {
    count: usize,
    sets: usize,
    canary: bool,
    attributes: BTreeMap<String, String>,
    before: Outcome,
    after: Outcome,
}

/// Compares what `sets` run at `base` and at `head`, with `context` lines around each change.
pub fn compare(base: &Version, head: &Version, sets: &[AgentSet], context: usize) -> Comparison {
    // (base key, head key, whether the configs differ per agent) → the sets that share them.
    let mut pending: BTreeMap<(Key, Key, bool), Pending> = BTreeMap::new();
    for set in sets {
        let agent = set.agent();
        let (before, before_uid) = Outcome::of(base.revision, &agent);
        let (after, after_uid) = Outcome::of(head.revision, &agent);
        let per_agent = set.instance_uid.is_none() && (before_uid || after_uid);
        let key = (before.key(), after.key(), per_agent);
        let canary = leads_rollout(head.revision, &after, &agent, set.instance_uid.as_deref());
        match pending.get_mut(&key) {
            Some(group) => {
                group.count += set.count;
                group.sets += 1;
                group.canary |= canary;
                group
                    .attributes
                    .retain(|k, v| agent.attributes.get(k) == Some(v));
            }
            None => {
                pending.insert(
                    key,
                    Pending {
                        count: set.count,
                        sets: 1,
                        canary,
                        attributes: agent.attributes.clone(),
                        before,
                        after,
                    },
                );
            }
        }
    }

    let agents = sets.iter().map(|s| s.count).sum();
    let mut moved = 0;
    let mut groups = Vec::new();
    for ((before_key, after_key, per_agent), group) in pending {
        let moves = before_key != after_key;
        if moves {
            moved += group.count;
        }
        // A config that differs per agent cannot be called unchanged from one render of it.
        if moves || per_agent {
            groups.push((moves, describe(group, moves, per_agent, context)));
        }
    }
    groups.sort_by(|(a_moves, a), (b_moves, b)| {
        (
            Reverse(*a_moves),
            Reverse(a.count),
            &a.rule_after,
            &a.rule_before,
        )
            .cmp(&(
                Reverse(*b_moves),
                Reverse(b.count),
                &b.rule_after,
                &b.rule_before,
            ))
    });
    let groups: Vec<Group> = groups.into_iter().map(|(_, g)| g).collect();
    Comparison {
        base: base.side.clone(),
        head: head.side.clone(),
        summary: Summary {
            agents,
            moved,
            unchanged: agents - moved,
            groups: groups.len(),
            sets: sets.len(),
        },
        groups,
    }
}

fn describe(group: Pending, moves: bool, per_agent: bool, context: usize) -> Group {
    let (before, after) = (group.before.texts(), group.after.texts());
    let empty = BTreeMap::new();
    let (before_files, after_files) = (
        before.as_ref().unwrap_or(&empty),
        after.as_ref().unwrap_or(&empty),
    );
    let names: BTreeSet<&String> = before_files.keys().chain(after_files.keys()).collect();
    let files = names
        .into_iter()
        .filter_map(|name| {
            let (old, new) = (before_files.get(name), after_files.get(name));
            let diff = unified_diff(
                name,
                old.map(String::as_str).unwrap_or_default(),
                new.map(String::as_str).unwrap_or_default(),
                context,
            );
            (!diff.is_empty()).then(|| (name.clone(), diff))
        })
        .collect();

    let mut notes = Vec::new();
    if matches!(group.before, Outcome::NotCompiled) {
        notes.push(
            "the base does not compile: what these agents ran before is unknown, so they count as moving"
                .to_owned(),
        );
    }
    if per_agent {
        let rule = group.after.rule().or(group.before.rule()).unwrap_or("?");
        notes.push(format!(
            "cannot be judged per attribute set: rule `{rule}` renders a template that reads `agent.instance_uid`, so every agent gets its own config; rendered for the placeholder uid {PLACEHOLDER_UID}, the config {}",
            if moves { "changes" } else { "does not change" }
        ));
    }
    notes.extend(outcome_findings(&group.before, &group.after));
    let parsed =
        |texts: &Option<BTreeMap<String, String>>| texts.as_ref().and_then(findings::merged);
    notes.extend(findings::config_changes(
        parsed(&before).as_ref(),
        parsed(&after).as_ref(),
    ));

    let per_agent_hash = |outcome: &Outcome| outcome.hash().filter(|_| !per_agent);
    Group {
        count: group.count,
        rule_before: group.before.rule().map(str::to_owned),
        rule_after: group.after.rule().map(str::to_owned),
        hash_before: per_agent_hash(&group.before),
        hash_after: per_agent_hash(&group.after),
        files,
        findings: notes,
        canary: group.canary,
        sets: group.sets,
        attributes: group.attributes,
        per_agent,
    }
}

/// Findings about who manages the agents and whether their configs render.
fn outcome_findings(before: &Outcome, after: &Outcome) -> Vec<String> {
    let mut found = Vec::new();
    match (before, after) {
        (Outcome::Unmanaged, _) if after.rule().is_some() => found.push(format!(
            "newly managed: rule `{}` matches, and these agents get a remote config for the first time",
            after.rule().unwrap_or_default()
        )),
        (_, Outcome::Unmanaged) => found.push(match before.rule() {
            Some(rule) => format!(
                "becomes unmanaged: no rule matches any more (was rule `{rule}`); these agents keep the config they run and get no further updates"
            ),
            None => "unmanaged: no rule matches these agents at the head".to_owned(),
        }),
        _ => {
            if let (Some(a), Some(b)) = (before.rule(), after.rule()) {
                if a != b {
                    found.push(format!("moves from rule `{a}` to rule `{b}`"));
                }
            }
        }
    }
    if let Outcome::Invalid { diagnostics, .. } = after {
        found.extend(diagnostics.iter().map(|d| {
            format!(
                "render error at the head (these agents keep what they run): {}",
                d.human()
            )
        }));
    } else if let (Outcome::Invalid { .. }, Outcome::Config(_)) = (before, after) {
        found.push("a render error at the base; renders and validates at the head".to_owned());
    }
    found
}
