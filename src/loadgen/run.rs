//! One process's run: starts an agent task per simulated agent, follows their events,
//! announces progress once a second, triggers the refresh once the fleet has settled (or, as a
//! child process, takes its baseline when the parent says `refresh` on stdin), and after the
//! duration (or SIGINT/SIGTERM) builds the report and stops every agent.

use super::agent::AgentModel;
use super::context::Shared;
use super::http;
use super::options::{Options, Refresh, Transport};
use super::report::{Latency, Output, ProgressCounts, RefreshOutcome, Report};
use super::view::{Notice, View};
use super::ws;
use hyper::header::{HeaderName, AUTHORIZATION};
use serde_json::json;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep, sleep_until, Instant, MissedTickBehavior};
use tokio_util::task::TaskTracker;

/// Events in flight from the agent tasks to the controller.
const EVENT_QUEUE: usize = 1 << 16;
/// How long the agents get to say goodbye at the end.
const STOP_GRACE: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);

fn spawn_agents(shared: &Arc<Shared>, tasks: &TaskTracker) {
    let o = &shared.options;
    for local in 0..o.agents {
        let global = o.first_agent + local;
        let model = AgentModel::new(global, &o.attributes.for_agent(global));
        let endpoint = o.endpoints[(global % o.endpoints.len() as u64) as usize].clone();
        let source = o.source.host(local);
        let index = local as u32;
        match o.transport {
            Transport::Ws => tasks.spawn(ws::run(
                ws::Slot {
                    index,
                    model,
                    source,
                    endpoint,
                    answered: false,
                },
                shared.clone(),
            )),
            Transport::Http => tasks.spawn(http::run(
                http::Slot {
                    index,
                    model,
                    source,
                    endpoint,
                },
                shared.clone(),
            )),
        };
    }
}

/// Posts the refresh (an empty body, the admin token as a Bearer token); the status code.
pub async fn trigger(refresh: Refresh) -> Result<u16, String> {
    let headers: Vec<(HeaderName, String)> = refresh
        .token
        .iter()
        .map(|t| (AUTHORIZATION, format!("Bearer {t}")))
        .collect();
    http::post(
        Ipv4Addr::LOCALHOST,
        &refresh.endpoint,
        &headers,
        bytes::Bytes::new(),
    )
    .await
    .map(|r| r.status)
}

/// Resolves on SIGINT or SIGTERM (installed when called).
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

/// The lines a parent process writes to this child's stdin, read on a thread of their own;
/// the channel closes when the parent closes the pipe (or dies).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next_line(lines: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match lines {
        Some(lines) => lines.recv().await,
        None => std::future::pending().await,
    }
}

fn announce(out: &Output, view: &View, notice: &Notice, child: bool) {
    match notice {
        Notice::Converged(c) if child => out.converged(c, Some(&view.converged_unix_ms())),
        Notice::AllConnected { after } => out.notice(notice, view.unix_ms(view.start() + *after)),
        _ => out.notice(notice, 0),
    }
}

pub fn refresh_url(refresh: &Refresh) -> String {
    format!("http://{}", refresh.endpoint)
}

/// Runs the agents of this process and prints the report.
pub async fn run(options: Options, out: Output) -> Report {
    let start = Instant::now();
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let shared = Arc::new(Shared::new(options.clone(), events_tx));
    let tasks = TaskTracker::new();
    spawn_agents(&shared, &tasks);
    tasks.close();

    let mut view = View::new(options.agents as usize, start.into_std());
    let mut timeline: Vec<[u64; 2]> = Vec::new();
    let mut refresh: Option<RefreshOutcome> = None;
    let mut posting: Option<tokio::task::JoinHandle<Result<u16, String>>> = None;
    let mut settled = false;
    let mut stdin = options.child.then(stdin_lines);
    let mut ticker = interval_at(start + TICK, TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = start + options.duration;
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut batch = Vec::with_capacity(1024);

    loop {
        tokio::select! {
            n = events.recv_many(&mut batch, 1024) => {
                if n == 0 {
                    break;
                }
                for event in batch.drain(..) {
                    for notice in view.apply(event) {
                        announce(&out, &view, &notice, options.child);
                    }
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now().into_std();
                for notice in view.tick(now) {
                    announce(&out, &view, &notice, options.child);
                }
                let t = now - view.start();
                timeline.push([t.as_secs(), view.connected()]);
                let counts = ProgressCounts {
                    configs_received: view.configs_received,
                    applied: view.applied(),
                    converged: view.convergence().map_or(0, |c| c.converged),
                };
                out.progress(t, view.connected(), view.total(), counts);
                if !settled && view.settled(now) {
                    settled = true;
                    view.mark_settled(now);
                    out.event(json!({"event": "settled", "t_ms": t.as_millis() as u64}), || {
                        format!("settled: every agent connected, nothing changed for {:?}", super::view::SETTLE)
                    });
                    if let (Some(r), false) = (&options.refresh, options.child) {
                        let at = Instant::now();
                        view.start_convergence(at.into_std());
                        refresh = Some(RefreshOutcome {
                            url: refresh_url(r),
                            at_ms: (at - start).as_millis() as u64,
                            status: None,
                            error: None,
                        });
                        posting = Some(tokio::spawn(trigger(r.clone())));
                    }
                }
            }
            result = async { posting.as_mut().expect("guarded by the condition").await }, if posting.is_some() => {
                posting = None;
                if let Some(outcome) = refresh.as_mut() {
                    outcome.settle(result);
                    out.refreshed(outcome);
                }
            }
            line = next_line(&mut stdin), if stdin.is_some() => match line {
                Some(line) if line.trim() == "refresh" => {
                    view.start_convergence(std::time::Instant::now());
                    out.event(json!({"event": "baseline"}), || "baseline taken".into());
                }
                Some(_) => {}
                // The parent is gone: so is the reason to run.
                None => break,
            },
            _ = sleep_until(deadline) => break,
            _ = &mut stop => break,
        }
    }

    // The report describes the fleet as it ran, before the agents say goodbye.
    if let Some(outage) = view.close_outage() {
        out.reconnected(&outage);
    }
    let report = Report {
        transport: options.transport.as_str().into(),
        agents: options.agents,
        processes: 1,
        endpoints: options
            .endpoints
            .iter()
            .map(|e| format!("{}://{e}", options.transport.as_str()))
            .collect(),
        duration_ms: start.elapsed().as_millis() as u64,
        all_connected_ms: view.all_connected_after().map(|d| d.as_millis() as u64),
        connected: view.connected(),
        connected_over_time: timeline,
        configs_received: view.configs_received,
        applied_reports: view.applied_reports,
        full_state_requests: view.full_state_requests,
        disconnects: view.disconnects,
        counters: shared.counters.values(),
        refresh,
        convergence: view.convergence(),
        reconnects: view.outages.clone(),
        http_latency: Latency::from_histogram(&view.latency),
        http_latency_settled: Latency::from_histogram(&view.latency_settled),
        applied_hashes: view.applied_hashes().into_iter().collect(),
        converged_unix_ms: options.child.then(|| view.converged_unix_ms()),
    };

    // Said before the goodbyes, so that whoever stops this process has the report at once.
    out.report(&report);
    shared.stop.cancel();
    let finished = tasks.wait();
    tokio::pin!(finished);
    let grace = sleep(STOP_GRACE);
    tokio::pin!(grace);
    loop {
        // Keep draining, so that no agent blocks on a full queue while it says goodbye.
        tokio::select! {
            _ = &mut finished => break,
            _ = &mut grace => break,
            n = events.recv_many(&mut batch, 1024) => {
                if n == 0 {
                    break;
                }
                batch.clear();
            }
        }
    }
    report
}
