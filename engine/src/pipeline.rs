use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::Event;

/// Position of a record within one pipeline partition.
pub type Offset = u64;

/// An event read back from the pipeline, with where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Partition the event was appended to.
    pub partition: u32,
    /// Its offset within that partition.
    pub offset: Offset,
    /// The event.
    pub event: Event,
}

/// The pipeline partition an event belongs to.
///
/// The partition count is fixed when a deployment is created and shards come and
/// go, so events map to partitions by their key hash, never by shard. The hash
/// goes through the MurmurHash3 finalizer first (FNV-1a's high bits are poorly
/// mixed), then the high 32 bits feed a multiply-shift range reduction
/// (Lemire), which is uniform for any partition count and cheaper than `%`.
/// Changing this function moves every deployment's events: it never changes.
pub fn partition_for(key_hash: u64, partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    (((crate::routing::fmix64(key_hash) >> 32) * u64::from(partitions)) >> 32) as u32
}

/// The durable, partitioned, ordered log that floe uses as its write-ahead log.
///
/// Contract (checked by the conformance suite in `floe-emitter`, which every
/// backend runs):
/// - `append` returns only once every event of the batch is durable, and
///   returns each event's offset in input order. Events go to the partition
///   [`partition_for`] names and keep their input order within it.
/// - Offsets in a partition start at 0 and grow by one per event.
/// - On error, any subset of the batch may be durable: the caller must treat the
///   outcome as unknown and retry with the same idempotency keys.
/// - Readers see only durable events, in offset order.
#[async_trait]
pub trait Pipeline: Send + Sync + fmt::Debug + 'static {
    /// The number of partitions, fixed when the pipeline was created.
    fn partitions(&self) -> u32;

    /// Appends events durably, returning their offsets in input order.
    async fn append(&self, events: &[Event]) -> Result<Vec<Offset>>;

    /// Reads up to `max` events of `partition` starting at offset `from`.
    ///
    /// When nothing is available at `from`, waits up to `wait` for an append
    /// before returning an empty vector. Reading below the low watermark is an
    /// error: those events were deleted by retention.
    async fn read(
        &self,
        partition: u32,
        from: Offset,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>>;

    /// The offset the next appended event of `partition` will get.
    async fn high_watermark(&self, partition: u32) -> Result<Offset>;

    /// The lowest offset of `partition` that can still be read.
    async fn low_watermark(&self, partition: u32) -> Result<Offset>;

    /// Retention: allows deletion of events of `partition` below `offset`.
    /// Backends delete whole segments only, so fewer events may go; returns the
    /// new low watermark.
    async fn delete_before(&self, partition: u32, offset: Offset) -> Result<Offset>;

    /// Flushes and releases resources. Appends after `close` fail.
    async fn close(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_covers_every_partition_evenly() {
        let partitions = 16;
        let mut counts = vec![0u32; partitions as usize];
        for i in 0..160_000u64 {
            let hash = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            counts[partition_for(hash, partitions) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "uneven partition count {c}");
        }
        assert_eq!(partition_for(0, 7), 0);
        // Fixed forever: data placement depends on it.
        let pinned: Vec<u32> = [1u64, 2, 3, 1 << 40, u64::MAX]
            .iter()
            .map(|h| partition_for(*h, 16))
            .collect();
        assert_eq!(pinned, PINNED);
    }

    const PINNED: [u32; 5] = [11, 3, 0, 14, 6];

    #[test]
    fn partition_for_spreads_fnv_hashes() {
        let mut counts = vec![0u32; 16];
        for i in 0..16_000 {
            let hash = crate::HashFunction::Fnv1a.hash(format!("order-{i:06}").as_bytes());
            counts[partition_for(hash, 16) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven partition count {c}");
        }
    }
}
