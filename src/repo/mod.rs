//! The config-repository model: a snapshot of files compiles into an immutable revision that
//! renders, validates and hashes the desired config of any agent. Nothing here knows about OpAMP.

pub mod agent;
pub mod compile;
pub mod components;
pub mod fleet;
pub mod hash;
pub mod locate;
pub mod otelcol;
pub mod render;
pub mod rollout;
pub mod samples;
pub mod sandbox;
pub mod selector;
pub mod snapshot;
pub mod telemetry;
pub mod template;
pub mod validate;
pub mod yaml;

pub use agent::AgentInfo;
pub use compile::{compile, CompileOptions, CompileOutput, SampleReport, Summary};
pub use render::{Desired, DesiredConfig, Revision};
pub use snapshot::Snapshot;
