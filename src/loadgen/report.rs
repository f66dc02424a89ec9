//! What a run says: progress and events while it runs, and the report at the end. Human output
//! puts events on stderr and the report on stdout; `--json` puts everything on stdout, one
//! object a line, each with an `"event"` field (`start`, `progress`, `all_connected`,
//! `settled`, `refresh`, `milestone`, `converged`, `reconnected`, and last `report`).

use super::context::CounterValues;
use super::histogram::Histogram;
use super::view::{Convergence, Notice, Outage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The refresh (or push) loadgen triggered, and how the server answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshOutcome {
    pub url: String,
    /// When it was posted, from the start of the run.
    pub at_ms: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl RefreshOutcome {
    /// Takes in how the refresh task ended: the server's status, or why there was none.
    pub fn settle(&mut self, result: Result<Result<u16, String>, tokio::task::JoinError>) {
        match result {
            Ok(Ok(status)) => self.status = Some(status),
            Ok(Err(e)) => self.error = Some(e),
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

/// Plain-HTTP request latencies, connect to last byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub requests: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Latency {
    pub fn from_histogram(h: &Histogram) -> Option<Latency> {
        let at = |q| h.percentile(q).map(ms).unwrap_or_default();
        (h.count() > 0).then(|| Latency {
            requests: h.count(),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: ms(h.max()),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub transport: String,
    pub agents: u64,
    pub processes: u64,
    pub endpoints: Vec<String>,
    pub duration_ms: u64,
    /// From the start until every agent was connected for the first time.
    pub all_connected_ms: Option<u64>,
    /// Connected at the end, before the agents said goodbye.
    pub connected: u64,
    /// `[seconds since the start, connected agents]`, once a second.
    pub connected_over_time: Vec<[u64; 2]>,
    pub configs_received: u64,
    pub applied_reports: u64,
    pub full_state_requests: u64,
    pub disconnects: u64,
    #[serde(flatten)]
    pub counters: CounterValues,
    pub refresh: Option<RefreshOutcome>,
    pub convergence: Option<Convergence>,
    pub reconnects: Vec<Outage>,
    pub http_latency: Option<Latency>,
    /// The same for the requests made after the fleet settled: the steady state.
    pub http_latency_settled: Option<Latency>,
    /// How many agents report each hash APPLIED at the end (hex).
    pub applied_hashes: BTreeMap<String, u64>,
    /// Child processes only: when each agent converged (Unix ms), for the parent to merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_unix_ms: Option<Vec<u64>>,
}

fn secs(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn opt_ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"))
}

impl Report {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loadgen: {} {} agents, {} endpoint(s), {} process(es), {}",
            self.agents,
            self.transport,
            self.endpoints.len(),
            self.processes,
            secs(self.duration_ms)
        );
        let _ = writeln!(
            out,
            "  connected            {}/{} at the end; all connected after {}",
            self.connected,
            self.agents,
            self.all_connected_ms.map_or("never".to_owned(), secs)
        );
        let _ = writeln!(
            out,
            "  configs received     {}  (APPLIED reports {}, full-state requests {}, disconnects {})",
            self.configs_received, self.applied_reports, self.full_state_requests, self.disconnects
        );
        let c = &self.counters;
        let _ = writeln!(
            out,
            "  messages             {} sent, {} received, {} heartbeats; {} connect failures, {} failed requests, {} server errors",
            c.messages_sent, c.messages_received, c.heartbeats_sent, c.connect_failures, c.request_failures, c.server_errors
        );
        match &self.refresh {
            Some(r) => {
                let answer = match (&r.status, &r.error) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "no answer".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "  refresh              POST {} at {} -> {answer}",
                    r.url,
                    secs(r.at_ms)
                );
            }
            None => {
                let _ = writeln!(out, "  refresh              none");
            }
        }
        if let Some(c) = &self.convergence {
            let _ = writeln!(
                out,
                "  convergence          {}/{} APPLIED a new hash: p50 {}, p90 {}, p99 {}, p100 {}",
                c.converged,
                c.agents,
                opt_ms(c.p50_ms),
                opt_ms(c.p90_ms),
                opt_ms(c.p99_ms),
                opt_ms(c.p100_ms)
            );
        }
        for o in &self.reconnects {
            let _ = writeln!(out, "  reconnect            {}", outage_text(o));
        }
        for (name, latency) in [
            ("http latency        ", &self.http_latency),
            ("  after settling    ", &self.http_latency_settled),
        ] {
            if let Some(l) = latency {
                let _ = writeln!(
                    out,
                    "  {name} {} requests: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                    l.requests, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
                );
            }
        }
        let _ = writeln!(
            out,
            "  applied hashes       {} distinct",
            self.applied_hashes.len()
        );
        out
    }
}

fn outage_text(o: &Outage) -> String {
    match o.after_ms {
        Some(after) => format!(
            "all back {} after the first drop ({} dropped): {} configs received, {} full-state requests",
            secs(after),
            o.dropped,
            o.configs_received,
            o.full_state_requests
        ),
        None => format!(
            "not all back by the end ({} dropped): {} configs received, {} full-state requests",
            o.dropped, o.configs_received, o.full_state_requests
        ),
    }
}

/// Where the lines go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn event(&self, value: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            eprintln!("{}", human());
        }
    }

    pub fn progress(&self, t: Duration, connected: u64, total: u64, view: ProgressCounts) {
        self.event(
            json!({
                "event": "progress",
                "t_ms": t.as_millis() as u64,
                "connected": connected,
                "configs_received": view.configs_received,
                "applied": view.applied,
                "converged": view.converged,
            }),
            || {
                format!(
                    "[{:>6.1}s] connected {connected}/{total}  configs {}  applied {}  converged {}",
                    t.as_secs_f64(),
                    view.configs_received,
                    view.applied,
                    view.converged
                )
            },
        );
    }

    pub fn notice(&self, notice: &Notice, unix_ms: u64) {
        match notice {
            Notice::AllConnected { after } => {
                let after = after.as_millis() as u64;
                self.event(
                    json!({"event": "all_connected", "after_ms": after, "at_unix_ms": unix_ms}),
                    || format!("all agents connected after {}", secs(after)),
                )
            }
            Notice::Milestone { percent, after } => {
                let after = after.as_millis() as u64;
                self.event(
                    json!({"event": "milestone", "percent": percent, "after_ms": after}),
                    || format!("{percent}% reported APPLIED for a new hash {after} ms after the refresh"),
                )
            }
            Notice::Converged(c) => self.converged(c, None),
            Notice::Reconnected(o) => self.reconnected(o),
        }
    }

    /// Every agent converged; a child also hands over when each one did.
    pub fn converged(&self, c: &Convergence, times_unix_ms: Option<&[u64]>) {
        let mut value = json!({
            "event": "converged",
            "agents": c.agents,
            "p50_ms": c.p50_ms,
            "p90_ms": c.p90_ms,
            "p99_ms": c.p99_ms,
            "p100_ms": c.p100_ms,
        });
        if let Some(times) = times_unix_ms {
            value["converged_unix_ms"] = json!(times);
        }
        self.event(value, || {
            format!(
                "all {} agents APPLIED the new config: p50 {}, p90 {}, p99 {}, p100 {}",
                c.agents,
                opt_ms(c.p50_ms),
                opt_ms(c.p90_ms),
                opt_ms(c.p99_ms),
                opt_ms(c.p100_ms)
            )
        });
    }

    pub fn refreshed(&self, o: &RefreshOutcome) {
        self.event(
            json!({"event": "refresh", "url": o.url, "at_ms": o.at_ms, "status": o.status, "error": o.error}),
            || {
                let answer = match (o.status, &o.error) {
                    (Some(status), _) => status.to_string(),
                    (None, error) => format!("failed: {}", error.as_deref().unwrap_or("no answer")),
                };
                format!("refresh POST {} -> {answer}", o.url)
            },
        );
    }

    pub fn reconnected(&self, o: &Outage) {
        let mut value = serde_json::to_value(o).unwrap_or_default();
        value["event"] = json!("reconnected");
        self.event(value, || outage_text(o));
    }

    pub fn report(&self, report: &Report) {
        if self.json {
            let mut value = serde_json::to_value(report).unwrap_or_default();
            value["event"] = json!("report");
            println!("{value}");
        } else {
            print!("{}", report.human());
        }
    }
}

/// The counts a progress line shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgressCounts {
    pub configs_received: u64,
    pub applied: u64,
    pub converged: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_back_from_its_json_line() {
        let report = Report {
            transport: "ws".into(),
            agents: 2,
            processes: 1,
            endpoints: vec!["127.0.0.1:4320/v1/opamp".into()],
            duration_ms: 1_000,
            all_connected_ms: Some(12),
            connected: 2,
            connected_over_time: vec![[1, 2]],
            configs_received: 2,
            applied_reports: 2,
            full_state_requests: 0,
            disconnects: 0,
            counters: CounterValues {
                heartbeats_sent: 4,
                ..CounterValues::default()
            },
            refresh: None,
            convergence: Some(Convergence::from_times(&mut [5, 7], 2)),
            reconnects: vec![],
            http_latency: None,
            http_latency_settled: None,
            applied_hashes: [("ab".to_owned(), 2)].into(),
            converged_unix_ms: None,
        };
        let mut value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["heartbeats_sent"], 4, "counters are flattened");
        assert!(value.get("converged_unix_ms").is_none());
        value["event"] = json!("report");
        let back: Report = serde_json::from_value(value).unwrap();
        assert_eq!(back.convergence.unwrap().p100_ms, Some(7));
        assert!(report.human().contains("p50 5 ms"));
    }
}
