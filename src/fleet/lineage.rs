//! Which recent revision rendered which config hash, so that an agent shows the commit its
//! running config came from, not the one the server serves now. The current revision answers
//! from its own validation memo; revisions it replaced are kept as hash sets, bounded in count
//! and size, so a long-running server remembers the last few commits and nothing older.

use crate::repo::hash::ConfigHash;
use crate::repo::Revision;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Revisions remembered besides the current one.
pub const RETAINED_REVISIONS: usize = 16;
/// Hashes remembered per revision (distinct configs, not agents).
pub const MAX_HASHES_PER_REVISION: usize = 65_536;

struct Retired {
    id: String,
    hashes: HashSet<ConfigHash>,
}

#[derive(Default)]
pub struct Lineage {
    /// Newest first.
    retired: Mutex<VecDeque<Retired>>,
}

impl Lineage {
    /// `revision` is no longer served: remember the hashes its renders produced.
    pub fn retire(&self, revision: &Revision) {
        let hashes: HashSet<ConfigHash> = revision
            .valid_hashes()
            .into_iter()
            .take(MAX_HASHES_PER_REVISION)
            .collect();
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        // A revision served again (a revert) keeps one entry, its newest.
        retired.retain(|r| r.id != revision.id);
        retired.push_front(Retired {
            id: revision.id.clone(),
            hashes,
        });
        retired.truncate(RETAINED_REVISIONS);
    }

    /// The newest revision whose renders produced `hash`: the current one first, then those it
    /// replaced. None when no remembered revision did.
    pub fn revision_of(&self, current: Option<&Revision>, hash: &ConfigHash) -> Option<String> {
        if let Some(current) = current.filter(|r| r.rendered(hash)) {
            return Some(current.id.clone());
        }
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.hashes.contains(hash))
            .map(|r| r.id.clone())
    }
}
