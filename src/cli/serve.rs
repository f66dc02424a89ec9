//! `opamp-gitops serve`: runs the server until SIGTERM or SIGINT.

use crate::fleet::limits::InputLimits;
use crate::fleet::FleetConfig;
use crate::net::listener::Limits;
use crate::net::tls::TlsFiles;
use crate::opamp::codec::DEFAULT_MAX_MESSAGE_BYTES;
use crate::server::{self, ServeOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Every flag also reads `OPAMP_GITOPS_<FLAG>` from the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The config repository: a directory (watched) or a git URL (https://, http://, git://,
    /// ssh://, git@host:path, file://).
    #[arg(long, env = "OPAMP_GITOPS_REPO", default_value = super::DEFAULT_REPO_DIR)]
    pub repo: String,
    /// Git: the branch to track (default: the remote's default branch).
    #[arg(long, env = "OPAMP_GITOPS_BRANCH")]
    pub branch: Option<String>,
    /// Git: the sub-directory holding the config repository.
    #[arg(long, env = "OPAMP_GITOPS_PATH")]
    pub path: Option<String>,
    /// Git: how often to fetch (with ±10% jitter); webhooks and refreshes fetch at once.
    #[arg(long, env = "OPAMP_GITOPS_POLL_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Git: a fetch that takes longer is aborted.
    #[arg(long, env = "OPAMP_GITOPS_FETCH_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub fetch_timeout: Duration,
    /// Git mirror and last good revision (default: $XDG_CACHE_HOME/opamp-gitops).
    #[arg(long, env = "OPAMP_GITOPS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Git: a file holding an HTTPS token.
    #[arg(long, env = "OPAMP_GITOPS_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// Git: an SSH private key file.
    #[arg(long, env = "OPAMP_GITOPS_GIT_SSH_KEY_FILE")]
    pub git_ssh_key_file: Option<PathBuf>,
    /// Git: the known_hosts file SSH host keys are checked against (default ~/.ssh/known_hosts).
    #[arg(long, env = "OPAMP_GITOPS_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
    /// The secret (GitHub, Gitea) or token (GitLab) webhooks are checked against; without it
    /// /webhook/git answers 403.
    #[arg(long, env = "OPAMP_GITOPS_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Admin tokens, one a line (optionally name:token); without it mutating endpoints are
    /// disabled.
    #[arg(long, env = "OPAMP_GITOPS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// OpAMP listener (path /v1/opamp, WebSocket and plain HTTP).
    #[arg(long, env = "OPAMP_GITOPS_LISTEN", default_value = "0.0.0.0:4320")]
    pub listen: SocketAddr,
    /// Admin listener: probes, API, dashboard, metrics.
    #[arg(
        long,
        env = "OPAMP_GITOPS_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
    /// The URL agents reach this server at; enables heartbeat-interval offers.
    #[arg(long, env = "OPAMP_GITOPS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Heartbeat interval offered to agents that report heartbeats; three silent intervals
    /// make an agent stale.
    #[arg(long, env = "OPAMP_GITOPS_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Disconnected agents are forgotten after this long.
    #[arg(long, env = "OPAMP_GITOPS_AGENT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub agent_ttl: Duration,
    /// The most agents the registry holds; new ones beyond it are asked to retry later.
    #[arg(long, env = "OPAMP_GITOPS_MAX_AGENTS", default_value_t = 100_000)]
    pub max_agents: usize,
    /// Largest inbound message, measured after decompression.
    #[arg(long, env = "OPAMP_GITOPS_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Also run this Collector's `validate` on renders: sample renders decide whether a
    /// revision is accepted, a live agent's render it refuses is that agent's render_error.
    #[arg(long, env = "OPAMP_GITOPS_OTELCOL", value_name = "PATH")]
    pub otelcol: Option<PathBuf>,
    /// Agent tokens, one a line (optionally name:token); agents send `Authorization: Bearer`
    /// or `X-API-Key`. Without it the server runs in open mode.
    #[arg(long, env = "OPAMP_GITOPS_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for both listeners; reloaded when it changes on disk.
    #[arg(long, env = "OPAMP_GITOPS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "OPAMP_GITOPS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that agents' client certificates must chain to: mTLS on the OpAMP listener.
    #[arg(long, env = "OPAMP_GITOPS_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Read-only admin endpoints (API, metrics, dashboard data) need an admin token too.
    #[arg(long, env = "OPAMP_GITOPS_ADMIN_READ_AUTH")]
    pub admin_read_auth: bool,
    /// Connections open at once, per listener; beyond it new ones get 503 with Retry-After.
    #[arg(long, env = "OPAMP_GITOPS_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// New connections per second from one source address; beyond it: 429 with Retry-After.
    #[arg(
        long,
        env = "OPAMP_GITOPS_CONNECTIONS_PER_SECOND",
        default_value_t = 1_000
    )]
    pub connections_per_second: u32,
    /// Deadline for the TLS handshake and the request headers (slowloris).
    #[arg(long, env = "OPAMP_GITOPS_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Deadline for reading a plain-HTTP request body.
    #[arg(long, env = "OPAMP_GITOPS_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// A WebSocket with no message (pongs included) for this long is closed; the server pings
    /// quiet sessions every heartbeat interval.
    #[arg(long, env = "OPAMP_GITOPS_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Attributes an agent may report (identifying and non-identifying together).
    #[arg(long, env = "OPAMP_GITOPS_MAX_ATTRIBUTES", default_value_t = 128)]
    pub max_attributes: usize,
    /// Longest attribute key or value, in bytes.
    #[arg(long, env = "OPAMP_GITOPS_MAX_ATTRIBUTE_BYTES", default_value_t = 1024)]
    pub max_attribute_bytes: usize,
    /// Largest effective config stored per agent; larger ones are not kept.
    #[arg(long, env = "OPAMP_GITOPS_MAX_EFFECTIVE_CONFIG_BYTES", default_value_t = 1 << 20)]
    pub max_effective_config_bytes: usize,
    /// Longest agent error message or status text kept; longer ones are truncated.
    #[arg(long, env = "OPAMP_GITOPS_MAX_TEXT_BYTES", default_value_t = 4096)]
    pub max_text_bytes: usize,
    /// Entries kept of each report an agent sends (component health, packages, components).
    #[arg(long, env = "OPAMP_GITOPS_MAX_REPORT_ENTRIES", default_value_t = 256)]
    pub max_report_entries: usize,
    /// Show secret-looking config values in the API and dashboard instead of `<redacted>`.
    #[arg(long, env = "OPAMP_GITOPS_SHOW_SECRETS")]
    pub show_secrets: bool,
    /// Log format.
    #[arg(
        long,
        env = "OPAMP_GITOPS_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 30s or 5m: {e}"))
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: &ServeArgs) -> i32 {
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let stop = shutdown_signal();
        let options = ServeOptions {
            repo: args.repo.clone(),
            branch: args.branch.clone(),
            path: args.path.clone(),
            poll_interval: args.poll_interval,
            cache_dir: args
                .cache_dir
                .clone()
                .unwrap_or_else(server::default_cache_dir),
            git_token_file: args.git_token_file.clone(),
            git_ssh_key_file: args.git_ssh_key_file.clone(),
            git_known_hosts: args.git_known_hosts.clone(),
            fetch_timeout: args.fetch_timeout,
            webhook_secret_file: args.webhook_secret_file.clone(),
            admin_token_file: args.admin_token_file.clone(),
            listen: args.listen,
            admin_listen: args.admin_listen,
            fleet: FleetConfig {
                heartbeat_interval: args.heartbeat_interval,
                advertise_url: args.advertise_url.clone(),
                agent_ttl: args.agent_ttl,
                max_agents: args.max_agents,
                limits: InputLimits {
                    max_attributes: args.max_attributes,
                    max_attribute_bytes: args.max_attribute_bytes,
                    max_effective_config_bytes: args.max_effective_config_bytes,
                    max_text_bytes: args.max_text_bytes,
                    max_entries: args.max_report_entries,
                },
            },
            max_message_bytes: args.max_message_bytes,
            show_secrets: args.show_secrets,
            otelcol: args.otelcol.clone(),
            agent_token_file: args.agent_token_file.clone(),
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.client_ca.clone(),
                }),
                _ => None,
            },
            limits: Limits {
                max_connections: args.max_connections,
                probe_reserve: 0,
                connections_per_second: args.connections_per_second,
                header_timeout: args.header_timeout,
            },
            admin_read_auth: args.admin_read_auth,
            body_timeout: args.body_timeout,
            idle_timeout: args.idle_timeout,
        };
        let server = match server::start(options).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e:#}");
                return 1;
            }
        };
        tracing::info!(
            "listening opamp={} admin={}",
            server.opamp_addr,
            server.admin_addr
        );
        stop.await;
        tracing::info!("shutting down");
        server.shutdown(SHUTDOWN_GRACE).await;
        0
    })
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when it
/// is awaited, so a signal that arrives while the server starts is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("OPAMP_GITOPS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
