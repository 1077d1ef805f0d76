//! [`CrossShardQuery`]: a read-only DataFusion session over `floe.events`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use floe_emitter::sink::Lake;
use floe_engine::Pipeline;
use iceberg::table::Table;

use crate::cache::{CacheKey, ResultCache};
use crate::cancel::{self, Cancel, QueryRuntime};
use crate::error::{Error, Result};
use crate::file_cache::{CacheHandle, DataCacheStats};
use crate::fresh::{self, Tail};
use crate::options::{AsOf, QueryOptions, QueryRequest};
use crate::owner::{self, RouterSource};
use crate::predicate::Translation;
use crate::provider::{EventsTable, SnapshotTotals, sql_schema};
use crate::stats::QueryStats;
use crate::store;
use crate::things::{self, Thing, ThingsQuery, things_sql};

/// Times fresh mode re-pins when retention overtakes the snapshot it read.
const FRESH_ATTEMPTS: usize = 3;

/// Rows of a query, as Arrow batches, with what it cost.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The result's schema.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Figures of this query.
    pub stats: QueryStats,
}

impl QueryResult {
    /// Rows in the result.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A page of [`ThingsQuery`] results.
#[derive(Debug, Clone)]
pub struct ThingsPage {
    /// The entities, in the query's order.
    pub things: Vec<Thing>,
    /// Figures of the query.
    pub stats: QueryStats,
}

/// SQL across every shard, answered from the Iceberg table `floe.events`.
///
/// Tables: `events` (every landed event, one row each) and the view
/// `things` (the current state of every live entity). JSON functions of
/// `datafusion-functions-json` read entity fields: `json_get_str(data,
/// 'status')`. Statements that would write are refused
/// ([`Error::ReadOnly`]).
pub struct CrossShardQuery {
    lake: Lake,
    options: QueryOptions,
    /// Shared by every query: object stores and the Parquet metadata cache.
    runtime: Arc<RuntimeEnv>,
    cache: Mutex<ResultCache>,
    /// The last loaded table, reused while its metadata file is unchanged
    /// (it keeps Iceberg's manifest cache warm).
    table: Mutex<Option<Table>>,
    totals: Mutex<HashMap<i64, SnapshotTotals>>,
    pipeline: Option<Arc<dyn Pipeline>>,
    /// Where plans execute, apart from the caller's runtime.
    executor: QueryRuntime,
    /// Why the warehouse's object store could not be registered (every
    /// query then fails with it).
    store_error: Option<String>,
    /// The object-store warehouse's data file cache, if any.
    data_cache: Option<CacheHandle>,
    /// The topology in force, for `things.shard` (the owner now).
    router: Option<RouterSource>,
}

/// What a query runs: SQL text, or a typed things query planned without SQL.
#[derive(Clone, Copy)]
enum Source<'a> {
    Sql(&'a str),
    Things(&'a ThingsQuery),
}

/// A [`Source`] checked and parsed.
enum Prepared<'a> {
    Sql(DfStatement),
    Things(&'a ThingsQuery),
}

impl std::fmt::Debug for CrossShardQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossShardQuery")
            .field("lake", &self.lake)
            .field("options", &self.options)
            .field("fresh", &self.pipeline.is_some())
            .finish_non_exhaustive()
    }
}

impl CrossShardQuery {
    /// A query session over an open lake. Its queries execute on a
    /// runtime of their own (one worker per scan partition).
    ///
    /// # Panics
    /// If the operating system refuses to start the runtime's threads.
    pub fn new(lake: Lake, options: QueryOptions) -> Self {
        let executor = QueryRuntime::new(options.target_partitions)
            .unwrap_or_else(|e| panic!("floe-query: {e}"));
        let cache = ResultCache::new(
            options.cache_ttl,
            options.cache_max_entries,
            options.cache_max_bytes,
        );
        let runtime = Arc::new(RuntimeEnv::default());
        let (data_cache, store_error) =
            match store::register(&runtime, lake.location(), options.data_cache_bytes) {
                Ok(cache) => (cache, None),
                Err(e) => (None, Some(e.to_string())),
            };
        CrossShardQuery {
            store_error,
            data_cache,
            lake,
            options,
            runtime,
            cache: Mutex::new(cache),
            table: Mutex::new(None),
            totals: Mutex::new(HashMap::new()),
            pipeline: None,
            executor,
            router: None,
        }
    }

    /// `things.shard` becomes the shard that owns each entity under the
    /// router `source` hands out when a query starts (without one it is the
    /// shard that wrote the entity's latest event).
    pub fn with_router(mut self, source: RouterSource) -> Self {
        self.router = Some(source);
        self
    }

    /// Enables fresh mode: queries with [`QueryRequest::fresh`] also read
    /// the events of `pipeline` that the lake does not hold yet.
    pub fn with_pipeline(mut self, pipeline: Arc<dyn Pipeline>) -> Self {
        self.pipeline = Some(pipeline);
        self
    }

    /// The settings in force.
    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    /// Drops every cached result and every cached data file byte: after an
    /// erase, no copy of the erased rows stays in this process's memory
    /// (they would not be served, as no current snapshot references their
    /// files, but they would stay until evicted).
    pub fn forget_cached(&self) {
        self.cache().clear();
        if let Some(files) = &self.data_cache {
            files.clear();
        }
    }

    /// What the data file cache holds and how often it answered; `None`
    /// for a local warehouse or with [`QueryOptions::data_cache_bytes`] 0.
    pub fn data_cache_stats(&self) -> Option<DataCacheStats> {
        self.data_cache.as_ref().map(CacheHandle::stats)
    }

    /// Runs one SQL statement against the current snapshot.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.sql_with(sql, &QueryRequest::default()).await
    }

    /// Runs one SQL statement with options (time travel, fresh, timeout).
    pub async fn sql_with(&self, sql: &str, request: &QueryRequest) -> Result<QueryResult> {
        self.execute(Source::Sql(sql), request).await
    }

    async fn execute(&self, source: Source<'_>, request: &QueryRequest) -> Result<QueryResult> {
        let started = Instant::now();
        let timeout = request.timeout.unwrap_or(self.options.timeout);
        let cancel = Cancel::new(timeout);
        // The deadline is kept by a plain thread, not tokio's timer: it sets
        // the plan's cancellation flag (checked at every batch of every
        // operator, see `cancel`) and wakes this future whatever the
        // runtimes' workers are doing.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let (fire, deadline) = tokio::sync::oneshot::channel::<()>();
        let flag = cancel.clone();
        std::thread::Builder::new()
            .name("floe-query-deadline".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    finished.recv_timeout(timeout)
                {
                    flag.cancel();
                    let _ = fire.send(());
                }
            })
            .map_err(|e| Error::Unsupported(format!("cannot start the query deadline: {e}")))?;
        let outcome = tokio::select! {
            biased;
            Ok(()) = deadline => Err(cancel.error()),
            result = self.run(source, request, &cancel) => result,
        };
        drop(done);
        let mut result = outcome.map_err(|e| e.or_outage(self.lake.location()))?;
        result.stats.elapsed = started.elapsed();
        Ok(result)
    }

    /// `query_things` of seed 004: live entities of a type, filtered on
    /// fields of their JSON, ordered and paged.
    pub async fn query_things(&self, query: &ThingsQuery) -> Result<ThingsPage> {
        self.query_things_with(query, &QueryRequest::default())
            .await
    }

    /// [`CrossShardQuery::query_things`] with options.
    pub async fn query_things_with(
        &self,
        query: &ThingsQuery,
        request: &QueryRequest,
    ) -> Result<ThingsPage> {
        let result = self.execute(Source::Things(query), request).await?;
        Ok(ThingsPage {
            things: things::decode(&result.batches)?,
            stats: result.stats,
        })
    }

    /// The current snapshot id of `floe.events` (`None`: nothing landed).
    pub async fn current_snapshot(&self) -> Result<Option<i64>> {
        Ok(self.load_table().await?.metadata().current_snapshot_id())
    }

    async fn run(
        &self,
        source: Source<'_>,
        request: &QueryRequest,
        cancel: &Cancel,
    ) -> Result<QueryResult> {
        if request.fresh && request.as_of.is_some() {
            return Err(Error::InvalidQuery(
                "fresh mode reads the newest events; it cannot be combined with time travel".into(),
            ));
        }
        let ctx = self.session()?;
        // One router for the whole query: every row is routed by one version.
        let router = self.router.as_ref().map(|source| source());
        let (prepared, uses_things, text) = match source {
            Source::Sql(sql) => {
                let statement = read_only_statement(&ctx, sql)?;
                let references = ctx.state().resolve_table_references(&statement)?;
                let uses_things = references.iter().any(|r| r.table() == "things");
                (Prepared::Sql(statement), uses_things, sql.to_string())
            }
            // The cache key only: the query itself is never SQL text.
            Source::Things(query) => (
                Prepared::Things(query),
                true,
                format!("\u{0}things {query:?}"),
            ),
        };
        let table = self.load_table().await?;
        let schema = sql_schema(&table)?;
        let (table, snapshot, pending) = if request.fresh {
            self.pin_fresh(table, &schema).await?
        } else {
            let snapshot = resolve(&table, request.as_of)?;
            (table, snapshot, Vec::new())
        };
        let use_cache = self.options.cache_enabled && !request.no_cache && !request.fresh;
        let key = CacheKey {
            sql: text,
            snapshot,
            // `things.shard` depends on the topology.
            topology: router
                .as_ref()
                .filter(|_| uses_things)
                .map(|r| r.topology().version),
        };
        if use_cache && let Some(batches) = self.cache().get(&key, Instant::now()) {
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            let schema = batches
                .first()
                .map(RecordBatch::schema)
                .unwrap_or_else(|| Arc::new(arrow_schema::Schema::empty()));
            return Ok(QueryResult {
                schema,
                batches: batches.as_ref().clone(),
                stats: QueryStats {
                    snapshot_id: snapshot,
                    rows,
                    cache_hit: true,
                    ..QueryStats::default()
                },
            });
        }
        let totals = self.totals(&table, snapshot).await?;
        let events = Arc::new(
            EventsTable::new(
                table,
                schema,
                snapshot,
                totals,
                Translation {
                    namespace_is_partition_key: self.options.namespace_is_partition_key,
                },
                pending,
            )
            .with_remote_read_concurrency(self.options.remote_read_concurrency),
        );
        ctx.register_table("events", events.clone())?;
        if let Some(router) = &router {
            ctx.register_udf(owner::udf(router.clone()));
        }
        // Planning the view costs about a millisecond: only when it is used.
        if uses_things {
            let things = ctx.sql(&things_sql(router.is_some())).await?.into_view();
            ctx.register_table("things", things)?;
        }

        let df = match prepared {
            Prepared::Things(query) => query.plan(ctx.table("things").await?)?,
            Prepared::Sql(statement) => {
                let plan = ctx.state().statement_to_plan(statement).await?;
                check_plan(&plan)?;
                ctx.execute_logical_plan(plan).await?
            }
        };
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let physical = cancel::guard(df.create_physical_plan().await?, cancel)?;
        let batches = self
            .executor
            .collect(physical.clone(), ctx.task_ctx(), cancel)
            .await?;
        let mut stats = QueryStats::from_plan(events.planned(), &physical);
        stats.snapshot_id = snapshot;
        stats.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        if use_cache {
            self.cache()
                .put(key, Arc::new(batches.clone()), Instant::now());
        }
        Ok(QueryResult {
            schema,
            batches,
            stats,
        })
    }

    /// The current snapshot and the pipeline events after its offsets.
    async fn pin_fresh(
        &self,
        mut table: Table,
        schema: &SchemaRef,
    ) -> Result<(Table, Option<i64>, Vec<RecordBatch>)> {
        let pipeline = self.pipeline.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "fresh mode needs the pipeline: open the query through a running floe".into(),
            )
        })?;
        for _ in 0..FRESH_ATTEMPTS {
            match fresh::read_tail(pipeline, &table, schema).await? {
                Tail::Read(batches) => {
                    let snapshot = table.metadata().current_snapshot_id();
                    return Ok((table, snapshot, batches));
                }
                // The sink landed more and retention deleted what we were
                // about to read: the newer snapshot has it.
                Tail::Moved => table = self.load_table().await?,
            }
        }
        Err(Error::Unsupported(
            "fresh mode: the pipeline's retention kept overtaking the lake's snapshots".into(),
        ))
    }

    fn session(&self) -> Result<SessionContext> {
        if let Some(e) = &self.store_error {
            return Err(Error::ObjectStore(e.clone()));
        }
        let mut config = SessionConfig::new().with_information_schema(true);
        if self.options.target_partitions > 0 {
            config = config.with_target_partitions(self.options.target_partitions);
        }
        {
            let parquet = &mut config.options_mut().execution.parquet;
            // Late materialisation: filter columns are decoded first and the
            // rest only for matching rows (top-N and point queries).
            parquet.pushdown_filters = true;
            parquet.reorder_filters = true;
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build();
        datafusion_functions_json::register_all(&mut state)?;
        Ok(SessionContext::new_with_state(state))
    }

    async fn load_table(&self) -> Result<Table> {
        let table = self.lake.load_table().await?;
        let mut cached = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = cached.as_ref()
            && old.metadata_location().is_some()
            && old.metadata_location() == table.metadata_location()
        {
            return Ok(old.clone());
        }
        *cached = Some(table.clone());
        Ok(table)
    }

    async fn totals(&self, table: &Table, snapshot: Option<i64>) -> Result<SnapshotTotals> {
        let Some(id) = snapshot else {
            return Ok(SnapshotTotals::default());
        };
        if let Some(totals) = self
            .totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(*totals);
        }
        let totals = SnapshotTotals::of(table, snapshot).await?;
        let mut map = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 64 {
            map.clear();
        }
        map.insert(id, totals);
        Ok(totals)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ResultCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The snapshot a query reads.
fn resolve(table: &Table, as_of: Option<AsOf>) -> Result<Option<i64>> {
    let metadata = table.metadata();
    match as_of {
        None => Ok(metadata.current_snapshot_id()),
        Some(AsOf::Snapshot(id)) => match metadata.snapshot_by_id(id) {
            Some(_) => Ok(Some(id)),
            None => Err(Error::NoSuchSnapshot(format!(
                "{id} in floe.events{} (see the snapshots with `floe sql \"SELECT ...\" --stats` or the table's history)",
                expired_note(metadata)
            ))),
        },
        Some(AsOf::TimestampMs(ms)) => metadata
            .history()
            .iter()
            .rev()
            .find(|entry| entry.timestamp_ms <= ms)
            .map(|entry| Some(entry.snapshot_id))
            .ok_or_else(|| {
                Error::NoSuchSnapshot(format!(
                    "as of {ms} ms since the epoch: floe.events has no snapshot that old{}",
                    expired_note(metadata)
                ))
            }),
    }
}

/// Why a snapshot may be missing: `floe lake expire` removed the older ones.
fn expired_note(metadata: &iceberg::spec::TableMetadata) -> String {
    metadata
        .properties()
        .get(floe_emitter::lake::EXPIRED_BEFORE_PROPERTY)
        .map(|ms| {
            format!(
                "; snapshots committed before {ms} ms since the epoch were expired (`floe lake expire`) and their files deleted"
            )
        })
        .unwrap_or_default()
}

/// Parses one statement and refuses anything but a query (or EXPLAIN of one).
fn read_only_statement(ctx: &SessionContext, sql: &str) -> Result<DfStatement> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect)?;
    check_statement(&statement)?;
    Ok(statement)
}

fn check_statement(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(inner) => check_sql_statement(inner),
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => Err(Error::ReadOnly {
            statement: "CREATE EXTERNAL TABLE".into(),
        }),
        DfStatement::CopyTo(_) => Err(Error::ReadOnly {
            statement: "COPY".into(),
        }),
        other => Err(Error::ReadOnly {
            statement: first_words(&other.to_string()),
        }),
    }
}

fn check_sql_statement(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Query(_) => Ok(()),
        Statement::Explain { statement, .. } => check_sql_statement(statement),
        Statement::ShowTables { .. } | Statement::ShowColumns { .. } => Ok(()),
        other => Err(Error::ReadOnly {
            statement: first_words(&other.to_string()),
        }),
    }
}

/// Belt and braces: the plan must not be DDL, DML or a session statement.
fn check_plan(plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| Error::ReadOnly {
            statement: e.strip_backtrace(),
        })
}

/// `DROP TABLE events` -> `DROP TABLE`: the statement kind, for messages.
fn first_words(sql: &str) -> String {
    sql.split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()) && w.to_ascii_uppercase() == *w)
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str) -> Result<()> {
        let ctx = SessionContext::new();
        read_only_statement(&ctx, sql).map(|_| ())
    }

    #[test]
    fn queries_pass_and_writes_are_refused_with_their_kind() {
        assert!(check("SELECT count(*) FROM events").is_ok());
        assert!(check("EXPLAIN SELECT 1").is_ok());
        assert!(check("WITH t AS (SELECT 1) SELECT * FROM t").is_ok());
        for (sql, kind) in [
            ("DROP TABLE events", "DROP TABLE"),
            ("INSERT INTO events VALUES (1)", "INSERT INTO"),
            ("DELETE FROM events", "DELETE FROM"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("UPDATE events SET version = 1", "UPDATE"),
        ] {
            match check(sql) {
                Err(Error::ReadOnly { statement }) => assert_eq!(statement, kind, "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(matches!(
            check("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'"),
            Err(Error::ReadOnly { .. })
        ));
        assert!(matches!(
            check("EXPLAIN DROP TABLE events"),
            Err(Error::ReadOnly { .. })
        ));
    }
}
