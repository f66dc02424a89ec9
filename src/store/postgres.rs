//! The PostgreSQL backend (tokio-postgres): the password from the URL or
//! `--store-password-file`, TLS through rustls (ring, the Mozilla roots) when the URL says
//! `sslmode=require`. One connection, opened again after it breaks; migrations run under an
//! advisory lock so that replicas starting together migrate once.

use super::{
    from_millis, to_millis, Batch, HistoryEntry, Loaded, StoreError, StoredAgent, StoredEvent,
    StoredRollout, EVENTS_KEPT, EVENTS_MAX_AGE,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

/// The schema versions, in order: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_fleet.sql"),
    include_str!("migrations/postgres/0002_rollout_actions.sql"),
];

/// Any constant both replicas agree on: the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6f70_616d_7067;

pub struct PostgresStore {
    config: Config,
    /// Where the URL points, without its password, for messages.
    target: String,
    client: Mutex<Option<Client>>,
}

fn io(target: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("postgres store {target}: {e}"))
}

impl PostgresStore {
    /// Connects, runs the migrations this database lacks, and refuses a newer schema.
    pub async fn open(url: &str, password: Option<String>) -> Result<PostgresStore, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("--store is not a PostgreSQL URL: {e}")))?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let target = format!(
            "{}/{}",
            config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            config.get_dbname().unwrap_or("")
        );
        let store = PostgresStore {
            config,
            target,
            client: Mutex::new(None),
        };
        let mut guard = store.client.lock().await;
        // Unreachable is an outage (the server starts degraded and tries again); a database
        // that answers but cannot be migrated is refused.
        let client = store.connected(&mut guard).await?;
        migrate(client, &store.target).await?;
        drop(guard);
        Ok(store)
    }

    /// The open connection, connecting again when there is none or it broke.
    async fn connected<'a>(
        &self,
        slot: &'a mut Option<Client>,
    ) -> Result<&'a mut Client, StoreError> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(self.connect().await?);
        }
        Ok(slot.as_mut().expect("just connected"))
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let target = self.target.clone();
        // The database answered and said no (a password, a missing database): no outage to
        // wait out, the configuration is wrong.
        let fail = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => StoreError::Config(format!("postgres store {target}: {}", db.message())),
            None => io(&target, e),
        };
        if self.config.get_ssl_mode() == SslMode::Require {
            let (client, connection) = self.config.connect(tls()).await.map_err(fail)?;
            tokio::spawn(watch(connection, self.target.clone()));
            Ok(client)
        } else {
            let (client, connection) = self.config.connect(NoTls).await.map_err(fail)?;
            tokio::spawn(watch(connection, self.target.clone()));
            Ok(client)
        }
    }

    pub async fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut guard = self.client.lock().await;
        let client = self.connected(&mut guard).await?;
        let result = write(client, &batch).await.map_err(|e| io(&self.target, e));
        if result.is_err() && client.is_closed() {
            *guard = None;
        }
        result
    }

    /// Every agent, and the events `me` recorded.
    pub async fn load(&self, me: &str) -> Result<Loaded, StoreError> {
        let mut guard = self.client.lock().await;
        let client = self.connected(&mut guard).await?;
        load(client, me).await.map_err(|e| io(&self.target, e))
    }
}

async fn watch<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(
    connection: F,
    target: String,
) {
    if let Err(e) = connection.await {
        tracing::debug!(store = %target, error = %e, "postgres connection closed");
    }
}

fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

async fn migrate(client: &mut Client, target: &str) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| {
        StoreError::Config(format!("cannot migrate the postgres store {target}: {e}"))
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let outcome = migrate_locked(client, target).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    outcome
}

async fn migrate_locked(client: &mut Client, target: &str) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| {
        StoreError::Config(format!("cannot migrate the postgres store {target}: {e}"))
    };
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS opamp_gitops_schema (version INTEGER NOT NULL);
             INSERT INTO opamp_gitops_schema (version)
                SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM opamp_gitops_schema);",
        )
        .await
        .map_err(fail)?;
    let version: i32 = client
        .query_one("SELECT version FROM opamp_gitops_schema", &[])
        .await
        .map_err(fail)?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(StoreError::Config(format!(
            "the postgres store {target} has schema version {version}, newer than this binary \
             knows ({known}): a newer opamp-gitops wrote it; run that version, or point --store \
             elsewhere"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let next = index as i32 + 1;
        let tx = client.transaction().await.map_err(fail)?;
        tx.batch_execute(sql).await.map_err(fail)?;
        tx.execute("UPDATE opamp_gitops_schema SET version = $1", &[&next])
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(store = %target, version = next, "store schema migrated");
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

async fn write(client: &mut Client, batch: &Batch) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let upsert = tx
        .prepare(
            "INSERT INTO agents (instance_uid, identifying, non_identifying, capabilities,
                sequence_num, reported_hash, remote_config_status, error_message, healthy,
                health_status, health_error, effective_config_hash, effective_config, desired_hash,
                revision, rule, transport, replica_id, connected, first_seen, last_seen, token_name)
             VALUES ($1, CAST($2::text AS jsonb), CAST($3::text AS jsonb), $4, $5, $6, $7, $8, $9,
                $10, $11, $12, CAST($13::text AS jsonb), $14, $15, $16, $17, $18, $19, $20, $21, $22)
             ON CONFLICT (instance_uid) DO UPDATE SET identifying = EXCLUDED.identifying,
                non_identifying = EXCLUDED.non_identifying, capabilities = EXCLUDED.capabilities,
                sequence_num = EXCLUDED.sequence_num, reported_hash = EXCLUDED.reported_hash,
                remote_config_status = EXCLUDED.remote_config_status,
                error_message = EXCLUDED.error_message, healthy = EXCLUDED.healthy,
                health_status = EXCLUDED.health_status, health_error = EXCLUDED.health_error,
                effective_config_hash = EXCLUDED.effective_config_hash,
                effective_config = EXCLUDED.effective_config, desired_hash = EXCLUDED.desired_hash,
                revision = EXCLUDED.revision, rule = EXCLUDED.rule, transport = EXCLUDED.transport,
                replica_id = EXCLUDED.replica_id, connected = EXCLUDED.connected,
                first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
                token_name = EXCLUDED.token_name
             WHERE EXCLUDED.connected OR NOT agents.connected
                OR agents.replica_id = EXCLUDED.replica_id",
        )
        .await?;
    let clear_history = tx
        .prepare("DELETE FROM agent_history WHERE instance_uid = $1")
        .await?;
    let add_history = tx
        .prepare(
            "INSERT INTO agent_history (instance_uid, seq, revision, config_hash, applied_at, left_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    for a in &batch.agents {
        let uid = &a.instance_uid[..];
        // An agent that left this replica for another, which already wrote it connected, is
        // the other's now: this replica's late "disconnected" (and its history) is not written.
        let written = tx
            .execute(
                &upsert,
                &[
                    &uid,
                    &json(&a.identifying),
                    &json(&a.non_identifying),
                    &(a.capabilities as i64),
                    &a.sequence_num.map(|n| n as i64),
                    &a.reported_hash,
                    &a.remote_config_status,
                    &a.error_message,
                    &a.healthy,
                    &a.health_status,
                    &a.health_error,
                    &a.effective_config_hash,
                    &a.effective_config.as_ref().map(json),
                    &a.desired_hash,
                    &a.revision,
                    &a.rule,
                    &a.transport,
                    &a.replica_id,
                    &a.connected,
                    &to_millis(a.first_seen),
                    &to_millis(a.last_seen),
                    &a.token_name,
                ],
            )
            .await?;
        if written == 0 {
            continue;
        }
        if let Some(history) = &a.history {
            tx.execute(&clear_history, &[&uid]).await?;
            for (seq, h) in history.iter().enumerate() {
                tx.execute(
                    &add_history,
                    &[
                        &uid,
                        &(seq as i32),
                        &h.revision,
                        &h.config_hash,
                        &to_millis(h.applied_at),
                        &h.left_at.map(to_millis),
                    ],
                )
                .await?;
            }
        }
    }
    for uid in &batch.forgotten {
        let uid = &uid[..];
        tx.execute("DELETE FROM agents WHERE instance_uid = $1", &[&uid])
            .await?;
        tx.execute(&clear_history, &[&uid]).await?;
    }
    if !batch.events.is_empty() {
        let replica = batch
            .replica
            .as_ref()
            .map(|r| r.replica_id.clone())
            .unwrap_or_default();
        let event = tx
            .prepare(
                "INSERT INTO events (replica_id, id, at, body)
                 VALUES ($4, $1, $2, CAST($3::text AS jsonb))
                 ON CONFLICT (replica_id, id) DO UPDATE SET at = EXCLUDED.at, body = EXCLUDED.body",
            )
            .await?;
        for e in &batch.events {
            tx.execute(
                &event,
                &[&(e.id as i64), &to_millis(e.at), &e.body, &replica],
            )
            .await?;
        }
        let cutoff = to_millis(SystemTime::now() - EVENTS_MAX_AGE);
        tx.execute(
            "DELETE FROM events WHERE at < $1 OR (replica_id = $3 AND id <=
                (SELECT id FROM events WHERE replica_id = $3 ORDER BY id DESC LIMIT 1 OFFSET $2))",
            &[&cutoff, &(EVENTS_KEPT as i64), &replica],
        )
        .await?;
    }
    for r in &batch.rollouts {
        tx.execute(
            "INSERT INTO rollout_actions (revision, scope, paused, admitted, resumes, forgiven,
                actor, replica_id, at)
             VALUES ($1, $2, $3, $4, $5, CAST($6::text AS jsonb), $7, $8, $9)
             ON CONFLICT (revision, scope) DO UPDATE SET paused = EXCLUDED.paused,
                admitted = EXCLUDED.admitted, resumes = EXCLUDED.resumes,
                forgiven = EXCLUDED.forgiven, actor = EXCLUDED.actor,
                replica_id = EXCLUDED.replica_id, at = EXCLUDED.at",
            &[
                &r.revision,
                &r.scope,
                &r.paused,
                &(r.admitted as i32),
                &(r.resumes as i32),
                &json(&r.forgiven),
                &r.actor,
                &r.replica_id,
                &to_millis(r.at),
            ],
        )
        .await?;
    }
    if let (true, Some(r)) = (batch.heartbeat, &batch.replica) {
        tx.execute(
            "INSERT INTO replicas (replica_id, started_at, heartbeat_at, admin_url)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (replica_id) DO UPDATE SET started_at = EXCLUDED.started_at,
                heartbeat_at = EXCLUDED.heartbeat_at, admin_url = EXCLUDED.admin_url",
            &[
                &r.replica_id,
                &to_millis(r.started_at),
                &to_millis(SystemTime::now()),
                &r.admin_url,
            ],
        )
        .await?;
    }
    tx.commit().await
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

/// Agent history rows, by agent, oldest first; `filter` is a `WHERE` clause or empty.
async fn history_where(
    client: &Client,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<HashMap<Vec<u8>, Vec<HistoryEntry>>, tokio_postgres::Error> {
    let mut history: HashMap<Vec<u8>, Vec<HistoryEntry>> = HashMap::new();
    let query = format!(
        "SELECT instance_uid, revision, config_hash, applied_at, left_at FROM agent_history {filter}
         ORDER BY instance_uid, seq"
    );
    for r in client.query(&query, params).await? {
        history
            .entry(r.get::<_, Vec<u8>>(0))
            .or_default()
            .push(HistoryEntry {
                revision: r.get(1),
                config_hash: r.get(2),
                applied_at: from_millis(r.get(3)),
                left_at: r.get::<_, Option<i64>>(4).map(from_millis),
            });
    }
    Ok(history)
}

/// Agent rows (`agents a`, joined and filtered by `from`), each with its `history`; `live` is
/// a boolean column: false shows the agent disconnected whatever its row says.
async fn agents_where(
    client: &Client,
    live: &str,
    from: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    mut history: HashMap<Vec<u8>, Vec<HistoryEntry>>,
) -> Result<Vec<StoredAgent>, tokio_postgres::Error> {
    let query = format!(
        "SELECT a.instance_uid, a.identifying::text, a.non_identifying::text, a.capabilities,
            a.sequence_num, a.reported_hash, a.remote_config_status, a.error_message, a.healthy,
            a.health_status, a.health_error, a.effective_config_hash, a.effective_config::text,
            a.desired_hash, a.revision, a.rule, a.transport, a.replica_id, a.connected,
            a.first_seen, a.last_seen, a.token_name, {live}
         FROM agents a {from}"
    );
    let mut agents = Vec::new();
    for r in client.query(&query, params).await? {
        let uid: Vec<u8> = r.get(0);
        let Ok(instance_uid) = <[u8; 16]>::try_from(uid.as_slice()) else {
            continue;
        };
        agents.push(StoredAgent {
            instance_uid,
            identifying: parse_json(r.get::<_, &str>(1)),
            non_identifying: parse_json(r.get::<_, &str>(2)),
            capabilities: r.get::<_, i64>(3) as u64,
            sequence_num: r.get::<_, Option<i64>>(4).map(|n| n as u64),
            reported_hash: r.get(5),
            remote_config_status: r.get(6),
            error_message: r.get(7),
            healthy: r.get(8),
            health_status: r.get(9),
            health_error: r.get(10),
            effective_config_hash: r.get(11),
            effective_config: r.get::<_, Option<&str>>(12).map(parse_json),
            desired_hash: r.get(13),
            revision: r.get(14),
            rule: r.get(15),
            transport: r.get(16),
            replica_id: r.get(17),
            connected: r.get::<_, bool>(18) && r.get::<_, bool>(22),
            first_seen: from_millis(r.get(19)),
            last_seen: from_millis(r.get(20)),
            token_name: r.get(21),
            history: Some(history.remove(&uid).unwrap_or_default()),
        });
    }
    Ok(agents)
}

async fn load(client: &mut Client, me: &str) -> Result<Loaded, tokio_postgres::Error> {
    let history = history_where(client, "", &[]).await?;
    let agents = agents_where(client, "true", "", &[], history).await?;
    let mut events: Vec<StoredEvent> = client
        .query(
            "SELECT id, at, body::text FROM events WHERE replica_id = $2 ORDER BY id DESC LIMIT $1",
            &[&(EVENTS_KEPT as i64), &me],
        )
        .await?
        .iter()
        .map(stored_event)
        .collect();
    events.reverse();
    Ok(Loaded {
        agents,
        events,
        rollouts: load_rollouts(client).await?,
    })
}

async fn load_rollouts(client: &Client) -> Result<Vec<StoredRollout>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT revision, scope, paused, admitted, resumes, forgiven::text, actor, replica_id,
                at FROM rollout_actions ORDER BY at",
            &[],
        )
        .await?
        .iter()
        .map(|r| StoredRollout {
            revision: r.get(0),
            scope: r.get(1),
            paused: r.get(2),
            admitted: r.get::<_, i32>(3) as u32,
            resumes: r.get::<_, i32>(4) as u32,
            forgiven: parse_json(r.get::<_, &str>(5)),
            actor: r.get(6),
            replica_id: r.get(7),
            at: from_millis(r.get(8)),
        })
        .collect())
}

/// The NOTIFY channel actions for another replica's agents go through.
pub const ACTIONS_CHANNEL: &str = "opamp_gitops_actions";

impl PostgresStore {
    /// The agents other replicas hold, each `connected` only while its replica's heartbeat is
    /// younger than `lease`.
    pub async fn remote_agents(
        &self,
        me: &str,
        lease: Duration,
    ) -> Result<Vec<StoredAgent>, StoreError> {
        let mut guard = self.client.lock().await;
        let client = self.connected(&mut guard).await?;
        let fresh = to_millis(SystemTime::now() - lease);
        let history = history_where(
            client,
            "WHERE instance_uid IN (SELECT instance_uid FROM agents WHERE replica_id <> $1)",
            &[&me],
        )
        .await
        .map_err(|e| io(&self.target, e))?;
        agents_where(
            client,
            "COALESCE(r.heartbeat_at >= $2, false)",
            "LEFT JOIN replicas r ON r.replica_id = a.replica_id WHERE a.replica_id <> $1",
            &[&me, &fresh],
            history,
        )
        .await
        .map_err(|e| io(&self.target, e))
    }

    /// Every replica's decisions on rollouts.
    pub async fn rollouts(&self) -> Result<Vec<StoredRollout>, StoreError> {
        let mut guard = self.client.lock().await;
        let client = self.connected(&mut guard).await?;
        load_rollouts(client).await.map_err(|e| io(&self.target, e))
    }

    /// The most recent `limit` audit events the replicas other than `me` recorded, oldest first.
    pub async fn remote_events(
        &self,
        me: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut guard = self.client.lock().await;
        let client = self.connected(&mut guard).await?;
        let mut events: Vec<StoredEvent> = client
            .query(
                "SELECT id, at, body::text FROM events WHERE replica_id <> $2
                 ORDER BY at DESC, replica_id, id DESC LIMIT $1",
                &[&(limit as i64), &me],
            )
            .await
            .map_err(|e| io(&self.target, e))?
            .iter()
            .map(stored_event)
            .collect();
        events.reverse();
        Ok(events)
    }

    /// Sends `payload` to every replica listening on [`ACTIONS_CHANNEL`].
    pub async fn notify(&self, payload: &str) -> Result<(), StoreError> {
        let mut guard = self.client.lock().await;
        let client = self.connected(&mut guard).await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&ACTIONS_CHANNEL, &payload])
            .await
            .map_err(|e| io(&self.target, e))?;
        Ok(())
    }

    /// A connection of its own that LISTENs on [`ACTIONS_CHANNEL`]; the payloads arrive on the
    /// returned channel until that connection breaks (the caller listens again).
    pub async fn listen(&self) -> Result<tokio::sync::mpsc::Receiver<String>, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let target = self.target.clone();
        let fail = |e: tokio_postgres::Error| io(&target, e);
        if self.config.get_ssl_mode() == SslMode::Require {
            let (client, connection) = self.config.connect(tls()).await.map_err(fail)?;
            tokio::spawn(forward_notifications(client, connection, tx));
        } else {
            let (client, connection) = self.config.connect(NoTls).await.map_err(fail)?;
            tokio::spawn(forward_notifications(client, connection, tx));
        }
        Ok(rx)
    }
}

async fn forward_notifications<S, T>(
    client: Client,
    mut connection: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::Sender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {ACTIONS_CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                if done.is_err() { return; }
                listening = true;
            }
            message = messages.next() => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).await.is_err() { return; }
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    }
}

/// An `events` row selected as `id, at, body::text`.
fn stored_event(row: &tokio_postgres::Row) -> StoredEvent {
    StoredEvent {
        id: row.get::<_, i64>(0) as u64,
        at: from_millis(row.get(1)),
        body: row.get(2),
    }
}
