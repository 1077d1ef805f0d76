//! Route lookup cost per strategy at 16 shards (ring at 150 virtual nodes):
//! from a precomputed key hash (what replay pays: events carry the hash) and
//! including the hash of a typical 12-byte key (what a request pays).
//!
//! Each iteration routes a batch of 1,024 distinct keys so that branch
//! prediction cannot learn one key; throughput is reported per key.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use floe_engine::{HashFunction, RangeKey, RangeRule, Router, Strategy, Topology};

const SHARDS: u32 = 16;
const BATCH: usize = 1_024;

fn strategies() -> Vec<Strategy> {
    vec![
        Strategy::Modulo,
        Strategy::Jump,
        Strategy::JumpBack,
        Strategy::Ring { virtual_nodes: 150 },
        Strategy::Range {
            key: RangeKey::default(),
            default_shard: 0,
            ranges: (0..SHARDS)
                .map(|s| {
                    // 16 ranges over "order-" keys by their first digits.
                    let start = (s > 0).then(|| format!("order-{:02}", s * 6));
                    let end = (s + 1 < SHARDS).then(|| format!("order-{:02}", (s + 1) * 6));
                    RangeRule::strings(start.as_deref(), end.as_deref(), s)
                })
                .collect(),
        },
    ]
}

/// 12-byte keys like `order-004711`.
fn keys() -> Vec<String> {
    (0..BATCH)
        .map(|i| format!("order-{:06}", (i * 7_919) % 1_000_000))
        .collect()
}

fn route(c: &mut Criterion) {
    let keys = keys();
    for (group_name, with_hash) in [("route_prehashed", false), ("route_with_xxh3", true)] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(BATCH as u64));
        for strategy in strategies() {
            let name = strategy.name();
            let router =
                Router::new(Topology::new(SHARDS, HashFunction::Xxh3, strategy).unwrap()).unwrap();
            let hashed: Vec<(&str, u64)> = keys
                .iter()
                .map(|k| (k.as_str(), router.key_hash(k)))
                .collect();
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for &(key, hash) in &hashed {
                        let key = black_box(key);
                        let hash = if with_hash {
                            router.key_hash(key)
                        } else {
                            black_box(hash)
                        };
                        acc = acc.wrapping_add(router.route(key, hash));
                    }
                    acc
                })
            });
        }
        group.finish();
    }
}

fn hash(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("key_hash");
    group.throughput(Throughput::Elements(BATCH as u64));
    for hash in [
        HashFunction::Fnv1a,
        HashFunction::Murmur3,
        HashFunction::Xxh3,
    ] {
        group.bench_function(BenchmarkId::from_parameter(hash.name()), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for key in &keys {
                    acc ^= hash.hash(black_box(key.as_bytes()));
                }
                acc
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route, hash);
criterion_main!(benches);
