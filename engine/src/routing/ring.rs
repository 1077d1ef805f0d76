//! The consistent-hash ring.
//!
//! Shard `s` owns `v` points; point `i` sits at `mix(hash("shard-{s}#vn-{i}"))`
//! and a key sits at `mix(key_hash)`, where `hash` is the deployment's
//! [`HashFunction`] and `mix` the MurmurHash3 finalizer (a bijection: it
//! changes nothing for a well-mixed hash, and it keeps FNV-1a, whose high bits
//! barely depend on the last bytes of the input, from bunching all of a
//! shard's points together). A key belongs to the first point at or after it,
//! wrapping around. Points of existing shards never move when a shard is
//! added, so only keys that land on the new shard's points move.
//!
//! Lookup is O(1) expected: besides the sorted points, a table indexed by the
//! top bits of the position gives the first point of each slice of the ring,
//! leaving a search over about one point.

use std::fmt::Write as _;

use super::hash::{HashFunction, fmix64};

/// A built ring: sorted points, their owners, and the slice index.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Point positions, ascending.
    points: Vec<u64>,
    /// `owners[i]` owns `points[i]`.
    owners: Vec<u32>,
    /// `index[p]` is the first point at or after `p << shift`; one extra entry
    /// at the end holds `points.len()`.
    index: Vec<u32>,
    /// `64 - index bits`.
    shift: u32,
}

/// Upper bound on the index size (2^20 slices, 4 MiB).
const MAX_INDEX_BITS: u32 = 20;

impl Ring {
    /// Builds the ring of `shard_count` shards with `virtual_nodes` points each.
    /// Both must be at least 1 (the topology validates that).
    pub(crate) fn new(shard_count: u32, virtual_nodes: u32, hash: HashFunction) -> Self {
        let total = shard_count as usize * virtual_nodes as usize;
        let mut placed: Vec<(u64, u32)> = Vec::with_capacity(total);
        let mut label = String::with_capacity(32);
        for shard in 0..shard_count {
            for vn in 0..virtual_nodes {
                label.clear();
                // Writing to a String cannot fail.
                let _ = write!(label, "shard-{shard}#vn-{vn}");
                placed.push((fmix64(hash.hash(label.as_bytes())), shard));
            }
        }
        // Ties (two points at one position) go to the lower shard id, so the
        // order never depends on insertion order.
        placed.sort_unstable();
        let (points, owners): (Vec<u64>, Vec<u32>) = placed.into_iter().unzip();

        // About two slices per point: each slice holds 0.5 points on average.
        let bits = (usize::BITS - (2 * total).max(2).leading_zeros()).clamp(1, MAX_INDEX_BITS);
        let shift = 64 - bits;
        let slices = 1usize << bits;
        let mut index = Vec::with_capacity(slices + 1);
        let mut next = 0usize;
        for slice in 0..slices as u64 {
            let lower = slice << shift;
            while next < points.len() && points[next] < lower {
                next += 1;
            }
            index.push(next as u32);
        }
        index.push(points.len() as u32);
        Ring {
            points,
            owners,
            index,
            shift,
        }
    }

    /// The shard owning `key_hash`: the first point at or after the key's
    /// position, wrapping to the first point.
    #[inline]
    pub(crate) fn lookup(&self, key_hash: u64) -> u32 {
        let pos = fmix64(key_hash);
        let slice = (pos >> self.shift) as usize;
        let (lo, hi) = (self.index[slice] as usize, self.index[slice + 1] as usize);
        // Points of this slice are points[lo..hi]; the answer is among them or
        // is the first point of a later slice, which is points[hi].
        let at = lo + self.points[lo..hi].partition_point(|&p| p < pos);
        match self.owners.get(at) {
            Some(&shard) => shard,
            None => self.owners[0],
        }
    }

    /// The exact key-space share of each of the first `shard_count` shards of
    /// the ring made of only their points, which is the ring of a topology
    /// with `shard_count` shards: points depend only on shard and point
    /// number, so one ring built for the most shards answers for all fewer.
    #[cfg(test)]
    pub(crate) fn shares(&self, shard_count: u32) -> Vec<f64> {
        let kept: Vec<(u64, u32)> = self
            .points
            .iter()
            .zip(&self.owners)
            .filter(|(_, o)| **o < shard_count)
            .map(|(&p, &o)| (p, o))
            .collect();
        let mut owned = vec![0u128; shard_count as usize];
        for (i, &(point, owner)) in kept.iter().enumerate() {
            // The arc (previous point, point] belongs to the point's owner;
            // the first point also owns the wrap-around arc.
            let prev = kept[(i + kept.len() - 1) % kept.len()].0;
            owned[owner as usize] += match point.wrapping_sub(prev) {
                0 if kept.len() == 1 => 1u128 << 64,
                arc => u128::from(arc),
            };
        }
        owned
            .into_iter()
            .map(|o| o as f64 / (1u128 << 64) as f64)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Linear scan, the definition the indexed lookup must agree with.
    fn naive(ring: &Ring, key_hash: u64) -> u32 {
        let pos = fmix64(key_hash);
        ring.points
            .iter()
            .position(|&p| p >= pos)
            .map_or(ring.owners[0], |i| ring.owners[i])
    }

    proptest! {
        #[test]
        fn indexed_lookup_agrees_with_a_linear_scan(
            shards in 1u32..20,
            vnodes in 1u32..40,
            keys in proptest::collection::vec(any::<u64>(), 1..200),
        ) {
            let ring = Ring::new(shards, vnodes, HashFunction::Xxh3);
            for k in keys {
                prop_assert_eq!(ring.lookup(k), naive(&ring, k));
            }
            // Points themselves, their neighbours and the ends of the ring.
            for i in 0..ring.points.len() {
                for pos in [ring.points[i], ring.points[i].wrapping_add(1), ring.points[i].wrapping_sub(1)] {
                    // Find a key hash at this position: fmix64 is a bijection,
                    // so probe through its inverse instead of searching.
                    let k = unfmix64(pos);
                    prop_assert_eq!(ring.lookup(k), naive(&ring, k));
                }
            }
            for k in [unfmix64(0), unfmix64(u64::MAX)] {
                prop_assert_eq!(ring.lookup(k), naive(&ring, k));
            }
        }
    }

    /// The inverse of [`fmix64`], to place test keys at exact ring positions.
    pub(crate) fn unfmix64(mut k: u64) -> u64 {
        // Inverses of the two multipliers mod 2^64, and of x ^= x >> 33
        // (which is its own inverse for shifts >= 32).
        const INV1: u64 = 0x9cb4_b2f8_1293_37db; // inverse of 0xc4ce_b9fe_1a85_ec53
        const INV2: u64 = 0x4f74_430c_22a5_4005; // inverse of 0xff51_afd7_ed55_8ccd
        k ^= k >> 33;
        k = k.wrapping_mul(INV1);
        k ^= k >> 33;
        k = k.wrapping_mul(INV2);
        k ^ (k >> 33)
    }

    #[test]
    fn unfmix64_inverts_fmix64() {
        for x in [0u64, 1, 42, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(unfmix64(fmix64(x)), x);
        }
    }

    #[test]
    fn single_point_owns_everything_and_shares_sum_to_one() {
        let ring = Ring::new(1, 1, HashFunction::Fnv1a);
        assert_eq!(ring.lookup(0), 0);
        assert_eq!(ring.lookup(u64::MAX), 0);
        assert_eq!(ring.shares(1), vec![1.0]);
        let ring = Ring::new(7, 33, HashFunction::Murmur3);
        let total: f64 = ring.shares(7).iter().sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    /// Coefficient of variation (standard deviation / mean) of the shards'
    /// exact key-space shares.
    pub(crate) fn share_cv(ring: &Ring, shard_count: u32) -> f64 {
        let shares = ring.shares(shard_count);
        let mean = 1.0 / f64::from(shard_count);
        let var = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / f64::from(shard_count);
        var.sqrt() / mean
    }

    /// Seed 004's virtual node table (50 ~15%, 100 ~8%, 150 ~5%, 500 ~2%),
    /// with "variance" read as the coefficient of variation of the shards'
    /// exact key-space shares. A shard's share is a sum of `v` arcs, so the CV
    /// is about 1/sqrt(v): 14%, 10%, 8.2%, 4.5%. The seed's first value
    /// matches; its 150 and 500 values are out of reach for any ring with
    /// randomly placed points (they would need about 400 and 2,500 points per
    /// shard). Measured at 16 shards: 11-12%, 8-12.5%, 8-9%, 3-4.5%.
    ///
    /// Bounds: at 16 shards CV <= 1.6/sqrt(v) (a CV from 16 shares is itself
    /// noisy, about +-18%), and averaged over 8..=64 shards between 0.75 and
    /// 1.25 times 1/sqrt(v), decreasing with v.
    #[test]
    fn balance_follows_the_virtual_node_count() {
        for hash in [
            HashFunction::Fnv1a,
            HashFunction::Murmur3,
            HashFunction::Xxh3,
        ] {
            let mut previous = f64::INFINITY;
            for v in [50u32, 100, 150, 500] {
                let expected = 1.0 / f64::from(v).sqrt();
                let ring = Ring::new(64, v, hash);
                let at_16 = share_cv(&ring, 16);
                assert!(
                    at_16 <= 1.6 * expected,
                    "{hash:?} v={v}: CV {at_16} at 16 shards"
                );
                let mean = (8u32..=64).map(|n| share_cv(&ring, n)).sum::<f64>() / 57.0;
                assert!(
                    (0.75 * expected..=1.25 * expected).contains(&mean),
                    "{hash:?} v={v}: mean CV {mean}, expected about {expected}"
                );
                assert!(
                    mean < previous,
                    "{hash:?}: more points, worse balance at v={v}"
                );
                previous = mean;
            }
        }
    }

    #[test]
    fn shares_of_fewer_shards_are_the_smaller_rings_shares() {
        let big = Ring::new(12, 20, HashFunction::Xxh3);
        for n in [1u32, 5, 12] {
            assert_eq!(
                big.shares(n),
                Ring::new(n, 20, HashFunction::Xxh3).shares(n)
            );
        }
    }
}
