//! `events`: a DataFusion table over one snapshot of `floe.events`.
//!
//! Files are planned by Iceberg (partition pruning from the manifests, then
//! min/max pruning from each file's column bounds) with the query's filters
//! translated to an Iceberg predicate; the planned files are then read by
//! DataFusion's own Parquet scan, spread over `target_partitions` file
//! groups, with row-group and page-index pruning and filter pushdown. Every
//! filter is reported `Inexact`, so DataFusion applies it to the rows too.

use std::any::Any;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DataFusionError, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use futures::TryStreamExt;
use iceberg::scan::FileScanTask;
use iceberg::table::Table;

use crate::error::{Error, Result};
use crate::predicate::Translation;
use crate::store;

/// The Arrow schema SQL sees for `events`: the Iceberg schema with strings as
/// `Utf8View` (what DataFusion's Parquet reader produces natively) and no
/// field-id metadata.
pub(crate) fn sql_schema(table: &Table) -> Result<SchemaRef> {
    let arrow = iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
        .map_err(|e| Error::iceberg("converting the events schema to Arrow", e))?;
    let fields: Vec<Field> = arrow
        .fields()
        .iter()
        .map(|f| {
            let data_type = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
                other => other.clone(),
            };
            Field::new(f.name(), data_type, f.is_nullable())
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// What Iceberg planning decided, summed over the scans of one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PlannedScan {
    pub(crate) files_total: u64,
    pub(crate) files_scanned: u64,
    pub(crate) partitions_total: u64,
    pub(crate) partitions_scanned: u64,
    /// Bytes of the planned files (whole files; what is read is less).
    pub(crate) bytes_planned: u64,
    pub(crate) pending_rows: u64,
}

/// Files, partitions, bytes and rows of a whole snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SnapshotTotals {
    pub(crate) files: u64,
    pub(crate) partitions: u64,
    pub(crate) bytes: u64,
    pub(crate) rows: u64,
}

impl SnapshotTotals {
    pub(crate) async fn of(table: &Table, snapshot: Option<i64>) -> Result<SnapshotTotals> {
        let tasks = plan(table, snapshot, None).await?;
        Ok(SnapshotTotals {
            files: tasks.len() as u64,
            partitions: distinct_partitions(&tasks),
            bytes: tasks.iter().map(|t| t.file_size_in_bytes).sum(),
            rows: tasks.iter().filter_map(|t| t.record_count).sum(),
        })
    }
}

fn distinct_partitions(tasks: &[FileScanTask]) -> u64 {
    tasks
        .iter()
        .map(|t| format!("{:?}", t.partition))
        .collect::<HashSet<_>>()
        .len() as u64
}

/// Plans the data files of `snapshot` that may hold rows matching `filter`.
async fn plan(
    table: &Table,
    snapshot: Option<i64>,
    filter: Option<iceberg::expr::Predicate>,
) -> Result<Vec<FileScanTask>> {
    let Some(snapshot) = snapshot else {
        return Ok(Vec::new());
    };
    let mut builder = table.scan().snapshot_id(snapshot);
    if let Some(filter) = filter {
        builder = builder.with_filter(filter);
    }
    let scan = builder
        .build()
        .map_err(|e| Error::iceberg("planning the scan of floe.events", e))?;
    let tasks: Vec<FileScanTask> = scan
        .plan_files()
        .await
        .map_err(|e| Error::iceberg("planning the files of floe.events", e))?
        .try_collect()
        .await
        .map_err(|e| Error::iceberg("reading the manifests of floe.events", e))?;
    if let Some(task) = tasks.iter().find(|t| !t.deletes.is_empty()) {
        // floe only appends; a delete file means another writer changed the
        // table, and reading around it would return deleted rows.
        return Err(Error::Unsupported(format!(
            "data file {} has delete files; floe's reader handles append-only tables",
            task.data_file_path
        )));
    }
    Ok(tasks)
}

/// `events` at one snapshot, plus (fresh mode) acknowledged events the lake
/// does not hold yet.
#[derive(Debug)]
pub(crate) struct EventsTable {
    schema: SchemaRef,
    table: Table,
    snapshot: Option<i64>,
    totals: SnapshotTotals,
    translation: Translation,
    pending: Vec<RecordBatch>,
    planned: Arc<Mutex<PlannedScan>>,
    remote_read_concurrency: usize,
}

impl EventsTable {
    pub(crate) fn new(
        table: Table,
        schema: SchemaRef,
        snapshot: Option<i64>,
        totals: SnapshotTotals,
        translation: Translation,
        pending: Vec<RecordBatch>,
    ) -> Self {
        EventsTable {
            schema,
            table,
            snapshot,
            totals,
            translation,
            pending,
            planned: Arc::default(),
            remote_read_concurrency: 1,
        }
    }

    /// Spreads scans of files in an object store over at least `files`
    /// groups (see [`crate::QueryOptions::remote_read_concurrency`]).
    pub(crate) fn with_remote_read_concurrency(mut self, files: usize) -> Self {
        self.remote_read_concurrency = files.max(1);
        self
    }

    /// What planning decided so far, over every scan of this table.
    pub(crate) fn planned(&self) -> PlannedScan {
        *self.planned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The planned files in balanced groups, and the one object store they
    /// are all in (the warehouse's): `target_partitions` groups for local
    /// files, at least `remote_read_concurrency` for an object store.
    fn parquet_files(
        &self,
        tasks: &[FileScanTask],
        target_partitions: usize,
    ) -> Result<(ObjectStoreUrl, Vec<FileGroup>)> {
        let mut store: Option<ObjectStoreUrl> = None;
        // Largest first onto the lightest group: balanced bytes per partition.
        let mut files: Vec<(u64, PartitionedFile)> = tasks
            .iter()
            .map(|t| {
                let address = store::address(&t.data_file_path)?;
                match &store {
                    Some(url) if *url != address.store => {
                        return Err(Error::Unsupported(format!(
                            "data file {} is outside the warehouse's store {}",
                            t.data_file_path,
                            url.as_str()
                        )));
                    }
                    Some(_) => {}
                    None => store = Some(address.store.clone()),
                }
                Ok((
                    t.file_size_in_bytes,
                    PartitionedFile::new(address.path, t.file_size_in_bytes),
                ))
            })
            .collect::<Result<_>>()?;
        let store = store.unwrap_or_else(ObjectStoreUrl::local_filesystem);
        let groups = if store == ObjectStoreUrl::local_filesystem() {
            target_partitions
        } else {
            target_partitions.max(self.remote_read_concurrency)
        };
        files.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups.max(1)];
        for (size, file) in files {
            let lightest = groups
                .iter_mut()
                .min_by_key(|(bytes, _)| *bytes)
                .expect("at least one group");
            lightest.0 += size;
            lightest.1.push(file);
        }
        let groups = groups
            .into_iter()
            .filter(|(_, files)| !files.is_empty())
            .map(|(_, files)| FileGroup::new(files))
            .collect();
        Ok((store, groups))
    }

    async fn scan_files(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filter = self.translation.filters(filters);
        let tasks = plan(&self.table, self.snapshot, filter).await?;
        {
            let mut planned = self.planned.lock().unwrap_or_else(|p| p.into_inner());
            planned.files_total += self.totals.files;
            planned.partitions_total += self.totals.partitions;
            planned.files_scanned += tasks.len() as u64;
            planned.partitions_scanned += distinct_partitions(&tasks);
            planned.bytes_planned += tasks.iter().map(|t| t.file_size_in_bytes).sum::<u64>();
            planned.pending_rows += self
                .pending
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>();
        }
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !tasks.is_empty() {
            let (store, groups) =
                self.parquet_files(&tasks, state.config_options().execution.target_partitions)?;
            let mut statistics = Statistics::new_unknown(&self.schema);
            let counts: Option<Vec<u64>> = tasks.iter().map(|t| t.record_count).collect();
            if let Some(counts) = counts {
                statistics =
                    statistics.with_num_rows(Precision::Exact(counts.iter().sum::<u64>() as usize));
            }
            let source = Arc::new(ParquetSource::new(TableSchema::new(
                self.schema.clone(),
                vec![],
            )));
            let config = FileScanConfigBuilder::new(store, source)
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            let format =
                ParquetFormat::default().with_options(state.table_options().parquet.clone());
            inputs.push(format.create_physical_plan(state, config).await?);
        }
        if !self.pending.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                std::slice::from_ref(&self.pending),
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p).map_err(DataFusionError::from)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        Ok(UnionExec::try_new(inputs)?)
    }
}

#[async_trait]
impl datafusion::catalog::TableProvider for EventsTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Used to prune files; DataFusion still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.scan_files(state, projection, filters, limit)
            .await
            .map_err(|e| match e {
                Error::Sql(e) => *e,
                other => DataFusionError::External(Box::new(other)),
            })
    }
}
