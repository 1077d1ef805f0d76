//! Writing pipeline records as Parquet data files of `floe.events`.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use floe_engine::Record;
use std::collections::HashMap;

use iceberg::spec::{
    DataFile, DataFileFormat, Datum, Literal, PartitionKey, PartitionSpec, PrimitiveLiteral,
    Struct, Transform,
};
use iceberg::table::Table;
use iceberg::transform::{BoxedTransformFunction, create_transform_function};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultLocationGenerator, FileNameGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use uuid::Uuid;

use super::{batch, layout};
use crate::error::{Error, Result};

/// File names that never repeat: `floe-<uuid v7>.parquet`. The default
/// generator restarts its counter at 0 in every writer and would overwrite
/// files that earlier writers committed.
#[derive(Debug, Clone)]
pub(crate) struct UniqueFileNames;

impl FileNameGenerator for UniqueFileNames {
    fn generate_file_name(&self) -> String {
        format!("floe-{}.{}", Uuid::now_v7(), DataFileFormat::Parquet)
    }
}

type Rolling =
    RollingFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, UniqueFileNames>;

/// Turns records into data files. Records are grouped by partition
/// (`day(event_time)`, `bucket(16, partition_key)`, computed with Iceberg's own
/// transform functions, cached per distinct key), and each partition is sorted
/// by key hash, built into an Arrow batch and encoded to Parquet by its own
/// task, so partitions build and encode in parallel.
#[derive(Clone)]
pub(crate) struct DataWriter {
    arrow_schema: SchemaRef,
    spec: PartitionSpec,
    schema: iceberg::spec::SchemaRef,
    bucket: Arc<BoxedTransformFunction>,
    rolling: Rolling,
}

impl std::fmt::Debug for DataWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataWriter").finish_non_exhaustive()
    }
}

/// Microseconds per day: `day(event_time)` is the floor of this division.
const DAY_US: i64 = 86_400_000_000;

impl DataWriter {
    pub(crate) fn new(table: &Table, target_file_size: usize, zstd_level: i32) -> Result<Self> {
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().as_ref().clone();
        let expected: Vec<_> = layout::partition_spec()?
            .fields()
            .iter()
            .map(|f| (f.source_id, f.transform))
            .collect();
        let actual: Vec<_> = spec
            .fields()
            .iter()
            .map(|f| (f.source_id, f.transform))
            .collect();
        if actual != expected {
            return Err(Error::Layout(format!(
                "floe.events is partitioned by {actual:?}, the sink writes {expected:?}"
            )));
        }
        let bucket = create_transform_function(&Transform::Bucket(layout::KEY_BUCKETS))
            .map_err(|e| Error::iceberg("building the bucket transform", e))?;
        let level = ZstdLevel::try_new(zstd_level)
            .map_err(|e| Error::LakeConfig(format!("zstd level {zstd_level}: {e}")))?;
        // Columns whose values are (nearly) unique per row gain nothing from a
        // dictionary and cost a hash per value; their min/max statistics help
        // no query either. Statistics stay on everything that prunes:
        // key_hash above all, event_time, version, namespace, partition_key.
        let mut props = WriterProperties::builder().set_compression(Compression::ZSTD(level));
        for column in [
            "event_id",
            "idempotency_key",
            "state",
            "pipeline_offset",
            "request_fingerprint",
        ] {
            let path = ColumnPath::from(column);
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_statistics_enabled(path, EnabledStatistics::None);
        }
        let props = props.build();
        let location = DefaultLocationGenerator::new(metadata)
            .map_err(|e| Error::iceberg("reading the table's data location", e))?;
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, schema.clone()),
            target_file_size,
            table.file_io().clone(),
            location,
            UniqueFileNames,
        );
        Ok(DataWriter {
            arrow_schema: batch::table_arrow_schema(table)?,
            spec,
            schema,
            bucket: Arc::new(bucket),
            rolling,
        })
    }

    fn bucket_of(&self, partition_key: &str) -> Result<i32> {
        let datum = self
            .bucket
            .transform_literal_result(&Datum::string(partition_key))
            .map_err(|e| Error::iceberg("bucketing a partition key", e))?;
        match datum.literal() {
            PrimitiveLiteral::Int(bucket) => Ok(*bucket),
            other => Err(Error::Layout(format!(
                "bucket transform returned {other:?}"
            ))),
        }
    }

    /// Writes the records; returns the data files (not yet committed).
    pub(crate) async fn write(&self, records: Vec<Record>) -> Result<Vec<DataFile>> {
        let mut buckets: HashMap<&str, i32> = HashMap::new();
        let mut groups: HashMap<(i32, i32), Vec<u32>> = HashMap::new();
        for (i, record) in records.iter().enumerate() {
            let key = record.event.partition_key.as_str();
            let bucket = match buckets.get(key) {
                Some(&b) => b,
                None => {
                    let b = self.bucket_of(key)?;
                    buckets.insert(key, b);
                    b
                }
            };
            let day = record.event.timestamp_us.div_euclid(DAY_US) as i32;
            groups.entry((day, bucket)).or_default().push(i as u32);
        }
        drop(buckets);
        let records = Arc::new(records);
        let mut tasks = tokio::task::JoinSet::new();
        for ((day, bucket), rows) in groups {
            let key = PartitionKey::new(
                self.spec.clone(),
                self.schema.clone(),
                Struct::from_iter([Some(Literal::date(day)), Some(Literal::int(bucket))]),
            );
            let (records, writer) = (records.clone(), self.clone());
            tasks.spawn(async move {
                let batch = batch::records_to_batch(&writer.arrow_schema, &records, rows)?;
                drop(records);
                let builder = DataFileWriterBuilder::new(writer.rolling.clone());
                let mut file = builder
                    .build(Some(key))
                    .await
                    .map_err(|e| Error::iceberg("opening a data file", e))?;
                file.write(batch)
                    .await
                    .map_err(|e| Error::iceberg("writing a data file", e))?;
                file.close()
                    .await
                    .map_err(|e| Error::iceberg("closing a data file", e))
            });
        }
        let mut files = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let written =
                joined.map_err(|e| Error::Task(format!("a file writer task failed: {e}")))?;
            files.extend(written?);
        }
        Ok(files)
    }
}
