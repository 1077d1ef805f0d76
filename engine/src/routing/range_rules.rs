//! The configuration of range routing: key kinds, transforms, rules and
//! bounds, and their validation.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How [`Strategy::Range`](crate::Strategy::Range) reads a partition key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RangeKey {
    /// Keys compare as strings (Unicode code point order, which is UTF-8 byte
    /// order) after `transform`; range bounds are strings and are compared
    /// as written. `{ kind = "string", transform = "first_char_uppercase" }`
    /// is seed 004's alphabetic example.
    String {
        /// Applied to the key before comparing; bounds are not transformed.
        #[serde(default)]
        transform: KeyTransform,
    },
    /// Keys are (or contain) a signed 64-bit integer, e.g. a timestamp in
    /// milliseconds; range bounds are integers. Without a separator the whole
    /// key is parsed; with one, the key is split on it and field `field`
    /// (0-based) is parsed: `{ kind = "integer", separator = "-", field = 1 }`
    /// is seed 004's `key.split('-')[1]`. A key that does not parse (or has
    /// too few fields) goes to the default shard.
    Integer {
        /// Splits the key into fields; `None` parses the whole key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        separator: Option<String>,
        /// Which field holds the number, 0-based; needs a separator when not 0.
        #[serde(default)]
        field: u32,
    },
}

impl Default for RangeKey {
    fn default() -> Self {
        RangeKey::String {
            transform: KeyTransform::None,
        }
    }
}

/// What a string range key does to the partition key before comparing it.
/// Transforms never allocate: they are applied character by character during
/// the comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyTransform {
    /// The key as it is.
    #[default]
    None,
    /// Only the first character, uppercased (seed 004: `key.charAt(0).toUpperCase()`).
    FirstCharUppercase,
    /// The whole key uppercased.
    Uppercase,
    /// The whole key lowercased.
    Lowercase,
}

impl KeyTransform {
    /// Compares `transform(key)` with `bound`, without allocating.
    pub(crate) fn cmp(self, key: &str, bound: &str) -> Ordering {
        match self {
            KeyTransform::None => key.cmp(bound),
            KeyTransform::FirstCharUppercase => key
                .chars()
                .take(1)
                .flat_map(char::to_uppercase)
                .cmp(bound.chars()),
            KeyTransform::Uppercase => key.chars().flat_map(char::to_uppercase).cmp(bound.chars()),
            KeyTransform::Lowercase => key.chars().flat_map(char::to_lowercase).cmp(bound.chars()),
        }
    }
}

/// One half-open range `[start, end)` of [`Strategy::Range`](crate::Strategy::Range) and its shard.
/// A missing `start` is unbounded below, a missing `end` unbounded above.
///
/// JSON `{"start": "A", "end": "H", "shard": 0}`, TOML
/// `{ start = 1704067200000, shard = 2 }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRule {
    /// Inclusive lower bound; `None` is unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<RangeBound>,
    /// Exclusive upper bound; `None` is unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<RangeBound>,
    /// The shard that owns the range.
    pub shard: u32,
}

impl RangeRule {
    /// A string range `[start, end)` owned by `shard`.
    pub fn strings(start: Option<&str>, end: Option<&str>, shard: u32) -> Self {
        RangeRule {
            start: start.map(RangeBound::from),
            end: end.map(RangeBound::from),
            shard,
        }
    }

    /// An integer range `[start, end)` owned by `shard`.
    pub fn integers(start: Option<i64>, end: Option<i64>, shard: u32) -> Self {
        RangeRule {
            start: start.map(RangeBound::Integer),
            end: end.map(RangeBound::Integer),
            shard,
        }
    }
}

/// A range bound: an integer for [`RangeKey::Integer`], a string for
/// [`RangeKey::String`]. Serialized as a bare JSON number or string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RangeBound {
    /// A bound of an integer range.
    Integer(i64),
    /// A bound of a string range.
    String(String),
}

impl From<i64> for RangeBound {
    fn from(v: i64) -> Self {
        RangeBound::Integer(v)
    }
}

impl From<&str> for RangeBound {
    fn from(v: &str) -> Self {
        RangeBound::String(v.to_owned())
    }
}

impl From<String> for RangeBound {
    fn from(v: String) -> Self {
        RangeBound::String(v)
    }
}

impl fmt::Display for RangeBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeBound::Integer(v) => write!(f, "{v}"),
            RangeBound::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// `[start, end)` for messages, with unbounded ends shown as `..`.
struct Shown<'a>(&'a RangeRule);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |b: &Option<RangeBound>| b.as_ref().map_or("..".to_owned(), |b| b.to_string());
        write!(f, "[{}, {})", show(&self.0.start), show(&self.0.end))
    }
}

/// The lower bound as a comparable value: `None` sorts first (unbounded below).
fn cmp_bounds(a: &RangeBound, b: &RangeBound) -> Ordering {
    match (a, b) {
        (RangeBound::Integer(a), RangeBound::Integer(b)) => a.cmp(b),
        (RangeBound::String(a), RangeBound::String(b)) => a.cmp(b),
        // Kinds were checked before bounds are compared.
        (RangeBound::Integer(_), RangeBound::String(_)) => Ordering::Less,
        (RangeBound::String(_), RangeBound::Integer(_)) => Ordering::Greater,
    }
}

pub(crate) fn validate_ranges(
    key: &RangeKey,
    default_shard: u32,
    ranges: &[RangeRule],
    shard_count: u32,
) -> Result<()> {
    let invalid = |msg: String| Err(Error::InvalidTopology(format!("range: {msg}")));
    let integer_key = match key {
        RangeKey::String { .. } => false,
        RangeKey::Integer { separator, field } => {
            if separator.as_deref() == Some("") {
                return invalid("the key separator must not be empty".into());
            }
            if separator.is_none() && *field != 0 {
                return invalid(format!("field {field} needs a separator"));
            }
            true
        }
    };
    if default_shard >= shard_count {
        return Err(Error::UnknownShard {
            shard: default_shard,
            shard_count,
        });
    }
    for (i, rule) in ranges.iter().enumerate() {
        if rule.shard >= shard_count {
            return Err(Error::UnknownShard {
                shard: rule.shard,
                shard_count,
            });
        }
        for bound in [&rule.start, &rule.end].into_iter().flatten() {
            let is_integer = matches!(bound, RangeBound::Integer(_));
            if is_integer != integer_key {
                let (got, want) = if integer_key {
                    ("a string", "integer")
                } else {
                    ("an integer", "string")
                };
                return invalid(format!(
                    "rule {i} {}: bound {bound} is {got} but the range key is {want}",
                    Shown(rule)
                ));
            }
        }
        if let (Some(start), Some(end)) = (&rule.start, &rule.end)
            && cmp_bounds(start, end) != Ordering::Less
        {
            return invalid(format!(
                "rule {i} {} is empty: start must be below end (ranges are half-open)",
                Shown(rule)
            ));
        }
    }
    // Sorted by start (unbounded first), neighbours must not overlap.
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by(|&a, &b| match (&ranges[a].start, &ranges[b].start) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => cmp_bounds(x, y),
    });
    for pair in order.windows(2) {
        let (a, b) = (&ranges[pair[0]], &ranges[pair[1]]);
        let disjoint = match (&a.end, &b.start) {
            (Some(end), Some(start)) => cmp_bounds(end, start) != Ordering::Greater,
            _ => false,
        };
        if !disjoint {
            return invalid(format!(
                "rules {} {} and {} {} overlap",
                pair[0],
                Shown(a),
                pair[1],
                Shown(b)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Strategy;
    use crate::routing::strategy::range;

    fn integer_key() -> RangeKey {
        RangeKey::Integer {
            separator: None,
            field: 0,
        }
    }

    fn message(err: Error) -> String {
        match err {
            Error::InvalidTopology(m) => m,
            other => panic!("expected InvalidTopology, got {other:?}"),
        }
    }

    #[test]
    fn range_configuration_reads_well_in_toml() {
        #[derive(Deserialize)]
        struct Config {
            strategy: Strategy,
        }
        let alphabetic = r#"
            [strategy]
            kind = "range"
            key = { kind = "string", transform = "first_char_uppercase" }
            default_shard = 0
            ranges = [
              { start = "A", end = "H", shard = 0 },
              { start = "H", end = "P", shard = 1 },
              { start = "P", shard = 2 },
            ]
        "#;
        let config: Config = toml::from_str(alphabetic).unwrap();
        assert_eq!(
            config.strategy,
            Strategy::Range {
                key: RangeKey::String {
                    transform: KeyTransform::FirstCharUppercase
                },
                default_shard: 0,
                ranges: vec![
                    RangeRule::strings(Some("A"), Some("H"), 0),
                    RangeRule::strings(Some("H"), Some("P"), 1),
                    RangeRule::strings(Some("P"), None, 2),
                ],
            }
        );
        config.strategy.validate(3).unwrap();

        let time_series = r#"
            strategy = { kind = "range", key = { kind = "integer", separator = "-", field = 1 }, default_shard = 0, ranges = [
              { end = 1704067200000, shard = 0 },
              { start = 1704067200000, end = 1711929600000, shard = 1 },
              { start = 1711929600000, shard = 2 },
            ] }
        "#;
        let config: Config = toml::from_str(time_series).unwrap();
        config.strategy.validate(3).unwrap();
        let Strategy::Range { key, ranges, .. } = &config.strategy else {
            panic!("not a range strategy");
        };
        assert_eq!(
            key,
            &RangeKey::Integer {
                separator: Some("-".into()),
                field: 1
            }
        );
        assert_eq!(
            ranges[1],
            RangeRule::integers(Some(1_704_067_200_000), Some(1_711_929_600_000), 1)
        );
        // And back: TOML has no null, unbounded ends are simply left out.
        let text = toml::to_string(&config.strategy).unwrap();
        assert!(!text.contains("null"));
        assert_eq!(toml::from_str::<Strategy>(&text).unwrap(), config.strategy);
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let overlapping = [
            // Same start.
            vec![
                RangeRule::integers(Some(0), Some(10), 0),
                RangeRule::integers(Some(0), Some(5), 1),
            ],
            // End past the next start, given out of order.
            vec![
                RangeRule::integers(Some(10), Some(20), 1),
                RangeRule::integers(Some(0), Some(11), 0),
            ],
            // Two unbounded starts.
            vec![
                RangeRule::integers(None, Some(0), 0),
                RangeRule::integers(None, Some(5), 1),
            ],
            // Unbounded end followed by anything.
            vec![
                RangeRule::integers(Some(0), None, 0),
                RangeRule::integers(Some(100), Some(200), 1),
            ],
        ];
        for ranges in overlapping {
            let err = range(integer_key(), ranges.clone())
                .validate(2)
                .unwrap_err();
            assert!(message(err).contains("overlap"), "{ranges:?}");
        }
        // Touching ranges are fine: end is exclusive.
        range(
            integer_key(),
            vec![
                RangeRule::integers(Some(10), None, 1),
                RangeRule::integers(None, Some(10), 0),
            ],
        )
        .validate(2)
        .unwrap();
    }

    #[test]
    fn invalid_ranges_are_rejected() {
        let empty = range(
            integer_key(),
            vec![RangeRule::integers(Some(5), Some(5), 0)],
        );
        assert!(message(empty.validate(1).unwrap_err()).contains("empty"));
        let reversed = range(
            RangeKey::default(),
            vec![RangeRule::strings(Some("b"), Some("a"), 0)],
        );
        assert!(message(reversed.validate(1).unwrap_err()).contains("empty"));
        let mixed = range(integer_key(), vec![RangeRule::strings(Some("a"), None, 0)]);
        assert!(message(mixed.validate(1).unwrap_err()).contains("integer"));
        let mixed = range(
            RangeKey::default(),
            vec![RangeRule::integers(Some(1), None, 0)],
        );
        assert!(message(mixed.validate(1).unwrap_err()).contains("string"));
        let no_sep = range(
            RangeKey::Integer {
                separator: None,
                field: 2,
            },
            vec![],
        );
        assert!(message(no_sep.validate(1).unwrap_err()).contains("separator"));
        let empty_sep = range(
            RangeKey::Integer {
                separator: Some(String::new()),
                field: 0,
            },
            vec![],
        );
        assert!(message(empty_sep.validate(1).unwrap_err()).contains("separator"));
    }

    #[test]
    fn range_shards_must_exist() {
        let bad_rule = range(integer_key(), vec![RangeRule::integers(None, None, 3)]);
        assert!(matches!(
            bad_rule.validate(3),
            Err(Error::UnknownShard {
                shard: 3,
                shard_count: 3
            })
        ));
        let bad_default = Strategy::Range {
            key: integer_key(),
            default_shard: 5,
            ranges: vec![],
        };
        assert!(matches!(
            bad_default.validate(2),
            Err(Error::UnknownShard { shard: 5, .. })
        ));
    }

    #[test]
    fn transforms_compare_without_allocating_the_transformed_key() {
        use KeyTransform::*;
        assert_eq!(None.cmp("apple", "B"), Ordering::Greater);
        assert_eq!(FirstCharUppercase.cmp("apple", "B"), Ordering::Less);
        assert_eq!(FirstCharUppercase.cmp("apple", "A"), Ordering::Equal);
        assert_eq!(FirstCharUppercase.cmp("", "A"), Ordering::Less);
        assert_eq!(Uppercase.cmp("straße", "STRASSE"), Ordering::Equal);
        assert_eq!(Lowercase.cmp("ABC", "abc"), Ordering::Equal);
        assert_eq!(Lowercase.cmp("ABD", "abc"), Ordering::Greater);
    }
}
