//! A git remote as the config source: a bare mirror in the cache directory, fetched with git2
//! (force pushes followed), read at the tip of the tracked branch, optionally below a sub-path.
//! The last commit that compiled is remembered so a restart can serve it while the remote is
//! unreachable.

use super::commit::CommitMeta;
use super::{RevisionStore, Submitted};
use crate::repo::snapshot::{escaping_link, resolve_link, SizeBudget};
use crate::repo::Snapshot;
use git2::{CertificateCheckStatus, Cred, FetchOptions, RemoteCallbacks, Repository};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct GitOptions {
    pub url: String,
    /// The branch to track; the remote's default branch when unset.
    pub branch: Option<String>,
    /// A sub-directory of the repository holding the config repo.
    pub path: Option<String>,
    pub cache_dir: PathBuf,
    pub token_file: Option<PathBuf>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    /// A fetch that takes longer is aborted.
    pub fetch_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("path `{path}` not found in commit {commit}")]
    PathNotFound { path: String, commit: git2::Oid },
    #[error("{0}")]
    Other(String),
}

pub struct GitSource {
    options: GitOptions,
    dir: PathBuf,
}

/// Whether `repo` names a git remote rather than a local directory.
pub fn is_git_url(repo: &str) -> bool {
    ["https://", "http://", "git://", "ssh://", "file://"]
        .iter()
        .any(|p| repo.starts_with(p))
        || scp_like(repo)
}

/// `user@host:path`, the scp-like SSH syntax.
fn scp_like(repo: &str) -> bool {
    match (repo.find('@'), repo.find(':')) {
        (Some(at), Some(colon)) => at < colon && !repo[..colon].contains('/'),
        _ => false,
    }
}

impl GitSource {
    pub fn new(options: GitOptions) -> GitSource {
        let key = hex::encode(&Sha256::digest(options.url.as_bytes())[..8]);
        let dir = options.cache_dir.join(format!("git-{key}"));
        GitSource { options, dir }
    }

    /// A description for `/api/revision`: URL, branch and path.
    pub fn describe(&self) -> String {
        let mut d = self.options.url.clone();
        if let Some(branch) = &self.options.branch {
            d.push_str(&format!(" branch {branch}"));
        }
        if let Some(path) = &self.options.path {
            d.push_str(&format!(" path {path}"));
        }
        d
    }

    fn mirror_path(&self) -> PathBuf {
        self.dir.join("mirror.git")
    }

    fn last_good_path(&self) -> PathBuf {
        self.dir.join("last-good")
    }

    fn open_mirror(&self) -> Result<Repository, GitError> {
        let path = self.mirror_path();
        if path.join("HEAD").exists() {
            return Ok(Repository::open_bare(&path)?);
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| GitError::Other(format!("cannot create {}: {e}", path.display())))?;
        let repo = Repository::init_bare(&path)?;
        repo.remote_with_fetch(
            "origin",
            &self.options.url,
            "+refs/heads/*:refs/remotes/origin/*",
        )?;
        Ok(repo)
    }

    fn callbacks(&self, deadline: Instant) -> RemoteCallbacks<'static> {
        let mut callbacks = RemoteCallbacks::new();
        let token_file = self.options.token_file.clone();
        let ssh_key = self.options.ssh_key_file.clone();
        let mut attempts = 0;
        callbacks.credentials(move |_url, username, allowed| {
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("authentication failed"));
            }
            if allowed.is_ssh_key() {
                if let Some(key) = &ssh_key {
                    return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
                }
            }
            if allowed.is_user_pass_plaintext() {
                if let Some(file) = &token_file {
                    let token = std::fs::read_to_string(file).map_err(|e| {
                        git2::Error::from_str(&format!(
                            "cannot read token file {}: {e}",
                            file.display()
                        ))
                    })?;
                    return Cred::userpass_plaintext(
                        username.unwrap_or("x-access-token"),
                        token.trim(),
                    );
                }
            }
            Err(git2::Error::from_str(
                "the remote asks for credentials and none are configured",
            ))
        });
        let known_hosts = self.options.known_hosts_file.clone();
        callbacks.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS certificates: libgit2 already verified them against the system roots.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let key = hostkey
                .hostkey()
                .ok_or_else(|| git2::Error::from_str("the SSH server sent no host key"))?;
            let file = known_hosts
                .clone()
                .or_else(default_known_hosts)
                .ok_or_else(|| {
                    git2::Error::from_str(
                        "no known_hosts file: set --git-known-hosts to check SSH host keys",
                    )
                })?;
            let text = std::fs::read_to_string(&file).map_err(|e| {
                git2::Error::from_str(&format!("cannot read {}: {e}", file.display()))
            })?;
            if known_host_matches(&text, host, key) {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                Err(git2::Error::from_str(&format!(
                    "host key of {host} is not in {}",
                    file.display()
                )))
            }
        });
        callbacks.transfer_progress(move |_| Instant::now() < deadline);
        callbacks.sideband_progress(move |_| Instant::now() < deadline);
        callbacks
    }

    /// Fetches and returns the tip commit of the tracked branch.
    pub fn fetch(&self) -> Result<(Repository, git2::Oid), GitError> {
        let repo = self.open_mirror()?;
        let deadline = Instant::now() + self.options.fetch_timeout;
        let timed_out = |e: git2::Error| {
            if Instant::now() >= deadline {
                GitError::Other(format!(
                    "fetch timed out after {:?}",
                    self.options.fetch_timeout
                ))
            } else {
                GitError::Git(e)
            }
        };
        let mut remote = repo.find_remote("origin")?;
        // One connection: it tells the remote's default branch, then the fetch reuses it.
        let mut connection = remote
            .connect_auth(git2::Direction::Fetch, Some(self.callbacks(deadline)), None)
            .map_err(timed_out)?;
        let branch = match &self.options.branch {
            Some(b) => b.clone(),
            None => {
                let head = connection.remote().default_branch()?;
                let head = head.as_str().unwrap_or("refs/heads/main").to_owned();
                head.strip_prefix("refs/heads/").unwrap_or(&head).to_owned()
            }
        };
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks(deadline));
        options.prune(git2::FetchPrune::On);
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        connection
            .remote()
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(timed_out)?;
        drop(connection);
        drop(remote);
        let oid = repo
            .find_reference(&format!("refs/remotes/origin/{branch}"))
            .map_err(|_| GitError::Other(format!("branch `{branch}` not found on the remote")))?
            .peel_to_commit()?
            .id();
        Ok((repo, oid))
    }

    /// The files of `commit` (below the configured path).
    pub fn snapshot(&self, repo: &Repository, commit: git2::Oid) -> Result<Snapshot, GitError> {
        read_tree(repo, commit, self.options.path.as_deref())
    }

    /// Fetches and offers the tip to the store; a failure is recorded in the store, not fatal.
    pub fn sync(&self, store: &RevisionStore) -> Result<Submitted, GitError> {
        let fetched = self.fetch().and_then(|(repo, commit)| {
            let meta = CommitMeta::read(&repo, commit, &self.options.url);
            Ok((self.snapshot(&repo, commit)?, commit, meta))
        });
        let (snapshot, commit, meta) = match fetched {
            Ok(fetched) => fetched,
            Err(e) => {
                store.sync_failed(format!("{}: {e}", self.describe()));
                return Err(e);
            }
        };
        let submitted = store.submit(
            &snapshot,
            &commit.to_string(),
            &self.describe(),
            false,
            meta,
        );
        if submitted == Submitted::Applied {
            self.remember(commit);
        }
        Ok(submitted)
    }

    fn remember(&self, commit: git2::Oid) {
        let _ = std::fs::write(self.last_good_path(), commit.to_string());
    }

    /// Serves the last commit that compiled, from the cache, when the remote cannot be reached.
    pub fn load_cached(&self, store: &RevisionStore) -> Result<Submitted, GitError> {
        let text = std::fs::read_to_string(self.last_good_path())
            .map_err(|_| GitError::Other("no cached revision".into()))?;
        let commit = git2::Oid::from_str(text.trim())?;
        let repo = Repository::open_bare(self.mirror_path())?;
        let snapshot = self.snapshot(&repo, commit)?;
        let meta = CommitMeta::read(&repo, commit, &self.options.url);
        tracing::warn!(revision = %commit, "serving the last good revision from the cache");
        Ok(store.submit(&snapshot, &commit.to_string(), &self.describe(), true, meta))
    }
}

/// The files of `commit` in `repo`, below `path` when one is given: how both the git source
/// and `diff` read a config repository out of git.
pub fn read_tree(
    repo: &Repository,
    commit: git2::Oid,
    path: Option<&str>,
) -> Result<Snapshot, GitError> {
    let tree = repo.find_commit(commit)?.tree()?;
    let tree = match path.map(|p| p.trim_matches('/')) {
        Some(path) if !path.is_empty() => {
            let entry = tree
                .get_path(Path::new(path))
                .map_err(|_| GitError::PathNotFound {
                    path: path.to_owned(),
                    commit,
                })?;
            repo.find_tree(entry.id())
                .map_err(|_| GitError::Other(format!("path `{path}` is not a directory")))?
        }
        _ => tree,
    };
    snapshot_of_tree(repo, &tree)
}

/// The files of a git tree, as a checkout would have them, without trusting the tree: each
/// blob's size is read from its header before the blob is, and a symlink is resolved inside the
/// tree (git stores a link as its target's text) or, when it leads out, is a problem of the
/// snapshot: never followed on the disk.
pub fn snapshot_of_tree(repo: &Repository, tree: &git2::Tree) -> Result<Snapshot, GitError> {
    const SYMLINK_MODE: i32 = 0o120000;
    let odb = repo.odb()?;
    let mut budget = SizeBudget::default();
    let mut snapshot = Snapshot::new();
    let mut links = Vec::new();
    let mut failure: Option<GitError> = None;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        let path = format!("{dir}{}", entry.name().unwrap_or_default());
        let read = odb
            .read_header(entry.id())
            .map_err(GitError::from)
            .and_then(|(size, _)| {
                budget
                    .take(&path, size as u64)
                    .map_err(|e| GitError::Other(e.to_string()))
            })
            .and_then(|()| Ok(repo.find_blob(entry.id())?));
        match read {
            Ok(blob) if entry.filemode() == SYMLINK_MODE => {
                links.push((path, String::from_utf8_lossy(blob.content()).into_owned()));
            }
            Ok(blob) => snapshot.insert(path, blob.content()),
            Err(e) => {
                failure = Some(e);
                return git2::TreeWalkResult::Abort;
            }
        }
        git2::TreeWalkResult::Ok
    });
    // An aborted walk reports only "callback returned an error": the reason is ours.
    if let Some(e) = failure {
        return Err(e);
    }
    walked?;
    for (path, target) in links {
        match resolve_link(&path, &target) {
            None => snapshot.reject(escaping_link(&path, &target)),
            Some(resolved) => {
                // A link to a link, to a directory or to nothing is left out, as `from_dir` does.
                if let Some(body) = snapshot.get(&resolved).map(<[u8]>::to_vec) {
                    snapshot.insert(path, body);
                }
            }
        }
    }
    Ok(snapshot)
}

fn default_known_hosts() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
        .filter(|p| p.exists())
}

/// Whether `known_hosts` lists `key` for `host` (plain host names, `[host]:port` patterns and
/// comma-separated lists; hashed entries are not supported).
pub fn known_host_matches(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    known_hosts
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|line| {
            let mut fields = line.split_whitespace();
            let (Some(hosts), Some(_kind), Some(blob)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return false;
            };
            blob == encoded
                && hosts.split(',').any(|h| {
                    let h = h
                        .strip_prefix('[')
                        .and_then(|h| h.split_once("]:").map(|(name, _)| name))
                        .unwrap_or(h);
                    h.eq_ignore_ascii_case(host)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_directories_are_told_apart() {
        for url in [
            "https://github.com/o/r.git",
            "ssh://git@h/r",
            "git@github.com:o/r.git",
            "file:///tmp/r",
            "git://h/r",
            "http://127.0.0.1:9/r",
        ] {
            assert!(is_git_url(url), "{url}");
        }
        for dir in [
            "./example-config-repo",
            "/srv/config",
            "configs/a:b",
            "a/b@c:d",
        ] {
            assert!(!is_git_url(dir), "{dir}");
        }
    }

    #[test]
    fn known_hosts_lines_match_host_and_key() {
        let key = b"\x00\x00\x00\x0bssh-ed25519 key bytes";
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        let line = format!("github.com,[git.example]:2222 ssh-ed25519 {encoded}\n");
        assert!(known_host_matches(&line, "github.com", key));
        assert!(known_host_matches(&line, "git.example", key));
        assert!(!known_host_matches(&line, "gitlab.com", key));
        assert!(!known_host_matches(&line, "github.com", b"another key"));
    }
}
