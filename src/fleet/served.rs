//! The revision the fleet serves, with what is derived from it once: each desired config
//! encoded for sending, and the components it uses, by hash. One value, swapped whole when the source publishes a new
//! revision, so nothing keyed by a revision id can outlive its revision.

use crate::opamp::builders::remote_config;
use crate::opamp::codec::EncodedRemoteConfig;
use crate::repo::components::UsedComponents;
use crate::repo::hash::ConfigHash;
use crate::repo::{AgentInfo, Desired, DesiredConfig, Revision};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Served {
    pub revision: Arc<Revision>,
    encoded: Mutex<HashMap<ConfigHash, Arc<EncodedRemoteConfig>>>,
    /// The component ids each desired config uses, parsed once per hash.
    used: Mutex<HashMap<ConfigHash, Arc<UsedComponents>>>,
}

impl Served {
    pub fn new(revision: Arc<Revision>) -> Served {
        Served {
            revision,
            encoded: Mutex::default(),
            used: Mutex::default(),
        }
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
