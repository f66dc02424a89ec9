//! Which uids each live WebSocket connection speaks for (a proxy may speak for several), so that
//! a closing connection releases every one of them, uids it took over through a new instance
//! uid included, and a connection cannot speak for more than [`MAX_AGENTS_PER_CONNECTION`].

use super::limits::MAX_AGENTS_PER_CONNECTION;
use crate::opamp::session::ConnectionId;
use crate::opamp::uid::InstanceUid;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct ConnectionIndex {
    uids: Mutex<HashMap<ConnectionId, Vec<InstanceUid>>>,
}

impl ConnectionIndex {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnectionId, Vec<InstanceUid>>> {
        self.uids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `connection` may speak for `uid`: those it already does, and new ones up to the
    /// limit (which it then does).
    pub fn admit(&self, connection: ConnectionId, uid: InstanceUid) -> bool {
        let mut index = self.lock();
        let uids = index.entry(connection).or_default();
        if uids.contains(&uid) {
            return true;
        }
        if uids.len() >= MAX_AGENTS_PER_CONNECTION {
            return false;
        }
        uids.push(uid);
        true
    }

    /// The uids `connection` speaks for.
    pub fn agents(&self, connection: ConnectionId) -> Vec<InstanceUid> {
        self.lock().get(&connection).cloned().unwrap_or_default()
    }

    /// An agent on `connection` took a new uid.
    pub fn rename(&self, connection: ConnectionId, old: InstanceUid, new: InstanceUid) {
        if let Some(uid) = self
            .lock()
            .get_mut(&connection)
            .and_then(|uids| uids.iter_mut().find(|u| **u == old))
        {
            *uid = new;
        }
    }

    /// `connection` closed: the uids it spoke for.
    pub fn close(&self, connection: ConnectionId) -> Vec<InstanceUid> {
        self.lock().remove(&connection).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_speaks_for_a_bounded_set_released_whole() {
        let index = ConnectionIndex::default();
        let uids: Vec<InstanceUid> = (0..=MAX_AGENTS_PER_CONNECTION)
            .map(|_| InstanceUid::new_v7())
            .collect();
        for uid in &uids[..MAX_AGENTS_PER_CONNECTION] {
            assert!(index.admit(1, *uid));
        }
        assert!(!index.admit(1, uids[MAX_AGENTS_PER_CONNECTION]));
        assert!(index.admit(1, uids[0]), "one it already speaks for");
        let renamed = InstanceUid::new_v7();
        index.rename(1, uids[3], renamed);
        let closed = index.close(1);
        assert_eq!(closed.len(), MAX_AGENTS_PER_CONNECTION);
        assert!(closed.contains(&renamed) && !closed.contains(&uids[3]));
        assert!(index.agents(1).is_empty());
    }
}
