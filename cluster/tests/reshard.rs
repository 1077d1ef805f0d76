//! Reshards (shard-count migrations in cluster mode) against a real etcd: one request
//! at a time, the cutover only once every live node has paused, fenced by the term,
//! the topology and the request, and an abort that leaves the topology alone. These
//! fail, never skip, when no etcd binary is installed.

use std::collections::BTreeMap;

use anyhow::Result;
use floe_cluster::testing::EtcdServer;
use floe_cluster::{
    Controller, Election, Error, EtcdDocStore, Member, NodeRecord, Reshard, ReshardPhase,
    ReshardStep, TOPOLOGY_DOC, abort_reshard, live_nodes, paused_nodes, read_grants, record_paused,
    request_reshard, reshard_store,
};
use serde_json::{Value, json};

async fn join(etcd: &EtcdServer, node: &str, port: u16) -> Result<Member> {
    let config = etcd.node_config("test", node, port);
    let client = floe_cluster::connect(&config).await?;
    Ok(Member::join(&client, &config).await?)
}

fn request(id: &str, base_revision: i64, from: u32, to: u32, timeout_ms: u64) -> Reshard {
    Reshard {
        id: id.into(),
        requested_by: "n1".into(),
        base_revision,
        base_shard_count: from,
        shard_count: to,
        target: json!({ "shard_count": to }),
        phase: ReshardPhase::Pausing,
        requested_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        finished_at_ms: None,
        pause_timeout_ms: timeout_ms,
        record: Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshard_cuts_over_only_once_every_live_node_has_paused() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7101).await?;
    let n2 = join(&etcd, "n2", 7102).await?;
    let (client, config) = (n1.client().clone(), n1.config().clone());
    let topology: EtcdDocStore<Value> = EtcdDocStore::new(&client, &config, TOPOLOGY_DOC);
    let base = topology
        .compare_and_swap(None, &json!({ "shard_count": 4 }))
        .await?;
    let term = Election::new(&n1).campaign().await?;
    let controller = Controller::new(&client, &config, term.clone());
    let live: BTreeMap<String, NodeRecord> = live_nodes(&client, &config).await?;
    assert_eq!(live.len(), 2);
    controller.reconcile(4, &live).await?;
    assert_eq!(read_grants(&client, &config).await?.len(), 4);

    // Planned against an older topology: refused, nothing stored.
    assert!(matches!(
        request_reshard(&client, &config, &request("m-0", base - 1, 4, 6, 60_000)).await,
        Err(Error::TopologyMoved { .. })
    ));
    assert_eq!(
        reshard_store(&client, &config).load_versioned().await?,
        None
    );

    request_reshard(&client, &config, &request("m-1", base, 4, 6, 60_000)).await?;
    // One at a time, cluster-wide.
    match request_reshard(&client, &config, &request("m-2", base, 4, 8, 60_000)).await {
        Err(Error::ReshardRunning { id }) => assert_eq!(id, "m-1"),
        other => panic!("a second reshard: {other:?}"),
    }

    // Nothing is placed or cut over while a node has not paused.
    let waiting = controller.step_reshard(&live).await?;
    assert_eq!(
        waiting,
        ReshardStep::Waiting {
            nodes: vec!["n1".into(), "n2".into()]
        }
    );
    record_paused(&client, &config, n1.record(), "m-1").await?;
    // A pause for another reshard does not count.
    record_paused(&client, &config, n2.record(), "m-0").await?;
    assert_eq!(
        controller.step_reshard(&live).await?,
        ReshardStep::Waiting {
            nodes: vec!["n2".into()]
        }
    );

    // A deposed leader cannot cut over.
    let stale = Controller::new(
        &client,
        &config,
        floe_cluster::LeaderTerm {
            term: term.term - 1,
            ..term.clone()
        },
    );
    record_paused(&client, &config, n2.record(), "m-1").await?;
    assert!(matches!(
        stale.step_reshard(&live).await,
        Err(Error::NotLeader { .. })
    ));

    let ReshardStep::CutOver {
        shard_count,
        revision,
    } = controller.step_reshard(&live).await?
    else {
        panic!("every node paused: the cutover is due");
    };
    assert_eq!(shard_count, 6);
    let stored = topology.load_versioned().await?.unwrap();
    assert_eq!(stored.value, json!({ "shard_count": 6 }));
    assert_eq!(stored.revision, revision);
    let doc = reshard_store(&client, &config)
        .load_versioned()
        .await?
        .unwrap();
    assert_eq!(doc.value.phase, ReshardPhase::CutOver);
    assert_eq!(doc.revision, revision);
    assert!(
        read_grants(&client, &config).await?.is_empty(),
        "every grant went"
    );
    assert!(paused_nodes(&client, &config).await?.is_empty());

    // Placement resumes with the new count; every new grant is newer than the cutover.
    assert_eq!(
        controller.step_reshard(&live).await?,
        ReshardStep::Idle {
            shard_count: Some(6)
        }
    );
    controller.reconcile(6, &live).await?;
    let grants = read_grants(&client, &config).await?;
    assert_eq!(grants.len(), 6);
    assert!(grants.values().all(|g| g.epoch.0 as i64 > revision));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_reshard_leaves_the_topology_and_the_grants_alone() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7111).await?;
    let _n2 = join(&etcd, "n2", 7112).await?;
    let (client, config) = (n1.client().clone(), n1.config().clone());
    let topology: EtcdDocStore<Value> = EtcdDocStore::new(&client, &config, TOPOLOGY_DOC);
    let base = topology
        .compare_and_swap(None, &json!({ "shard_count": 3 }))
        .await?;
    let term = Election::new(&n1).campaign().await?;
    let controller = Controller::new(&client, &config, term);
    let live = live_nodes(&client, &config).await?;
    controller.reconcile(3, &live).await?;
    let grants = read_grants(&client, &config).await?;

    // n2 never pauses: past the timeout the leader gives up.
    request_reshard(&client, &config, &request("m-1", base, 3, 5, 0)).await?;
    record_paused(&client, &config, n1.record(), "m-1").await?;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    match controller.step_reshard(&live).await? {
        ReshardStep::Aborted {
            reason,
            shard_count,
        } => {
            assert!(reason.contains("n2"), "{reason}");
            assert_eq!(shard_count, 3);
        }
        other => panic!("expected an abort: {other:?}"),
    }
    assert_eq!(topology.load_versioned().await?.unwrap().revision, base);
    assert_eq!(read_grants(&client, &config).await?, grants);
    assert!(paused_nodes(&client, &config).await?.is_empty());
    assert_eq!(
        controller.step_reshard(&live).await?,
        ReshardStep::Idle {
            shard_count: Some(3)
        }
    );

    // A cancel: the next request may run, and aborting it twice is a conflict.
    request_reshard(&client, &config, &request("m-2", base, 3, 4, 60_000)).await?;
    let doc = reshard_store(&client, &config)
        .load_versioned()
        .await?
        .unwrap();
    abort_reshard(&client, &config, &doc, "cancelled").await?;
    assert!(matches!(
        abort_reshard(&client, &config, &doc, "again").await,
        Err(Error::Conflict { .. })
    ));
    let doc = reshard_store(&client, &config)
        .load_versioned()
        .await?
        .unwrap();
    assert_eq!(
        doc.value.phase,
        ReshardPhase::Aborted {
            reason: "cancelled".into()
        }
    );
    // A cut over of an aborted request is refused.
    assert!(controller.cut_over(&doc).await.is_err());
    assert_eq!(topology.load_versioned().await?.unwrap().revision, base);
    Ok(())
}
