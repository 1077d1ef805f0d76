//! Planned handovers and drains against a real etcd (`EtcdServer`, one per
//! test): the controller moves a shard whose owner is live only once the new
//! owner recorded that it is warm, and never places on a draining node.
//! These fail, never skip, when no etcd binary is installed.

use std::collections::BTreeMap;

use anyhow::Result;
use floe_cluster::testing::EtcdServer;
use floe_cluster::{Controller, Election, Error, Member, live_nodes, read_grants};

async fn join(etcd: &EtcdServer, node: &str, port: u16) -> Result<Member> {
    let config = etcd.node_config("test", node, port);
    let client = floe_cluster::connect(&config).await?;
    Ok(Member::join(&client, &config).await?)
}

fn held_by(grants: &BTreeMap<u32, floe_cluster::Grant>, node: &str) -> Vec<u32> {
    grants
        .values()
        .filter(|g| g.node_id == node)
        .map(|g| g.shard)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_owner_keeps_its_shard_until_the_new_owner_is_ready() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let n2 = join(&etcd, "n2", 7002).await?;
    let controller = Controller::new(
        n1.client(),
        n1.config(),
        Election::new(&n1).campaign().await?,
    );
    let (client, config) = (n1.client().clone(), n1.config().clone());

    // First placement: no owner to hand over from, granted at once.
    let nodes = live_nodes(&client, &config).await?;
    let first = controller.reconcile_planned(6, &nodes).await?;
    assert_eq!(first.granted.len(), 6);
    assert!(!first.pending());
    let before = read_grants(&client, &config).await?;

    // A third node: its share is proposed, nothing is granted yet.
    let n3 = join(&etcd, "n3", 7003).await?;
    let nodes = live_nodes(&client, &config).await?;
    let proposed = controller.reconcile_planned(6, &nodes).await?;
    assert!(proposed.granted.is_empty(), "{proposed:?}");
    assert_eq!(proposed.proposed.len(), 2);
    assert_eq!(read_grants(&client, &config).await?, before);
    let again = controller.reconcile_planned(6, &nodes).await?;
    assert_eq!(again.waiting, proposed.proposed);
    assert!(again.granted.is_empty());

    // n3 is warm for one of them: exactly that one moves, listing its old owner.
    let shard = proposed.proposed[0];
    floe_cluster::record_ready(
        n3.client(),
        n3.config(),
        "n3",
        n3.record().lease_id,
        shard,
        before[&shard].epoch,
    )
    .await?;
    let cut = controller.reconcile_planned(6, &nodes).await?;
    assert_eq!(cut.granted.len(), 1);
    let g = &cut.granted[0];
    assert_eq!((g.shard, g.node_id.as_str()), (shard, "n3"));
    assert_eq!(g.previous[0].node_id, before[&shard].node_id);
    assert_eq!(cut.waiting, vec![proposed.proposed[1]]);
    // A ready record of an older grant epoch does not count.
    floe_cluster::record_ready(
        n3.client(),
        n3.config(),
        "n3",
        n3.record().lease_id,
        proposed.proposed[1],
        floe_cluster::OwnerEpoch(1),
    )
    .await?;
    let still = controller.reconcile_planned(6, &nodes).await?;
    assert!(still.granted.is_empty(), "{still:?}");

    // The target dies mid-warm-up: its intent goes, the owner keeps the shard.
    drop(n3);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let nodes = loop {
        let nodes = live_nodes(&client, &config).await?;
        if !nodes.contains_key("n3") {
            break nodes;
        }
        assert!(std::time::Instant::now() < until, "n3 never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let after = controller.reconcile_planned(6, &nodes).await?;
    // n3's one shard has no live owner: granted at once; the other never moved.
    assert_eq!(after.granted.len(), 1, "{after:?}");
    assert_eq!(after.granted[0].shard, shard);
    assert!(!after.pending(), "{after:?}");
    let grants = read_grants(&client, &config).await?;
    assert_eq!(grants[&proposed.proposed[1]], before[&proposed.proposed[1]]);
    let _ = n2;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_gets_nothing_and_the_last_node_cannot_be_drained() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let n2 = join(&etcd, "n2", 7002).await?;
    let controller = Controller::new(
        n1.client(),
        n1.config(),
        Election::new(&n1).campaign().await?,
    );
    let (client, config) = (n1.client().clone(), n1.config().clone());
    let nodes = live_nodes(&client, &config).await?;
    controller.reconcile_planned(4, &nodes).await?;

    match floe_cluster::drain(&client, &config, "n7").await {
        Err(Error::UnknownNode { node_id, live, .. }) => {
            assert_eq!(node_id, "n7");
            assert_eq!(live, vec!["n1".to_string(), "n2".to_string()]);
        }
        other => anyhow::bail!("expected UnknownNode, got {other:?}"),
    }
    let status = floe_cluster::drain(&client, &config, "n2").await?;
    assert!(status.draining && !status.drained, "{status:?}");
    assert_eq!(status.shards.len(), 2);
    // Draining it again changes nothing; the last node left is refused.
    assert!(floe_cluster::drain(&client, &config, "n2").await?.draining);
    assert!(matches!(
        floe_cluster::drain(&client, &config, "n1").await,
        Err(Error::LastLiveNode { .. })
    ));
    let moves = controller.reconcile_planned(4, &nodes).await?;
    assert_eq!(moves.proposed.len(), 2, "n2's shards are proposed to n1");
    let grants = read_grants(&client, &config).await?;
    for shard in held_by(&grants, "n2") {
        floe_cluster::record_ready(
            &client,
            &config,
            "n1",
            n1.record().lease_id,
            shard,
            grants[&shard].epoch,
        )
        .await?;
    }
    let moved = controller.reconcile_planned(4, &nodes).await?;
    assert_eq!(moved.granted.len(), 2);
    let status = floe_cluster::drain_status(&client, &config, "n2").await?;
    assert!(status.drained && status.shards.is_empty(), "{status:?}");
    let listed = floe_cluster::status(&client, &config).await?;
    assert!(listed.nodes["n2"].draining && !listed.nodes["n1"].draining);

    // Undrained, it takes its share again (proposed: n1 is live).
    floe_cluster::undrain(&client, &config, "n2").await?;
    let back = controller.reconcile_planned(4, &nodes).await?;
    assert_eq!(back.proposed.len(), 2, "{back:?}");
    // The mark is bound to the node's lease: it goes when the node leaves.
    floe_cluster::drain(&client, &config, "n2").await?;
    n2.leave().await?;
    assert!(
        floe_cluster::draining_nodes(&client, &config)
            .await?
            .is_empty()
    );
    Ok(())
}
