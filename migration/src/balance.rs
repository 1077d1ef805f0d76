//! Balance analysis: how unevenly the shards are loaded, and which are hot
//! or cold (seed 004's `analyzeBalance`).

use serde::{Deserialize, Serialize};

/// What one shard holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoad {
    /// The shard.
    pub shard: u32,
    /// Entities (live and tombstones) it owns.
    pub entities: u64,
    /// Bytes of entity data it owns.
    pub bytes: u64,
}

/// The shards' loads compared with their average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceAnalysis {
    /// Every shard's load.
    pub shards: Vec<ShardLoad>,
    /// Mean entities per shard.
    pub avg_entities: f64,
    /// Mean bytes per shard.
    pub avg_bytes: f64,
    /// `(max - min) / mean` of the balanced measure (bytes, or entities when
    /// no shard holds bytes); 0 is perfect balance.
    pub imbalance_ratio: f64,
    /// Shards above `mean * (1 + threshold)`, most loaded first.
    pub hot_shards: Vec<u32>,
    /// Shards below `mean * (1 - threshold)`, least loaded first.
    pub cold_shards: Vec<u32>,
    /// Whether `imbalance_ratio <= threshold`.
    pub is_balanced: bool,
    /// The tolerance the analysis used.
    pub threshold: f64,
}

/// The measure a rebalance evens out: bytes, or entities when nothing holds
/// bytes.
pub(crate) fn measure(loads: &[ShardLoad]) -> impl Fn(&ShardLoad) -> u64 + use<> {
    let by_bytes = loads.iter().any(|l| l.bytes > 0);
    move |l: &ShardLoad| if by_bytes { l.bytes } else { l.entities }
}

/// Refuses a tolerance below 0 or not finite: with one, a shard could be
/// both hot and cold, or none could be either.
pub fn check_threshold(threshold: f64) -> crate::Result<()> {
    if threshold.is_finite() && threshold >= 0.0 {
        Ok(())
    } else {
        Err(crate::Error::InvalidThreshold { threshold })
    }
}

/// Analyzes `loads` with a tolerance of `threshold` (0.2: a shard 20% above
/// the mean is hot).
pub fn analyze_balance(loads: &[ShardLoad], threshold: f64) -> BalanceAnalysis {
    let n = loads.len().max(1) as f64;
    let avg_entities = loads.iter().map(|l| l.entities).sum::<u64>() as f64 / n;
    let avg_bytes = loads.iter().map(|l| l.bytes).sum::<u64>() as f64 / n;
    let m = measure(loads);
    let mean = loads.iter().map(&m).sum::<u64>() as f64 / n;
    let (min, max) = loads
        .iter()
        .map(&m)
        .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let imbalance_ratio = if mean > 0.0 && !loads.is_empty() {
        (max - min) as f64 / mean
    } else {
        0.0
    };
    let mut hot: Vec<&ShardLoad> = loads
        .iter()
        .filter(|l| m(l) as f64 > mean * (1.0 + threshold))
        .collect();
    hot.sort_by_key(|l| std::cmp::Reverse(m(l)));
    let mut cold: Vec<&ShardLoad> = loads
        .iter()
        .filter(|l| (m(l) as f64) < mean * (1.0 - threshold))
        .collect();
    cold.sort_by_key(|l| m(l));
    BalanceAnalysis {
        shards: loads.to_vec(),
        avg_entities,
        avg_bytes,
        imbalance_ratio,
        hot_shards: hot.iter().map(|l| l.shard).collect(),
        cold_shards: cold.iter().map(|l| l.shard).collect(),
        is_balanced: imbalance_ratio <= threshold,
        threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(shard: u32, bytes: u64) -> ShardLoad {
        ShardLoad {
            shard,
            entities: bytes / 10,
            bytes,
        }
    }

    #[test]
    fn finds_hot_and_cold_shards() {
        let a = analyze_balance(&[load(0, 100), load(1, 100), load(2, 400), load(3, 0)], 0.2);
        assert_eq!(a.avg_bytes, 150.0);
        assert_eq!(a.hot_shards, vec![2]);
        assert_eq!(a.cold_shards, vec![3, 0, 1]);
        assert!((a.imbalance_ratio - 400.0 / 150.0).abs() < 1e-9);
        assert!(!a.is_balanced);
    }

    #[test]
    fn a_negative_or_non_finite_threshold_is_refused() {
        for bad in [-0.1, -3.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = check_threshold(bad).unwrap_err();
            assert!(
                matches!(err, crate::Error::InvalidThreshold { .. }),
                "{bad}"
            );
            assert!(err.to_string().contains(">= 0"), "{err}");
        }
        for good in [0.0, 0.2, 5.0] {
            check_threshold(good).unwrap();
        }
    }

    #[test]
    fn even_and_empty_are_balanced() {
        let a = analyze_balance(&[load(0, 100), load(1, 100)], 0.2);
        assert!(a.is_balanced && a.hot_shards.is_empty() && a.cold_shards.is_empty());
        let empty = analyze_balance(&[ShardLoad::default(); 3], 0.2);
        assert!(empty.is_balanced);
        assert_eq!(empty.imbalance_ratio, 0.0);
        // Without bytes, entities decide.
        let e = analyze_balance(
            &[
                ShardLoad {
                    shard: 0,
                    entities: 10,
                    bytes: 0,
                },
                ShardLoad {
                    shard: 1,
                    entities: 30,
                    bytes: 0,
                },
            ],
            0.2,
        );
        assert_eq!(e.hot_shards, vec![1]);
    }
}
