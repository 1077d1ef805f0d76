//! `/metrics`: Prometheus (OpenMetrics text) exposition. Write counters and
//! ack latency histograms are recorded by `Floe` as writes end; the gauges
//! below are read from floe at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::AppState;
use super::errors::ApiError;
use super::routes::{Policy, guarded, policy};
use crate::Floe;
use crate::health::HealthStatus;
use crate::telemetry::ShardLabel;

/// How long a scrape waits for a shard's counters before using the last ones.
const SCRAPE_SHARD_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    action: &'static str,
    status: u16,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The registry and the metrics `floe serve` sets itself.
#[derive(Debug)]
pub(super) struct Metrics {
    registry: Mutex<Registry>,
    ready: Gauge,
    http: Family<HttpLabels, Counter>,
    inbox_depth: Family<ShardLabel, Gauge>,
    entities: Family<ShardLabel, Gauge>,
    bytes: Family<ShardLabel, Gauge>,
    pipeline_wait: Family<ShardLabel, FloatGauge>,
    health: Family<ShardLabel, Gauge>,
    up: Family<ShardLabel, Gauge>,
    routed: Family<ShardLabel, Counter>,
    routing_errors: Counter,
    sink_lag_events: Gauge,
    sink_lag_seconds: FloatGauge,
    sink_commits: Gauge,
    /// Progress of the running migration (one runs at a time), by figure:
    /// running, events_processed, events_total, keys_processed, keys_total,
    /// buffered_writes. All 0 when none runs.
    migration: Family<FigureLabel, Gauge>,
    /// Cluster mode: calls this node forwarded to their shard's owner, or
    /// served for another node, by outcome (see `forward.rs`).
    forwards: Family<ForwardLabel, Counter>,
    /// SQL over an object-store warehouse: the data file cache by figure
    /// (hits, misses, bytes, entries, capacity). Absent for local files.
    data_cache: Family<FigureLabel, Gauge>,
    archive: Family<FigureLabel, Gauge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ForwardLabel {
    outcome: &'static str,
}

/// The `figure` label of a family of related gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FigureLabel {
    figure: &'static str,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            ready: Gauge::default(),
            http: Family::default(),
            inbox_depth: Family::default(),
            entities: Family::default(),
            bytes: Family::default(),
            pipeline_wait: Family::default(),
            health: Family::default(),
            up: Family::default(),
            routed: Family::default(),
            routing_errors: Counter::default(),
            sink_lag_events: Gauge::default(),
            sink_lag_seconds: FloatGauge::default(),
            sink_commits: Gauge::default(),
            migration: Family::default(),
            forwards: Family::default(),
            data_cache: Family::default(),
            archive: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "floe_ready",
                "1 once recovery has finished and until shutdown starts",
                m.ready.clone(),
            );
            r.register(
                "floe_http_requests",
                "HTTP requests by action and status",
                m.http.clone(),
            );
            r.register(
                "floe_shard_inbox_depth",
                "Requests waiting in the shard's inbox",
                m.inbox_depth.clone(),
            );
            r.register(
                "floe_shard_entities",
                "Live entities on the shard",
                m.entities.clone(),
            );
            r.register(
                "floe_shard_bytes",
                "Bytes of live entity data on the shard",
                m.bytes.clone(),
            );
            r.register(
                "floe_shard_pipeline_wait_seconds",
                "How long the shard's group commit now in the pipeline has waited (pipeline lag)",
                m.pipeline_wait.clone(),
            );
            r.register(
                "floe_shard_health",
                "Shard health: 0 HEALTHY, 1 DEGRADED, 2 UNHEALTHY",
                m.health.clone(),
            );
            r.register(
                "floe_shard_up",
                "1 when the shard answered its last health probe",
                m.up.clone(),
            );
            r.register(
                "floe_routed",
                "Requests routed to each shard (routing distribution)",
                m.routed.clone(),
            );
            r.register(
                "floe_routing_errors",
                "Routed writes that failed",
                m.routing_errors.clone(),
            );
            r.register(
                "floe_sink_lag_events",
                "Events in the pipeline not yet committed to Iceberg",
                m.sink_lag_events.clone(),
            );
            r.register(
                "floe_sink_lag_seconds",
                "Age of the oldest event not yet in Iceberg",
                m.sink_lag_seconds.clone(),
            );
            r.register(
                "floe_sink_commits",
                "Iceberg commits by this process's sink",
                m.sink_commits.clone(),
            );
            r.register(
                "floe_migration",
                "Progress of the running live migration by figure (running, events_processed, events_total, keys_processed, keys_total, buffered_writes)",
                m.migration.clone(),
            );
            r.register(
                "floe_forwarded_calls",
                "Cluster mode: calls by forwarding outcome (forwarded: answered by the owner; retried: the owner was not ready; gave_up: no owner within cluster.forward_timeout_ms; received: served for another node)",
                m.forwards.clone(),
            );
            r.register(
                "floe_query_data_cache",
                "SQL over an object store: the in-memory cache of data file bytes by figure (hits, misses: byte ranges since start; bytes, entries: held now; capacity: query.data_cache_bytes)",
                m.data_cache.clone(),
            );
            r.register(
                "floe_archive",
                "Time topologies: active against archived by figure (active_entities, active_bytes: in shard memory; sealed_periods, archived_periods; archived_entities: evicted to the lake by completed archivals)",
                m.archive.clone(),
            );
        }
        m
    }

    pub(super) fn count_forward(&self, outcome: &'static str) {
        self.forwards.get_or_create(&ForwardLabel { outcome }).inc();
    }

    pub(super) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub(super) fn count_request(&self, action: &'static str, status: u16) {
        self.http
            .get_or_create(&HttpLabels { action, status })
            .inc();
    }

    /// Adds floe's own families once it has opened.
    pub(super) fn attach(&self, floe: &Floe) {
        floe.register_metrics(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Reads the scrape-time values from floe.
    async fn refresh(&self, floe: &Floe) {
        let shard_count = floe.topology().shard_count;
        let stats = futures::future::join_all(
            (0..shard_count).map(|s| tokio::time::timeout(SCRAPE_SHARD_TIMEOUT, floe.shard(s))),
        )
        .await;
        for (shard, stats) in (0..shard_count).zip(stats) {
            let label = ShardLabel { shard };
            // A shard too slow to answer keeps its last figures; its health
            // and `floe_shard_up` say why.
            if let Ok(Ok(stats)) = stats {
                self.entities
                    .get_or_create(&label)
                    .set(stats.entities as i64);
                self.bytes.get_or_create(&label).set(stats.bytes as i64);
            }
            if let Ok(health) = floe.shard_health(shard) {
                self.inbox_depth
                    .get_or_create(&label)
                    .set(health.inbox_depth as i64);
                self.pipeline_wait
                    .get_or_create(&label)
                    .set(health.pipeline_wait_ms / 1000.0);
                let level = match health.status {
                    HealthStatus::Healthy => 0,
                    HealthStatus::Degraded => 1,
                    HealthStatus::Unhealthy => 2,
                };
                self.health.get_or_create(&label).set(level);
                let up = health.probe.last_ok
                    || (health.probe.last_ms.is_none() && health.probe.in_flight_ms.is_none());
                self.up.get_or_create(&label).set(i64::from(up));
            }
        }
        // Mirror floe's monotonic routing counters: only scrapes move these
        // counters, under the registry lock, so they never run ahead.
        let routing = floe.routing_metrics();
        {
            let _serialized = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            for (shard, &count) in (0u32..).zip(&routing.distribution) {
                let counter = self.routed.get_or_create(&ShardLabel { shard });
                counter.inc_by(count.saturating_sub(counter.get()));
            }
            self.routing_errors
                .inc_by(routing.errors.saturating_sub(self.routing_errors.get()));
        }
        let migrations = floe.migrations();
        let progress = migrations
            .running()
            .and_then(|id| migrations.subscribe(&id).ok())
            .map(|rx| rx.borrow().clone());
        let running = i64::from(progress.is_some());
        let progress = progress.unwrap_or_default();
        for (figure, value) in [
            ("running", running),
            ("events_processed", progress.events_processed as i64),
            ("events_total", progress.events_total as i64),
            ("keys_processed", progress.keys_processed as i64),
            ("keys_total", progress.keys_total as i64),
            ("buffered_writes", progress.buffered_writes as i64),
        ] {
            self.migration
                .get_or_create(&FigureLabel { figure })
                .set(value);
        }
        if let Some(cache) = floe.query().ok().and_then(|q| q.data_cache_stats()) {
            for (figure, value) in [
                ("hits", cache.hits),
                ("misses", cache.misses),
                ("bytes", cache.bytes),
                ("entries", cache.entries),
                ("capacity", cache.capacity),
            ] {
                self.data_cache
                    .get_or_create(&FigureLabel { figure })
                    .set(value as i64);
            }
        }
        if let Ok(archive) = floe.archive_stats().await {
            let count = |state| archive.periods.values().filter(|s| **s == state).count() as u64;
            for (figure, value) in [
                ("active_entities", archive.active_entities),
                ("active_bytes", archive.active_bytes),
                ("sealed_periods", count(crate::PeriodState::Sealed)),
                ("archived_periods", count(crate::PeriodState::Archived)),
                ("archived_entities", archive.archived_entities),
            ] {
                self.archive
                    .get_or_create(&FigureLabel { figure })
                    .set(value as i64);
            }
        }
        if let Ok(lag) = floe.sink_lag().await {
            self.sink_lag_events.set(lag.events as i64);
            self.sink_lag_seconds.set(lag.seconds);
            self.sink_commits.set(lag.commits as i64);
        }
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(
            &mut text,
            &self.registry.lock().unwrap_or_else(|p| p.into_inner()),
        )?;
        Ok(text)
    }
}

pub(super) fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let policy: Policy = if state.config.serve.public_metrics {
        policy::public("metrics")
    } else {
        policy::data_read("metrics")
    };
    Router::new().route("/metrics", guarded(state, policy, get(scrape)))
}

async fn scrape(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    // Before recovery ends only `floe_ready 0` and the HTTP counters move.
    if let Ok(floe) = state.floe() {
        state.metrics.refresh(floe).await;
    }
    let text = state.metrics.encode().map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding metrics: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
