//! Cancelling a running query: a dedicated runtime and a guarded plan.
//!
//! Dropping a DataFusion stream aborts the tasks it spawned, but an abort
//! only takes effect when the task yields, and a CPU-bound operator may not
//! yield for seconds: `CrossJoinExec` emits batch after batch without polling
//! its input (so DataFusion's cooperative budget, spent at the leaves, is
//! never used up), and `NestedLoopJoinExec` joins one probe batch with every
//! buffered row in a single poll. Two things make a timeout stop the work:
//!
//! - every operator's output passes through a [`GuardExec`], which checks the
//!   query's [`Cancel`] flag and spends a unit of tokio's cooperative budget
//!   on each batch, so a cancelled plan fails at its next batch anywhere in
//!   the tree, and long operators yield to the scheduler;
//! - the probe side of a nested loop join is cut into slices small enough
//!   that one probe (buffered rows x slice rows) stays under
//!   [`PROBE_BUDGET_ROWS`] joined rows, so the join reaches a check often.
//!
//! Queries execute on a [`QueryRuntime`] of their own, so that the caller
//! (the HTTP server, the shard workers) is not starved by a heavy query and
//! answers its timeout on time, whatever the query's workers are doing.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};

/// Most joined rows (buffered x probe) a nested loop join evaluates between
/// two cancellation checks, unless one probe row alone joins more.
pub(crate) const PROBE_BUDGET_ROWS: usize = 1 << 18;

/// The message of the error a cancelled plan fails with.
const CANCELLED: &str = "the query was cancelled";

/// A query's cancellation flag, shared by its deadline and its plan.
#[derive(Debug, Clone)]
pub(crate) struct Cancel {
    flag: Arc<AtomicBool>,
    /// The timeout that cancels the query, for its error.
    after: Duration,
}

impl Cancel {
    pub(crate) fn new(after: Duration) -> Cancel {
        Cancel {
            flag: Arc::new(AtomicBool::new(false)),
            after,
        }
    }

    pub(crate) fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// What a cancelled query answers.
    pub(crate) fn error(&self) -> Error {
        Error::Timeout { after: self.after }
    }
}

/// The runtime queries execute on (threads named `floe-query`).
pub(crate) struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl QueryRuntime {
    pub(crate) fn new(workers: usize) -> Result<QueryRuntime> {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            workers
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("floe-query")
            .enable_all()
            .build()
            .map_err(|e| Error::Unsupported(format!("cannot start the query runtime: {e}")))?;
        Ok(QueryRuntime {
            runtime: Some(runtime),
        })
    }

    /// Collects `plan` on the query runtime, guarded by `cancel`. When the
    /// returned future is dropped (a timeout, a caller that went away) the
    /// plan is cancelled and its task aborted.
    pub(crate) async fn collect(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        cancel: &Cancel,
    ) -> Result<Vec<RecordBatch>> {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        let handle = runtime.spawn(datafusion::physical_plan::collect(plan, task));
        let mut running = Running {
            handle,
            cancel: cancel.clone(),
        };
        match (&mut running.handle).await {
            Ok(Ok(batches)) => Ok(batches),
            Ok(Err(_)) if cancel.is_cancelled() => Err(cancel.error()),
            Ok(Err(e)) => Err(e.into()),
            Err(e) if e.is_panic() => Err(Error::Execution(panic_message(e))),
            Err(_) => Err(Error::Execution("the query runtime shut down".into())),
        }
    }
}

impl fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryRuntime").finish_non_exhaustive()
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a query operator panicked".into()
    }
}

/// A query task in flight: cancelled and aborted when dropped.
struct Running {
    handle: tokio::task::JoinHandle<DfResult<Vec<RecordBatch>>>,
    cancel: Cancel,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.handle.abort();
    }
}

/// `plan` with a [`GuardExec`] above every operator, and the probe side of
/// every nested loop join sliced.
pub(crate) fn guard(
    plan: Arc<dyn ExecutionPlan>,
    cancel: &Cancel,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    guard_node(plan, cancel, None)
}

fn guard_node(
    plan: Arc<dyn ExecutionPlan>,
    cancel: &Cancel,
    slice: Option<ProbeSlice>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let plan = if children.is_empty() {
        plan
    } else {
        // A nested loop join buffers its first child and probes with its
        // second: count the buffered rows to size the probe slices.
        let buffered = plan
            .as_any()
            .is::<NestedLoopJoinExec>()
            .then(|| Arc::new(AtomicUsize::new(0)));
        let guarded = children
            .into_iter()
            .enumerate()
            .map(|(i, child)| {
                let slice = buffered.as_ref().map(|rows| ProbeSlice {
                    buffered: rows.clone(),
                    probe: i == 1,
                });
                guard_node(child, cancel, slice)
            })
            .collect::<DfResult<Vec<_>>>()?;
        plan.with_new_children(guarded)?
    };
    Ok(Arc::new(GuardExec::new(plan, cancel.clone(), slice)))
}

/// The part a [`GuardExec`] plays below a nested loop join.
#[derive(Debug, Clone)]
struct ProbeSlice {
    /// Rows that went into the join's buffered side so far.
    buffered: Arc<AtomicUsize>,
    /// This is the probe side (slice it), not the buffered side (count it).
    probe: bool,
}

impl ProbeSlice {
    /// Largest probe batch that keeps one probe under the budget.
    fn max_probe_rows(&self) -> usize {
        let buffered = self.buffered.load(Ordering::Acquire).max(1);
        (PROBE_BUDGET_ROWS / buffered).max(1)
    }
}

/// Passes its input's batches through, failing once the query is cancelled.
#[derive(Debug)]
pub(crate) struct GuardExec {
    input: Arc<dyn ExecutionPlan>,
    cancel: Cancel,
    slice: Option<ProbeSlice>,
}

impl GuardExec {
    fn new(input: Arc<dyn ExecutionPlan>, cancel: Cancel, slice: Option<ProbeSlice>) -> Self {
        GuardExec {
            input,
            cancel,
            slice,
        }
    }
}

impl DisplayAs for GuardExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuardExec")
    }
}

impl ExecutionPlan for GuardExec {
    fn name(&self) -> &str {
        "GuardExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "GuardExec has one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(GuardExec::new(
            children.swap_remove(0),
            self.cancel.clone(),
            self.slice.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if self.cancel.is_cancelled() {
            return Err(DataFusionError::Execution(CANCELLED.into()));
        }
        Ok(Box::pin(GuardStream {
            schema: self.input.schema(),
            input: self.input.execute(partition, context)?,
            cancel: self.cancel.clone(),
            slice: self.slice.clone(),
            pending: None,
        }))
    }
}

struct GuardStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    cancel: Cancel,
    slice: Option<ProbeSlice>,
    /// The rest of a probe batch being handed out in slices.
    pending: Option<RecordBatch>,
}

impl GuardStream {
    /// The next slice of `batch`, keeping the rest in `pending`.
    fn cut(&mut self, batch: RecordBatch) -> RecordBatch {
        let Some(slice) = self.slice.as_ref().filter(|s| s.probe) else {
            return batch;
        };
        let max = slice.max_probe_rows();
        if batch.num_rows() <= max {
            return batch;
        }
        self.pending = Some(batch.slice(max, batch.num_rows() - max));
        batch.slice(0, max)
    }
}

impl Stream for GuardStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cancel.is_cancelled() {
            return Poll::Ready(Some(Err(DataFusionError::Execution(CANCELLED.into()))));
        }
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        if let Some(rest) = self.pending.take() {
            coop.made_progress();
            return Poll::Ready(Some(Ok(self.cut(rest))));
        }
        let polled = self.input.poll_next_unpin(cx);
        if polled.is_ready() {
            coop.made_progress();
        }
        match polled {
            Poll::Ready(Some(Ok(batch))) => {
                if let Some(slice) = self.slice.as_ref().filter(|s| !s.probe) {
                    slice.buffered.fetch_add(batch.num_rows(), Ordering::AcqRel);
                }
                Poll::Ready(Some(Ok(self.cut(batch))))
            }
            other => other,
        }
    }
}

impl RecordBatchStream for GuardStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap()
    }

    fn stream(
        batches: Vec<RecordBatch>,
        cancel: &Cancel,
        slice: Option<ProbeSlice>,
    ) -> GuardStream {
        let schema = batches[0].schema();
        let input = futures::stream::iter(batches.into_iter().map(Ok));
        GuardStream {
            schema: schema.clone(),
            input: Box::pin(RecordBatchStreamAdapter::new(schema, input)),
            cancel: cancel.clone(),
            slice,
            pending: None,
        }
    }

    #[tokio::test]
    async fn a_cancelled_stream_fails_at_its_next_batch() {
        let cancel = Cancel::new(Duration::from_secs(1));
        let mut s = stream(vec![batch(3), batch(3)], &cancel, None);
        assert_eq!(s.next().await.unwrap().unwrap().num_rows(), 3);
        cancel.cancel();
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains(CANCELLED), "{err}");
    }

    #[tokio::test]
    async fn probe_batches_are_sliced_to_the_budget_and_keep_every_row() {
        let cancel = Cancel::new(Duration::from_secs(1));
        let buffered = Arc::new(AtomicUsize::new(PROBE_BUDGET_ROWS / 10));
        let probe = ProbeSlice {
            buffered,
            probe: true,
        };
        let mut s = stream(vec![batch(25), batch(4)], &cancel, Some(probe));
        let mut sizes = Vec::new();
        let mut values = Vec::new();
        while let Some(b) = s.next().await {
            let b = b.unwrap();
            sizes.push(b.num_rows());
            let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            values.extend(col.values().iter().copied());
        }
        assert_eq!(sizes, vec![10, 10, 5, 4]);
        let expected: Vec<i64> = (0..25).chain(0..4).collect();
        assert_eq!(values, expected);
    }

    #[tokio::test]
    async fn the_buffered_side_is_counted_not_sliced() {
        let cancel = Cancel::new(Duration::from_secs(1));
        let buffered = Arc::new(AtomicUsize::new(0));
        let side = ProbeSlice {
            buffered: buffered.clone(),
            probe: false,
        };
        let mut s = stream(vec![batch(7), batch(5)], &cancel, Some(side));
        while let Some(b) = s.next().await {
            b.unwrap();
        }
        assert_eq!(buffered.load(Ordering::Acquire), 12);
    }
}
