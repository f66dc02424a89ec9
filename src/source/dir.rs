//! A directory as the config source: the dev loop and the default. Its revision id is a digest
//! of its content, so an unchanged directory is an unchanged revision; a debounced watcher turns
//! an editor's atomic save or a burst of changes into one reload.

use super::{RevisionStore, Submitted};
use crate::repo::Snapshot;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Changes closer together than this are one change.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

pub struct DirSource {
    path: PathBuf,
}

pub type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

impl DirSource {
    pub fn new(path: impl Into<PathBuf>) -> DirSource {
        DirSource { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the directory and offers it to the store.
    pub fn sync(&self, store: &RevisionStore) -> Result<Submitted, String> {
        match Snapshot::from_dir(&self.path) {
            Ok(snapshot) => {
                let id = format!("dir:{}", &snapshot.digest()[..12]);
                Ok(store.submit(
                    &snapshot,
                    &id,
                    &self.path.display().to_string(),
                    false,
                    None,
                ))
            }
            Err(e) => {
                let error = format!("cannot read {}: {e}", self.path.display());
                store.sync_failed(error.clone());
                Err(error)
            }
        }
    }

    /// Watches the directory (recursively, files deleted and re-created included) and wakes
    /// `trigger` once per debounced burst of changes. The watcher stops when dropped.
    pub fn watch(&self, trigger: Arc<Notify>) -> notify::Result<Watcher> {
        let mut debouncer =
            new_debouncer(
                DEBOUNCE,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) if !events.is_empty() => trigger.notify_one(),
                    Ok(_) => {}
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "directory watcher");
                        }
                        trigger.notify_one();
                    }
                },
            )?;
        debouncer.watch(&self.path, RecursiveMode::Recursive)?;
        Ok(debouncer)
    }
}
