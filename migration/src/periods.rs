//! Plans of time topologies (add a period's shard, move a period) and
//! tenant isolation (seed 002's "large team": a shard of its own, in one
//! migration), and which periods are due ahead of time.
//!
//! A period is named by its label in the topology (`2024-03`), so a plan,
//! a log line and a later archival step all name the same thing. Adding a
//! period that no entity can be in yet (the next one) moves nothing: the
//! migration only changes the topology, which is why it can run ahead of
//! time in the background.

use std::collections::BTreeMap;

use floe_engine::{Period, PeriodState, Router, Strategy, Topology, parse_offset};

use crate::error::{Error, Result};
use crate::plan::{KeyLoad, MigrationPlan, PlanKind, check_shard, finish, next};

/// The parts of a time strategy a plan changes.
struct TimeParts<'a> {
    period: Period,
    offset_minutes: i32,
    periods: &'a BTreeMap<String, u32>,
}

fn time_of(topology: &Topology) -> Result<TimeParts<'_>> {
    match &topology.strategy {
        Strategy::Time {
            period,
            offset,
            periods,
            ..
        } => Ok(TimeParts {
            period: *period,
            // A validated topology's offset parses.
            offset_minutes: offset.as_deref().and_then(parse_offset).unwrap_or(0),
            periods,
        }),
        other => Err(Error::InvalidPlan(format!(
            "period plans change time topologies; this one routes by {}",
            other.name()
        ))),
    }
}

/// The canonical label of `label` under `period`, or [`Error::InvalidPlan`].
fn checked_label(period: Period, label: &str) -> Result<String> {
    let label = label.trim();
    period
        .parse_label(label)
        .map(|index| period.label(index))
        .ok_or_else(|| {
            Error::InvalidPlan(format!(
                "{label:?} is not a {period} period label (e.g. {})",
                period.label(period.of_instant(1_710_498_600_000, 0))
            ))
        })
}

/// Changes the period table of a time topology.
fn with_periods(
    topology: &Topology,
    shard_count: u32,
    change: impl FnOnce(&mut BTreeMap<String, u32>, &mut BTreeMap<String, u32>),
) -> Result<Topology> {
    let mut to = topology.clone();
    to.shard_count = shard_count;
    if let Strategy::Time {
        periods, tenants, ..
    } = &mut to.strategy
    {
        change(periods, tenants);
    }
    next(topology, to)
}

/// Gives period `label` a shard: `shard`, or a new shard when `None`. The
/// period must have none yet (otherwise move it).
pub fn plan_add_period(
    topology: &Topology,
    keys: &[KeyLoad],
    label: &str,
    shard: Option<u32>,
) -> Result<MigrationPlan> {
    let parts = time_of(topology)?;
    let label = checked_label(parts.period, label)?;
    if let Some(owner) = parts.periods.get(&label) {
        return Err(Error::InvalidPlan(format!(
            "period {label} already has shard {owner} (move it with move-period)"
        )));
    }
    let (owner, shard_count) = match shard {
        Some(s) => {
            check_shard(topology, s)?;
            (s, topology.shard_count)
        }
        None => (topology.shard_count, topology.shard_count + 1),
    };
    let to = with_periods(topology, shard_count, |periods, _| {
        periods.insert(label.clone(), owner);
    })?;
    finish(
        PlanKind::AddPeriod {
            period: label,
            shard,
        },
        topology,
        to,
        keys,
    )
}

/// Gives period `label`, which has a shard, to `shard`.
pub fn plan_move_period(
    topology: &Topology,
    keys: &[KeyLoad],
    label: &str,
    shard: u32,
) -> Result<MigrationPlan> {
    let parts = time_of(topology)?;
    let label = checked_label(parts.period, label)?;
    check_shard(topology, shard)?;
    match parts.periods.get(&label) {
        None => {
            return Err(Error::InvalidPlan(format!(
                "period {label} has no shard to move from (add it with add-period)"
            )));
        }
        Some(&owner) if owner == shard => {
            return Err(Error::InvalidPlan(format!(
                "period {label} is already on shard {shard}: nothing to move"
            )));
        }
        Some(_) => {}
    }
    let to = with_periods(topology, topology.shard_count, |periods, _| {
        periods.insert(label.clone(), shard);
    })?;
    finish(
        PlanKind::MovePeriod {
            period: label,
            shard,
        },
        topology,
        to,
        keys,
    )
}

/// The state of period `label` in a time topology (`None`: active).
fn state_of(topology: &Topology, label: &str) -> Option<PeriodState> {
    match &topology.strategy {
        Strategy::Time { archived, .. } => archived.get(label).copied(),
        _ => None,
    }
}

/// `topology` with period `label` in `state`, as the next version.
fn with_state(topology: &Topology, label: &str, state: PeriodState) -> Result<Topology> {
    let mut to = topology.clone();
    if let Strategy::Time { archived, .. } = &mut to.strategy {
        archived.insert(label.to_owned(), state);
    }
    next(topology, to)
}

/// `topology` with period `label` sealed (the first step of its archival),
/// or `None` when it is sealed already or the label is not a period of it.
pub(crate) fn sealed(topology: &Topology, label: &str) -> Option<Topology> {
    if state_of(topology, label).is_some() {
        return None;
    }
    with_state(topology, label, PeriodState::Sealed).ok()
}

/// Archives period `label` (seed 002's archive window): it must have a
/// shard, must have ended by `now_ms` (a period still taking writes is not
/// archived by mistake) and must not be archived already. A sealed period
/// (an archival that stopped before its end) is finished. Nothing moves
/// between shards, so the plan lists no key moves; the target topology has
/// the period archived, two versions on (one when it is sealed already).
pub fn plan_archive_period(
    topology: &Topology,
    keys: &[KeyLoad],
    label: &str,
    now_ms: i64,
) -> Result<MigrationPlan> {
    let parts = time_of(topology)?;
    let label = checked_label(parts.period, label)?;
    if !parts.periods.contains_key(&label) {
        return Err(Error::InvalidPlan(format!(
            "period {label} has no shard: there is nothing to archive"
        )));
    }
    match state_of(topology, &label) {
        Some(PeriodState::Archived) => {
            return Err(Error::InvalidPlan(format!(
                "period {label} is archived already"
            )));
        }
        Some(PeriodState::Dropped) => {
            return Err(Error::InvalidPlan(format!(
                "period {label} was dropped: its history is erased"
            )));
        }
        _ => {}
    }
    let index = parts.period.parse_label(&label).unwrap_or_default();
    let ends_ms = parts.period.start_ms(index + 1, parts.offset_minutes);
    if ends_ms > now_ms {
        return Err(Error::InvalidPlan(format!(
            "period {label} has not ended (it ends at {ends_ms} ms since the epoch): only ended periods are archived"
        )));
    }
    let step = sealed(topology, &label).unwrap_or_else(|| topology.clone());
    let to = with_state(&step, &label, PeriodState::Archived)?;
    let mut plan = finish(
        PlanKind::ArchivePeriod {
            period: label.clone(),
        },
        topology,
        to,
        keys,
    )?;
    // Nothing changes owner; what leaves memory is the keys of the period
    // (those the target archives: earlier archived periods hold no key).
    let archived = Router::new(plan.to.clone())?;
    plan.estimated_bytes = keys
        .iter()
        .filter(|k| archived.is_archived(&k.partition_key))
        .map(|k| k.bytes)
        .sum();
    plan.estimated_duration_ms = 200;
    Ok(plan)
}

/// Seed 002's "large team" procedure in one migration: a new shard, and
/// every key of `tenant` moves to it.
///
/// - Time topologies with a `tenant_part`: the tenant is listed in
///   `tenants` with the new shard, for all of its periods.
/// - Other topologies: the tenant is a partition key (the tenant pattern,
///   `$namespace`), pinned to the new shard by an override. For a hash
///   strategy the larger shard count would move other keys too; the known
///   ones are pinned where they are, so only the tenant moves.
pub fn plan_isolate(topology: &Topology, keys: &[KeyLoad], tenant: &str) -> Result<MigrationPlan> {
    if tenant.is_empty() {
        return Err(Error::InvalidPlan(
            "an empty tenant cannot be isolated".into(),
        ));
    }
    let new_shard = topology.shard_count;
    let kind = PlanKind::Isolate {
        tenant: tenant.to_owned(),
    };
    if let Strategy::Time {
        tenant_part,
        tenants,
        ..
    } = &topology.strategy
    {
        if tenant_part.is_none() {
            return Err(Error::InvalidPlan(
                "this time topology has no tenant_part: its partition keys do not name a tenant (key by [\"team_id\", \"created_at\"] and set tenant_part = 0)".into(),
            ));
        }
        if let Some(shard) = tenants.get(tenant) {
            return Err(Error::InvalidPlan(format!(
                "tenant {tenant:?} is already isolated on shard {shard}"
            )));
        }
        let to = with_periods(topology, new_shard + 1, |_, tenants| {
            tenants.insert(tenant.to_owned(), new_shard);
        })?;
        return finish(kind, topology, to, keys);
    }
    let mut to = topology.clone();
    to.shard_count += 1;
    if !topology.strategy.names_shards() {
        let (before, grown) = (Router::new(topology.clone())?, Router::new(to.clone())?);
        for key in keys {
            let now = before.route(&key.partition_key, key.key_hash);
            if key.partition_key != tenant && grown.route(&key.partition_key, key.key_hash) != now {
                to.overrides.insert(key.partition_key.clone(), now);
            }
        }
    }
    to.overrides.insert(tenant.to_owned(), new_shard);
    let to = next(topology, to)?;
    finish(kind, topology, to, keys)
}

/// The periods of a time topology that have no shard and start before
/// `now_ms + lead_ms` (the current one included, when it is missing), in
/// time order; empty for other topologies. What the background task adds.
pub fn due_periods(topology: &Topology, now_ms: i64, lead_ms: i64) -> Vec<String> {
    let Ok(parts) = time_of(topology) else {
        return Vec::new();
    };
    let (period, offset) = (parts.period, parts.offset_minutes);
    let first = period.of_instant(now_ms, offset);
    let last = period.of_instant(now_ms.saturating_add(lead_ms.max(0)), offset);
    // A lead time of years in day periods is still a bounded walk.
    (first..=last.min(first + 400))
        .map(|index| period.label(index))
        .filter(|label| !parts.periods.contains_key(label))
        .collect()
}

/// Makes sealed or archived period `label` active again (the target
/// topology drops it from `archived`). What moves is not listed: an
/// archived period's keys are in no shard, so they are found in the lake.
pub fn plan_reactivate_period(
    topology: &Topology,
    keys: &[KeyLoad],
    label: &str,
) -> Result<MigrationPlan> {
    let parts = time_of(topology)?;
    let label = checked_label(parts.period, label)?;
    match state_of(topology, &label) {
        None => {
            return Err(Error::InvalidPlan(format!(
                "period {label} is active: there is nothing to reactivate"
            )));
        }
        Some(PeriodState::Dropped) => {
            return Err(Error::InvalidPlan(format!(
                "period {label} was dropped: its history is erased, there is nothing to bring back"
            )));
        }
        _ => {}
    }
    let mut to = topology.clone();
    if let Strategy::Time { archived, .. } = &mut to.strategy {
        archived.remove(&label);
    }
    let to = next(topology, to)?;
    let mut plan = finish(
        PlanKind::ReactivatePeriod { period: label },
        topology,
        to,
        keys,
    )?;
    plan.estimated_duration_ms = 200;
    Ok(plan)
}

/// Drops archived period `label` (seed 002's `drop_old_partitions`): it
/// must be archived (archive it first) and not dropped already. The target
/// topology marks it dropped; the coordinator erases its rows from the lake
/// before the cutover.
pub fn plan_drop_period(
    topology: &Topology,
    keys: &[KeyLoad],
    label: &str,
) -> Result<MigrationPlan> {
    let parts = time_of(topology)?;
    let label = checked_label(parts.period, label)?;
    match state_of(topology, &label) {
        Some(PeriodState::Archived) => {}
        Some(PeriodState::Dropped) => {
            return Err(Error::InvalidPlan(format!(
                "period {label} is dropped already"
            )));
        }
        _ => {
            return Err(Error::InvalidPlan(format!(
                "period {label} is not archived: archive it first (floe migrate archive-period {label})"
            )));
        }
    }
    let to = with_state(topology, &label, PeriodState::Dropped)?;
    let mut plan = finish(PlanKind::DropPeriod { period: label }, topology, to, keys)?;
    plan.estimated_duration_ms = 200;
    Ok(plan)
}

/// The archived periods of a time topology past the retention: older than
/// the `retain_periods` most recent ones (the current period counts as
/// one), oldest first. Empty for other topologies and for
/// `retain_periods == 0` (retention off).
pub fn due_drops(topology: &Topology, now_ms: i64, retain_periods: u32) -> Vec<String> {
    let Ok(parts) = time_of(topology) else {
        return Vec::new();
    };
    if retain_periods == 0 {
        return Vec::new();
    }
    let last_dropped =
        parts.period.of_instant(now_ms, parts.offset_minutes) - i64::from(retain_periods);
    let mut due: Vec<(i64, String)> = parts
        .periods
        .keys()
        .filter(|label| state_of(topology, label) == Some(PeriodState::Archived))
        .filter_map(|label| Some((parts.period.parse_label(label)?, label.clone())))
        .filter(|(index, _)| *index <= last_dropped)
        .collect();
    due.sort_unstable();
    due.into_iter().map(|(_, label)| label).collect()
}

/// The periods of a time topology that archival takes now, oldest first:
/// those with a shard that are sealed (an archival that stopped before its
/// end), or active and older than the `active_periods` most recent ones
/// (the current period counts as one). Empty for other topologies and for
/// `active_periods == 0` (archival off).
pub fn due_archival(topology: &Topology, now_ms: i64, active_periods: u32) -> Vec<String> {
    let Ok(parts) = time_of(topology) else {
        return Vec::new();
    };
    if active_periods == 0 {
        return Vec::new();
    }
    let current = parts.period.of_instant(now_ms, parts.offset_minutes);
    let last_archived = current - i64::from(active_periods);
    let mut due: Vec<(i64, String)> = parts
        .periods
        .keys()
        .filter_map(|label| {
            let index = parts.period.parse_label(label)?;
            let state = state_of(topology, label);
            let take = match state {
                Some(PeriodState::Archived | PeriodState::Dropped) => false,
                Some(PeriodState::Sealed) => true,
                None => index <= last_archived,
            };
            take.then(|| (index, label.clone()))
        })
        .collect();
    due.sort_unstable();
    due.into_iter().map(|(_, label)| label).collect()
}

#[cfg(test)]
#[path = "periods_tests.rs"]
mod tests;
