use super::*;
use proptest::prelude::*;
use serde_json::json;

const LIMITS: PrepareLimits = PrepareLimits {
    max_payload_bytes: 1024,
    max_json_depth: 8,
};

fn command(id: &str, op: Operation) -> Command {
    Command {
        key: EntityKey::new("acme", "Order", id),
        op,
        expected_version: None,
        idempotency_key: None,
        partition_key: "acme".into(),
        key_hash: 7,
    }
}

fn data(v: serde_json::Value) -> Json {
    Json::from_value(&v).unwrap()
}

/// Prepares and applies, as a shard worker does after the append.
fn run(state: &mut ShardState, cmd: &Command) -> Result<Event> {
    let event = state.prepare(&PendingChanges::new(), cmd, 0, 1, LIMITS, 0)?;
    assert!(state.apply(&event));
    Ok(event)
}

#[test]
fn a_restore_sets_its_version_and_never_goes_back() {
    let mut state = ShardState::new();
    let restore = |v: u64| {
        command(
            "o1",
            Operation::Restore {
                data: data(json!({ "v": v })),
                version: v,
            },
        )
    };
    let first = run(&mut state, &restore(4)).unwrap();
    assert_eq!((first.kind, first.version), (EventKind::Created, 4));
    let next = run(&mut state, &restore(6)).unwrap();
    assert_eq!((next.kind, next.version), (EventKind::Updated, 6));
    for v in [2, 6] {
        let refused = state.prepare(&PendingChanges::new(), &restore(v), 0, 1, LIMITS, 0);
        assert!(
            matches!(refused, Err(Error::AlreadyRestored { current: 6, .. })),
            "{refused:?}"
        );
    }
    // A version another shard holds (a tombstone after a move) counts.
    let floor = state.prepare(&PendingChanges::new(), &restore(7), 0, 1, LIMITS, 9);
    assert!(matches!(
        floor,
        Err(Error::AlreadyRestored { current: 9, .. })
    ));
    // The restored entity goes on from its version.
    let update = run(
        &mut state,
        &command("o1", Operation::Update(json!({ "w": 1 }))),
    )
    .unwrap();
    assert_eq!(update.version, 7);
}

#[test]
fn create_update_delete_recreate() {
    let mut state = ShardState::new();
    let key = EntityKey::new("acme", "Order", "o1");
    let e1 = run(
        &mut state,
        &command("o1", Operation::Create(data(json!({"a":1})))),
    )
    .unwrap();
    assert_eq!((e1.kind, e1.version), (EventKind::Created, 1));
    assert_eq!(e1.idempotency_key, "acme/Order/o1@v1");
    let e2 = run(
        &mut state,
        &command("o1", Operation::Update(json!({"b":2}))),
    )
    .unwrap();
    assert_eq!(e2.state.unwrap().as_str(), r#"{"a":1,"b":2}"#);
    let e3 = run(&mut state, &command("o1", Operation::Delete)).unwrap();
    assert_eq!(
        (e3.kind, e3.version, e3.state),
        (EventKind::Deleted, 3, None)
    );
    assert_eq!(state.get(&key), None);
    assert_eq!(state.tombstones(), 1);
    let e4 = run(
        &mut state,
        &command("o1", Operation::Create(data(json!({"c":3})))),
    )
    .unwrap();
    assert_eq!((e4.kind, e4.version), (EventKind::Created, 4));
    assert_eq!(state.get(&key).unwrap().version, 4);
    assert_eq!(state.live_entities(), 1);
}

#[test]
fn bad_writes_are_typed_errors_and_change_nothing() {
    let mut state = ShardState::new();
    run(
        &mut state,
        &command("o1", Operation::Create(data(json!({"a":1})))),
    )
    .unwrap();
    let before = state
        .clone()
        .iter()
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect::<Vec<_>>();
    let pending = PendingChanges::new();
    let err = |cmd: Command| state.prepare(&pending, &cmd, 0, 1, LIMITS, 0).unwrap_err();
    assert!(matches!(
        err(command("o1", Operation::Create(data(json!({}))))),
        Error::AlreadyExists { version: 1, .. }
    ));
    assert!(matches!(
        err(command("o2", Operation::Delete)),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        err(command("o2", Operation::Update(json!({"a":1})))),
        Error::NotFound { .. }
    ));
    let mut stale = command("o1", Operation::Update(json!({"a":2})));
    stale.expected_version = Some(3);
    let message = err(stale).to_string();
    assert_eq!(
        message,
        "version conflict on acme/Order/o1: expected version 3, found 1"
    );
    let big = data(json!({ "blob": "x".repeat(2000) }));
    assert!(matches!(
        err(command("o3", Operation::Upsert(big))),
        Error::PayloadTooLarge { limit: 1024, .. }
    ));
    assert!(matches!(
        err(command("o1", Operation::Update(json!("not an object")))),
        Error::InvalidEntity { .. }
    ));
    let mut moved = command("o1", Operation::Upsert(data(json!({}))));
    moved.partition_key = "globex".into();
    assert!(matches!(
        err(moved),
        Error::PartitionKeyImmutable { attempted, .. } if attempted == "globex"
    ));
    let deep = json!({"a":{"b":{"c":{"d":{"e":{"f":{"g":{}}}}}}}});
    assert!(matches!(
        err(command("o1", Operation::Update(json!({"x": deep})))),
        Error::JsonTooDeep {
            what: "merge patch",
            ..
        }
    ));
    let after = state
        .iter()
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect::<Vec<_>>();
    assert_eq!(before, after);
}

/// An entity an older build stored deeper than any parser allows: a
/// patch is a typed error, a put replaces it.
#[test]
fn a_stored_entity_too_deep_to_parse_can_be_replaced_not_patched() {
    let mut state = ShardState::new();
    let deep = format!("{{\"x\":{}{}}}", "[".repeat(500), "]".repeat(500));
    let mut event = run(
        &mut state,
        &command("o1", Operation::Create(data(json!({})))),
    )
    .unwrap();
    event.version = 2;
    event.state = Some(Json::from_trusted(deep));
    assert!(state.apply(&event));
    let pending = PendingChanges::new();
    let patch = command("o1", Operation::Update(json!({"a": 1})));
    assert!(matches!(
        state.prepare(&pending, &patch, 0, 1, LIMITS, 0),
        Err(Error::JsonTooDeep {
            what: "stored entity",
            ..
        })
    ));
    let put = command("o1", Operation::Upsert(data(json!({"a": 1}))));
    assert_eq!(
        state
            .prepare(&pending, &put, 0, 1, LIMITS, 0)
            .unwrap()
            .version,
        3
    );
}

/// A re-creation under another key (after a delete) continues past the
/// floor it is given, and the newest version's key becomes the record's.
#[test]
fn versions_continue_past_the_floor_and_the_newest_key_wins() {
    let state = ShardState::new();
    let mut cmd = command("o1", Operation::Create(data(json!({}))));
    cmd.partition_key = "b".into();
    let event = state
        .prepare(&PendingChanges::new(), &cmd, 0, 1, LIMITS, 7)
        .unwrap();
    assert_eq!(event.version, 8);
    // Replayed next to the tombstone under the old key: the newer wins.
    let mut tombstone = event.clone();
    (tombstone.version, tombstone.state, tombstone.partition_key) = (7, None, "a".into());
    tombstone.kind = EventKind::Deleted;
    let mut replayed = ShardState::new();
    replayed.apply(&tombstone);
    replayed.apply(&event);
    let record = replayed.record(&cmd.key).unwrap();
    assert_eq!((record.version, record.partition_key.as_str()), (8, "b"));
    assert!(record.data.is_some());
}

#[test]
fn expected_version_zero_means_absent() {
    let mut state = ShardState::new();
    let mut cmd = command("o1", Operation::Upsert(data(json!({}))));
    cmd.expected_version = Some(0);
    run(&mut state, &cmd).unwrap();
    assert!(matches!(
        state.prepare(&PendingChanges::new(), &cmd, 0, 1, LIMITS, 0),
        Err(Error::VersionConflict {
            expected: 0,
            actual: 1,
            ..
        })
    ));
}

#[test]
fn pending_changes_are_seen_within_a_batch() {
    let state = ShardState::new();
    let mut pending = PendingChanges::new();
    let create = command("o1", Operation::Create(data(json!({"n":1}))));
    let e1 = state.prepare(&pending, &create, 0, 1, LIMITS, 0).unwrap();
    pending.insert(create.key.clone(), (e1.version, e1.state.clone()));
    let update = command("o1", Operation::Update(json!({"n":2})));
    let e2 = state.prepare(&pending, &update, 0, 1, LIMITS, 0).unwrap();
    assert_eq!(e2.version, 2);
    assert!(
        state.get(&create.key).is_none(),
        "nothing visible before apply"
    );
}

#[test]
fn list_is_ordered_filtered_and_paginated() {
    let mut state = ShardState::new();
    for id in ["c", "a", "b", "d"] {
        run(&mut state, &command(id, Operation::Create(data(json!({}))))).unwrap();
    }
    run(&mut state, &command("b", Operation::Delete)).unwrap();
    let mut other = command("z", Operation::Create(data(json!({}))));
    other.key.entity_type = "Menu".into();
    run(&mut state, &other).unwrap();
    let ids = |v: Vec<Entity>| v.into_iter().map(|e| e.key.id).collect::<Vec<_>>();
    assert_eq!(ids(state.list("acme", "Order", None, 10)), ["a", "c", "d"]);
    assert_eq!(ids(state.list("acme", "Order", Some("a"), 1)), ["c"]);
    assert_eq!(ids(state.list("acme", "Menu", None, 10)), ["z"]);
    assert!(state.list("other", "Order", None, 10).is_empty());
}

#[test]
fn tombstone_blocks_resurrection_until_compacted() {
    let mut state = ShardState::new();
    let e1 = run(
        &mut state,
        &command("o1", Operation::Create(data(json!({})))),
    )
    .unwrap();
    run(&mut state, &command("o1", Operation::Delete)).unwrap();
    assert!(!state.apply(&e1), "an older event cannot resurrect");
    assert_eq!(
        state.compact_tombstones(0),
        0,
        "tombstone is newer than the cut"
    );
    assert_eq!(state.compact_tombstones(i64::MAX), 1);
}

#[test]
fn retain_drops_records_and_keeps_the_counters_true() {
    let mut state = ShardState::new();
    for (id, pk) in [("a", "p1"), ("b", "p2"), ("c", "p2")] {
        let mut c = command(id, Operation::Upsert(data(json!({"id": id}))));
        c.partition_key = pk.into();
        let e = state
            .prepare(&PendingChanges::new(), &c, 0, 1, LIMITS, 0)
            .unwrap();
        state.apply(&e);
    }
    let bytes_a = state
        .get(&EntityKey::new("acme", "Order", "a"))
        .unwrap()
        .data
        .len() as u64;
    assert_eq!(state.retain(|_, r| r.partition_key == "p1"), 2);
    assert_eq!(state.live_entities(), 1);
    assert_eq!(state.live_bytes(), bytes_a);
    let listed = state.list_where("acme", "Order", None, 10, |r| r.partition_key == "p2");
    assert!(listed.is_empty());
    assert_eq!(state.list("acme", "Order", None, 10).len(), 1);
}

/// Events of a few entities with distinct versions and random kinds.
fn histories() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0..4usize, 1..12usize, any::<u8>()), 1..40).prop_map(|specs| {
        let mut events = Vec::new();
        for (entity, len, seed) in specs {
            for version in 1..=len as u64 {
                let deleted = (seed as u64 + version).is_multiple_of(5);
                events.push(Event {
                    event_id: Uuid::nil(),
                    idempotency_key: format!("e{entity}@v{version}"),
                    kind: if deleted {
                        EventKind::Deleted
                    } else {
                        EventKind::Updated
                    },
                    namespace: "ns".into(),
                    entity_type: "T".into(),
                    entity_id: format!("e{entity}"),
                    partition_key: format!("e{entity}"),
                    key_hash: entity as u64,
                    shard: 0,
                    version,
                    timestamp_us: version as i64,
                    request_fingerprint: None,
                    owner_epoch: 0,
                    state: (!deleted).then(|| Json::from_value(&json!({ "v": version })).unwrap()),
                });
            }
        }
        // Several specs may name one entity: keep one event per version.
        let mut best: HashMap<String, Vec<Event>> = HashMap::new();
        for event in events {
            best.entry(event.entity_id.clone()).or_default().push(event);
        }
        best.into_values()
            .flat_map(|mut v| {
                v.sort_by_key(|e| e.version);
                v.dedup_by_key(|e| e.version);
                v
            })
            .collect()
    })
}

fn snapshot(state: &ShardState) -> Vec<(EntityKey, u64, Option<Json>)> {
    state
        .iter()
        .map(|(k, r)| (k.clone(), r.version, r.data.clone()))
        .collect()
}

/// Cluster mode: owner A (epoch 3) wrote up to version 5; owner B (epoch
/// 8) restored that and wrote version 6; A's late, never acknowledged
/// events (versions 6 and 7) landed afterwards. In any order, B's event
/// is the state: the stale ones neither tie with it nor override it.
#[test]
fn a_later_owner_epoch_wins_over_a_stale_owners_higher_or_equal_version() {
    let mut state = ShardState::new();
    let put = command("o-1", Operation::Upsert(data(json!({ "by": "a" }))));
    let mut a5 = run(&mut state, &put).unwrap();
    a5.version = 5;
    a5.owner_epoch = 3;
    let stamp = |mut e: Event, version, epoch, by: &str| {
        e.version = version;
        e.owner_epoch = epoch;
        e.state = Some(data(json!({ "by": by })));
        e
    };
    let b6 = stamp(a5.clone(), 6, 8, "b");
    let late6 = stamp(a5.clone(), 6, 3, "a-late");
    let late7 = stamp(a5.clone(), 7, 3, "a-late");
    let events = [a5, b6, late6, late7];
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
        let mut replayed = ShardState::new();
        for i in order {
            replayed.apply(&events[i]);
        }
        let entity = replayed.get(&put.key).unwrap();
        assert_eq!(entity.version, 6, "{order:?}");
        assert_eq!(entity.data.to_value().unwrap(), json!({ "by": "b" }));
    }
}

proptest! {
    #[test]
    fn apply_is_order_insensitive_and_idempotent(
        events in histories(),
        seed in any::<u64>(),
    ) {
        let mut in_order = ShardState::new();
        for event in &events {
            in_order.apply(event);
        }
        // A deterministic shuffle, then every event applied twice.
        let mut shuffled = events.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut replayed = ShardState::new();
        for event in shuffled.iter().chain(shuffled.iter()) {
            replayed.apply(event);
        }
        prop_assert_eq!(snapshot(&in_order), snapshot(&replayed));
        prop_assert_eq!(in_order.live_entities(), replayed.live_entities());
        prop_assert_eq!(in_order.live_bytes(), replayed.live_bytes());
    }
}
