//! The coordination layer against a real etcd, one server per test (`EtcdServer`).
//! These fail, never skip, when no etcd binary is installed.
//!
//! Timings: 2 s lease TTL, 200 ms keepalives, 800 ms safety margin (see
//! `EtcdServer::node_config`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use floe_cluster::testing::EtcdServer;
use floe_cluster::{
    Controller, Election, Error, EtcdDocStore, LeaseState, Member, NodeWatch, OwnershipLease,
    Refusal, TopologyStore, current_leader, current_sink, live_nodes, read_grants,
};

const TTL: Duration = Duration::from_secs(2);

async fn join(etcd: &EtcdServer, node: &str, port: u16) -> Result<Member> {
    let config = etcd.node_config("test", node, port);
    let client = floe_cluster::connect(&config).await?;
    Ok(Member::join(&client, &config).await?)
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns the time it took.
async fn eventually(
    within: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > within {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

/// A TCP forwarder between one node and etcd that the test can cut: a network
/// partition of that node alone (keepalives, watches and writes all stop).
struct Partitionable {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Partitionable {
    async fn to(etcd: &EtcdServer) -> Result<Partitionable> {
        use std::sync::atomic::Ordering;
        let upstream = etcd.endpoint().trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut2, conns2) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                conns2.lock().unwrap().push(conn);
            }
        });
        Ok(Partitionable {
            addr,
            cut,
            conns,
            _accept: accept,
        })
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

fn refusal(r: floe_cluster::Result<floe_cluster::OwnerEpoch>) -> Option<Refusal> {
    match r {
        Err(Error::NotOwner { reason, .. }) => Some(reason),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_and_disappears_a_ttl_after_its_keepalives_stop() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let n2 = join(&etcd, "n2", 7002).await?;
    let nodes = live_nodes(n2.client(), n2.config()).await?;
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert_eq!(nodes["n1"].advertised_addr, "127.0.0.1:7001");
    assert_eq!(nodes["n1"].lease_id, n1.lease().lease_id());

    let mut watch = NodeWatch::start(n2.client(), n2.config());
    watch
        .wait_for(TTL, |n| n.len() == 2)
        .await
        .context("the watch lists both nodes")?;
    // Keepalives run: n1 stays well past its TTL.
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    assert!(n1.lease().state().is_valid());
    assert_eq!(watch.current().len(), 2);

    // n1 stops renewing (as a crash would): etcd drops it within a TTL.
    let stopped = Instant::now();
    drop(n1);
    watch
        .wait_for(TTL * 3, |n| !n.contains_key("n1"))
        .await
        .context("n1 expires")?;
    let gone_after = stopped.elapsed();
    assert!(
        gone_after >= TTL - Duration::from_millis(400),
        "{gone_after:?}"
    );
    assert_eq!(live_nodes(n2.client(), n2.config()).await?.len(), 1);
    eprintln!("n1 disappeared {gone_after:?} after its keepalives stopped");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_the_same_id_is_refused_and_leaves_nothing() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let first = join(&etcd, "n1", 7001).await?;
    match join(&etcd, "n1", 7009)
        .await
        .map_err(|e| e.downcast::<Error>())
    {
        Err(Ok(Error::DuplicateNode {
            node_id,
            holder_addr,
            ..
        })) => {
            assert_eq!(node_id, "n1");
            assert_eq!(holder_addr, "127.0.0.1:7001");
        }
        other => bail!("expected DuplicateNode, got {other:?}"),
    }
    // The refused join revoked the lease it took.
    let mut client = etcd.client().await?;
    assert_eq!(client.leases().await?.leases().len(), 1);
    let nodes = live_nodes(first.client(), first.config()).await?;
    assert_eq!(nodes["n1"].advertised_addr, "127.0.0.1:7001");

    // Once the first leaves, the id is free again.
    first.leave().await?;
    let again = join(&etcd, "n1", 7009).await?;
    assert_eq!(
        live_nodes(again.client(), again.config()).await?["n1"].advertised_addr,
        "127.0.0.1:7009"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_configured_for_another_cluster_id_is_refused() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let mut alpha = etcd.node_config("alpha", "n1", 7001);
    alpha.etcd_prefix = Some("/shared".into());
    let client = floe_cluster::connect(&alpha).await?;
    let _a = Member::join(&client, &alpha).await?;

    let mut beta = etcd.node_config("beta", "n2", 7002);
    beta.etcd_prefix = Some("/shared".into());
    match Member::join(&client, &beta).await {
        Err(Error::ClusterIdMismatch {
            recorded,
            configured,
            ..
        }) => {
            assert_eq!((recorded.as_str(), configured.as_str()), ("alpha", "beta"));
        }
        other => bail!("expected ClusterIdMismatch, got {other:?}"),
    }
    let nodes = live_nodes(&client, &alpha).await?;
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["n1"]);
    assert_eq!(client.clone().leases().await?.leases().len(), 1);

    // An invalid configuration is refused before etcd is touched.
    let mut short = etcd.node_config("alpha", "n3", 7003);
    short.safety_margin_ms = 1_800;
    assert!(matches!(
        Member::join(&client, &short).await,
        Err(Error::LeaseTtlTooShort { .. })
    ));
    assert_eq!(live_nodes(&client, &alpha).await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_fails_over_when_the_leader_lease_expires_and_on_resign() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let n2 = join(&etcd, "n2", 7002).await?;
    let n3 = join(&etcd, "n3", 7003).await?;
    let t1 = Election::new(&n1).campaign().await?;
    assert_eq!(t1.node_id, "n1");
    assert_eq!(Election::new(&n2).try_acquire().await?, None);
    // Campaigning again as the holder returns the same term.
    assert_eq!(Election::new(&n1).try_acquire().await?, Some(t1.clone()));

    let (e2, e3) = (Election::new(&n2), Election::new(&n3));
    let c2 = tokio::spawn(async move { e2.campaign().await });
    let c3 = tokio::spawn(async move { e3.campaign().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !c2.is_finished() && !c3.is_finished(),
        "nobody replaces a live leader"
    );

    // The leader crashes: its lease expires and one candidate takes over.
    let crashed = Instant::now();
    let n1_client = n1.client().clone();
    let n1_config = n1.config().clone();
    drop(n1);
    let (mut c2, mut c3) = (c2, c3);
    let (winner, loser) = tokio::select! {
        r = &mut c2 => (r??, c3),
        r = &mut c3 => (r??, c2),
    };
    let failover = crashed.elapsed();
    assert!(winner.term > t1.term);
    assert!(failover < TTL * 2, "{failover:?}");
    assert_eq!(
        current_leader(&n1_client, &n1_config).await?,
        Some(winner.clone())
    );
    eprintln!("leader failover took {failover:?}");

    // The deposed leader can no longer write a grant.
    let old = Controller::new(&n1_client, &n1_config, t1);
    let n2_record = live_nodes(&n1_client, &n1_config).await?["n2"].clone();
    assert!(matches!(
        old.grant(0, &n2_record, None).await,
        Err(Error::NotLeader { .. })
    ));

    // A resignation hands over at once to the remaining candidate.
    let resigned = Instant::now();
    let winner_member = if winner.node_id == "n2" { &n2 } else { &n3 };
    Election::new(winner_member).resign(&winner).await?;
    let next = tokio::time::timeout(TTL, loser).await???;
    assert!(next.term > winner.term && next.node_id != winner.node_id);
    eprintln!("handover after resign took {:?}", resigned.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_election_is_its_own_and_holds_only_while_the_lease_lives() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let n2 = join(&etcd, "n2", 7002).await?;
    // n2 leads placement; n1 wins the sink: two keys, two elections.
    let leader = Election::new(&n2).campaign().await?;
    let sink = Election::for_sink(&n1).campaign().await?;
    assert_eq!(
        (leader.node_id.as_str(), sink.node_id.as_str()),
        ("n2", "n1")
    );
    assert_eq!(Election::for_sink(&n2).try_acquire().await?, None);
    assert!(Election::for_sink(&n1).holds(&sink).await?);
    assert!(
        !Election::for_sink(&n2).holds(&sink).await?,
        "n2's lease is not the term's"
    );
    let (client, config) = (n2.client().clone(), n2.config().clone());
    assert_eq!(current_sink(&client, &config).await?, Some(sink.clone()));
    let shown = floe_cluster::status(&client, &config).await?;
    assert_eq!(
        (shown.sink.as_deref(), shown.sink_term),
        (Some("n1"), Some(sink.term)),
        "`floe cluster status` names the sink's node"
    );

    // n1 crashes: its own view says no once its deadline passed (before etcd
    // expires the key), and n2 is elected with a larger term.
    let e1 = Election::for_sink(&n1);
    let lease = n1.lease().clone();
    let e2 = Election::for_sink(&n2);
    let campaign = tokio::spawn(async move { e2.campaign().await });
    drop(n1);
    eventually(TTL, "n1's lease past its deadline", || {
        !lease.state().is_valid()
    })
    .await?;
    assert!(!e1.holds(&sink).await?, "a stale term never holds");
    let next = tokio::time::timeout(TTL * 3, campaign).await???;
    assert_eq!(next.node_id, "n2");
    assert!(next.term > sink.term);
    assert!(!e1.holds(&sink).await?);
    assert_eq!(current_sink(&client, &config).await?, Some(next));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_follow_placement_with_increasing_epochs_and_compare_and_swap() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let _n2 = join(&etcd, "n2", 7002).await?;
    let term = Election::new(&n1).campaign().await?;
    let controller = Controller::new(n1.client(), n1.config(), term);

    let nodes = live_nodes(n1.client(), n1.config()).await?;
    let first = controller.reconcile(6, &nodes).await?;
    assert_eq!(first.len(), 6);
    let grants = read_grants(n1.client(), n1.config()).await?;
    let per_node = |g: &BTreeMap<u32, floe_cluster::Grant>, n: &str| {
        g.values().filter(|g| g.node_id == n).count()
    };
    assert_eq!((per_node(&grants, "n1"), per_node(&grants, "n2")), (3, 3));
    // Nothing changes, nothing is written.
    assert!(controller.reconcile(6, &nodes).await?.is_empty());

    // A third node takes exactly its share; each moved grant has a larger epoch and
    // names the previous owner.
    let _n3 = join(&etcd, "n3", 7003).await?;
    let nodes = live_nodes(n1.client(), n1.config()).await?;
    let moved = controller.reconcile(6, &nodes).await?;
    assert_eq!(moved.len(), 2);
    for g in &moved {
        assert_eq!(g.node_id, "n3");
        let before = &grants[&g.shard];
        assert!(g.epoch > before.epoch);
        assert_eq!(g.previous[0].node_id, before.node_id);
        assert_eq!(g.previous[0].epoch, before.epoch);
    }
    let after = read_grants(n1.client(), n1.config()).await?;
    assert_eq!(
        (
            per_node(&after, "n1"),
            per_node(&after, "n2"),
            per_node(&after, "n3")
        ),
        (2, 2, 2)
    );

    // Compare-and-swap: a grant written against a stale epoch conflicts.
    let stale = &grants[&moved[0].shard];
    match controller
        .grant(stale.shard, &nodes["n1"], Some(stale))
        .await
    {
        Err(Error::Conflict {
            expected, found, ..
        }) => {
            assert_eq!(expected, Some(stale.epoch.0 as i64));
            assert_eq!(found, Some(moved[0].epoch.0 as i64));
        }
        other => bail!("expected Conflict, got {other:?}"),
    }
    // A grant to a node not registered with that lease is refused.
    let mut ghost = nodes["n2"].clone();
    ghost.lease_id += 1;
    assert!(matches!(
        controller.grant(0, &ghost, after.get(&0)).await,
        Err(Error::NodeNotLive { .. })
    ));
    // Shrinking the shard count retires the grants beyond it.
    controller.reconcile(4, &nodes).await?;
    assert_eq!(read_grants(n1.client(), n1.config()).await?.len(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_move_never_has_two_owners_acknowledging() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let n2 = join(&etcd, "n2", 7002).await?;
    let (o1, o2) = (OwnershipLease::start(&n1), OwnershipLease::start(&n2));
    let controller = Controller::new(
        n1.client(),
        n1.config(),
        Election::new(&n1).campaign().await?,
    );
    let nodes = live_nodes(n1.client(), n1.config()).await?;
    assert_eq!(refusal(o1.may_acknowledge(0)), Some(Refusal::NotGranted));

    let g1 = controller.grant(0, &nodes["n1"], None).await?;
    eventually(TTL, "n1 serves shard 0", || o1.may_acknowledge(0).is_ok()).await?;
    assert_eq!(o1.may_acknowledge(0)?, g1.epoch);
    assert_eq!(refusal(o2.may_acknowledge(0)), Some(Refusal::NotGranted));

    // Sample both views continuously through the move: never both acknowledging.
    let (s1, s2) = (o1.clone(), o2.clone());
    let sampler = tokio::spawn(async move {
        let (mut overlaps, mut n2_served) = (0, false);
        let until = Instant::now() + TTL;
        while Instant::now() < until {
            // n2 first: if it serves now, n1 must already have stopped.
            let second = s2.may_acknowledge(0).is_ok();
            let first = s1.may_acknowledge(0).is_ok();
            overlaps += usize::from(first && second);
            n2_served |= second;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        (overlaps, n2_served)
    });
    let g2 = controller.grant(0, &nodes["n2"], Some(&g1)).await?;
    assert!(g2.epoch > g1.epoch);
    let took = eventually(TTL, "n2 serves shard 0", || o2.may_acknowledge(0).is_ok()).await?;
    assert_eq!(o2.may_acknowledge(0)?, g2.epoch);
    assert_eq!(refusal(o1.may_acknowledge(0)), Some(Refusal::NotGranted));
    // n1 released (it is alive): the handover did not wait for a lease to expire.
    assert!(took < TTL - Duration::from_millis(500), "{took:?}");
    let (overlaps, n2_served) = sampler.await?;
    assert!(n2_served);
    assert_eq!(overlaps, 0);
    eprintln!("planned handover took {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_owner_stops_before_the_new_owner_starts_after_its_lease_expired()
-> Result<()> {
    let etcd = EtcdServer::start().await?;
    // n1 reaches etcd only through a link the test can cut.
    let link = Partitionable::to(&etcd).await?;
    let mut n1_config = etcd.node_config("test", "n1", 7001);
    n1_config.etcd_endpoints = vec![link.endpoint()];
    let n1 = Member::join(&floe_cluster::connect(&n1_config).await?, &n1_config).await?;
    let n2 = join(&etcd, "n2", 7002).await?;
    let (o1, o2) = (OwnershipLease::start(&n1), OwnershipLease::start(&n2));
    let controller = Controller::new(
        n2.client(),
        n2.config(),
        Election::new(&n2).campaign().await?,
    );
    let nodes = live_nodes(n2.client(), n2.config()).await?;
    let g1 = controller.grant(0, &nodes["n1"], None).await?;
    eventually(TTL, "n1 serves shard 0", || o1.may_acknowledge(0).is_ok()).await?;

    // n1 is cut off from etcd: no keepalive, no watch, no release gets through, but its
    // view keeps answering, as a partitioned (or paused, then resumed) node would.
    let n1_lease = n1.lease().lease_id();
    link.cut();
    let silent = Instant::now();
    // The controller moves the shard at once, before etcd expired n1's lease.
    let g2 = controller.grant(0, &nodes["n2"], Some(&g1)).await?;
    assert_eq!(g2.previous[0].node_id, "n1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        refusal(o2.may_acknowledge(0)),
        Some(Refusal::AwaitingHandover { .. })
    ));

    // Sample both views: never both acknowledging.
    let (s1, s2) = (o1.clone(), o2.clone());
    let sampler = tokio::spawn(async move {
        let (mut overlaps, mut n1_stopped, mut n2_started) = (0, None, None);
        let until = Instant::now() + TTL * 3;
        while Instant::now() < until && n2_started.is_none() {
            let second = s2.may_acknowledge(0).is_ok();
            let first = s1.may_acknowledge(0).is_ok();
            overlaps += usize::from(first && second);
            if !first && n1_stopped.is_none() {
                n1_stopped = Some(silent.elapsed());
            }
            if second {
                n2_started = Some(silent.elapsed());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        (overlaps, n1_stopped, n2_started)
    });
    let (overlaps, n1_stopped, n2_started) = sampler.await?;
    let (n1_stopped, n2_started) = (
        n1_stopped.context("n1 stops acknowledging")?,
        n2_started.context("n2 serves shard 0")?,
    );
    assert_eq!(overlaps, 0);
    assert!(matches!(
        refusal(o1.may_acknowledge(0)),
        Some(Refusal::LeaseExpiring | Refusal::NotGranted)
    ));
    // n1 stopped a margin before its lease could expire; n2 started only once etcd had
    // expired it (at least a TTL after the last keepalive).
    assert!(n1_stopped < TTL, "{n1_stopped:?}");
    assert!(
        n2_started >= TTL - Duration::from_millis(250),
        "{n2_started:?}"
    );
    let mut client = etcd.client().await?;
    assert_eq!(client.lease_time_to_live(n1_lease, None).await?.ttl(), -1);
    assert_eq!(o2.may_acknowledge(0)?, g2.epoch);
    eprintln!(
        "partitioned owner: n1 stopped after {n1_stopped:?}, n2 started after {n2_started:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_mid_run_stops_acknowledgements_then_they_resume() -> Result<()> {
    let mut etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let o1 = OwnershipLease::start(&n1);
    let controller = Controller::new(
        n1.client(),
        n1.config(),
        Election::new(&n1).campaign().await?,
    );
    let nodes = live_nodes(n1.client(), n1.config()).await?;
    let g = controller.grant(0, &nodes["n1"], None).await?;
    eventually(TTL, "n1 serves shard 0", || o1.may_acknowledge(0).is_ok()).await?;
    let mut watch = NodeWatch::start(n1.client(), n1.config());
    watch
        .wait_for(TTL, |n| n.len() == 1)
        .await
        .context("watch sees n1")?;

    let down = Instant::now();
    etcd.stop();
    assert!(o1.may_acknowledge(0).is_ok(), "still inside the lease");
    let stopped = eventually(TTL, "n1 stops acknowledging", || {
        o1.may_acknowledge(0).is_err()
    })
    .await?;
    assert_eq!(refusal(o1.may_acknowledge(0)), Some(Refusal::LeaseExpiring));
    // The deadline is TTL - margin after the last keepalive sent before the stop.
    assert!(
        stopped <= TTL - Duration::from_millis(800) + Duration::from_millis(300),
        "{stopped:?}"
    );
    // etcd calls fail (retryably) while it is down.
    let err = live_nodes(n1.client(), n1.config()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    tokio::time::sleep(TTL).await;

    etcd.restart().await?;
    let restarted = Instant::now();
    // etcd keeps leases across a restart (and refreshes their TTL): the client
    // reconnects by itself, keepalives succeed and the node acknowledges again.
    let resumed = eventually(TTL * 3, "n1 acknowledges again", || {
        o1.may_acknowledge(0).is_ok()
    })
    .await?;
    assert_eq!(o1.may_acknowledge(0)?, g.epoch);
    assert!(n1.lease().state().is_valid());
    // The node watch resumed too: a node joining after the restart shows up.
    let _n2 = join(&etcd, "n2", 7002).await?;
    watch
        .wait_for(TTL * 2, |n| n.contains_key("n2") && n.contains_key("n1"))
        .await
        .context("watch resumes after the restart")?;
    eprintln!(
        "etcd down {:?}: acks stopped {stopped:?} after the stop, resumed {resumed:?} after the restart",
        restarted - down
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_noticed_and_nothing_is_acknowledged_after() -> Result<()> {
    let etcd = EtcdServer::start().await?;
    let n1 = join(&etcd, "n1", 7001).await?;
    let o1 = OwnershipLease::start(&n1);
    let controller = Controller::new(
        n1.client(),
        n1.config(),
        Election::new(&n1).campaign().await?,
    );
    let nodes = live_nodes(n1.client(), n1.config()).await?;
    controller.grant(0, &nodes["n1"], None).await?;
    eventually(TTL, "n1 serves shard 0", || o1.may_acknowledge(0).is_ok()).await?;

    // etcd loses the lease (revoked from outside, as an expiry the node did not see).
    let mut admin = etcd.client().await?;
    admin.lease_revoke(n1.lease().lease_id()).await?;
    eventually(TTL, "n1 notices", || n1.lease().state() == LeaseState::Lost).await?;
    assert_eq!(refusal(o1.may_acknowledge(0)), Some(Refusal::LeaseLost));
    eventually(TTL, "the view drops its grants", || o1.held().is_empty()).await?;
    // Its registration and leadership went with the lease; it cannot campaign again.
    assert!(live_nodes(n1.client(), n1.config()).await?.is_empty());
    assert_eq!(current_leader(n1.client(), n1.config()).await?, None);
    assert!(matches!(
        Election::new(&n1).campaign().await,
        Err(Error::LeaseLost { .. })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_document_is_compare_and_swapped_and_watched() -> Result<()> {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Doc {
        version: u64,
        shards: u32,
    }
    let etcd = EtcdServer::start().await?;
    let config = etcd.node_config("test", "n1", 7001);
    let client = floe_cluster::connect(&config).await?;
    let store: EtcdDocStore<Doc> = EtcdDocStore::new(&client, &config, "topology");
    let other: EtcdDocStore<Doc> = EtcdDocStore::new(&client, &config, "topology");
    let mut watch = other.watch();
    assert_eq!(store.load_versioned().await?, None);

    let v1 = Doc {
        version: 1,
        shards: 4,
    };
    let r1 = store.compare_and_swap(None, &v1).await?;
    // A second creator loses.
    match other
        .compare_and_swap(
            None,
            &Doc {
                version: 1,
                shards: 8,
            },
        )
        .await
    {
        Err(Error::Conflict {
            expected: None,
            found,
            ..
        }) => assert_eq!(found, Some(r1)),
        other => bail!("expected Conflict, got {other:?}"),
    }
    let v2 = Doc {
        version: 2,
        shards: 6,
    };
    let r2 = store.compare_and_swap(Some(r1), &v2).await?;
    assert!(r2 > r1);
    // A writer that read v1 loses against v2.
    assert!(matches!(
        other
            .compare_and_swap(
                Some(r1),
                &Doc {
                    version: 2,
                    shards: 5
                }
            )
            .await,
        Err(Error::Conflict { .. })
    ));
    let loaded = other.load_versioned().await?.context("stored")?;
    assert_eq!((loaded.revision, &loaded.value), (r2, &v2));
    let seen = watch
        .wait_for_revision(r2, TTL)
        .await?
        .context("the watch sees v2")?;
    assert_eq!(seen.value, v2);

    // Through the engine-shaped trait: `store` swaps against the version this store last
    // saw, so a node with a stale view gets a conflict instead of overwriting.
    let (a, b): (EtcdDocStore<Doc>, EtcdDocStore<Doc>) = (
        EtcdDocStore::new(&client, &config, "topology"),
        EtcdDocStore::new(&client, &config, "topology"),
    );
    assert_eq!(TopologyStore::load(&a).await?, Some(v2.clone()));
    assert_eq!(TopologyStore::load(&b).await?, Some(v2.clone()));
    let v3 = Doc {
        version: 3,
        shards: 7,
    };
    a.store(&v3).await?;
    match b
        .store(&Doc {
            version: 3,
            shards: 9,
        })
        .await
    {
        Err(Error::Conflict { expected, .. }) => assert_eq!(expected, Some(r2)),
        other => bail!("expected Conflict, got {other:?}"),
    }
    assert_eq!(TopologyStore::load(&b).await?, Some(v3.clone()));
    let v4 = Doc {
        version: 4,
        shards: 8,
    };
    b.store(&v4).await?;
    a.store(&v4).await.unwrap_err();
    // A store that never read the document may only create it.
    let fresh: EtcdDocStore<Doc> = EtcdDocStore::new(&client, &config, "topology");
    assert!(matches!(
        fresh.store(&v4).await,
        Err(Error::Conflict { expected: None, .. })
    ));
    assert_eq!(TopologyStore::load(&fresh).await?, Some(v4));

    // A value floe cannot read is a typed error, not a panic.
    let mut raw = client.clone();
    raw.put(store.key(), "not json", None).await?;
    assert!(matches!(
        store.load_versioned().await,
        Err(Error::Corrupt { .. })
    ));
    Ok(())
}
