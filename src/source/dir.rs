//! A directory as the config source: the dev loop and the default. Its revision id is a digest
//! of its content, so an unchanged directory is an unchanged revision.

use super::{Offered, RevisionStore};
use crate::repo::Snapshot;
use std::path::{Path, PathBuf};

pub struct DirSource {
    path: PathBuf,
}

impl DirSource {
    pub fn new(path: impl Into<PathBuf>) -> DirSource {
        DirSource { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the directory and offers it to the store.
    pub fn sync(&self, store: &RevisionStore) -> Offered {
        match Snapshot::from_dir(&self.path) {
            Ok(snapshot) => {
                let id = format!("dir:{}", &snapshot.digest()[..12]);
                store.offer(&snapshot, &id, &self.path.display().to_string(), false)
            }
            Err(e) => {
                store.sync_failed(format!("cannot read {}: {e}", self.path.display()));
                Offered::Unchanged
            }
        }
    }
}
