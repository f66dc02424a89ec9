//! opamp-gitops: keeps a fleet of OpenTelemetry Collectors configured from a git repository,
//! over OpAMP.

pub mod cli;
pub mod diagnostics;
pub mod repo;
