//! The real server, started in-process on loopback ports the OS picks.

use super::repo::TestRepo;
use opamp_gitops::fleet::view::AgentSummary;
use opamp_gitops::server::{self, ServeOptions, Server};
use std::time::Duration;

pub async fn start(repo: &TestRepo) -> Server {
    start_with(ServeOptions::local(repo.path())).await
}

pub async fn start_with(options: ServeOptions) -> Server {
    server::start(options).await.expect("server starts")
}

/// Polls `f` every 20 ms until it returns Some, failing after `deadline`.
pub async fn eventually<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > until {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The registry's view of one agent.
pub fn agent(server: &Server, uid: &str) -> Option<AgentSummary> {
    server
        .fleet
        .summaries()
        .into_iter()
        .find(|a| a.instance_uid == uid)
}
