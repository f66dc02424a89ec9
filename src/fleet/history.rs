//! Which configs an agent ran: one entry per config hash it reported APPLIED, from then until
//! it applied another, with the revision whose render produced it (when the server knew).

use super::record::AgentRecord;
use crate::store::{HistoryEntry, HISTORY_PER_AGENT};
use std::time::SystemTime;

/// The agent reported `hash` APPLIED; `revision` rendered it, if known. A hash it already runs
/// changes nothing.
pub fn applied(rec: &mut AgentRecord, hash: &[u8], revision: Option<&str>, now: SystemTime) {
    if hash.is_empty() {
        return;
    }
    let hash = hex::encode(hash);
    if let Some(last) = rec.history.back_mut() {
        if last.config_hash == hash && last.left_at.is_none() {
            if last.revision.is_none() && revision.is_some() {
                last.revision = revision.map(str::to_owned);
                rec.history_changed = true;
            }
            return;
        }
        if last.left_at.is_none() {
            last.left_at = Some(now);
        }
    }
    rec.history.push_back(HistoryEntry {
        revision: revision.map(str::to_owned),
        config_hash: hash,
        applied_at: now,
        left_at: None,
    });
    while rec.history.len() > HISTORY_PER_AGENT {
        rec.history.pop_front();
    }
    rec.history_changed = true;
}

/// The config the agent runs now, from its history.
pub fn current(rec: &AgentRecord) -> Option<&HistoryEntry> {
    rec.history.back().filter(|h| h.left_at.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::record::Transport;
    use crate::opamp::uid::InstanceUid;
    use std::time::Duration;

    #[test]
    fn one_entry_per_config_applied_bounded_and_closed_by_the_next() {
        let uid = InstanceUid::new_v7();
        let mut rec = AgentRecord::new(uid, bytes::Bytes::new(), Transport::Ws);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        applied(&mut rec, &[1; 32], None, t0);
        applied(&mut rec, &[1; 32], Some("r1"), t0 + Duration::from_secs(1));
        assert_eq!(rec.history.len(), 1);
        assert_eq!(rec.history[0].revision.as_deref(), Some("r1"));
        applied(&mut rec, &[2; 32], Some("r2"), t0 + Duration::from_secs(2));
        assert_eq!(rec.history[0].left_at, Some(t0 + Duration::from_secs(2)));
        assert_eq!(current(&rec).unwrap().revision.as_deref(), Some("r2"));
        for i in 0..(HISTORY_PER_AGENT as u8 + 5) {
            applied(&mut rec, &[i + 10; 32], None, t0);
        }
        assert_eq!(rec.history.len(), HISTORY_PER_AGENT);
    }
}
