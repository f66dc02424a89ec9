//! The controller's view of the simulated fleet, built from the events the agent tasks send:
//! who is connected, which hash each agent runs, how long after a refresh each agent reported
//! `APPLIED` for a new hash, and each outage (from the first drop until every agent is back).
//! One task owns it, so nothing here locks.

use super::histogram::Histogram;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the fleet must be quiet (no config, status or connection change) to count as
/// settled, and how long after the last agent is back an outage is closed (the full states
/// and any configs that follow a reconnect still count towards it).
pub const SETTLE: Duration = Duration::from_secs(2);

/// Convergence milestones reported as they are reached.
pub const MILESTONES: [u32; 4] = [50, 90, 99, 100];

#[derive(Debug, Clone)]
pub struct Event {
    pub agent: u32,
    pub at: Instant,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// The server answered (a WebSocket's first reply, or a poll after none or a failure).
    Connected,
    Disconnected,
    ConfigReceived,
    /// The agent reported this hash APPLIED.
    Applied(Bytes),
    FullStateRequested,
    /// One plain-HTTP request, connect to last byte.
    Latency(Duration),
}

/// Something worth saying while the run goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    AllConnected { after: Duration },
    Milestone { percent: u32, after: Duration },
    Converged(Convergence),
    Reconnected(Outage),
}

/// Time until a share of the agents reported `APPLIED` for a new hash, from the refresh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub agents: u64,
    pub converged: u64,
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub p100_ms: Option<u64>,
}

impl Convergence {
    /// From the convergence times (ms, any order) of `agents` agents.
    pub fn from_times(times: &mut [u64], agents: u64) -> Convergence {
        times.sort_unstable();
        let at = |percent: u64| {
            let rank = (agents * percent).div_ceil(100).max(1);
            times.get(rank as usize - 1).copied()
        };
        Convergence {
            agents,
            converged: times.len() as u64,
            p50_ms: at(50),
            p90_ms: at(90),
            p99_ms: at(99),
            p100_ms: at(100),
        }
    }
}

/// From the first agent dropped to all of them back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// `None`: not every agent came back before the run ended.
    pub after_ms: Option<u64>,
    /// The most agents disconnected at once.
    pub dropped: u64,
    /// Remote configs received from the first drop until the outage closed.
    pub configs_received: u64,
    pub full_state_requests: u64,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct AgentView {
    connected: bool,
    /// Interned hash reported APPLIED.
    applied: Option<u32>,
}

#[derive(Debug)]
struct Converging {
    started: Instant,
    baseline: Vec<Option<u32>>,
    done: Vec<bool>,
    times_ms: Vec<u64>,
    next_milestone: usize,
}

#[derive(Debug)]
struct OpenOutage {
    started: Instant,
    back_at: Option<Instant>,
    dropped: u64,
    configs_at_start: u64,
    full_states_at_start: u64,
}

#[derive(Debug)]
pub struct View {
    clock: (Instant, SystemTime),
    agents: Vec<AgentView>,
    connected: u64,
    hashes: HashMap<Bytes, u32>,
    hash_list: Vec<Bytes>,
    pub configs_received: u64,
    pub applied_reports: u64,
    pub full_state_requests: u64,
    pub disconnects: u64,
    last_activity: Instant,
    all_connected_at: Option<Instant>,
    converging: Option<Converging>,
    outage: Option<OpenOutage>,
    pub outages: Vec<Outage>,
    pub latency: Histogram,
    /// Latencies of the requests made once the fleet settled (the steady state).
    pub latency_settled: Histogram,
    settled_at: Option<Instant>,
}

impl View {
    pub fn new(agents: usize, start: Instant) -> View {
        View {
            clock: (start, SystemTime::now()),
            agents: vec![AgentView::default(); agents],
            connected: 0,
            hashes: HashMap::new(),
            hash_list: Vec::new(),
            configs_received: 0,
            applied_reports: 0,
            full_state_requests: 0,
            disconnects: 0,
            last_activity: start,
            all_connected_at: None,
            converging: None,
            outage: None,
            outages: Vec::new(),
            latency: Histogram::default(),
            latency_settled: Histogram::default(),
            settled_at: None,
        }
    }

    pub fn start(&self) -> Instant {
        self.clock.0
    }

    pub fn unix_ms(&self, at: Instant) -> u64 {
        let (instant, system) = self.clock;
        let at = if at >= instant {
            system + (at - instant)
        } else {
            system - (instant - at)
        };
        at.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }

    pub fn total(&self) -> u64 {
        self.agents.len() as u64
    }

    pub fn connected(&self) -> u64 {
        self.connected
    }

    pub fn all_connected_after(&self) -> Option<Duration> {
        self.all_connected_at.map(|at| at - self.start())
    }

    /// Agents that report APPLIED for some hash.
    pub fn applied(&self) -> u64 {
        self.agents.iter().filter(|a| a.applied.is_some()).count() as u64
    }

    /// How many agents report each hash APPLIED (hex).
    pub fn applied_hashes(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for agent in &self.agents {
            if let Some(id) = agent.applied {
                *counts
                    .entry(hex::encode(&self.hash_list[id as usize]))
                    .or_insert(0) += 1;
            }
        }
        counts
    }

    /// Every agent connected, and nothing happened for `SETTLE`.
    pub fn settled(&self, now: Instant) -> bool {
        self.all_connected_at.is_some()
            && self.connected == self.total()
            && now.saturating_duration_since(self.last_activity) >= SETTLE
    }

    /// From now on request latencies also count as steady-state ones.
    pub fn mark_settled(&mut self, at: Instant) {
        self.settled_at.get_or_insert(at);
    }

    fn intern(&mut self, hash: Bytes) -> u32 {
        if let Some(id) = self.hashes.get(&hash) {
            return *id;
        }
        let id = self.hash_list.len() as u32;
        self.hash_list.push(hash.clone());
        self.hashes.insert(hash, id);
        id
    }

    /// From now on, an agent that reports APPLIED for a hash other than the one it runs now
    /// has converged.
    pub fn start_convergence(&mut self, now: Instant) {
        self.converging = Some(Converging {
            started: now,
            baseline: self.agents.iter().map(|a| a.applied).collect(),
            done: vec![false; self.agents.len()],
            times_ms: Vec::new(),
            next_milestone: 0,
        });
    }

    pub fn convergence_started_unix_ms(&self) -> Option<u64> {
        self.converging.as_ref().map(|c| self.unix_ms(c.started))
    }

    pub fn convergence(&self) -> Option<Convergence> {
        self.converging
            .as_ref()
            .map(|c| Convergence::from_times(&mut c.times_ms.clone(), self.total()))
    }

    /// When each converged agent reported APPLIED (Unix ms), for a parent process to merge.
    pub fn converged_unix_ms(&self) -> Vec<u64> {
        match &self.converging {
            Some(c) => {
                let base = self.unix_ms(c.started);
                c.times_ms.iter().map(|t| base + t).collect()
            }
            None => Vec::new(),
        }
    }

    pub fn apply(&mut self, event: Event) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(agent) = self.agents.get(event.agent as usize).copied() else {
            return notices;
        };
        let i = event.agent as usize;
        match event.kind {
            EventKind::Connected if !agent.connected => {
                self.agents[i].connected = true;
                self.connected += 1;
                self.last_activity = event.at;
                if self.connected == self.total() {
                    match (&mut self.outage, self.all_connected_at) {
                        (_, None) => {
                            self.all_connected_at = Some(event.at);
                            notices.push(Notice::AllConnected {
                                after: event.at - self.start(),
                            });
                        }
                        (Some(outage), Some(_)) => outage.back_at = Some(event.at),
                        (None, Some(_)) => {}
                    }
                }
            }
            EventKind::Connected => {}
            EventKind::Disconnected if agent.connected => {
                self.agents[i].connected = false;
                self.connected -= 1;
                self.disconnects += 1;
                self.last_activity = event.at;
                if self.all_connected_at.is_some() {
                    let dropped = self.total() - self.connected;
                    let outage = self.outage.get_or_insert(OpenOutage {
                        started: event.at,
                        back_at: None,
                        dropped: 0,
                        configs_at_start: self.configs_received,
                        full_states_at_start: self.full_state_requests,
                    });
                    outage.back_at = None;
                    outage.dropped = outage.dropped.max(dropped);
                }
            }
            EventKind::Disconnected => {}
            EventKind::ConfigReceived => {
                self.configs_received += 1;
                self.last_activity = event.at;
            }
            EventKind::FullStateRequested => {
                self.full_state_requests += 1;
                self.last_activity = event.at;
            }
            EventKind::Latency(latency) => {
                self.latency.record(latency);
                if self.settled_at.is_some_and(|s| event.at >= s) {
                    self.latency_settled.record(latency);
                }
            }
            EventKind::Applied(hash) => {
                self.applied_reports += 1;
                self.last_activity = event.at;
                let id = self.intern(hash);
                self.agents[i].applied = Some(id);
                let total = self.total();
                if let Some(c) = &mut self.converging {
                    if !c.done[i] && c.baseline[i] != Some(id) {
                        c.done[i] = true;
                        let after = event.at.saturating_duration_since(c.started);
                        c.times_ms.push(after.as_millis() as u64);
                        let reached = c.times_ms.len() as u64;
                        while let Some(&percent) = MILESTONES.get(c.next_milestone) {
                            if reached < (total * u64::from(percent)).div_ceil(100) {
                                break;
                            }
                            c.next_milestone += 1;
                            notices.push(Notice::Milestone { percent, after });
                        }
                        if reached == total {
                            notices.push(Notice::Converged(Convergence::from_times(
                                &mut c.times_ms.clone(),
                                total,
                            )));
                        }
                    }
                }
            }
        }
        notices
    }

    /// Closes an outage once every agent has been back for `SETTLE`.
    pub fn tick(&mut self, now: Instant) -> Vec<Notice> {
        match &self.outage {
            Some(o)
                if o.back_at
                    .is_some_and(|b| now.saturating_duration_since(b) >= SETTLE) =>
            {
                self.close_outage()
                    .into_iter()
                    .map(Notice::Reconnected)
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Closes the outage in progress, if any, as it stands (at the end of the run).
    pub fn close_outage(&mut self) -> Option<Outage> {
        let o = self.outage.take()?;
        let outage = Outage {
            after_ms: o.back_at.map(|b| (b - o.started).as_millis() as u64),
            dropped: o.dropped,
            configs_received: self.configs_received - o.configs_at_start,
            full_state_requests: self.full_state_requests - o.full_states_at_start,
            started_unix_ms: self.unix_ms(o.started),
            ended_unix_ms: o.back_at.map(|b| self.unix_ms(b)),
        };
        self.outages.push(outage.clone());
        Some(outage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(agent: u32, at: Instant, kind: EventKind) -> Event {
        Event { agent, at, kind }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn all_connected_settles_and_convergence_counts_new_hashes_only() {
        let t0 = Instant::now();
        let mut view = View::new(4, t0);
        for i in 0..4 {
            let notices = view.apply(ev(i, t0 + ms(10 * u64::from(i)), EventKind::Connected));
            assert_eq!(
                notices.is_empty(),
                i < 3,
                "the last connection is announced: {notices:?}"
            );
            view.apply(ev(
                i,
                t0 + ms(50),
                EventKind::Applied(Bytes::from_static(b"old")),
            ));
        }
        assert_eq!(view.all_connected_after(), Some(ms(30)));
        assert!(!view.settled(t0 + ms(100)));
        assert!(view.settled(t0 + ms(50) + SETTLE));

        let refresh = t0 + ms(3_000);
        view.start_convergence(refresh);
        // The old hash again is not convergence; a new one is.
        assert!(view
            .apply(ev(
                0,
                refresh + ms(5),
                EventKind::Applied(Bytes::from_static(b"old"))
            ))
            .is_empty());
        let n = view.apply(ev(
            0,
            refresh + ms(10),
            EventKind::Applied(Bytes::from_static(b"new")),
        ));
        assert!(n.is_empty());
        let n = view.apply(ev(
            1,
            refresh + ms(20),
            EventKind::Applied(Bytes::from_static(b"new")),
        ));
        assert_eq!(
            n,
            [Notice::Milestone {
                percent: 50,
                after: ms(20)
            }]
        );
        view.apply(ev(
            1,
            refresh + ms(25),
            EventKind::Applied(Bytes::from_static(b"newer")),
        ));
        view.apply(ev(
            2,
            refresh + ms(30),
            EventKind::Applied(Bytes::from_static(b"new")),
        ));
        let n = view.apply(ev(
            3,
            refresh + ms(40),
            EventKind::Applied(Bytes::from_static(b"new")),
        ));
        assert_eq!(
            n.len(),
            4,
            "90, 99 and 100 % at once, then converged: {n:?}"
        );
        let Notice::Converged(c) = &n[3] else {
            panic!("{n:?}")
        };
        assert_eq!(
            (c.converged, c.p50_ms, c.p90_ms, c.p100_ms),
            (4, Some(20), Some(40), Some(40))
        );
        assert_eq!(view.converged_unix_ms().len(), 4);
        assert_eq!(view.applied_hashes().get(&hex::encode("new")), Some(&3));
    }

    #[test]
    fn an_outage_runs_from_the_first_drop_until_all_are_back_and_counts_what_followed() {
        let t0 = Instant::now();
        let mut view = View::new(2, t0);
        view.apply(ev(0, t0, EventKind::Connected));
        view.apply(ev(1, t0, EventKind::Connected));
        view.apply(ev(0, t0 + ms(100), EventKind::Disconnected));
        view.apply(ev(1, t0 + ms(150), EventKind::Disconnected));
        view.apply(ev(0, t0 + ms(900), EventKind::Connected));
        view.apply(ev(0, t0 + ms(901), EventKind::FullStateRequested));
        view.apply(ev(1, t0 + ms(1_100), EventKind::Connected));
        view.apply(ev(1, t0 + ms(1_101), EventKind::FullStateRequested));
        assert!(view.tick(t0 + ms(1_200)).is_empty(), "still settling");
        let n = view.tick(t0 + ms(1_100) + SETTLE);
        let [Notice::Reconnected(o)] = &n[..] else {
            panic!("{n:?}")
        };
        assert_eq!(o.after_ms, Some(1_000));
        assert_eq!(
            (o.dropped, o.full_state_requests, o.configs_received),
            (2, 2, 0)
        );
        assert!(view.close_outage().is_none());
        assert_eq!(view.outages.len(), 1);
        assert_eq!(view.disconnects, 2);
    }

    #[test]
    fn percentiles_need_enough_agents() {
        let c = Convergence::from_times(&mut [30, 10, 20], 4);
        assert_eq!((c.p50_ms, c.p90_ms, c.p100_ms), (Some(20), None, None));
        let c = Convergence::from_times(&mut [], 0);
        assert_eq!(c.p50_ms, None);
    }
}
