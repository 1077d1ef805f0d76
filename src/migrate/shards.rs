//! What a migration does on the shard workers, each step one closure run by
//! the worker that owns the state (so the state never has two owners).

use std::collections::HashMap;

use floe_engine::{Event, Router, ShardHandle};
use floe_migration::{
    DigestSummary, EntityDigest, KeyLoad, Movement, digest_state, summarize_state,
};

use crate::error::Result;
use crate::floe::Routing;

/// Every partition key each shard owns, with its load.
pub(crate) async fn inventory(routing: &Routing) -> Result<Vec<KeyLoad>> {
    let router = (*routing.router).clone();
    let shard_count = router.topology().shard_count as usize;
    let tasks = routing.shards.iter().take(shard_count).map(|handle| {
        let router = router.clone();
        let shard = handle.shard();
        handle.with_state(move |state, _| {
            let mut keys: HashMap<&str, KeyLoad> = HashMap::new();
            for (_, record) in state.iter() {
                if router.route(&record.partition_key, record.key_hash) != shard {
                    continue;
                }
                let load = keys
                    .entry(record.partition_key.as_str())
                    .or_insert_with(|| KeyLoad {
                        partition_key: record.partition_key.clone(),
                        key_hash: record.key_hash,
                        shard,
                        entities: 0,
                        events: 0,
                        bytes: 0,
                    });
                load.entities += 1;
                load.events += record.version;
                load.bytes += record.data.as_ref().map_or(0, |d| d.len() as u64);
            }
            keys.into_values().collect::<Vec<_>>()
        })
    });
    let mut all = Vec::new();
    for keys in futures::future::join_all(tasks).await {
        all.extend(keys?);
    }
    all.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    Ok(all)
}

/// Applies replayed events on a shard (highest version wins, so a repeated
/// or older event is a no-op); returns how many changed state.
pub(crate) async fn ingest(handle: &ShardHandle, events: Vec<Event>) -> Result<u64> {
    Ok(handle
        .with_state(move |state, dedup| {
            let mut applied = 0;
            for event in events {
                dedup.observe(&event);
                if state.apply_owned(event) {
                    applied += 1;
                }
            }
            applied
        })
        .await?)
}

/// Drops every record `router` does not route to this shard; returns how
/// many (entities, live or tombstones) were dropped.
pub(crate) async fn keep_owned(handle: &ShardHandle, router: Router) -> Result<u64> {
    let shard = handle.shard();
    Ok(handle
        .with_state(move |state, _| {
            state.retain(|_, r| router.route(&r.partition_key, r.key_hash) == shard) as u64
        })
        .await?)
}

/// Drops everything a shard holds.
pub(crate) async fn clear(handle: &ShardHandle) -> Result<u64> {
    Ok(handle
        .with_state(|state, _| state.retain(|_, _| false) as u64)
        .await?)
}

/// The digests of the moving entities this shard holds: those it owns now
/// (a source) and those it will own (a target).
pub(crate) async fn digests(
    handle: &ShardHandle,
    movement: Movement,
) -> Result<(Vec<EntityDigest>, Vec<EntityDigest>)> {
    let shard = handle.shard();
    Ok(handle
        .with_state(move |state, _| {
            let source = digest_state(state, |r| {
                movement
                    .route(&r.partition_key, r.key_hash)
                    .is_some_and(|(from, _)| from == shard)
            });
            let target = digest_state(state, |r| {
                movement
                    .route(&r.partition_key, r.key_hash)
                    .is_some_and(|(_, to)| to == shard)
            });
            (source, target)
        })
        .await?)
}

/// [`digests`] as order-independent summaries (cheap: no key is copied).
pub(crate) async fn summaries(
    handle: &ShardHandle,
    movement: Movement,
) -> Result<(DigestSummary, DigestSummary)> {
    let shard = handle.shard();
    Ok(handle
        .with_state(move |state, _| {
            let source = summarize_state(state, |r| {
                movement
                    .route(&r.partition_key, r.key_hash)
                    .is_some_and(|(from, _)| from == shard)
            });
            let target = summarize_state(state, |r| {
                movement
                    .route(&r.partition_key, r.key_hash)
                    .is_some_and(|(_, to)| to == shard)
            });
            (source, target)
        })
        .await?)
}
