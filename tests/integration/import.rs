//! `floe import`: 100k NDJSON lines imported by a real `floe` process that
//! is SIGKILLed halfway, then re-run: every line applied exactly once,
//! malformed lines reported with their line numbers, the rest imported.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use floe::{Config, Floe};
use serde_json::{Value, json};

const LINES: u64 = 100_000;
/// Lines that are not writes: malformed JSON, a missing field, an unknown op.
const BAD: [u64; 3] = [10, 50_001, 99_999];

fn config_text(data: &Path) -> String {
    format!(
        "data_dir = \"{}\"\n[log]\nfsync = \"always\"\npartitions = 4\n[topology]\nshards = 4\n[lake]\nenabled = false\n[partition_key]\nfields = [\"$id\"]\n",
        data.display()
    )
}

/// Line `n` (1-based): entity lines, create commands, and every 1000th line
/// with an idempotency key of its own.
fn line(n: u64) -> String {
    match n {
        10 => r#"{"namespace":"t","entity_type":"Thing","id":"x","data":{"#.into(),
        50_001 => r#"{"namespace":"t","entity_type":"Thing","data":{}}"#.into(),
        99_999 => r#"{"op":"merge","namespace":"t","entity_type":"Thing","id":"y","data":{}}"#.into(),
        n if n % 1000 == 0 => json!({"op": "create", "namespace": "t", "entity_type": "Thing", "id": format!("l-{n}"), "data": {"n": n}, "idempotency_key": format!("own-{n}")}).to_string(),
        n if n % 2 == 0 => json!({"op": "create", "namespace": "t", "entity_type": "Thing", "id": format!("l-{n}"), "data": {"n": n}}).to_string(),
        n => json!({"namespace": "t", "entity_type": "Thing", "id": format!("l-{n}"), "version": 1, "data": {"n": n}}).to_string(),
    }
}

fn floe(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_floe"));
    command
        .arg("--config")
        .arg(dir.join("floe.toml"))
        .env_remove("FLOE_DATA")
        .env_remove("FLOE_CONFIG");
    command
}

fn import(dir: &Path, input: &Path) -> Command {
    let mut command = floe(dir);
    command.arg("import").arg(input).arg("--quiet");
    command
}

fn summary(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Lines the saved resume position says are settled.
fn position(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join("data/imports")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter_map(|v| v["lines"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_halfway_and_run_again_applies_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("floe.toml"),
        config_text(&dir.path().join("data")),
    )
    .unwrap();
    let input = dir.path().join("input.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for n in 1..=LINES {
        writeln!(file, "{}", line(n)).unwrap();
    }
    file.flush().unwrap();
    drop(file);

    // First run: SIGKILL once about half the lines are settled.
    let mut child = import(dir.path(), &input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while position(dir.path()) < LINES / 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import finished before the kill"
        );
        assert!(Instant::now() < deadline, "the import is too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let killed = child.wait_with_output().unwrap();
    assert!(!killed.status.success());
    let stderr = String::from_utf8_lossy(&killed.stderr);
    assert!(
        stderr.contains("line 10: "),
        "malformed line reported: {stderr}"
    );
    let at_kill = position(dir.path());
    assert!(at_kill < LINES, "killed before the end");

    // Second run: resumes, applies the rest.
    let rerun = import(dir.path(), &input).output().unwrap();
    assert!(
        !rerun.status.success(),
        "malformed lines make the exit status a failure"
    );
    let report = summary(&rerun);
    let resumed = report["resumed_after"].as_u64().unwrap();
    assert!(resumed >= LINES / 2 && resumed <= at_kill, "{report}");
    assert_eq!(report["lines"], LINES);
    let failed: Vec<u64> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = BAD.iter().copied().filter(|&l| l > resumed).collect();
    assert_eq!(failed, expected, "{report}");
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(
        stderr.contains("line 99999: invalid write item"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown op"), "{stderr}");
    // A third run has nothing left to do.
    let third = import(dir.path(), &input).output().unwrap();
    let report = summary(&third);
    assert_eq!(
        (report["resumed_after"].clone(), report["applied"].clone()),
        (json!(LINES), json!(0))
    );

    // Every good line once in the log, and served.
    let mut config = Config::from_toml_file(&dir.path().join("floe.toml")).unwrap();
    config.data_dir = dir.path().join("data");
    let floe = Floe::open(config).await.unwrap();
    let pipeline = floe.pipeline();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    for partition in 0..pipeline.partitions() {
        let end = pipeline.high_watermark(partition).await.unwrap();
        let mut from = 0;
        while from < end {
            let records = pipeline
                .read(partition, from, 50_000, Duration::ZERO)
                .await
                .unwrap();
            from = records.last().unwrap().offset + 1;
            for record in records {
                *events.entry(record.event.entity_id).or_default() += 1;
            }
        }
    }
    let good = LINES - BAD.len() as u64;
    assert_eq!(events.len() as u64, good);
    let twice: Vec<_> = events.iter().filter(|(_, n)| **n != 1).take(5).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    let stats = floe.shard_stats().await.unwrap();
    assert_eq!(stats.iter().map(|s| s.entities).sum::<u64>(), good);
    let entity = floe
        .get(&floe::EntityKey::new("t", "Thing", "l-77777"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entity.version, entity.data.to_value().unwrap()),
        (1, json!({"n": 77777}))
    );
    floe.close().await.unwrap();
}

#[test]
fn stdin_imports_with_its_own_prefix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("floe.toml"),
        config_text(&dir.path().join("data")),
    )
    .unwrap();
    let run = || {
        let mut child = floe(dir.path())
            .args(["import", "-", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for n in 1..=5 {
            writeln!(stdin, "{}", line(n)).unwrap();
        }
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        summary(&output)
    };
    let first = run();
    assert_eq!(
        (first["applied"].clone(), first["resumed_after"].clone()),
        (json!(5), json!(0))
    );
    let second = run();
    assert_eq!(
        (second["applied"].clone(), second["resumed_after"].clone()),
        (json!(0), json!(5))
    );
    assert!(dir.path().join("data/imports/stdin.json").exists());
}
