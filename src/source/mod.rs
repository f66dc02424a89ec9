//! Where revisions come from and which one is current. A source produces snapshots; the store
//! compiles each one and publishes it only when it compiles (all or nothing), remembering the
//! last rejected one with its diagnostics.

pub mod commit;
pub mod dir;
pub mod git;
pub mod runner;

use crate::audit::{AuditKind, AuditLog};
use crate::diagnostics::Diagnostic;
use crate::metrics::Metrics;
use crate::repo::{compile, CompileOptions, Revision, Snapshot};
use commit::CommitMeta;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// The current revision, as the store publishes it.
pub type RevisionWatch = watch::Receiver<Option<Arc<Revision>>>;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CurrentRevision {
    pub id: String,
    /// Where it came from: a directory path or a git URL and branch.
    pub source: String,
    #[serde(serialize_with = "crate::diagnostics::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub loaded_at: SystemTime,
    /// True when served from the local cache because the source was unreachable.
    pub from_cache: bool,
    /// The commit's subject, author, time and forge link (git mode).
    pub commit: Option<CommitMeta>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastSync {
    #[serde(serialize_with = "crate::diagnostics::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: SystemTime,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RejectedRevision {
    pub id: String,
    #[serde(serialize_with = "crate::diagnostics::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: SystemTime,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SourceStatus {
    pub current: Option<CurrentRevision>,
    pub last_sync: Option<LastSync>,
    pub rejected: Option<RejectedRevision>,
}

/// The current revision and what happened to the last ones submitted.
pub struct RevisionStore {
    sender: watch::Sender<Option<Arc<Revision>>>,
    status: Mutex<SourceStatus>,
    options: CompileOptions,
    /// Revisions applied and rejected since start.
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
}

/// What became of a snapshot submitted to the store.
#[derive(Debug, PartialEq)]
pub enum Submitted {
    /// It compiled and is now current.
    Applied,
    /// It is the revision already current.
    Unchanged,
    /// It did not compile; the current revision stays.
    Rejected(Vec<Diagnostic>),
}

impl RevisionStore {
    pub fn new(
        options: CompileOptions,
        metrics: Arc<Metrics>,
        audit: Arc<AuditLog>,
    ) -> (Arc<RevisionStore>, RevisionWatch) {
        let (sender, receiver) = watch::channel(None);
        let store = RevisionStore {
            sender,
            status: Mutex::default(),
            options,
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            metrics,
            audit,
        };
        (Arc::new(store), receiver)
    }

    pub fn current(&self) -> Option<Arc<Revision>> {
        self.sender.borrow().clone()
    }

    pub fn status(&self) -> SourceStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compiles `snapshot` and makes it current if it compiles. `commit` describes a git
    /// revision for the API; a directory has none.
    pub fn submit(
        &self,
        snapshot: &Snapshot,
        id: &str,
        source: &str,
        from_cache: bool,
        commit: Option<CommitMeta>,
    ) -> Submitted {
        let now = SystemTime::now();
        // A revision from the cache is no successful sync: the failure stays reported.
        if !from_cache {
            self.lock().last_sync = Some(LastSync {
                at: now,
                error: None,
            });
            self.metrics.synced_now();
        }
        if self.current().is_some_and(|r| r.id == id) {
            let mut status = self.lock();
            if let Some(current) = status.current.as_mut() {
                current.from_cache &= from_cache;
            }
            // The source is back at the content being served (a reverted directory, a branch
            // force-pushed back): a rejection of something else is no longer current.
            status.rejected = None;
            return Submitted::Unchanged;
        }
        // A snapshot already rejected is rejected once: later polls cost a comparison, not a
        // compile, and leave the audit trail and the failure count alone.
        if let Some(rejected) = self.lock().rejected.as_ref().filter(|r| r.id == id) {
            return Submitted::Rejected(rejected.diagnostics.clone());
        }
        let output = compile(snapshot, id, &self.options);
        let mut status = self.lock();
        match output.revision {
            Some(revision) => {
                status.current = Some(CurrentRevision {
                    id: id.to_owned(),
                    source: source.to_owned(),
                    loaded_at: now,
                    from_cache,
                    commit,
                });
                // A revision accepted after a rejected one supersedes it: the rejection is history
                // (it stays in the audit trail), not a current problem. The cached last good
                // revision is older than whatever was rejected, so it supersedes nothing.
                if !from_cache {
                    status.rejected = None;
                }
                drop(status);
                self.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(revision = id, source, from_cache, "revision applied");
                self.metrics.set_revision(id);
                self.audit.record(AuditKind::RevisionApplied {
                    revision: id.to_owned(),
                    source: source.to_owned(),
                    from_cache,
                });
                self.sender.send_replace(Some(revision));
                Submitted::Applied
            }
            None => {
                let diagnostics: Vec<Diagnostic> = output
                    .diagnostics
                    .into_iter()
                    .filter(Diagnostic::is_error)
                    .collect();
                for d in &diagnostics {
                    tracing::warn!(revision = id, "{}", d.human());
                }
                tracing::warn!(
                    revision = id,
                    errors = diagnostics.len(),
                    "revision rejected: keeping the current one"
                );
                status.rejected = Some(RejectedRevision {
                    id: id.to_owned(),
                    at: now,
                    diagnostics: diagnostics.clone(),
                });
                self.rejected.fetch_add(1, Ordering::Relaxed);
                self.metrics.compile_failures.inc();
                self.audit.record(AuditKind::RevisionRejected {
                    revision: id.to_owned(),
                    errors: diagnostics.len(),
                    first_error: diagnostics
                        .first()
                        .map(Diagnostic::human)
                        .unwrap_or_default(),
                });
                Submitted::Rejected(diagnostics)
            }
        }
    }

    /// The source could not be read (an unreachable remote, say).
    pub fn sync_failed(&self, error: impl Into<String>) {
        let error = error.into();
        tracing::warn!(%error, "sync failed");
        self.metrics.sync_failures.inc();
        self.lock().last_sync = Some(LastSync {
            at: SystemTime::now(),
            error: Some(error),
        });
    }
}
