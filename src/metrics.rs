//! Prometheus metrics of one server, in an explicit registry (no global state, so several
//! servers in one process, as in tests, keep their own numbers). Fleet gauges are set from the
//! registry when `/metrics` is scraped; process metrics are read from `/proc` then.

pub mod process;

use crate::fleet::status::Status;
use crate::fleet::view::AgentSummary;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub status: String,
    pub transport: String,
    pub connected: String,
    /// `true`, `false`, or `unknown` (not reported, or disconnected).
    pub healthy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// The commit this binary was built from (build.rs), or "unknown".
pub const COMMIT: &str = env!("OPAMP_GITOPS_COMMIT");

fn request_duration_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeStateLabels {
    pub scope: String,
    pub state: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub rollout_state: Family<ScopeStateLabels, Gauge>,
    pub rollout_wave: Family<ScopeLabels, Gauge>,
    pub rollout_agents: Family<ScopeStateLabels, Gauge>,
    pub agents: Family<AgentLabels, Gauge>,
    pub config_pushes: Counter,
    pub full_state_requests: Counter,
    pub replaced_sessions: Counter,
    /// Agents told to take a new uid because a live agent with other identifying attributes
    /// holds theirs.
    pub duplicate_uids: Counter,
    /// Messages refused because the in-flight byte budget was spent.
    pub inflight_refused: Counter,
    /// Bytes of messages being received and handled right now.
    pub inflight_bytes: Gauge,
    pub push_to_applied: Histogram,
    pub revision_info: Family<RevisionLabels, Gauge>,
    pub last_sync: Gauge<f64, AtomicU64>,
    pub sync_failures: Counter,
    pub compile_failures: Counter,
    pub render_errors: Counter,
    pub store_errors: Counter,
    /// Flushes written to the fleet store, and the agent rows in them.
    pub store_writes: Counter,
    pub store_agent_writes: Counter,
    pub messages: Family<DirectionLabels, Counter>,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub build_info: Family<BuildLabels, Gauge>,
    /// 1 while a snapshot newer than the current revision is rejected.
    pub revision_rejected: Gauge,
}

pub const IN: DirectionLabels = DirectionLabels { direction: "in" };
pub const OUT: DirectionLabels = DirectionLabels { direction: "out" };

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("opamp_gitops");
        let m = Metrics {
            rollout_state: Family::default(),
            rollout_wave: Family::default(),
            rollout_agents: Family::default(),
            agents: Family::default(),
            config_pushes: Counter::default(),
            full_state_requests: Counter::default(),
            replaced_sessions: Counter::default(),
            duplicate_uids: Counter::default(),
            inflight_refused: Counter::default(),
            inflight_bytes: Gauge::default(),
            // 10 ms to about 80 s.
            push_to_applied: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            revision_info: Family::default(),
            last_sync: Gauge::default(),
            sync_failures: Counter::default(),
            compile_failures: Counter::default(),
            render_errors: Counter::default(),
            store_errors: Counter::default(),
            store_writes: Counter::default(),
            store_agent_writes: Counter::default(),
            messages: Family::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(request_duration_histogram),
            build_info: Family::default(),
            revision_rejected: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "agents",
            "Agents in the registry by status, transport and connection state",
            m.agents.clone(),
        );
        registry.register(
            "config_pushes",
            "Remote configs sent to agents",
            m.config_pushes.clone(),
        );
        registry.register(
            "full_state_requests",
            "Replies asking an agent for its full state (sequence gap, unknown agent)",
            m.full_state_requests.clone(),
        );
        registry.register(
            "replaced_sessions",
            "WebSocket sessions closed because a newer one came for the same agent",
            m.replaced_sessions.clone(),
        );
        registry.register(
            "duplicate_uids",
            "Agents told to take a new instance uid because a live agent with other identifying attributes holds theirs",
            m.duplicate_uids.clone(),
        );
        registry.register(
            "inflight_refused",
            "OpAMP messages refused (HTTP 503, WebSocket UNAVAILABLE) because --max-inflight-bytes was in use",
            m.inflight_refused.clone(),
        );
        registry.register(
            "inflight_bytes",
            "Bytes of OpAMP messages being received and handled right now",
            m.inflight_bytes.clone(),
        );
        registry.register(
            "push_to_applied_seconds",
            "Time from sending a config to the agent reporting it APPLIED",
            m.push_to_applied.clone(),
        );
        registry.register(
            "revision_info",
            "The current revision (commit) of the config repository",
            m.revision_info.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "When the config source was last read successfully",
            m.last_sync.clone(),
        );
        registry.register(
            "sync_failures",
            "Failures to read the config source (fetch errors)",
            m.sync_failures.clone(),
        );
        registry.register(
            "compile_failures",
            "Revisions rejected because they did not compile",
            m.compile_failures.clone(),
        );
        registry.register(
            "render_errors",
            "Agents whose config did not render or validate under a revision",
            m.render_errors.clone(),
        );
        registry.register(
            "store_errors",
            "Failed writes to the fleet store (retried at the next flush)",
            m.store_errors.clone(),
        );
        registry.register(
            "store_writes",
            "Flushes written to the fleet store (one per --store-flush-interval)",
            m.store_writes.clone(),
        );
        registry.register(
            "store_agent_writes",
            "Agent rows written to the fleet store (an agent whose state changed since the last flush)",
            m.store_agent_writes.clone(),
        );
        registry.register(
            "messages",
            "OpAMP messages by direction",
            m.messages.clone(),
        );
        registry.register(
            "received_bytes",
            "OpAMP message bytes received from agents (after decompression)",
            m.received_bytes.clone(),
        );
        registry.register(
            "sent_bytes",
            "OpAMP message bytes sent to agents (before compression)",
            m.sent_bytes.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route pattern",
            m.http_request_duration.clone(),
        );
        registry.register(
            "build_info",
            "The version and commit of this server (always 1)",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: COMMIT,
            })
            .set(1);
        registry.register(
            "revision_rejected",
            "1 while a snapshot newer than the current revision is rejected, else 0",
            m.revision_rejected.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        registry.register(
            "rollout_state",
            "Each staged rollout's state (1 for the current one) by scope",
            m.rollout_state.clone(),
        );
        registry.register(
            "rollout_wave",
            "The highest admitted wave of each staged rollout (0: the canary)",
            m.rollout_wave.clone(),
        );
        registry.register(
            "rollout_agents",
            "Agents of each staged rollout: admitted, applied, failed, waiting",
            m.rollout_agents.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn message_in(&self, bytes: usize) {
        self.messages.get_or_create(&IN).inc();
        self.received_bytes.inc_by(bytes as u64);
    }

    pub fn message_out(&self, bytes: usize) {
        self.messages.get_or_create(&OUT).inc();
        self.sent_bytes.inc_by(bytes as u64);
    }

    pub fn set_revision(&self, revision: &str) {
        self.revision_info.clear();
        self.revision_info
            .get_or_create(&RevisionLabels {
                revision: revision.to_owned(),
            })
            .set(1);
    }

    pub fn synced_now(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_sync.set(now);
    }

    /// Sets the `agents` gauge from the registry's summaries. Every status is exported for every
    /// transport and possible connection and health state, 0 included, so that a status no agent
    /// has is a 0 and not an absent series. A disconnected agent's health is unknown.
    pub fn observe_fleet(&self, agents: &[AgentSummary]) {
        let mut counts: HashMap<AgentLabels, i64> = HashMap::new();
        let states = [
            ("true", "true"),
            ("true", "false"),
            ("true", "unknown"),
            ("false", "unknown"),
        ];
        for status in Status::ALL {
            for transport in ["ws", "http"] {
                for (connected, healthy) in states {
                    counts.insert(
                        AgentLabels {
                            status: status.as_str().to_owned(),
                            transport: transport.to_owned(),
                            connected: connected.to_owned(),
                            healthy: healthy.to_owned(),
                        },
                        0,
                    );
                }
            }
        }
        for agent in agents {
            let healthy = match agent.healthy {
                Some(h) => h.to_string(),
                None => "unknown".to_owned(),
            };
            let labels = AgentLabels {
                status: agent.status.as_str().to_owned(),
                transport: agent.transport.as_str().to_owned(),
                connected: agent.connected.to_string(),
                healthy,
            };
            *counts.entry(labels).or_default() += 1;
        }
        self.agents.clear();
        for (labels, count) in counts {
            self.agents.get_or_create(&labels).set(count);
        }
    }

    /// The staged rollouts as the fleet's last tick saw them.
    pub fn set_rollouts(&self, rollouts: &[crate::fleet::rollout::RolloutView]) {
        use crate::fleet::rollout::RolloutState;
        self.rollout_state.clear();
        self.rollout_wave.clear();
        self.rollout_agents.clear();
        for r in rollouts {
            for state in RolloutState::ALL {
                self.rollout_state
                    .get_or_create(&ScopeStateLabels {
                        scope: r.scope.clone(),
                        state: state.as_str(),
                    })
                    .set(i64::from(state == r.state));
            }
            self.rollout_wave
                .get_or_create(&ScopeLabels {
                    scope: r.scope.clone(),
                })
                .set(r.wave as i64);
            for (state, count) in [
                ("admitted", r.admitted),
                ("applied", r.applied),
                ("failed", r.failed),
                ("waiting", r.waiting),
            ] {
                self.rollout_agents
                    .get_or_create(&ScopeStateLabels {
                        scope: r.scope.clone(),
                        state,
                    })
                    .set(count as i64);
            }
        }
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Counts every request by its route pattern and status code, and times it by route pattern.
pub async fn count_requests(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http_request_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            code: response.status().as_u16(),
        })
        .inc();
    response
}
