//! What a migration asks of the shards: inventories, and (through each
//! shard's own worker, so the state never has two owners) copies,
//! evictions and digests.

use floe_engine::{KeyLoad, RoutingTable};

use crate::error::Result;

/// Every partition key each shard owns, with its load.
pub(crate) async fn inventory(routing: &RoutingTable) -> Result<Vec<KeyLoad>> {
    let router = (**routing.router()).clone();
    let shard_count = router.topology().shard_count as usize;
    let tasks = routing
        .shards()
        .iter()
        .take(shard_count)
        .map(|shard| shard.key_loads(router.clone()));
    let mut all = Vec::new();
    for keys in futures::future::join_all(tasks).await {
        all.extend(keys?);
    }
    all.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    Ok(all)
}
