//! Encoding one `append`: events to frames grouped by partition, and the
//! offsets the writer assigns back to the events.

use floe_engine::{Event, Offset, encoded_len, partition_for};

use super::frame;
use super::writer::Chunk;
use crate::error::Result;

/// How one `append`'s events were grouped by partition, to map the first
/// offset of each chunk back to every event's offset.
pub(super) struct Batch {
    /// Event indexes, grouped by partition in partition order, input order
    /// kept within a partition.
    order: Vec<u32>,
    /// For each chunk, its range in `order`.
    spans: Vec<(usize, usize)>,
}

impl Batch {
    /// Encodes `events` into `frames` (cleared first), grouped by partition.
    pub(super) fn encode(
        events: &[Event],
        partitions: u32,
        mut frames: Vec<u8>,
    ) -> Result<(Batch, Vec<u8>, Vec<Chunk>)> {
        let of: Vec<u32> = events
            .iter()
            .map(|e| partition_for(e.key_hash, partitions))
            .collect();
        // Counting sort by partition: stable, so input order holds per partition.
        let mut starts = vec![0usize; partitions as usize + 1];
        for &p in &of {
            starts[p as usize + 1] += 1;
        }
        for p in 0..partitions as usize {
            starts[p + 1] += starts[p];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; events.len()];
        for (i, &p) in of.iter().enumerate() {
            order[next[p as usize]] = i as u32;
            next[p as usize] += 1;
        }
        frames.clear();
        frames.reserve(
            events
                .iter()
                .map(|e| frame::HEADER_LEN + encoded_len(e))
                .sum(),
        );
        let mut chunks = Vec::new();
        let mut spans = Vec::new();
        for p in 0..partitions {
            let span = (starts[p as usize], starts[p as usize + 1]);
            if span.0 == span.1 {
                continue;
            }
            let start = frames.len();
            for &i in &order[span.0..span.1] {
                frame::push_frame(&mut frames, &events[i as usize])?;
            }
            chunks.push(Chunk {
                partition: p,
                range: start..frames.len(),
            });
            spans.push(span);
        }
        Ok((Batch { order, spans }, frames, chunks))
    }

    pub(super) fn offsets(&self, firsts: &[Offset]) -> Vec<Offset> {
        let mut offsets = vec![0; self.order.len()];
        for (&(start, end), &first) in self.spans.iter().zip(firsts) {
            for (rank, &i) in self.order[start..end].iter().enumerate() {
                offsets[i as usize] = first + rank as Offset;
            }
        }
        offsets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{key_hash_in, sample_event};

    #[test]
    fn groups_by_partition_and_maps_offsets_back() {
        let partitions = 3;
        let order = [2, 0, 2, 1, 0, 2];
        let events: Vec<Event> = order
            .iter()
            .enumerate()
            .map(|(seq, &p)| sample_event(seq as u64, key_hash_in(p, partitions, seq as u64)))
            .collect();
        let (batch, frames, chunks) = Batch::encode(&events, partitions, vec![1, 2, 3]).unwrap();
        let parts: Vec<u32> = chunks.iter().map(|c| c.partition).collect();
        assert_eq!(parts, [0, 1, 2]);
        assert_eq!(chunks.last().unwrap().range.end, frames.len());
        assert_eq!(chunks[0].range.start, 0, "the recycled buffer was cleared");
        // Partition 0 continues at 10, 1 at 20, 2 at 30.
        assert_eq!(batch.offsets(&[10, 20, 30]), [30, 10, 31, 20, 11, 32]);
    }
}
