//! The revision the fleet serves, with what is derived from it once: each desired config
//! encoded for sending, the components it uses, by hash, and the connection-settings offers. One value, swapped whole when the source publishes a new
//! revision, so nothing keyed by a revision id can outlive its revision.

use crate::opamp::builders::{remote_config, with_hash};
use crate::opamp::codec::EncodedRemoteConfig;
use crate::opamp::proto::{ConnectionSettingsOffers, OpAmpConnectionSettings};
use crate::repo::components::UsedComponents;
use crate::repo::hash::ConfigHash;
use crate::repo::telemetry::ResolvedTelemetry;
use crate::repo::{AgentInfo, Desired, DesiredConfig, Revision};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Served {
    pub revision: Arc<Revision>,
    encoded: Mutex<HashMap<ConfigHash, Arc<EncodedRemoteConfig>>>,
    /// The component ids each desired config uses, parsed once per hash.
    used: Mutex<HashMap<ConfigHash, Arc<UsedComponents>>>,
    /// Rule name → its index in the revision, the key of `offers`.
    rule_index: HashMap<String, usize>,
    /// Whether any rule names own-telemetry destinations.
    pub has_telemetry: bool,
    /// Connection-settings offers by rule and by what an agent takes: built and hashed once.
    offers: Mutex<HashMap<OfferKey, Option<ConnectionSettingsOffers>>>,
}

/// An agent's rule (its index; none when unmanaged) and what it takes.
type OfferKey = (Option<usize>, Takes);

/// Which connection settings an agent takes, from its capabilities: a bit set of
/// [`Takes::HEARTBEAT`], [`Takes::METRICS`], [`Takes::LOGS`] and [`Takes::TRACES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Takes(pub u8);

impl Takes {
    pub const HEARTBEAT: u8 = 1;
    pub const METRICS: u8 = 2;
    pub const LOGS: u8 = 4;
    pub const TRACES: u8 = 8;

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

impl Served {
    pub fn new(revision: Arc<Revision>) -> Served {
        let rules = &revision.fleet.rules;
        Served {
            rule_index: rules
                .iter()
                .enumerate()
                .map(|(i, rule)| (rule.name.clone(), i))
                .collect(),
            has_telemetry: rules.iter().any(|rule| rule.telemetry.is_some()),
            revision,
            encoded: Mutex::default(),
            used: Mutex::default(),
            offers: Mutex::default(),
        }
    }

    /// The connection settings offered to an agent of `rule` that takes `takes`: the heartbeat
    /// interval and the rule's own-telemetry destinations, with their hash; `None` when there is
    /// nothing to offer. `heartbeat` is the fleet's, the same on every call.
    pub fn settings_offer(
        &self,
        rule: Option<&str>,
        takes: Takes,
        heartbeat: Option<&OpAmpConnectionSettings>,
    ) -> Option<ConnectionSettingsOffers> {
        let index = rule.and_then(|name| self.rule_index.get(name).copied());
        self.offers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((index, takes))
            .or_insert_with(|| {
                let telemetry = index
                    .and_then(|i| self.revision.fleet.rules[i].telemetry.as_ref())
                    .and_then(|t| t.resolved.as_deref());
                let own = |bit, pick: fn(&ResolvedTelemetry) -> &Option<_>| {
                    telemetry
                        .filter(|_| takes.has(bit))
                        .and_then(|t| pick(t).clone())
                };
                let offers = ConnectionSettingsOffers {
                    opamp: heartbeat.filter(|_| takes.has(Takes::HEARTBEAT)).cloned(),
                    own_metrics: own(Takes::METRICS, |t| &t.metrics),
                    own_logs: own(Takes::LOGS, |t| &t.logs),
                    own_traces: own(Takes::TRACES, |t| &t.traces),
                    ..Default::default()
                };
                let empty = offers.opamp.is_none()
                    && offers.own_metrics.is_none()
                    && offers.own_logs.is_none()
                    && offers.own_traces.is_none();
                (!empty).then(|| with_hash(offers))
            })
            .clone()
    }

    pub fn id(&self) -> &str {
        &self.revision.id
    }

    pub fn desired(&self, agent: &Arc<AgentInfo>) -> Desired {
        self.revision.desired(agent)
    }

    /// The config as sent, encoded once per hash and shared by every agent that gets it.
    pub fn encoded(&self, config: &DesiredConfig) -> Arc<EncodedRemoteConfig> {
        self.encoded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(config.hash)
            .or_insert_with(|| {
                Arc::new(EncodedRemoteConfig::new(&remote_config(
                    &config.files,
                    &config.hash,
                )))
            })
            .clone()
    }
}

impl Served {
    /// The components a desired config uses, parsed once per hash.
    pub fn used_components(&self, config: &DesiredConfig) -> Arc<UsedComponents> {
        if let Some(used) = self
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&config.hash)
        {
            return used.clone();
        }
        // Parsed outside the lock: YAML parsing is the slow part.
        let used = Arc::new(UsedComponents::of_files(&config.files));
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(config.hash)
            .or_insert(used)
            .clone()
    }
}

/// What `served` wants for an agent: nothing before any revision is loaded.
pub fn desired_in(served: Option<&Served>, agent: &Arc<AgentInfo>) -> Desired {
    served.map_or(Desired::Unmanaged, |s| s.desired(agent))
}
