//! Staged rollouts at run time: which waves of each scope are admitted under the current
//! revision, and when the next one is. Level-triggered: a periodic tick tallies what the agents
//! report per scope and wave, and moves each scope's plan on (soak, `max_failed`, pauses,
//! freeze windows). At start, or with a new revision, the admitted waves are recomputed from the
//! agents' reports; only the operator's decisions (pause, resume, promote) are kept, in the
//! fleet store when there is one, and adopted again at start or when another replica announces
//! one. Per message, admission is a cohort comparison against
//! the admitted wave count that the tick keeps; the tick is the only pass over the fleet.

use crate::opamp::agent_caps;
use crate::opamp::session::{sync_state, AgentState, SyncState};
use crate::opamp::uid::InstanceUid;
use crate::repo::fleet::FleetSpec;
use crate::repo::rollout::RolloutSpec;
use crate::repo::AgentInfo;
use crate::store::StoredRollout;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// After a start, waves are inferred from the registry once no new agent came for this long...
pub const SETTLE_QUIET: std::time::Duration = std::time::Duration::from_secs(2);
/// ...or, at the latest, after the heartbeat interval, capped at this.
pub const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the tick runs: the granularity of soaks and admissions.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    None,
    Progressing,
    Soaking,
    Halted,
    Paused,
    Frozen,
    Complete,
}

impl RolloutState {
    pub const ALL: [RolloutState; 7] = [
        RolloutState::None,
        RolloutState::Progressing,
        RolloutState::Soaking,
        RolloutState::Halted,
        RolloutState::Paused,
        RolloutState::Frozen,
        RolloutState::Complete,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RolloutState::None => "none",
            RolloutState::Progressing => "progressing",
            RolloutState::Soaking => "soaking",
            RolloutState::Halted => "halted",
            RolloutState::Paused => "paused",
            RolloutState::Frozen => "frozen",
            RolloutState::Complete => "complete",
        }
    }
}

/// Where one agent stands in its scope's rollout, as the tick sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// At the new hash, applied (and healthy when it reports health).
    Applied,
    /// At the new hash and FAILED, or unhealthy after applying it: the message.
    Failed(String),
    /// Not there yet (held, offered or applying).
    Moving,
}

/// Runs the rollout tick until shutdown: every [`TICK`], and at once when a revision arrives.
pub async fn drive(fleet: Arc<super::Fleet>, shutdown: tokio_util::sync::CancellationToken) {
    let mut revisions = fleet.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = revisions.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
        fleet.rollout_tick();
    }
}

/// An agent's place in a rollout: its scope and wave under the revision's plan.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    pub scope: &'a str,
    pub spec: &'a Arc<RolloutSpec>,
    pub wave: usize,
}

/// The scope and wave of an agent whose desired config comes from `rule`.
pub fn placement<'a>(
    fleet: &'a FleetSpec,
    rule: &str,
    uid: &InstanceUid,
    info: &AgentInfo,
) -> Option<Placement<'a>> {
    let (scope, spec, wave) = fleet.placement(rule, uid.as_bytes(), &info.attributes)?;
    Some(Placement { scope, spec, wave })
}

/// An agent that runs no config from this server yet: its full state reports an empty hash.
pub fn runs_nothing(state: &AgentState) -> bool {
    state.has(agent_caps::REPORTS_REMOTE_CONFIG)
        && state
            .remote_config_status
            .as_ref()
            .is_some_and(|s| s.last_remote_config_hash.is_empty())
}

/// What the tick counts of one agent with a desired config of hash `hash`.
pub fn standing(state: &AgentState, hash: &[u8; 32]) -> Standing {
    match sync_state(state, hash, None) {
        SyncState::Applied | SyncState::Sent => match &state.health {
            Some(h) if !h.healthy => Standing::Failed(if h.last_error.is_empty() {
                "unhealthy after applying the config".into()
            } else {
                format!("unhealthy after applying the config: {}", h.last_error)
            }),
            _ => Standing::Applied,
        },
        SyncState::Failed => Standing::Failed(
            state
                .remote_config_status
                .as_ref()
                .map(|s| s.error_message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "the agent reported FAILED".into()),
        ),
        _ => Standing::Moving,
    }
}

/// One agent as the tick sees it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub uid: InstanceUid,
    pub wave: usize,
    pub standing: Standing,
    /// It reports the new hash (any status): its wave was admitted.
    pub moved: bool,
    /// Connected and not stale: it can keep its wave from completing.
    pub active: bool,
    /// Held by another replica (read from the shared store): shown in the view, never counted
    /// in this replica's plan, which covers the agents it holds.
    pub remote: bool,
}

/// Per-wave tallies of these agents.
fn tally(observed: &[&Observed], waves: usize) -> Vec<WaveTally> {
    let last = waves - 1;
    let mut tallies = vec![WaveTally::default(); waves];
    for o in observed {
        let t = &mut tallies[o.wave.min(last)];
        t.agents += 1;
        match &o.standing {
            Standing::Applied => t.applied += 1,
            Standing::Failed(_) => t.failed += 1,
            Standing::Moving => t.moving += 1,
        }
        if o.moved {
            t.moved += 1;
        }
        if o.active && o.standing != Standing::Applied {
            t.blocking += 1;
        }
    }
    tallies
}

/// Per-wave tallies of one scope.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct WaveTally {
    pub agents: usize,
    pub applied: usize,
    pub failed: usize,
    /// Not at the new hash yet (held when the wave is not admitted).
    pub moving: usize,
    #[serde(skip)]
    pub moved: usize,
    /// Active agents not applied: the wave is complete when this is 0.
    #[serde(skip)]
    pub blocking: usize,
}

/// The in-memory run of one scope under one revision.
#[derive(Debug, Clone)]
struct Run {
    revision: String,
    /// Waves `0..admitted` are admitted.
    admitted: usize,
    /// How many waves the plan has (the canary slot included).
    waves: usize,
    /// The admitted waves whose agents were pushed their config.
    pushed: usize,
    /// When every admitted wave was first seen complete: the soak timer.
    complete_since: Option<Instant>,
    /// Whether an admitted wave had agents (an empty prefix needs no soak).
    soak_needed: bool,
    operator_paused: bool,
    /// The resumes seen so far (a stored decision with more forgives this replica's failures).
    resumes: u32,
    /// Agents whose failures an operator's resume forgave.
    forgiven: HashSet<InstanceUid>,
    /// The failures counted by the last tick (what a resume forgives).
    failed_now: Vec<InstanceUid>,
    state: RolloutState,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailedAgent {
    pub instance_uid: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WaveView {
    pub index: usize,
    /// "canary" or the wave's cumulative percentage ("25 %").
    pub label: String,
    pub admitted: bool,
    #[serde(flatten)]
    pub tally: WaveTally,
}

/// One scope's rollout, as `GET /api/rollout` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub scope: String,
    pub revision: String,
    pub state: RolloutState,
    /// The highest admitted wave (0: the canary).
    pub wave: usize,
    pub waves: Vec<WaveView>,
    pub admitted: usize,
    pub applied: usize,
    pub failed: usize,
    pub waiting: usize,
    pub failed_agents: Vec<FailedAgent>,
}

/// An operator's action on rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Promote,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("no rollout with scope `{0}` in the current revision")]
    UnknownScope(String),
    #[error("no rollout in the current revision")]
    NoRollout,
    #[error("{0}")]
    Conflict(String),
}

/// Every scope's run, kept per replica in memory, and the operator's decisions by revision and
/// scope (lock order: `runs`, then `decisions`).
#[derive(Default)]
pub struct Rollouts {
    runs: RwLock<HashMap<String, Run>>,
    views: RwLock<Vec<RolloutView>>,
    decisions: RwLock<HashMap<(String, String), StoredRollout>>,
}

/// A run takes on a stored decision of its revision and scope.
fn adopt(run: &mut Run, decision: &StoredRollout) {
    run.operator_paused = decision.paused;
    run.admitted = run.admitted.max(decision.admitted as usize);
    if decision.resumes > run.resumes {
        let failed = std::mem::take(&mut run.failed_now);
        run.forgiven.extend(failed);
        run.resumes = decision.resumes;
    }
    run.forgiven.extend(
        decision
            .forgiven
            .iter()
            .filter_map(|u| u.parse::<InstanceUid>().ok()),
    );
    if decision.admitted as usize > run.pushed {
        run.complete_since = None;
    }
}

/// The failures shown and counted at most per scope.
const MAX_FAILED_SHOWN: usize = 100;

impl Rollouts {
    /// Whether an agent at `placement` is admitted under `revision`. `fresh`: it runs no config
    /// from this server yet, and is admitted unless the rollout is halted or paused.
    pub fn admits(&self, revision: &str, placement: &Placement<'_>, fresh: bool) -> bool {
        let runs = self.runs.read().unwrap_or_else(|e| e.into_inner());
        let any_run = runs.get(placement.scope);
        let run = any_run.filter(|r| r.revision == revision);
        if fresh {
            let halted = run.is_some_and(|r| r.state == RolloutState::Halted);
            let paused = placement.spec.paused || any_run.is_some_and(|r| r.operator_paused);
            return !halted && !paused;
        }
        run.is_some_and(|r| placement.wave < r.admitted)
    }

    /// The last tick's view of every scope.
    pub fn views(&self) -> Vec<RolloutView> {
        self.views.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves every scope on from what the agents report. `scopes`: each scope of the revision
    /// with its plan and the agents observed in it. Returns, per scope, the waves newly
    /// admitted (their agents are to be pushed now).
    pub fn advance(
        &self,
        revision: &str,
        scopes: BTreeMap<String, (Arc<RolloutSpec>, Vec<Observed>)>,
        now: Instant,
        wall: chrono::DateTime<chrono::Utc>,
    ) -> Vec<InstanceUid> {
        let mut runs = self.runs.write().unwrap_or_else(|e| e.into_inner());
        let decisions = self.decisions.read().unwrap_or_else(|e| e.into_inner());
        runs.retain(|scope, _| scopes.contains_key(scope));
        let mut to_push = Vec::new();
        let mut views = Vec::new();
        for (scope, (spec, all)) in scopes {
            let shown = tally(&all.iter().collect::<Vec<_>>(), spec.wave_count());
            let observed: Vec<Observed> = all.iter().filter(|o| !o.remote).cloned().collect();
            let tallies = tally(&observed.iter().collect::<Vec<_>>(), spec.wave_count());
            let first_seen = !runs.contains_key(&scope);
            let run = runs.entry(scope.clone()).or_insert_with(|| Run {
                revision: String::new(),
                admitted: 0,
                waves: 0,
                pushed: 0,
                complete_since: None,
                soak_needed: false,
                operator_paused: false,
                resumes: 0,
                forgiven: HashSet::new(),
                failed_now: Vec::new(),
                state: RolloutState::None,
            });
            if run.revision != revision {
                *run = Run {
                    revision: revision.to_owned(),
                    operator_paused: run.operator_paused,
                    ..resumed_run(revision, &tallies)
                };
                match decisions.get(&(revision.to_owned(), scope.clone())) {
                    Some(decision) => adopt(run, decision),
                    // A pause outlives its revision: after a start, the scope's latest one.
                    None if first_seen => {
                        if let Some(latest) = decisions
                            .values()
                            .filter(|d| d.scope == scope)
                            .max_by_key(|d| d.at)
                        {
                            run.operator_paused = latest.paused;
                        }
                    }
                    None => {}
                }
            }
            run.waves = tallies.len();
            let before = run.pushed;
            step(run, &spec, &tallies, &observed, now, wall);
            run.failed_now = observed
                .iter()
                .filter(|o| o.wave < run.admitted && matches!(o.standing, Standing::Failed(_)))
                .filter(|o| !run.forgiven.contains(&o.uid))
                .map(|o| o.uid)
                .collect();
            for o in &observed {
                if o.wave >= before && o.wave < run.admitted && o.standing == Standing::Moving {
                    to_push.push(o.uid);
                }
            }
            run.pushed = run.admitted;
            views.push(view(&scope, revision, run, &spec, shown, &all));
        }
        *self.views.write().unwrap_or_else(|e| e.into_inner()) = views;
        to_push
    }

    /// Carries out an operator's action on one scope, or every scope when `scope` is `None`.
    /// Returns the scopes acted on.
    pub fn act(
        &self,
        action: RolloutAction,
        scope: Option<&str>,
    ) -> Result<Vec<String>, RolloutError> {
        let mut runs = self.runs.write().unwrap_or_else(|e| e.into_inner());
        if runs.is_empty() {
            return Err(RolloutError::NoRollout);
        }
        let names: Vec<String> = match scope {
            Some(s) if runs.contains_key(s) => vec![s.to_owned()],
            Some(s) => return Err(RolloutError::UnknownScope(s.to_owned())),
            None => runs.keys().cloned().collect(),
        };
        for name in &names {
            let run = runs.get_mut(name).expect("named from the map");
            match action {
                RolloutAction::Pause => run.operator_paused = true,
                RolloutAction::Resume => {
                    run.operator_paused = false;
                    run.resumes += 1;
                    let failed = std::mem::take(&mut run.failed_now);
                    run.forgiven.extend(failed);
                }
                RolloutAction::Promote => {
                    if run.state == RolloutState::Complete || run.admitted >= run.waves {
                        if scope.is_some() {
                            return Err(RolloutError::Conflict(format!(
                                "the rollout of scope `{name}` is complete: there is no next wave"
                            )));
                        }
                        continue;
                    }
                    run.admitted += 1;
                    run.complete_since = None;
                }
            }
        }
        Ok(names)
    }
}

impl Rollouts {
    /// The decisions the runs of `scopes` now stand for, remembered as this replica's latest
    /// (to be stored and announced).
    pub fn decided(
        &self,
        scopes: &[String],
        actor: Option<&str>,
        replica_id: &str,
    ) -> Vec<StoredRollout> {
        let runs = self.runs.read().unwrap_or_else(|e| e.into_inner());
        let mut decisions = self.decisions.write().unwrap_or_else(|e| e.into_inner());
        let at = std::time::SystemTime::now();
        let mut out = Vec::new();
        for scope in scopes {
            let Some(run) = runs.get(scope) else {
                continue;
            };
            let mut forgiven: Vec<String> = run.forgiven.iter().map(|u| u.to_string()).collect();
            forgiven.sort();
            let decision = StoredRollout {
                revision: run.revision.clone(),
                scope: scope.clone(),
                paused: run.operator_paused,
                admitted: run.admitted as u32,
                resumes: run.resumes,
                forgiven,
                actor: actor.map(str::to_owned),
                replica_id: replica_id.to_owned(),
                at,
            };
            decisions.insert((run.revision.clone(), scope.clone()), decision.clone());
            out.push(decision);
        }
        out
    }

    /// Takes on stored decisions (oldest first): at start, or when another replica announced
    /// one. A decision older than the one this replica holds for its revision and scope is
    /// ignored (it may not have been written yet).
    pub fn adopt(&self, stored: Vec<StoredRollout>) {
        let mut runs = self.runs.write().unwrap_or_else(|e| e.into_inner());
        let mut decisions = self.decisions.write().unwrap_or_else(|e| e.into_inner());
        for decision in stored {
            let key = (decision.revision.clone(), decision.scope.clone());
            if decisions.get(&key).is_some_and(|d| d.at > decision.at) {
                continue;
            }
            if let Some(run) = runs.get_mut(&decision.scope) {
                if run.revision == decision.revision {
                    adopt(run, &decision);
                } else if !decisions.contains_key(&(run.revision.clone(), decision.scope.clone())) {
                    run.operator_paused = decision.paused;
                }
            }
            decisions.insert(key, decision);
        }
    }
}

/// The run of a scope when this replica first sees the revision: the admitted waves follow from
/// the reports. The first incomplete wave is admitted when some of its agents moved already;
/// otherwise it waits behind the waves before it (with a new soak when any had agents).
fn resumed_run(revision: &str, tallies: &[WaveTally]) -> Run {
    let first_incomplete = tallies.iter().position(|t| t.blocking > 0);
    let admitted = match first_incomplete {
        None => tallies.len(),
        Some(k) if tallies[k].moved > 0 => k + 1,
        Some(k) => k,
    };
    Run {
        revision: revision.to_owned(),
        admitted,
        waves: tallies.len(),
        pushed: 0,
        complete_since: None,
        soak_needed: tallies[..admitted.min(tallies.len())]
            .iter()
            .any(|t| t.agents > 0),
        operator_paused: false,
        resumes: 0,
        forgiven: HashSet::new(),
        failed_now: Vec::new(),
        state: RolloutState::Progressing,
    }
}

/// One tick of one scope's plan: admit as many waves as the plan allows now.
fn step(
    run: &mut Run,
    spec: &RolloutSpec,
    tallies: &[WaveTally],
    observed: &[Observed],
    now: Instant,
    wall: chrono::DateTime<chrono::Utc>,
) {
    let total: usize = tallies.iter().map(|t| t.agents).sum();
    // Bounded by the number of waves: each pass admits one or stops.
    for _ in 0..=tallies.len() {
        let admitted = run.admitted.min(tallies.len());
        let admitted_agents: usize = tallies[..admitted].iter().map(|t| t.agents).sum();
        let failed = observed
            .iter()
            .filter(|o| o.wave < admitted && matches!(o.standing, Standing::Failed(_)))
            .filter(|o| !run.forgiven.contains(&o.uid))
            .count();
        let complete = tallies[..admitted].iter().all(|t| t.blocking == 0);
        if failed > 0 && spec.max_failed.reached(failed, admitted_agents) {
            run.state = RolloutState::Halted;
            return;
        }
        if admitted >= tallies.len() {
            run.state = if total == 0 {
                RolloutState::None
            } else if complete {
                RolloutState::Complete
            } else {
                RolloutState::Progressing
            };
            return;
        }
        if !complete {
            run.complete_since = None;
            run.state = RolloutState::Progressing;
            return;
        }
        if spec.paused || run.operator_paused {
            run.state = RolloutState::Paused;
            return;
        }
        if spec.frozen_at(wall) {
            run.state = RolloutState::Frozen;
            return;
        }
        let since = *run.complete_since.get_or_insert(now);
        if run.soak_needed && now.duration_since(since) < spec.soak {
            run.state = RolloutState::Soaking;
            return;
        }
        let next = &tallies[admitted];
        run.admitted = admitted + 1;
        if next.agents > 0 {
            run.soak_needed = true;
            run.complete_since = None;
        }
        run.state = RolloutState::Progressing;
    }
}

fn view(
    scope: &str,
    revision: &str,
    run: &Run,
    spec: &RolloutSpec,
    tallies: Vec<WaveTally>,
    observed: &[Observed],
) -> RolloutView {
    let admitted_waves = run.admitted.min(tallies.len());
    let mut failed_agents: Vec<FailedAgent> = observed
        .iter()
        .filter(|o| o.wave < admitted_waves && !run.forgiven.contains(&o.uid))
        .filter_map(|o| match &o.standing {
            Standing::Failed(message) => Some(FailedAgent {
                instance_uid: o.uid.to_string(),
                message: message.clone(),
            }),
            _ => None,
        })
        .collect();
    failed_agents.sort_by(|a, b| a.instance_uid.cmp(&b.instance_uid));
    let failed = failed_agents.len();
    failed_agents.truncate(MAX_FAILED_SHOWN);
    let sum = |range: std::ops::Range<usize>, f: fn(&WaveTally) -> usize| -> usize {
        tallies[range].iter().map(f).sum()
    };
    RolloutView {
        scope: scope.to_owned(),
        revision: revision.to_owned(),
        state: run.state,
        wave: admitted_waves.saturating_sub(1),
        admitted: sum(0..admitted_waves, |t| t.agents),
        applied: sum(0..tallies.len(), |t| t.applied),
        failed,
        waiting: sum(admitted_waves..tallies.len(), |t| t.moving),
        failed_agents,
        waves: tallies
            .into_iter()
            .enumerate()
            .map(|(index, tally)| WaveView {
                index,
                label: spec.wave_label(index),
                admitted: index < admitted_waves,
                tally,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::fleet::FleetSpec;
    use std::time::Duration;

    fn spec(rollout: &str) -> Arc<RolloutSpec> {
        FleetSpec::parse(&format!(
            "rules:\n  - name: all\n    match: {{}}\n    template: t.j2\nrollout: {rollout}\n"
        ))
        .unwrap()
        .rollout
        .unwrap()
    }

    fn agent(n: u8, wave: usize, standing: Standing) -> Observed {
        let moved = standing != Standing::Moving;
        Observed {
            uid: InstanceUid::from_bytes([n; 16]),
            wave,
            standing,
            moved,
            active: true,
            remote: false,
        }
    }

    fn tick(
        r: &Rollouts,
        spec: &Arc<RolloutSpec>,
        agents: Vec<Observed>,
        now: Instant,
    ) -> (RolloutView, Vec<InstanceUid>) {
        let pushed = r.advance(
            "rev",
            BTreeMap::from([("fleet".to_string(), (spec.clone(), agents))]),
            now,
            chrono::Utc::now(),
        );
        (r.views().remove(0), pushed)
    }

    #[test]
    fn the_first_wave_is_admitted_and_the_next_waits_for_completion_and_soak() {
        let s = spec("{ waves: [50, 100], soak: 2s }");
        let r = Rollouts::default();
        let t0 = Instant::now();
        let (v, pushed) = tick(
            &r,
            &s,
            vec![agent(1, 1, Standing::Moving), agent(2, 2, Standing::Moving)],
            t0,
        );
        assert_eq!(v.state, RolloutState::Progressing);
        assert_eq!((v.wave, v.waiting), (1, 1));
        assert_eq!(pushed, vec![InstanceUid::from_bytes([1; 16])]);
        let applied = || {
            vec![
                agent(1, 1, Standing::Applied),
                agent(2, 2, Standing::Moving),
            ]
        };
        let (v, pushed) = tick(&r, &s, applied(), t0 + Duration::from_secs(1));
        assert_eq!(v.state, RolloutState::Soaking);
        assert!(pushed.is_empty());
        let (v, _) = tick(&r, &s, applied(), t0 + Duration::from_millis(2900));
        assert_eq!(v.state, RolloutState::Soaking);
        let (v, pushed) = tick(&r, &s, applied(), t0 + Duration::from_secs(4));
        assert_eq!((v.state, v.wave), (RolloutState::Progressing, 2));
        assert_eq!(pushed, vec![InstanceUid::from_bytes([2; 16])]);
        let (v, _) = tick(
            &r,
            &s,
            vec![
                agent(1, 1, Standing::Applied),
                agent(2, 2, Standing::Applied),
            ],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(v.state, RolloutState::Complete);
    }

    #[test]
    fn empty_waves_complete_at_once_without_soak() {
        let s = spec("{ canary: { match: { env: staging } }, waves: [5, 25, 100], soak: 1h }");
        let r = Rollouts::default();
        let (v, _) = tick(&r, &s, vec![agent(1, 3, Standing::Moving)], Instant::now());
        assert_eq!(v.wave, 3, "canary, 5 % and 25 % are empty");
        assert_eq!(v.state, RolloutState::Progressing);
    }

    #[test]
    fn max_failed_halts_and_resume_forgives() {
        let s = spec("{ waves: [50, 100], max_failed: 1 }");
        let r = Rollouts::default();
        let now = Instant::now();
        let failing = || {
            vec![
                agent(1, 1, Standing::Failed("bad".into())),
                agent(2, 2, Standing::Moving),
            ]
        };
        let (v, _) = tick(&r, &s, failing(), now);
        assert_eq!(v.state, RolloutState::Halted);
        assert_eq!(v.failed_agents[0].message, "bad");
        let (v, pushed) = tick(&r, &s, failing(), now);
        assert_eq!(v.state, RolloutState::Halted);
        assert!(pushed.is_empty());
        r.act(RolloutAction::Resume, None).unwrap();
        let (v, _) = tick(&r, &s, failing(), now);
        // Forgiven, but the failed agent still keeps its wave from completing.
        assert_eq!((v.state, v.failed), (RolloutState::Progressing, 0));
    }

    #[test]
    fn a_percentage_of_the_admitted_agents_halts() {
        let s = spec("{ waves: [50, 100], max_failed: \"50%\" }");
        let r = Rollouts::default();
        let mut agents = vec![
            agent(1, 1, Standing::Failed("x".into())),
            agent(2, 1, Standing::Applied),
            agent(3, 1, Standing::Moving),
        ];
        let (v, _) = tick(&r, &s, agents.clone(), Instant::now());
        assert_eq!(v.state, RolloutState::Progressing, "1 of 3 is below 50 %");
        agents[2] = agent(3, 1, Standing::Failed("y".into()));
        let (v, _) = tick(&r, &s, agents, Instant::now());
        assert_eq!(v.state, RolloutState::Halted);
    }

    #[test]
    fn paused_and_frozen_stop_admissions_and_promote_admits() {
        let s = spec("{ waves: [50, 100], paused: true }");
        let r = Rollouts::default();
        let (v, pushed) = tick(&r, &s, vec![agent(1, 1, Standing::Moving)], Instant::now());
        assert_eq!(
            (v.state, v.admitted, v.waiting),
            (RolloutState::Paused, 0, 1)
        );
        assert!(pushed.is_empty());
        r.act(RolloutAction::Promote, Some("fleet")).unwrap();
        let (v, _) = tick(&r, &s, vec![agent(1, 1, Standing::Moving)], Instant::now());
        assert_eq!((v.wave, v.admitted), (1, 1));

        let frozen = spec("{ waves: [100], freeze: [{ schedule: \"* * * * *\", duration: 2m }] }");
        let r = Rollouts::default();
        let (v, _) = tick(
            &r,
            &frozen,
            vec![agent(1, 1, Standing::Moving)],
            Instant::now(),
        );
        assert_eq!(v.state, RolloutState::Frozen);
    }

    fn decision(paused: bool, admitted: u32, at_ms: u64) -> StoredRollout {
        StoredRollout {
            revision: "rev".into(),
            scope: "fleet".into(),
            paused,
            admitted,
            resumes: 0,
            forgiven: Vec::new(),
            actor: None,
            replica_id: "other".into(),
            at: std::time::UNIX_EPOCH + Duration::from_millis(at_ms),
        }
    }

    #[test]
    fn stored_decisions_are_adopted_at_start_and_an_older_one_never_undoes_a_newer() {
        let s = spec("{ waves: [50, 100] }");
        let held = || vec![agent(1, 1, Standing::Moving), agent(2, 2, Standing::Moving)];
        // A restarted replica adopts the stored pause before its first tick.
        let r = Rollouts::default();
        r.adopt(vec![decision(true, 0, 1_000)]);
        let (v, pushed) = tick(&r, &s, held(), Instant::now());
        assert_eq!(v.state, RolloutState::Paused);
        assert!(pushed.is_empty());
        // Another replica's promote (a newer decision) admits the first cohort wave (waves
        // 0..2: the empty canary slot and wave 1).
        r.adopt(vec![decision(true, 2, 2_000)]);
        let (v, pushed) = tick(&r, &s, held(), Instant::now());
        assert_eq!(v.admitted, 1);
        assert_eq!(pushed, vec![InstanceUid::from_bytes([1; 16])]);
        // This replica resumes; reading the older stored pause back changes nothing.
        r.act(RolloutAction::Resume, None).unwrap();
        let mine = r.decided(&["fleet".into()], Some("alice"), "me");
        assert!(!mine[0].paused && mine[0].resumes == 1);
        r.adopt(vec![decision(true, 2, 2_000)]);
        let (v, _) = tick(&r, &s, held(), Instant::now());
        assert_ne!(v.state, RolloutState::Paused);
    }

    #[test]
    fn disconnected_agents_do_not_block_a_wave() {
        let s = spec("{ waves: [50, 100] }");
        let r = Rollouts::default();
        let mut gone = agent(1, 1, Standing::Moving);
        gone.active = false;
        let (v, _) = tick(
            &r,
            &s,
            vec![
                gone,
                agent(2, 1, Standing::Applied),
                agent(3, 2, Standing::Moving),
            ],
            Instant::now(),
        );
        assert_eq!(v.wave, 2);
    }

    #[test]
    fn after_a_restart_the_wave_follows_from_the_reports() {
        let s = spec("{ waves: [25, 50, 100], soak: 1h }");
        let r = Rollouts::default();
        // Wave 1 all moved, wave 2 partly: wave 2 was admitted; wave 3 is held.
        let (v, pushed) = tick(
            &r,
            &s,
            vec![
                agent(1, 1, Standing::Applied),
                agent(2, 2, Standing::Applied),
                agent(3, 2, Standing::Moving),
                agent(4, 3, Standing::Moving),
            ],
            Instant::now(),
        );
        assert_eq!((v.wave, v.state), (2, RolloutState::Progressing));
        assert_eq!(pushed, vec![InstanceUid::from_bytes([3; 16])]);
        // Wave 1 complete, wave 2 untouched: soak again before wave 2.
        let r = Rollouts::default();
        let (v, pushed) = tick(
            &r,
            &s,
            vec![
                agent(1, 1, Standing::Applied),
                agent(2, 2, Standing::Moving),
            ],
            Instant::now(),
        );
        assert_eq!((v.wave, v.state), (1, RolloutState::Soaking));
        assert!(pushed.is_empty());
    }
}
