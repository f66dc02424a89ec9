//! Prometheus metrics of one server, in an explicit registry (no global state, so several
//! servers in one process, as in tests, keep their own numbers).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub status: String,
    pub transport: String,
    pub connected: String,
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
    pub push_to_applied: Histogram,
    pub revision_info: Family<RevisionLabels, Gauge>,
    pub last_sync: Gauge<f64, AtomicU64>,
    pub sync_failures: Counter,
    pub compile_failures: Counter,
    pub render_errors: Counter,
    pub store_errors: Counter,
    pub messages: Family<DirectionLabels, Counter>,
    pub bytes: Family<DirectionLabels, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
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
            // 10 ms to about 80 s.
            push_to_applied: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            revision_info: Family::default(),
            last_sync: Gauge::default(),
            sync_failures: Counter::default(),
            compile_failures: Counter::default(),
            render_errors: Counter::default(),
            store_errors: Counter::default(),
            messages: Family::default(),
            bytes: Family::default(),
            http_requests: Family::default(),
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
            "messages",
            "OpAMP messages by direction",
            m.messages.clone(),
        );
        registry.register(
            "bytes",
            "OpAMP message bytes by direction (after decompression)",
            m.bytes.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status code",
            m.http_requests.clone(),
        );
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
        self.bytes.get_or_create(&IN).inc_by(bytes as u64);
    }

    pub fn message_out(&self, bytes: usize) {
        self.messages.get_or_create(&OUT).inc();
        self.bytes.get_or_create(&OUT).inc_by(bytes as u64);
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

/// Counts every request by its route pattern and status code.
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
    let response = next.run(request).await;
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            code: response.status().as_u16(),
        })
        .inc();
    response
}
