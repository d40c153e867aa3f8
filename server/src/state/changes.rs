//! Which users changed in batches that may not be durable yet: lets a
//! reader wait for the journal sync only when its answer depends on them.
//!
//! Why: the state holds batches whose journal sync is still running
//! ([`crate::durable::writer`]), and nothing read from them may be answered before
//! they are durable. Waiting for every batch in flight made almost every
//! LIST_CONTENT under load wait for a sync that had nothing to do with the
//! users it lists. A LIST_CONTENT depends on two users; if
//! neither changed in a batch that is not yet durable, it answers at once.
//!
//! Users are kept as hashes: a collision only makes a reader wait for a
//! sync it did not need, never answer early.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap};

/// Entries kept before the first pruning; pruning again waits until the
/// map doubled since the last one, so each change is pruned O(1) times.
const PRUNE_FROM: usize = 1024;

/// The last batch that changed each recently changed user.
#[derive(Debug, Clone)]
pub struct RecentChanges {
    /// Hash of the user name -> sequence number of the last batch that
    /// changed the user.
    by_user: HashMap<u64, u64>,
    hasher: DefaultHashBuilder,
    /// Size at which to prune next.
    prune_at: usize,
}

impl Default for RecentChanges {
    fn default() -> Self {
        RecentChanges {
            by_user: HashMap::new(),
            hasher: DefaultHashBuilder::default(),
            prune_at: PRUNE_FROM,
        }
    }
}

impl RecentChanges {
    /// Records that batch `seq` changed `user`, and forgets users whose
    /// last change is durable (every batch up to `durable` is) once the
    /// map has grown enough to make that worth a pass.
    pub fn note(&mut self, user: &str, seq: u64, durable: u64) {
        let key = self.hasher.hash_one(user);
        let last = self.by_user.entry(key).or_insert(0);
        *last = (*last).max(seq);
        if self.by_user.len() >= self.prune_at {
            self.by_user.retain(|_, last| *last > durable);
            self.prune_at = (2 * self.by_user.len()).max(PRUNE_FROM);
        }
    }

    /// The last batch that changed `user`, or 0 if none since the last
    /// pruning (then every change of it is durable).
    pub fn last(&self, user: &str) -> u64 {
        let key = self.hasher.hash_one(user);
        self.by_user.get(&key).copied().unwrap_or(0)
    }

    /// Users tracked (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_batch_per_user() {
        let mut changes = RecentChanges::default();
        changes.note("al", 3, 0);
        changes.note("bo", 5, 0);
        changes.note("al", 7, 0);
        assert_eq!(changes.last("al"), 7);
        assert_eq!(changes.last("bo"), 5);
        assert_eq!(changes.last("cy"), 0);
    }

    #[test]
    fn prunes_only_durable_changes_and_stays_bounded() {
        let mut changes = RecentChanges::default();
        for i in 0..10 * PRUNE_FROM as u64 {
            // Batch i is durable once i + 2 is staged: two in flight.
            changes.note(&format!("u{i}"), i + 1, i.saturating_sub(1));
            assert!(changes.len() <= 2 * PRUNE_FROM, "{}", changes.len());
        }
        let last = 10 * PRUNE_FROM as u64;
        // The changes not yet durable are all still there.
        for i in last - 2..last {
            assert_eq!(changes.last(&format!("u{i}")), i + 1);
        }
    }

    #[test]
    fn a_pruned_user_changed_again_is_tracked_again() {
        let mut changes = RecentChanges::default();
        changes.note("al", 1, 0);
        for i in 0..PRUNE_FROM as u64 {
            changes.note(&format!("u{i}"), 2, 1);
        }
        assert_eq!(changes.last("al"), 0, "batch 1 is durable: pruned");
        changes.note("al", 9, 1);
        assert_eq!(changes.last("al"), 9);
    }
}
