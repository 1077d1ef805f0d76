//! The pyiceberg judge of a cluster's shared lake (`tests/readers/cluster_lake.py`):
//! once the elected sink has landed every acknowledged write, the lake holds
//! each exactly once (no idempotency key twice, no (entity, version) twice with
//! different data, as many rows as acknowledged events, every row with the
//! owner epoch it was written under), and a replay of the lake (each
//! entity's largest (owner epoch, version)) equals the oracle.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The interpreter with pyiceberg: fails, never skips, when it is not set.
fn python() -> String {
    match std::env::var("FLOE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "FLOE_PYTHON is not set (the independent reader is part of the contract): run FLOE_PYTHON=$(scripts/python-env.sh) or scripts/test.sh"
        ),
    }
}

/// What the judge reads from the lake under `lake` (catalog.db, warehouse/).
pub(crate) async fn read(lake: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/cluster_lake.py");
    let lake: PathBuf = lake.canonicalize().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .arg(lake.join("catalog.db"))
            .arg(lake.join("warehouse"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One acknowledged write as the judge needs it: the entity id (namespace
/// `t`, type `Thing`), its version and data.
pub(crate) struct AckedWrite<'a> {
    pub(crate) key: &'a str,
    pub(crate) version: u64,
    pub(crate) data: &'a Value,
}

/// Waits (up to `within`) until the lake holds as many rows as there are
/// `acked` writes, then checks it is exactly them; panics with what differs.
pub(crate) async fn assert_lake_holds_exactly(
    lake: &Path,
    acked: &[AckedWrite<'_>],
    within: Duration,
) {
    let until = Instant::now() + within;
    let judged = loop {
        let judged = read(lake).await;
        let count = judged["count"].as_u64().unwrap() as usize;
        if count >= acked.len() || Instant::now() > until {
            break judged;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        judged["duplicate_key_count"], 0,
        "an idempotency key landed twice: {}",
        judged["duplicate_keys"]
    );
    assert_eq!(
        judged["conflict_count"], 0,
        "an (entity, version) landed twice with different data: {}",
        judged["conflicts"]
    );
    assert_eq!(
        judged["count"].as_u64(),
        Some(acked.len() as u64),
        "rows in the lake vs acknowledged events"
    );
    assert_eq!(
        judged["epochless_count"], 0,
        "rows landed without the owner epoch they were written under"
    );
    let mut oracle: BTreeMap<String, (u64, &Value)> = BTreeMap::new();
    for a in acked {
        let entity = format!("t/Thing/{}", a.key);
        match oracle.get(&entity) {
            Some((v, _)) if *v >= a.version => {}
            _ => {
                oracle.insert(entity, (a.version, a.data));
            }
        }
    }
    let latest = judged["latest"].as_object().unwrap();
    assert_eq!(latest.len(), oracle.len(), "entities in the lake");
    for (entity, (version, data)) in oracle {
        let replayed = &latest[&entity];
        assert_eq!(
            replayed["version"].as_u64(),
            Some(version),
            "{entity}: {replayed}"
        );
        assert_eq!(&replayed["data"], data, "{entity}: {replayed}");
    }
}
