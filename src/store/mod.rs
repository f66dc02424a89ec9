//! The fleet store: where agent records, the revisions each agent ran and the audit trail
//! persist, so that a restart keeps the fleet. One narrow interface (write a batch, read
//! everything back at start); the fleet module decides what is written and when
//! (`fleet::persist`). Backends: `sqlite://PATH` (the default, `fleet.db` in the cache
//! directory), `postgres://...` and `memory` (nothing persists).

pub mod postgres;
pub mod sqlite;

use crate::options::parse_duration;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Rows of history kept per agent; older ones are dropped.
pub const HISTORY_PER_AGENT: usize = 50;

/// Audit events kept in the store, by count and by age.
pub const EVENTS_KEPT: usize = 10_000;
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, clap::Args)]
pub struct StoreOptions {
    /// Where agent state, history and audit events persist: `sqlite://PATH`,
    /// `postgres://USER@HOST/DB` (`?sslmode=require` for TLS) or `memory` (default:
    /// sqlite://<cache-dir>/fleet.db).
    #[arg(
        long,
        env = "OPAMP_GITOPS_STORE",
        value_name = "URL",
        help_heading = "Store"
    )]
    pub store: Option<String>,
    /// How often changed agents are written to the store (coalesced per agent).
    #[arg(long, env = "OPAMP_GITOPS_STORE_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration, help_heading = "Store")]
    pub store_flush_interval: Duration,
    /// The name this server writes its agents under (default: the host name).
    #[arg(long, env = "OPAMP_GITOPS_REPLICA_ID", help_heading = "Store")]
    pub replica_id: Option<String>,
    /// PostgreSQL: a file holding the password (instead of one in the URL).
    #[arg(long, env = "OPAMP_GITOPS_STORE_PASSWORD_FILE", help_heading = "Store")]
    pub store_password_file: Option<PathBuf>,
}

impl StoreOptions {
    /// The backend `--store` names, the default one under `cache_dir`.
    pub fn backend(&self, cache_dir: &Path) -> Result<Backend, StoreError> {
        match self.store.as_deref() {
            None => Ok(Backend::Sqlite(cache_dir.join("fleet.db"))),
            Some(url) => Backend::parse(url),
        }
    }

    /// The password in `--store-password-file` (its first line).
    pub fn password(&self) -> Result<Option<String>, StoreError> {
        let Some(path) = &self.store_password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Config(format!(
                "cannot read --store-password-file {}: {e}",
                path.display()
            ))
        })?;
        Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
    }

    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(host_name)
    }
}

/// The host name, or `opamp-gitops` when it cannot be read.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name = ok
        .then(|| {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        })
        .filter(|n| !n.is_empty());
    name.unwrap_or_else(|| "opamp-gitops".into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite(PathBuf),
    /// A libpq-style URL.
    Postgres(String),
}

impl Backend {
    pub fn parse(url: &str) -> Result<Backend, StoreError> {
        if url == "memory" {
            return Ok(Backend::Memory);
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Config(
                    "`sqlite://` needs a path, e.g. sqlite:///var/lib/opamp-gitops/fleet.db".into(),
                ));
            }
            return Ok(Backend::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres(url.to_owned()));
        }
        let shown = url.split('@').next_back().unwrap_or_default();
        Err(StoreError::Config(format!(
            "--store `{shown}` is not a store this server knows: use sqlite://PATH, \
             postgres://... or memory"
        )))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be used as configured (refused at start).
    #[error("{0}")]
    Config(String),
    /// A read or write failed; the next flush retries.
    #[error("{0}")]
    Io(String),
}

/// One agent as stored: what it last reported and what the server wanted for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAgent {
    pub instance_uid: [u8; 16],
    pub identifying: BTreeMap<String, String>,
    pub non_identifying: BTreeMap<String, String>,
    pub capabilities: u64,
    pub sequence_num: Option<u64>,
    /// Lowercase hex.
    pub reported_hash: Option<String>,
    /// `unset`, `applied`, `applying` or `failed`.
    pub remote_config_status: Option<String>,
    pub error_message: Option<String>,
    pub healthy: Option<bool>,
    pub health_status: Option<String>,
    pub health_error: Option<String>,
    pub effective_config_hash: Option<String>,
    /// File name → body, as the agent reported it (bounded by the input limits).
    pub effective_config: Option<BTreeMap<String, String>>,
    pub desired_hash: Option<String>,
    pub revision: Option<String>,
    pub rule: Option<String>,
    pub transport: String,
    pub replica_id: String,
    pub connected: bool,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub token_name: Option<String>,
    /// The revisions it ran, oldest first; `None` in a write: unchanged since the last one.
    pub history: Option<Vec<HistoryEntry>>,
}

/// A config an agent ran: from when it reported it applied until it applied another.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub revision: Option<String>,
    pub config_hash: String,
    #[serde(serialize_with = "crate::diagnostics::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub applied_at: SystemTime,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub left_at: Option<SystemTime>,
}

fn rfc3339_opt<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => crate::diagnostics::rfc3339(at, s),
        None => s.serialize_none(),
    }
}

/// An audit event as stored: its id, time, and JSON form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: u64,
    pub at: SystemTime,
    pub body: String,
}

/// An operator's standing decision on one scope's rollout under one revision (what its
/// pause, resume and promote left), so that it outlives the request and the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRollout {
    pub revision: String,
    pub scope: String,
    pub paused: bool,
    /// Waves admitted at least (a promote raises it).
    pub admitted: u32,
    /// How many resumes there were: a replica that sees it grow forgives its own failures.
    pub resumes: u32,
    /// Agents (uid text) whose failures a resume forgave.
    pub forgiven: Vec<String>,
    /// The admin token's name.
    pub actor: Option<String>,
    pub replica_id: String,
    pub at: SystemTime,
}

/// What one flush writes.
#[derive(Debug, Default)]
pub struct Batch {
    pub agents: Vec<StoredAgent>,
    pub forgotten: Vec<[u8; 16]>,
    pub events: Vec<StoredEvent>,
    pub rollouts: Vec<StoredRollout>,
    /// The replica writing (its events are its own).
    pub replica: Option<ReplicaBeat>,
    /// Whether to write the replica's heartbeat (its own timer, not every flush).
    pub heartbeat: bool,
}

#[derive(Debug, Clone)]
pub struct ReplicaBeat {
    pub replica_id: String,
    pub started_at: SystemTime,
    pub admin_url: Option<String>,
}

/// What a server finds in the store when it starts.
#[derive(Debug, Default)]
pub struct Loaded {
    pub agents: Vec<StoredAgent>,
    /// The most recent events, oldest first.
    pub events: Vec<StoredEvent>,
    pub rollouts: Vec<StoredRollout>,
}

/// An open store.
pub enum FleetStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<postgres::PostgresStore>),
}

impl FleetStore {
    /// Opens the backend, running its migrations; `None` for `memory`.
    pub async fn open(
        backend: &Backend,
        password: Option<String>,
    ) -> Result<Option<FleetStore>, StoreError> {
        match backend {
            Backend::Postgres(url) => Ok(Some(FleetStore::Postgres(Box::new(
                postgres::PostgresStore::open(url, password).await?,
            )))),
            Backend::Memory => Ok(None),
            Backend::Sqlite(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
                    .await
                    .map_err(|e| StoreError::Io(e.to_string()))??;
                Ok(Some(FleetStore::Sqlite(store)))
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            FleetStore::Sqlite(_) => "sqlite",
            FleetStore::Postgres(_) => "postgres",
        }
    }

    pub async fn write(&self, batch: Batch) -> Result<(), StoreError> {
        match self {
            FleetStore::Sqlite(store) => store.write(batch).await,
            FleetStore::Postgres(store) => store.write(batch).await,
        }
    }

    /// The agents other replicas hold (PostgreSQL; an SQLite store has one server).
    pub async fn remote_agents(
        &self,
        me: &str,
        lease: Duration,
    ) -> Result<Vec<StoredAgent>, StoreError> {
        match self {
            FleetStore::Sqlite(_) => Ok(Vec::new()),
            FleetStore::Postgres(store) => store.remote_agents(me, lease).await,
        }
    }

    /// Whether replicas can reach each other through this store.
    pub fn shared(&self) -> Option<&postgres::PostgresStore> {
        match self {
            FleetStore::Sqlite(_) => None,
            FleetStore::Postgres(store) => Some(store),
        }
    }

    /// Every replica's decisions on rollouts (read again when another replica announces one).
    pub async fn rollouts(&self) -> Result<Vec<StoredRollout>, StoreError> {
        match self {
            FleetStore::Sqlite(store) => Ok(store.load().await?.rollouts),
            FleetStore::Postgres(store) => store.rollouts().await,
        }
    }

    /// The most recent `limit` audit events the other replicas recorded, oldest first
    /// (PostgreSQL; with SQLite this server's own log is the whole trail).
    pub async fn remote_events(
        &self,
        me: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match self {
            FleetStore::Sqlite(_) => Ok(Vec::new()),
            FleetStore::Postgres(store) => store.remote_events(me, limit).await,
        }
    }

    /// What a server finds at start: every agent, and the events `replica_id` recorded.
    pub async fn load(&self, replica_id: &str) -> Result<Loaded, StoreError> {
        match self {
            FleetStore::Sqlite(store) => store.load().await,
            FleetStore::Postgres(store) => store.load(replica_id).await,
        }
    }
}

/// Milliseconds since the Unix epoch, as the tables keep times.
pub fn to_millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_their_backend_or_say_what_is_known() {
        assert_eq!(Backend::parse("memory").unwrap(), Backend::Memory);
        assert_eq!(
            Backend::parse("sqlite:///tmp/x.db").unwrap(),
            Backend::Sqlite("/tmp/x.db".into())
        );
        let err = Backend::parse("mysql://db").unwrap_err().to_string();
        assert!(
            err.contains("sqlite://PATH, postgres://... or memory"),
            "{err}"
        );
        assert_eq!(
            Backend::parse("postgres://u@h/db").unwrap(),
            Backend::Postgres("postgres://u@h/db".into())
        );
        assert!(Backend::parse("sqlite://").is_err());
    }
}
