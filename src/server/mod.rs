//! `serve`: wires the config source, the fleet and the two listeners together, and shuts them
//! down cleanly.

use crate::admin::{self, AdminState};
use crate::fleet::{Fleet, FleetConfig};
use crate::opamp::codec::DEFAULT_MAX_MESSAGE_BYTES;
use crate::opamp::http::{endpoint, OpampState};
use crate::opamp::OPAMP_PATH;
use crate::repo::CompileOptions;
use crate::source::dir::DirSource;
use crate::source::{Offered, RevisionStore};
use anyhow::Context;
use axum::routing::any;
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub repo: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub fleet: FleetConfig,
    pub max_message_bytes: usize,
}

impl ServeOptions {
    /// Loopback listeners on ports the OS picks: what tests use.
    pub fn local(repo: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            repo: repo.into(),
            listen: "127.0.0.1:0".parse().expect("valid address"),
            admin_listen: "127.0.0.1:0".parse().expect("valid address"),
            fleet: FleetConfig::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// A running server.
pub struct Server {
    pub opamp_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub fleet: Arc<Fleet>,
    pub store: Arc<RevisionStore>,
    source: Arc<DirSource>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    tasks: JoinSet<()>,
}

pub async fn start(options: ServeOptions) -> anyhow::Result<Server> {
    let (store, revisions) = RevisionStore::new(CompileOptions::default());
    let source = Arc::new(DirSource::new(options.repo.clone()));
    if !source.path().is_dir() {
        anyhow::bail!(
            "config repository `{}` is not a directory",
            source.path().display()
        );
    }
    sync(&source, &store).await;
    let fleet = Arc::new(Fleet::new(options.fleet.clone(), revisions));
    let shutdown = CancellationToken::new();
    let sessions = TaskTracker::new();

    let opamp_listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let admin_listener = TcpListener::bind(options.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.admin_listen))?;
    let opamp_addr = opamp_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let opamp_app = Router::new()
        .route(OPAMP_PATH, any(endpoint))
        .with_state(OpampState {
            fleet: fleet.clone(),
            max_message_bytes: options.max_message_bytes,
            shutdown: shutdown.clone(),
            sessions: sessions.clone(),
        });
    let admin_app = admin::router(AdminState {
        fleet: fleet.clone(),
        store: store.clone(),
    });

    let mut tasks = JoinSet::new();
    for (listener, app) in [(opamp_listener, opamp_app), (admin_listener, admin_app)] {
        let token = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "listener failed");
            }
        });
    }
    let sweeper_fleet = fleet.clone();
    let token = shutdown.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let forgotten = sweeper_fleet.forget_expired();
                    if forgotten > 0 {
                        tracing::info!(forgotten, "forgot agents past their TTL");
                    }
                }
                _ = token.cancelled() => break,
            }
        }
    });
    Ok(Server {
        opamp_addr,
        admin_addr,
        fleet,
        store,
        source,
        shutdown,
        sessions,
        tasks,
    })
}

async fn sync(source: &Arc<DirSource>, store: &Arc<RevisionStore>) -> Offered {
    let (source, store) = (source.clone(), store.clone());
    tokio::task::spawn_blocking(move || source.sync(&store))
        .await
        .unwrap_or(Offered::Unchanged)
}

impl Server {
    /// Reads the source again and applies what changed.
    pub async fn reload(&self) -> Offered {
        sync(&self.source, &self.store).await
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes every session, and waits at most `grace` for them.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.cancel();
        self.sessions.close();
        let sessions = self.sessions.clone();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
            sessions.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("sessions did not close within {grace:?}: stopping anyway");
            self.tasks.abort_all();
        }
    }
}
