//! The config hash: sha256 over a canonical encoding of the config map, so that the same files
//! hash the same on every replica and after every restart.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Every file the server sends is YAML.
pub const CONTENT_TYPE: &str = "text/yaml";

pub type ConfigHash = [u8; 32];

/// For each file in byte order of its name: `u32be(len(name)) name u32be(len(content_type))
/// content_type u64be(len(body)) body`.
pub fn config_hash<B: AsRef<[u8]>>(files: &BTreeMap<String, B>) -> ConfigHash {
    let mut hasher = Sha256::new();
    for (name, body) in files {
        let body = body.as_ref();
        hasher.update((name.len() as u32).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((CONTENT_TYPE.len() as u32).to_be_bytes());
        hasher.update(CONTENT_TYPE.as_bytes());
        hasher.update((body.len() as u64).to_be_bytes());
        hasher.update(body);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding is a contract between replicas and releases: this vector must never change.
    #[test]
    fn test_vector() {
        let files = BTreeMap::from([
            ("collector.yaml".to_string(), "receivers: {}\n".to_string()),
            ("a.yaml".to_string(), "x: 1\n".to_string()),
        ]);
        let mut manual = Vec::new();
        for (name, body) in [("a.yaml", "x: 1\n"), ("collector.yaml", "receivers: {}\n")] {
            manual.extend((name.len() as u32).to_be_bytes());
            manual.extend(name.as_bytes());
            manual.extend(9u32.to_be_bytes());
            manual.extend(b"text/yaml");
            manual.extend((body.len() as u64).to_be_bytes());
            manual.extend(body.as_bytes());
        }
        let expected: ConfigHash = Sha256::digest(&manual).into();
        assert_eq!(config_hash(&files), expected);
        assert_eq!(
            hex::encode(config_hash(&files)),
            "8ba51bbb9d678399114a4e98598733e0ac7f52f60323dd2a40e4050652ab7174"
        );
    }
}
