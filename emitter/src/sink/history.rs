//! Reading landed events back from `floe.events` (recovery, checks).

use floe_engine::Record;
use futures::TryStreamExt;

use super::batch;
use super::catalog::Lake;
use super::commit::CommittedOffsets;
use crate::error::{Error, Result};

impl Lake {
    /// The offsets committed in the lake for a pipeline of `partitions`.
    pub async fn committed_offsets(&self, partitions: u32) -> Result<CommittedOffsets> {
        CommittedOffsets::of(&self.load_table().await?, partitions)
    }

    /// Scans the events of snapshot `at` (all events below its offsets) and
    /// hands them to `f` batch by batch, in no particular order.
    pub async fn scan_landed(
        &self,
        at: &CommittedOffsets,
        mut f: impl FnMut(Vec<Record>) -> Result<()>,
    ) -> Result<u64> {
        let Some(snapshot) = at.snapshot_id else {
            return Ok(0);
        };
        let table = self.load_table().await?;
        let scan = table
            .scan()
            .snapshot_id(snapshot)
            .build()
            .map_err(|e| Error::iceberg("planning the scan of floe.events", e))?;
        let mut stream = scan
            .to_arrow()
            .await
            .map_err(|e| Error::iceberg("scanning floe.events", e))?;
        let mut rows = 0;
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| Error::iceberg("reading floe.events", e))?
        {
            let records = batch::batch_to_records(&batch)?;
            // A snapshot holds exactly the events below its offsets; check it.
            if let Some(r) = records.iter().find(|r| {
                at.offsets
                    .get(r.partition as usize)
                    .is_none_or(|&o| r.offset >= o)
            }) {
                return Err(Error::Layout(format!(
                    "snapshot {snapshot} holds offset {} of partition {}, beyond its committed offsets",
                    r.offset, r.partition
                )));
            }
            rows += records.len() as u64;
            f(records)?;
        }
        Ok(rows)
    }
}
