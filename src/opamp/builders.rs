//! The server's protobuf messages built from plain values: a remote config from rendered files,
//! the connection-settings offer from the advertised URL and heartbeat interval.

use super::proto::{
    AgentConfigFile, AgentConfigMap, AgentRemoteConfig, ConnectionSettingsOffers,
    OpAmpConnectionSettings,
};
use crate::repo::hash::{ConfigHash, CONTENT_TYPE};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// A remote config of `files` (name → body), every file `text/yaml`, with its hash.
pub fn remote_config(files: &BTreeMap<String, Bytes>, hash: &ConfigHash) -> AgentRemoteConfig {
    AgentRemoteConfig {
        config: Some(AgentConfigMap {
            config_map: files
                .iter()
                .map(|(name, body)| {
                    (
                        name.clone(),
                        AgentConfigFile {
                            body: body.clone(),
                            content_type: CONTENT_TYPE.into(),
                        },
                    )
                })
                .collect(),
        }),
        config_hash: Bytes::copy_from_slice(hash),
    }
}

/// The heartbeat offer, with a hash that stays the same as long as its contents do.
pub fn settings_offer(url: &str, interval: Duration) -> ConnectionSettingsOffers {
    use sha2::{Digest, Sha256};
    let seconds = interval.as_secs().max(1);
    let hash = Sha256::digest(format!(
        "opamp destination_endpoint={url} heartbeat_interval_seconds={seconds}"
    ));
    ConnectionSettingsOffers {
        hash: Bytes::copy_from_slice(&hash),
        opamp: Some(OpAmpConnectionSettings {
            destination_endpoint: url.to_owned(),
            heartbeat_interval_seconds: seconds,
            ..Default::default()
        }),
        ..Default::default()
    }
}
