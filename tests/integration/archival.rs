//! Archival of time periods (seed 002's active and archive windows):
//! archived periods leave shard memory (the entity count drops), their
//! reads are answered from the lake with the same answers as before (the
//! oracle of acknowledged writes), their writes are refused with a typed
//! error that changes nothing, and all of it survives a reopen. An archival
//! whose sink does not land rolls back; one stopped after the seal is
//! finished by running it again; the background task archives what is past
//! the active window.

use std::collections::BTreeMap;
use std::time::Duration;

use floe::{
    Config, EntityKey, FailPoint, Floe, FsyncMode, MigrationConfig, MigrationOptions,
    PartitionKeySpec, Period, PeriodState, PlanKind, ReadSource, Strategy,
};
use floe_migration::Phase;
use serde_json::{Value, json};

const MONTHS: u32 = 12;
const PER_MONTH: u32 = 20;

fn label(month: u32) -> String {
    format!("2024-{:02}", month + 1)
}

/// Team + time keys, the twelve months of 2024 on four shards, a lake with
/// its sink in-process.
fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.log.fsync = FsyncMode::Never;
    config.log.partitions = 4;
    config.lake.commit_events = 100;
    config.lake.commit_interval_ms = 100;
    config.topology.shards = 4;
    config.topology.strategy = Strategy::Time {
        period: Period::Month,
        offset: None,
        time_part: Some(1),
        tenant_part: Some(0),
        periods: (0..MONTHS).map(|m| (label(m), m % 4)).collect(),
        tenants: BTreeMap::new(),
        archived: BTreeMap::new(),
    };
    config.partition_key.default = PartitionKeySpec::parse(&["team_id", "created_at"]).unwrap();
    config.migration.period_lead_time_ms = 0;
    config
}

fn incident(month: u32, i: u32) -> EntityKey {
    EntityKey::new("acme", "Incident", format!("inc-{month:02}-{i:02}"))
}

fn team(i: u32) -> &'static str {
    ["team-a", "team-b"][i as usize % 2]
}

fn data(month: u32, i: u32, title: &str) -> Value {
    json!({
        "team_id": team(i),
        "created_at": format!("2024-{:02}-{:02}T10:00:00Z", month + 1, i % 28 + 1),
        "title": title,
    })
}

/// Writes every month's incidents, patches a third, deletes a fifth;
/// returns the oracle: key -> (version, data) of the live ones, `None` for
/// the deleted.
async fn fill(floe: &Floe) -> BTreeMap<EntityKey, Option<(u64, Value)>> {
    let mut oracle = BTreeMap::new();
    for month in 0..MONTHS {
        for i in 0..PER_MONTH {
            let key = incident(month, i);
            let ack = floe
                .create(key.clone(), data(month, i, "disk full"))
                .await
                .unwrap();
            let mut live = (ack.version, data(month, i, "disk full"));
            if i % 3 == 0 {
                let ack = floe
                    .update(key.clone(), json!({"title": "resolved"}))
                    .await
                    .unwrap();
                live = (ack.version, data(month, i, "resolved"));
            }
            if i % 5 == 4 {
                floe.delete(key.clone()).await.unwrap();
                oracle.insert(key, None);
            } else {
                oracle.insert(key, Some(live));
            }
        }
    }
    oracle
}

async fn live_in_memory(floe: &Floe) -> u64 {
    floe.shard_stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.entities)
        .sum()
}

fn month_of(key: &EntityKey) -> u32 {
    key.id[4..6].parse().unwrap()
}

/// Every read answers as the oracle says, from the lake exactly for the
/// entities of `archived` months (with and without the partition key).
async fn check_reads(
    floe: &Floe,
    oracle: &BTreeMap<EntityKey, Option<(u64, Value)>>,
    archived: &[u32],
) {
    for (key, expected) in oracle {
        let month = month_of(key);
        let i: u32 = key.id[7..].parse().unwrap();
        let pk = floe
            .partition_key_of(key, Some(&data(month, i, "any")))
            .unwrap();
        let mut reads = vec![floe.read(key, Some(&pk)).await.unwrap()];
        // Without the partition key an archived read scans every file of
        // the lake: a sample keeps the test short.
        if i.is_multiple_of(4) || !archived.contains(&month) {
            reads.push(floe.read(key, None).await.unwrap());
        }
        for read in reads {
            match (expected, read) {
                (None, None) => {}
                (Some((version, data)), Some(read)) => {
                    assert_eq!(read.entity.version, *version, "{key}");
                    assert_eq!(&read.entity.data.to_value().unwrap(), data, "{key}");
                    let from_lake = matches!(read.source, ReadSource::Lake { .. });
                    assert_eq!(
                        from_lake,
                        archived.contains(&month),
                        "{key}: {:?}",
                        read.source
                    );
                    if let ReadSource::Lake { period, .. } = &read.source {
                        assert_eq!(period, &label(month));
                    }
                }
                (expected, read) => panic!("{key}: expected {expected:?}, read {read:?}"),
            }
        }
    }
}

fn period_state(floe: &Floe, month: u32) -> Option<PeriodState> {
    match floe.topology().strategy {
        Strategy::Time { archived, .. } => archived.get(&label(month)).copied(),
        _ => None,
    }
}

async fn archive(floe: &Floe, month: u32, options: MigrationOptions) -> floe::Result<u64> {
    let migrations = floe.migrations();
    let plan = migrations
        .plan(PlanKind::ArchivePeriod {
            period: label(month),
        })
        .await?;
    Ok(migrations.run(plan, options).await?.entities_moved)
}

fn refused_as_archived(result: floe::Result<floe::WriteAck>, what: &str) {
    match result {
        Err(e) => assert!(
            matches!(
                e.as_engine(),
                Some(floe_engine::Error::PeriodArchived { .. })
            ),
            "{what}: {e}"
        ),
        Ok(ack) => panic!("{what}: written at version {}", ack.version),
    }
}

/// Archiving 11 of 12 months: memory holds only December, every read still
/// answers as before (archived ones from the lake), writes to archived
/// months are refused and change nothing, December takes writes, and a
/// reopen keeps all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_periods_leave_memory_and_are_read_from_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let floe = Floe::open(config.clone()).await.unwrap();
    let oracle = fill(&floe).await;
    let live_per_month = oracle
        .iter()
        .filter(|(k, v)| month_of(k) == 11 && v.is_some())
        .count() as u64;
    assert_eq!(live_in_memory(&floe).await, live_per_month * 12);

    let archived: Vec<u32> = (0..11).collect();
    let mut evicted = 0;
    for &month in &archived {
        evicted += archive(&floe, month, MigrationOptions::default())
            .await
            .unwrap();
        assert_eq!(period_state(&floe, month), Some(PeriodState::Archived));
    }
    // Live entities and tombstones of 11 months left memory.
    assert_eq!(evicted, 11 * u64::from(PER_MONTH));
    assert_eq!(live_in_memory(&floe).await, live_per_month);
    let stats = floe.archive_stats().await.unwrap();
    assert_eq!(stats.active_entities, live_per_month);
    assert_eq!(stats.archived_entities, evicted);
    assert_eq!(stats.periods.len(), 11);
    assert!(stats.periods.values().all(|s| *s == PeriodState::Archived));
    check_reads(&floe, &oracle, &archived).await;

    // Writes to an archived month: refused, typed, nothing changes.
    let (old, new) = (incident(3, 1), incident(3, 99));
    refused_as_archived(
        floe.update(old.clone(), json!({"title": "again"})).await,
        "a patch without the time",
    );
    refused_as_archived(floe.delete(old.clone()).await, "a delete");
    refused_as_archived(
        floe.create(new.clone(), data(3, 99, "late")).await,
        "a new entity of the month",
    );
    assert!(floe.read(&new, None).await.unwrap().is_none());
    // A plan that archives a month twice, or one that has not ended, is
    // refused.
    let again = floe
        .migrations()
        .plan(PlanKind::ArchivePeriod { period: label(0) })
        .await
        .unwrap_err();
    assert!(again.to_string().contains("archived already"), "{again}");
    // December keeps taking writes.
    let december = incident(11, 1);
    let ack = floe
        .update(december.clone(), json!({"title": "still open"}))
        .await
        .unwrap();
    let mut oracle = oracle;
    oracle.insert(december, Some((ack.version, data(11, 1, "still open"))));
    check_reads(&floe, &oracle, &archived).await;
    floe.close().await.unwrap();

    // A reopen replays the log, but archived months stay out of memory.
    let floe = Floe::open(config).await.unwrap();
    assert_eq!(live_in_memory(&floe).await, live_per_month);
    check_reads(&floe, &oracle, &archived).await;
    refused_as_archived(floe.delete(old).await, "a delete after the reopen");
    floe.close().await.unwrap();
}

/// Without a sink nothing lands, so the archival times out waiting and
/// rolls back: the month takes writes again and stays in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archival_whose_sink_does_not_land_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.lake.sink = false;
    let floe = Floe::open(config).await.unwrap();
    let oracle = fill(&floe).await;
    let before = live_in_memory(&floe).await;
    let options = MigrationOptions {
        config: Some(MigrationConfig {
            timeout_ms: 500,
            ..MigrationConfig::default()
        }),
        ..MigrationOptions::default()
    };
    let e = archive(&floe, 0, options).await.unwrap_err();
    assert!(
        matches!(
            e.as_migration(),
            Some(floe_migration::Error::NotLanded { .. })
        ),
        "{e}"
    );
    assert_eq!(period_state(&floe, 0), None);
    assert_eq!(live_in_memory(&floe).await, before);
    check_reads(&floe, &oracle, &[]).await;
    floe.update(incident(0, 1), json!({"title": "after"}))
        .await
        .unwrap();
    floe.close().await.unwrap();
}

/// A process that stops after the seal (before the cutover) leaves the
/// month sealed: after a reopen its writes are refused and its reads come
/// from memory; running the archival again finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archival_stopped_after_the_seal_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let floe = Floe::open(config.clone()).await.unwrap();
    let oracle = fill(&floe).await;
    let options = MigrationOptions {
        fail_at: Some(FailPoint::CrashBefore(Phase::Cutover)),
        ..MigrationOptions::default()
    };
    archive(&floe, 2, options).await.unwrap_err();
    floe.close().await.unwrap();

    let floe = Floe::open(config).await.unwrap();
    assert_eq!(period_state(&floe, 2), Some(PeriodState::Sealed));
    check_reads(&floe, &oracle, &[]).await;
    refused_as_archived(
        floe.update(incident(2, 1), json!({"title": "x"})).await,
        "a patch to a sealed month",
    );
    archive(&floe, 2, MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(period_state(&floe, 2), Some(PeriodState::Archived));
    check_reads(&floe, &oracle, &[2]).await;
    floe.close().await.unwrap();
}

/// With `migration.active_periods`, the background task archives every
/// period older than the active window (all of 2024 is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_archives_periods_past_the_active_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let floe = Floe::open(config.clone()).await.unwrap();
    let oracle = fill(&floe).await;
    floe.close().await.unwrap();
    config.migration.active_periods = 3;
    config.migration.period_check_interval_ms = 50;
    let floe = Floe::open(config).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Routing switches to "archived" before the eviction: wait for both.
    while (0..MONTHS).any(|m| period_state(&floe, m) != Some(PeriodState::Archived))
        || live_in_memory(&floe).await > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not archived: {:?}",
            floe.topology().strategy
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live_in_memory(&floe).await, 0);
    check_reads(&floe, &oracle, &(0..MONTHS).collect::<Vec<_>>()).await;
    floe.close().await.unwrap();
}

/// Reactivation is the way back: the archived month's entities come back
/// from the lake into its shard with their versions, it takes writes
/// again, the other archived month stays archived, also after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactivated_period_comes_back_from_the_lake_and_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let floe = Floe::open(config.clone()).await.unwrap();
    let mut oracle = fill(&floe).await;
    let all = live_in_memory(&floe).await;
    for month in [0, 1] {
        archive(&floe, month, MigrationOptions::default())
            .await
            .unwrap();
    }
    let live_of = |month: u32| {
        oracle
            .iter()
            .filter(|(k, v)| month_of(k) == month && v.is_some())
            .count() as u64
    };
    let (live_0, live_1) = (live_of(0), live_of(1));
    assert_eq!(live_in_memory(&floe).await, all - live_0 - live_1);

    let migrations = floe.migrations();
    let plan = migrations
        .plan(PlanKind::ReactivatePeriod { period: label(0) })
        .await
        .unwrap();
    let report = migrations
        .run(plan, MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(report.entities_moved, live_0);
    assert_eq!(period_state(&floe, 0), None);
    assert_eq!(period_state(&floe, 1), Some(PeriodState::Archived));
    assert_eq!(live_in_memory(&floe).await, all - live_1);
    check_reads(&floe, &oracle, &[1]).await;
    // An active period cannot be reactivated.
    let active = migrations
        .plan(PlanKind::ReactivatePeriod { period: label(0) })
        .await
        .unwrap_err();
    assert!(active.to_string().contains("is active"), "{active}");

    let key = incident(0, 1);
    let ack = floe
        .update(key.clone(), json!({"title": "reopened"}))
        .await
        .unwrap();
    let (version, _) = oracle[&key].clone().unwrap();
    assert_eq!(ack.version, version + 1);
    oracle.insert(key, Some((ack.version, data(0, 1, "reopened"))));
    floe.close().await.unwrap();

    let floe = Floe::open(config).await.unwrap();
    assert_eq!(live_in_memory(&floe).await, all - live_1);
    check_reads(&floe, &oracle, &[1]).await;
    floe.close().await.unwrap();
}

/// Under `archived_writes = "reactivate"` a write to an archived month
/// (several at once, with and without the time) reactivates it once and
/// then applies, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_an_archived_period_reactivate_it_under_that_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.migration.archived_writes = floe::ArchivedWrites::Reactivate;
    let floe = Floe::open(config).await.unwrap();
    let mut oracle = fill(&floe).await;
    archive(&floe, 4, MigrationOptions::default())
        .await
        .unwrap();
    assert_eq!(period_state(&floe, 4), Some(PeriodState::Archived));
    let writers: Vec<_> = [1u32, 2, 3, 5]
        .into_iter()
        .map(|i| {
            let floe = floe.clone();
            tokio::spawn(async move {
                let key = incident(4, i);
                let ack = if i % 2 == 0 {
                    floe.put(key.clone(), data(4, i, "late")).await.unwrap()
                } else {
                    floe.update(key.clone(), json!({"title": "late"}))
                        .await
                        .unwrap()
                };
                (key, i, ack.version)
            })
        })
        .collect();
    for writer in writers {
        let (key, i, version) = writer.await.unwrap();
        let before = oracle[&key].as_ref().map_or(0, |(v, _)| *v);
        assert!(version > before, "{key}: {version} after {before}");
        oracle.insert(key, Some((version, data(4, i, "late"))));
    }
    assert_eq!(period_state(&floe, 4), None);
    let reactivations = floe
        .migrations()
        .list()
        .unwrap()
        .into_iter()
        .filter(|j| matches!(j.kind, PlanKind::ReactivatePeriod { .. }))
        .count();
    assert_eq!(reactivations, 1);
    check_reads(&floe, &oracle, &[]).await;
    floe.close().await.unwrap();
}

/// Dropping an archived month past its retention erases its rows from the
/// lake (reads find nothing, SQL counts none of its events) and refuses its
/// writes; every other month is intact, also after a reopen; an active
/// month cannot be dropped. With `retain_periods` the background task
/// drops what is past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_archived_period_erases_it_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let floe = Floe::open(config.clone()).await.unwrap();
    let oracle = fill(&floe).await;
    for month in [0, 1] {
        archive(&floe, month, MigrationOptions::default())
            .await
            .unwrap();
    }
    let migrations = floe.migrations();
    let active = migrations
        .plan(PlanKind::DropPeriod { period: label(5) })
        .await
        .unwrap_err();
    assert!(active.to_string().contains("archive it first"), "{active}");
    let plan = migrations
        .plan(PlanKind::DropPeriod { period: label(0) })
        .await
        .unwrap();
    let report = migrations
        .run(plan, MigrationOptions::default())
        .await
        .unwrap();
    // Every event of January: one create per entity, a third patched, a
    // fifth deleted.
    let events: u64 = (0..PER_MONTH)
        .map(|i| 1 + u64::from(i % 3 == 0) + u64::from(i % 5 == 4))
        .sum();
    assert_eq!(report.lake_events, events);
    assert_eq!(period_state(&floe, 0), Some(PeriodState::Dropped));

    let (january, rest): (BTreeMap<_, _>, BTreeMap<_, _>) =
        oracle.into_iter().partition(|(k, _)| month_of(k) == 0);
    let check = |floe: Floe| {
        let (january, rest) = (january.clone(), rest.clone());
        async move {
            for key in january.keys() {
                assert!(floe.read(key, None).await.unwrap().is_none(), "{key}");
            }
            check_reads(&floe, &rest, &[1]).await;
            let count = |sql: &str| {
                let floe = floe.clone();
                let sql = sql.to_string();
                async move {
                    let result = floe.sql(&sql).await.unwrap();
                    let column = result.batches[0].column(0).clone();
                    floe_query::arrow::array::AsArray::as_primitive::<
                        floe_query::arrow::datatypes::Int64Type,
                    >(&column)
                    .value(0)
                }
            };
            assert_eq!(
                count("SELECT count(*) FROM events WHERE entity_id LIKE 'inc-00-%'").await,
                0
            );
            assert_eq!(
                count("SELECT count(*) FROM events WHERE entity_id LIKE 'inc-01-%'").await as u64,
                events
            );
            refused_as_archived(
                floe.create(incident(0, 50), data(0, 50, "late")).await,
                "a write to a dropped month",
            );
        }
    };
    check(floe.clone()).await;
    floe.close().await.unwrap();

    // Retention 2 (all of 2024 is past it): February is dropped by the task.
    config.migration.active_periods = 1;
    config.migration.retain_periods = 2;
    config.migration.period_check_interval_ms = 50;
    let floe = Floe::open(config).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while (0..MONTHS).any(|m| period_state(&floe, m) != Some(PeriodState::Dropped)) {
        assert!(
            std::time::Instant::now() < deadline,
            "not dropped: {:?}",
            floe.topology().strategy
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in rest.keys() {
        assert!(floe.read(key, None).await.unwrap().is_none(), "{key}");
    }
    floe.close().await.unwrap();
}
