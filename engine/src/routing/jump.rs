//! Jump-style consistent hashing: a key hash and a bucket count in, a bucket out,
//! no state. Both functions are consistent: going from `n` to `n + 1` buckets,
//! a key either stays or moves to bucket `n`, and each bucket gets `1/n` of the
//! keys in expectation.

/// Jump consistent hash, Lamping & Veach 2014 ("A Fast, Minimal Memory,
/// Consistent Hash Algorithm", arXiv:1406.2294), exactly as the paper's C++
/// code: a 64-bit LCG (multiplier 2862933555777941757, increment 1) drives the
/// jumps and the jump length is computed in floating point.
///
/// Bit-compatible with the paper's code and with Guava's
/// `Hashing.consistentHash(long, int)` (see the golden values in the tests).
/// Expected `O(ln n)` loop iterations, each with a floating-point division.
#[inline]
pub(crate) fn jump_hash(key_hash: u64, buckets: u32) -> u32 {
    debug_assert!(buckets > 0);
    let mut key = key_hash;
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // (b + 1) * 2^31 / r with r in [1, 2^31]: at most 2^31 * 2^32, so the
        // float-to-int conversion never saturates.
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function (Steele, Lea & Flood 2014; Vigna's constants).
#[inline]
fn splitmix64_mix(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// [`jump_back_hash_masked`] computing the mask itself.
#[cfg(test)]
pub(crate) fn jump_back_hash(key_hash: u64, buckets: u32) -> u32 {
    jump_back_hash_masked(key_hash, buckets, jump_back_mask(buckets))
}

/// One bit per interval `[2^k, 2^(k+1))` up to the one that holds
/// `buckets - 1` (none for a single bucket): what [`jump_back_hash_masked`]
/// takes, computed once per bucket count.
#[inline]
pub(crate) fn jump_back_mask(buckets: u32) -> u32 {
    match buckets {
        0 | 1 => 0,
        n => u32::MAX >> (n - 1).leading_zeros(),
    }
}

/// JumpBackHash, O. Ertl 2024 ("JumpBackHash: Say Goodbye to the Modulo
/// Operation to Distribute Keys Uniformly to Buckets", arXiv:2403.18682),
/// with SplitMix64 seeded by the key hash as the pseudo-random generator.
/// Produces the same buckets as hash4j's `ConsistentHashing.jumpBackHash(
/// PseudoRandomGeneratorProvider.splitMix64_V1())`.
///
/// How it works. Think of jump hash's process in reverse: when the bucket
/// count grows from `i` to `i + 1`, a key jumps to bucket `i` with probability
/// `1/(i + 1)`; a key's bucket for `n` buckets is the last jump below `n`.
/// Group buckets into the intervals `[2^k, 2^(k+1))`: a key jumps somewhere in
/// interval `k` with probability exactly 1/2, independently per interval, and
/// given that it does, its *last* jump there is uniform over the interval.
/// So one random word decides, one bit per interval, which intervals hold a
/// jump; the highest such interval below `n` holds the answer, at a uniform
/// offset drawn from the other bits. Only the interval that contains `n`
/// can yield a candidate `>= n`; then the jumps before it in that interval are
/// found by drawing uniform values of `[0, 2^(k+1))`: a value below `2^k` means
/// "no earlier jump in this interval" (fall back to the next lower interval),
/// a value in `[2^k, n)` is the answer, anything else is drawn again. That
/// needs about two draws in expectation, no division and no floating point.
///
/// `mask` is [`jump_back_mask`]`(buckets)`, computed once per router.
#[inline]
pub(crate) fn jump_back_hash_masked(key_hash: u64, buckets: u32, mask: u32) -> u32 {
    debug_assert!(mask == jump_back_mask(buckets));
    let state = key_hash.wrapping_add(SPLITMIX_GAMMA);
    let r0 = splitmix64_mix(state);
    // The two halves of r0 XOR-ed decide which intervals hold a jump: these
    // bits are independent of either half alone, which then provides the
    // offset within the chosen interval.
    let jumps = ((r0 ^ (r0 >> 32)) as u32) & mask;
    if jumps == 0 {
        return 0;
    }
    let low = top_bit(jumps);
    let candidate = low | (offset_bits(r0, jumps) & (low - 1));
    if candidate < buckets {
        return candidate;
    }
    // Only the top interval can reach past the end; kept out of line so the
    // common path above stays small enough to inline into the router.
    jump_back_past_end(state, r0, jumps, low, buckets)
}

/// The highest set bit of `x` (non-zero) as a value: the interval's lower end.
#[inline]
fn top_bit(x: u32) -> u32 {
    1u32 << (31 - x.leading_zeros())
}

/// The half of `r0` that gives the offset in the interval of `jumps`' top bit:
/// successive intervals alternate halves, by the parity of the bits left.
#[inline]
fn offset_bits(r0: u64, jumps: u32) -> u32 {
    (r0 >> ((jumps.count_ones() & 1) << 5)) as u32
}

/// The key's last jump in the top interval `[low, 2 low)` is at or past
/// `buckets`: look for an earlier jump in `[low, buckets)` by drawing more
/// values, else fall back to the next lower interval that holds a jump
/// (entirely below `buckets`, so its candidate is the answer).
#[cold]
#[inline(never)]
fn jump_back_past_end(mut state: u64, r0: u64, jumps: u32, low: u32, buckets: u32) -> u32 {
    let span = (low << 1).wrapping_sub(1); // 2^(k+1) - 1, also for k = 31
    loop {
        state = state.wrapping_add(SPLITMIX_GAMMA);
        let r = splitmix64_mix(state);
        let first = (r as u32) & span;
        if first < low {
            break;
        }
        if first < buckets {
            return first;
        }
        let second = ((r >> 32) as u32) & span;
        if second < low {
            break;
        }
        if second < buckets {
            return second;
        }
    }
    let rest = jumps ^ low;
    if rest == 0 {
        return 0;
    }
    let low = top_bit(rest);
    low | (offset_bits(r0, rest) & (low - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_matches_guava_golden_values() {
        // Guava, HashingTest.testConsistentHash_linearCongruentialGeneratorCompatibility:
        // "golden values to see that implementations across languages are equivalent".
        let golden100 = [
            0, 55, 62, 8, 45, 59, 86, 97, 82, 59, 73, 37, 17, 56, 86, 21, 90, 37, 38, 83,
        ];
        for (i, &expected) in golden100.iter().enumerate() {
            assert_eq!(jump_hash(i as u64, 100), expected, "key {i}");
        }
        assert_eq!(jump_hash(10_863_919_174_838_991, 11), 6);
        assert_eq!(jump_hash(2_016_238_256_797_177_309, 11), 3);
        assert_eq!(jump_hash(1_673_758_223_894_951_030, 11), 5);
        assert_eq!(jump_hash(2, 100_001), 80_343);
        assert_eq!(jump_hash(2201, 100_001), 22_152);
        assert_eq!(jump_hash(2202, 100_001), 15_018);
    }

    #[test]
    fn jump_matches_the_papers_cpp_code() {
        // Outputs of the C++ function from the paper's figure 1, compiled with
        // g++ -O2 (x86-64) and run on these inputs.
        let table: [(u64, u32, u32); 10] = [
            (0, 1, 0),
            (u64::MAX, 16, 10),
            (0x0123_4567_89ab_cdef, 16, 13),
            (0xdead_beef_cafe_babe, 16, 15),
            (42, 1_000, 571),
            (1 << 63, 7, 5),
            (0x9e37_79b9_7f4a_7c15, 65_536, 56_183),
            (123_456_789, 2, 0),
            (987_654_321, 3, 2),
            (u64::MAX, i32::MAX as u32, 699_554_662),
        ];
        for (key, n, expected) in table {
            assert_eq!(jump_hash(key, n), expected, "jump_hash({key:#x}, {n})");
        }
    }

    #[test]
    fn jump_back_matches_hash4j_demo() {
        // hash4j ConsistentHashingDemo.demoJumpBackHash (splitMix64_V1):
        // 2 buckets: {0=[6265648fbc797f25, 85ef23a0b545d53b], 1=[7f7487ee708c8a96]}
        // 3 buckets: {0=[6265648fbc797f25], 1=[7f7487ee708c8a96], 2=[85ef23a0b545d53b]}
        assert_eq!(jump_back_hash(0x7f74_87ee_708c_8a96, 2), 1);
        assert_eq!(jump_back_hash(0x6265_648f_bc79_7f25, 2), 0);
        assert_eq!(jump_back_hash(0x85ef_23a0_b545_d53b, 2), 0);
        assert_eq!(jump_back_hash(0x7f74_87ee_708c_8a96, 3), 1);
        assert_eq!(jump_back_hash(0x6265_648f_bc79_7f25, 3), 0);
        assert_eq!(jump_back_hash(0x85ef_23a0_b545_d53b, 3), 2);
    }

    #[test]
    fn jump_back_matches_the_reference_algorithm() {
        // Outputs of hash4j's ConsistentJumpBackBucketHasher.getBucket logic
        // (transcribed to a standalone Java program, run with OpenJDK) on these
        // inputs, covering the three ways out of the algorithm. Paths: "direct" = first candidate, "loop" = found by the inner draws,
        // "fall back" = no earlier jump in the top interval.
        let table: [(u64, u32, u32); 23] = [
            (0, 1, 0),
            (0, 16, 7),
            (u64::MAX, 16, 7),
            (0x0123_4567_89ab_cdef, 16, 13),
            (0xdead_beef_cafe_babe, 16, 6),
            (42, 1_000, 166),
            (1 << 63, 7, 1),
            (0x9e37_79b9_7f4a_7c15, 65_536, 58_868),
            (123_456_789, 100_001, 95_865),
            (u64::MAX, i32::MAX as u32, 1_533_357_088),
            (0x0c5c_7fd0_a6a3_a450, 10, 1),                  // direct
            (0xf2a7_4de4_52e6_b438, 10, 9),                  // loop
            (0x6513_270e_269e_0d37, 10, 0),                  // fall back
            (0x5c90_a958_7403_e430, 1_000, 738),             // direct
            (0xeeea_cbe2_26e8_7555, 1_000, 628),             // loop
            (0x57ee_05cd_e009_02c7, 1_000, 373),             // fall back
            (0x9c65_3938_2b05_37e6, 100_001, 57_332),        // direct
            (0xbd05_61e6_211c_70cf, 100_001, 91_655),        // loop
            (0x2a96_fb1a_14a0_f9e7, 100_001, 12_836),        // fall back
            (0x65e7_e423_6472_f1a3, 3 << 29, 1_299_754_966), // direct
            (0x6683_6886_a260_cd0b, 3 << 29, 1_168_891_193), // loop
            (0x64e5_0cad_6623_7a04, 3 << 29, 112_633_699),   // fall back
            (0x174c_77a2_dd02_de92, i32::MAX as u32, 1_844_828_256),
        ];
        for (key, n, expected) in table {
            assert_eq!(
                jump_back_hash(key, n),
                expected,
                "jump_back_hash({key:#x}, {n})"
            );
        }
    }

    /// Both functions: result in range, consistent from n to n + 1 for every n
    /// up to 300, for a few thousand keys.
    #[test]
    fn both_are_monotone_for_small_bucket_counts() {
        for f in [jump_hash as fn(u64, u32) -> u32, jump_back_hash] {
            for i in 0..2_000u64 {
                let key = splitmix64_mix(i);
                let mut prev = 0;
                assert_eq!(f(key, 1), 0);
                for n in 2..300 {
                    let b = f(key, n);
                    assert!(b < n);
                    assert!(
                        b == prev || b == n - 1,
                        "key {key:#x}: {prev} -> {b} at n={n}"
                    );
                    prev = b;
                }
            }
        }
    }

    #[test]
    fn jump_back_is_uniform_at_large_bucket_counts() {
        // Halves of the range and parity each get half of the keys.
        for n in [u32::MAX, (1 << 31) + 1, 1 << 31, (1 << 31) - 1, 3 << 29] {
            let (mut lower, mut even) = (0u32, 0u32);
            let trials = 20_000u32;
            for i in 0..trials {
                let b = jump_back_hash(splitmix64_mix(u64::from(i) ^ 0x55), n);
                assert!(b < n);
                lower += u32::from(b < n / 2);
                even += u32::from(b.is_multiple_of(2));
            }
            // 5 sigma of a fair coin over 20k trials is about 354.
            for count in [lower, even] {
                assert!(count.abs_diff(trials / 2) < 360, "n={n}: {count}");
            }
        }
    }
}
