//! `opamp-gitops serve`: runs the server until SIGTERM or SIGINT.

use crate::server::{self, ServeOptions};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Every flag also reads `OPAMP_GITOPS_<FLAG>` from the environment.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Log levels: OPAMP_GITOPS_LOG (a tracing filter such as `info` or `opamp_gitops=debug,info`; default `info`)."
)]
pub struct ServeArgs {
    #[command(flatten)]
    pub options: ServeOptions,
    /// Log format.
    #[arg(
        long,
        env = "OPAMP_GITOPS_LOG_FORMAT",
        value_enum,
        default_value = "human",
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: &ServeArgs) -> i32 {
    init_logging(args.log_format);
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let stop = shutdown_signal();
        let options = args.options.clone();
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
        let tls = args.options.tls().is_some();
        let (web, ws) = if tls { ("https", "wss") } else { ("http", "ws") };
        let (opamp, admin) = (
            shown_address(server.opamp_addr),
            shown_address(server.admin_addr),
        );
        tracing::info!(
            "dashboard {web}://{admin}/ ; agents connect to {ws}://{opamp}/v1/opamp (WebSocket) or {web}://{opamp}/v1/opamp (plain HTTP)"
        );
        stop.await;
        tracing::info!("shutting down");
        server.shutdown(SHUTDOWN_GRACE).await;
        0
    })
}

/// An address as a URL shows it: a wildcard bind is reached at `localhost` on this machine.
fn shown_address(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
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
