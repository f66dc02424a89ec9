//! Revisions of a config repository in a git working copy: any commit, branch or tag, read
//! from git's objects as the git source reads a fetched commit, or the working tree with its
//! uncommitted changes, read from disk as `check` reads a directory.

use crate::repo::Snapshot;
use crate::source::git::{read_tree, GitError};
use git2::Repository;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WorkingCopyError {
    #[error("`{0}` is not a directory")]
    NotADirectory(PathBuf),
    #[error("`{dir}` is not in a git repository (diff compares git revisions; `check` takes any directory): {reason}")]
    NotARepository { dir: PathBuf, reason: String },
    #[error("`{0}` is a bare repository: diff needs a working copy")]
    Bare(PathBuf),
    #[error("`{name}` is not a commit, branch or tag of the repository at {repo}: {reason}")]
    UnknownRef {
        name: String,
        repo: PathBuf,
        reason: String,
    },
    #[error("cannot read {what}: {reason}")]
    Read { what: String, reason: String },
}

/// A config repository inside a git working copy.
pub struct WorkingCopy {
    repo: Repository,
    /// The config repository on disk.
    root: PathBuf,
    /// The config repository's directory within the git tree (`/`-separated; empty: the top).
    prefix: String,
}

impl WorkingCopy {
    /// The working copy that holds `dir` (the config repository is `dir`, or `path` below it).
    pub fn open(dir: &Path, path: Option<&str>) -> Result<WorkingCopy, WorkingCopyError> {
        let path = path.map(|p| p.trim_matches('/')).unwrap_or_default();
        let root = if path.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(path)
        };
        if !root.is_dir() {
            return Err(WorkingCopyError::NotADirectory(root));
        }
        let repo = Repository::discover(dir).map_err(|e| WorkingCopyError::NotARepository {
            dir: dir.to_path_buf(),
            reason: e.message().to_owned(),
        })?;
        let workdir = repo
            .workdir()
            .ok_or_else(|| WorkingCopyError::Bare(dir.to_path_buf()))?;
        let canonical = |p: &Path| {
            p.canonicalize().map_err(|e| WorkingCopyError::Read {
                what: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        let (root_abs, workdir_abs) = (canonical(&root)?, canonical(workdir)?);
        let inside =
            root_abs
                .strip_prefix(&workdir_abs)
                .map_err(|_| WorkingCopyError::NotARepository {
                    dir: root.clone(),
                    reason: format!("it is outside the working copy {}", workdir.display()),
                })?;
        let prefix = inside
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        Ok(WorkingCopy { repo, root, prefix })
    }

    /// The config repository's directory as the user named it: diagnostics are relative to it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The commit `name` resolves to (`origin/main`, `v1.2`, `HEAD~1`, a commit id).
    pub fn resolve(&self, name: &str) -> Result<git2::Oid, WorkingCopyError> {
        let unknown = |reason: String| WorkingCopyError::UnknownRef {
            name: name.to_owned(),
            repo: self
                .repo
                .workdir()
                .unwrap_or(self.repo.path())
                .to_path_buf(),
            reason,
        };
        self.repo
            .revparse_single(name)
            .and_then(|object| object.peel_to_commit())
            .map(|commit| commit.id())
            .map_err(|e| unknown(e.message().to_owned()))
    }

    /// The config repository at `commit`. A commit that lacks its directory holds no config
    /// repository: an empty snapshot, which does not compile.
    pub fn at(&self, commit: git2::Oid) -> Result<Snapshot, WorkingCopyError> {
        let path = (!self.prefix.is_empty()).then_some(self.prefix.as_str());
        match read_tree(&self.repo, commit, path) {
            Ok(snapshot) => Ok(snapshot),
            Err(GitError::PathNotFound { .. }) => Ok(Snapshot::new()),
            Err(e) => Err(WorkingCopyError::Read {
                what: format!("commit {commit}"),
                reason: e.to_string(),
            }),
        }
    }

    /// The config repository as it is on disk, uncommitted changes included.
    pub fn working_tree(&self) -> Result<Snapshot, WorkingCopyError> {
        Snapshot::from_dir(&self.root).map_err(|e| WorkingCopyError::Read {
            what: self.root.display().to_string(),
            reason: e.to_string(),
        })
    }
}
