//! `opamp-gitops loadgen`: simulates a fleet of OpAMP-supervised Collectors against servers on
//! loopback and reports how they fared. Exit 0 after a run, 1 when the run could not be made,
//! 2 on usage errors.

use super::exit;
use crate::loadgen::options::{
    first_token, AttributeSpread, Endpoint, Options, Refresh, Subnet, Transport,
};
use crate::loadgen::report::Output;
use crate::loadgen::{children, net, run};
use crate::opamp::OPAMP_PATH;
use crate::options::parse_duration;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Open files kept free of agents in each process: stdio, the runtime, HTTP requests of the
/// refresh, and some slack.
const OPEN_FILES_MARGIN: u64 = 500;
const MAX_AGENTS: u64 = 1_000_000;
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// An OpAMP endpoint on loopback, ws:// or http:// (the path defaults to /v1/opamp); give
    /// several to spread the agents over them, as a Kubernetes Service would.
    #[arg(long = "endpoint", required = true, value_name = "URL")]
    pub endpoints: Vec<String>,
    /// How many agents to simulate.
    #[arg(long)]
    pub agents: u64,
    /// WebSocket sessions, or plain-HTTP pollers (a new connection per poll).
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Identifying attribute spread over these values, e.g. environment=production,staging;
    /// repeat for more (agents take every combination in turn).
    #[arg(long = "attr", value_name = "KEY=V1,V2")]
    pub attrs: Vec<String>,
    /// How long to run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Plain HTTP: how often each agent polls.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// WebSocket: heartbeat interval (a heartbeat goes when nothing else was sent for this long).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Loopback addresses the agents connect from, spread over (each address has its own
    /// ephemeral ports).
    #[arg(long, default_value = "127.1.0.0/16")]
    pub source_subnet: String,
    /// Once every agent is connected and the fleet is quiet, POST here to change the revision
    /// (the server's /api/refresh, or the floor's and the peer's /push) and time how long the
    /// agents take to report APPLIED for the new config.
    #[arg(long, value_name = "URL")]
    pub refresh: Option<String>,
    /// Admin token for --refresh, sent as `Authorization: Bearer`.
    #[arg(long, requires = "refresh")]
    pub admin_token_file: Option<PathBuf>,
    /// At most this many WebSocket agents in one process (default: its open-files limit less
    /// a margin); more run as child processes, each from its own block of --source-subnet.
    #[arg(long, value_name = "N")]
    pub agents_per_process: Option<u64>,
    /// JSON lines on stdout (events, then the report) instead of human text.
    #[arg(long)]
    pub json: bool,
    /// The global index of this process's first agent (set for child processes).
    #[arg(long, hide = true, default_value_t = 0)]
    pub first_agent: u64,
    /// Run as a child process of a multi-process run.
    #[arg(long, hide = true)]
    pub child: bool,
}

fn options(args: &LoadgenArgs) -> Result<Options, String> {
    if args.agents == 0 || args.agents > MAX_AGENTS {
        return Err(format!("--agents must be 1 to {MAX_AGENTS}"));
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        return Err("--duration must be more than 0 and at most 24h".into());
    }
    if args.poll_interval < MIN_INTERVAL || args.heartbeat < MIN_INTERVAL {
        return Err("--poll-interval and --heartbeat must be at least 100ms".into());
    }
    let endpoints = args
        .endpoints
        .iter()
        .map(|e| Endpoint::parse(e, OPAMP_PATH))
        .collect::<Result<Vec<_>, _>>()?;
    let refresh = match &args.refresh {
        Some(url) => {
            let token = match &args.admin_token_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    Some(
                        first_token(&text)
                            .ok_or_else(|| format!("{} holds no token", path.display()))?,
                    )
                }
                None => None,
            };
            Some(Refresh {
                endpoint: Endpoint::parse(url, "/api/refresh")?,
                token,
            })
        }
        None => None,
    };
    Ok(Options {
        endpoints,
        agents: args.agents,
        transport: args.transport,
        attributes: AttributeSpread::parse(&args.attrs)?,
        duration: args.duration,
        poll_interval: args.poll_interval,
        heartbeat: args.heartbeat,
        source: args.source_subnet.parse::<Subnet>()?,
        refresh,
        json: args.json,
        first_agent: args.first_agent,
        child: args.child,
    })
}

pub fn run(args: &LoadgenArgs) -> i32 {
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let open_files = match net::raise_open_files_limit() {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("error: cannot read the open-files limit: {e}");
            return exit::FAILED;
        }
    };
    // WebSocket agents hold a socket each; HTTP pollers only while a request is in flight.
    let most = open_files.saturating_sub(OPEN_FILES_MARGIN).max(1);
    let per_process = args.agents_per_process.unwrap_or(most).clamp(1, most);
    let processes = match options.transport {
        Transport::Ws => options.agents.div_ceil(per_process),
        Transport::Http => 1,
    };
    if processes > 1 && options.child {
        eprintln!(
            "error: a child process got {} agents but may hold only {per_process}",
            options.agents
        );
        return exit::FAILED;
    }
    if processes > 1 {
        if let Err(e) = options.source.split(processes as usize) {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    }
    let out = Output { json: options.json };
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if !options.child {
        out.event(
            json!({
                "event": "start",
                "agents": options.agents,
                "transport": options.transport.as_str(),
                "endpoints": options.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                "source_subnet": options.source.to_string(),
                "open_files_limit": open_files,
                "processes": processes,
            }),
            || {
                format!(
                    "loadgen: {} {} agents over {} endpoint(s) from {}, {processes} process(es) (open-files limit {open_files}, {per_process} agents per process at most)",
                    options.agents,
                    options.transport.as_str(),
                    options.endpoints.len(),
                    options.source
                )
            },
        );
    }
    let result = runtime.block_on(async {
        if processes > 1 {
            children::run(options, processes, out).await
        } else {
            Ok(run::run(options, out).await)
        }
    });
    match result {
        Ok(_) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    fn parse(args: &[&str]) -> Result<Options, String> {
        let cli = Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        options(&cli.args)
    }

    #[test]
    fn flags_become_options() {
        let o = parse(&[
            "--endpoint",
            "ws://127.0.0.1:4320",
            "--endpoint",
            "ws://127.0.0.2:4320/v1/opamp",
            "--agents",
            "10",
            "--attr",
            "environment=production,staging",
            "--duration",
            "5s",
            "--heartbeat",
            "1s",
            "--refresh",
            "http://127.0.0.1:8080",
        ])
        .unwrap();
        assert_eq!(o.endpoints.len(), 2);
        assert_eq!(o.transport, Transport::Ws);
        assert_eq!(o.duration, Duration::from_secs(5));
        assert_eq!(o.poll_interval, Duration::from_secs(30));
        assert_eq!(o.source.to_string(), "127.1.0.0/16");
        let refresh = o.refresh.unwrap();
        assert_eq!(refresh.endpoint.path, "/api/refresh");
        assert_eq!(refresh.token, None);
    }

    #[test]
    fn a_non_loopback_endpoint_is_refused_with_a_clear_error() {
        let e = parse(&["--endpoint", "ws://192.168.1.10:4320", "--agents", "1"]).unwrap_err();
        assert!(e.contains("only targets loopback"), "{e}");
        let e = parse(&[
            "--endpoint",
            "ws://127.0.0.1:4320",
            "--agents",
            "1",
            "--source-subnet",
            "10.1.0.0/16",
        ])
        .unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(parse(&["--endpoint", "ws://127.0.0.1:1", "--agents", "0"]).is_err());
    }

    #[test]
    fn child_processes_get_the_same_run_with_their_share() {
        let o = parse(&[
            "--endpoint",
            "ws://127.0.0.1:4320",
            "--agents",
            "40000",
            "--attr",
            "region=a,b",
        ])
        .unwrap();
        let block = o.source.split(2).unwrap()[1];
        let args = o.child_args(20_000, 20_000, block);
        let mut argv = vec!["loadgen".to_owned()];
        argv.extend(args.into_iter().skip(1));
        let child = Cli::try_parse_from(argv).unwrap();
        let c = options(&child.args).unwrap();
        assert!(c.child && c.json);
        assert_eq!((c.agents, c.first_agent), (20_000, 20_000));
        assert_eq!(c.source.to_string(), "127.1.128.0/17");
        assert_eq!(c.endpoints, o.endpoints);
        assert_eq!(c.attributes, o.attributes);
        assert_eq!(c.duration, o.duration);
        assert!(c.refresh.is_none(), "the parent triggers the refresh");
    }
}
