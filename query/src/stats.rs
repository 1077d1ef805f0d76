//! What a query read and skipped.

use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;

use crate::provider::PlannedScan;

/// Figures of one query: partitions and files scanned vs pruned by Iceberg
/// planning, row groups pruned by Parquet statistics, bytes actually read,
/// rows, whether the cache answered, and the time it took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// The snapshot read (`None`: nothing has landed yet).
    pub snapshot_id: Option<i64>,
    /// Partitions (`day` x `bucket(partition_key)`) of the snapshot, summed
    /// over the table's scans in the query.
    pub partitions_total: u64,
    /// Partitions with at least one file scanned.
    pub partitions_scanned: u64,
    /// `partitions_total - partitions_scanned`.
    pub partitions_pruned: u64,
    /// Data files of the snapshot (summed over scans).
    pub files_total: u64,
    /// Data files planned for reading after partition and min/max pruning.
    pub files_scanned: u64,
    /// `files_total - files_scanned`.
    pub files_pruned: u64,
    /// Row groups read / skipped by Parquet statistics in the scanned files.
    pub row_groups_scanned: u64,
    /// Row groups skipped by their statistics.
    pub row_groups_pruned: u64,
    /// Bytes read from the data files (Parquet footers, pages).
    pub bytes_scanned: u64,
    /// Bytes of the files planned (the upper bound of `bytes_scanned`).
    pub bytes_planned: u64,
    /// Rows the scans produced (after pushed-down filters).
    pub rows_scanned: u64,
    /// Acknowledged events read from the pipeline (fresh mode).
    pub pending_events: u64,
    /// Rows of the result.
    pub rows: u64,
    /// The result came from the cache (the other figures are then those of
    /// this lookup: nothing scanned).
    pub cache_hit: bool,
    /// Wall time of the query.
    pub elapsed: Duration,
}

impl QueryStats {
    pub(crate) fn from_plan(planned: PlannedScan, plan: &Arc<dyn ExecutionPlan>) -> QueryStats {
        let mut stats = QueryStats {
            partitions_total: planned.partitions_total,
            partitions_scanned: planned.partitions_scanned,
            partitions_pruned: planned
                .partitions_total
                .saturating_sub(planned.partitions_scanned),
            files_total: planned.files_total,
            files_scanned: planned.files_scanned,
            files_pruned: planned.files_total.saturating_sub(planned.files_scanned),
            bytes_planned: planned.bytes_planned,
            pending_events: planned.pending_rows,
            ..QueryStats::default()
        };
        stats.add_scan_metrics(plan.as_ref());
        stats
    }

    fn add_scan_metrics(&mut self, plan: &dyn ExecutionPlan) {
        if plan.name() == "DataSourceExec"
            && let Some(metrics) = plan.metrics()
        {
            self.rows_scanned += metrics.output_rows().unwrap_or(0) as u64;
            for metric in metrics.iter() {
                match metric.value() {
                    MetricValue::Count { name, count } if name == "bytes_scanned" => {
                        self.bytes_scanned += count.value() as u64;
                    }
                    MetricValue::PruningMetrics {
                        name,
                        pruning_metrics,
                    } if name == "row_groups_pruned_statistics" => {
                        self.row_groups_pruned += pruning_metrics.pruned() as u64;
                        self.row_groups_scanned += pruning_metrics.matched() as u64;
                    }
                    _ => {}
                }
            }
        }
        for child in plan.children() {
            self.add_scan_metrics(child.as_ref());
        }
    }
}

impl std::fmt::Display for QueryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self
            .snapshot_id
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        write!(
            f,
            "snapshot {snapshot}: {} rows in {:.1} ms{}; partitions {}/{} scanned ({} pruned), files {}/{} ({} pruned), row groups {} read / {} pruned, {} rows scanned, {:.2} MiB read of {:.2} MiB planned",
            self.rows,
            self.elapsed.as_secs_f64() * 1000.0,
            if self.cache_hit { " (cache hit)" } else { "" },
            self.partitions_scanned,
            self.partitions_total,
            self.partitions_pruned,
            self.files_scanned,
            self.files_total,
            self.files_pruned,
            self.row_groups_scanned,
            self.row_groups_pruned,
            self.rows_scanned,
            self.bytes_scanned as f64 / (1 << 20) as f64,
            self.bytes_planned as f64 / (1 << 20) as f64,
        )?;
        if self.pending_events > 0 {
            write!(
                f,
                ", {} acknowledged events not yet landed",
                self.pending_events
            )?;
        }
        Ok(())
    }
}
