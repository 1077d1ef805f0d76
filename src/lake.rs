//! The Iceberg lake in the assembled system: opening it, the sink task that
//! runs inside [`crate::Floe`], and the standalone `floe sink`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_emitter::sink::{LagHandle, Lake, LandStats, Sink, SinkLag, SinkOptions};
use floe_engine::Pipeline;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::datadir::DirLock;
use crate::error::{Error, Result};
use floe_config::Config;

/// Where a data directory keeps the name its sinks hold the lease under.
const INSTANCE_FILE: &str = "sink.id";
/// Wait before restarting a sink that failed with a transient error; it
/// doubles with every failure in a row, up to [`MAX_RESTART_DELAY`].
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Whether the in-process sink is restarted after `e`: retryable errors,
/// and any failure of the catalog or the object store (an outage, a 5xx of
/// a REST catalog; iceberg-rust marks few of them retryable, yet they
/// pass). Nothing is lost either way, the sink resumes from the lake's
/// offsets; fencing, configuration and layout errors, which a restart
/// cannot fix, stop it.
fn restartable(e: &floe_emitter::Error) -> bool {
    use floe_emitter::Error as E;
    e.is_retryable()
        || matches!(
            e,
            E::Iceberg { .. } | E::CatalogUnavailable { .. } | E::WarehouseNotWritable { .. }
        )
}

/// Opens the configured lake (creating `floe.events` if needed), or `None`
/// when `lake.enabled` is off. Unreachable catalogs and unwritable warehouses
/// fail here, at start.
pub(crate) async fn open(config: &Config) -> Result<Option<Lake>> {
    if !config.lake.enabled {
        return Ok(None);
    }
    let location = config.lake.location(&config.data_dir)?;
    Ok(Some(Lake::open(location).await.map_err(Error::Lake)?))
}

/// Refuses a pipeline that ends below the lake's committed offsets: its next
/// offsets would be ones the lake already holds, so the sink would skip the
/// writes that get them (an acknowledged write never landing).
pub(crate) async fn check_pipeline_covers_lake(pipeline: &dyn Pipeline, lake: &Lake) -> Result<()> {
    let committed = lake
        .committed_offsets(pipeline.partitions())
        .await
        .map_err(Error::Lake)?;
    for (partition, &lake_committed) in (0u32..).zip(&committed.offsets) {
        let log_high = pipeline.high_watermark(partition).await?;
        if log_high < lake_committed {
            return Err(Error::LogBehindLake {
                partition,
                log_high,
                lake_committed,
            });
        }
    }
    Ok(())
}

/// A read-only query session over the configured lake, without taking the
/// data directory's lock: it reads committed snapshots only, so it runs
/// beside a live `Floe` or `floe sink` (no fresh mode: the pipeline belongs
/// to them). Fails when the lake is off or (embedded catalog) absent.
pub async fn open_query(config: &Config) -> Result<floe_query::CrossShardQuery> {
    config.validate()?;
    if !config.lake.enabled {
        return Err(Error::LakeDisabled { needs: "SQL" });
    }
    let location = config.lake.location(&config.data_dir)?;
    if let floe_emitter::sink::CatalogUrl::Sqlite(path) = &location.catalog
        && !path.exists()
    {
        return Err(Error::NoLake { path: path.clone() });
    }
    let lake = Lake::open(location).await.map_err(Error::Lake)?;
    let query = floe_query::CrossShardQuery::new(lake, config.query_options());
    // `things.shard` is the owner under the directory's topology, read
    // again at each query: a floe serving the directory may migrate.
    let Some(topology) = crate::datadir::load_topology(&config.data_dir)? else {
        return Ok(query);
    };
    let opened = Arc::new(floe_engine::Router::new(topology)?);
    let dir = config.data_dir.clone();
    Ok(query.with_router(Arc::new(move || {
        match crate::datadir::load_topology(&dir) {
            Ok(Some(t)) if t.version != opened.topology().version => floe_engine::Router::new(t)
                .map(Arc::new)
                .unwrap_or_else(|_| opened.clone()),
            _ => opened.clone(),
        }
    })))
}

/// The sink settings for this data directory: the configured ones, with the
/// directory's instance id (created on first use in `DATA/sink.id`), so that
/// a restart after a crash takes over the crashed run's lease at once.
pub(crate) fn sink_options(config: &Config) -> Result<SinkOptions> {
    let path = config.data_dir.join(INSTANCE_FILE);
    let id = match std::fs::read_to_string(&path) {
        Ok(id) => id.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("floe-{}", uuid::Uuid::new_v4());
            std::fs::write(&path, &id)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            id
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    Ok(SinkOptions {
        instance: id,
        ..config.lake.sink_options()
    })
}

/// The sink running inside a `Floe`: restarted after retryable failures,
/// stopped (with a final commit) by [`SinkTask::stop`].
#[derive(Debug)]
pub(crate) struct SinkTask {
    stop: watch::Sender<bool>,
    /// Compaction and expiry beside the sink (`[lake.maintenance]`).
    maintenance: Mutex<Option<floe_emitter::lake::Maintenance>>,
    task: Mutex<Option<JoinHandle<()>>>,
    lag: Arc<Mutex<Option<LagHandle>>>,
}

impl SinkTask {
    /// Starts the sink; fails at once if it cannot take the commit lease.
    pub(crate) async fn start(
        lake: Lake,
        pipeline: Arc<dyn Pipeline>,
        config: &Config,
    ) -> Result<SinkTask> {
        let options = sink_options(config)?;
        let sink = Sink::start(lake.clone(), pipeline.clone(), options.clone())
            .await
            .map_err(Error::Lake)?;
        let lag = Arc::new(Mutex::new(Some(sink.lag_handle())));
        let (stop, stopped) = watch::channel(false);
        let slot = lag.clone();
        let maintenance = crate::maintain::start_policy(&lake, config);
        let task = tokio::spawn(async move {
            let mut sink = Some(sink);
            let mut delay = RESTART_DELAY;
            loop {
                let current = match sink.take() {
                    Some(sink) => sink,
                    None => {
                        match Sink::start(lake.clone(), pipeline.clone(), options.clone()).await {
                            Ok(sink) => {
                                *slot.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(sink.lag_handle());
                                sink
                            }
                            Err(e) if restartable(&e) && !*stopped.borrow() => {
                                tracing::warn!(error = %e, retry_in = ?delay, "restarting the sink failed; retrying");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(MAX_RESTART_DELAY);
                                continue;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the sink cannot start; the lake stops receiving events");
                                return;
                            }
                        }
                    }
                };
                let started = std::time::Instant::now();
                match current.run(stopped.clone()).await {
                    Ok(stats) => {
                        tracing::info!(?stats, "the sink stopped");
                        return;
                    }
                    Err(e) if restartable(&e) && !*stopped.borrow() => {
                        // A run that lasted a while was healthy: start the
                        // backoff over.
                        if started.elapsed() > MAX_RESTART_DELAY {
                            delay = RESTART_DELAY;
                        }
                        tracing::warn!(error = %e, retry_in = ?delay, "the sink failed; restarting from the lake's offsets");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_RESTART_DELAY);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the sink stopped on an error");
                        return;
                    }
                }
            }
        });
        Ok(SinkTask {
            stop,
            maintenance: Mutex::new(maintenance),
            task: Mutex::new(Some(task)),
            lag,
        })
    }

    /// Lag of the lake behind the pipeline.
    pub(crate) async fn lag(&self, pipeline: &dyn Pipeline) -> Result<SinkLag> {
        let handle = self
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::SinkNotStarted)?;
        handle.lag(pipeline).await.map_err(Error::Lake)
    }

    /// Asks the sink to land everything up to the head and stop; waits.
    pub(crate) async fn stop(&self) {
        let maintenance = self
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(maintenance) = maintenance {
            maintenance.stop().await;
        }
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the sink task panicked");
        }
    }
}

/// How `floe sink` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Land everything up to the pipeline's current head, then exit.
    Once,
    /// Land continuously until the stop signal.
    Follow,
}

/// `floe sink`: lands the data directory's pipeline in the lake outside a
/// running `Floe` (which holds the directory's lock, so the two never run at
/// once on one directory).
pub async fn run_sink(
    config: &Config,
    mode: SinkMode,
    stop: watch::Receiver<bool>,
) -> Result<LandStats> {
    config.validate()?;
    let _lock = DirLock::acquire(&config.data_dir)?;
    let lake = open(config).await?.ok_or(Error::LakeDisabled {
        needs: "landing (`floe sink`)",
    })?;
    let pipeline = crate::floe::open_pipeline(config).await?;
    check_pipeline_covers_lake(&*pipeline, &lake).await?;
    let mut sink = Sink::start(lake.clone(), pipeline.clone(), sink_options(config)?)
        .await
        .map_err(Error::Lake)?;
    let stats = match mode {
        SinkMode::Once => {
            let stats = sink.land_to_head().await.map_err(Error::Lake)?;
            sink.release().await.map_err(Error::Lake)?;
            stats
        }
        SinkMode::Follow => {
            let maintenance = crate::maintain::start_policy(&lake, config);
            let landed = sink.run(stop).await.map_err(Error::Lake);
            if let Some(maintenance) = maintenance {
                maintenance.stop().await;
            }
            landed?
        }
    };
    pipeline.close().await?;
    Ok(stats)
}
