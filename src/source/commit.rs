//! What `/api/revision` and the dashboard tell about a git revision: its commit's subject,
//! author and time, and a link to the commit on the forge when the remote is a GitHub, GitLab or
//! Gitea (Forgejo) one.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CommitMeta {
    /// The first line of the commit message.
    pub subject: String,
    /// `Name <email>` of the author.
    pub author: String,
    /// The author time, RFC 3339 in UTC.
    pub time: String,
    /// The commit's page on the forge, when the remote URL names a known forge.
    pub url: Option<String>,
}

impl CommitMeta {
    /// Reads `commit` from `repo`; `remote` is the URL the repository was fetched from.
    pub fn read(repo: &git2::Repository, commit: git2::Oid, remote: &str) -> Option<CommitMeta> {
        let found = repo.find_commit(commit).ok()?;
        let author = found.author();
        let name = author.name().unwrap_or_default();
        let author_text = match author.email() {
            Ok(email) if !email.is_empty() => format!("{name} <{email}>"),
            _ => name.to_owned(),
        };
        let seconds = u64::try_from(author.when().seconds()).unwrap_or(0);
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        Some(CommitMeta {
            subject: found
                .summary()
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_owned(),
            author: author_text,
            time: humantime::format_rfc3339_seconds(time).to_string(),
            url: forge_commit_url(remote, &commit.to_string()),
        })
    }
}

/// The web page of `sha` for a remote on a known forge, or None. Accepts the URL forms the
/// server fetches from (`https://host/owner/repo.git`, `ssh://git@host/owner/repo`,
/// `git@host:owner/repo.git`); credentials in the URL are left out of the link.
pub fn forge_commit_url(remote: &str, sha: &str) -> Option<String> {
    let (host, path) = host_and_path(remote)?;
    let path = path.trim_matches('/').trim_end_matches(".git");
    if path.split('/').filter(|s| !s.is_empty()).count() < 2 {
        return None;
    }
    let host_name = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let commit_path = if host_name == "github.com" || host_name.contains("gitea") {
        "commit"
    } else if host_name.contains("gitlab") {
        "-/commit"
    } else if host_name.contains("codeberg") || host_name.contains("forgejo") {
        "commit"
    } else if host_name.contains("github") {
        // GitHub Enterprise Server (github.example.com).
        "commit"
    } else {
        return None;
    };
    // An ssh port is not the web port: link to the host alone.
    let web_host = if remote.contains("://") && !remote.starts_with("ssh://") {
        host.to_owned()
    } else {
        host_name
    };
    Some(format!("https://{web_host}/{path}/{commit_path}/{sha}"))
}

/// The host (with any port) and the path of a remote URL, without credentials.
fn host_and_path(remote: &str) -> Option<(&str, &str)> {
    if let Some((_, rest)) = remote.split_once("://") {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        return Some((host, path));
    }
    // scp-like: [user@]host:path
    let (authority, path) = remote.split_once(':')?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty() && !host.contains('/')).then_some((host, path))
}

#[cfg(test)]
mod tests {
    use super::forge_commit_url;

    #[test]
    fn links_point_at_each_forges_commit_page() {
        let sha = "0123abcd";
        assert_eq!(
            forge_commit_url("https://github.com/acme/configs.git", sha).as_deref(),
            Some("https://github.com/acme/configs/commit/0123abcd")
        );
        assert_eq!(
            forge_commit_url("git@github.com:acme/configs.git", sha).as_deref(),
            Some("https://github.com/acme/configs/commit/0123abcd")
        );
        assert_eq!(
            forge_commit_url(
                "https://oauth2:secret@gitlab.com/group/sub/configs.git",
                sha
            )
            .as_deref(),
            Some("https://gitlab.com/group/sub/configs/-/commit/0123abcd")
        );
        assert_eq!(
            forge_commit_url("ssh://git@gitea.example.org:2222/ops/configs", sha).as_deref(),
            Some("https://gitea.example.org/ops/configs/commit/0123abcd")
        );
    }

    #[test]
    fn other_remotes_get_no_link() {
        assert_eq!(forge_commit_url("file:///srv/git/configs.git", "a"), None);
        assert_eq!(
            forge_commit_url("https://git.example.org/configs.git", "a"),
            None
        );
        assert_eq!(forge_commit_url("https://github.com/acme", "a"), None);
    }
}
