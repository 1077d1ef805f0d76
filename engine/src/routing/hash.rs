//! The deployment-wide hash of partition keys.

use serde::{Deserialize, Serialize};

/// The hash that turns a partition key into the 64-bit key hash that routing,
/// pipeline partitioning and the Iceberg sort order all use.
///
/// It is fixed when a deployment is created: events carry the hash and Iceberg
/// files are sorted by it, so changing it would re-place every key. All three
/// functions are seedless, so the same key hashes the same in every process,
/// on every platform and in every release of floe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashFunction {
    /// 64-bit FNV-1a. Simple and what seed 004's `hash` strategy uses, but its
    /// high bits mix poorly; the ring re-mixes positions because of that.
    Fnv1a,
    /// MurmurHash3 x64_128 with seed 0, first 64 bits of the output (the
    /// little-endian `h1`, what Guava's `murmur3_128().hashBytes(..).asLong()` gives).
    Murmur3,
    /// XXH3 64-bit with seed 0 (the default): the fastest of the three and well mixed.
    #[default]
    Xxh3,
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl HashFunction {
    /// The 64-bit hash of `bytes`.
    pub fn hash(self, bytes: &[u8]) -> u64 {
        match self {
            HashFunction::Fnv1a => fnv1a64(bytes),
            HashFunction::Murmur3 => {
                let mut reader = bytes;
                // Reading from a slice cannot fail.
                let h = murmur3::murmur3_x64_128(&mut reader, 0)
                    .expect("reading from an in-memory slice cannot fail");
                h as u64
            }
            HashFunction::Xxh3 => xxhash_rust::xxh3::xxh3_64(bytes),
        }
    }

    /// The name used in configuration and in the topology document.
    pub fn name(self) -> &'static str {
        match self {
            HashFunction::Fnv1a => "fnv1a",
            HashFunction::Murmur3 => "murmur3",
            HashFunction::Xxh3 => "xxh3",
        }
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The MurmurHash3 64-bit finalizer: a bijection with full avalanche. The ring
/// passes positions through it so that a hash with weak high bits (FNV-1a)
/// still spreads over the whole ring.
#[inline]
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (Fowler/Noll/Vo, test_fnv.c, FNV-1a 64).
        assert_eq!(HashFunction::Fnv1a.hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(HashFunction::Fnv1a.hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(HashFunction::Fnv1a.hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn xxh3_matches_the_published_test_vector() {
        // XXH3_64bits("", 0) from the xxHash sanity checks.
        assert_eq!(HashFunction::Xxh3.hash(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn murmur3_takes_the_first_64_bits_of_x64_128() {
        // x64_128 of "" with seed 0 is all zeros; for other inputs, h1 is the
        // low half of the crate's little-endian u128.
        assert_eq!(HashFunction::Murmur3.hash(b""), 0);
        let full = murmur3::murmur3_x64_128(&mut &b"hello"[..], 0).unwrap();
        assert_eq!(HashFunction::Murmur3.hash(b"hello"), full as u64);
        assert_ne!(HashFunction::Murmur3.hash(b"hello"), (full >> 64) as u64);
    }

    #[test]
    fn hash_functions_differ_and_default_is_xxh3() {
        assert_eq!(HashFunction::default(), HashFunction::Xxh3);
        let k = b"tenant-42";
        let hs = [
            HashFunction::Fnv1a.hash(k),
            HashFunction::Murmur3.hash(k),
            HashFunction::Xxh3.hash(k),
        ];
        assert!(hs[0] != hs[1] && hs[1] != hs[2] && hs[0] != hs[2]);
    }

    #[test]
    fn serde_names_are_snake_case() {
        for h in [
            HashFunction::Fnv1a,
            HashFunction::Murmur3,
            HashFunction::Xxh3,
        ] {
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(json, format!("\"{}\"", h.name()));
            assert_eq!(serde_json::from_str::<HashFunction>(&json).unwrap(), h);
        }
    }

    #[test]
    fn fmix64_is_the_murmur3_finalizer() {
        assert_eq!(fmix64(0), 0);
        // Avalanche: flipping one input bit flips about half the output bits.
        let flipped = (fmix64(1) ^ fmix64(3)).count_ones();
        assert!((16..=48).contains(&flipped), "{flipped}");
    }
}
