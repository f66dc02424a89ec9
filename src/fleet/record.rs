//! One agent in the registry: its protocol state, what templates see of it, and how it is
//! connected.

use crate::opamp::codec::Reply;
use crate::opamp::proto::{any_value, AgentDescription, AnyValue, KeyValue};
use crate::opamp::session::{AgentState, ConnectionId};
use crate::opamp::uid::InstanceUid;
use crate::repo::hash::ConfigHash;
use crate::repo::AgentInfo;
use crate::store::HistoryEntry;
use bytes::Bytes;
use serde::Serialize;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Http,
}

impl Transport {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Http => "http",
        }
    }
}

/// What the registry asks of a live WebSocket session.
#[derive(Debug)]
pub enum SessionCommand {
    /// Send this message now.
    Send(Box<Reply>),
    /// Another session took over this agent: close.
    Replaced,
}

/// A live WebSocket session that serves an agent.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub connection: ConnectionId,
    pub commands: mpsc::Sender<SessionCommand>,
}

#[derive(Debug)]
pub struct AgentRecord {
    pub uid: InstanceUid,
    /// The uid bytes as the agent sends them (16 bytes, or a legacy ULID string): replies echo them.
    pub uid_bytes: Bytes,
    pub state: AgentState,
    pub info: Arc<AgentInfo>,
    pub transport: Transport,
    /// False after `agent_disconnect` or when its WebSocket closed.
    pub connected: bool,
    pub session: Option<LiveSession>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub last_heard: Instant,
    pub token_name: Option<String>,
    /// The last config offered and when, to measure push-to-applied latency.
    pub offered_at: Option<(ConfigHash, Instant)>,
    /// The revision under which this agent's render last failed (counted once per revision).
    pub render_error_revision: Option<String>,
    /// The configs it ran, oldest first (bounded): see `fleet::history`.
    pub history: VecDeque<HistoryEntry>,
    /// The history changed since the store last wrote it.
    pub history_changed: bool,
    /// Loaded from the fleet store with this sequence number: the agent's first message
    /// continues it, or what was stored is dropped and the full state asked for.
    pub resumed_from: Option<u64>,
    /// For an agent another replica holds (read from the shared store): that replica.
    pub replica: Option<String>,
    /// The hash the agent last reported APPLIED: the config it runs, whatever it was sent since.
    pub applied_hash: Option<ConfigHash>,
    /// Bumped whenever the agent reports a new effective config.
    pub effective_version: u64,
    /// The last drift verdict and what it was computed from: (desired hash, effective version).
    pub drift_memo: Cell<Option<(ConfigHash, u64, Option<bool>)>>,
    /// What its build contains, as far as the server knows.
    pub components: super::components::AgentComponents,
}

impl AgentRecord {
    pub fn new(uid: InstanceUid, uid_bytes: Bytes, transport: Transport) -> AgentRecord {
        AgentRecord {
            uid,
            uid_bytes,
            state: AgentState::default(),
            info: Arc::new(AgentInfo::new(
                uid.to_string(),
                BTreeMap::new(),
                BTreeMap::new(),
            )),
            transport,
            connected: true,
            session: None,
            first_seen: SystemTime::now(),
            last_seen: SystemTime::now(),
            last_heard: Instant::now(),
            token_name: None,
            offered_at: None,
            render_error_revision: None,
            history: VecDeque::new(),
            history_changed: false,
            resumed_from: None,
            replica: None,
            applied_hash: None,
            effective_version: 0,
            drift_memo: Cell::new(None),
            components: Default::default(),
        }
    }

    /// The hash of the config the agent runs, as far as the server can tell: the last one it
    /// reported applied, or for an agent that reports no status, the last one delivered to it.
    pub fn running_hash(&self) -> Option<ConfigHash> {
        if self
            .state
            .has(crate::opamp::agent_caps::REPORTS_REMOTE_CONFIG)
        {
            self.applied_hash
        } else {
            self.state.delivered
        }
    }

    /// The effective config the agent reported, by file name; None when it reported none (an
    /// empty map included: a report of nothing).
    pub fn effective_files(&self) -> Option<BTreeMap<String, Bytes>> {
        let map = self.state.effective_config.as_ref()?.config_map.as_ref()?;
        if map.config_map.is_empty() {
            return None;
        }
        Some(
            map.config_map
                .iter()
                .map(|(name, file)| (name.clone(), file.body.clone()))
                .collect(),
        )
    }

    /// Whether the effective config has left `desired` (see `drift`), computed once per desired
    /// hash and effective config.
    pub fn drifted_from(&self, desired: &crate::repo::DesiredConfig) -> Option<bool> {
        if let Some((hash, version, verdict)) = self.drift_memo.get() {
            if hash == desired.hash && version == self.effective_version {
                return verdict;
            }
        }
        let verdict = self.effective_files().and_then(|effective| {
            super::drift::drifted_memoized(desired.hash, &desired.files, &effective)
        });
        self.drift_memo
            .set(Some((desired.hash, self.effective_version, verdict)));
        verdict
    }

    /// Rebuilds what templates see from the agent's description.
    pub fn refresh_info(&mut self) {
        let (identifying, non_identifying) = match &self.state.description {
            Some(AgentDescription {
                identifying_attributes,
                non_identifying_attributes,
            }) => (
                attribute_texts(identifying_attributes),
                attribute_texts(non_identifying_attributes),
            ),
            None => (BTreeMap::new(), BTreeMap::new()),
        };
        self.info = Arc::new(AgentInfo::new(
            self.uid.to_string(),
            identifying,
            non_identifying,
        ));
    }
}

/// Attribute values as text, as templates and selectors see them.
pub fn attribute_texts(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(any_value_text).unwrap_or_default(),
            )
        })
        .collect()
}

pub fn any_value_text(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(any_value::Value::ArrayValue(a)) => {
            serde_json::to_string(&a.values.iter().map(any_value_text).collect::<Vec<_>>())
                .unwrap_or_default()
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            serde_json::to_string(&attribute_texts(&kv.values)).unwrap_or_default()
        }
    }
}
