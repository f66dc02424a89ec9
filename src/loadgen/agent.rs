//! One simulated agent's side of the protocol, without I/O: its identity, its sequence numbers,
//! what it reports, and how it answers the server. It behaves like an OpenTelemetry Collector
//! under the OpAMP Supervisor: it applies every config it receives (`APPLYING`, then `APPLIED`
//! with the received files as its effective config), sends its full state when asked, and on a
//! reconnect starts with a compressed message, as opamp-go's client does.

use crate::opamp::proto::server_error_response::Details;
use crate::opamp::proto::{
    any_value, AgentConfigMap, AgentDescription, AgentDisconnect, AgentToServer, AnyValue,
    ComponentHealth, EffectiveConfig, KeyValue, RemoteConfigStatus, RemoteConfigStatuses,
    ServerErrorResponseType, ServerToAgent,
};
use crate::opamp::FLAG_REPORT_FULL_STATE;
use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::opamp::SUPERVISED;

#[derive(Debug)]
pub struct AgentModel {
    uid: Bytes,
    sequence_num: u64,
    description: AgentDescription,
    started_unix_nano: u64,
    /// The hash of the remote config last received, and what became of it.
    last_hash: Bytes,
    status: RemoteConfigStatuses,
    effective: AgentConfigMap,
}

/// A server error the transport acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerError {
    /// Come back later (after this long, when the server says).
    Unavailable(Option<Duration>),
    /// Anything else: the agent keeps going.
    Other(String),
}

/// How the agent answers one `ServerToAgent`.
#[derive(Debug, Default)]
pub struct Answer {
    /// Messages to send, in order.
    pub messages: Vec<AgentToServer>,
    /// A remote config came with the message.
    pub config_received: bool,
    /// It was applied: the hash now reported APPLIED.
    pub applied: Option<Bytes>,
    pub full_state_requested: bool,
    pub error: Option<ServerError>,
}

fn string_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

impl AgentModel {
    /// Agent number `index` of the run, with these identifying attributes (which win over the
    /// defaults a Supervisor reports: `service.name`, `service.instance.id`).
    pub fn new(index: u64, attributes: &[(String, String)]) -> AgentModel {
        let uid = uuid::Uuid::now_v7();
        let mut identifying = vec![
            ("service.name".to_owned(), "otelcol-contrib".to_owned()),
            ("service.instance.id".to_owned(), uid.to_string()),
        ];
        for (key, value) in attributes {
            identifying.retain(|(k, _)| k != key);
            identifying.push((key.clone(), value.clone()));
        }
        AgentModel {
            uid: Bytes::copy_from_slice(uid.as_bytes()),
            sequence_num: 0,
            description: AgentDescription {
                identifying_attributes: identifying
                    .iter()
                    .map(|(k, v)| string_value(k, v))
                    .collect(),
                non_identifying_attributes: vec![
                    string_value("host.name", &format!("loadgen-{index}")),
                    string_value("os.type", "linux"),
                ],
            },
            started_unix_nano: unix_nanos(SystemTime::now()),
            last_hash: Bytes::new(),
            status: RemoteConfigStatuses::Unset,
            effective: AgentConfigMap::default(),
        }
    }

    pub fn uid(&self) -> &Bytes {
        &self.uid
    }

    pub fn uid_string(&self) -> String {
        uuid::Uuid::from_slice(&self.uid)
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The hash reported APPLIED, if any.
    pub fn applied_hash(&self) -> Option<&Bytes> {
        (self.status == RemoteConfigStatuses::Applied && !self.last_hash.is_empty())
            .then_some(&self.last_hash)
    }

    fn next(&mut self) -> AgentToServer {
        self.sequence_num += 1;
        AgentToServer {
            instance_uid: self.uid.clone(),
            sequence_num: self.sequence_num,
            capabilities: SUPERVISED,
            ..AgentToServer::default()
        }
    }

    fn status_report(&self) -> RemoteConfigStatus {
        RemoteConfigStatus {
            last_remote_config_hash: self.last_hash.clone(),
            status: self.status as i32,
            error_message: String::new(),
        }
    }

    /// Everything the agent reports: its first message, and its answer to `ReportFullState`.
    pub fn full_state(&mut self) -> AgentToServer {
        let mut msg = self.next();
        msg.agent_description = Some(self.description.clone());
        msg.health = Some(ComponentHealth {
            healthy: true,
            start_time_unix_nano: self.started_unix_nano,
            status: "StatusOK".into(),
            status_time_unix_nano: unix_nanos(SystemTime::now()),
            ..ComponentHealth::default()
        });
        msg.effective_config = Some(EffectiveConfig {
            config_map: Some(self.effective.clone()),
        });
        msg.remote_config_status = Some(self.status_report());
        msg
    }

    /// A message with only the uid, sequence number and capabilities: a heartbeat, a poll, or
    /// the first message on a reconnect (nothing changed, so nothing else is sent).
    pub fn heartbeat(&mut self) -> AgentToServer {
        self.next()
    }

    /// The last message before the agent goes.
    pub fn disconnect(&mut self) -> AgentToServer {
        let mut msg = self.next();
        msg.agent_disconnect = Some(AgentDisconnect {});
        msg
    }

    pub fn answer(&mut self, msg: ServerToAgent) -> Answer {
        let mut answer = Answer::default();
        if let Some(error) = msg.error_response {
            let retry = error
                .details
                .map(|Details::RetryInfo(info)| Duration::from_nanos(info.retry_after_nanoseconds));
            answer.error = Some(
                if error.r#type == ServerErrorResponseType::Unavailable as i32 {
                    ServerError::Unavailable(retry)
                } else {
                    ServerError::Other(error.error_message)
                },
            );
            return answer;
        }
        if let Some(identification) = msg.agent_identification {
            if identification.new_instance_uid.len() == 16 {
                self.uid = identification.new_instance_uid;
            }
        }
        if let Some(config) = msg.remote_config {
            answer.config_received = true;
            // A config already applied changes nothing, so the Supervisor reports nothing.
            if config.config_hash != self.last_hash || self.status != RemoteConfigStatuses::Applied
            {
                self.last_hash = config.config_hash.clone();
                self.status = RemoteConfigStatuses::Applying;
                let mut applying = self.next();
                applying.remote_config_status = Some(self.status_report());
                answer.messages.push(applying);
                self.effective = config.config.unwrap_or_default();
                self.status = RemoteConfigStatuses::Applied;
                let mut applied = self.next();
                applied.remote_config_status = Some(self.status_report());
                applied.effective_config = Some(EffectiveConfig {
                    config_map: Some(self.effective.clone()),
                });
                answer.messages.push(applied);
                answer.applied = Some(config.config_hash);
            }
        }
        if msg.flags & FLAG_REPORT_FULL_STATE != 0 {
            answer.full_state_requested = true;
            let full = self.full_state();
            answer.messages.push(full);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::proto::{
        server_error_response, AgentConfigFile, AgentRemoteConfig, RetryInfo, ServerErrorResponse,
    };

    fn config(hash: u8) -> ServerToAgent {
        ServerToAgent {
            remote_config: Some(AgentRemoteConfig {
                config: Some(AgentConfigMap {
                    config_map: [(
                        "collector.yaml".to_owned(),
                        AgentConfigFile {
                            body: Bytes::from(format!("generation: {hash}\n")),
                            content_type: "text/yaml".into(),
                        },
                    )]
                    .into(),
                }),
                config_hash: Bytes::from(vec![hash; 32]),
            }),
            ..ServerToAgent::default()
        }
    }

    fn attrs(msg: &AgentToServer) -> Vec<(String, String)> {
        msg.agent_description
            .as_ref()
            .unwrap()
            .identifying_attributes
            .iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                (kv.key.clone(), value)
            })
            .collect()
    }

    #[test]
    fn the_first_message_is_a_full_state_of_a_supervised_collector() {
        let mut agent = AgentModel::new(7, &[("environment".into(), "production".into())]);
        let first = agent.full_state();
        assert_eq!(first.instance_uid.len(), 16);
        assert_eq!(
            uuid::Uuid::from_slice(&first.instance_uid)
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(first.sequence_num, 1);
        assert_eq!(first.capabilities, SUPERVISED);
        let attributes = attrs(&first);
        assert!(attributes.contains(&("environment".into(), "production".into())));
        assert!(attributes.contains(&("service.instance.id".into(), agent.uid_string())));
        assert!(first.health.unwrap().healthy);
        let status = first.remote_config_status.unwrap();
        assert!(status.last_remote_config_hash.is_empty());
        assert_eq!(status.status, RemoteConfigStatuses::Unset as i32);
        assert!(first.effective_config.is_some());
    }

    #[test]
    fn a_config_is_applied_then_reported_applied_with_its_files_as_effective_config() {
        let mut agent = AgentModel::new(0, &[]);
        agent.full_state();
        let answer = agent.answer(config(1));
        assert!(answer.config_received);
        assert_eq!(answer.applied.as_deref(), Some(&[1u8; 32][..]));
        let [applying, applied] = &answer.messages[..] else {
            panic!("two messages: {:?}", answer.messages)
        };
        assert_eq!(applying.sequence_num, 2);
        assert_eq!(applied.sequence_num, 3);
        let status = |m: &AgentToServer| m.remote_config_status.as_ref().unwrap().status;
        assert_eq!(status(applying), RemoteConfigStatuses::Applying as i32);
        assert_eq!(status(applied), RemoteConfigStatuses::Applied as i32);
        let effective = applied.effective_config.as_ref().unwrap();
        assert_eq!(
            effective.config_map.as_ref().unwrap().config_map["collector.yaml"].body,
            "generation: 1\n"
        );
        assert_eq!(agent.applied_hash().map(|h| h[0]), Some(1));

        // The same config again changes nothing and is not reported.
        let again = agent.answer(config(1));
        assert!(again.config_received && again.applied.is_none() && again.messages.is_empty());
        // The next full state carries what runs now.
        let full = agent.full_state();
        assert_eq!(
            full.remote_config_status.unwrap().last_remote_config_hash[0],
            1
        );
    }

    #[test]
    fn report_full_state_is_answered_and_a_reconnect_starts_compressed() {
        let mut agent = AgentModel::new(0, &[]);
        agent.full_state();
        let compressed = agent.heartbeat();
        assert!(
            compressed.agent_description.is_none() && compressed.remote_config_status.is_none()
        );
        let answer = agent.answer(ServerToAgent {
            flags: FLAG_REPORT_FULL_STATE,
            ..ServerToAgent::default()
        });
        assert!(answer.full_state_requested);
        assert_eq!(answer.messages.len(), 1);
        assert!(answer.messages[0].agent_description.is_some());
        assert_eq!(answer.messages[0].sequence_num, 3);
        assert!(agent.disconnect().agent_disconnect.is_some());
    }

    #[test]
    fn server_errors_tell_the_transport_when_to_come_back() {
        let mut agent = AgentModel::new(0, &[]);
        let answer = agent.answer(ServerToAgent {
            error_response: Some(ServerErrorResponse {
                r#type: ServerErrorResponseType::Unavailable as i32,
                error_message: "full".into(),
                details: Some(server_error_response::Details::RetryInfo(RetryInfo {
                    retry_after_nanoseconds: 2_000_000_000,
                })),
            }),
            ..ServerToAgent::default()
        });
        assert_eq!(
            answer.error,
            Some(ServerError::Unavailable(Some(Duration::from_secs(2))))
        );
        assert!(answer.messages.is_empty());
    }
}
