//! Cluster mode start-up through the real `floe serve` binary, against a real
//! etcd (and a real broker where a node must come up): a configuration that
//! cannot work is refused at start with a clear error, and a refused node
//! leaves nothing registered. Without etcd or the broker these tests fail.

#[path = "../support/cluster.rs"]
mod cluster;

use std::time::Duration;

use cluster::{Caller, Harness, Node, free_port};
use serde_json::json;

/// Starts a node expected to be refused; returns its output.
fn refused(harness: &Harness, id: &str, config: &str) -> String {
    let mut node = Node::spawn(harness.dir.path(), id, free_port(), config);
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "node {id} started: {}", node.output());
    node.output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_with_the_embedded_log_or_a_short_lease_is_refused_and_joins_nothing() {
    let harness = Harness::start().await;
    let port = free_port();
    let cluster = harness.cluster_config("n1", port);

    let embedded = harness.config_text("n1", &cluster, "file://");
    let out = refused(&harness, "n1", &embedded);
    assert!(
        out.contains("cluster mode needs a pipeline every node shares")
            && out.contains("embedded log"),
        "{out}"
    );

    let short = floe_cluster::ClusterConfig {
        lease_ttl_secs: 2,
        safety_margin_ms: 800,
        keepalive_interval_ms: 700,
        ..cluster.clone()
    };
    let out = refused(
        &harness,
        "n1",
        &harness.config_text("n1", &short, &harness.pipeline()),
    );
    assert!(
        out.contains("lease_ttl 2s is too short") && out.contains("need at least 2.2s"),
        "{out}"
    );

    let no_margin = floe_cluster::ClusterConfig {
        write_timeout_ms: 800,
        ..cluster.clone()
    };
    let out = refused(
        &harness,
        "n1",
        &harness.config_text("n1", &no_margin, &harness.pipeline()),
    );
    assert!(
        out.contains("write_timeout 800ms must be shorter than the safety margin"),
        "{out}"
    );

    assert!(harness.registered().await.is_empty(), "nothing joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_id_or_another_cluster_id_is_refused_at_start_and_joins_nothing() {
    let harness = Harness::start().await;
    let first = harness.node("n1");
    // The one node of the cluster serves every shard once it has restored
    // them: a write is acknowledged.
    let caller = Caller::new();
    let answer = caller
        .call(
            reqwest::Method::PUT,
            &[first.addr()],
            "/api/v1/entities/t/Thing/a",
            Some(&json!({ "x": 1 })),
            None,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // The same node id while n1 lives.
    let port = free_port();
    let same_id = harness.config_text(
        "n1",
        &harness.cluster_config("n1", port),
        &harness.pipeline(),
    );
    let out = refused(&harness, "n1-again", &same_id);
    assert!(
        out.contains("node id \"n1\" is already registered in cluster \"test\"")
            && out.contains(&first.addr()),
        "{out}"
    );

    // Another cluster id pointed at this cluster's keys.
    let foreign = floe_cluster::ClusterConfig {
        cluster_id: "other".into(),
        etcd_prefix: Some("/floe/test".into()),
        ..harness.cluster_config("n2", free_port())
    };
    let out = refused(
        &harness,
        "n2",
        &harness.config_text("n2", &foreign, &harness.pipeline()),
    );
    assert!(
        out.contains("cluster id mismatch")
            && out.contains("the cluster there is \"test\"")
            && out.contains("configured for \"other\""),
        "{out}"
    );

    let registered = harness.registered().await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0].node_id, "n1");
    assert_eq!(registered[0].advertised_addr, first.addr());

    // n1 still serves.
    let answer = caller
        .call(
            reqwest::Method::GET,
            &[first.addr()],
            "/api/v1/entities/t/Thing/a",
            None,
            None,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["data"], json!({ "x": 1 }), "{}", answer.body);
}

/// docker-compose.yml's cluster profile: etcd and three nodes, each mounting
/// its deploy/cluster-n*.toml, which is a valid cluster-mode configuration
/// with its own node id, advertised as its service, on the compose etcd.
#[test]
fn the_compose_cluster_profile_runs_etcd_and_three_valid_nodes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let compose: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let services = &compose["services"];
    assert!(services["etcd"].is_mapping(), "an etcd service");
    for n in 1..=3 {
        let name = format!("floe-n{n}");
        let service = &services[name.as_str()];
        let mounts: Vec<&str> = service["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let mount = format!("./deploy/cluster-n{n}.toml:/etc/floe/floe.toml:ro");
        assert!(mounts.contains(&mount.as_str()), "{name}: {mounts:?}");
        let text = std::fs::read_to_string(format!("{root}/deploy/cluster-n{n}.toml")).unwrap();
        let config = floe::Config::from_toml(&text).unwrap();
        config.validate().unwrap();
        let cluster = config.cluster.expect("a [cluster] section");
        assert_eq!(cluster.node_id, format!("n{n}"));
        assert_eq!(cluster.advertised_addr, format!("{name}:8080"));
        assert_eq!(cluster.etcd_endpoints, vec!["http://etcd:2379".to_string()]);
        assert!(config.lake.enabled && config.lake.sink, "a sink candidate");
    }
}
