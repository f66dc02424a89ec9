//! A snapshot: the files of a config repository at one point in time, held in memory so that a
//! git tree and a directory on disk look the same to the compiler. Reading one is bounded: each
//! file's size is known before it is read, and a symlink that leads out of the repository is a
//! problem of the snapshot (a compile error naming it), never followed.

use crate::diagnostics::Diagnostic;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

/// Files keyed by their path relative to the repository root, with `/` separators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    files: BTreeMap<String, Vec<u8>>,
    /// What was found while reading that makes the snapshot unfit to serve.
    problems: Vec<Diagnostic>,
}

/// Directories the loader never descends into, besides hidden ones.
const SKIPPED_DIRS: &[&str] = &["node_modules", "target"];

/// Hidden entries (`.git`, an editor's `.fleet.yaml.swp`) and backups (`fleet.yaml~`) are not
/// part of a config repository.
pub fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~')
}

/// A repository larger than this is refused rather than held in memory.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

/// Counts the bytes a snapshot takes as it is read, refusing a file before it is read when it
/// would take the total over [`MAX_SNAPSHOT_BYTES`].
#[derive(Debug, Default)]
pub struct SizeBudget {
    total: u64,
}

impl SizeBudget {
    pub fn take(&mut self, path: &str, size: u64) -> io::Result<()> {
        self.total = self.total.saturating_add(size);
        if self.total > MAX_SNAPSHOT_BYTES {
            return Err(io::Error::other(format!(
                "repository is larger than {} MiB (at `{path}`, {} bytes): it is refused before it is read",
                MAX_SNAPSHOT_BYTES >> 20,
                size
            )));
        }
        Ok(())
    }
}

/// A symlink's target resolved against the directory of `link` (both relative to the root,
/// `/`-separated), or `None` when it leads out of the root: absolute, or above it with `..`.
pub fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for segment in target.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(parts.join("/"))
}

/// The compile error of a symlink that leads out of the repository.
pub fn escaping_link(path: &str, target: &str) -> Diagnostic {
    Diagnostic::error(format!(
        "`{path}` is a symlink to `{target}`, outside the repository: a config repository may only link to its own files"
    ))
    .in_file(path)
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), content.into());
    }

    /// Records a problem found while reading: the snapshot will not compile.
    pub fn reject(&mut self, problem: Diagnostic) {
        self.problems.push(problem);
    }

    pub fn problems(&self) -> &[Diagnostic] {
        &self.problems
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

    /// A stable digest of every path, content and problem: the revision id of a directory
    /// source.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (path, body) in &self.files {
            hasher.update((path.len() as u64).to_be_bytes());
            hasher.update(path.as_bytes());
            hasher.update((body.len() as u64).to_be_bytes());
            hasher.update(body);
        }
        for problem in &self.problems {
            hasher.update(problem.human().as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// Reads every regular file below `root`, skipping VCS and build directories. A symlink is
    /// read when it resolves to a file inside `root`; one that resolves outside is a problem.
    pub fn from_dir(root: &Path) -> io::Result<Snapshot> {
        let real_root = root.canonicalize()?;
        let mut snapshot = Snapshot::new();
        let mut budget = SizeBudget::default();
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
                let relative = path
                    .strip_prefix(root)
                    .map_err(io::Error::other)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                if file_type.is_symlink() {
                    // A link to nothing, or to a directory, is not part of the repository.
                    let Ok(real) = path.canonicalize() else {
                        continue;
                    };
                    if !real.starts_with(&real_root) {
                        let target = std::fs::read_link(&path)?;
                        snapshot.reject(escaping_link(&relative, &target.to_string_lossy()));
                        continue;
                    }
                    if !real.is_file() {
                        continue;
                    }
                } else if !file_type.is_file() {
                    continue;
                }
                let size = std::fs::metadata(&path)?.len();
                budget.take(&relative, size)?;
                let mut content = Vec::with_capacity(size as usize);
                // The file may grow between the look and the read: read no more than allowed.
                std::fs::File::open(&path)?
                    .take(MAX_SNAPSHOT_BYTES + 1)
                    .read_to_end(&mut content)?;
                if content.len() as u64 > size {
                    budget.take(&relative, content.len() as u64 - size)?;
                }
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
    fn links_resolve_inside_the_root_or_not_at_all() {
        assert_eq!(
            resolve_link("templates/x.j2", "base.j2").as_deref(),
            Some("templates/base.j2")
        );
        assert_eq!(
            resolve_link("templates/sub/x.j2", "../base.j2").as_deref(),
            Some("templates/base.j2")
        );
        assert_eq!(resolve_link("templates/x.j2", "../../etc/passwd"), None);
        assert_eq!(resolve_link("templates/x.j2", "/etc/passwd"), None);
        assert_eq!(resolve_link("x.j2", "./y.j2").as_deref(), Some("y.j2"));
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
