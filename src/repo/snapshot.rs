//! A snapshot: the files of a config repository at one point in time, held in memory so that a
//! git tree and a directory on disk look the same to the compiler.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Files keyed by their path relative to the repository root, with `/` separators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    files: BTreeMap<String, Vec<u8>>,
}

/// Directories the loader never descends into, besides hidden ones.
const SKIPPED_DIRS: &[&str] = &["node_modules", "target"];

/// Hidden entries (`.git`, an editor's `.fleet.yaml.swp`) and backups (`fleet.yaml~`) are not
/// part of a config repository.
fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~')
}

/// A repository larger than this is refused rather than held in memory.
const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), content.into());
    }

    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// Files directly or indirectly below `dir` (no trailing slash), with their full paths.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = format!("{dir}/");
        self.files
            .range(prefix.clone()..)
            .take_while(move |(path, _)| path.starts_with(&prefix))
            .map(|(path, body)| (path.as_str(), body.as_slice()))
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// A stable digest of every path and content: the revision id of a directory source.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (path, body) in &self.files {
            hasher.update((path.len() as u64).to_be_bytes());
            hasher.update(path.as_bytes());
            hasher.update((body.len() as u64).to_be_bytes());
            hasher.update(body);
        }
        hex::encode(hasher.finalize())
    }

    /// Reads every regular file below `root`, skipping VCS and build directories.
    pub fn from_dir(root: &Path) -> io::Result<Snapshot> {
        let mut snapshot = Snapshot::new();
        let mut total = 0u64;
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                let file_type = entry.file_type()?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if ignored(&name) {
                    continue;
                }
                if file_type.is_dir() {
                    if !SKIPPED_DIRS.contains(&name.as_ref()) {
                        stack.push(path);
                    }
                    continue;
                }
                // Symlinks are followed only when they point at a regular file.
                if !(file_type.is_file() || path.is_file()) {
                    continue;
                }
                let content = std::fs::read(&path)?;
                total += content.len() as u64;
                if total > MAX_SNAPSHOT_BYTES {
                    return Err(io::Error::other(format!(
                        "repository is larger than {} MiB",
                        MAX_SNAPSHOT_BYTES >> 20
                    )));
                }
                let relative = path
                    .strip_prefix(root)
                    .map_err(io::Error::other)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                snapshot.insert(relative, content);
            }
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_lists_only_files_below_the_directory() {
        let mut s = Snapshot::new();
        s.insert("templates/a.j2", "a");
        s.insert("templates/sub/b.j2", "b");
        s.insert("templatesx/c.j2", "c");
        s.insert("fleet.yaml", "x");
        let names: Vec<_> = s.under("templates").map(|(p, _)| p).collect();
        assert_eq!(names, vec!["templates/a.j2", "templates/sub/b.j2"]);
    }

    #[test]
    fn digest_changes_with_content() {
        let mut a = Snapshot::new();
        a.insert("f", "1");
        let mut b = Snapshot::new();
        b.insert("f", "2");
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
    }
}
