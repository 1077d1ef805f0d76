//! Per-shard slots that grow with the topology without a lock on the hot
//! path and without ever moving a slot another thread is using.

use std::sync::OnceLock;

/// Segment `k` holds shards `2^k - 1 .. 2^(k+1) - 1`; 33 segments cover
/// every `u32` shard id.
const SEGMENTS: usize = 33;

/// One `T` per shard id, allocated a power-of-two segment at a time on first
/// use. Segments never move once allocated, so a reference handed out stays
/// valid while the topology grows.
pub(crate) struct ShardSlots<T> {
    segments: [OnceLock<Box<[T]>>; SEGMENTS],
}

impl<T: Default> ShardSlots<T> {
    pub(crate) fn new() -> Self {
        ShardSlots {
            segments: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The slot of `shard`, if its segment was allocated.
    pub(crate) fn get(&self, shard: u32) -> Option<&T> {
        let (segment, offset) = locate(shard);
        self.segments[segment].get().map(|slots| &slots[offset])
    }

    /// The slot of `shard`, allocating its segment if needed.
    pub(crate) fn get_or_init(&self, shard: u32) -> &T {
        let (segment, offset) = locate(shard);
        let slots = self.segments[segment]
            .get_or_init(|| (0..1usize << segment).map(|_| T::default()).collect());
        &slots[offset]
    }
}

impl<T> std::fmt::Debug for ShardSlots<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let allocated = self.segments.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("ShardSlots")
            .field("segments", &allocated)
            .finish()
    }
}

/// Segment and offset of a shard's slot.
#[inline]
fn locate(shard: u32) -> (usize, usize) {
    let n = u64::from(shard) + 1;
    let segment = 63 - n.leading_zeros() as usize;
    (segment, (n - (1 << segment)) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    #[test]
    fn locate_tiles_the_shard_ids() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1), (1, 0));
        assert_eq!(locate(2), (1, 1));
        assert_eq!(locate(3), (2, 0));
        assert_eq!(locate(6), (2, 3));
        assert_eq!(locate(7), (3, 0));
        assert_eq!(locate(u32::MAX - 1), (31, (1 << 31) - 1));
        assert_eq!(locate(u32::MAX), (32, 0));
    }

    #[test]
    fn slots_grow_and_keep_their_values() {
        let slots: ShardSlots<AtomicU64> = ShardSlots::new();
        assert!(slots.get(5).is_none());
        slots.get_or_init(5).store(7, Relaxed);
        let kept = slots.get(5).unwrap();
        slots.get_or_init(1000).store(1, Relaxed);
        assert_eq!(kept.load(Relaxed), 7);
        assert_eq!(slots.get(4).unwrap().load(Relaxed), 0, "same segment as 5");
        assert!(slots.get(20).is_none());
    }
}
