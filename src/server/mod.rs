//! `serve`: wires the config source, the fleet and the two listeners together, and shuts them
//! down cleanly.

use crate::admin::{self, AdminState};
use crate::audit::AuditLog;
use crate::auth::TokenFile;
use crate::fleet::attach::{attach, Attach};
use crate::fleet::{Fleet, FleetConfig};
use crate::metrics::Metrics;
use crate::net::listener::{self, Limits};
use crate::net::tls::{ReloadingAcceptor, TlsFiles};
use crate::opamp::codec::DEFAULT_MAX_MESSAGE_BYTES;
use crate::options::{parse_duration, DEFAULT_REPO_DIR};
use crate::repo::CompileOptions;
use crate::source::dir::DirSource;
use crate::source::git::{is_git_url, GitOptions, GitSource};
use crate::source::runner::{self, Source};
use crate::source::RevisionStore;
use crate::store::StoreOptions;
use crate::transport::budget::{InflightBudget, DEFAULT_MAX_INFLIGHT_BYTES};
use crate::transport::{opamp_router, OpampState};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Admin connections kept beyond the connection limit for `/healthz`, `/readyz` and `/metrics`,
/// so that a flood of clients cannot make the orchestrator think the server is down.
pub const ADMIN_PROBE_RESERVE: usize = 32;

/// Everything `serve` can be told: each field is a flag (and an `OPAMP_GITOPS_<FLAG>` variable),
/// with its default in its attribute.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// The config repository: a directory (watched) or a git URL (https://, http://, git://,
    /// ssh://, git@host:path, file://).
    #[arg(long, env = "OPAMP_GITOPS_REPO", default_value = DEFAULT_REPO_DIR, help_heading = "Source")]
    pub repo: String,
    /// Git: the branch to track (default: the remote's default branch).
    #[arg(long, env = "OPAMP_GITOPS_BRANCH", help_heading = "Source")]
    pub branch: Option<String>,
    /// Git: the sub-directory holding the config repository.
    #[arg(long, env = "OPAMP_GITOPS_PATH", help_heading = "Source")]
    pub path: Option<String>,
    /// Git: how often to fetch (with ±10% jitter); webhooks and refreshes fetch at once. A
    /// directory is watched, and read again this often too.
    #[arg(long, env = "OPAMP_GITOPS_POLL_INTERVAL", default_value = "30s", value_parser = parse_duration, help_heading = "Source")]
    pub poll_interval: Duration,
    /// Git mirror and last good revision ($XDG_CACHE_HOME/opamp-gitops when unset).
    #[arg(long, env = "OPAMP_GITOPS_CACHE_DIR", default_value_os_t = default_cache_dir(), help_heading = "Source")]
    pub cache_dir: PathBuf,
    /// Git: a file holding an HTTPS token.
    #[arg(long, env = "OPAMP_GITOPS_GIT_TOKEN_FILE", help_heading = "Source")]
    pub git_token_file: Option<PathBuf>,
    /// Git: an SSH private key file.
    #[arg(long, env = "OPAMP_GITOPS_GIT_SSH_KEY_FILE", help_heading = "Source")]
    pub git_ssh_key_file: Option<PathBuf>,
    /// Git: the known_hosts file SSH host keys are checked against (default ~/.ssh/known_hosts).
    #[arg(long, env = "OPAMP_GITOPS_GIT_KNOWN_HOSTS", help_heading = "Source")]
    pub git_known_hosts: Option<PathBuf>,
    /// Git: a fetch that takes longer is aborted.
    #[arg(long, env = "OPAMP_GITOPS_FETCH_TIMEOUT", default_value = "60s", value_parser = parse_duration, help_heading = "Source")]
    pub fetch_timeout: Duration,
    /// The secret (GitHub, Gitea) or token (GitLab) webhooks are checked against; without it
    /// /webhook/git answers 403.
    #[arg(
        long,
        env = "OPAMP_GITOPS_WEBHOOK_SECRET_FILE",
        help_heading = "Source"
    )]
    pub webhook_secret_file: Option<PathBuf>,
    /// Also run this Collector's `validate` on renders: sample renders decide whether a
    /// revision is accepted, a live agent's render it refuses is that agent's render_error.
    #[arg(
        long,
        env = "OPAMP_GITOPS_OTELCOL",
        value_name = "PATH",
        help_heading = "Source"
    )]
    pub otelcol: Option<PathBuf>,
    /// OpAMP listener (path /v1/opamp, WebSocket and plain HTTP).
    #[arg(
        long,
        env = "OPAMP_GITOPS_LISTEN",
        default_value = "0.0.0.0:4320",
        help_heading = "Listeners"
    )]
    pub listen: SocketAddr,
    /// Admin listener: probes, API, dashboard, metrics, webhook.
    #[arg(
        long,
        env = "OPAMP_GITOPS_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080",
        help_heading = "Listeners"
    )]
    pub admin_listen: SocketAddr,
    /// TLS certificate chain (PEM) for both listeners; reloaded when it changes on disk.
    #[arg(
        long,
        env = "OPAMP_GITOPS_TLS_CERT",
        requires = "tls_key",
        help_heading = "Listeners"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        env = "OPAMP_GITOPS_TLS_KEY",
        requires = "tls_cert",
        help_heading = "Listeners"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that agents' client certificates must chain to: mTLS on the OpAMP listener.
    #[arg(
        long,
        env = "OPAMP_GITOPS_CLIENT_CA",
        requires = "tls_cert",
        help_heading = "Listeners"
    )]
    pub client_ca: Option<PathBuf>,
    /// Agent tokens, one a line (optionally name:token); agents send `Authorization: Bearer`
    /// or `X-API-Key`. Without it the server runs in open mode.
    #[arg(long, env = "OPAMP_GITOPS_AGENT_TOKEN_FILE", help_heading = "Security")]
    pub agent_token_file: Option<PathBuf>,
    /// Admin tokens, one a line (optionally name:token); without it mutating endpoints are
    /// disabled.
    #[arg(long, env = "OPAMP_GITOPS_ADMIN_TOKEN_FILE", help_heading = "Security")]
    pub admin_token_file: Option<PathBuf>,
    /// Read-only admin endpoints (API, metrics, dashboard data) need an admin token too.
    #[arg(long, env = "OPAMP_GITOPS_ADMIN_READ_AUTH", help_heading = "Security")]
    pub admin_read_auth: bool,
    /// Show secret-looking config values in the API and dashboard instead of `<redacted>`.
    #[arg(long, env = "OPAMP_GITOPS_SHOW_SECRETS", help_heading = "Security")]
    pub show_secrets: bool,
    #[command(flatten)]
    pub fleet: FleetConfig,
    #[command(flatten)]
    pub fleet_store: StoreOptions,
    /// Largest inbound message, measured after decompression.
    #[arg(long, env = "OPAMP_GITOPS_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES, help_heading = "Limits")]
    pub max_message_bytes: usize,
    /// Bytes of OpAMP messages the server receives and handles at once, over every connection;
    /// a message beyond it is refused (HTTP 503, WebSocket UNAVAILABLE) with a retry interval.
    #[arg(long, env = "OPAMP_GITOPS_MAX_INFLIGHT_BYTES", default_value_t = DEFAULT_MAX_INFLIGHT_BYTES, help_heading = "Limits")]
    pub max_inflight_bytes: usize,
    #[command(flatten)]
    pub limits: Limits,
    /// Deadline for reading a request body: OpAMP over plain HTTP, and every admin request.
    #[arg(long, env = "OPAMP_GITOPS_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration, help_heading = "Limits")]
    pub body_timeout: Duration,
    /// A WebSocket with no message (pongs included) for this long is closed; the server pings
    /// quiet sessions every heartbeat interval.
    #[arg(long, env = "OPAMP_GITOPS_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration, help_heading = "Limits")]
    pub idle_timeout: Duration,
}

/// `$XDG_CACHE_HOME/opamp-gitops`, or `~/.cache/opamp-gitops`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("opamp-gitops")
}

impl ServeOptions {
    /// The defaults, on loopback listeners with ports the OS picks: what tests use.
    pub fn local(repo: impl AsRef<std::path::Path>) -> ServeOptions {
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        let mut options = ServeOptions {
            repo: repo.as_ref().display().to_string(),
            listen: loopback,
            admin_listen: loopback,
            ..crate::options::defaults()
        };
        // Tests share the default cache directory: no store unless a test asks for one.
        options.fleet_store.store = Some("memory".into());
        options
    }

    /// TLS on both listeners (client authentication only on the OpAMP one), when configured.
    pub fn tls(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.client_ca.clone(),
        })
    }
}

/// A running server.
pub struct Server {
    pub opamp_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<AuditLog>,
    pub store: Arc<RevisionStore>,
    source: Arc<Source>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    tasks: JoinSet<()>,
}

pub async fn start(options: ServeOptions) -> anyhow::Result<Server> {
    if options.max_inflight_bytes < options.max_message_bytes {
        anyhow::bail!(
            "--max-inflight-bytes ({}) must be at least --max-message-bytes ({}): a message of the largest size could never be received",
            options.max_inflight_bytes,
            options.max_message_bytes
        );
    }
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(AuditLog::default());
    let (store, revisions) = RevisionStore::new(
        CompileOptions {
            update_goldens: false,
            otelcol: options.otelcol.clone(),
            resolve_telemetry: true,
            ..CompileOptions::default()
        },
        metrics.clone(),
        audit.clone(),
    );
    let source = Arc::new(source_for(&options)?);
    let admin_tokens = match &options.admin_token_file {
        Some(path) => Some(Arc::new(TokenFile::open(path).map_err(anyhow::Error::msg)?)),
        None => {
            tracing::warn!("no --admin-token-file: mutating admin endpoints (refresh, push, restart) are disabled");
            None
        }
    };
    let agent_tokens = match &options.agent_token_file {
        Some(path) => Some(Arc::new(TokenFile::open(path).map_err(anyhow::Error::msg)?)),
        None => {
            tracing::warn!("OPEN MODE: no --agent-token-file, so any client that reaches the OpAMP port is accepted as an agent");
            None
        }
    };
    let store_backend = options
        .fleet_store
        .backend(&options.cache_dir)
        .map_err(anyhow::Error::msg)?;
    let store_password = options.fleet_store.password().map_err(anyhow::Error::msg)?;
    let healthy = runner::initial_sync(&source, &store).await;
    let fleet = Arc::new(Fleet::new(
        options.fleet.clone(),
        revisions,
        metrics.clone(),
        audit.clone(),
    ));
    let shutdown = CancellationToken::new();
    let sessions = TaskTracker::new();
    let mut tasks = JoinSet::new();
    let refresh = Arc::new(tokio::sync::Notify::new());
    attach(
        Attach {
            fleet: fleet.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            backend: store_backend,
            password: store_password,
            replica_id: options.fleet_store.replica_id(),
            flush_interval: options.fleet_store.store_flush_interval,
            refresh: refresh.clone(),
        },
        shutdown.clone(),
        &mut tasks,
    )
    .await
    .map_err(anyhow::Error::msg)?;

    let opamp_listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let admin_listener = TcpListener::bind(options.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.admin_listen))?;
    let opamp_addr = opamp_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let opamp_app = opamp_router(OpampState {
        fleet: fleet.clone(),
        metrics: metrics.clone(),
        max_message_bytes: options.max_message_bytes,
        budget: InflightBudget::new(options.max_inflight_bytes, metrics.inflight_bytes.clone()),
        shutdown: shutdown.clone(),
        sessions: sessions.clone(),
        agent_tokens,
        body_timeout: options.body_timeout,
        idle_timeout: options.idle_timeout,
        ping_interval: options.fleet.heartbeat_interval,
    });
    let read_tokens = admin_tokens.clone();
    let admin_app = admin::router(AdminState {
        fleet: fleet.clone(),
        metrics: metrics.clone(),
        audit: audit.clone(),
        store: store.clone(),
        refresh: refresh.clone(),
        admin_tokens,
        webhook_secret_file: options.webhook_secret_file.clone(),
        tracked_branch: options.branch.clone(),
        show_secrets: options.show_secrets,
        body_timeout: options.body_timeout,
    });

    let admin_app = if options.admin_read_auth {
        if read_tokens.is_none() {
            anyhow::bail!("--admin-read-auth needs --admin-token-file");
        }
        admin_app.layer(axum::middleware::from_fn_with_state(
            read_tokens,
            admin::read_auth::require_read_token,
        ))
    } else {
        admin_app
    };
    let (opamp_tls, admin_tls) = match &options.tls() {
        Some(files) => {
            let admin_files = TlsFiles {
                client_ca: None,
                ..files.clone()
            };
            let opamp = ReloadingAcceptor::new(files).map_err(anyhow::Error::msg)?;
            let admin = ReloadingAcceptor::new(&admin_files).map_err(anyhow::Error::msg)?;
            tasks.spawn(opamp.clone().watch(files.clone(), shutdown.clone()));
            tasks.spawn(admin.clone().watch(admin_files, shutdown.clone()));
            (Some(opamp), Some(admin))
        }
        None => (None, None),
    };
    let admin_limits = Limits {
        probe_reserve: ADMIN_PROBE_RESERVE,
        ..options.limits.clone()
    };
    for (listener, app, tls, limits) in [
        (opamp_listener, opamp_app, opamp_tls, options.limits.clone()),
        (admin_listener, admin_app, admin_tls, admin_limits),
    ] {
        tasks.spawn(listener::serve(
            listener,
            app,
            tls,
            limits,
            shutdown.clone(),
            sessions.clone(),
        ));
    }
    tasks.spawn(runner::run(
        source.clone(),
        store.clone(),
        refresh,
        options.poll_interval,
        healthy,
        shutdown.clone(),
    ));
    tasks.spawn(crate::fleet::rollout::drive(
        fleet.clone(),
        shutdown.clone(),
    ));
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
        metrics,
        audit,
        store,
        source,
        shutdown,
        sessions,
        tasks,
    })
}

fn source_for(options: &ServeOptions) -> anyhow::Result<Source> {
    if is_git_url(&options.repo) {
        return Ok(Source::Git(GitSource::new(GitOptions {
            url: options.repo.clone(),
            branch: options.branch.clone(),
            path: options.path.clone(),
            cache_dir: options.cache_dir.clone(),
            token_file: options.git_token_file.clone(),
            ssh_key_file: options.git_ssh_key_file.clone(),
            known_hosts_file: options.git_known_hosts.clone(),
            fetch_timeout: options.fetch_timeout,
        })));
    }
    let dir = DirSource::new(&options.repo);
    if !dir.path().is_dir() {
        anyhow::bail!(
            "config repository `{}` is neither a directory nor a git URL",
            options.repo
        );
    }
    Ok(Source::Dir(dir))
}

impl Server {
    /// Syncs the source now and waits for the result (the webhook and refresh endpoints only
    /// trigger a sync).
    pub async fn reload(&self) -> bool {
        runner::sync(&self.source, &self.store).await
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
