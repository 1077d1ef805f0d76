//! Plans that change a range topology live: add a range (on a new shard),
//! split a range at a key, merge two adjacent ranges, move a range to
//! another shard.
//!
//! Each plan is a new set of rules in the next topology version; the live
//! migration is the same as for hash plans (a key moves exactly when the two
//! topologies route it differently). The rules are checked here first, so
//! that a change that would overlap ranges or that names a boundary which is
//! not one is a typed error ([`Error::RangeOverlap`], [`Error::RangeGap`],
//! [`Error::RangeBound`]) and changes nothing.

use std::cmp::Ordering;
use std::fmt;

use floe_engine::{RangeBound, RangeKey, RangeRule, Strategy, Topology};

use crate::error::{Error, Result};
use crate::plan::{KeyLoad, MigrationPlan, PlanKind, check_shard, finish, next};

/// Adds the range `[start, end)` (`None`: unbounded) owned by `shard`, or
/// by a new shard when `shard` is `None`. The range must lie in space no
/// range covers (keys there went to the default shard), or inside one
/// range, which is cut around it; anything else overlaps.
pub fn plan_add_range(
    topology: &Topology,
    keys: &[KeyLoad],
    start: Option<RangeBound>,
    end: Option<RangeBound>,
    shard: Option<u32>,
) -> Result<MigrationPlan> {
    let (key, default_shard, rules) = ranges_of(topology)?;
    let start = start.map(|b| coerce(key, b)).transpose()?;
    let end = end.map(|b| coerce(key, b)).transpose()?;
    let new = Span {
        start: start.clone(),
        end: end.clone(),
    };
    if !new.is_non_empty() {
        return Err(Error::RangeBound(format!(
            "the range {new} is empty: start must be below end (ranges are half-open)"
        )));
    }
    let mut shard_count = topology.shard_count;
    let owner = match shard {
        Some(s) => {
            check_shard(topology, s)?;
            s
        }
        None => {
            shard_count += 1;
            topology.shard_count
        }
    };
    let touching: Vec<usize> = (0..rules.len())
        .filter(|&i| Span::of(&rules[i]).intersects(&new))
        .collect();
    let mut out: Vec<RangeRule> = Vec::with_capacity(rules.len() + 2);
    match touching.as_slice() {
        [] => out.extend(rules.iter().cloned()),
        [i] if Span::of(&rules[*i]).contains(&new) => {
            let outer = &rules[*i];
            for (j, rule) in rules.iter().enumerate() {
                if j != *i {
                    out.push(rule.clone());
                }
            }
            // The parts of the outer range below and above the new one.
            let below = Span {
                start: outer.start.clone(),
                end: start.clone(),
            };
            if start.is_some() && below.is_non_empty() {
                out.push(below.rule(outer.shard));
            }
            let above = Span {
                start: end.clone(),
                end: outer.end.clone(),
            };
            if end.is_some() && above.is_non_empty() {
                out.push(above.rule(outer.shard));
            }
        }
        [i, ..] => {
            return Err(Error::RangeOverlap(format!(
                "the new range {new} overlaps range {} (shard {}) without lying inside it: add a range that fits in one range or in space no range covers",
                Span::of(&rules[*i]),
                rules[*i].shard
            )));
        }
    }
    out.push(new.rule(owner));
    let kind = PlanKind::AddRange { start, end, shard };
    change(topology, keys, kind, shard_count, key, default_shard, out)
}

/// Cuts the range holding `at` into `[start, at)` and `[at, end)`; the
/// upper part goes to `shard`, or to a new shard when `shard` is `None`.
pub fn plan_split_range(
    topology: &Topology,
    keys: &[KeyLoad],
    at: RangeBound,
    shard: Option<u32>,
) -> Result<MigrationPlan> {
    let (key, default_shard, rules) = ranges_of(topology)?;
    let at = coerce(key, at)?;
    let i = holding(rules, &at)?;
    let outer = &rules[i];
    if outer.start.as_ref() == Some(&at) {
        return Err(Error::RangeBound(format!(
            "{at} is already where range {} starts: nothing to split",
            Span::of(outer)
        )));
    }
    let mut shard_count = topology.shard_count;
    let upper = match shard {
        Some(s) => {
            check_shard(topology, s)?;
            s
        }
        None => {
            shard_count += 1;
            topology.shard_count
        }
    };
    let mut out: Vec<RangeRule> = rules.to_vec();
    out[i] = Span {
        start: outer.start.clone(),
        end: Some(at.clone()),
    }
    .rule(outer.shard);
    out.push(
        Span {
            start: Some(at.clone()),
            end: outer.end.clone(),
        }
        .rule(upper),
    );
    let kind = PlanKind::SplitRange { at, shard };
    change(topology, keys, kind, shard_count, key, default_shard, out)
}

/// Merges the range ending at `at` with the range starting there into one
/// range, owned by `shard` (default: the lower range's shard). The two must
/// touch: a boundary with a gap on either side is [`Error::RangeGap`].
pub fn plan_merge_ranges(
    topology: &Topology,
    keys: &[KeyLoad],
    at: RangeBound,
    shard: Option<u32>,
) -> Result<MigrationPlan> {
    let (key, default_shard, rules) = ranges_of(topology)?;
    let at = coerce(key, at)?;
    let lower = rules.iter().position(|r| r.end.as_ref() == Some(&at));
    let upper = rules.iter().position(|r| r.start.as_ref() == Some(&at));
    let (lower, upper) = match (lower, upper) {
        (Some(l), Some(u)) => (l, u),
        (None, _) => {
            return Err(Error::RangeGap(format!(
                "no range ends at {at}: only two ranges that touch there can merge"
            )));
        }
        (_, None) => {
            return Err(Error::RangeGap(format!(
                "no range starts at {at}: only two ranges that touch there can merge"
            )));
        }
    };
    let owner = match shard {
        Some(s) => {
            check_shard(topology, s)?;
            s
        }
        None => rules[lower].shard,
    };
    let merged = Span {
        start: rules[lower].start.clone(),
        end: rules[upper].end.clone(),
    }
    .rule(owner);
    let mut out: Vec<RangeRule> = rules
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != lower && i != upper)
        .map(|(_, r)| r.clone())
        .collect();
    out.push(merged);
    let kind = PlanKind::MergeRanges { at, shard };
    change(
        topology,
        keys,
        kind,
        topology.shard_count,
        key,
        default_shard,
        out,
    )
}

/// Gives the range holding `at` to `shard`.
pub fn plan_move_range(
    topology: &Topology,
    keys: &[KeyLoad],
    at: RangeBound,
    shard: u32,
) -> Result<MigrationPlan> {
    let (key, default_shard, rules) = ranges_of(topology)?;
    let at = coerce(key, at)?;
    check_shard(topology, shard)?;
    let i = holding(rules, &at)?;
    if rules[i].shard == shard {
        return Err(Error::InvalidPlan(format!(
            "range {} is already on shard {shard}: nothing to move",
            Span::of(&rules[i])
        )));
    }
    let mut out = rules.to_vec();
    out[i].shard = shard;
    let kind = PlanKind::MoveRange { at, shard };
    change(
        topology,
        keys,
        kind,
        topology.shard_count,
        key,
        default_shard,
        out,
    )
}

/// The range strategy's parts, or [`Error::InvalidPlan`] for a hash
/// topology.
fn ranges_of(topology: &Topology) -> Result<(&RangeKey, u32, &[RangeRule])> {
    match &topology.strategy {
        Strategy::Range {
            key,
            default_shard,
            ranges,
        } => Ok((key, *default_shard, ranges)),
        other => Err(Error::InvalidPlan(format!(
            "range plans change range topologies; this one routes by {} (use add-shard, remove-shard, split, merge, pin)",
            other.name()
        ))),
    }
}

/// `bound` in the kind of the range key: text that holds an integer for an
/// integer key (what the CLI passes), any integer as text for a string key.
fn coerce(key: &RangeKey, bound: RangeBound) -> Result<RangeBound> {
    match (key, bound) {
        (RangeKey::Integer { .. }, RangeBound::String(text)) => text
            .trim()
            .parse::<i64>()
            .map(RangeBound::Integer)
            .map_err(|_| {
                Error::RangeBound(format!(
                    "{text:?} is not an integer, and the range key is an integer"
                ))
            }),
        (RangeKey::String { .. }, RangeBound::Integer(v)) => Ok(RangeBound::String(v.to_string())),
        (_, bound) => Ok(bound),
    }
}

/// The index of the rule holding `at`, or [`Error::RangeGap`].
fn holding(rules: &[RangeRule], at: &RangeBound) -> Result<usize> {
    let point = Span {
        start: Some(at.clone()),
        end: None,
    };
    rules
        .iter()
        .position(|r| {
            let span = Span::of(r);
            lower(&span.start, &point.start) != Ordering::Greater
                && span
                    .end
                    .as_ref()
                    .is_none_or(|e| cmp(at, e) == Ordering::Less)
        })
        .ok_or_else(|| {
            Error::RangeGap(format!(
                "no range holds {at} (keys there go to the default shard): add a range instead"
            ))
        })
}

/// The next topology with `rules` (sorted by start), checked for overlaps
/// once more, and the plan to it.
fn change(
    topology: &Topology,
    keys: &[KeyLoad],
    kind: PlanKind,
    shard_count: u32,
    key: &RangeKey,
    default_shard: u32,
    mut rules: Vec<RangeRule>,
) -> Result<MigrationPlan> {
    rules.sort_by(|a, b| lower(&a.start, &b.start));
    for pair in rules.windows(2) {
        let (a, b) = (Span::of(&pair[0]), Span::of(&pair[1]));
        if a.intersects(&b) {
            return Err(Error::RangeOverlap(format!(
                "ranges {a} (shard {}) and {b} (shard {}) would overlap",
                pair[0].shard, pair[1].shard
            )));
        }
    }
    let mut to = topology.clone();
    to.shard_count = shard_count;
    to.strategy = Strategy::Range {
        key: key.clone(),
        default_shard,
        ranges: rules,
    };
    let to = next(topology, to)?;
    finish(kind, topology, to, keys)
}

/// Two bounds of the same kind (coerced first); mixed kinds cannot occur in
/// a validated topology.
fn cmp(a: &RangeBound, b: &RangeBound) -> Ordering {
    match (a, b) {
        (RangeBound::Integer(a), RangeBound::Integer(b)) => a.cmp(b),
        (RangeBound::String(a), RangeBound::String(b)) => a.cmp(b),
        (RangeBound::Integer(_), RangeBound::String(_)) => Ordering::Less,
        (RangeBound::String(_), RangeBound::Integer(_)) => Ordering::Greater,
    }
}

/// Lower bounds: `None` is unbounded below.
fn lower(a: &Option<RangeBound>, b: &Option<RangeBound>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => cmp(a, b),
    }
}

/// Upper bounds: `None` is unbounded above.
fn upper(a: &Option<RangeBound>, b: &Option<RangeBound>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => cmp(a, b),
    }
}

/// A half-open span `[start, end)`.
#[derive(Debug, Clone)]
struct Span {
    start: Option<RangeBound>,
    end: Option<RangeBound>,
}

impl Span {
    fn of(rule: &RangeRule) -> Span {
        Span {
            start: rule.start.clone(),
            end: rule.end.clone(),
        }
    }

    fn rule(self, shard: u32) -> RangeRule {
        RangeRule {
            start: self.start,
            end: self.end,
            shard,
        }
    }

    /// `start < end`.
    fn is_non_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Some(s), Some(e)) => cmp(s, e) == Ordering::Less,
            _ => true,
        }
    }

    /// Whether `self.start < other.end` and `other.start < self.end`.
    fn intersects(&self, other: &Span) -> bool {
        let below = |start: &Option<RangeBound>, end: &Option<RangeBound>| match (start, end) {
            (Some(s), Some(e)) => cmp(s, e) == Ordering::Less,
            _ => true,
        };
        below(&self.start, &other.end) && below(&other.start, &self.end)
    }

    /// Whether `other` lies inside `self`.
    fn contains(&self, other: &Span) -> bool {
        lower(&self.start, &other.start) != Ordering::Greater
            && upper(&self.end, &other.end) != Ordering::Less
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |b: &Option<RangeBound>| b.as_ref().map_or("..".to_owned(), |b| b.to_string());
        write!(f, "[{}, {})", show(&self.start), show(&self.end))
    }
}

#[cfg(test)]
#[path = "ranges_tests.rs"]
mod tests;
