//! Time-routed entities addressed without their time: gets, updates and
//! deletes that do not carry the time field find the entity's partition key
//! in the shards' own records ([`floe_engine::ShardCluster::locate`]).
//!
//! Why not an id that carries the period, or a separate index: the shards
//! already hold every entity's partition key, restored and replayed with
//! the entity itself, so this index cannot disagree with the data, needs no
//! memory of its own, and survives restarts and migrations by construction.
//! The price is one in-memory lookup per shard instead of one; a caller
//! that has the partition key (or sends the time field) pays one hop.

use floe_engine::{EntityKey, Strategy};

use super::request::WriteOp;
use super::{Floe, WriteRequest};
use crate::error::Result;

impl Floe {
    /// Whether entities of `key`'s type are time-routed by data fields, so
    /// that a request without data must locate them.
    pub(super) fn locates(&self, key: &EntityKey) -> bool {
        matches!(self.router().topology().strategy, Strategy::Time { .. })
            && self.inner.extractor.needs_data(&key.entity_type)
    }

    /// An update or delete of a time-routed entity that names no partition
    /// key and whose patch does not carry a routable time gets the stored
    /// entity's partition key. A patch that sets the key fields to another
    /// time is then refused by the usual check (a partition key never
    /// changes). An entity no shard holds live is [`floe_engine::Error::NotFound`],
    /// as an update or delete of a missing entity is on every topology.
    pub(super) async fn resolve_partition_key(
        &self,
        mut request: WriteRequest,
    ) -> Result<WriteRequest> {
        if request.partition_key.is_some() || !self.locates(&request.key) {
            return Ok(request);
        }
        let carried = match &request.op {
            WriteOp::Delete => None,
            WriteOp::Update(patch) => self.inner.extractor.extract(&request.key, Some(patch)).ok(),
            _ => return Ok(request),
        };
        if carried.is_some_and(|k| self.router().check(&k).is_ok()) {
            return Ok(request);
        }
        request.key.validate()?;
        match self.inner.cluster.locate(&request.key).await? {
            Some((_, partition_key)) => {
                request.partition_key = Some(partition_key);
                Ok(request)
            }
            // An archived entity: the write is routed by its key, so that it
            // meets the period's policy instead of a "not found".
            None => match self.archived_partition_key(&request.key).await? {
                Some(partition_key) => {
                    request.partition_key = Some(partition_key);
                    Ok(request)
                }
                None => Err(floe_engine::Error::NotFound {
                    entity: floe_engine::EntityKeyDisplay(request.key.to_string()),
                }
                .into()),
            },
        }
    }
}
