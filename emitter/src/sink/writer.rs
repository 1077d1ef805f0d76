//! Writing pipeline records as Parquet data files of `floe.events`.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use floe_engine::Record;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultLocationGenerator, FileNameGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use uuid::Uuid;

use super::batch;
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

/// Turns records into data files: one Arrow batch sorted by key hash, split by
/// partition, each partition written by its own task (Parquet encoding is the
/// CPU-heavy part, so partitions encode in parallel).
#[derive(Clone)]
pub(crate) struct DataWriter {
    arrow_schema: SchemaRef,
    splitter: Arc<RecordBatchPartitionSplitter>,
    rolling: Rolling,
}

impl std::fmt::Debug for DataWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataWriter").finish_non_exhaustive()
    }
}

impl DataWriter {
    pub(crate) fn new(table: &Table, target_file_size: usize, zstd_level: i32) -> Result<Self> {
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
            schema.clone(),
            metadata.default_partition_spec().clone(),
        )
        .map_err(|e| Error::iceberg("building the partition splitter", e))?;
        let level = ZstdLevel::try_new(zstd_level)
            .map_err(|e| Error::LakeConfig(format!("zstd level {zstd_level}: {e}")))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .build();
        let location = DefaultLocationGenerator::new(metadata)
            .map_err(|e| Error::iceberg("reading the table's data location", e))?;
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, schema),
            target_file_size,
            table.file_io().clone(),
            location,
            UniqueFileNames,
        );
        Ok(DataWriter {
            arrow_schema: batch::arrow_schema()?,
            splitter: Arc::new(splitter),
            rolling,
        })
    }

    /// Writes the records; returns the data files (not yet committed).
    pub(crate) async fn write(&self, records: &[Record]) -> Result<Vec<DataFile>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let batch = batch::records_to_batch(&self.arrow_schema, records)?;
        let parts = self
            .splitter
            .split(&batch)
            .map_err(|e| Error::iceberg("splitting events by partition", e))?;
        drop(batch);
        let mut tasks = tokio::task::JoinSet::new();
        for (key, part) in parts {
            let builder = DataFileWriterBuilder::new(self.rolling.clone());
            tasks.spawn(async move {
                let mut writer = builder.build(Some(key)).await?;
                writer.write(part).await?;
                writer.close().await
            });
        }
        let mut files = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let written =
                joined.map_err(|e| Error::Task(format!("a file writer task failed: {e}")))?;
            files.extend(written.map_err(|e| Error::iceberg("writing data files", e))?);
        }
        Ok(files)
    }
}
