//! Write-behind of the registry to the fleet store, and the registry's restore from it at
//! start. Sessions only mark an agent dirty (a set insert); a flusher task snapshots the dirty
//! agents every flush interval and writes them, with new audit events, in one batch, so no
//! store call is ever awaited while a message is handled. A failed write puts everything back
//! to be retried, coalesced with what changed meanwhile; the outage is logged once.

use super::record::{AgentRecord, Transport};
use super::{lock, ActionError, AgentAction, Fleet};
use crate::audit::{AuditEvent, AuditLog};
use crate::metrics::Metrics;
use crate::opamp::agent_caps;
use crate::opamp::proto::{
    any_value, AgentConfigFile, AgentConfigMap, AgentDescription, AnyValue, ComponentHealth,
    EffectiveConfig, KeyValue, RemoteConfigStatus, RemoteConfigStatuses,
};
use crate::opamp::uid::InstanceUid;
use crate::repo::hash::config_hash;
use crate::repo::Desired;
use crate::store::{Batch, FleetStore, ReplicaBeat, StoredAgent, StoredRollout};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A write that takes longer counts as failed; the flusher retries at the next interval.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Another replica's agents show disconnected once its heartbeat is older than this.
pub const REPLICA_LEASE: Duration = Duration::from_secs(15);

/// How often a replica heartbeats its row: a third of the lease.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How many of the other replicas' most recent audit events `/api/events` shows.
pub const REMOTE_EVENTS_SHOWN: usize = 1000;

/// The NOTIFY action that says rollout decisions were stored.
const ROLLOUT_DECIDED: &str = "rollout";

/// The NOTIFY action that says a replica took a new revision (its commit in `uid`): the others
/// fetch at once, so a webhook that reached one replica through the Service reaches them all.
const REVISION_TAKEN: &str = "revision";

/// Agents held by other replicas, as read from the shared store.
type Remote = HashMap<InstanceUid, Arc<Mutex<AgentRecord>>>;

/// Whether the store works, as `/api/summary` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StoreStatus {
    pub backend: &'static str,
    pub ok: bool,
    pub last_error: Option<String>,
}

/// What the registry owes the store.
pub struct Persistence {
    enabled: AtomicBool,
    dirty: Mutex<HashSet<InstanceUid>>,
    forgotten: Mutex<HashSet<InstanceUid>>,
    status: Mutex<StoreStatus>,
    replica_id: Mutex<Option<String>>,
    remote: RwLock<Remote>,
    /// Where actions for another replica's agents go (the relay NOTIFYs them).
    forward: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// Operator decisions on rollouts not written yet.
    rollouts: Mutex<Vec<StoredRollout>>,
    /// The recent audit events of the other replicas, oldest first (a shared store).
    remote_events: RwLock<Arc<Vec<AuditEvent>>>,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            enabled: AtomicBool::new(false),
            dirty: Mutex::default(),
            forgotten: Mutex::default(),
            status: Mutex::new(StoreStatus {
                backend: "memory",
                ok: true,
                last_error: None,
            }),
            replica_id: Mutex::default(),
            remote: RwLock::default(),
            forward: Mutex::default(),
            rollouts: Mutex::default(),
            remote_events: RwLock::default(),
        }
    }
}

impl Persistence {
    /// The agent changed: the next flush writes it.
    pub fn mark(&self, uid: InstanceUid) {
        if self.enabled.load(Ordering::Relaxed) {
            self.dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid);
        }
    }

    /// The agent was forgotten: the next flush deletes it.
    pub fn mark_forgotten(&self, uid: InstanceUid) {
        if self.enabled.load(Ordering::Relaxed) {
            self.dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            self.forgotten
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid);
        }
    }

    /// Operator decisions on rollouts: the next flush writes them and announces them to the
    /// other replicas.
    pub fn mark_rollouts(&self, decided: Vec<StoredRollout>) {
        if self.enabled.load(Ordering::Relaxed) {
            self.rollouts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(decided);
        }
    }

    /// A failed write's decisions go back, behind any newer one for the same revision and scope.
    fn put_back_rollouts(&self, failed: Vec<StoredRollout>) {
        let mut pending = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        let newer: Vec<StoredRollout> = std::mem::take(&mut *pending);
        pending.extend(failed.into_iter().filter(|f| {
            !newer
                .iter()
                .any(|n| n.revision == f.revision && n.scope == f.scope)
        }));
        pending.extend(newer);
    }

    fn take(set: &Mutex<HashSet<InstanceUid>>) -> HashSet<InstanceUid> {
        std::mem::take(&mut *set.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn put_back(set: &Mutex<HashSet<InstanceUid>>, uids: impl IntoIterator<Item = InstanceUid>) {
        set.lock().unwrap_or_else(|e| e.into_inner()).extend(uids);
    }

    pub fn replica_id(&self) -> Option<String> {
        self.replica_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn status(&self) -> StoreStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a write's outcome; true when it changed whether the store is ok.
    fn set_outcome(&self, error: Option<String>) -> bool {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let was_ok = status.ok;
        status.ok = error.is_none();
        if error.is_some() {
            status.last_error = error;
        }
        was_ok != status.ok
    }
}

impl Fleet {
    /// Whether the fleet store works.
    pub fn store_status(&self) -> StoreStatus {
        self.persist.status()
    }

    /// The name this server writes its agents under (with a store).
    pub fn replica_id(&self) -> Option<String> {
        self.persist.replica_id()
    }

    /// Marks changes for the store from now on, before it is open (it may open late).
    pub fn persist_from_start(&self, backend: &'static str, replica_id: &str) {
        *self
            .persist
            .replica_id
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(replica_id.to_owned());
        self.persist
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .backend = backend;
        self.persist.enabled.store(true, Ordering::Relaxed);
    }

    /// The store could not be opened: `/api/summary` shows it degraded.
    pub fn store_unavailable(&self, error: &str) {
        self.persist.set_outcome(Some(error.to_owned()));
    }

    /// Starts marking changes for `store` and puts the agents it holds in the registry
    /// (disconnected, each continuing from its stored sequence number); returns how many.
    pub fn restore(
        &self,
        backend: &'static str,
        replica_id: &str,
        agents: Vec<StoredAgent>,
    ) -> usize {
        self.persist_from_start(backend, replica_id);
        let ttl = self.config.agent_ttl;
        let now = SystemTime::now();
        let mut registry = self.agents.write().unwrap_or_else(|e| e.into_inner());
        let mut restored = 0;
        for stored in agents {
            let silent = now.duration_since(stored.last_seen).unwrap_or_default();
            let uid = InstanceUid::from_bytes(stored.instance_uid);
            if silent >= ttl {
                self.persist.mark_forgotten(uid);
                continue;
            }
            if registry.len() >= self.config.max_agents || registry.contains_key(&uid) {
                continue;
            }
            registry.insert(
                uid,
                Arc::new(Mutex::new(restored_record(uid, stored, silent))),
            );
            restored += 1;
        }
        restored
    }

    /// The agents other replicas hold now, replacing the last read.
    pub fn set_remote(&self, agents: Vec<StoredAgent>) {
        let now = SystemTime::now();
        let remote: Remote = agents
            .into_iter()
            .map(|stored| {
                let uid = InstanceUid::from_bytes(stored.instance_uid);
                let connected = stored.connected;
                let silent = now.duration_since(stored.last_seen).unwrap_or_default();
                let replica = stored.replica_id.clone();
                let mut rec = restored_record(uid, stored, silent);
                rec.connected = connected;
                rec.replica = Some(replica);
                (uid, Arc::new(Mutex::new(rec)))
            })
            .collect();
        *self
            .persist
            .remote
            .write()
            .unwrap_or_else(|e| e.into_inner()) = remote;
    }

    /// The record shown for `uid`: a connected one of this replica, else another replica's,
    /// else a disconnected one of this replica.
    pub fn visible_record(&self, uid: &InstanceUid) -> Option<Arc<Mutex<AgentRecord>>> {
        let local = self.record(uid);
        if local.as_ref().is_some_and(|r| lock(r).connected) {
            return local;
        }
        let remote = self
            .persist
            .remote
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned();
        remote.or(local)
    }

    /// The other replicas' recent audit events, oldest first (empty without a shared store).
    pub fn remote_events(&self) -> Arc<Vec<AuditEvent>> {
        self.persist
            .remote_events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The agents other replicas hold that this one does not hold connected.
    pub fn remote_records(&self) -> Vec<Arc<Mutex<AgentRecord>>> {
        let remote = self
            .persist
            .remote
            .read()
            .unwrap_or_else(|e| e.into_inner());
        remote
            .iter()
            .filter(|(uid, _)| !self.record(uid).is_some_and(|r| lock(&r).connected))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Every agent shown, this replica's and the others', one record each.
    pub fn visible_records(&self) -> Vec<Arc<Mutex<AgentRecord>>> {
        let remote = self
            .persist
            .remote
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if remote.is_empty() {
            return self.records();
        }
        let mut shown: Vec<Arc<Mutex<AgentRecord>>> = Vec::new();
        let mut local = HashSet::new();
        for record in self.records() {
            let rec = lock(&record);
            if rec.connected || !remote.contains_key(&rec.uid) {
                local.insert(rec.uid);
                drop(rec);
                shown.push(record);
            }
        }
        shown.extend(
            remote
                .iter()
                .filter(|(uid, _)| !local.contains(uid))
                .map(|(_, r)| r.clone()),
        );
        shown
    }

    /// An action for an agent another replica holds goes to that replica; `None` when this
    /// replica carries it out itself.
    pub(super) fn forward(
        &self,
        uid: &InstanceUid,
        action: AgentAction,
    ) -> Option<Result<(), ActionError>> {
        if self.record(uid).is_some_and(|r| lock(&r).connected) {
            return None;
        }
        let remote = self
            .persist
            .remote
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()?;
        let rec = lock(&remote);
        let replica = rec.replica.clone().filter(|_| rec.connected)?;
        let needs = match action {
            AgentAction::Push => agent_caps::ACCEPTS_REMOTE_CONFIG,
            AgentAction::Restart => agent_caps::ACCEPTS_RESTART_COMMAND,
        };
        if !rec.state.has(needs) {
            return Some(Err(ActionError::Conflict(format!(
                "the agent does not accept this action (capabilities: {})",
                agent_caps::names(rec.state.capabilities).join(", ")
            ))));
        }
        let sender = self
            .persist
            .forward
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let payload = ForwardedAction {
            action: match action {
                AgentAction::Push => "push".into(),
                AgentAction::Restart => "restart".into(),
            },
            uid: uid.to_string(),
            replica,
        };
        Some(
            sender
                .send(serde_json::to_string(&payload).unwrap_or_default())
                .map_err(|_| ActionError::Busy),
        )
    }

    /// What the store keeps of one agent; the history only when it changed (the flag is
    /// cleared: a failed write sets it again).
    fn stored_agent(&self, rec: &mut AgentRecord, replica_id: &str) -> StoredAgent {
        let served = self.served();
        let desired = self.desired_of(served.as_deref(), rec);
        let (desired_hash, rule) = match &desired {
            Desired::Config(c) => (Some(c.hash_hex()), Some(c.rule.clone())),
            Desired::Invalid { rule, .. } => (None, Some(rule.clone())),
            Desired::Unmanaged => (None, None),
        };
        let state = &rec.state;
        let status = state.remote_config_status.as_ref();
        let health = state.health.as_ref();
        let effective: Option<BTreeMap<String, String>> = state
            .effective_config
            .as_ref()
            .and_then(|e| e.config_map.as_ref())
            .map(|m| {
                m.config_map
                    .iter()
                    .map(|(k, f)| (k.clone(), String::from_utf8_lossy(&f.body).into_owned()))
                    .collect()
            });
        let history =
            std::mem::take(&mut rec.history_changed).then(|| rec.history.iter().cloned().collect());
        StoredAgent {
            instance_uid: *rec.uid.as_bytes(),
            identifying: rec.info.identifying.clone(),
            non_identifying: rec.info.non_identifying.clone(),
            capabilities: state.capabilities,
            sequence_num: state.sequence_num,
            reported_hash: state.reported_hash().map(hex::encode),
            remote_config_status: state.reported_status().map(|s| status_text(s).to_owned()),
            error_message: status
                .map(|s| s.error_message.clone())
                .filter(|m| !m.is_empty()),
            healthy: health.map(|h| h.healthy),
            health_status: health.map(|h| h.status.clone()).filter(|s| !s.is_empty()),
            health_error: health
                .map(|h| h.last_error.clone())
                .filter(|s| !s.is_empty()),
            effective_config_hash: effective.as_ref().map(|m| hex::encode(config_hash(m))),
            effective_config: effective,
            desired_hash,
            revision: served
                .filter(|_| !matches!(desired, Desired::Unmanaged))
                .map(|s| s.id().to_owned()),
            rule,
            transport: rec.transport.as_str().to_owned(),
            replica_id: replica_id.to_owned(),
            connected: rec.connected,
            first_seen: rec.first_seen,
            last_seen: rec.last_seen,
            token_name: rec.token_name.clone(),
            history,
        }
    }
}

fn status_text(status: RemoteConfigStatuses) -> &'static str {
    match status {
        RemoteConfigStatuses::Unset => "unset",
        RemoteConfigStatuses::Applied => "applied",
        RemoteConfigStatuses::Applying => "applying",
        RemoteConfigStatuses::Failed => "failed",
    }
}

fn string_attributes(attributes: &BTreeMap<String, String>) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.clone())),
            }),
        })
        .collect()
}

/// A stored agent as a disconnected registry record, its protocol state rebuilt from what it
/// last reported.
fn restored_record(uid: InstanceUid, stored: StoredAgent, silent: Duration) -> AgentRecord {
    let transport = if stored.transport == "http" {
        Transport::Http
    } else {
        Transport::Ws
    };
    let mut rec = AgentRecord::new(uid, Bytes::copy_from_slice(uid.as_bytes()), transport);
    let mut applied = None;
    let state = &mut rec.state;
    state.sequence_num = stored.sequence_num;
    state.capabilities = stored.capabilities;
    if !stored.identifying.is_empty() || !stored.non_identifying.is_empty() {
        state.description = Some(AgentDescription {
            identifying_attributes: string_attributes(&stored.identifying),
            non_identifying_attributes: string_attributes(&stored.non_identifying),
        });
    }
    if let Some(status) = &stored.remote_config_status {
        let code = match status.as_str() {
            "applied" => RemoteConfigStatuses::Applied,
            "applying" => RemoteConfigStatuses::Applying,
            "failed" => RemoteConfigStatuses::Failed,
            _ => RemoteConfigStatuses::Unset,
        };
        let hash = stored
            .reported_hash
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_default();
        if code == RemoteConfigStatuses::Failed {
            state.failed_hash = hash.as_slice().try_into().ok();
        }
        if code == RemoteConfigStatuses::Applied {
            applied = hash.as_slice().try_into().ok();
        }
        state.remote_config_status = Some(RemoteConfigStatus {
            last_remote_config_hash: hash.into(),
            status: code as i32,
            error_message: stored.error_message.clone().unwrap_or_default(),
        });
    }
    if let Some(healthy) = stored.healthy {
        state.health = Some(ComponentHealth {
            healthy,
            status: stored.health_status.clone().unwrap_or_default(),
            last_error: stored.health_error.clone().unwrap_or_default(),
            ..ComponentHealth::default()
        });
    }
    if let Some(files) = stored.effective_config {
        state.effective_config = Some(EffectiveConfig {
            config_map: Some(AgentConfigMap {
                config_map: files
                    .into_iter()
                    .map(|(name, body)| {
                        (
                            name,
                            AgentConfigFile {
                                body: body.into(),
                                content_type: "text/yaml".into(),
                            },
                        )
                    })
                    .collect(),
            }),
        });
    }
    rec.refresh_info();
    rec.applied_hash = applied;
    rec.connected = false;
    rec.first_seen = stored.first_seen;
    rec.last_seen = stored.last_seen;
    rec.last_heard = Instant::now()
        .checked_sub(silent)
        .unwrap_or_else(Instant::now);
    rec.token_name = stored.token_name;
    rec.history = stored.history.unwrap_or_default().into();
    rec.resumed_from = stored.sequence_num;
    rec
}

/// An agent loaded from the store sends its first message: a sequence number that continues
/// the stored one keeps what was stored (no full-state request, no push when the hash
/// matches); anything else drops it, so the usual full-state request follows.
pub fn continue_or_reset(rec: &mut AgentRecord, sequence_num: u64) {
    if let Some(stored) = rec.resumed_from.take() {
        if sequence_num != stored.wrapping_add(1) {
            tracing::info!(agent = %rec.uid, stored, sequence_num, "agent does not continue its stored sequence: asking for its full state");
            rec.state = Default::default();
        }
    }
}

/// The payload of a NOTIFY on the actions channel: which replica should do what to which agent.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardedAction {
    pub action: String,
    pub uid: String,
    pub replica: String,
}

/// Carries actions between replicas through the shared store: NOTIFYs what this replica
/// forwards and each revision it takes, and carries out what others forward to it (a
/// revision another replica took wakes `refresh`, this replica's fetch).
pub async fn relay(
    fleet: Arc<Fleet>,
    store: Arc<FleetStore>,
    refresh: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let Some(shared) = store.shared() else {
        return;
    };
    let me = fleet.persist.replica_id().unwrap_or_default();
    let mut revisions = fleet.subscribe();
    let current_commit = |revisions: &crate::source::RevisionWatch| {
        revisions.borrow().as_ref().map(|r| r.id.clone())
    };
    let (tx, mut outgoing) = mpsc::unbounded_channel::<String>();
    *fleet
        .persist
        .forward
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(tx);
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    let mut incoming: Option<mpsc::Receiver<String>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = retry.tick(), if incoming.is_none() => match shared.listen().await {
                Ok(rx) => incoming = Some(rx),
                Err(e) => tracing::debug!(error = %e, "cannot LISTEN for forwarded actions yet"),
            },
            Some(payload) = outgoing.recv() => {
                if let Err(e) = shared.notify(&payload).await {
                    tracing::warn!(error = %e, payload, "could not forward an action to its replica");
                }
            }
            changed = revisions.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(commit) = current_commit(&revisions) else {
                    continue;
                };
                let taken = ForwardedAction {
                    action: REVISION_TAKEN.into(),
                    uid: commit,
                    replica: me.clone(),
                };
                if let Err(e) = shared.notify(&serde_json::to_string(&taken).unwrap_or_default()).await {
                    tracing::debug!(error = %e, "could not announce the new revision: the other replicas take it at their next poll");
                }
            }
            payload = async { incoming.as_mut()?.recv().await }, if incoming.is_some() => {
                let Some(payload) = payload else {
                    incoming = None;
                    continue;
                };
                if let Some(commit) = revision_taken_elsewhere(&payload, &me) {
                    if current_commit(&revisions).as_deref() != Some(commit.as_str()) {
                        tracing::info!(commit, "another replica took a new revision: fetching now");
                        refresh.notify_one();
                    }
                    continue;
                }
                if is_rollout_decision(&payload, &me) {
                    match store.rollouts().await {
                        Ok(decisions) => {
                            fleet.rollouts.adopt(decisions);
                            fleet.rollout_tick();
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the rollout decisions another replica announced"),
                    }
                    continue;
                }
                carry_out(&fleet, &me, &payload);
            }
        }
    }
}

/// Another replica took a new revision: its commit.
fn revision_taken_elsewhere(payload: &str, me: &str) -> Option<String> {
    serde_json::from_str::<ForwardedAction>(payload)
        .ok()
        .filter(|f| f.action == REVISION_TAKEN && f.replica != me)
        .map(|f| f.uid)
}

/// Another replica stored rollout decisions.
fn is_rollout_decision(payload: &str, me: &str) -> bool {
    serde_json::from_str::<ForwardedAction>(payload)
        .is_ok_and(|f| f.action == ROLLOUT_DECIDED && f.replica != me)
}

/// A forwarded action: carried out when it names this replica.
fn carry_out(fleet: &Fleet, me: &str, payload: &str) {
    let Ok(forwarded) = serde_json::from_str::<ForwardedAction>(payload) else {
        return;
    };
    let action = match forwarded.action.as_str() {
        "push" => AgentAction::Push,
        "restart" => AgentAction::Restart,
        _ => return,
    };
    let Ok(uid) = forwarded.uid.parse::<InstanceUid>() else {
        return;
    };
    if forwarded.replica != me {
        return;
    }
    match fleet.act(&uid, action) {
        Ok(()) => {
            tracing::info!(agent = %uid, action = forwarded.action, "carried out an action forwarded by another replica")
        }
        Err(e) => {
            tracing::warn!(agent = %uid, action = forwarded.action, error = %e, "a forwarded action failed")
        }
    }
}

/// The flusher: writes what changed every `interval`, and once more at shutdown.
pub struct Flusher {
    pub fleet: Arc<Fleet>,
    pub store: Arc<FleetStore>,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub replica: ReplicaBeat,
    /// Added to the audit log's ids when written: past the stored ones when the store opened
    /// only after events were recorded (a start while it was down).
    pub event_ids_from: u64,
    pub remote_pace: RemotePace,
}

/// When the other replicas' agents and events were last read, and how long that took: they are
/// read at most once a flush, and a replica spends at most a tenth of its time reading them, so
/// a large fleet is read less often instead of keeping the replica busy; but at least every
/// [`REMOTE_READ_MAX_GAP`], so that one read slowed by a busy machine does not leave the view
/// old for long.
#[derive(Debug, Default)]
pub struct RemotePace(Mutex<Option<(Instant, Duration)>>);

pub const REMOTE_READ_MAX_GAP: Duration = Duration::from_secs(30);

impl RemotePace {
    fn due(&self, interval: Duration) -> bool {
        match *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some((started, took)) => {
                let gap = interval.max((took * 10).min(REMOTE_READ_MAX_GAP));
                started.elapsed() >= gap
            }
        }
    }

    fn read(&self, started: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((started, started.elapsed()));
    }
}

impl Flusher {
    /// With a shared store: the agents other replicas hold, for the API to show.
    async fn read_remote(&self) {
        if self.store.shared().is_none() || !self.remote_pace.due(self.interval) {
            return;
        }
        let started = Instant::now();
        self.read_remote_now().await;
        self.remote_pace.read(started);
    }

    async fn read_remote_now(&self) {
        match self
            .store
            .remote_agents(&self.replica.replica_id, REPLICA_LEASE)
            .await
        {
            Ok(remote) => self.fleet.set_remote(remote),
            Err(e) => tracing::debug!(error = %e, "cannot read other replicas' agents"),
        }
        match self
            .store
            .remote_events(&self.replica.replica_id, REMOTE_EVENTS_SHOWN)
            .await
        {
            Ok(stored) => {
                let events: Vec<AuditEvent> = stored
                    .into_iter()
                    .filter_map(|s| {
                        Some(AuditEvent {
                            id: s.id,
                            at: s.at,
                            kind: serde_json::from_str(&s.body).ok()?,
                        })
                    })
                    .collect();
                *self
                    .fleet
                    .persist
                    .remote_events
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(events);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read other replicas' events"),
        }
    }

    /// Tells the other replicas that rollout decisions were stored (they read them back).
    async fn announce_rollouts(&self) {
        let Some(shared) = self.store.shared() else {
            return;
        };
        let payload = ForwardedAction {
            action: ROLLOUT_DECIDED.into(),
            uid: String::new(),
            replica: self.replica.replica_id.clone(),
        };
        if let Err(e) = shared
            .notify(&serde_json::to_string(&payload).unwrap_or_default())
            .await
        {
            tracing::warn!(error = %e, "could not announce a rollout decision: other replicas read it at their start");
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.flush().await; }
                _ = shutdown.cancelled() => break,
            }
        }
        self.flush().await;
    }

    /// This replica's heartbeat, on its own timer so that a long flush interval or a slow flush
    /// does not let its lease lapse. A failed beat is retried at the next one; the flush
    /// reports the outage.
    pub async fn beat(store: Arc<FleetStore>, replica: ReplicaBeat, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let batch = Batch {
                replica: Some(replica.clone()),
                heartbeat: true,
                ..Batch::default()
            };
            match tokio::time::timeout(HEARTBEAT_INTERVAL, store.write(batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "replica heartbeat not written"),
                Err(_) => tracing::debug!("replica heartbeat timed out"),
            }
        }
    }

    /// One batch: the dirty agents' snapshots, the forgotten ones, new audit events and the
    /// replica heartbeat. On failure everything goes back to be written next time.
    pub async fn flush(&self) -> bool {
        let persist = &self.fleet.persist;
        let dirty = Persistence::take(&persist.dirty);
        let forgotten = Persistence::take(&persist.forgotten);
        let mut agents = Vec::with_capacity(dirty.len());
        for uid in &dirty {
            if let Some(record) = self.fleet.record(uid) {
                let mut rec = lock(&record);
                agents.push(self.fleet.stored_agent(&mut rec, &self.replica.replica_id));
            }
        }
        let events = self.audit.take_unsaved();
        let rollouts =
            std::mem::take(&mut *persist.rollouts.lock().unwrap_or_else(|e| e.into_inner()));
        let batch = Batch {
            agents,
            forgotten: forgotten.iter().map(|u| *u.as_bytes()).collect(),
            events: events
                .iter()
                .map(|e| {
                    let mut stored = AuditLog::stored(e);
                    stored.id += self.event_ids_from;
                    stored
                })
                .collect(),
            rollouts: rollouts.clone(),
            replica: Some(self.replica.clone()),
            heartbeat: false,
        };
        let with_history: Vec<InstanceUid> = batch
            .agents
            .iter()
            .filter(|a| a.history.is_some())
            .map(|a| InstanceUid::from_bytes(a.instance_uid))
            .collect();
        let written = batch.agents.len();
        let outcome = match tokio::time::timeout(WRITE_TIMEOUT, self.store.write(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("a write took longer than {WRITE_TIMEOUT:?}")),
        };
        match outcome {
            Ok(()) => {
                self.metrics.store_writes.inc();
                self.metrics.store_agent_writes.inc_by(written as u64);
                if persist.set_outcome(None) {
                    tracing::info!(
                        backend = self.store.backend(),
                        agents = written,
                        "fleet store available again: caught up"
                    );
                }
                if !rollouts.is_empty() {
                    self.announce_rollouts().await;
                }
                self.read_remote().await;
                true
            }
            Err(error) => {
                self.metrics.store_errors.inc();
                for uid in &with_history {
                    if let Some(record) = self.fleet.record(uid) {
                        lock(&record).history_changed = true;
                    }
                }
                Persistence::put_back(&persist.dirty, dirty);
                Persistence::put_back(&persist.forgotten, forgotten);
                self.audit.requeue(events);
                persist.put_back_rollouts(rollouts);
                if persist.set_outcome(Some(error.clone())) {
                    tracing::error!(backend = self.store.backend(), %error, "fleet store unavailable: agents are served from memory, writes are retried every flush");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_read_is_paced_by_its_own_duration_up_to_a_bound() {
        let pace = RemotePace::default();
        assert!(pace.due(Duration::from_secs(1)), "never read: due");
        pace.read(Instant::now());
        assert!(!pace.due(Duration::from_secs(1)), "just read: not due");
        let long_ago = Instant::now() - Duration::from_secs(20);
        *pace.0.lock().unwrap() = Some((long_ago, Duration::from_secs(1)));
        assert!(
            pace.due(Duration::from_secs(1)),
            "a 1 s read waits 10 s, and 20 s have passed"
        );
        *pace.0.lock().unwrap() = Some((long_ago, Duration::from_secs(3)));
        assert!(!pace.due(Duration::from_secs(1)), "a 3 s read waits 30 s");
        let longer_ago = Instant::now() - REMOTE_READ_MAX_GAP;
        *pace.0.lock().unwrap() = Some((longer_ago, Duration::from_secs(60)));
        assert!(
            pace.due(Duration::from_secs(1)),
            "never longer than the bound"
        );
    }
}
