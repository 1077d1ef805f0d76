//! Range routing compiled for lookup: rules sorted by start, binary search.

use std::cmp::Ordering;

use super::range_rules::{KeyTransform, RangeBound, RangeKey, RangeRule};

/// A validated [`Strategy::Range`](crate::Strategy::Range), ready for lookups.
#[derive(Debug)]
pub(crate) struct RangeTable {
    rules: Rules,
    default_shard: u32,
}

#[derive(Debug)]
enum Rules {
    String {
        transform: KeyTransform,
        /// Sorted by start; `None` (unbounded) first. Non-overlapping.
        rules: Vec<Rule<Box<str>>>,
    },
    Integer {
        separator: Option<Box<str>>,
        field: usize,
        rules: Vec<Rule<i64>>,
    },
}

#[derive(Debug)]
struct Rule<T> {
    start: Option<T>,
    end: Option<T>,
    shard: u32,
}

/// The rules with bounds of one kind, sorted by start; `Option` orders `None`
/// first, so unbounded starts come first.
fn compile<T: Ord>(ranges: &[RangeRule], bound: impl Fn(&RangeBound) -> Option<T>) -> Vec<Rule<T>> {
    let mut rules: Vec<Rule<T>> = ranges
        .iter()
        .map(|r| Rule {
            start: r.start.as_ref().and_then(&bound),
            end: r.end.as_ref().and_then(&bound),
            shard: r.shard,
        })
        .collect();
    rules.sort_by(|a, b| a.start.cmp(&b.start));
    rules
}

impl RangeTable {
    /// Compiles rules that [`Strategy::validate`](super::Strategy) accepted
    /// (bound kinds match the key, no overlaps).
    pub(crate) fn new(key: &RangeKey, default_shard: u32, ranges: &[RangeRule]) -> Self {
        let rules = match key {
            RangeKey::String { transform } => Rules::String {
                transform: *transform,
                rules: compile(ranges, |b| match b {
                    RangeBound::String(s) => Some(s.as_str().into()),
                    RangeBound::Integer(_) => None,
                }),
            },
            RangeKey::Integer { separator, field } => Rules::Integer {
                separator: separator.as_deref().map(Into::into),
                field: *field as usize,
                rules: compile(ranges, |b| match b {
                    RangeBound::Integer(v) => Some(*v),
                    RangeBound::String(_) => None,
                }),
            },
        };
        RangeTable {
            rules,
            default_shard,
        }
    }

    /// The shard for keys that match no range.
    pub(crate) fn default_shard(&self) -> u32 {
        self.default_shard
    }

    /// The shard of the range that holds `key`, if one does. No allocation.
    pub(crate) fn lookup(&self, key: &str) -> Option<u32> {
        match &self.rules {
            // Monomorphized per transform so that the plain case is a memcmp.
            Rules::String { transform, rules } => match transform {
                KeyTransform::None => find(rules, |bound| key.cmp(bound)),
                t => find(rules, |bound| t.cmp(key, bound)),
            },
            Rules::Integer {
                separator,
                field,
                rules,
            } => {
                let value = parse_integer(key, separator.as_deref(), *field)?;
                let at = rules.partition_point(|r| r.start.is_none_or(|s| s <= value));
                let rule = rules.get(at.checked_sub(1)?)?;
                rule.end.is_none_or(|e| value < e).then_some(rule.shard)
            }
        }
    }
}

/// The rule holding the key whose comparison with a bound is `cmp(bound)`.
#[inline]
fn find(rules: &[Rule<Box<str>>], cmp: impl Fn(&str) -> Ordering) -> Option<u32> {
    // The last rule starting at or below the key is the only candidate.
    let at = rules.partition_point(|r| r.start.as_deref().is_none_or(|s| cmp(s) != Ordering::Less));
    let rule = rules.get(at.checked_sub(1)?)?;
    let below_end = rule.end.as_deref().is_none_or(|e| cmp(e) == Ordering::Less);
    below_end.then_some(rule.shard)
}

/// The integer in `key` (or in its `field`-th part split on `separator`).
/// Exactly `str::parse::<i64>`: an optional sign and ASCII digits, no spaces.
fn parse_integer(key: &str, separator: Option<&str>, field: usize) -> Option<i64> {
    let text = match separator {
        None => key,
        Some(sep) => key.split(sep).nth(field)?,
    };
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alphabetic() -> RangeTable {
        // Seed 004's alphabetic example.
        RangeTable::new(
            &RangeKey::String {
                transform: KeyTransform::FirstCharUppercase,
            },
            0,
            &[
                RangeRule::strings(Some("A"), Some("H"), 0),
                RangeRule::strings(Some("H"), Some("P"), 1),
                RangeRule::strings(Some("P"), Some("Z"), 2),
            ],
        )
    }

    fn time_series() -> RangeTable {
        // Seed 004's time-series example: `parseInt(key.split('-')[1])`.
        RangeTable::new(
            &RangeKey::Integer {
                separator: Some("-".into()),
                field: 1,
            },
            3,
            &[
                RangeRule::integers(Some(1_711_929_600_000), None, 2),
                RangeRule::integers(Some(0), Some(1_704_067_200_000), 0),
                RangeRule::integers(Some(1_704_067_200_000), Some(1_711_929_600_000), 1),
            ],
        )
    }

    #[test]
    fn string_ranges_are_half_open() {
        let t = alphabetic();
        assert_eq!(t.lookup("alice"), Some(0)); // "A": start inclusive
        assert_eq!(t.lookup("Gus"), Some(0));
        assert_eq!(t.lookup("harry"), Some(1)); // "H": end of rule 0 exclusive
        assert_eq!(t.lookup("oscar"), Some(1));
        assert_eq!(t.lookup("peter"), Some(2));
        assert_eq!(t.lookup("yann"), Some(2));
        // As in the seed, "Z" is past the last (exclusive) end: default shard.
        assert_eq!(t.lookup("zoe"), None);
        assert_eq!(t.lookup("42"), None); // "4" < "A"
        assert_eq!(t.lookup(""), None);
        assert_eq!(t.default_shard(), 0);
    }

    #[test]
    fn unbounded_ends_cover_everything_beyond() {
        let t = RangeTable::new(
            &RangeKey::default(),
            9,
            &[
                RangeRule::strings(None, Some("m"), 0),
                RangeRule::strings(Some("m"), None, 1),
            ],
        );
        assert_eq!(t.lookup(""), Some(0));
        assert_eq!(t.lookup("lzzzz"), Some(0));
        assert_eq!(t.lookup("m"), Some(1));
        assert_eq!(t.lookup("\u{10ffff}"), Some(1));
        // Untransformed: uppercase sorts before lowercase.
        assert_eq!(t.lookup("Zed"), Some(0));
    }

    #[test]
    fn integer_ranges_parse_the_chosen_field() {
        let t = time_series();
        assert_eq!(t.lookup("evt-0-x"), Some(0));
        assert_eq!(t.lookup("evt-1704067199999"), Some(0));
        assert_eq!(t.lookup("evt-1704067200000"), Some(1)); // start inclusive
        assert_eq!(t.lookup("evt-1711929599999-9"), Some(1));
        assert_eq!(t.lookup("evt-1711929600000"), Some(2)); // end exclusive
        assert_eq!(t.lookup(&format!("evt-{}", i64::MAX)), Some(2)); // unbounded end
        assert_eq!(t.lookup("evt--5"), None); // empty field: does not parse
        assert_eq!(t.lookup("evt"), None); // no field 1
        assert_eq!(t.lookup("evt- 5"), None); // no trimming
        assert_eq!(t.lookup("evt-99999999999999999999"), None); // overflows i64
        assert_eq!(t.lookup("a-+5"), Some(0)); // what `parse::<i64>` accepts
        assert_eq!(t.default_shard(), 3);
    }

    #[test]
    fn integer_gaps_and_negative_values() {
        let t = RangeTable::new(
            &RangeKey::Integer {
                separator: None,
                field: 0,
            },
            0,
            &[
                RangeRule::integers(None, Some(-10), 1),
                RangeRule::integers(Some(0), Some(10), 2),
                RangeRule::integers(Some(20), None, 3),
            ],
        );
        assert_eq!(t.lookup(&i64::MIN.to_string()), Some(1));
        assert_eq!(t.lookup("-11"), Some(1));
        assert_eq!(t.lookup("-10"), None); // gap [-10, 0)
        assert_eq!(t.lookup("-1"), None);
        assert_eq!(t.lookup("0"), Some(2));
        assert_eq!(t.lookup("15"), None); // gap [10, 20)
        assert_eq!(t.lookup("20"), Some(3));
        assert_eq!(t.lookup("x"), None);
    }

    #[test]
    fn no_rules_means_default_for_all() {
        let t = RangeTable::new(&RangeKey::default(), 4, &[]);
        assert_eq!(t.lookup("anything"), None);
        assert_eq!(t.default_shard(), 4);
    }
}
