//! opamp-gitops: keeps a fleet of OpenTelemetry Collectors configured from a git repository,
//! over OpAMP.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod diagnostics;
pub mod fleet;
pub mod fuzzing;
pub mod loadgen;
pub mod metrics;
pub mod net;
pub mod opamp;
pub mod options;
pub mod preview;
pub mod redact;
pub mod repo;
pub mod server;
pub mod source;
pub mod store;
pub mod transport;
