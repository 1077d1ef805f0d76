//! Fresh mode: acknowledged events the lake does not hold yet.
//!
//! A snapshot of `floe.events` holds exactly the events below the offsets in
//! its summary; the pipeline holds everything acknowledged. Reading the
//! pipeline from those offsets to its head therefore adds exactly the events
//! that were acknowledged but not landed, each once.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::arrow::compute::cast;
use floe_emitter::replay::{PipelineTail, check_retention, heads, low_watermarks};
use floe_emitter::sink::{CommittedOffsets, arrow_schema, records_to_batch};
use floe_engine::{Pipeline, Record};
use iceberg::table::Table;

use crate::error::{Error, Result};

/// Records read per pipeline call.
const READ_CHUNK: usize = 8192;

/// Why reading the tail from a snapshot's offsets did not work.
#[derive(Debug)]
pub(crate) enum Tail {
    Read(Vec<RecordBatch>),
    /// Retention deleted part of the tail after a newer commit: re-pin.
    Moved,
}

/// Reads the events of `pipeline` after the offsets landed in `table`'s
/// current snapshot, as batches of the SQL schema.
pub(crate) async fn read_tail(
    pipeline: &Arc<dyn Pipeline>,
    table: &Table,
    schema: &SchemaRef,
) -> Result<Tail> {
    let partitions = pipeline.partitions();
    let landed = CommittedOffsets::of(table, partitions)?;
    // Retention past these offsets means a newer commit exists: the caller
    // re-pins to it (not an error here).
    if check_retention(&low_watermarks(&**pipeline).await?, &landed.offsets).is_err() {
        return Ok(Tail::Moved);
    }
    let ends = heads(&**pipeline).await?;
    let mut tail = PipelineTail::new(pipeline.clone(), &landed.offsets, &ends, READ_CHUNK);
    let mut records: Vec<Record> = Vec::new();
    while let Some(chunk) = tail.next().await? {
        records.extend(chunk);
    }
    if records.is_empty() {
        return Ok(Tail::Read(Vec::new()));
    }
    let order = (0..records.len() as u32).collect();
    let batch = records_to_batch(&arrow_schema()?, &records, order)?;
    Ok(Tail::Read(vec![to_schema(&batch, schema)?]))
}

/// The batch with its columns cast to the SQL schema (strings as views).
fn to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| cast(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(datafusion::error::DataFusionError::from)?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::from(datafusion::error::DataFusionError::from(e)))
}
