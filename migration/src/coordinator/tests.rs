//! The coordinator on an in-memory pipeline, in milliseconds: a crash at
//! every phase boundary then a restart, cancel, timeout, a conflicting
//! migration. Every test checks the same three things: the job settles by
//! the persisted topology (rolled back before the cutover, completed
//! after), no key has two owners, and every acknowledged write is present
//! exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_emitter::MemPipeline;
use floe_emitter::replay::recover;
use floe_engine::{
    Command, EntityKey, HashFunction, Json, Operation, Pipeline, Router, ShardCluster, ShardConfig,
    Strategy, Topology, TopologyStore,
};

use super::{Deployment, Migrator};
use crate::config::{FailPoint, MigrationConfig, MigrationOptions};
use crate::error::Error;
use crate::job::{JobStatus, JobStore, Phase};
use crate::plan::{MigrationPlan, plan_add_shard};

/// A topology store in memory, shared by a node and its restart.
#[derive(Debug, Default)]
struct MemTopologyStore(Mutex<Option<Topology>>);

#[async_trait::async_trait]
impl TopologyStore for MemTopologyStore {
    async fn load(&self) -> floe_engine::Result<Option<Topology>> {
        Ok(self.0.lock().unwrap().clone())
    }

    async fn store(&self, topology: &Topology) -> floe_engine::Result<()> {
        *self.0.lock().unwrap() = Some(topology.clone());
        Ok(())
    }
}

const PARTITIONS: u32 = 4;
const KEYS: usize = 60;

/// One process: a cluster over the pipeline, recovered from it under the
/// stored topology, and its migrator.
struct Node {
    cluster: Arc<ShardCluster>,
    migrator: Migrator,
}

struct World {
    pipeline: MemPipeline,
    topology: Arc<MemTopologyStore>,
    jobs: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let topology = Arc::new(MemTopologyStore::default());
        let initial = Topology::new(2, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
        topology.store(&initial).await.unwrap();
        World {
            pipeline: MemPipeline::new(PARTITIONS),
            topology,
            jobs: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts (or restarts) the node: recovery, then the jobs settle.
    async fn open(&self) -> Node {
        let pipeline: Arc<dyn Pipeline> = Arc::new(self.pipeline.reopen());
        let persisted = self.topology.load().await.unwrap().unwrap();
        let router = Arc::new(Router::new(persisted.clone()).unwrap());
        let (recovered, _) = recover(pipeline.clone(), router, 64, None).await.unwrap();
        let cluster = Arc::new(
            ShardCluster::start(
                persisted.clone(),
                recovered,
                pipeline,
                ShardConfig::default(),
            )
            .unwrap(),
        );
        let migrator = Migrator::open(
            Deployment {
                cluster: cluster.clone(),
                lake: None,
                topology: self.topology.clone(),
            },
            JobStore::new(self.jobs.path()),
            &persisted,
            MigrationConfig {
                batch_size: 16,
                ..MigrationConfig::default()
            },
        )
        .unwrap();
        Node { cluster, migrator }
    }
}

fn key(i: usize) -> EntityKey {
    EntityKey::new("t", "Thing", format!("k{i:03}"))
}

fn put(i: usize, round: u64) -> Command {
    Command {
        key: key(i),
        op: Operation::Upsert(Json::parse(&format!("{{\"round\":{round}}}")).unwrap()),
        expected_version: None,
        idempotency_key: None,
        partition_key: key(i).id,
        key_hash: 0,
    }
}

/// Acknowledged versions by key.
type Acked = Arc<Mutex<BTreeMap<usize, u64>>>;

async fn write_round(cluster: &ShardCluster, round: u64, acked: &Acked) {
    for i in 0..KEYS {
        let ack = cluster.write(put(i, round)).await.result.unwrap();
        acked.lock().unwrap().insert(i, ack.version);
    }
}

/// Writes rounds until `stop` while a migration runs.
fn writer(
    cluster: Arc<ShardCluster>,
    acked: Acked,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut round = 100;
        while !flag.load(std::sync::atomic::Ordering::Acquire) {
            write_round(&cluster, round, &acked).await;
            round += 1;
            tokio::task::yield_now().await;
        }
    });
    (task, stop)
}

/// Every acknowledged write is there, on exactly the shard the topology in
/// force names, once. `Placement::Held` looks at everything each shard
/// holds; `Placement::Owned` only at what reads see (a migration whose
/// clean-up failed after the cutover leaves stale copies on old owners,
/// which no read returns).
async fn check_placement(node: &Node, acked: &Acked, placement: Placement) {
    let topology = node.cluster.topology();
    let router = Router::new(topology.clone()).unwrap();
    let mut seen = BTreeMap::new();
    for shard in node.cluster.routing().shards().iter() {
        let (ns, ty) = ("t".to_string(), "Thing".to_string());
        let entities = match placement {
            Placement::Held => shard.list(ns, ty, None, usize::MAX).await,
            Placement::Owned => {
                shard
                    .list_owned(router.clone(), ns, ty, None, usize::MAX)
                    .await
            }
        };
        for entity in entities.unwrap() {
            let owner = router.route(&entity.key.id, router.key_hash(&entity.key.id));
            assert_eq!(
                owner,
                shard.id(),
                "{} held by a shard that does not own it",
                entity.key
            );
            assert!(
                seen.insert(entity.key.id.clone(), entity.version).is_none(),
                "{} has two owners",
                entity.key
            );
        }
    }
    for (&i, &version) in acked.lock().unwrap().iter() {
        let stored = seen.get(&key(i).id).copied();
        assert!(
            stored.is_some_and(|v| v >= version),
            "acknowledged {} v{version} is missing (found {stored:?})",
            key(i)
        );
    }
    assert_eq!(seen.len(), KEYS);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Held,
    Owned,
}

async fn check(node: &Node, acked: &Acked) {
    check_placement(node, acked, Placement::Held).await;
}

async fn plan(node: &Node) -> MigrationPlan {
    let topology = node.cluster.topology();
    let keys = node.migrator.inventory().await.unwrap();
    plan_add_shard(&topology, &keys).unwrap()
}

/// A crash just before `phase`, then a restart.
async fn crash_then_restart(phase: Phase) {
    let world = World::new().await;
    let node = world.open().await;
    let acked = Acked::default();
    write_round(&node.cluster, 1, &acked).await;
    let plan = plan(&node).await;
    let (from, to) = (plan.from.clone(), plan.to.clone());
    let (task, stop) = writer(node.cluster.clone(), acked.clone());
    let options = MigrationOptions {
        fail_at: Some(FailPoint::CrashBefore(phase)),
        ..MigrationOptions::default()
    };
    let handle = node.migrator.start(plan, options).unwrap();
    let id = handle.id.clone();
    let err = handle.wait().await.unwrap_err();
    assert!(matches!(err, Error::Injected(_)), "{phase}: {err}");
    stop.store(true, std::sync::atomic::Ordering::Release);
    task.await.unwrap();
    // The process "died": its job is still running on disk.
    assert_eq!(
        node.migrator.status(&id).unwrap().status,
        JobStatus::Running
    );
    node.cluster.close().await;
    world.pipeline.close().await.unwrap();

    let restarted = world.open().await;
    let persisted = world.topology.load().await.unwrap().unwrap();
    let job = restarted.migrator.status(&id).unwrap();
    assert!(job.settled_after_restart, "{phase}");
    if phase > Phase::Cutover {
        assert_eq!(
            persisted, to,
            "{phase}: the cutover had persisted the new topology"
        );
        assert_eq!(job.status, JobStatus::Completed, "{phase}");
    } else {
        assert_eq!(
            persisted, from,
            "{phase}: nothing persisted before the cutover"
        );
        assert_eq!(job.status, JobStatus::RolledBack, "{phase}");
    }
    assert_eq!(restarted.cluster.topology(), persisted);
    check(&restarted, &acked).await;
    // The restarted node takes writes and can migrate again.
    write_round(&restarted.cluster, 1000, &acked).await;
    check(&restarted, &acked).await;
    restarted.cluster.close().await;
}

#[tokio::test]
async fn a_crash_at_every_phase_boundary_settles_by_the_persisted_topology() {
    for phase in [
        Phase::Copy,
        Phase::CatchUp,
        Phase::Buffer,
        Phase::Verify,
        Phase::Cutover,
        Phase::Drain,
        Phase::Cleanup,
        Phase::Done,
    ] {
        crash_then_restart(phase).await;
    }
}

#[tokio::test]
async fn a_crash_after_the_topology_is_persisted_completes_on_restart() {
    let world = World::new().await;
    let node = world.open().await;
    let acked = Acked::default();
    write_round(&node.cluster, 1, &acked).await;
    let plan = plan(&node).await;
    let to = plan.to.clone();
    let options = MigrationOptions {
        fail_at: Some(FailPoint::CrashMidCutover),
        ..MigrationOptions::default()
    };
    let err = node.migrator.run(plan, options).await.unwrap_err();
    assert!(matches!(err, Error::Injected(_)), "{err}");
    node.cluster.close().await;
    let restarted = world.open().await;
    assert_eq!(restarted.cluster.topology(), to);
    assert_eq!(
        restarted.migrator.list().unwrap()[0].status,
        JobStatus::Completed
    );
    check(&restarted, &acked).await;
}

#[tokio::test]
async fn an_error_before_each_phase_rolls_back_or_finishes_forward() {
    for phase in [
        Phase::Copy,
        Phase::CatchUp,
        Phase::Buffer,
        Phase::Verify,
        Phase::Cutover,
        Phase::Drain,
        Phase::Cleanup,
    ] {
        let world = World::new().await;
        let node = world.open().await;
        let acked = Acked::default();
        write_round(&node.cluster, 1, &acked).await;
        let plan = plan(&node).await;
        let (from, to) = (plan.from.clone(), plan.to.clone());
        let (task, stop) = writer(node.cluster.clone(), acked.clone());
        let options = MigrationOptions {
            fail_at: Some(FailPoint::FailBefore(phase)),
            ..MigrationOptions::default()
        };
        let err = node.migrator.run(plan, options).await.unwrap_err();
        assert!(matches!(err, Error::Injected(_)), "{phase}: {err}");
        stop.store(true, std::sync::atomic::Ordering::Release);
        task.await.unwrap();
        let job = &node.migrator.list().unwrap()[0];
        let persisted = world.topology.load().await.unwrap().unwrap();
        if phase > Phase::Cutover {
            assert_eq!(
                (job.status, &persisted),
                (JobStatus::Completed, &to),
                "{phase}"
            );
        } else {
            assert_eq!(
                (job.status, &persisted),
                (JobStatus::RolledBack, &from),
                "{phase}"
            );
        }
        assert_eq!(node.cluster.topology(), persisted, "{phase}");
        let placement = if phase > Phase::Cutover {
            Placement::Owned
        } else {
            Placement::Held
        };
        check_placement(&node, &acked, placement).await;
        node.cluster.close().await;
        // A restart agrees with the running node.
        let restarted = world.open().await;
        check(&restarted, &acked).await;
        restarted.cluster.close().await;
    }
}

#[tokio::test]
async fn cancel_rolls_back() {
    let world = World::new().await;
    let node = world.open().await;
    let acked = Acked::default();
    write_round(&node.cluster, 1, &acked).await;
    let plan = plan(&node).await;
    let from = plan.from.clone();
    let handle = node
        .migrator
        .start(plan, MigrationOptions::default())
        .unwrap();
    // The coordinator task has not run yet (one thread): it stops at the
    // first check.
    node.migrator.cancel(&handle.id).unwrap();
    let err = handle.wait().await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(
        node.migrator.list().unwrap()[0].status,
        JobStatus::RolledBack
    );
    assert_eq!(world.topology.load().await.unwrap().unwrap(), from);
    assert_eq!(node.cluster.topology(), from);
    assert!(node.migrator.running().is_none());
    check(&node, &acked).await;
}

#[tokio::test]
async fn a_timeout_rolls_back_the_installed_migration() {
    let world = World::new().await;
    let node = world.open().await;
    let acked = Acked::default();
    write_round(&node.cluster, 1, &acked).await;
    let plan = plan(&node).await;
    let from = plan.from.clone();
    // A slow shard makes the barrier after the install outlast the timeout.
    node.cluster
        .shard(0)
        .unwrap()
        .set_fault_delay(Duration::from_millis(30));
    let options = MigrationOptions {
        config: Some(MigrationConfig {
            timeout_ms: 10,
            ..MigrationConfig::default()
        }),
        ..MigrationOptions::default()
    };
    let err = node.migrator.run(plan, options).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    node.cluster
        .shard(0)
        .unwrap()
        .set_fault_delay(Duration::ZERO);
    assert_eq!(
        node.migrator.list().unwrap()[0].status,
        JobStatus::RolledBack
    );
    assert_eq!(node.cluster.topology(), from);
    assert_eq!(
        node.cluster.routing().shards().len(),
        2,
        "the added shard left"
    );
    check(&node, &acked).await;
}

#[tokio::test]
async fn a_second_migration_is_refused_while_one_runs() {
    let world = World::new().await;
    let node = world.open().await;
    let acked = Acked::default();
    write_round(&node.cluster, 1, &acked).await;
    let plan = plan(&node).await;
    let to = plan.to.clone();
    let first = node
        .migrator
        .start(plan.clone(), MigrationOptions::default())
        .unwrap();
    let err = node
        .migrator
        .start(plan, MigrationOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyMigrating { running, .. } if *running == first.id),
        "{err}"
    );
    first.wait().await.unwrap();
    assert_eq!(node.cluster.topology(), to);
    assert_eq!(world.topology.load().await.unwrap().unwrap(), to);
    check(&node, &acked).await;
}
