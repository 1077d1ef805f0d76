//! Events to Arrow record batches (sorted by key hash) and back.

use std::sync::Arc;

use arrow_array::builder::{
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use floe_engine::{Event, EventKind, Json, Record};
use uuid::Uuid;

use super::layout::{self, COLUMNS};
use crate::error::{Error, Result};

/// The Arrow schema of `floe.events`, with Iceberg field ids in its metadata.
pub fn arrow_schema() -> Result<SchemaRef> {
    let schema = layout::schema()?;
    let arrow = iceberg::arrow::schema_to_arrow_schema(&schema)
        .map_err(|e| Error::iceberg("converting the events schema to Arrow", e))?;
    Ok(Arc::new(arrow))
}

/// The Arrow schema of `floe.events` as `table` declares it now: without
/// `owner_epoch` when the table predates it and could not be upgraded
/// (docs/iceberg.md, "Schema").
pub fn table_arrow_schema(table: &iceberg::table::Table) -> Result<SchemaRef> {
    let arrow = iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
        .map_err(|e| Error::iceberg("converting the table's schema to Arrow", e))?;
    Ok(Arc::new(arrow))
}

/// Builds one record batch of `schema` (the events schema, with or without
/// its `owner_epoch` column) from the records at `rows` (all of them when
/// `rows` is every index), sorted by key hash (as a signed long, the order
/// Parquet statistics of `key_hash` use).
pub fn records_to_batch(
    schema: &SchemaRef,
    records: &[Record],
    mut order: Vec<u32>,
) -> Result<RecordBatch> {
    order.sort_by_key(|&i| records[i as usize].event.key_hash as i64);
    let n = order.len();
    let text = |bytes: usize| StringBuilder::with_capacity(n, bytes);
    let sum = |f: fn(&Event) -> usize| {
        order
            .iter()
            .map(|&i| f(&records[i as usize].event))
            .sum::<usize>()
    };
    let mut event_id = text(n * 36);
    let mut idempotency_key = text(sum(|e| e.idempotency_key.len()));
    let mut kind = text(n * 7);
    let mut namespace = text(sum(|e| e.namespace.len()));
    let mut entity_type = text(sum(|e| e.entity_type.len()));
    let mut entity_id = text(sum(|e| e.entity_id.len()));
    let mut partition_key = text(sum(|e| e.partition_key.len()));
    let mut key_hash = Int64Builder::with_capacity(n);
    let mut shard = Int32Builder::with_capacity(n);
    let mut version = Int64Builder::with_capacity(n);
    let mut event_time =
        TimestampMicrosecondBuilder::with_capacity(n).with_timezone(iceberg::arrow::UTC_TIME_ZONE);
    let mut state = text(sum(|e| e.state.as_ref().map_or(0, Json::len)));
    let mut pipeline_partition = Int32Builder::with_capacity(n);
    let mut pipeline_offset = Int64Builder::with_capacity(n);
    // Tables from before these columns may lack them (`table_arrow_schema`).
    let has = |column| schema.column_with_name(column).is_some();
    let with_epoch = has(layout::OWNER_EPOCH_COLUMN);
    let with_fingerprint = has(layout::REQUEST_FINGERPRINT_COLUMN);
    let mut owner_epoch = Int64Builder::with_capacity(if with_epoch { n } else { 0 });
    let mut fingerprint = Int64Builder::with_capacity(if with_fingerprint { n } else { 0 });
    let mut uuid_buf = Uuid::encode_buffer();
    for &i in &order {
        let record = &records[i as usize];
        let e = &record.event;
        event_id.append_value(e.event_id.hyphenated().encode_lower(&mut uuid_buf));
        idempotency_key.append_value(&e.idempotency_key);
        kind.append_value(e.kind.as_str());
        namespace.append_value(&e.namespace);
        entity_type.append_value(&e.entity_type);
        entity_id.append_value(&e.entity_id);
        partition_key.append_value(&e.partition_key);
        key_hash.append_value(e.key_hash as i64);
        shard.append_value(e.shard as i32);
        version.append_value(to_long(e.version, "version")?);
        event_time.append_value(e.timestamp_us);
        state.append_option(e.state.as_ref().map(Json::as_str));
        pipeline_partition.append_value(record.partition as i32);
        pipeline_offset.append_value(to_long(record.offset, "pipeline offset")?);
        if with_epoch {
            owner_epoch.append_value(to_long(e.owner_epoch, "owner epoch")?);
        }
        if with_fingerprint {
            fingerprint.append_option(e.request_fingerprint.map(|f| f as i64));
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(idempotency_key.finish()),
        Arc::new(kind.finish()),
        Arc::new(namespace.finish()),
        Arc::new(entity_type.finish()),
        Arc::new(entity_id.finish()),
        Arc::new(partition_key.finish()),
        Arc::new(key_hash.finish()),
        Arc::new(shard.finish()),
        Arc::new(version.finish()),
        Arc::new(event_time.finish()),
        Arc::new(state.finish()),
        Arc::new(pipeline_partition.finish()),
        Arc::new(pipeline_offset.finish()),
    ];
    if with_epoch {
        columns.push(Arc::new(owner_epoch.finish()));
    }
    if with_fingerprint {
        columns.push(Arc::new(fingerprint.finish()));
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Arrow {
        context: "building a record batch of events",
        cause: e,
    })
}

fn to_long(value: u64, what: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Layout(format!("{what} {value} exceeds a long")))
}

/// Reads events back from a batch scanned from `floe.events` (any column
/// order; columns are found by name). Returns each event with its pipeline
/// partition and offset. An `owner_epoch` that is null or absent (files and
/// tables from before the column) is epoch 0.
pub fn batch_to_records(batch: &RecordBatch) -> Result<Vec<Record>> {
    let column = |name: &str| -> Result<&ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::Layout(format!("scanned batch has no column {name:?}")))
    };
    let string = |name: &str| -> Result<_> {
        column(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::Layout(format!("column {name:?} is not a string column")))
    };
    let int = |name: &str| -> Result<_> {
        column(name)?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| Error::Layout(format!("column {name:?} is not an int column")))
    };
    let long = |name: &str| -> Result<_> {
        column(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| Error::Layout(format!("column {name:?} is not a long column")))
    };
    let [
        c_id,
        c_key,
        c_kind,
        c_ns,
        c_type,
        c_eid,
        c_pk,
        c_hash,
        c_shard,
        c_ver,
        c_ts,
        c_state,
        c_part,
        c_off,
        c_epoch,
        c_fingerprint,
    ] = COLUMNS;
    let (event_id, idempotency_key, kind) = (string(c_id)?, string(c_key)?, string(c_kind)?);
    let (namespace, entity_type, entity_id) = (string(c_ns)?, string(c_type)?, string(c_eid)?);
    let (partition_key, state) = (string(c_pk)?, string(c_state)?);
    let (key_hash, version, offset) = (long(c_hash)?, long(c_ver)?, long(c_off)?);
    let (shard, partition) = (int(c_shard)?, int(c_part)?);
    // Absent from batches of tables and files from before these columns.
    let optional_long =
        |name: &str| -> Result<_> { batch.column_by_name(name).map(|_| long(name)).transpose() };
    let (owner_epoch, fingerprint) = (optional_long(c_epoch)?, optional_long(c_fingerprint)?);
    let event_time = column(c_ts)?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| Error::Layout(format!("column {c_ts:?} is not a timestamp column")))?;
    let mut records = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let kind_text = kind.value(row);
        let event = Event {
            event_id: Uuid::parse_str(event_id.value(row)).map_err(|e| {
                Error::Layout(format!("bad event_id {:?}: {e}", event_id.value(row)))
            })?,
            idempotency_key: idempotency_key.value(row).to_string(),
            kind: EventKind::parse(kind_text)
                .ok_or_else(|| Error::Layout(format!("unknown event kind {kind_text:?}")))?,
            namespace: namespace.value(row).to_string(),
            entity_type: entity_type.value(row).to_string(),
            entity_id: entity_id.value(row).to_string(),
            partition_key: partition_key.value(row).to_string(),
            key_hash: key_hash.value(row) as u64,
            shard: shard.value(row) as u32,
            version: version.value(row) as u64,
            timestamp_us: event_time.value(row),
            request_fingerprint: fingerprint
                .filter(|f| f.is_valid(row))
                .map(|f| f.value(row) as u64),
            owner_epoch: match owner_epoch {
                Some(epochs) if epochs.is_valid(row) => {
                    u64::try_from(epochs.value(row)).map_err(|_| {
                        Error::Layout(format!("negative owner_epoch {}", epochs.value(row)))
                    })?
                }
                _ => 0,
            },
            state: state
                .is_valid(row)
                .then(|| Json::from_trusted(state.value(row))),
        };
        records.push(Record {
            partition: partition.value(row) as u32,
            offset: offset.value(row) as u64,
            event,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(partition: u32, offset: u64, hash: u64, state: Option<&str>) -> Record {
        Record {
            partition,
            offset,
            event: Event {
                event_id: Uuid::new_v4(),
                idempotency_key: format!("k-{partition}-{offset}"),
                kind: if state.is_some() {
                    EventKind::Updated
                } else {
                    EventKind::Deleted
                },
                namespace: "acme".into(),
                entity_type: "Order".into(),
                entity_id: format!("o-{offset}"),
                partition_key: "acme".into(),
                key_hash: hash,
                shard: 3,
                version: offset + 1,
                timestamp_us: 1_700_000_000_000_000 + offset as i64,
                request_fingerprint: None,
                owner_epoch: 0,
                state: state.map(Json::from_trusted),
            },
        }
    }

    #[test]
    fn roundtrips_and_sorts_by_signed_key_hash() {
        let schema = arrow_schema().unwrap();
        let records = vec![
            record(0, 0, 5, Some("{\"a\":1}")),
            record(0, 1, u64::MAX, None),
            record(1, 7, 1 << 62, Some("{}")),
        ];
        let batch = records_to_batch(&schema, &records, vec![0, 1, 2]).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let back = batch_to_records(&batch).unwrap();
        // u64::MAX is -1 as a long, so it sorts first.
        assert_eq!(
            back,
            vec![records[1].clone(), records[0].clone(), records[2].clone()]
        );
    }

    #[test]
    fn owner_epochs_and_fingerprints_roundtrip() {
        let schema = arrow_schema().unwrap();
        let mut records = vec![record(0, 0, 5, Some("{}")), record(0, 1, 6, None)];
        records[0].event.owner_epoch = 7;
        records[1].event.owner_epoch = u64::from(u32::MAX) + 3;
        records[1].event.request_fingerprint = Some(u64::MAX - 1);
        let batch = records_to_batch(&schema, &records, vec![0, 1]).unwrap();
        assert_eq!(batch_to_records(&batch).unwrap(), records);
    }

    /// A table created before `owner_epoch` and `request_fingerprint`
    /// existed: its batches have no such columns, its rows read back as
    /// epoch 0 without a fingerprint, and the upgrade adds both.
    #[test]
    fn a_schema_without_the_epoch_column_writes_and_reads_epoch_zero() {
        let old = layout::schema().unwrap();
        let fields: Vec<_> = old
            .as_struct()
            .fields()
            .iter()
            .filter(|f| f.id < layout::field::OWNER_EPOCH)
            .cloned()
            .collect();
        let old = iceberg::spec::Schema::builder()
            .with_fields(fields)
            .build()
            .unwrap();
        let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&old).unwrap());
        let mut records = vec![record(0, 0, 5, Some("{}"))];
        records[0].event.owner_epoch = 9;
        records[0].event.request_fingerprint = Some(4);
        let batch = records_to_batch(&schema, &records, vec![0]).unwrap();
        assert_eq!(batch.num_columns(), layout::COLUMNS.len() - 2);
        records[0].event.owner_epoch = 0;
        records[0].event.request_fingerprint = None;
        assert_eq!(batch_to_records(&batch).unwrap(), records);

        let upgraded = layout::upgraded_schema(&old, 1).unwrap().unwrap();
        assert_eq!(upgraded.schema_id(), 1);
        assert_eq!(
            upgraded.as_struct().fields().len(),
            layout::COLUMNS.len(),
            "the upgrade adds exactly the missing columns"
        );
        assert!(layout::upgraded_schema(&upgraded, 2).unwrap().is_none());
    }
}
