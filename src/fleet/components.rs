//! What each agent's build contains, from its `available_components` report (capability
//! `ReportsAvailableComponents`): lists are cached by the agent-computed hash, so that agents
//! of one build send theirs once and then only the hash (the specification's handshake); an
//! unknown hash is answered with the `ReportAvailableComponents` flag, and until the list
//! arrives the agent is sent no config. A desired config using a component type the build
//! lacks becomes a `render_error` naming the component and the rule (see `Fleet::desired`).

use crate::opamp::proto::AvailableComponents;
use crate::repo::components::{ComponentSet, KINDS};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Distinct builds remembered; beyond it the oldest is forgotten (its agents are asked again).
const CAPACITY: usize = 1024;

/// How often an agent is asked for its list without answering before the server stops
/// waiting for it and sends configs unchecked.
pub const MAX_ASKS: u8 = 3;

/// What the server knows of one agent-computed hash.
#[derive(Debug, Clone)]
pub enum Catalogued {
    Known(Arc<ComponentSet>),
    /// The list was over the report limits (`--max-report-entries`): configs are not checked
    /// against it, and it is not asked for again.
    TooLarge,
}

#[derive(Default)]
pub struct ComponentCatalog {
    entries: Mutex<(HashMap<Bytes, Catalogued>, VecDeque<Bytes>)>,
}

impl ComponentCatalog {
    pub fn get(&self, hash: &Bytes) -> Option<Catalogued> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.get(hash).cloned()
    }

    pub fn insert(&self, hash: Bytes, entry: Catalogued) {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(hash.clone(), entry).is_none() {
            order.push_back(hash);
            while order.len() > CAPACITY {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one agent's components stand.
#[derive(Debug, Clone, Default)]
pub enum AgentComponents {
    /// The agent does not report them (no capability): nothing is checked.
    #[default]
    NotReported,
    /// It reports a hash the server has no list for: asked this many times.
    Unknown {
        hash: Bytes,
        asks: u8,
    },
    Known {
        hash: Bytes,
        set: Arc<ComponentSet>,
    },
    TooLarge {
        hash: Bytes,
    },
}

impl AgentComponents {
    /// The set configs are checked against, when known.
    pub fn set(&self) -> Option<&Arc<ComponentSet>> {
        match self {
            AgentComponents::Known { set, .. } => Some(set),
            _ => None,
        }
    }

    /// Whether the full list is to be asked for (and configs held until it arrives).
    pub fn wanted(&self) -> bool {
        matches!(self, AgentComponents::Unknown { asks, .. } if *asks <= MAX_ASKS)
    }

    /// What the API shows: null when not reported.
    pub fn to_json(&self) -> Value {
        let hex = |h: &Bytes| hex::encode(h);
        match self {
            AgentComponents::NotReported => Value::Null,
            AgentComponents::Unknown { hash, .. } => {
                json!({"hash": hex(hash), "state": "unknown", "components": null})
            }
            AgentComponents::TooLarge { hash } => {
                json!({"hash": hex(hash), "state": "too_large", "components": null})
            }
            AgentComponents::Known { hash, set } => {
                json!({"hash": hex(hash), "state": "known", "components": set.as_ref()})
            }
        }
    }
}

/// The component types of a report: each kind's sub-components by type (the Collector's shape;
/// keys other than the five Collector kinds are ignored).
pub fn from_report(report: &AvailableComponents) -> ComponentSet {
    let kinds = report
        .components
        .iter()
        .filter(|(kind, _)| KINDS.contains(&kind.as_str()))
        .map(|(kind, details)| {
            let types: BTreeSet<String> = details
                .sub_component_map
                .keys()
                .map(|t| crate::repo::components::component_type(t).to_owned())
                .collect();
            (kind.clone(), types)
        })
        .collect();
    ComponentSet { kinds }
}

/// What an agent's components become after a message. `report`: the message's
/// `available_components` (hash, and the list when it carries one, `None` when over the
/// limits); `None` when the message leaves them out (unchanged).
pub fn next(
    catalog: &ComponentCatalog,
    current: &AgentComponents,
    capable: bool,
    report: Option<(Bytes, Option<Option<ComponentSet>>)>,
) -> AgentComponents {
    if !capable {
        return AgentComponents::NotReported;
    }
    match report {
        Some((hash, Some(list))) => {
            let entry = match list {
                Some(set) => Catalogued::Known(Arc::new(set)),
                None => Catalogued::TooLarge,
            };
            catalog.insert(hash.clone(), entry.clone());
            from_entry(hash, entry)
        }
        Some((hash, None)) => match catalog.get(&hash) {
            Some(entry) => from_entry(hash, entry),
            None => match current {
                AgentComponents::Unknown { hash: h, asks } if *h == hash => {
                    AgentComponents::Unknown { hash, asks: *asks }
                }
                _ => AgentComponents::Unknown { hash, asks: 0 },
            },
        },
        // Unchanged: what was known stays; a server that never saw the hash (after a restart)
        // has to ask for it.
        None => match current {
            AgentComponents::NotReported => AgentComponents::Unknown {
                hash: Bytes::new(),
                asks: 0,
            },
            AgentComponents::Known { hash, .. }
            | AgentComponents::TooLarge { hash }
            | AgentComponents::Unknown { hash, .. }
                if !hash.is_empty() =>
            {
                match catalog.get(hash) {
                    Some(entry) => from_entry(hash.clone(), entry),
                    None => current.clone(),
                }
            }
            other => other.clone(),
        },
    }
}

fn from_entry(hash: Bytes, entry: Catalogued) -> AgentComponents {
    match entry {
        Catalogued::Known(set) => AgentComponents::Known { hash, set },
        Catalogued::TooLarge => AgentComponents::TooLarge { hash },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::proto::ComponentDetails;

    fn report(types: &[&str]) -> AvailableComponents {
        AvailableComponents {
            components: [(
                "exporters".to_owned(),
                ComponentDetails {
                    metadata: vec![],
                    sub_component_map: types
                        .iter()
                        .map(|t| (t.to_string(), ComponentDetails::default()))
                        .collect(),
                },
            )]
            .into(),
            hash: Bytes::from_static(b"h1"),
        }
    }

    #[test]
    fn a_hash_is_learnt_once_and_recognised_after() {
        let catalog = ComponentCatalog::default();
        let hash = Bytes::from_static(b"h1");
        let asked = next(
            &catalog,
            &AgentComponents::NotReported,
            true,
            Some((hash.clone(), None)),
        );
        assert!(asked.wanted(), "an unknown hash is asked for");
        let known = next(
            &catalog,
            &asked,
            true,
            Some((hash.clone(), Some(Some(from_report(&report(&["otlp"])))))),
        );
        assert!(known.set().unwrap().kinds["exporters"].contains("otlp"));
        let other_agent = next(
            &catalog,
            &AgentComponents::NotReported,
            true,
            Some((hash, None)),
        );
        assert!(
            other_agent.set().is_some(),
            "another agent of the build sends only the hash"
        );
        assert!(matches!(
            next(&catalog, &known, false, None),
            AgentComponents::NotReported
        ));
    }

    #[test]
    fn an_agent_that_never_sent_its_components_is_asked() {
        let catalog = ComponentCatalog::default();
        assert!(next(&catalog, &AgentComponents::NotReported, true, None).wanted());
    }
}
