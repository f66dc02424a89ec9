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

/// The heartbeat offer (without a hash: [`with_hash`] seals what is finally offered).
pub fn heartbeat_settings(url: &str, interval: Duration) -> OpAmpConnectionSettings {
    OpAmpConnectionSettings {
        destination_endpoint: url.to_owned(),
        heartbeat_interval_seconds: interval.as_secs().max(1),
        ..Default::default()
    }
}

/// The offers with their `hash`: a digest of everything offered, so it stays the same exactly
/// as long as the contents do (prost encodes deterministically: fields in order, no maps here).
pub fn with_hash(mut offers: ConnectionSettingsOffers) -> ConnectionSettingsOffers {
    use prost::Message;
    use sha2::{Digest, Sha256};
    offers.hash = Bytes::new();
    let digest = Sha256::digest(offers.encode_to_vec());
    offers.hash = Bytes::copy_from_slice(&digest);
    offers
}
