//! The subcommands behind the `opamp-gitops` binary, each a function from parsed arguments to an
//! exit code, so tests can call them in-process.

pub mod check;
pub mod diff;
pub mod loadgen;
pub mod render;
pub mod serve;

use crate::repo::Snapshot;
use std::path::Path;

pub use crate::options::DEFAULT_REPO_DIR;

/// Exit codes shared by `check`, `render`, `diff` and `loadgen`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
}

/// The multi-threaded runtime `serve` and `loadgen` run on, or exit code 1 with the reason on
/// stderr.
pub fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            exit::FAILED
        })
}

/// Reads a repository directory, or explains on stderr why it cannot (a usage error).
pub fn read_repo_dir(dir: &Path) -> Result<Snapshot, i32> {
    if !dir.is_dir() {
        eprintln!(
            "error: config repository `{}` is not a directory",
            dir.display()
        );
        return Err(exit::USAGE);
    }
    Snapshot::from_dir(dir).map_err(|e| {
        eprintln!("error: cannot read `{}`: {e}", dir.display());
        exit::USAGE
    })
}
