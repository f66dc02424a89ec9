//! Bounds on what an agent may make the server keep. Agent-reported data is untrusted: too many
//! or too long attributes refuse the message (they decide which config an agent gets, so they
//! are never silently changed); everything else the registry stores or logs (error messages,
//! health, package and component reports, the effective config) is cut to size with a marker
//! saying so.

use crate::opamp::proto::{
    AgentConfigFile, AgentToServer, AvailableComponents, ComponentDetails, ComponentHealth,
    KeyValue, PackageStatuses,
};
use crate::repo::hash::CONTENT_TYPE;
use bytes::Bytes;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct InputLimits {
    /// Attributes an agent may report (identifying and non-identifying together).
    #[arg(long, env = "OPAMP_GITOPS_MAX_ATTRIBUTES", default_value_t = 128)]
    pub max_attributes: usize,
    /// Longest attribute key or value, and longest status string or name in a report, in bytes.
    #[arg(long, env = "OPAMP_GITOPS_MAX_ATTRIBUTE_BYTES", default_value_t = 1024)]
    pub max_attribute_bytes: usize,
    /// Largest effective config stored per agent; larger ones are not kept.
    #[arg(long, env = "OPAMP_GITOPS_MAX_EFFECTIVE_CONFIG_BYTES", default_value_t = 1 << 20)]
    pub max_effective_config_bytes: usize,
    /// Longest agent error message or status text kept; longer ones are truncated.
    #[arg(long, env = "OPAMP_GITOPS_MAX_TEXT_BYTES", default_value_t = 4096)]
    pub max_text_bytes: usize,
    /// Entries kept of each report an agent sends (component health, packages, components,
    /// custom capabilities), counted over the whole nested report.
    #[arg(
        long = "max-report-entries",
        env = "OPAMP_GITOPS_MAX_REPORT_ENTRIES",
        default_value_t = 256
    )]
    pub max_entries: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        crate::options::defaults()
    }
}

/// Agents one WebSocket connection may speak for (a proxy multiplexes several).
pub const MAX_AGENTS_PER_CONNECTION: usize = 64;

/// Nested reports deeper than this are cut.
const MAX_DEPTH: usize = 8;

/// Cuts `text` to at most `max` bytes (on a character boundary) plus a marker that says how
/// much was dropped, and gives back the memory the rest took.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("… [{dropped} more bytes truncated]"));
    // `truncate` keeps the capacity: without this a 1 MiB message stays 1 MiB in the registry.
    text.shrink_to_fit();
}

impl InputLimits {
    /// Applies every bound to `msg`: `Err` (with the reason) refuses the message, otherwise the
    /// message is cut to what the server keeps.
    pub fn apply(&self, msg: &mut AgentToServer) -> Result<(), String> {
        self.check_attributes(msg)?;
        self.bound_effective_config(msg);
        let text = self.max_text_bytes;
        if let Some(status) = &mut msg.remote_config_status {
            truncate(&mut status.error_message, text);
        }
        if let Some(status) = &mut msg.connection_settings_status {
            truncate(&mut status.error_message, text);
        }
        if let Some(health) = &mut msg.health {
            let mut budget = self.max_entries;
            self.bound_health(health, 0, &mut budget);
        }
        if let Some(packages) = &mut msg.package_statuses {
            self.bound_packages(packages);
        }
        if let Some(components) = &mut msg.available_components {
            self.bound_components(components);
        }
        if let Some(custom) = &mut msg.custom_capabilities {
            custom.capabilities.truncate(self.max_entries);
            for capability in &mut custom.capabilities {
                truncate(capability, self.max_attribute_bytes);
            }
        }
        Ok(())
    }

    fn check_attributes(&self, msg: &AgentToServer) -> Result<(), String> {
        let Some(description) = &msg.agent_description else {
            return Ok(());
        };
        let count =
            description.identifying_attributes.len() + description.non_identifying_attributes.len();
        if count > self.max_attributes {
            return Err(format!(
                "{count} attributes: the server accepts at most {}",
                self.max_attributes
            ));
        }
        let attributes = description
            .identifying_attributes
            .iter()
            .chain(&description.non_identifying_attributes);
        for kv in attributes {
            let value_len = kv
                .value
                .as_ref()
                .map(|v| super::record::any_value_text(v).len())
                .unwrap_or(0);
            if kv.key.len() > self.max_attribute_bytes || value_len > self.max_attribute_bytes {
                return Err(format!(
                    "attribute `{}` is longer than {} bytes",
                    kv.key.chars().take(64).collect::<String>(),
                    self.max_attribute_bytes
                ));
            }
        }
        Ok(())
    }

    /// An effective config over the limit is replaced by a note saying so.
    fn bound_effective_config(&self, msg: &mut AgentToServer) {
        let Some(map) = msg
            .effective_config
            .as_mut()
            .and_then(|e| e.config_map.as_mut())
        else {
            return;
        };
        let size: usize = map
            .config_map
            .iter()
            .map(|(k, f)| k.len() + f.body.len() + f.content_type.len())
            .sum();
        if size > self.max_effective_config_bytes {
            map.config_map = [(
                String::new(),
                AgentConfigFile {
                    body: Bytes::from(format!(
                        "# the effective config ({size} bytes) is over the server's {}-byte limit and was not stored\n",
                        self.max_effective_config_bytes
                    )),
                    content_type: CONTENT_TYPE.into(),
                },
            )]
            .into();
        }
    }

    fn bound_health(&self, health: &mut ComponentHealth, depth: usize, budget: &mut usize) {
        truncate(&mut health.last_error, self.max_text_bytes);
        truncate(&mut health.status, self.max_attribute_bytes);
        self.bound_key_values(&mut health.attributes);
        if depth >= MAX_DEPTH {
            health.component_health_map.clear();
        }
        bound_map(
            &mut health.component_health_map,
            budget,
            self.max_attribute_bytes,
        );
        for child in health.component_health_map.values_mut() {
            self.bound_health(child, depth + 1, budget);
        }
    }

    fn bound_packages(&self, packages: &mut PackageStatuses) {
        truncate(&mut packages.error_message, self.max_text_bytes);
        let mut budget = self.max_entries;
        bound_map(
            &mut packages.packages,
            &mut budget,
            self.max_attribute_bytes,
        );
        for package in packages.packages.values_mut() {
            truncate(&mut package.name, self.max_attribute_bytes);
            truncate(&mut package.agent_has_version, self.max_attribute_bytes);
            truncate(
                &mut package.server_offered_version,
                self.max_attribute_bytes,
            );
            truncate(&mut package.error_message, self.max_text_bytes);
        }
    }

    /// Whether a components report is over what `apply` keeps of it (entries, depth, names):
    /// cut, it would list fewer components than the build has.
    pub fn components_over(&self, components: &AvailableComponents) -> bool {
        fn over(
            map: &BTreeMap<String, ComponentDetails>,
            depth: usize,
            budget: &mut usize,
            max_key: usize,
        ) -> bool {
            if map.is_empty() {
                return false;
            }
            if depth > MAX_DEPTH || map.len() > *budget || map.keys().any(|k| k.len() > max_key) {
                return true;
            }
            *budget -= map.len();
            map.values()
                .any(|d| over(&d.sub_component_map, depth + 1, budget, max_key))
        }
        let mut budget = self.max_entries * 4;
        over(
            &components.components,
            0,
            &mut budget,
            self.max_attribute_bytes,
        )
    }

    fn bound_components(&self, components: &mut AvailableComponents) {
        let mut budget = self.max_entries * 4;
        bound_map(
            &mut components.components,
            &mut budget,
            self.max_attribute_bytes,
        );
        for details in components.components.values_mut() {
            self.bound_component_details(details, 0, &mut budget);
        }
    }

    fn bound_component_details(
        &self,
        details: &mut ComponentDetails,
        depth: usize,
        budget: &mut usize,
    ) {
        self.bound_key_values(&mut details.metadata);
        if depth >= MAX_DEPTH {
            details.sub_component_map.clear();
        }
        bound_map(
            &mut details.sub_component_map,
            budget,
            self.max_attribute_bytes,
        );
        for child in details.sub_component_map.values_mut() {
            self.bound_component_details(child, depth + 1, budget);
        }
    }

    /// Key-values of a report (not the agent's description): at most `max_attributes`, and
    /// values that are not short strings are dropped rather than kept in full.
    fn bound_key_values(&self, values: &mut Vec<KeyValue>) {
        values.truncate(self.max_attributes);
        values.retain(|kv| {
            kv.key.len() <= self.max_attribute_bytes
                && kv.value.as_ref().is_none_or(|v| {
                    super::record::any_value_text(v).len() <= self.max_attribute_bytes
                })
        });
    }
}

/// Keeps at most `budget` entries of `map` (taking them from the budget) and drops those whose
/// key is longer than `max_key`.
fn bound_map<V>(map: &mut BTreeMap<String, V>, budget: &mut usize, max_key: usize) {
    map.retain(|key, _| key.len() <= max_key);
    if map.len() > *budget {
        let keep: Vec<String> = map.keys().take(*budget).cloned().collect();
        map.retain(|key, _| keep.binary_search(key).is_ok());
    }
    *budget -= map.len();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::proto::RemoteConfigStatus;

    #[test]
    fn truncation_keeps_a_prefix_on_a_char_boundary_and_says_so() {
        let mut text = "é".repeat(10);
        truncate(&mut text, 5);
        assert!(text.starts_with("éé"), "{text}");
        assert!(text.ends_with("[16 more bytes truncated]"), "{text}");
        let mut short = "ok".to_owned();
        truncate(&mut short, 5);
        assert_eq!(short, "ok");
    }

    #[test]
    fn every_stored_string_and_map_is_bounded() {
        let limits = InputLimits::default();
        let huge = "x".repeat(1 << 20);
        let mut leaf = ComponentHealth {
            last_error: huge.clone(),
            status: huge.clone(),
            ..Default::default()
        };
        for i in 0..1000 {
            leaf.component_health_map
                .insert(format!("c{i}"), ComponentHealth::default());
        }
        let mut msg = AgentToServer {
            remote_config_status: Some(RemoteConfigStatus {
                error_message: huge.clone(),
                ..Default::default()
            }),
            health: Some(leaf),
            ..Default::default()
        };
        limits.apply(&mut msg).unwrap();
        // What is kept is small in memory, not only in length.
        let status = msg.remote_config_status.unwrap();
        assert!(status.error_message.capacity() < limits.max_text_bytes + 64);
        let health = msg.health.unwrap();
        assert!(health.last_error.capacity() < limits.max_text_bytes + 64);
        assert!(health.status.capacity() < limits.max_attribute_bytes + 64);
        assert_eq!(health.component_health_map.len(), limits.max_entries);
    }
}
