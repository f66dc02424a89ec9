//! More WebSocket agents than one process may hold open files for: the run is split over
//! child processes of this binary, each with its share of the agents and its own block of the
//! source subnet. The children speak JSON lines (the `--json` output); this parent adds their
//! progress up, triggers the refresh once (after every child has taken its baseline, so no
//! agent's new config is mistaken for its old one), and merges their reports into one.

use super::options::Options;
use super::report::{Output, ProgressCounts, RefreshOutcome, Report};
use super::run::{refresh_url, stop_signal, trigger};
use super::view::{Convergence, Notice, Outage, MILESTONES, SETTLE};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};

/// How long after the duration the children get to report before they are killed.
const REPORT_GRACE: Duration = Duration::from_secs(30);
/// How long the children get to take their baseline before the refresh goes anyway.
const BASELINE_WAIT: Duration = Duration::from_secs(30);

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

struct Worker {
    process: Child,
    stdin: Option<ChildStdin>,
    progress: Value,
    all_connected_unix_ms: Option<u64>,
    settled: bool,
    baseline: bool,
    converged_unix_ms: Option<Vec<u64>>,
    outages: Vec<Outage>,
    report: Option<Report>,
}

/// Groups the children's outages that overlap (one server restart drops every child).
fn merge_outages(outages: &[(usize, Outage)]) -> Vec<(usize, Outage)> {
    let mut sorted: Vec<&(usize, Outage)> = outages.iter().collect();
    sorted.sort_by_key(|(_, o)| o.started_unix_ms);
    let mut groups: Vec<(Vec<usize>, Outage)> = Vec::new();
    for (child, o) in sorted {
        let joins = groups.last().is_some_and(|(_, g)| match g.ended_unix_ms {
            Some(end) => o.started_unix_ms <= end + SETTLE.as_millis() as u64,
            None => true,
        });
        if joins {
            let (children, g) = groups.last_mut().expect("checked");
            children.push(*child);
            g.dropped += o.dropped;
            g.configs_received += o.configs_received;
            g.full_state_requests += o.full_state_requests;
            g.ended_unix_ms = match (g.ended_unix_ms, o.ended_unix_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            g.after_ms = g.ended_unix_ms.map(|end| end - g.started_unix_ms);
        } else {
            groups.push((vec![*child], o.clone()));
        }
    }
    groups
        .into_iter()
        .map(|(mut children, g)| {
            children.sort_unstable();
            children.dedup();
            (children.len(), g)
        })
        .collect()
}

fn convergence(times_unix_ms: &[u64], t0_unix_ms: u64, agents: u64) -> Convergence {
    let mut times: Vec<u64> = times_unix_ms
        .iter()
        .map(|t| t.saturating_sub(t0_unix_ms))
        .collect();
    Convergence::from_times(&mut times, agents)
}

fn spawn(options: &Options, processes: u64) -> Result<Vec<Worker>, String> {
    let blocks = options.source.split(processes as usize)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut workers: Vec<Worker> = Vec::new();
    let mut first = options.first_agent;
    for (k, block) in blocks.into_iter().enumerate() {
        let agents =
            options.agents / processes + u64::from((k as u64) < options.agents % processes);
        let spawned = Command::new(&exe)
            .args(options.child_args(agents, first, block))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut process = match spawned {
            Ok(process) => process,
            Err(e) => {
                for mut w in workers {
                    let _ = w.process.kill();
                    let _ = w.process.wait();
                }
                return Err(format!("cannot start a child loadgen: {e}"));
            }
        };
        first += agents;
        workers.push(Worker {
            stdin: process.stdin.take(),
            process,
            progress: Value::Null,
            all_connected_unix_ms: None,
            settled: false,
            baseline: false,
            converged_unix_ms: None,
            outages: Vec::new(),
            report: None,
        });
    }
    Ok(workers)
}

/// Runs the agents over `processes` children and prints the merged report.
pub async fn run(options: Options, processes: u64, out: Output) -> Result<Report, String> {
    let start = Instant::now();
    let start_unix_ms = unix_ms_now();
    let mut workers = spawn(&options, processes)?;
    let (lines_tx, mut lines) = mpsc::channel::<(usize, Value)>(4096);
    for (k, w) in workers.iter_mut().enumerate() {
        let stdout = w.process.stdout.take().expect("piped");
        let tx = lines_tx.clone();
        // A thread per child pipe: a handful of children, each writing a few lines a second.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    if tx.blocking_send((k, value)).is_err() {
                        break;
                    }
                }
            }
        });
    }
    drop(lines_tx);

    let total = options.agents;
    let mut all_connected_ms: Option<u64> = None;
    let mut refresh: Option<RefreshOutcome> = None;
    let mut t0_unix_ms: Option<u64> = None;
    let mut settled = false;
    let mut asked_baseline: Option<Instant> = None;
    let mut posting: Option<tokio::task::JoinHandle<Result<u16, String>>> = None;
    let mut converged: Option<Convergence> = None;
    let mut outages_said = 0;
    let mut signalled = false;
    let mut ticker = interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut timeline: Vec<[u64; 2]> = Vec::new();
    let hard_stop = start + options.duration + REPORT_GRACE;
    let stop = stop_signal();
    tokio::pin!(stop);

    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some((k, value)) = line else { break };
                let w = &mut workers[k];
                match value["event"].as_str().unwrap_or_default() {
                    "progress" => w.progress = value,
                    "all_connected" => {
                        w.all_connected_unix_ms = value["at_unix_ms"].as_u64();
                        if all_connected_ms.is_none() {
                            let times: Option<Vec<u64>> = workers.iter().map(|w| w.all_connected_unix_ms).collect();
                            if let Some(latest) = times.and_then(|t| t.into_iter().max()) {
                                let after = Duration::from_millis(latest.saturating_sub(start_unix_ms));
                                all_connected_ms = Some(after.as_millis() as u64);
                                out.notice(&Notice::AllConnected { after }, latest);
                            }
                        }
                    }
                    "settled" => w.settled = true,
                    "baseline" => w.baseline = true,
                    "converged" => {
                        w.converged_unix_ms = value["converged_unix_ms"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_u64).collect());
                    }
                    "reconnected" => {
                        if let Ok(o) = serde_json::from_value::<Outage>(value) {
                            w.outages.push(o);
                        }
                        let all: Vec<(usize, Outage)> = workers
                            .iter()
                            .enumerate()
                            .flat_map(|(k, w)| w.outages.iter().map(move |o| (k, o.clone())))
                            .collect();
                        for (children, o) in merge_outages(&all).into_iter().skip(outages_said) {
                            if children < workers.len() {
                                break;
                            }
                            outages_said += 1;
                            out.reconnected(&o);
                        }
                    }
                    "report" => w.report = serde_json::from_value(value).ok(),
                    _ => {}
                }
                if let (Some(t0), None) = (t0_unix_ms, &converged) {
                    let times: Option<Vec<u64>> = workers
                        .iter()
                        .map(|w| w.converged_unix_ms.clone())
                        .collect::<Option<Vec<_>>>()
                        .map(|v| v.concat());
                    if let Some(times) = times {
                        let c = convergence(&times, t0, total);
                        let percentiles = [c.p50_ms, c.p90_ms, c.p99_ms, c.p100_ms];
                        for (percent, after) in MILESTONES.iter().zip(percentiles) {
                            if let Some(after) = after {
                                out.notice(&Notice::Milestone { percent: *percent, after: Duration::from_millis(after) }, 0);
                            }
                        }
                        out.converged(&c, None);
                        converged = Some(c);
                    }
                }
                let all_baselines = workers.iter().all(|w| w.baseline);
                if let (Some(r), true, None) = (&options.refresh, all_baselines || asked_baseline.is_some_and(|at| at.elapsed() > BASELINE_WAIT), &refresh) {
                    t0_unix_ms = Some(unix_ms_now());
                    refresh = Some(RefreshOutcome {
                        url: refresh_url(r),
                        at_ms: start.elapsed().as_millis() as u64,
                        status: None,
                        error: None,
                    });
                    posting = Some(tokio::spawn(trigger(r.clone())));
                }
            }
            _ = ticker.tick() => {
                let sum = |field: &str| workers.iter().map(|w| w.progress[field].as_u64().unwrap_or(0)).sum::<u64>();
                let t = start.elapsed();
                let connected = sum("connected");
                timeline.push([t.as_secs(), connected]);
                out.progress(t, connected, total, ProgressCounts {
                    configs_received: sum("configs_received"),
                    applied: sum("applied"),
                    converged: sum("converged"),
                });
                if !settled && workers.iter().all(|w| w.settled) {
                    settled = true;
                    out.event(json!({"event": "settled", "t_ms": t.as_millis() as u64}), || "settled: every child's agents connected and quiet".into());
                }
                if settled && asked_baseline.is_none() && options.refresh.is_some() {
                    asked_baseline = Some(Instant::now());
                    for w in &mut workers {
                        if let Some(stdin) = w.stdin.as_mut() {
                            // One short line into an empty pipe: it does not block.
                            let _ = stdin.write_all(b"refresh\n").and_then(|()| stdin.flush());
                        }
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
            _ = &mut stop, if !signalled => {
                signalled = true;
                for w in &workers {
                    // SAFETY: signalling a child process this parent started and has not reaped.
                    unsafe { libc::kill(w.process.id() as libc::pid_t, libc::SIGTERM) };
                }
            }
            _ = sleep_until(hard_stop) => break,
        }
    }
    // Every child has closed its stdout (or overrun its time): make sure it is gone.
    for w in &mut workers {
        w.stdin = None;
        if !matches!(w.process.try_wait(), Ok(Some(_))) {
            let _ = w.process.kill();
        }
        let _ = w.process.wait();
    }

    let reports: Vec<&Report> = workers.iter().filter_map(|w| w.report.as_ref()).collect();
    if reports.len() < workers.len() {
        return Err(format!(
            "{} of {} child processes did not report (see their errors above)",
            workers.len() - reports.len(),
            workers.len()
        ));
    }
    let convergence = match (converged, t0_unix_ms) {
        (Some(c), _) => Some(c),
        (None, Some(t0)) => {
            let times: Vec<u64> = reports
                .iter()
                .flat_map(|r| r.converged_unix_ms.clone().unwrap_or_default())
                .collect();
            Some(self::convergence(&times, t0, total))
        }
        (None, None) => None,
    };
    let all: Vec<(usize, Outage)> = reports
        .iter()
        .enumerate()
        .flat_map(|(k, r)| r.reconnects.iter().map(move |o| (k, o.clone())))
        .collect();
    let mut merged = Report {
        transport: options.transport.as_str().into(),
        agents: total,
        processes,
        endpoints: reports[0].endpoints.clone(),
        duration_ms: start.elapsed().as_millis() as u64,
        all_connected_ms,
        connected: 0,
        connected_over_time: timeline,
        configs_received: 0,
        applied_reports: 0,
        full_state_requests: 0,
        disconnects: 0,
        counters: Default::default(),
        refresh,
        convergence,
        reconnects: merge_outages(&all).into_iter().map(|(_, o)| o).collect(),
        http_latency: None,
        http_latency_settled: None,
        applied_hashes: BTreeMap::new(),
        converged_unix_ms: None,
    };
    for r in reports {
        merged.connected += r.connected;
        merged.configs_received += r.configs_received;
        merged.applied_reports += r.applied_reports;
        merged.full_state_requests += r.full_state_requests;
        merged.disconnects += r.disconnects;
        merged.counters.add(&r.counters);
        for (hash, n) in &r.applied_hashes {
            *merged.applied_hashes.entry(hash.clone()).or_insert(0) += n;
        }
    }
    out.report(&merged);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outage(start: u64, end: Option<u64>, dropped: u64) -> Outage {
        Outage {
            after_ms: end.map(|e| e - start),
            dropped,
            configs_received: 0,
            full_state_requests: dropped,
            started_unix_ms: start,
            ended_unix_ms: end,
        }
    }

    #[test]
    fn overlapping_outages_of_the_children_are_one() {
        let merged = merge_outages(&[
            (0, outage(1_000, Some(3_000), 5)),
            (1, outage(1_200, Some(4_000), 7)),
            (0, outage(60_000, Some(61_000), 5)),
        ]);
        assert_eq!(merged.len(), 2);
        let (children, first) = &merged[0];
        assert_eq!(*children, 2);
        assert_eq!(first.after_ms, Some(3_000));
        assert_eq!((first.dropped, first.full_state_requests), (12, 12));
        assert_eq!(merged[1].0, 1);
        let open = merge_outages(&[
            (0, outage(1_000, None, 1)),
            (1, outage(9_000, Some(9_500), 1)),
        ]);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].1.after_ms, None);
    }

    #[test]
    fn convergence_is_timed_from_the_parents_refresh() {
        let c = convergence(&[1_010, 1_020, 990], 1_000, 3);
        assert_eq!((c.p50_ms, c.p100_ms), (Some(10), Some(20)));
    }
}
