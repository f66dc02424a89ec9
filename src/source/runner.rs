//! Keeps the current revision following its source: the first sync at start (falling back to
//! the cached revision when a git remote is unreachable), then a sync on every poll interval
//! (with jitter), every watcher event, webhook and refresh, with backoff after failures.

use super::dir::{DirSource, Watcher};
use super::git::GitSource;
use super::{RevisionStore, Submitted};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub enum Source {
    Dir(DirSource),
    Git(GitSource),
}

impl Source {
    /// One sync; `false` when the source could not be read.
    fn sync(&self, store: &RevisionStore) -> bool {
        match self {
            Source::Dir(dir) => dir.sync(store).is_ok(),
            // A failure is logged and reported by the store (`sync_failed`).
            Source::Git(git) => git.sync(store).is_ok(),
        }
    }
}

/// One sync off the async threads (git2 and file reads block).
pub async fn sync(source: &Arc<Source>, store: &Arc<RevisionStore>) -> bool {
    let (source, store) = (source.clone(), store.clone());
    tokio::task::spawn_blocking(move || source.sync(&store))
        .await
        .unwrap_or(false)
}

/// The first sync. For git, an unreachable remote, or a tip that does not compile, falls back
/// to the last good revision.
pub async fn initial_sync(source: &Arc<Source>, store: &Arc<RevisionStore>) -> bool {
    let reached = sync(source, store).await;
    if store.current().is_some() {
        return reached;
    }
    if let Source::Git(git) = source.as_ref() {
        let (source, store) = (source.clone(), store.clone());
        let cached = tokio::task::spawn_blocking(move || match source.as_ref() {
            Source::Git(git) => git.load_cached(&store),
            Source::Dir(_) => unreachable!("checked above"),
        })
        .await;
        match cached {
            Ok(Ok(Submitted::Applied | Submitted::Unchanged)) => {}
            Ok(Ok(Submitted::Rejected(_))) => {
                tracing::error!("the cached revision does not compile")
            }
            Ok(Err(e)) => {
                tracing::error!(source = git.describe(), error = %e, "no revision: the tip cannot be served and nothing is cached")
            }
            Err(e) => tracing::error!(error = %e, "loading the cached revision panicked"),
        }
    }
    reached
}

/// Runs until `shutdown`: syncs on every trigger, watcher event and poll interval.
pub async fn run(
    source: Arc<Source>,
    store: Arc<RevisionStore>,
    trigger: Arc<Notify>,
    poll_interval: Duration,
    mut healthy: bool,
    shutdown: CancellationToken,
) {
    let _watcher: Option<Watcher> = match source.as_ref() {
        Source::Dir(dir) => match dir.watch(trigger.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the directory: polling only");
                None
            }
        },
        Source::Git(_) => None,
    };
    let mut failures: u32 = if healthy { 0 } else { 1 };
    loop {
        let wait = if failures == 0 {
            jittered(poll_interval)
        } else {
            backoff(failures, poll_interval)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = trigger.notified() => {}
            _ = shutdown.cancelled() => break,
        }
        healthy = sync(&source, &store).await;
        failures = if healthy {
            0
        } else {
            failures.saturating_add(1)
        };
    }
}

/// The poll interval ± 10 %, so replicas do not fetch in lockstep.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 10;
    let offset = fastrand::u64(0..=spread * 2);
    Duration::from_millis((interval.as_millis() as u64).saturating_sub(spread) + offset)
}

/// 1 s, 2 s, 4 s … up to the poll interval, with jitter.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(10));
    jittered(base.min(interval).max(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(30));
            assert!(
                d >= Duration::from_secs(27) && d <= Duration::from_secs(33),
                "{d:?}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_is_capped_by_the_poll_interval() {
        assert!(backoff(1, Duration::from_secs(30)) <= Duration::from_millis(1100));
        assert!(backoff(4, Duration::from_secs(30)) >= Duration::from_millis(7200));
        assert!(backoff(20, Duration::from_secs(30)) <= Duration::from_secs(33));
    }
}
