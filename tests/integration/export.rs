//! `floe export` of one tenant, imported with `floe import` into another
//! data directory: the same live entities at the same versions; importing
//! again changes nothing; a newer export brings the copy up to date; a
//! different file under an imported file's name is refused, not skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use floe::{Config, EntityKey, Floe};
use serde_json::{Value, json};

fn config_text(data: &Path) -> String {
    format!(
        "data_dir = \"{}\"\n[log]\nfsync = \"always\"\npartitions = 4\n[topology]\nshards = 4\n[lake]\nenabled = false\n",
        data.display()
    )
}

fn deployment(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("floe.toml"), config_text(&dir.join("data"))).unwrap();
    dir
}

fn floe_cmd(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_floe"));
    command
        .arg("--config")
        .arg(dir.join("floe.toml"))
        .env_remove("FLOE_DATA")
        .env_remove("FLOE_CONFIG");
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn export(dir: &Path, namespace: &str, file: &Path) {
    let mut command = floe_cmd(dir);
    command
        .arg("export")
        .arg(namespace)
        .arg("--output")
        .arg(file);
    run(command);
}

fn import(dir: &Path, file: &Path) -> Value {
    let mut command = floe_cmd(dir);
    command.arg("import").arg(file).arg("--quiet");
    serde_json::from_slice(&run(command).stdout).unwrap()
}

async fn open(dir: &Path) -> Floe {
    Floe::open(Config::from_toml_file(&dir.join("floe.toml")).unwrap())
        .await
        .unwrap()
}

/// Every live entity of `namespace`: key -> (version, data).
async fn live(floe: &Floe, namespace: &str) -> BTreeMap<EntityKey, (u64, Value)> {
    let mut all = BTreeMap::new();
    for entity_type in ["Customer", "Order", "Note"] {
        for e in floe
            .list(namespace, entity_type, None, 10_000)
            .await
            .unwrap()
        {
            all.insert(e.key.clone(), (e.version, e.data.to_value().unwrap()));
        }
    }
    all
}

/// A history with updates, deletes and a re-created entity, so versions
/// are not all 1 and the versions of a re-created entity continue past its
/// tombstone.
async fn write_history(floe: &Floe, namespace: &str, n: u64) {
    for i in 0..n {
        let customer = EntityKey::new(namespace, "Customer", format!("c-{i}"));
        floe.put(
            customer.clone(),
            json!({"name": format!("C{i}"), "visits": 0}),
        )
        .await
        .unwrap();
        for v in 0..(i % 4) {
            floe.update(customer.clone(), json!({"visits": v + 1}))
                .await
                .unwrap();
        }
        let order = EntityKey::new(namespace, "Order", format!("o-{i}"));
        floe.put(
            order.clone(),
            json!({"customer": format!("c-{i}"), "total": i}),
        )
        .await
        .unwrap();
        if i % 3 == 0 {
            floe.delete(order.clone()).await.unwrap();
        }
        if i % 6 == 0 {
            floe.put(order, json!({"customer": format!("c-{i}"), "again": true}))
                .await
                .unwrap();
        }
    }
    floe.put(
        EntityKey::new(namespace, "Note", "quotes"),
        json!({"text": "a \"quoted\" line\nand a newline", "emoji": "🍜"}),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_exported_and_imported_keeps_its_entities_and_versions() {
    let root = tempfile::tempdir().unwrap();
    let (source, target) = (deployment(root.path(), "a"), deployment(root.path(), "b"));
    let file = root.path().join("t1.ndjson");

    let floe = open(&source).await;
    write_history(&floe, "t1", 60).await;
    write_history(&floe, "t2", 10).await;
    let expected = live(&floe, "t1").await;
    assert!(expected.values().any(|(v, _)| *v > 2), "versions above 2");
    floe.close().await.unwrap();

    export(&source, "t1", &file);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().count(),
        expected.len(),
        "one line per live entity"
    );

    let summary = import(&target, &file);
    assert_eq!(summary["applied"], expected.len() as u64, "{summary}");
    let copy = open(&target).await;
    assert_eq!(live(&copy, "t1").await, expected);
    assert!(
        live(&copy, "t2").await.is_empty(),
        "only the exported tenant"
    );
    copy.close().await.unwrap();

    // The same file again, from its first line: every line is already
    // there, nothing changes.
    let mut again = floe_cmd(&target);
    again
        .arg("import")
        .arg(&file)
        .arg("--quiet")
        .arg("--from-start");
    let summary: Value = serde_json::from_slice(&run(again).stdout).unwrap();
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["unchanged"], expected.len() as u64, "{summary}");
    let copy = open(&target).await;
    assert_eq!(live(&copy, "t1").await, expected);
    copy.close().await.unwrap();

    // The source moves on; a newer export, under another name, brings the
    // copy up to date and leaves what did not change alone.
    let floe = open(&source).await;
    let changed = EntityKey::new("t1", "Customer", "c-5");
    floe.update(changed.clone(), json!({"visits": 99}))
        .await
        .unwrap();
    floe.put(
        EntityKey::new("t1", "Customer", "c-new"),
        json!({"name": "New"}),
    )
    .await
    .unwrap();
    let expected = live(&floe, "t1").await;
    floe.close().await.unwrap();
    let newer = root.path().join("t1-newer.ndjson");
    export(&source, "t1", &newer);
    let summary = import(&target, &newer);
    assert_eq!(summary["applied"], 2, "{summary}");
    assert_eq!(summary["unchanged"], expected.len() as u64 - 2, "{summary}");
    let copy = open(&target).await;
    assert_eq!(live(&copy, "t1").await, expected);
    copy.close().await.unwrap();

    // A newer export written over the first file's name: the saved position
    // of that name does not match it, and the import refuses rather than
    // skip its first lines.
    std::fs::copy(root.path().join("t1-newer.ndjson"), &file).unwrap();
    let mut other = floe_cmd(&target);
    other.arg("import").arg(&file).arg("--quiet");
    let output = other.output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another input under the same name"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_never_goes_back_and_bad_restores_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let floe = open(&deployment(root.path(), "a")).await;
    let key = EntityKey::new("t", "Order", "o-1");
    let restored = floe
        .write(floe::WriteRequest::restore(key.clone(), json!({"v": 5}), 5))
        .await
        .unwrap();
    assert_eq!(restored.version, 5);
    // An older or equal version changes nothing, with a typed answer.
    for version in [3, 5] {
        let err = floe
            .write(floe::WriteRequest::restore(
                key.clone(),
                json!({"v": version}),
                version,
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                floe::Error::Engine(floe_engine::Error::AlreadyRestored { current: 5, .. })
            ),
            "{err}"
        );
    }
    // A deletion after the restore outranks an older restore too.
    floe.delete(key.clone()).await.unwrap();
    let err = floe
        .write(floe::WriteRequest::restore(key.clone(), json!({"v": 6}), 6))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        floe::Error::Engine(floe_engine::Error::AlreadyRestored { current: 6, .. })
    ));
    // Version 0 and a non-object are bad input, and change nothing.
    let other = EntityKey::new("t", "Order", "o-2");
    assert!(
        floe.write(floe::WriteRequest::restore(other.clone(), json!({}), 0))
            .await
            .is_err()
    );
    assert!(
        floe.write(floe::WriteRequest::restore(other.clone(), json!([1]), 2))
            .await
            .is_err()
    );
    assert!(floe.get(&other).await.unwrap().is_none());
    // A newer restore of a deleted entity brings it back at that version.
    let back = floe
        .write(floe::WriteRequest::restore(key.clone(), json!({"v": 9}), 9))
        .await
        .unwrap();
    assert_eq!(back.version, 9);
    assert_eq!(floe.get(&key).await.unwrap().unwrap().version, 9);
    floe.close().await.unwrap();
    // And it survives a reopen at that version.
    let floe = open(&root.path().join("a")).await;
    assert_eq!(floe.get(&key).await.unwrap().unwrap().version, 9);
    floe.close().await.unwrap();
}

#[path = "../support/server.rs"]
mod server;
use server::{ADMIN, FloeServer, OPERATOR, VIEWER};

/// `GET /api/v1/namespaces/{ns}/export` from a running server, over more
/// than one page, imported into another server through the batch
/// endpoint: the copy exports the very same lines; a viewer may not export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_exports_a_tenant_page_by_page() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lake_off = "[lake]\nenabled = false\n";
    let source = FloeServer::start(a.path(), "", "", lake_off);
    let target = FloeServer::start(b.path(), "", "", lake_off);
    // 2,500 entities of t1 (three pages of 1,000), a few of t2.
    for (namespace, n) in [("t1", 2_500u64), ("t2", 10)] {
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let body: String = chunk
                .iter()
                .map(|i| {
                    json!({"op": "put", "namespace": namespace, "entity_type": if i % 2 == 0 { "Order" } else { "Customer" }, "id": format!("e-{i:05}"), "data": {"i": i}}).to_string() + "\n"
                })
                .collect();
            let response = source
                .client
                .post(source.url("/api/v1/entities:batch"))
                .bearer_auth(OPERATOR)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    source
        .put_ok(
            "/api/v1/entities/t1/Order/e-00000",
            json!({"i": 0, "again": true}),
        )
        .await;

    let path = "/api/v1/namespaces/t1/export";
    let (status, _) = source
        .call(reqwest::Method::GET, path, Some(VIEWER), None)
        .await;
    assert_eq!(status, 403, "exporting a tenant's data is an admin call");
    let export = |server: &FloeServer| {
        let request = server.client.get(server.url(path)).bearer_auth(ADMIN);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "application/x-ndjson");
            response.text().await.unwrap()
        }
    };
    let exported = export(&source).await;
    let lines: Vec<&str> = exported.lines().collect();
    assert_eq!(lines.len(), 2_500);
    assert!(
        exported.contains(r#""version":2"#),
        "the entity written twice"
    );
    for chunk in lines.chunks(1_000) {
        let response = target
            .client
            .post(target.url("/api/v1/entities:batch"))
            .bearer_auth(OPERATOR)
            .header("content-type", "application/x-ndjson")
            .body(chunk.join("\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["failed"], 0, "{answer}");
    }
    assert_eq!(export(&target).await, exported);
    let (status, body) = target
        .call(
            reqwest::Method::GET,
            "/api/v1/namespaces/t2/export",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, Value::String(String::new())));
}
