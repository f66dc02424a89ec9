//! The fleet: the registry of agents keyed by instance uid, and the reconcile policy that
//! decides what each agent is sent. Level-triggered: at every message and every new revision,
//! an agent whose reported hash differs from its desired hash is offered the desired config.

pub mod attach;
pub mod components;
pub mod connections;
pub mod drift;
pub mod events;
pub mod history;
pub mod limits;
pub mod lineage;
pub mod persist;
pub mod record;
pub mod rollout;
pub mod served;
pub mod status;
pub mod view;

use crate::audit::{AuditKind, AuditLog};
use crate::metrics::Metrics;
use crate::opamp::builders;
use crate::opamp::codec::Reply;
use crate::opamp::proto::{
    AgentToServer, ConnectionSettingsOffers, OpAmpConnectionSettings, RemoteConfigStatuses,
    ServerErrorResponseType,
};
use crate::opamp::session::{self, ConnectionId, Intent, SessionEvent};
use crate::opamp::uid::InstanceUid;
use crate::opamp::{agent_caps, server_caps};
use crate::options::parse_duration;
use crate::repo::fleet::FLEET_SCOPE;
use crate::repo::hash::ConfigHash;
use crate::repo::rollout::RolloutSpec;
use crate::repo::Desired;
use crate::source::RevisionWatch;
use bytes::Bytes;
use connections::ConnectionIndex;
use limits::{InputLimits, MAX_AGENTS_PER_CONNECTION};
use lineage::Lineage;
use record::{AgentRecord, LiveSession, SessionCommand, Transport};
use served::{desired_in, Served, Takes};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};
#[derive(Debug, Clone, clap::Args)]
pub struct FleetConfig {
    /// Heartbeat interval offered to agents that report heartbeats; three silent intervals
    /// make an agent stale.
    #[arg(long, env = "OPAMP_GITOPS_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_duration, help_heading = "Listeners")]
    pub heartbeat_interval: Duration,
    /// The URL agents reach this server at; enables heartbeat-interval offers (without it no
    /// connection settings are offered).
    #[arg(long, env = "OPAMP_GITOPS_ADVERTISE_URL", help_heading = "Listeners")]
    pub advertise_url: Option<String>,
    /// Disconnected agents are forgotten after this long.
    #[arg(long, env = "OPAMP_GITOPS_AGENT_TTL", default_value = "24h", value_parser = parse_duration, help_heading = "Limits")]
    pub agent_ttl: Duration,
    /// The most agents the registry holds; new ones beyond it are asked to retry later.
    #[arg(
        long,
        env = "OPAMP_GITOPS_MAX_AGENTS",
        default_value_t = 100_000,
        help_heading = "Limits"
    )]
    pub max_agents: usize,
    /// What an agent may make the server keep.
    #[command(flatten)]
    pub limits: InputLimits,
}

impl Default for FleetConfig {
    fn default() -> Self {
        crate::options::defaults()
    }
}

/// Who is talking: one WebSocket (for its whole life) or one HTTP request.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: ConnectionId,
    pub transport: Transport,
    pub token_name: Option<String>,
    /// For WebSocket sessions: where the registry sends pushes and commands.
    pub commands: Option<tokio::sync::mpsc::Sender<SessionCommand>>,
}

/// The answer to one message.
#[derive(Debug)]
pub enum Handled {
    /// A normal reply, for the agent with this uid.
    Reply { uid: InstanceUid, reply: Reply },
    /// The message could not be taken (bad uid): an error reply.
    Rejected(Reply),
    /// The registry is full: an UNAVAILABLE reply (HTTP answers 503 instead).
    Unavailable { reply: Reply, retry_after: Duration },
}

pub struct Fleet {
    config: FleetConfig,
    revisions: RevisionWatch,
    agents: RwLock<HashMap<InstanceUid, Arc<Mutex<AgentRecord>>>>,
    /// The uids each live WebSocket connection speaks for: its close releases every one.
    connections: ConnectionIndex,
    /// The revision served and its encoded configs, swapped when the watch changes.
    served: RwLock<Option<Arc<Served>>>,
    /// The hashes recent revisions rendered: which commit an agent's running config came from.
    lineage: Lineage,
    /// The heartbeat interval offered to agents that heartbeat (with `--advertise-url`).
    heartbeat: Option<OpAmpConnectionSettings>,
    capabilities: u64,
    next_connection: AtomicU64,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    /// What the fleet store has not written yet (nothing without a store).
    persist: persist::Persistence,
    /// Staged rollouts: which waves each scope admits under the revision served.
    rollouts: rollout::Rollouts,
    /// Agents' component lists, by the hash they report.
    catalog: components::ComponentCatalog,
    started: Instant,
    /// When the registry last took in an agent it did not know (rollouts wait for the fleet
    /// to reconnect after a start before they infer waves from it).
    last_new_agent: Mutex<Instant>,
}

fn lock(record: &Mutex<AgentRecord>) -> MutexGuard<'_, AgentRecord> {
    record.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fleet {
    pub fn new(
        config: FleetConfig,
        revisions: RevisionWatch,
        metrics: Arc<Metrics>,
        audit: Arc<AuditLog>,
    ) -> Fleet {
        let heartbeat = config
            .advertise_url
            .as_ref()
            .map(|url| builders::heartbeat_settings(url, config.heartbeat_interval));
        let capabilities = server_caps::ACCEPTS_STATUS
            | server_caps::OFFERS_REMOTE_CONFIG
            | server_caps::ACCEPTS_EFFECTIVE_CONFIG;
        Fleet {
            config,
            revisions,
            agents: RwLock::default(),
            connections: ConnectionIndex::default(),
            served: RwLock::default(),
            lineage: Lineage::default(),
            heartbeat,
            capabilities,
            next_connection: AtomicU64::new(1),
            metrics,
            audit,
            persist: persist::Persistence::default(),
            rollouts: rollout::Rollouts::default(),
            catalog: components::ComponentCatalog::default(),
            started: Instant::now(),
            last_new_agent: Mutex::new(Instant::now()),
        }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    pub fn capabilities(&self) -> u64 {
        self.capabilities
    }

    pub fn new_connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// The revision being served, with its encodings: the watch's value, wrapped once.
    pub fn served(&self) -> Option<Arc<Served>> {
        let revision = self.revisions.borrow().clone()?;
        let same = |s: &&Arc<Served>| Arc::ptr_eq(&s.revision, &revision);
        if let Some(served) = self
            .served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(same)
        {
            return Some(served.clone());
        }
        let mut slot = self.served.write().unwrap_or_else(|e| e.into_inner());
        if let Some(served) = slot.as_ref().filter(same) {
            return Some(served.clone());
        }
        let served = Arc::new(Served::new(revision));
        if let Some(replaced) = slot.replace(served.clone()) {
            self.lineage.retire(&replaced.revision);
        }
        Some(served)
    }

    /// The revision whose render produced `hash`, among the current one and those it replaced.
    pub fn revision_of(&self, hash: &ConfigHash) -> Option<String> {
        let served = self.served();
        self.lineage
            .revision_of(served.as_ref().map(|s| s.revision.as_ref()), hash)
    }

    pub fn subscribe(&self) -> RevisionWatch {
        self.revisions.clone()
    }

    pub fn len(&self) -> usize {
        self.agents.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn record(&self, uid: &InstanceUid) -> Option<Arc<Mutex<AgentRecord>>> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    pub fn records(&self) -> Vec<Arc<Mutex<AgentRecord>>> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The desired config of an agent under the revision served.
    pub fn desired(&self, record: &AgentRecord) -> Desired {
        self.desired_of(self.served().as_deref(), record)
    }

    /// The desired config of an agent under `served`: its rule's render, unless it uses a
    /// component type the agent's build lacks, which makes it a render error naming both.
    pub fn desired_of(&self, served: Option<&Served>, record: &AgentRecord) -> Desired {
        let desired = desired_in(served, &record.info);
        let (Desired::Config(config), Some(served), Some(have)) =
            (&desired, served, record.components.set())
        else {
            return desired;
        };
        let missing = have.missing(&served.used_components(config));
        if missing.is_empty() {
            return desired;
        }
        let message =
            crate::repo::components::missing_message(&config.rule, &missing, "the agent's");
        Desired::Invalid {
            rule: config.rule.clone(),
            diagnostics: Arc::new(vec![
                crate::diagnostics::Diagnostic::error(message).for_rule(&config.rule)
            ]),
        }
    }

    fn intent(
        &self,
        rec: &AgentRecord,
        desired: &Desired,
        served: Option<&Served>,
        connection: ConnectionId,
    ) -> Intent {
        // Connection settings are offered with a heartbeat interval to offer, or a revision
        // whose rules name own-telemetry destinations.
        let offers_settings = self.heartbeat.is_some() || served.is_some_and(|s| s.has_telemetry);
        Intent {
            capabilities: if offers_settings {
                self.capabilities | server_caps::OFFERS_CONNECTION_SETTINGS
            } else {
                self.capabilities
            },
            remote_config: match (desired, served) {
                // Until its components are known, what it can run is not.
                _ if rec.components.wanted() => None,
                _ if self.held(rec, desired, served) => None,
                (Desired::Config(config), Some(served)) => Some(served.encoded(config)),
                _ => None,
            },
            settings: self.connection_settings(rec, desired, served),
            connection,
        }
    }

    /// What this agent is offered as connection settings: the heartbeat interval when it
    /// heartbeats, and its rule's own-telemetry destinations for the signals it reports.
    fn connection_settings(
        &self,
        rec: &AgentRecord,
        desired: &Desired,
        served: Option<&Served>,
    ) -> Option<ConnectionSettingsOffers> {
        let state = &rec.state;
        let mut takes = Takes::default();
        for (cap, bit) in [
            (agent_caps::REPORTS_HEARTBEAT, Takes::HEARTBEAT),
            (agent_caps::REPORTS_OWN_METRICS, Takes::METRICS),
            (agent_caps::REPORTS_OWN_LOGS, Takes::LOGS),
            (agent_caps::REPORTS_OWN_TRACES, Takes::TRACES),
        ] {
            if state.has(cap) {
                takes.0 |= bit;
            }
        }
        match served {
            Some(served) => served.settings_offer(desired.rule(), takes, self.heartbeat.as_ref()),
            // Before any revision: only the heartbeat interval.
            None => self
                .heartbeat
                .clone()
                .filter(|_| takes.0 & Takes::HEARTBEAT != 0)
                .map(|opamp| {
                    builders::with_hash(ConnectionSettingsOffers {
                        opamp: Some(opamp),
                        ..Default::default()
                    })
                }),
        }
    }

    /// Whether a message from `uid` would find its record: the agent is known, or there is room
    /// for one more.
    pub fn has_room_for(&self, uid: &InstanceUid) -> bool {
        let agents = self.agents.read().unwrap_or_else(|e| e.into_inner());
        agents.contains_key(uid) || agents.len() < self.config.max_agents
    }

    /// Looks up or creates the record of `uid`; `None` when the registry is full.
    fn record_for(
        &self,
        uid: InstanceUid,
        uid_bytes: &Bytes,
        transport: Transport,
    ) -> Option<Arc<Mutex<AgentRecord>>> {
        if let Some(record) = self.record(&uid) {
            return Some(record);
        }
        let mut agents = self.agents.write().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = agents.get(&uid) {
            return Some(record.clone());
        }
        if agents.len() >= self.config.max_agents {
            return None;
        }
        let record = Arc::new(Mutex::new(AgentRecord::new(
            uid,
            uid_bytes.clone(),
            transport,
        )));
        agents.insert(uid, record.clone());
        *self
            .last_new_agent
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Some(record)
    }

    /// Takes in one message from an agent and returns the reply.
    pub fn handle(&self, mut msg: AgentToServer, connection: &Connection) -> Handled {
        let uid_bytes = msg.instance_uid.clone();
        // Read before the limits cut the report: a cut list would lack components the build has.
        let components_report = msg.available_components.as_ref().map(|report| {
            let list = (!report.components.is_empty()).then(|| {
                (!self.config.limits.components_over(report))
                    .then(|| components::from_report(report))
            });
            (report.hash.clone(), list)
        });
        if let Err(why) = self.config.limits.apply(&mut msg) {
            return Handled::Rejected(session::error_reply(
                uid_bytes,
                ServerErrorResponseType::BadRequest,
                why,
                None,
            ));
        }
        let uid = match InstanceUid::parse(&uid_bytes) {
            Ok(uid) => uid,
            Err(e) => {
                return Handled::Rejected(session::error_reply(
                    uid_bytes,
                    ServerErrorResponseType::BadRequest,
                    e.to_string(),
                    None,
                ))
            }
        };
        if connection.commands.is_some() && !self.connections.admit(connection.id, uid) {
            return Handled::Rejected(session::error_reply(
                uid_bytes,
                ServerErrorResponseType::BadRequest,
                format!("one connection may speak for at most {MAX_AGENTS_PER_CONNECTION} agents"),
                None,
            ));
        }
        let Some(record) = self.record_for(uid, &uid_bytes, connection.transport) else {
            let retry_after = Duration::from_secs(30);
            let reply = session::error_reply(
                uid_bytes,
                ServerErrorResponseType::Unavailable,
                format!(
                    "the server holds its maximum of {} agents",
                    self.config.max_agents
                ),
                Some(retry_after),
            );
            return Handled::Unavailable { reply, retry_after };
        };
        let mut rec = lock(&record);
        if self.is_duplicate(&rec, &msg, connection) {
            return self.reassign(rec, &uid_bytes, connection);
        }
        persist::continue_or_reset(&mut rec, msg.sequence_num);
        rec.uid_bytes = uid_bytes.clone();
        rec.last_seen = SystemTime::now();
        rec.last_heard = Instant::now();
        rec.transport = connection.transport;
        rec.connected = true;
        if connection.token_name.is_some() {
            rec.token_name = connection.token_name.clone();
        }
        self.attach_session(&mut rec, connection);

        if msg.effective_config.is_some() {
            rec.effective_version += 1;
        }
        let received = rec.state.receive(msg);
        if received.description_changed {
            rec.refresh_info();
        }
        rec.components = components::next(
            &self.catalog,
            &rec.components,
            rec.state.has(agent_caps::REPORTS_AVAILABLE_COMPONENTS),
            components_report,
        );
        let ask_components = rec.components.wanted() && !received.disconnect;
        if let components::AgentComponents::Unknown { asks, .. } = &mut rec.components {
            if ask_components {
                *asks += 1;
                if *asks > components::MAX_ASKS {
                    tracing::warn!(agent = %uid, "the agent reports available components but did not send its list when asked: configs go out unchecked");
                }
            }
        }
        if let Some((hash, status, error)) = &received.status_report {
            self.on_status_report(&mut rec, hash, *status, error);
        }
        if received.disconnect {
            rec.connected = false;
            rec.session = None;
            tracing::info!(agent = %uid, "agent disconnected");
        }
        let served = self.served();
        let desired = self.desired_of(served.as_deref(), &rec);
        let revision = served.as_ref().map(|s| s.id());
        if let Desired::Invalid { .. } = &desired {
            if rec.render_error_revision.as_deref() != revision {
                rec.render_error_revision = revision.map(str::to_owned);
                self.metrics.render_errors.inc();
            }
        }
        let intent = self.intent(&rec, &desired, served.as_deref(), connection.id);
        let (mut reply, events) = session::reply(
            &mut rec.state,
            &uid_bytes,
            &received,
            &intent,
            InstanceUid::new_v7,
        );
        if ask_components && rec.components.wanted() {
            reply.message.flags |= crate::opamp::FLAG_REPORT_AVAILABLE_COMPONENTS;
        }
        if let Some((hash, RemoteConfigStatuses::Applied, _)) = &received.status_report {
            let rendered = matches!(&desired, Desired::Config(c) if c.hash[..] == hash[..]);
            history::applied(
                &mut rec,
                hash,
                revision.filter(|_| rendered),
                SystemTime::now(),
            );
        }
        let new_uid = self.on_events(&mut rec, &events, revision);
        drop(rec);
        self.persist.mark(uid);
        if let Some(new_uid) = new_uid {
            self.rekey(uid, new_uid, &record);
            self.persist.mark_forgotten(uid);
            self.persist.mark(new_uid);
        }
        Handled::Reply { uid, reply }
    }

    /// Whether `msg` comes from another agent than the live one holding its uid (cloned VMs, a
    /// bad uid generator): it describes itself with other identifying attributes while that
    /// agent is live on another WebSocket, or, over HTTP (no connection to tell them apart),
    /// while it is live and the message does not continue its sequence. With the same
    /// identifying attributes it is the same agent reconnecting.
    fn is_duplicate(
        &self,
        rec: &AgentRecord,
        msg: &AgentToServer,
        connection: &Connection,
    ) -> bool {
        let (Some(new), Some(held)) = (&msg.agent_description, &rec.state.description) else {
            return false;
        };
        if record::attribute_texts(&new.identifying_attributes)
            == record::attribute_texts(&held.identifying_attributes)
        {
            return false;
        }
        match &rec.session {
            Some(session) if rec.connected && !session.commands.is_closed() => {
                session.connection != connection.id
            }
            _ => {
                let continues = rec
                    .state
                    .sequence_num
                    .is_some_and(|prev| msg.sequence_num == prev.wrapping_add(1));
                connection.commands.is_none() && rec.connected && !continues && !self.is_stale(rec)
            }
        }
    }

    /// Tells the newer of two agents sharing a uid to take a new one; the live agent keeps its
    /// record untouched.
    fn reassign(
        &self,
        rec: MutexGuard<'_, AgentRecord>,
        uid_bytes: &Bytes,
        connection: &Connection,
    ) -> Handled {
        let old = rec.uid;
        drop(rec);
        let new = InstanceUid::new_v7();
        if connection.commands.is_some() {
            self.connections.rename(connection.id, old, new);
        }
        self.metrics.duplicate_uids.inc();
        tracing::warn!(agent = %old, new_uid = %new, transport = connection.transport.as_str(), "a second agent claims this instance uid with other identifying attributes: told to take a new uid");
        self.audit.record(AuditKind::DuplicateUid {
            agent: old.to_string(),
            new_uid: new.to_string(),
            transport: connection.transport.as_str().to_owned(),
        });
        let reply = Reply {
            message: crate::opamp::proto::ServerToAgent {
                instance_uid: uid_bytes.clone(),
                capabilities: self.capabilities,
                agent_identification: Some(crate::opamp::proto::AgentIdentification {
                    new_instance_uid: Bytes::copy_from_slice(new.as_bytes()),
                }),
                ..Default::default()
            },
            remote_config: None,
        };
        Handled::Reply { uid: new, reply }
    }

    /// A WebSocket session takes over the agent; an older live session is told to close.
    fn attach_session(&self, rec: &mut AgentRecord, connection: &Connection) {
        let Some(commands) = &connection.commands else {
            return;
        };
        if let Some(old) = &rec.session {
            if old.connection == connection.id {
                return;
            }
            if !old.commands.is_closed() {
                tracing::warn!(agent = %rec.uid, old = old.connection, new = connection.id, "a second session for this agent: closing the older one");
                self.metrics.replaced_sessions.inc();
                let _ = old.commands.try_send(SessionCommand::Replaced);
            }
        }
        rec.session = Some(LiveSession {
            connection: connection.id,
            commands: commands.clone(),
        });
    }

    fn on_status_report(
        &self,
        rec: &mut AgentRecord,
        hash: &Bytes,
        status: RemoteConfigStatuses,
        error: &str,
    ) {
        let hex = hex::encode(hash);
        match status {
            RemoteConfigStatuses::Applied => {
                rec.applied_hash = ConfigHash::try_from(hash.as_ref()).ok();
                if let Some((offered, at)) = rec.offered_at {
                    if offered.as_slice() == hash.as_ref() {
                        rec.offered_at = None;
                        self.metrics
                            .push_to_applied
                            .observe(at.elapsed().as_secs_f64());
                        tracing::info!(agent = %rec.uid, hash = %hex, latency_ms = at.elapsed().as_millis() as u64, "config applied");
                    }
                }
            }
            RemoteConfigStatuses::Failed => {
                tracing::warn!(agent = %rec.uid, hash = %hex, error, "agent failed to apply config");
            }
            _ => {}
        }
        let status = match status {
            RemoteConfigStatuses::Unset => "unset",
            RemoteConfigStatuses::Applied => "applied",
            RemoteConfigStatuses::Applying => "applying",
            RemoteConfigStatuses::Failed => "failed",
        };
        self.audit.record(AuditKind::StatusReported {
            agent: rec.uid.to_string(),
            hash: hex,
            status: status.into(),
            error: (!error.is_empty()).then(|| error.to_owned()),
        });
    }

    /// Records what the session did; returns a newly assigned uid.
    fn on_events(
        &self,
        rec: &mut AgentRecord,
        events: &[SessionEvent],
        revision: Option<&str>,
    ) -> Option<InstanceUid> {
        let mut new_uid = None;
        for event in events {
            match event {
                SessionEvent::ConfigOffered { hash } => {
                    self.metrics.config_pushes.inc();
                    rec.offered_at = Some((*hash, Instant::now()));
                    self.audit.record(AuditKind::ConfigSent {
                        agent: rec.uid.to_string(),
                        hash: hex::encode(hash),
                        revision: revision.unwrap_or_default().to_owned(),
                    });
                    tracing::info!(agent = %rec.uid, hash = %hex::encode(hash), revision = revision.unwrap_or_default(), transport = rec.transport.as_str(), "config sent");
                }
                SessionEvent::FullStateRequested => {
                    self.metrics.full_state_requests.inc();
                }
                SessionEvent::NewUidAssigned { new_uid: uid } => new_uid = Some(*uid),
            }
        }
        new_uid
    }

    /// The agents a live WebSocket connection speaks for.
    pub fn connection_agents(&self, connection: ConnectionId) -> Vec<InstanceUid> {
        self.connections.agents(connection)
    }

    /// The agent asked for a new uid: its record moves there, and so does the connection that
    /// speaks for it.
    fn rekey(&self, old: InstanceUid, new: InstanceUid, record: &Arc<Mutex<AgentRecord>>) {
        let mut agents = self.agents.write().unwrap_or_else(|e| e.into_inner());
        agents.remove(&old);
        let mut rec = lock(record);
        rec.uid = new;
        rec.uid_bytes = Bytes::copy_from_slice(new.as_bytes());
        rec.refresh_info();
        let connection = rec.session.as_ref().map(|s| s.connection);
        drop(rec);
        agents.insert(new, record.clone());
        drop(agents);
        if let Some(connection) = connection {
            self.connections.rename(connection, old, new);
        }
        tracing::info!(old = %old, new = %new, "agent assigned a new instance uid");
    }

    /// What to push to an agent on `connection` without being asked (after a new revision or
    /// an operator's push); `None` when there is nothing new.
    pub fn push(&self, uid: &InstanceUid, connection: ConnectionId) -> Option<Reply> {
        let record = self.record(uid)?;
        let mut rec = lock(&record);
        if !rec.connected {
            return None;
        }
        let served = self.served();
        let desired = self.desired_of(served.as_deref(), &rec);
        let intent = self.intent(&rec, &desired, served.as_deref(), connection);
        let uid_bytes = rec.uid_bytes.clone();
        let (reply, events) = session::push(&mut rec.state, &uid_bytes, &intent)?;
        self.on_events(&mut rec, &events, served.as_ref().map(|s| s.id()));
        Some(reply)
    }

    /// Carries out an operator's action on one agent.
    pub fn act(&self, uid: &InstanceUid, action: AgentAction) -> Result<(), ActionError> {
        if let Some(forwarded) = self.forward(uid, action) {
            return forwarded;
        }
        match action {
            AgentAction::Push => self.force_push(uid),
            AgentAction::Restart => self.restart(uid),
        }
    }

    /// An operator's push: forget a remembered failure and send the desired config again, at
    /// once over WebSocket, in the answer to the next poll over HTTP.
    fn force_push(&self, uid: &InstanceUid) -> Result<(), ActionError> {
        let record = self.record(uid).ok_or(ActionError::NotFound)?;
        {
            let mut rec = lock(&record);
            if !rec.state.has(agent_caps::ACCEPTS_REMOTE_CONFIG) {
                return Err(ActionError::Conflict(
                    "the agent does not accept remote config (no AcceptsRemoteConfig capability): a push cannot be delivered".into(),
                ));
            }
            rec.state.force_offer();
        }
        self.deliver(uid)
    }

    /// Sends an agent what it is due now over its live WebSocket session, if it has one (HTTP
    /// agents get it in the answer to their next poll).
    fn deliver(&self, uid: &InstanceUid) -> Result<(), ActionError> {
        let Some(record) = self.record(uid) else {
            return Ok(());
        };
        let session = {
            let rec = lock(&record);
            rec.session.clone().filter(|_| rec.connected)
        };
        if let Some(session) = session {
            if let Some(reply) = self.push(uid, session.connection) {
                session
                    .commands
                    .try_send(SessionCommand::Send(Box::new(reply)))
                    .map_err(|_| ActionError::Busy)?;
            }
        }
        Ok(())
    }

    /// Whether a staged rollout holds this agent back: its desired config is new to it and its
    /// wave is not admitted yet. A cohort comparison, no scan.
    pub fn held(&self, rec: &AgentRecord, desired: &Desired, served: Option<&Served>) -> bool {
        let (Desired::Config(config), Some(served)) = (desired, served) else {
            return false;
        };
        let Some(place) =
            rollout::placement(&served.revision.fleet, &config.rule, &rec.uid, &rec.info)
        else {
            return false;
        };
        if !matches!(
            session::sync_state(&rec.state, &config.hash, None),
            session::SyncState::Due | session::SyncState::Offered
        ) {
            return false;
        }
        !self
            .rollouts
            .admits(served.id(), &place, rollout::runs_nothing(&rec.state))
    }

    /// One pass of the staged rollouts: tally every scope's waves from what the agents report,
    /// move the plans on, and send newly admitted WebSocket agents their config at once.
    pub fn rollout_tick(&self) {
        let Some(served) = self.served() else {
            return;
        };
        // After a start the registry fills as agents reconnect: a wave that looks empty may
        // only not have reconnected yet. Waves are inferred once no new agent came for a
        // while, or a heartbeat interval (when every live agent has spoken) has passed.
        let quiet = self
            .last_new_agent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        let up = self.started.elapsed();
        if up < self.config.heartbeat_interval.min(rollout::SETTLE_MAX)
            && (up < rollout::SETTLE_QUIET || quiet < rollout::SETTLE_QUIET)
        {
            return;
        }
        let spec = &served.revision.fleet;
        let mut scopes: BTreeMap<String, (Arc<RolloutSpec>, Vec<rollout::Observed>)> =
            BTreeMap::new();
        if let Some(r) = &spec.rollout {
            scopes.insert(FLEET_SCOPE.to_owned(), (r.clone(), Vec::new()));
        }
        for rule in &spec.rules {
            if let Some(r) = &rule.rollout {
                scopes.insert(rule.name.clone(), (r.clone(), Vec::new()));
            }
        }
        if !scopes.is_empty() {
            // This replica's agents move its waves; other replicas' agents (a shared store) are
            // shown with the rollout, not counted.
            let local = self.records().into_iter().map(|record| (record, false));
            let remote = self
                .remote_records()
                .into_iter()
                .map(|record| (record, true));
            for (record, remote) in local.chain(remote) {
                let rec = lock(&record);
                if !remote
                    && (rec.state.description.is_none()
                        || !rec.state.has(agent_caps::ACCEPTS_REMOTE_CONFIG))
                {
                    continue;
                }
                let desired = if remote {
                    served.desired(&rec.info)
                } else {
                    self.desired_of(Some(&served), &rec)
                };
                let Desired::Config(config) = desired else {
                    continue;
                };
                let Some(place) = rollout::placement(spec, &config.rule, &rec.uid, &rec.info)
                else {
                    continue;
                };
                let Some((_, observed)) = scopes.get_mut(place.scope) else {
                    continue;
                };
                let failed_here = !remote && rec.state.failed_hash == Some(config.hash);
                observed.push(rollout::Observed {
                    uid: rec.uid,
                    wave: place.wave,
                    standing: rollout::standing(&rec.state, &config.hash),
                    moved: rec.state.reported_hash() == Some(&config.hash[..]) || failed_here,
                    active: !remote && rec.connected && !self.is_stale(&rec),
                    remote,
                });
            }
        }
        let admitted =
            self.rollouts
                .advance(served.id(), scopes, Instant::now(), chrono::Utc::now());
        for uid in admitted {
            if let Err(e) = self.deliver(&uid) {
                tracing::debug!(agent = %uid, error = %e, "admitted agent not pushed now: it gets its config with its next message");
            }
        }
    }

    /// Every scope's rollout under the current revision, as of the last tick.
    pub fn rollouts(&self) -> Vec<rollout::RolloutView> {
        self.rollouts.views()
    }

    /// An operator's pause, resume or promote, for one scope or all; the next tick (run now)
    /// carries it out. With a fleet store the decision is stored (and announced to the other
    /// replicas) by the next flush.
    pub fn rollout_act(
        &self,
        action: rollout::RolloutAction,
        scope: Option<&str>,
        actor: Option<&str>,
    ) -> Result<Vec<String>, rollout::RolloutError> {
        let scopes = self.rollouts.act(action, scope)?;
        if let Some(replica_id) = self.persist.replica_id() {
            let decided = self.rollouts.decided(&scopes, actor, &replica_id);
            self.persist.mark_rollouts(decided);
        }
        self.rollout_tick();
        Ok(scopes)
    }

    /// Asks the agent to restart, when it accepts the command and is connected over WebSocket.
    fn restart(&self, uid: &InstanceUid) -> Result<(), ActionError> {
        let record = self.record(uid).ok_or(ActionError::NotFound)?;
        let rec = lock(&record);
        if !rec.state.has(agent_caps::ACCEPTS_RESTART_COMMAND) {
            return Err(ActionError::Conflict("the agent does not accept the restart command (no AcceptsRestartCommand capability)".into()));
        }
        let session = rec
            .session
            .clone()
            .filter(|_| rec.connected)
            .ok_or_else(|| {
                ActionError::Conflict(
                    "the agent has no live WebSocket session to send the command on".into(),
                )
            })?;
        let reply = session::restart_command(&rec.uid_bytes, self.capabilities);
        drop(rec);
        session
            .commands
            .try_send(SessionCommand::Send(Box::new(reply)))
            .map_err(|_| ActionError::Busy)
    }

    /// A WebSocket closed: every agent it spoke for is no longer connected through it.
    pub fn connection_closed(&self, connection: ConnectionId) {
        for uid in self.connections.close(connection) {
            let Some(record) = self.record(&uid) else {
                continue;
            };
            let mut rec = lock(&record);
            if rec
                .session
                .as_ref()
                .is_some_and(|s| s.connection == connection)
            {
                rec.session = None;
                rec.connected = false;
                self.persist.mark(uid);
            }
        }
    }

    /// Forgets a disconnected agent now, as the TTL sweep would later.
    pub fn forget(&self, uid: &InstanceUid) -> Result<(), ActionError> {
        let mut agents = self.agents.write().unwrap_or_else(|e| e.into_inner());
        let record = agents.get(uid).ok_or(ActionError::NotFound)?;
        if lock(record).connected {
            return Err(ActionError::Conflict(
                "the agent is connected: only a disconnected agent can be forgotten".into(),
            ));
        }
        agents.remove(uid);
        self.persist.mark_forgotten(*uid);
        Ok(())
    }

    /// Whether an agent has been silent for three heartbeat intervals.
    pub fn is_stale(&self, rec: &AgentRecord) -> bool {
        let expects_messages =
            rec.transport == Transport::Http || rec.state.has(agent_caps::REPORTS_HEARTBEAT);
        rec.connected
            && expects_messages
            && rec.last_heard.elapsed() > self.config.heartbeat_interval * 3
    }

    /// Forgets every agent (the fuzz harness keeps its registry small with it).
    pub fn forget_all(&self) {
        self.agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Forgets disconnected (or long-silent HTTP) agents not seen for the agent TTL.
    pub fn forget_expired(&self) -> usize {
        let ttl = self.config.agent_ttl;
        let mut agents = self.agents.write().unwrap_or_else(|e| e.into_inner());
        let before = agents.len();
        agents.retain(|uid, record| {
            let rec = lock(record);
            let keep = rec.session.is_some() || rec.last_heard.elapsed() < ttl;
            if !keep {
                self.persist.mark_forgotten(*uid);
            }
            keep
        });
        before - agents.len()
    }
}

/// What an operator can ask of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    /// Send the desired config again, whatever the agent reported.
    Push,
    /// Restart the agent (`AcceptsRestartCommand`).
    Restart,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("no agent with that instance uid")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("the agent's session is busy; try again")]
    Busy,
}
