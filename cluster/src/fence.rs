//! The replay rule that keeps a stale owner's late events from counting (pure).
//!
//! Leases stop a stale owner from *acknowledging*; they cannot stop a write it had already
//! handed to the pipeline from landing late (the test broker has no transactions, so no
//! producer fencing). The cluster therefore fences in the log itself: a new owner, once
//! its grant is active and before it serves, appends a fence marker `(shard, epoch)` to
//! every pipeline partition, then reads each partition up to its marker. Every reader of
//! a partition (the new owner's catch-up, the sink, recovery) applies [`EpochFence`]:
//! after a marker for shard S at epoch E, events of S stamped with an epoch below E are
//! dropped. Events before the marker are kept whatever their epoch.
//!
//! Why no acknowledged write is dropped: an owner acknowledges only durable events and
//! only while its grant is valid; it stopped before the new owner activated, and the
//! marker is appended after activation, so every event it acknowledged sits before the
//! marker in its partition. Why live state equals replay: the new owner's state is built
//! from the same partitions with the same rule, up to its own marker.
//!
//! Among admitted events of one entity, [`EventStamp`] orders by owner epoch, then
//! version: a later owner's write wins over every write of an earlier owner, at an equal
//! *or higher* version, so a stale owner's late event never ties with nor overrides the
//! current owner's. This is the rule the engine's `ShardState::apply` implements. It
//! needs an entity's epochs to grow with time, which holds while an entity stays on its
//! shard (grant revisions of a shard only grow); a shard-count migration in cluster mode
//! must re-grant every target shard after its cutover so that the epochs there exceed
//! every epoch of the source shards (etcd revisions are one sequence). Migrations are
//! refused in cluster mode until that is built.

use std::collections::BTreeMap;

use crate::ShardId;
use crate::grants::OwnerEpoch;

/// What the fence says of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceVerdict {
    /// Apply it.
    Admit,
    /// Drop it: written by an owner whose grant a later owner fenced off.
    Stale {
        /// The fence epoch it is below.
        floor: OwnerEpoch,
    },
}

/// Per-partition fence state, fed in offset order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochFence {
    floor: BTreeMap<ShardId, OwnerEpoch>,
}

impl EpochFence {
    /// No fence seen yet.
    pub fn new() -> Self {
        EpochFence::default()
    }

    /// A fence marker for `shard` at `epoch` was read from the partition.
    pub fn observe_marker(&mut self, shard: ShardId, epoch: OwnerEpoch) {
        let floor = self.floor.entry(shard).or_insert(epoch);
        *floor = (*floor).max(epoch);
    }

    /// The verdict on an event of `shard` stamped `epoch`, read after every marker so far.
    pub fn check(&self, shard: ShardId, epoch: OwnerEpoch) -> FenceVerdict {
        match self.floor.get(&shard) {
            Some(&floor) if epoch < floor => FenceVerdict::Stale { floor },
            _ => FenceVerdict::Admit,
        }
    }
}

/// The order of two admitted events of one entity: owner epoch first, then version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventStamp {
    /// The owner epoch the event was written under.
    pub epoch: OwnerEpoch,
    /// The entity version after the change.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn events_below_a_seen_marker_are_stale() {
        let mut f = EpochFence::new();
        assert_eq!(f.check(1, OwnerEpoch(5)), FenceVerdict::Admit);
        f.observe_marker(1, OwnerEpoch(9));
        assert_eq!(
            f.check(1, OwnerEpoch(5)),
            FenceVerdict::Stale {
                floor: OwnerEpoch(9)
            }
        );
        assert_eq!(f.check(1, OwnerEpoch(9)), FenceVerdict::Admit);
        assert_eq!(f.check(2, OwnerEpoch(5)), FenceVerdict::Admit);
        // An older marker read later (a replayed one) never lowers the floor.
        f.observe_marker(1, OwnerEpoch(7));
        assert!(matches!(
            f.check(1, OwnerEpoch(8)),
            FenceVerdict::Stale { .. }
        ));
    }

    #[test]
    fn a_later_owner_wins_a_version_tie() {
        let stale = EventStamp {
            version: 6,
            epoch: OwnerEpoch(10),
        };
        let current = EventStamp {
            version: 6,
            epoch: OwnerEpoch(14),
        };
        assert!(current > stale);
        // Epoch first: a stale owner's late event at a higher version still loses.
        let late = EventStamp {
            version: 7,
            epoch: OwnerEpoch(10),
        };
        assert!(current > late);
    }

    proptest! {
        /// One partition: owner A (epoch a) writes, B (epoch b > a) writes its marker,
        /// then both keep writing. Every event A wrote before the marker survives; none
        /// of A's after it does; all of B's do.
        #[test]
        fn marker_splits_the_stale_owner_history(
            log in prop::collection::vec(any::<bool>(), 0..40),
            marker_at in 0usize..40,
        ) {
            let (a, b) = (OwnerEpoch(3), OwnerEpoch(8));
            let marker_at = marker_at.min(log.len());
            let mut f = EpochFence::new();
            for (i, from_a) in log.iter().enumerate() {
                if i == marker_at {
                    f.observe_marker(0, b);
                }
                let epoch = if *from_a || i < marker_at { a } else { b };
                let admitted = f.check(0, epoch) == FenceVerdict::Admit;
                prop_assert_eq!(admitted, i < marker_at || epoch == b);
            }
        }
    }
}
