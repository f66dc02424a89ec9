//! The OpAMP session as a pure state machine: what the server remembers of one agent, how an
//! `AgentToServer` updates it, and what the reply carries. No I/O and no clock: transports and
//! the fleet registry feed it messages and the desired config, and send what it returns.

use super::codec::{EncodedRemoteConfig, Reply};
use super::proto::{
    server_error_response, AgentDescription, AgentIdentification, AgentToServer,
    AvailableComponents, ComponentHealth, ConnectionSettingsOffers, ConnectionSettingsStatus,
    CustomCapabilities, EffectiveConfig, PackageStatuses, RemoteConfigStatus, RemoteConfigStatuses,
    RetryInfo, ServerErrorResponse, ServerErrorResponseType, ServerToAgent, ServerToAgentCommand,
};
use super::uid::InstanceUid;
use super::{agent_caps, FLAG_REPORT_FULL_STATE, FLAG_REQUEST_INSTANCE_UID};
use crate::repo::hash::ConfigHash;
use bytes::Bytes;
use std::sync::Arc;

/// Identifies one transport connection (a WebSocket, or one HTTP request).
pub type ConnectionId = u64;

/// What the server keeps of an agent between messages.
#[derive(Debug, Clone, Default)]
pub struct AgentState {
    pub sequence_num: Option<u64>,
    pub capabilities: u64,
    /// The last value of each status sub-message; an absent one in a message means unchanged.
    pub description: Option<AgentDescription>,
    pub health: Option<ComponentHealth>,
    pub effective_config: Option<EffectiveConfig>,
    pub remote_config_status: Option<RemoteConfigStatus>,
    pub package_statuses: Option<PackageStatuses>,
    pub custom_capabilities: Option<CustomCapabilities>,
    pub available_components: Option<AvailableComponents>,
    pub connection_settings_status: Option<ConnectionSettingsStatus>,
    /// A hash the agent reported FAILED: not offered again until the desired hash changes or
    /// an operator forces a push.
    pub failed_hash: Option<ConfigHash>,
    /// The last config offered, and on which connection: offered once per connection.
    pub offered: Option<(ConfigHash, ConnectionId)>,
    /// For agents that do not report remote-config status: the hash delivered in this process.
    pub delivered: Option<ConfigHash>,
    /// The hash of the connection settings last offered.
    pub settings_offered: Option<Bytes>,
    /// An operator asked for the desired config to be sent again, whatever the agent reported:
    /// it goes with the next reply or push, on any transport.
    pub forced: bool,
}

/// What a received message changed, for the reply and the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    pub request_new_uid: bool,
    pub need_full_state: bool,
    pub disconnect: bool,
    pub description_changed: bool,
    /// A remote-config status report in this message: hash, status, error message.
    pub status_report: Option<(Bytes, RemoteConfigStatuses, String)>,
}

/// Something the registry may want to log, count or audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    ConfigOffered { hash: ConfigHash },
    NewUidAssigned { new_uid: InstanceUid },
    FullStateRequested,
}

impl AgentState {
    pub fn has(&self, capability: u64) -> bool {
        self.capabilities & capability != 0
    }

    /// The hash the agent last reported having received.
    pub fn reported_hash(&self) -> Option<&[u8]> {
        self.remote_config_status
            .as_ref()
            .map(|s| s.last_remote_config_hash.as_ref())
            .filter(|h| !h.is_empty())
    }

    pub fn reported_status(&self) -> Option<RemoteConfigStatuses> {
        self.remote_config_status.as_ref().map(|s| {
            RemoteConfigStatuses::try_from(s.status).unwrap_or(RemoteConfigStatuses::Unset)
        })
    }

    /// Takes in one message: keeps the last value of every sub-message it carries.
    pub fn receive(&mut self, msg: AgentToServer) -> Received {
        let gap = self
            .sequence_num
            .is_none_or(|prev| msg.sequence_num != prev.wrapping_add(1));
        self.sequence_num = Some(msg.sequence_num);
        self.capabilities = msg.capabilities;
        let mut received = Received {
            request_new_uid: msg.flags & FLAG_REQUEST_INSTANCE_UID != 0,
            disconnect: msg.agent_disconnect.is_some(),
            ..Received::default()
        };
        if let Some(description) = msg.agent_description {
            received.description_changed = self.description.as_ref() != Some(&description);
            self.description = Some(description);
        }
        if let Some(status) = msg.remote_config_status {
            let code = RemoteConfigStatuses::try_from(status.status)
                .unwrap_or(RemoteConfigStatuses::Unset);
            let hash: Option<ConfigHash> = status.last_remote_config_hash.as_ref().try_into().ok();
            match (code, hash) {
                (RemoteConfigStatuses::Failed, Some(h)) => self.failed_hash = Some(h),
                (RemoteConfigStatuses::Applied, Some(h)) if self.failed_hash == Some(h) => {
                    self.failed_hash = None
                }
                _ => {}
            }
            received.status_report = Some((
                status.last_remote_config_hash.clone(),
                code,
                status.error_message.clone(),
            ));
            self.remote_config_status = Some(status);
        }
        replace_if_some(&mut self.health, msg.health);
        replace_if_some(&mut self.effective_config, msg.effective_config);
        replace_if_some(&mut self.package_statuses, msg.package_statuses);
        replace_if_some(&mut self.custom_capabilities, msg.custom_capabilities);
        replace_if_some(&mut self.available_components, msg.available_components);
        replace_if_some(
            &mut self.connection_settings_status,
            msg.connection_settings_status,
        );
        received.need_full_state = gap && !received.disconnect && self.lacks_promised_state();
        received
    }

    /// Whether a sub-message the agent's capabilities promise has never arrived.
    fn lacks_promised_state(&self) -> bool {
        self.description.is_none()
            || (self.has(agent_caps::REPORTS_REMOTE_CONFIG) && self.remote_config_status.is_none())
            || (self.has(agent_caps::REPORTS_EFFECTIVE_CONFIG) && self.effective_config.is_none())
            || (self.has(agent_caps::REPORTS_HEALTH) && self.health.is_none())
    }

    /// Whether `desired` should be offered on `connection` now: when the agent is due for it,
    /// or an operator's push re-sends it whatever the agent reported (a FAILED hash included).
    pub fn should_offer(&self, desired: &EncodedRemoteConfig, connection: ConnectionId) -> bool {
        match sync_state(self, &desired.hash, Some(connection)) {
            SyncState::Unsupported => false,
            SyncState::Due => true,
            _ => self.forced,
        }
    }

    fn mark_offered(&mut self, hash: ConfigHash, connection: ConnectionId) {
        self.offered = Some((hash, connection));
        self.delivered = Some(hash);
        self.forced = false;
    }

    /// An operator's push: forget a remembered failure and offer the desired config again.
    pub fn force_offer(&mut self) {
        self.failed_hash = None;
        self.forced = true;
    }
}

/// Where an agent stands with one desired config: the one verdict that both the offer decision
/// and the status shown are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// The agent does not accept remote config.
    Unsupported,
    /// It reports the desired hash as applied (or reports the hash with no status).
    Applied,
    /// It reports the desired hash as being applied.
    Applying,
    /// It reported FAILED for the desired hash: not offered again until the hash changes or an
    /// operator pushes.
    Failed,
    /// Delivered to an agent that does not report remote-config status.
    Sent,
    /// Offered (on the connection asked about, or on any when none is named), no report yet.
    Offered,
    /// Not offered yet: the next reply or push carries it.
    Due,
}

/// The verdict for `state` and the desired hash. `connection`: the connection an offer would go
/// on (configs are offered once per connection); `None` asks about any connection.
pub fn sync_state(
    state: &AgentState,
    desired: &ConfigHash,
    connection: Option<ConnectionId>,
) -> SyncState {
    if !state.has(agent_caps::ACCEPTS_REMOTE_CONFIG) {
        return SyncState::Unsupported;
    }
    if state.reported_hash() == Some(&desired[..]) {
        return match state.reported_status() {
            Some(RemoteConfigStatuses::Applying) => SyncState::Applying,
            Some(RemoteConfigStatuses::Failed) => SyncState::Failed,
            _ => SyncState::Applied,
        };
    }
    if state.failed_hash.as_ref() == Some(desired) {
        return SyncState::Failed;
    }
    if !state.has(agent_caps::REPORTS_REMOTE_CONFIG) {
        return if state.delivered.as_ref() == Some(desired) {
            SyncState::Sent
        } else {
            SyncState::Due
        };
    }
    match state.offered {
        Some((hash, on)) if hash == *desired && connection.is_none_or(|c| c == on) => {
            SyncState::Offered
        }
        _ => SyncState::Due,
    }
}

fn replace_if_some<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// What the server wants for this agent at this moment.
#[derive(Debug, Clone, Default)]
pub struct Intent {
    /// Server capabilities, sent in every reply.
    pub capabilities: u64,
    /// The desired config, when the agent is managed and its render is valid.
    pub remote_config: Option<Arc<EncodedRemoteConfig>>,
    /// Connection settings to offer (heartbeat interval, own telemetry) when they changed.
    pub settings: Option<ConnectionSettingsOffers>,
    pub connection: ConnectionId,
}

/// The reply to a message the state has just received.
pub fn reply(
    state: &mut AgentState,
    uid_bytes: &Bytes,
    received: &Received,
    intent: &Intent,
    new_uid: impl FnOnce() -> InstanceUid,
) -> (Reply, Vec<SessionEvent>) {
    let mut events = Vec::new();
    let mut message = ServerToAgent {
        instance_uid: uid_bytes.clone(),
        capabilities: intent.capabilities,
        ..ServerToAgent::default()
    };
    if received.need_full_state {
        message.flags |= FLAG_REPORT_FULL_STATE;
        events.push(SessionEvent::FullStateRequested);
    }
    if received.request_new_uid {
        let uid = new_uid();
        message.agent_identification = Some(AgentIdentification {
            new_instance_uid: Bytes::copy_from_slice(uid.as_bytes()),
        });
        events.push(SessionEvent::NewUidAssigned { new_uid: uid });
    }
    let mut reply = Reply {
        message,
        remote_config: None,
    };
    // A leaving agent gets nothing more; until the full state arrives the server does not know
    // what the agent runs: hold offers.
    if !received.disconnect && !received.need_full_state {
        offer(state, &mut reply, intent, &mut events);
    }
    (reply, events)
}

/// A message to send without being asked (a WebSocket push): `None` when there is nothing new.
pub fn push(
    state: &mut AgentState,
    uid_bytes: &Bytes,
    intent: &Intent,
) -> Option<(Reply, Vec<SessionEvent>)> {
    let mut events = Vec::new();
    let message = ServerToAgent {
        instance_uid: uid_bytes.clone(),
        capabilities: intent.capabilities,
        ..ServerToAgent::default()
    };
    let mut reply = Reply {
        message,
        remote_config: None,
    };
    offer(state, &mut reply, intent, &mut events);
    (!events.is_empty() || reply.message.connection_settings.is_some()).then_some((reply, events))
}

fn offer(
    state: &mut AgentState,
    reply: &mut Reply,
    intent: &Intent,
    events: &mut Vec<SessionEvent>,
) {
    // Without the agent's description its rule is unknown (a compressed first message after a
    // restart): offering anything before the full state arrives could send the wrong config.
    if let Some(config) = intent
        .remote_config
        .as_ref()
        .filter(|_| state.description.is_some())
    {
        if state.should_offer(config, intent.connection) {
            state.mark_offered(config.hash, intent.connection);
            reply.remote_config = Some(config.clone());
            events.push(SessionEvent::ConfigOffered { hash: config.hash });
        }
    }
    // The fleet offers each agent only what its capabilities take; re-sent when it changes.
    if let Some(settings) = &intent.settings {
        if state.settings_offered.as_ref() != Some(&settings.hash) {
            state.settings_offered = Some(settings.hash.clone());
            reply.message.connection_settings = Some(settings.clone());
        }
    }
}

/// A restart command: only with the uid and capabilities.
pub fn restart_command(uid_bytes: &Bytes, capabilities: u64) -> Reply {
    Reply {
        message: ServerToAgent {
            instance_uid: uid_bytes.clone(),
            capabilities,
            command: Some(ServerToAgentCommand { r#type: 0 }),
            ..ServerToAgent::default()
        },
        remote_config: None,
    }
}

/// An error reply: the uid and the error, nothing else.
pub fn error_reply(
    uid_bytes: Bytes,
    kind: ServerErrorResponseType,
    message: impl Into<String>,
    retry_after: Option<std::time::Duration>,
) -> Reply {
    Reply {
        message: ServerToAgent {
            instance_uid: uid_bytes,
            error_response: Some(ServerErrorResponse {
                r#type: kind as i32,
                error_message: message.into(),
                details: retry_after.map(|d| {
                    server_error_response::Details::RetryInfo(RetryInfo {
                        retry_after_nanoseconds: d.as_nanos() as u64,
                    })
                }),
            }),
            ..ServerToAgent::default()
        },
        remote_config: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::proto::{
        AgentConfigFile, AgentConfigMap, AgentDisconnect, AgentRemoteConfig,
    };
    use agent_caps::*;

    const SUPERVISED: u64 = REPORTS_STATUS
        | ACCEPTS_REMOTE_CONFIG
        | REPORTS_EFFECTIVE_CONFIG
        | REPORTS_REMOTE_CONFIG
        | REPORTS_HEALTH;

    fn config(byte: u8) -> Arc<EncodedRemoteConfig> {
        Arc::new(EncodedRemoteConfig::new(&AgentRemoteConfig {
            config: Some(AgentConfigMap {
                config_map: [(
                    "collector.yaml".into(),
                    AgentConfigFile {
                        body: Bytes::from(vec![byte]),
                        content_type: "text/yaml".into(),
                    },
                )]
                .into(),
            }),
            config_hash: Bytes::from(vec![byte; 32]),
        }))
    }

    fn full_state(
        seq: u64,
        caps: u64,
        hash: Option<u8>,
        status: RemoteConfigStatuses,
    ) -> AgentToServer {
        AgentToServer {
            instance_uid: Bytes::from(vec![1; 16]),
            sequence_num: seq,
            capabilities: caps,
            agent_description: Some(AgentDescription::default()),
            health: Some(ComponentHealth {
                healthy: true,
                ..Default::default()
            }),
            effective_config: Some(EffectiveConfig::default()),
            remote_config_status: Some(RemoteConfigStatus {
                last_remote_config_hash: hash.map(|b| Bytes::from(vec![b; 32])).unwrap_or_default(),
                status: status as i32,
                error_message: String::new(),
            }),
            ..Default::default()
        }
    }

    fn heartbeat(seq: u64, caps: u64) -> AgentToServer {
        AgentToServer {
            instance_uid: Bytes::from(vec![1; 16]),
            sequence_num: seq,
            capabilities: caps,
            ..Default::default()
        }
    }

    fn intent(rc: Option<Arc<EncodedRemoteConfig>>, connection: ConnectionId) -> Intent {
        Intent {
            capabilities: 7,
            remote_config: rc,
            settings: None,
            connection,
        }
    }

    fn exchange(state: &mut AgentState, msg: AgentToServer, intent: &Intent) -> Reply {
        let received = state.receive(msg);
        reply(
            state,
            &Bytes::from(vec![1; 16]),
            &received,
            intent,
            InstanceUid::new_v7,
        )
        .0
    }

    #[test]
    fn a_new_agent_gets_capabilities_and_its_config() {
        let mut state = AgentState::default();
        let r = exchange(
            &mut state,
            full_state(1, SUPERVISED, None, RemoteConfigStatuses::Unset),
            &intent(Some(config(1)), 1),
        );
        assert_eq!(r.message.capabilities, 7);
        assert_eq!(r.message.instance_uid.as_ref(), &[1; 16]);
        assert_eq!(r.remote_config.unwrap().hash, [1; 32]);
        assert_eq!(
            r.message.flags, 0,
            "a full first message needs no full-state request"
        );
    }

    #[test]
    fn a_config_is_offered_once_per_connection_and_not_after_applied() {
        let mut state = AgentState::default();
        let want = intent(Some(config(1)), 1);
        assert!(exchange(
            &mut state,
            full_state(1, SUPERVISED, None, RemoteConfigStatuses::Unset),
            &want
        )
        .remote_config
        .is_some());
        assert!(
            exchange(&mut state, heartbeat(2, SUPERVISED), &want)
                .remote_config
                .is_none(),
            "not twice on one connection"
        );
        assert!(
            exchange(
                &mut state,
                heartbeat(3, SUPERVISED),
                &intent(Some(config(1)), 2)
            )
            .remote_config
            .is_some(),
            "again on a new connection"
        );
        assert!(exchange(
            &mut state,
            full_state(4, SUPERVISED, Some(1), RemoteConfigStatuses::Applied),
            &intent(Some(config(1)), 3)
        )
        .remote_config
        .is_none());
    }

    #[test]
    fn a_failed_hash_is_not_offered_again_until_it_changes_or_is_forced() {
        let mut state = AgentState::default();
        exchange(
            &mut state,
            full_state(1, SUPERVISED, None, RemoteConfigStatuses::Unset),
            &intent(Some(config(1)), 1),
        );
        exchange(
            &mut state,
            full_state(2, SUPERVISED, Some(1), RemoteConfigStatuses::Failed),
            &intent(Some(config(1)), 1),
        );
        // The supervisor rolls back and reports the previous config applied.
        let r = exchange(
            &mut state,
            full_state(3, SUPERVISED, Some(0), RemoteConfigStatuses::Applied),
            &intent(Some(config(1)), 2),
        );
        assert!(r.remote_config.is_none(), "FAILED hash re-sent");
        let r = exchange(
            &mut state,
            heartbeat(4, SUPERVISED),
            &intent(Some(config(2)), 2),
        );
        assert_eq!(
            r.remote_config.unwrap().hash,
            [2; 32],
            "a new desired hash goes out"
        );
        // The agent now reports FAILED for hash 1 itself: an operator's push sends it anyway,
        // once.
        exchange(
            &mut state,
            state_report(6, 1, RemoteConfigStatuses::Failed),
            &intent(None, 2),
        );
        state.force_offer();
        let forced = intent(Some(config(1)), 2);
        assert!(exchange(&mut state, heartbeat(7, SUPERVISED), &forced)
            .remote_config
            .is_some());
        assert!(exchange(&mut state, heartbeat(8, SUPERVISED), &forced)
            .remote_config
            .is_none());
    }

    fn state_report(seq: u64, hash: u8, status: RemoteConfigStatuses) -> AgentToServer {
        let mut msg = heartbeat(seq, SUPERVISED);
        msg.remote_config_status = Some(RemoteConfigStatus {
            last_remote_config_hash: Bytes::from(vec![hash; 32]),
            status: status as i32,
            error_message: String::new(),
        });
        msg
    }

    #[test]
    fn agents_without_remote_config_status_get_each_hash_once() {
        let caps = REPORTS_STATUS | ACCEPTS_REMOTE_CONFIG;
        let mut state = AgentState::default();
        let mut first = heartbeat(1, caps);
        first.agent_description = Some(AgentDescription::default());
        assert!(exchange(&mut state, first, &intent(Some(config(1)), 1))
            .remote_config
            .is_some());
        assert!(
            exchange(&mut state, heartbeat(2, caps), &intent(Some(config(1)), 2))
                .remote_config
                .is_none()
        );
    }

    #[test]
    fn no_config_without_accepts_remote_config() {
        let caps = SUPERVISED & !ACCEPTS_REMOTE_CONFIG;
        let mut state = AgentState::default();
        assert!(exchange(
            &mut state,
            full_state(1, caps, None, RemoteConfigStatuses::Unset),
            &intent(Some(config(1)), 1)
        )
        .remote_config
        .is_none());
    }

    #[test]
    fn capabilities_are_reread_on_every_message() {
        let mut state = AgentState::default();
        let caps = SUPERVISED & !ACCEPTS_REMOTE_CONFIG;
        exchange(
            &mut state,
            full_state(1, caps, None, RemoteConfigStatuses::Unset),
            &intent(Some(config(1)), 1),
        );
        assert!(exchange(
            &mut state,
            heartbeat(2, SUPERVISED),
            &intent(Some(config(1)), 1)
        )
        .remote_config
        .is_some());
    }

    #[test]
    fn a_sequence_gap_asks_for_the_full_state_once() {
        let mut state = AgentState::default();
        exchange(
            &mut state,
            full_state(1, SUPERVISED, Some(1), RemoteConfigStatuses::Applied),
            &intent(None, 1),
        );
        assert_eq!(
            exchange(&mut state, heartbeat(2, SUPERVISED), &intent(None, 1))
                .message
                .flags,
            0
        );
        // A server that never saw this agent, after a restart: compressed message, gap.
        let mut fresh = AgentState::default();
        let r = exchange(&mut fresh, heartbeat(7, SUPERVISED), &intent(None, 1));
        assert_eq!(
            r.message.flags & FLAG_REPORT_FULL_STATE,
            FLAG_REPORT_FULL_STATE
        );
        let r = exchange(&mut fresh, heartbeat(8, SUPERVISED), &intent(None, 1));
        assert_eq!(r.message.flags, 0, "no gap, no second request");
        // A gap when the server already has everything asks nothing.
        assert_eq!(
            exchange(&mut state, heartbeat(10, SUPERVISED), &intent(None, 1))
                .message
                .flags,
            0
        );
    }

    #[test]
    fn a_reply_asking_for_the_full_state_offers_nothing_yet() {
        let mut state = AgentState::default();
        let mut first = heartbeat(1, SUPERVISED);
        first.agent_description = Some(AgentDescription::default());
        let r = exchange(&mut state, first.clone(), &intent(Some(config(1)), 1));
        assert_eq!(r.message.flags, FLAG_REPORT_FULL_STATE);
        assert!(r.remote_config.is_none());
        first.sequence_num = 2;
        let r = exchange(&mut state, first, &intent(Some(config(1)), 1));
        assert_eq!(r.message.flags, 0);
        assert!(r.remote_config.is_some(), "offered once the state is known");
    }

    #[test]
    fn nothing_is_offered_before_the_description_is_known() {
        let mut fresh = AgentState::default();
        let r = exchange(
            &mut fresh,
            heartbeat(7, SUPERVISED),
            &intent(Some(config(1)), 1),
        );
        assert!(r.remote_config.is_none());
        let r = exchange(
            &mut fresh,
            full_state(8, SUPERVISED, Some(1), RemoteConfigStatuses::Applied),
            &intent(Some(config(1)), 1),
        );
        assert!(
            r.remote_config.is_none(),
            "it already runs the desired config"
        );
    }

    #[test]
    fn absent_sub_messages_mean_unchanged() {
        let mut state = AgentState::default();
        exchange(
            &mut state,
            full_state(1, SUPERVISED, Some(3), RemoteConfigStatuses::Applied),
            &intent(None, 1),
        );
        exchange(&mut state, heartbeat(2, SUPERVISED), &intent(None, 1));
        assert_eq!(state.reported_hash(), Some(&[3u8; 32][..]));
        assert!(state.health.as_ref().unwrap().healthy);
    }

    #[test]
    fn request_instance_uid_gets_a_new_16_byte_uid() {
        let mut state = AgentState::default();
        let mut msg = full_state(1, SUPERVISED, None, RemoteConfigStatuses::Unset);
        msg.flags = FLAG_REQUEST_INSTANCE_UID;
        let received = state.receive(msg);
        let (r, events) = reply(
            &mut state,
            &Bytes::from(vec![1; 16]),
            &received,
            &intent(None, 1),
            || InstanceUid::from_bytes([9; 16]),
        );
        assert_eq!(
            r.message
                .agent_identification
                .unwrap()
                .new_instance_uid
                .as_ref(),
            &[9; 16]
        );
        assert!(events.contains(&SessionEvent::NewUidAssigned {
            new_uid: InstanceUid::from_bytes([9; 16])
        }));
    }

    #[test]
    fn a_disconnect_is_acknowledged_without_config() {
        let mut state = AgentState::default();
        let mut msg = full_state(1, SUPERVISED, None, RemoteConfigStatuses::Unset);
        msg.agent_disconnect = Some(AgentDisconnect {});
        let r = exchange(&mut state, msg, &intent(Some(config(1)), 1));
        assert!(r.remote_config.is_none());
        assert_eq!(r.message.capabilities, 7);
    }

    #[test]
    fn a_push_without_news_sends_nothing() {
        let mut state = AgentState::default();
        exchange(
            &mut state,
            full_state(1, SUPERVISED, Some(1), RemoteConfigStatuses::Applied),
            &intent(Some(config(1)), 1),
        );
        let uid = Bytes::from(vec![1; 16]);
        assert!(push(&mut state, &uid, &intent(Some(config(1)), 1)).is_none());
        let (r, _) = push(&mut state, &uid, &intent(Some(config(2)), 1)).unwrap();
        assert_eq!(r.remote_config.unwrap().hash, [2; 32]);
        assert!(push(&mut state, &uid, &intent(Some(config(2)), 1)).is_none());
    }

    #[test]
    fn error_replies_carry_only_uid_and_error() {
        let r = error_reply(
            Bytes::from_static(b"abc"),
            ServerErrorResponseType::BadRequest,
            "bad",
            None,
        );
        assert_eq!(r.message.capabilities, 0);
        assert_eq!(r.message.instance_uid.as_ref(), b"abc");
        assert_eq!(
            r.message.error_response.unwrap().r#type,
            ServerErrorResponseType::BadRequest as i32
        );
    }
}
