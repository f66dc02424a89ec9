//! Read models of the registry: what the admin API, the dashboard and the metrics see of an
//! agent, computed from its record and the current revision.

use super::record::{AgentRecord, Transport};
use super::served::Served;
use super::status::{status, Status};
use super::Fleet;
use crate::opamp::proto::ComponentHealth;
use crate::repo::Desired;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AgentSummary {
    pub instance_uid: String,
    pub attributes: BTreeMap<String, String>,
    pub rule: Option<String>,
    pub status: Status,
    pub connected: bool,
    pub stale: bool,
    /// Unknown (null) while the agent is disconnected or has not reported health.
    pub healthy: Option<bool>,
    pub transport: Transport,
    pub desired_hash: Option<String>,
    pub reported_hash: Option<String>,
    /// The revision whose render produced the config the agent runs; null when none of the
    /// revisions this server remembers did.
    pub revision: Option<String>,
    pub last_seen: String,
    /// Why the agent's config failed: its own report, or the diagnostic of a failed render.
    pub last_error: Option<String>,
    /// The replica that holds the agent (with a fleet store).
    pub replica: Option<String>,
    /// Why the agent reports itself unhealthy (while connected).
    pub health_error: Option<String>,
}

impl Fleet {
    /// The agent's desired config and the status it shows (drift and rollout holds included).
    fn shown_status(&self, served: Option<&Served>, rec: &AgentRecord) -> (Desired, Status) {
        let desired = self.desired_of(served, rec);
        let mut shown = status(&rec.state, &desired);
        if let (Status::Applied, Desired::Config(config)) = (shown, &desired) {
            if rec.drifted_from(config) == Some(true) {
                shown = Status::Drifted;
            }
        }
        if shown == Status::Pending && self.held(rec, &desired, served) {
            shown = Status::Waiting;
        }
        (desired, shown)
    }

    pub fn summary(&self, rec: &AgentRecord) -> AgentSummary {
        let served = self.served();
        let (desired, summary_status) = self.shown_status(served.as_deref(), rec);
        let desired_hash = match &desired {
            Desired::Config(c) => Some(c.hash_hex()),
            _ => None,
        };
        let revision = rec
            .running_hash()
            .and_then(|running| match (&desired, &served) {
                (Desired::Config(c), Some(served)) if c.hash == running => {
                    Some(served.id().to_owned())
                }
                _ => self.revision_of(&running),
            });
        let (stale, connected, health) = self.presence(rec);
        AgentSummary {
            instance_uid: rec.uid.to_string(),
            attributes: rec.info.attributes.clone(),
            rule: desired.rule().map(str::to_owned),
            status: summary_status,
            connected,
            stale,
            healthy: health.map(|h| h.healthy),
            transport: rec.transport,
            desired_hash,
            reported_hash: rec.state.reported_hash().map(hex::encode),
            revision,
            last_seen: humantime::format_rfc3339_seconds(rec.last_seen).to_string(),
            last_error: last_error(rec, &desired, summary_status),
            replica: rec.replica.clone().or_else(|| self.persist.replica_id()),
            health_error: health
                .filter(|h| !h.healthy && !h.last_error.is_empty())
                .map(|h| h.last_error.clone()),
        }
    }

    /// The counts of `/api/summary` over every visible agent, without building each agent's
    /// summary (its attribute copies and formatted fields).
    pub fn counts(&self) -> FleetCounts {
        let served = self.served();
        let records = self.visible_records();
        tally(records.iter().map(|record| {
            let rec = record.lock().unwrap_or_else(|e| e.into_inner());
            let (_, status) = self.shown_status(served.as_deref(), &rec);
            let (stale, connected, health) = self.presence(&rec);
            Tally {
                status,
                stale,
                connected,
                healthy: health.map(|h| h.healthy),
            }
        }))
    }

    /// Whether the agent is stale, whether it counts as connected (and not stale), and its
    /// health while connected: a disconnected agent's health is unknown.
    fn presence<'r>(&self, rec: &'r AgentRecord) -> (bool, bool, Option<&'r ComponentHealth>) {
        let stale = self.is_stale(rec);
        let health = rec.state.health.as_ref().filter(|_| rec.connected);
        (stale, rec.connected && !stale, health)
    }

    /// Every agent's summary, ordered by uid.
    pub fn summaries(&self) -> Vec<AgentSummary> {
        let mut all: Vec<AgentSummary> = self
            .visible_records()
            .iter()
            .map(|r| self.summary(&r.lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        all.sort_by(|a, b| a.instance_uid.cmp(&b.instance_uid));
        all
    }
}

/// A distinct attribute set of the registry and how many agents report it: what `diff --fleet`
/// renders, once per set instead of once per agent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema)]
pub struct AttributeSet {
    pub identifying: BTreeMap<String, String>,
    pub non_identifying: BTreeMap<String, String>,
    pub count: usize,
}

impl Fleet {
    /// The distinct (identifying, non-identifying) attribute sets of the agents that have
    /// described themselves, ordered by their attributes, so that pages stay in place while
    /// counts change. An agent whose description has not arrived yet has no attributes to
    /// render with, and is left out. With a shared store, other replicas' agents count too.
    pub fn attribute_sets(&self) -> Vec<AttributeSet> {
        type Attributes = BTreeMap<String, String>;
        let mut counts: BTreeMap<(Attributes, Attributes), usize> = BTreeMap::new();
        for record in self.visible_records() {
            let rec = record.lock().unwrap_or_else(|e| e.into_inner());
            if rec.state.description.is_none() {
                continue;
            }
            let key = (
                rec.info.identifying.clone(),
                rec.info.non_identifying.clone(),
            );
            *counts.entry(key).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((identifying, non_identifying), count)| AttributeSet {
                identifying,
                non_identifying,
                count,
            })
            .collect()
    }
}

fn last_error(rec: &AgentRecord, desired: &Desired, status: Status) -> Option<String> {
    match (status, desired) {
        (Status::RenderError, Desired::Invalid { diagnostics, .. }) => Some(
            diagnostics
                .iter()
                .map(|d| d.human())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (Status::Failed, _) => rec
            .state
            .remote_config_status
            .as_ref()
            .map(|s| s.error_message.clone())
            .filter(|m| !m.is_empty()),
        _ => None,
    }
}

/// The fleet at a glance: counts by status, health and connection.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct FleetCounts {
    pub total: usize,
    /// Every status in a fixed order, with its count.
    #[schema(schema_with = crate::admin::openapi::status_counts)]
    pub by_status: Vec<(&'static str, usize)>,
    /// Health counts are of connected agents: a disconnected agent's health is unknown, and it
    /// is counted under `disconnected` only.
    pub healthy: usize,
    pub unhealthy: usize,
    pub health_unknown: usize,
    pub connected: usize,
    pub stale: usize,
    pub disconnected: usize,
}

/// What the fleet counts take from one agent.
struct Tally {
    status: Status,
    stale: bool,
    connected: bool,
    healthy: Option<bool>,
}

pub fn counts(agents: &[AgentSummary]) -> FleetCounts {
    tally(agents.iter().map(|agent| Tally {
        status: agent.status,
        stale: agent.stale,
        connected: agent.connected,
        healthy: agent.healthy,
    }))
}

fn tally(agents: impl Iterator<Item = Tally>) -> FleetCounts {
    let mut counts = FleetCounts {
        by_status: Status::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        ..FleetCounts::default()
    };
    for agent in agents {
        counts.total += 1;
        if let Some(entry) = counts
            .by_status
            .iter_mut()
            .find(|(s, _)| *s == agent.status.as_str())
        {
            entry.1 += 1;
        }
        if agent.stale {
            counts.stale += 1;
        } else if agent.connected {
            counts.connected += 1;
        } else {
            counts.disconnected += 1;
            continue;
        }
        match agent.healthy {
            Some(true) => counts.healthy += 1,
            Some(false) => counts.unhealthy += 1,
            None => counts.health_unknown += 1,
        }
    }
    counts
}
