//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod admin;
pub mod agent;
pub mod browser;
pub mod clients;
pub mod deploy;
pub mod e2e;
pub mod git;
pub mod postgres;
pub mod process;
pub mod reference;
pub mod repo;
pub mod served;
pub mod server;
pub mod tls;

use std::path::Path;
use std::process::{Command, Output};

/// Runs blocking test I/O (ureq requests, child processes) from a multi-threaded tokio test.
pub async fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs the real `opamp-gitops` binary in `cwd`.
pub fn run_cli(cwd: &Path, args: &[&str]) -> CliResult {
    let output = Command::new(env!("CARGO_BIN_EXE_opamp-gitops"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run opamp-gitops");
    CliResult::from(output)
}

pub struct CliResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliResult {
    fn from(o: Output) -> Self {
        CliResult {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for CliResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}
