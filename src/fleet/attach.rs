//! Attaching the fleet to its store at start: open it (its migrations run), restore what it
//! holds, then run the flusher, the replica heartbeat and the relay between replicas. When the
//! database cannot be reached the server starts anyway: agents are served from git and memory,
//! the store shows degraded, and opening is tried again every second. Once it answers the store
//! catches up: the migrations run, what it held is restored beside what arrived meanwhile (which
//! wins), and everything marked since the start is flushed.

use super::persist::{relay, Flusher};
use super::Fleet;
use crate::audit::AuditLog;
use crate::metrics::Metrics;
use crate::store::{Backend, FleetStore, Loaded, ReplicaBeat, StoreError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a server that started without its store waits between attempts to open it.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// What attaching needs.
pub struct Attach {
    pub fleet: Arc<Fleet>,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub backend: Backend,
    pub password: Option<String>,
    pub replica_id: String,
    pub flush_interval: Duration,
    /// Wakes this replica's source fetch (when another replica took a new revision).
    pub refresh: Arc<tokio::sync::Notify>,
}

/// Opens the store and restores from it before the server serves, or, when the database is
/// unreachable, starts degraded and keeps trying in the background. A store that answers but
/// cannot be used (a newer schema, a foreign file, a wrong password) is refused.
pub async fn attach(
    a: Attach,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), StoreError> {
    if a.backend == Backend::Memory {
        return Ok(());
    }
    // Changes are marked from the start, so that a store opened late gets all of them.
    a.fleet.persist_from_start(a.backend.name(), &a.replica_id);
    let store = match FleetStore::open(&a.backend, a.password.clone()).await {
        Ok(store) => store.expect("not the memory backend"),
        Err(StoreError::Io(error)) => {
            a.metrics.store_errors.inc();
            a.fleet.store_unavailable(&error);
            a.audit.restore(Vec::new());
            tracing::error!(backend = a.backend.name(), %error, "fleet store unavailable at start: agents are served from git and memory; opening it is retried every {REOPEN_EVERY:?}");
            tasks.spawn(async move {
                let Some(store) = reopen(&a, &shutdown).await else {
                    return;
                };
                let event_ids_from = match store.load(&a.replica_id).await {
                    Ok(loaded) => {
                        let from = loaded.events.last().map_or(0, |e| e.id + 1);
                        // The events recorded since the start stay; the stored ones are not
                        // put behind them, and new ones are numbered past them.
                        restore(&a, &store, loaded);
                        from
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet store opened but not read: what it held before is not restored");
                        0
                    }
                };
                run(a, Arc::new(store), event_ids_from, shutdown).await;
            });
            return Ok(());
        }
        Err(refused) => return Err(refused),
    };
    let mut loaded = store.load(&a.replica_id).await?;
    a.audit.restore(std::mem::take(&mut loaded.events));
    restore(&a, &store, loaded);
    tasks.spawn(run(a, Arc::new(store), 0, shutdown));
    Ok(())
}

/// Tries to open the store until it opens or the server stops.
async fn reopen(a: &Attach, shutdown: &CancellationToken) -> Option<FleetStore> {
    let mut every = tokio::time::interval(REOPEN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return None,
        }
        match FleetStore::open(&a.backend, a.password.clone()).await {
            Ok(store) => return store,
            Err(e) => {
                a.metrics.store_errors.inc();
                a.fleet.store_unavailable(&e.to_string());
                tracing::debug!(error = %e, "fleet store still unavailable");
            }
        }
    }
}

fn restore(a: &Attach, store: &FleetStore, loaded: Loaded) {
    let restored = a
        .fleet
        .restore(store.backend(), &a.replica_id, loaded.agents);
    a.fleet.rollouts.adopt(loaded.rollouts);
    tracing::info!(
        backend = store.backend(),
        agents = restored,
        "fleet store loaded"
    );
}

/// The flusher, the heartbeat and the relay, until shutdown (the flusher writes once more).
async fn run(a: Attach, store: Arc<FleetStore>, event_ids_from: u64, shutdown: CancellationToken) {
    let replica = ReplicaBeat {
        replica_id: a.replica_id.clone(),
        started_at: SystemTime::now(),
        admin_url: None,
    };
    let flusher = Flusher {
        fleet: a.fleet.clone(),
        store: store.clone(),
        audit: a.audit.clone(),
        metrics: a.metrics.clone(),
        interval: a.flush_interval,
        replica: replica.clone(),
        event_ids_from,
        remote_pace: Default::default(),
    };
    tokio::join!(
        relay(
            a.fleet.clone(),
            store.clone(),
            a.refresh.clone(),
            shutdown.clone(),
        ),
        Flusher::beat(store, replica, shutdown.clone()),
        flusher.run(shutdown),
    );
}
