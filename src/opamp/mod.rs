//! The OpAMP protocol: generated messages, instance uids, framing and compression (codec), the
//! pure session state machine, and the two transports (WebSocket and plain HTTP) on one endpoint.

pub mod builders;
pub mod codec;
pub mod session;
pub mod uid;

/// Messages generated from `proto/opamp/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/opamp.proto.v1.rs"));
}

/// The URL path both transports share.
pub const OPAMP_PATH: &str = "/v1/opamp";

/// Capability bits of `AgentToServer.capabilities`.
pub mod agent_caps {
    pub const REPORTS_STATUS: u64 = 0x1;
    pub const ACCEPTS_REMOTE_CONFIG: u64 = 0x2;
    pub const REPORTS_EFFECTIVE_CONFIG: u64 = 0x4;
    pub const REPORTS_OWN_TRACES: u64 = 0x20;
    pub const REPORTS_OWN_METRICS: u64 = 0x40;
    pub const REPORTS_OWN_LOGS: u64 = 0x80;
    pub const ACCEPTS_OPAMP_CONNECTION_SETTINGS: u64 = 0x100;
    pub const ACCEPTS_RESTART_COMMAND: u64 = 0x400;
    pub const REPORTS_HEALTH: u64 = 0x800;
    pub const REPORTS_REMOTE_CONFIG: u64 = 0x1000;
    pub const REPORTS_HEARTBEAT: u64 = 0x2000;
    pub const REPORTS_AVAILABLE_COMPONENTS: u64 = 0x4000;

    /// Every capability name with its bit, for display.
    pub const NAMES: &[(u64, &str)] = &[
        (0x1, "ReportsStatus"),
        (0x2, "AcceptsRemoteConfig"),
        (0x4, "ReportsEffectiveConfig"),
        (0x8, "AcceptsPackages"),
        (0x10, "ReportsPackageStatuses"),
        (0x20, "ReportsOwnTraces"),
        (0x40, "ReportsOwnMetrics"),
        (0x80, "ReportsOwnLogs"),
        (0x100, "AcceptsOpAMPConnectionSettings"),
        (0x200, "AcceptsOtherConnectionSettings"),
        (0x400, "AcceptsRestartCommand"),
        (0x800, "ReportsHealth"),
        (0x1000, "ReportsRemoteConfig"),
        (0x2000, "ReportsHeartbeat"),
        (0x4000, "ReportsAvailableComponents"),
        (0x8000, "ReportsConnectionSettingsStatus"),
    ];

    pub fn names(bits: u64) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// What the OpAMP Supervisor advertises for a Collector whose config is managed remotely.
pub const SUPERVISED: u64 = agent_caps::REPORTS_STATUS
    | agent_caps::ACCEPTS_REMOTE_CONFIG
    | agent_caps::REPORTS_EFFECTIVE_CONFIG
    | agent_caps::REPORTS_REMOTE_CONFIG
    | agent_caps::REPORTS_HEALTH
    | agent_caps::REPORTS_HEARTBEAT;

/// Capability bits of `ServerToAgent.capabilities`.
pub mod server_caps {
    pub const ACCEPTS_STATUS: u64 = 0x1;
    pub const OFFERS_REMOTE_CONFIG: u64 = 0x2;
    pub const ACCEPTS_EFFECTIVE_CONFIG: u64 = 0x4;
    pub const OFFERS_CONNECTION_SETTINGS: u64 = 0x20;
}

/// `AgentToServer.flags`.
pub const FLAG_REQUEST_INSTANCE_UID: u64 = 0x1;
/// `ServerToAgent.flags`.
pub const FLAG_REPORT_FULL_STATE: u64 = 0x1;
/// `ServerToAgent.flags`: send the full `available_components` list.
pub const FLAG_REPORT_AVAILABLE_COMPONENTS: u64 = 0x2;
