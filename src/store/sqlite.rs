//! The SQLite backend: one file (WAL mode) that one server holds at a time, enforced by an
//! exclusive lock on `PATH.lock`. rusqlite blocks, so every call runs on a blocking thread.
//! Migrations are embedded and run at open; a file that is not SQLite, an SQLite file of
//! something else, or a schema newer than this binary is refused with what to do.

use super::{
    from_millis, to_millis, Batch, HistoryEntry, Loaded, StoreError, StoredAgent, StoredEvent,
    StoredRollout, EVENTS_KEPT, EVENTS_MAX_AGE,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The schema versions, in order: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_fleet.sql"),
    include_str!("migrations/sqlite/0002_rollout_actions.sql"),
];

/// The table that marks a database as this server's and holds its schema version.
const SCHEMA_TABLE: &str = "opamp_gitops_schema";

pub struct SqliteStore {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
    /// Held open for the store's life: its lock says the database is in use.
    _lock: File,
}

fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("sqlite store {}: {e}", path.display()))
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Config(format!(
                    "cannot create the directory of the store {}: {e}",
                    path.display()
                ))
            })?;
        }
        let lock = lock_file(path)?;
        let connection = Connection::open(path).map_err(|e| refused(path, &e))?;
        let refuse = |e: rusqlite::Error| refused(path, &e);
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(refuse)?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(refuse)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Config(format!(
                "the store {} cannot use WAL mode (journal mode stays `{mode}`)",
                path.display()
            )));
        }
        connection
            .execute_batch("PRAGMA synchronous=NORMAL")
            .map_err(refuse)?;
        migrate(&connection, path)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
            _lock: lock,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut connection, &path)
        })
        .await
        .map_err(|e| io(&self.path, e))?
    }

    pub async fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.blocking(move |c, path| write(c, &batch).map_err(|e| io(path, e)))
            .await
    }

    pub async fn load(&self) -> Result<Loaded, StoreError> {
        self.blocking(|c, path| load(c).map_err(|e| io(path, e)))
            .await
    }
}

/// Takes the exclusive lock on `PATH.lock`, or says who holds it.
fn lock_file(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Config(format!(
                "cannot open the lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    // SAFETY: flock on a file descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        return Err(StoreError::Config(format!(
            "the store {} is in use by another running opamp-gitops server (it holds {}): \
             stop that server, or give this one its own --store or --cache-dir; several \
             replicas need a shared PostgreSQL store",
            path.display(),
            lock_path.display()
        )));
    }
    Ok(file)
}

/// An error opening a file that exists: corrupt or not SQLite at all.
fn refused(path: &Path, e: &rusqlite::Error) -> StoreError {
    let not_a_database = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    );
    if not_a_database {
        StoreError::Config(format!(
            "the store {} is not a usable SQLite database ({e}): move the file away (the server \
             creates a new one) or point --store at another path",
            path.display()
        ))
    } else {
        StoreError::Config(format!("cannot open the store {}: {e}", path.display()))
    }
}

/// Runs the migrations this database lacks; refuses foreign and newer schemas.
fn migrate(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let refuse = |e: rusqlite::Error| refused(path, &e);
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(refuse)?;
    let ours = tables.iter().any(|t| t == SCHEMA_TABLE);
    if !ours && !tables.is_empty() {
        return Err(StoreError::Config(format!(
            "the store {} is an SQLite database of something else (tables: {}): move it away or \
             point --store at another path",
            path.display(),
            tables.join(", ")
        )));
    }
    if !ours {
        connection
            .execute_batch(&format!(
                "CREATE TABLE {SCHEMA_TABLE} (version INTEGER NOT NULL);
                 INSERT INTO {SCHEMA_TABLE} (version) VALUES (0);"
            ))
            .map_err(refuse)?;
    }
    let version: i64 = connection
        .query_row(&format!("SELECT version FROM {SCHEMA_TABLE}"), [], |r| {
            r.get(0)
        })
        .map_err(refuse)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Config(format!(
            "the store {} has schema version {version}, newer than this binary knows ({known}): \
             a newer opamp-gitops wrote it; run that version, or point --store elsewhere",
            path.display()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let next = index as i64 + 1;
        connection
            .execute_batch(&format!(
                "BEGIN; {sql}; UPDATE {SCHEMA_TABLE} SET version = {next}; COMMIT;"
            ))
            .map_err(|e| {
                StoreError::Config(format!(
                    "migration {next} of the store {} failed: {e}",
                    path.display()
                ))
            })?;
        tracing::info!(store = %path.display(), version = next, "store schema migrated");
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn write(connection: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT OR REPLACE INTO agents (instance_uid, identifying, non_identifying, capabilities,
                sequence_num, reported_hash, remote_config_status, error_message, healthy,
                health_status, health_error, effective_config_hash, effective_config, desired_hash,
                revision, rule, transport, replica_id, connected, first_seen, last_seen, token_name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22)",
        )?;
        let mut clear_history =
            tx.prepare_cached("DELETE FROM agent_history WHERE instance_uid = ?1")?;
        let mut add_history = tx.prepare_cached(
            "INSERT INTO agent_history (instance_uid, seq, revision, config_hash, applied_at, left_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for a in &batch.agents {
            upsert.execute(params![
                &a.instance_uid[..],
                json(&a.identifying),
                json(&a.non_identifying),
                a.capabilities as i64,
                a.sequence_num.map(|n| n as i64),
                a.reported_hash,
                a.remote_config_status,
                a.error_message,
                a.healthy,
                a.health_status,
                a.health_error,
                a.effective_config_hash,
                a.effective_config.as_ref().map(json),
                a.desired_hash,
                a.revision,
                a.rule,
                a.transport,
                a.replica_id,
                a.connected,
                to_millis(a.first_seen),
                to_millis(a.last_seen),
                a.token_name,
            ])?;
            if let Some(history) = &a.history {
                clear_history.execute(params![&a.instance_uid[..]])?;
                for (seq, h) in history.iter().enumerate() {
                    add_history.execute(params![
                        &a.instance_uid[..],
                        seq as i64,
                        h.revision,
                        h.config_hash,
                        to_millis(h.applied_at),
                        h.left_at.map(to_millis),
                    ])?;
                }
            }
        }
        let mut forget = tx.prepare_cached("DELETE FROM agents WHERE instance_uid = ?1")?;
        for uid in &batch.forgotten {
            forget.execute(params![&uid[..]])?;
            clear_history.execute(params![&uid[..]])?;
        }
        let mut event =
            tx.prepare_cached("INSERT OR REPLACE INTO events (id, at, body) VALUES (?1, ?2, ?3)")?;
        for e in &batch.events {
            event.execute(params![e.id as i64, to_millis(e.at), e.body])?;
        }
        if !batch.events.is_empty() {
            let cutoff = to_millis(SystemTime::now() - EVENTS_MAX_AGE);
            tx.execute(
                "DELETE FROM events WHERE at < ?1 OR id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![cutoff, EVENTS_KEPT as i64],
            )?;
        }
        let mut rollout = tx.prepare_cached(
            "INSERT OR REPLACE INTO rollout_actions (revision, scope, paused, admitted, resumes,
                forgiven, actor, replica_id, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for r in &batch.rollouts {
            rollout.execute(params![
                r.revision,
                r.scope,
                r.paused,
                r.admitted,
                r.resumes,
                json(&r.forgiven),
                r.actor,
                r.replica_id,
                to_millis(r.at),
            ])?;
        }
        if let (true, Some(r)) = (batch.heartbeat, &batch.replica) {
            tx.execute(
                "INSERT OR REPLACE INTO replicas (replica_id, started_at, heartbeat_at, admin_url)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    r.replica_id,
                    to_millis(r.started_at),
                    to_millis(SystemTime::now()),
                    r.admin_url
                ],
            )?;
        }
    }
    tx.commit()
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

fn load(connection: &mut Connection) -> rusqlite::Result<Loaded> {
    let mut history: HashMap<Vec<u8>, Vec<HistoryEntry>> = HashMap::new();
    {
        let mut rows = connection.prepare(
            "SELECT instance_uid, revision, config_hash, applied_at, left_at FROM agent_history
             ORDER BY instance_uid, seq",
        )?;
        let mapped = rows.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                HistoryEntry {
                    revision: r.get(1)?,
                    config_hash: r.get(2)?,
                    applied_at: from_millis(r.get(3)?),
                    left_at: r.get::<_, Option<i64>>(4)?.map(from_millis),
                },
            ))
        })?;
        for row in mapped {
            let (uid, entry) = row?;
            history.entry(uid).or_default().push(entry);
        }
    }
    let mut agents = Vec::new();
    {
        let mut rows = connection.prepare(
            "SELECT instance_uid, identifying, non_identifying, capabilities, sequence_num,
                reported_hash, remote_config_status, error_message, healthy, health_status,
                health_error, effective_config_hash, effective_config, desired_hash, revision,
                rule, transport, replica_id, connected, first_seen, last_seen, token_name
             FROM agents",
        )?;
        let mapped = rows.query_map([], |r| {
            let uid: Vec<u8> = r.get(0)?;
            Ok((
                uid,
                StoredAgent {
                    instance_uid: [0; 16],
                    identifying: parse_json(&r.get::<_, String>(1)?),
                    non_identifying: parse_json(&r.get::<_, String>(2)?),
                    capabilities: r.get::<_, i64>(3)? as u64,
                    sequence_num: r.get::<_, Option<i64>>(4)?.map(|n| n as u64),
                    reported_hash: r.get(5)?,
                    remote_config_status: r.get(6)?,
                    error_message: r.get(7)?,
                    healthy: r.get(8)?,
                    health_status: r.get(9)?,
                    health_error: r.get(10)?,
                    effective_config_hash: r.get(11)?,
                    effective_config: r.get::<_, Option<String>>(12)?.map(|t| parse_json(&t)),
                    desired_hash: r.get(13)?,
                    revision: r.get(14)?,
                    rule: r.get(15)?,
                    transport: r.get(16)?,
                    replica_id: r.get(17)?,
                    connected: r.get(18)?,
                    first_seen: from_millis(r.get(19)?),
                    last_seen: from_millis(r.get(20)?),
                    token_name: r.get(21)?,
                    history: None,
                },
            ))
        })?;
        for row in mapped {
            let (uid, mut agent) = row?;
            let Ok(bytes) = <[u8; 16]>::try_from(uid.as_slice()) else {
                continue;
            };
            agent.instance_uid = bytes;
            agent.history = Some(history.remove(&uid).unwrap_or_default());
            agents.push(agent);
        }
    }
    let mut events: Vec<StoredEvent> = connection
        .prepare("SELECT id, at, body FROM events ORDER BY id DESC LIMIT ?1")?
        .query_map(params![EVENTS_KEPT as i64], |r| {
            Ok(StoredEvent {
                id: r.get::<_, i64>(0)? as u64,
                at: from_millis(r.get(1)?),
                body: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    events.reverse();
    let rollouts = connection
        .prepare(
            "SELECT revision, scope, paused, admitted, resumes, forgiven, actor, replica_id, at
             FROM rollout_actions ORDER BY at",
        )?
        .query_map([], |r| {
            Ok(StoredRollout {
                revision: r.get(0)?,
                scope: r.get(1)?,
                paused: r.get(2)?,
                admitted: r.get(3)?,
                resumes: r.get(4)?,
                forgiven: parse_json(&r.get::<_, String>(5)?),
                actor: r.get(6)?,
                replica_id: r.get(7)?,
                at: from_millis(r.get(8)?),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Loaded {
        agents,
        events,
        rollouts,
    })
}

/// The schema version of a store file, for tests and diagnostics.
pub fn schema_version(path: &Path) -> Result<Option<i64>, StoreError> {
    let connection = Connection::open(path).map_err(|e| refused(path, &e))?;
    connection
        .query_row(&format!("SELECT version FROM {SCHEMA_TABLE}"), [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| refused(path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HistoryEntry;
    use std::collections::BTreeMap;

    fn agent(uid: u8) -> StoredAgent {
        StoredAgent {
            instance_uid: [uid; 16],
            identifying: BTreeMap::from([("service.name".into(), "otelcol".into())]),
            non_identifying: BTreeMap::new(),
            capabilities: 7,
            sequence_num: Some(41),
            reported_hash: Some("ab".into()),
            remote_config_status: Some("applied".into()),
            error_message: None,
            healthy: Some(true),
            health_status: None,
            health_error: None,
            effective_config_hash: None,
            effective_config: Some(BTreeMap::from([("collector.yaml".into(), "a: 1".into())])),
            desired_hash: Some("ab".into()),
            revision: Some("r1".into()),
            rule: Some("everyone".into()),
            transport: "ws".into(),
            replica_id: "one".into(),
            connected: true,
            first_seen: from_millis(1_000),
            last_seen: from_millis(2_000),
            token_name: None,
            history: Some(vec![HistoryEntry {
                revision: Some("r1".into()),
                config_hash: "ab".into(),
                applied_at: from_millis(1_500),
                left_at: None,
            }]),
        }
    }

    #[tokio::test]
    async fn what_is_written_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        let paused = StoredRollout {
            revision: "abc".into(),
            scope: "fleet".into(),
            paused: true,
            admitted: 1,
            resumes: 2,
            forgiven: vec!["0101".into()],
            actor: Some("alice".into()),
            replica_id: "r".into(),
            at: from_millis(7_000),
        };
        {
            let store = SqliteStore::open(&path).unwrap();
            let batch = Batch {
                agents: vec![agent(1), agent(2)],
                forgotten: vec![[2; 16]],
                events: vec![StoredEvent {
                    id: 3,
                    at: from_millis(5_000),
                    body: "{}".into(),
                }],
                rollouts: vec![paused.clone()],
                replica: None,
                heartbeat: false,
            };
            store.write(batch).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.agents, vec![agent(1)]);
        assert_eq!(loaded.rollouts, vec![paused]);
        assert_eq!(loaded.events.len(), 0, "older than the age bound");
        assert_eq!(
            schema_version(&path).unwrap(),
            Some(MIGRATIONS.len() as i64)
        );
    }

    #[test]
    fn a_second_server_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        let _first = SqliteStore::open(&path).unwrap();
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("in use by another running opamp-gitops server"),
            "{err}"
        );
    }

    #[test]
    fn foreign_corrupt_and_newer_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
        let err = SqliteStore::open(&garbage).err().unwrap().to_string();
        assert!(err.contains("not a usable SQLite database"), "{err}");
        assert!(err.contains(&garbage.display().to_string()), "{err}");

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE invoices (id INTEGER)")
            .unwrap();
        let err = SqliteStore::open(&foreign).err().unwrap().to_string();
        assert!(
            err.contains("of something else (tables: invoices)"),
            "{err}"
        );

        let newer = dir.path().join("newer.db");
        drop(SqliteStore::open(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .execute_batch("UPDATE opamp_gitops_schema SET version = 99")
            .unwrap();
        let err = SqliteStore::open(&newer).err().unwrap().to_string();
        assert!(
            err.contains("schema version 99, newer than this binary"),
            "{err}"
        );
    }
}
