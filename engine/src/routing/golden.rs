//! Placement that must never change.
//!
//! Routing must agree across processes, machines and releases: events carry
//! the key hash, Iceberg files are sorted by it, and every shard's state was
//! placed by these functions. The table below was computed once (16 shards,
//! every hash function and hash strategy, ring at 150 virtual nodes) and is
//! hard-coded on purpose. CHANGING ANY VALUE HERE BREAKS THE DATA PLACEMENT
//! OF EVERY EXISTING DEPLOYMENT: if this test fails, the code is wrong, not
//! the table.

use super::*;

const HASHES: [HashFunction; 3] = [
    HashFunction::Fnv1a,
    HashFunction::Murmur3,
    HashFunction::Xxh3,
];

fn strategies() -> [Strategy; 4] {
    [
        Strategy::Modulo,
        Strategy::Jump,
        Strategy::JumpBack,
        Strategy::Ring { virtual_nodes: 150 },
    ]
}

/// `(key, [hash per hash function], [[shard per strategy] per hash function])`,
/// hash functions in the order of `HASHES`, strategies in the order of
/// `strategies()`.
type Row = (&'static str, [u64; 3], [[u32; 4]; 3]);

#[rustfmt::skip]
const GOLDEN: [Row; 20] = [
    ("", [0xcbf29ce484222325, 0x0000000000000000, 0x2d06800538d394c2], [[5, 13, 1, 15], [0, 0, 7, 9], [2, 0, 14, 12]]),
    ("a", [0xaf63dc4c8601ec8c, 0x85555565f6597889, 0xe6c632b61e964e1f], [[12, 12, 10, 9], [9, 15, 10, 15], [15, 14, 7, 13]]),
    ("0", [0xaf63ad4c86019caf, 0x2ac9debed546a380, 0x1982e3a7bb241055], [[15, 12, 4, 4], [0, 11, 2, 8], [5, 8, 14, 13]]),
    ("tenant-1", [0xc2efb128e3ebf08b, 0xf66d88afca3d298f, 0x62011ddf6cec20c3], [[11, 15, 3, 12], [15, 5, 11, 9], [3, 5, 10, 11]]),
    ("tenant-2", [0xc2efb228e3ebf23e, 0xdc4f810f19dc142c, 0xf459f3270b013992], [[14, 0, 4, 1], [12, 6, 14, 4], [2, 14, 7, 14]]),
    ("tenant-42", [0x2944b77b49f24de2, 0xeb2c249caf8e8ee2, 0xee7f6fb0845f540f], [[2, 8, 6, 2], [2, 5, 5, 12], [15, 7, 8, 4]]),
    ("acme", [0x0724d383f4f6de0f, 0x36f94b2c3724134a, 0x44ad98655d8858e1], [[15, 15, 15, 14], [10, 10, 0, 8], [1, 6, 1, 12]]),
    ("user:1001", [0x49b8f2bfae7b40d6, 0x3e66fcf0dae4c87c, 0x783864580ee66e90], [[6, 2, 15, 13], [12, 8, 3, 0], [0, 5, 6, 12]]),
    ("user:1002", [0x49b8f1bfae7b3f23, 0x1e322c96f2e5961b, 0xae0030009279872b], [[3, 11, 8, 12], [11, 1, 15, 1], [11, 8, 7, 11]]),
    ("order-000001", [0xa70bf3f7b9d564d1, 0xdfb7a28cb4a67df7, 0x8c85856756901dde], [[1, 8, 6, 4], [7, 9, 7, 14], [14, 11, 13, 3]]),
    ("order-000002", [0xa70bf0f7b9d55fb8, 0x52d03fd91f4bdddc, 0x7932a35acc97a498], [[8, 14, 7, 13], [12, 12, 9, 2], [8, 4, 14, 0]]),
    ("550e8400-e29b-41d4-a716-446655440000", [0xfbb0538ee83a5048, 0x959da44465fee5e9, 0x05dac8bdcc9c8ac3], [[8, 4, 13, 6], [9, 8, 0, 9], [3, 7, 15, 5]]),
    ("alice@example.com", [0x67023fc4a7ff2a46, 0x9e7b0e52d4880725, 0x76eb895512bf35ff], [[6, 11, 4, 4], [5, 10, 13, 9], [15, 4, 7, 1]]),
    ("évènement", [0xfecfba99afaeced3, 0x07049c07cd500b65, 0x3140798adb331c8c], [[3, 10, 10, 10], [5, 0, 14, 5], [12, 11, 13, 12]]),
    ("日本語キー", [0xebb9774dd85c7e8d, 0x4170d60addeaeeaf, 0x6a8d2ce520757e2e], [[13, 6, 12, 15], [15, 14, 7, 0], [14, 5, 14, 4]]),
    ("shard-3", [0x8ae48a73fa64eb93, 0xe6f83d00164a3390, 0x8302fe6421cf1e72], [[3, 3, 8, 2], [0, 15, 7, 8], [2, 4, 10, 11]]),
    ("key with spaces", [0x726ddf59e3a13e7b, 0x0c17300b0e15d9e1, 0x27ecb116b3c49172], [[11, 7, 6, 7], [1, 10, 1, 6], [2, 4, 3, 5]]),
    ("UPPER", [0x51d156b2727ae687, 0xf6e0b8ff715e1e9d, 0xf0f4ac46913045c5], [[7, 8, 5, 2], [13, 14, 13, 1], [5, 11, 7, 0]]),
    ("ns/Order/17", [0x888d75611d98a2e6, 0xddedf9a35221a5da, 0xbdc387ba3629fb6a], [[6, 6, 12, 5], [10, 1, 7, 12], [10, 15, 15, 4]]),
    ("a-very-long-partition-key-that-spans-more-than-sixty-four-bytes-of-input-data", [0xe3bf2bad97cb57e8, 0x8b9dacf18009a9a4, 0x5fb8ee3481857e72], [[8, 13, 0, 2], [4, 4, 7, 14], [2, 12, 5, 7]]),
];

#[test]
fn key_hashes_never_change() {
    for (key, hashes, _) in GOLDEN {
        for (hash, expected) in HASHES.into_iter().zip(hashes) {
            assert_eq!(hash.hash(key.as_bytes()), expected, "{hash:?}({key:?})");
        }
    }
}

#[test]
fn placement_at_16_shards_never_changes() {
    for (h, hash) in HASHES.into_iter().enumerate() {
        for (s, strategy) in strategies().into_iter().enumerate() {
            let router = Router::new(Topology::new(16, hash, strategy.clone()).unwrap()).unwrap();
            for (key, _, shards) in GOLDEN {
                let got = router.route(key, router.key_hash(key));
                assert_eq!(
                    got,
                    shards[h][s],
                    "{key:?} under {hash:?} / {}: placement changed",
                    strategy.name()
                );
            }
        }
    }
}
