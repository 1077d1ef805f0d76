use super::*;
use floe_engine::{HashFunction, Router, parse_instant};

/// A monthly team + time topology: `team:created_at` keys, 2024-01..=2024-03
/// on shards 0..3.
fn monthly() -> Topology {
    let strategy = Strategy::Time {
        period: Period::Month,
        offset: None,
        time_part: Some(1),
        tenant_part: Some(0),
        periods: BTreeMap::from([
            ("2024-01".to_string(), 0),
            ("2024-02".to_string(), 1),
            ("2024-03".to_string(), 2),
        ]),
        tenants: BTreeMap::new(),
        archived: BTreeMap::new(),
    };
    Topology::new(3, HashFunction::Xxh3, strategy).unwrap()
}

/// Keys of `teams` teams, one a day in January to March 2024.
fn keys(t: &Topology, teams: u32) -> Vec<KeyLoad> {
    let router = Router::new(t.clone()).unwrap();
    let mut out = Vec::new();
    for team in 0..teams {
        for day in 0..90 {
            let ms = parse_instant("2024-01-01T12:00:00Z").unwrap() + day * 86_400_000;
            let key = format!("team-{team}:{ms}");
            let key_hash = router.key_hash(&key);
            out.push(KeyLoad {
                shard: router.route(&key, key_hash),
                partition_key: key,
                key_hash,
                entities: 1,
                events: 1,
                bytes: 10,
            });
        }
    }
    out
}

#[test]
fn add_period_moves_nothing_and_creates_its_shard() {
    let t = monthly();
    let keys = keys(&t, 3);
    let plan = plan_add_period(&t, &keys, "2024-04", None).unwrap();
    assert_eq!(plan.to.shard_count, 4);
    assert_eq!(plan.added_shards(), 3..4);
    assert!(plan.moves.is_empty());
    let Strategy::Time { periods, .. } = &plan.to.strategy else {
        panic!("not time")
    };
    assert_eq!(periods.get("2024-04"), Some(&3));
    assert!(crate::validate(&plan, &t).is_valid());
    // On an existing shard: no new shard.
    let plan = plan_add_period(&t, &keys, "2024-05", Some(1)).unwrap();
    assert_eq!(plan.to.shard_count, 3);
}

#[test]
fn period_plans_refuse_bad_input() {
    let t = monthly();
    let msg = |r: Result<MigrationPlan>| match r {
        Err(Error::InvalidPlan(m)) => m,
        other => panic!("expected InvalidPlan, got {other:?}"),
    };
    assert!(msg(plan_add_period(&t, &[], "2024-02", None)).contains("already has shard 1"));
    assert!(msg(plan_add_period(&t, &[], "2024-4", None)).contains("not a month period label"));
    assert!(msg(plan_add_period(&t, &[], "2024-04-01", None)).contains("not a month"));
    assert!(matches!(
        plan_add_period(&t, &[], "2024-04", Some(9)),
        Err(Error::UnknownShard { shard: 9, .. })
    ));
    assert!(msg(plan_move_period(&t, &[], "2024-05", 0)).contains("no shard to move"));
    assert!(msg(plan_move_period(&t, &[], "2024-02", 1)).contains("already on shard 1"));
    let hash = Topology::new(3, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
    assert!(msg(plan_add_period(&hash, &[], "2024-04", None)).contains("time topologies"));
    // Hash plans are refused on time topologies, by name.
    assert!(msg(crate::plan_add_shard(&t, &[])).contains("time topology"));
    assert!(msg(crate::plan_split(&t, &[], 0)).contains("time topology"));
}

#[test]
fn move_period_moves_exactly_its_keys() {
    let t = monthly();
    let keys = keys(&t, 2);
    let plan = plan_move_period(&t, &keys, "2024-02", 0).unwrap();
    assert_eq!(plan.moves.len(), 2 * 29);
    assert!(plan.moves.iter().all(|m| m.from == 1 && m.to == 0));
}

#[test]
fn isolate_moves_one_tenant_of_a_time_topology() {
    let t = monthly();
    let keys = keys(&t, 4);
    let plan = plan_isolate(&t, &keys, "team-2").unwrap();
    assert_eq!(plan.to.shard_count, 4);
    assert_eq!(plan.moves.len(), 90);
    assert!(
        plan.moves
            .iter()
            .all(|m| m.partition_key.starts_with("team-2:") && m.to == 3)
    );
    let to = Router::new(plan.to.clone()).unwrap();
    assert_eq!(to.shard_info("team-2:not-even-a-time").shard, 3);
    assert!(matches!(
        plan_isolate(&plan.to, &keys, "team-2"),
        Err(Error::InvalidPlan(m)) if m.contains("already isolated")
    ));
    let mut no_tenant = t.clone();
    if let Strategy::Time { tenant_part, .. } = &mut no_tenant.strategy {
        *tenant_part = None;
    }
    assert!(matches!(
        plan_isolate(&no_tenant, &keys, "team-2"),
        Err(Error::InvalidPlan(m)) if m.contains("tenant_part")
    ));
}

#[test]
fn isolate_on_a_hash_topology_moves_only_the_tenant() {
    let t = Topology::new(4, HashFunction::Xxh3, Strategy::Modulo).unwrap();
    let router = Router::new(t.clone()).unwrap();
    let keys: Vec<KeyLoad> = (0..200)
        .map(|i| {
            let key = format!("tenant-{i}");
            let key_hash = router.key_hash(&key);
            KeyLoad {
                shard: router.route(&key, key_hash),
                partition_key: key,
                key_hash,
                entities: 1,
                events: 1,
                bytes: 1,
            }
        })
        .collect();
    let plan = plan_isolate(&t, &keys, "tenant-7").unwrap();
    assert_eq!(plan.to.shard_count, 5);
    assert_eq!(plan.moves.len(), 1);
    assert_eq!(
        (plan.moves[0].partition_key.as_str(), plan.moves[0].to),
        ("tenant-7", 4)
    );
    assert!(matches!(
        plan_isolate(&t, &keys, ""),
        Err(Error::InvalidPlan(_))
    ));
}

#[test]
fn due_periods_look_ahead_by_the_lead_time() {
    let t = monthly();
    let at = |s: &str| parse_instant(s).unwrap();
    let day = 86_400_000;
    // Mid-March with a week of lead: nothing due.
    assert!(due_periods(&t, at("2024-03-15T00:00:00Z"), 7 * day).is_empty());
    // Four days before April with a week of lead: April is due.
    assert_eq!(
        due_periods(&t, at("2024-03-27T00:00:00Z"), 7 * day),
        vec!["2024-04".to_string()]
    );
    // Late start in May: May itself (missing) and June are due.
    assert_eq!(
        due_periods(&t, at("2024-05-30T00:00:00Z"), 7 * day),
        vec!["2024-05".to_string(), "2024-06".to_string()]
    );
    let hash = Topology::new(3, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
    assert!(due_periods(&hash, 0, day).is_empty());
}

#[test]
fn archiving_a_period_seals_then_archives_it_and_moves_nothing() {
    let t = monthly();
    let keys = keys(&t, 2);
    let april = parse_instant("2024-04-01T00:00:00Z").unwrap();
    let plan = plan_archive_period(&t, &keys, "2024-01", april).unwrap();
    assert!(plan.moves.is_empty());
    assert_eq!(plan.kind.name(), "archive-period");
    // Two steps: sealed at from + 1, archived at from + 2.
    let sealed = plan.sealed_step().unwrap();
    assert_eq!(sealed.version, t.version + 1);
    assert_eq!(plan.to.version, t.version + 2);
    assert_eq!(plan.target_version(), plan.to.version);
    let state = |t: &Topology| match &t.strategy {
        Strategy::Time { archived, .. } => archived.get("2024-01").copied(),
        _ => None,
    };
    assert_eq!(state(&sealed), Some(PeriodState::Sealed));
    assert_eq!(state(&plan.to), Some(PeriodState::Archived));
    // What leaves memory: January's keys (31 days of 2 teams, 10 bytes each).
    assert_eq!(plan.estimated_bytes, 2 * 31 * 10);
    assert!(crate::plan::validate(&plan, &t).is_valid());

    // From the sealed topology (an archival stopped before its end) the
    // plan finishes it in one step.
    let again = plan_archive_period(&sealed, &keys, "2024-01", april).unwrap();
    assert!(again.sealed_step().is_none());
    assert_eq!(again.to.version, sealed.version + 1);
    assert_eq!(state(&again.to), Some(PeriodState::Archived));
    assert!(crate::plan::validate(&again, &sealed).is_valid());
}

#[test]
fn archival_plans_that_cannot_serve_are_refused() {
    let t = monthly();
    let march = parse_instant("2024-03-15T00:00:00Z").unwrap();
    let msg = |r: Result<MigrationPlan>| r.unwrap_err().to_string();
    assert!(msg(plan_archive_period(&t, &[], "2024-03", march)).contains("has not ended"));
    assert!(msg(plan_archive_period(&t, &[], "2023-12", march)).contains("has no shard"));
    assert!(msg(plan_archive_period(&t, &[], "2024-1", march)).contains("not a month"));
    let plan = plan_archive_period(&t, &[], "2024-01", march).unwrap();
    assert!(msg(plan_archive_period(&plan.to, &[], "2024-01", march)).contains("archived already"));
    let hash = Topology::new(3, HashFunction::Xxh3, Strategy::JumpBack).unwrap();
    assert!(msg(plan_archive_period(&hash, &[], "2024-01", march)).contains("time topologies"));
}

#[test]
fn due_archival_keeps_the_active_window_and_finishes_sealed_periods() {
    let t = monthly();
    let may = parse_instant("2024-05-10T00:00:00Z").unwrap();
    // May, April and March are the three most recent: January and February go.
    assert_eq!(due_archival(&t, may, 3), vec!["2024-01", "2024-02"]);
    assert_eq!(
        due_archival(&t, may, 1),
        vec!["2024-01", "2024-02", "2024-03"]
    );
    assert!(due_archival(&t, may, 0).is_empty(), "0 turns archival off");
    assert!(due_archival(&t, may, 12).is_empty());
    let sealed = crate::periods::sealed(&t, "2024-03").unwrap();
    assert_eq!(
        due_archival(&sealed, may, 3),
        vec!["2024-01", "2024-02", "2024-03"]
    );
    let archived = plan_archive_period(&t, &[], "2024-01", may).unwrap().to;
    assert_eq!(due_archival(&archived, may, 3), vec!["2024-02"]);
}

#[test]
fn dropping_needs_an_archived_period_and_retention_picks_the_old_ones() {
    let t = monthly();
    let may = parse_instant("2024-05-10T00:00:00Z").unwrap();
    let msg = |r: Result<MigrationPlan>| r.unwrap_err().to_string();
    assert!(msg(plan_drop_period(&t, &[], "2024-01")).contains("archive it first"));
    let archived = plan_archive_period(&t, &[], "2024-01", may).unwrap().to;
    let archived = plan_archive_period(&archived, &[], "2024-02", may)
        .unwrap()
        .to;
    let dropped = plan_drop_period(&archived, &[], "2024-01").unwrap();
    assert_eq!(dropped.to.version, archived.version + 1);
    assert!(crate::plan::validate(&dropped, &archived).is_valid());
    let to = dropped.to;
    assert!(msg(plan_drop_period(&to, &[], "2024-01")).contains("dropped already"));
    assert!(msg(plan_reactivate_period(&to, &[], "2024-01")).contains("was dropped"));
    assert!(msg(plan_archive_period(&to, &[], "2024-01", may)).contains("was dropped"));
    // Retention 3 in May: January and February are past it, but only the
    // archived ones are dropped (March is active), and a dropped one never
    // again.
    assert_eq!(due_drops(&archived, may, 3), vec!["2024-01", "2024-02"]);
    assert_eq!(due_drops(&to, may, 3), vec!["2024-02"]);
    assert!(
        due_drops(&archived, may, 0).is_empty(),
        "0 turns retention off"
    );
    assert!(due_drops(&archived, may, 4).len() == 1);
    // A dropped period is not archived again.
    assert!(due_archival(&to, may, 3).is_empty());
}
