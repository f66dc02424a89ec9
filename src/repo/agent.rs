//! What a template knows about an agent, and a record of what it actually read. Renders are
//! memoised by the agent fields a render read, so agents that differ only in attributes the
//! template never looks at (host names, instance ids) share one render.

use minijinja::value::{Enumerator, Object, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The agent as templates see it: attribute values are text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentInfo {
    pub instance_uid: String,
    pub identifying: BTreeMap<String, String>,
    pub non_identifying: BTreeMap<String, String>,
    /// Both merged; an identifying attribute wins over a non-identifying one.
    pub attributes: BTreeMap<String, String>,
}

impl AgentInfo {
    pub fn new(
        instance_uid: impl Into<String>,
        identifying: BTreeMap<String, String>,
        non_identifying: BTreeMap<String, String>,
    ) -> AgentInfo {
        let mut attributes = non_identifying.clone();
        attributes.extend(identifying.iter().map(|(k, v)| (k.clone(), v.clone())));
        AgentInfo {
            instance_uid: instance_uid.into(),
            identifying,
            non_identifying,
            attributes,
        }
    }

    fn map(&self, which: MapKind) -> &BTreeMap<String, String> {
        match which {
            MapKind::Attributes => &self.attributes,
            MapKind::Identifying => &self.identifying,
            MapKind::NonIdentifying => &self.non_identifying,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKind {
    Attributes,
    Identifying,
    NonIdentifying,
}

const MAP_KINDS: [MapKind; 3] = [
    MapKind::Attributes,
    MapKind::Identifying,
    MapKind::NonIdentifying,
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum MapReads {
    #[default]
    None,
    Keys(BTreeSet<String>),
    Whole,
}

/// Which agent fields a render read: the shape of its memo key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ReadLog {
    uid: bool,
    maps: [MapReads; 3],
}

/// The values of the read fields for one agent: two agents with equal keys under the same
/// `ReadLog` render identically.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadKey {
    uid: Option<String>,
    maps: Vec<Vec<(String, Option<String>)>>,
}

impl ReadLog {
    pub fn key_for(&self, agent: &AgentInfo) -> ReadKey {
        let maps = MAP_KINDS
            .iter()
            .zip(&self.maps)
            .map(|(&kind, reads)| {
                let map = agent.map(kind);
                match reads {
                    MapReads::None => Vec::new(),
                    MapReads::Keys(keys) => keys
                        .iter()
                        .map(|k| (k.clone(), map.get(k).cloned()))
                        .collect(),
                    MapReads::Whole => map
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect(),
                }
            })
            .collect();
        ReadKey {
            uid: self.uid.then(|| agent.instance_uid.clone()),
            maps,
        }
    }

    /// Whether the render read `agent.instance_uid`.
    pub fn reads_instance_uid(&self) -> bool {
        self.uid
    }

    pub(crate) fn mark_everything(&mut self) {
        self.uid = true;
        self.maps = [MapReads::Whole, MapReads::Whole, MapReads::Whole];
    }

    /// Adds what another render (another file of the same rule) read.
    pub fn merge(&mut self, other: &ReadLog) {
        self.uid |= other.uid;
        for (mine, theirs) in self.maps.iter_mut().zip(&other.maps) {
            *mine = match (std::mem::take(mine), theirs) {
                (MapReads::Whole, _) | (_, MapReads::Whole) => MapReads::Whole,
                (MapReads::None, other) => other.clone(),
                (mine, MapReads::None) => mine,
                (MapReads::Keys(mut a), MapReads::Keys(b)) => {
                    a.extend(b.iter().cloned());
                    MapReads::Keys(a)
                }
            };
        }
    }
}

/// Shared between a render's tracked objects; taken when the render ends.
#[derive(Debug, Default)]
pub struct ReadLogCell(Mutex<ReadLog>);

impl ReadLogCell {
    pub fn take(&self) -> ReadLog {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn record(&self, f: impl FnOnce(&mut ReadLog)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// `agent` in the template context.
#[derive(Debug)]
pub struct TrackedAgent {
    info: Arc<AgentInfo>,
    log: Arc<ReadLogCell>,
}

impl TrackedAgent {
    pub fn new(info: Arc<AgentInfo>, log: Arc<ReadLogCell>) -> TrackedAgent {
        TrackedAgent { info, log }
    }

    fn map(&self, which: MapKind) -> Value {
        Value::from_object(TrackedMap {
            info: self.info.clone(),
            log: self.log.clone(),
            which,
        })
    }
}

impl Object for TrackedAgent {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "instance_uid" => {
                self.log.record(|l| l.uid = true);
                Some(Value::from(self.info.instance_uid.clone()))
            }
            "attributes" => Some(self.map(MapKind::Attributes)),
            "identifying" => Some(self.map(MapKind::Identifying)),
            "non_identifying" => Some(self.map(MapKind::NonIdentifying)),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&[
            "instance_uid",
            "attributes",
            "identifying",
            "non_identifying",
        ])
    }
}

/// `agent.attributes` and friends: records each key looked up, or the whole map when the
/// template iterates it or asks its length.
#[derive(Debug)]
struct TrackedMap {
    info: Arc<AgentInfo>,
    log: Arc<ReadLogCell>,
    which: MapKind,
}

impl TrackedMap {
    fn record_whole(&self) {
        let index = self.which as usize;
        self.log.record(|l| l.maps[index] = MapReads::Whole);
    }
}

impl Object for TrackedMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        let index = self.which as usize;
        self.log.record(|l| match &mut l.maps[index] {
            MapReads::Whole => {}
            MapReads::Keys(keys) => {
                keys.insert(key.to_owned());
            }
            reads @ MapReads::None => *reads = MapReads::Keys(BTreeSet::from([key.to_owned()])),
        });
        self.info
            .map(self.which)
            .get(key)
            .map(|v| Value::from(v.clone()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.record_whole();
        let keys: Vec<Value> = self
            .info
            .map(self.which)
            .keys()
            .map(|k| Value::from(k.clone()))
            .collect();
        Enumerator::Values(keys)
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        self.record_whole();
        Some(self.info.map(self.which).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(uid: &str, attrs: &[(&str, &str)]) -> AgentInfo {
        let map = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AgentInfo::new(uid, map, BTreeMap::new())
    }

    #[test]
    fn identifying_attributes_win_over_non_identifying() {
        let info = AgentInfo::new(
            "u",
            BTreeMap::from([("a".to_string(), "id".to_string())]),
            BTreeMap::from([
                ("a".to_string(), "non".to_string()),
                ("b".to_string(), "x".to_string()),
            ]),
        );
        assert_eq!(info.attributes["a"], "id");
        assert_eq!(info.attributes["b"], "x");
    }

    #[test]
    fn keys_ignore_fields_the_render_did_not_read() {
        let mut log = ReadLog::default();
        log.maps[0] = MapReads::Keys(BTreeSet::from(["region".to_string()]));
        let a = agent("1", &[("region", "eu"), ("host.name", "a")]);
        let b = agent("2", &[("region", "eu"), ("host.name", "b")]);
        let c = agent("3", &[("region", "us"), ("host.name", "a")]);
        assert_eq!(log.key_for(&a), log.key_for(&b));
        assert_ne!(log.key_for(&a), log.key_for(&c));
        log.uid = true;
        assert_ne!(log.key_for(&a), log.key_for(&b));
    }
}
