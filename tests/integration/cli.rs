//! The `floe` binary against an embedded data directory, as a user runs it.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[path = "../support/run.rs"]
mod run;
use run::floe;

fn ok_json(data: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&run::ok(data, args)).expect("floe prints JSON")
}

fn fails_with(data: &Path, args: &[&str], message: &str) {
    let out = floe(data, args);
    assert!(!out.status.success(), "floe {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(message),
        "stderr of {args:?} lacks {message:?}: {stderr}"
    );
}

#[test]
fn put_get_update_list_delete_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let ack = ok_json(
        data,
        &["put", "acme", "Order", "o-1", r#"{"status":"placed"}"#],
    );
    assert_eq!(ack["version"], 1);
    assert_eq!(ack["kind"], "created");
    let ack = ok_json(
        data,
        &[
            "update",
            "acme",
            "Order",
            "o-1",
            r#"{"status":"paid"}"#,
            "--expected-version",
            "1",
        ],
    );
    assert_eq!(ack["version"], 2);
    let entity = ok_json(data, &["get", "acme", "Order", "o-1"]);
    assert_eq!(entity["data"], serde_json::json!({"status": "paid"}));
    ok_json(data, &["put", "acme", "Order", "o-2", "{}"]);
    let list = ok_json(
        data,
        &["list", "acme", "Order", "--limit", "1", "--after", "o-1"],
    );
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], "o-2");
    let ack = ok_json(data, &["delete", "acme", "Order", "o-1"]);
    assert_eq!(ack["kind"], "deleted");
    fails_with(data, &["get", "acme", "Order", "o-1"], "not found");
}

#[test]
fn errors_are_clear_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    fails_with(
        data,
        &["put", "acme", "Order", "o-1", "{not json"],
        "parsing JSON",
    );
    fails_with(
        data,
        &["put", "acme", "Order", "o-1", "[1]"],
        "must be a JSON object",
    );
    ok_json(data, &["put", "acme", "Order", "o-1", "{}"]);
    fails_with(
        data,
        &["put", "--create", "acme", "Order", "o-1", "{}"],
        "already exists",
    );
    fails_with(
        data,
        &[
            "update",
            "acme",
            "Order",
            "o-1",
            "{}",
            "--expected-version",
            "5",
        ],
        "version conflict on acme/Order/o-1: expected version 5, found 1",
    );
    fails_with(data, &["delete", "acme", "Order", "nope"], "not found");
    fails_with(
        data,
        &["sql", "SELECT 1", "--timeout-ms", "0"],
        "invalid value '0' for '--timeout-ms",
    );
}

#[test]
fn topology_and_shard_for_key_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let topology = ok_json(data, &["topology"]);
    assert_eq!(topology["version"], 1);
    assert_eq!(topology["shard_count"], 16);
    let info = ok_json(data, &["shard-for-key", "acme"]);
    let ack = ok_json(data, &["put", "acme", "Order", "o-1", "{}"]);
    assert_eq!(info["shard"], ack["shard"]);
    assert_eq!(info["topology_version"], 1);
    let stats = ok_json(data, &["stats"]);
    assert_eq!(stats["shards"].as_array().unwrap().len(), 16);
}

#[test]
fn a_config_file_sets_the_topology_of_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("floe.toml");
    std::fs::write(
        &config,
        "[topology]\nshards = 3\nstrategy = { kind = \"ring\", virtual_nodes = 64 }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "topology",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let topology: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(topology["shard_count"], 3);
    assert_eq!(topology["strategy"]["kind"], "ring");
    std::fs::write(&config, "[topology]\nshards = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["--config", config.to_str().unwrap(), "topology"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard"));
}

#[test]
fn demo_runs_small() {
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "demo",
            "--restaurants",
            "20",
            "--items",
            "3",
            "--orders",
            "5",
            "--shards",
            "4",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("entities per shard"), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("demo: ") && last.contains("acked writes/s"),
        "{last}"
    );
}

#[test]
fn migrate_plans_runs_and_reports_status_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for i in 0..40 {
        let out = floe(
            data,
            &["put", &format!("tenant-{i}"), "Order", "o-1", r#"{"n":1}"#],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let plan = ok_json(data, &["migrate", "plan", "add-shard", "--json"]);
    assert_eq!(plan["validation"]["errors"], Value::Array(vec![]));
    assert_eq!(plan["plan"]["to"]["shard_count"], 17);
    let moving = plan["plan"]["moves"].as_array().unwrap().len();
    assert!(moving > 0, "40 tenants over 17 shards: some move");
    // No migration yet; cancel has nothing to cancel.
    assert_eq!(
        ok_json(data, &["migrate", "status", "--json"]),
        Value::Array(vec![])
    );
    fails_with(data, &["migrate", "cancel"], "no running migration");

    let out = floe(data, &["migrate", "add-shard", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("keys moved:       {moving} ")),
        "{stdout}"
    );
    assert!(stdout.contains("topology v1 -> v2"), "{stdout}");

    let jobs = ok_json(data, &["migrate", "status", "--json"]);
    assert_eq!(jobs[0]["status"], "completed");
    assert_eq!(jobs[0]["phase"], "done");
    assert_eq!(ok_json(data, &["topology"])["shard_count"], 17);
    // Every entity is still readable, from its new owner.
    for i in 0..40 {
        let entity = ok_json(data, &["get", &format!("tenant-{i}"), "Order", "o-1"]);
        assert_eq!(entity["version"], 1);
    }
    // Any shard may leave now; one the topology does not have may not.
    fails_with(
        data,
        &["migrate", "remove-shard", "--shard", "17"],
        "shard 17 does not exist",
    );
}
