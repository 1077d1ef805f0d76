//! The shape limits every write path applies to JSON: size, nesting depth and
//! duplicate object keys.
//!
//! One set of checks for every way data enters floe (put, create, upsert, a
//! merge patch and the entity a patch produces), so that anything a write
//! accepted can later be parsed, patched and replayed. Recovery and replay
//! never parse entity state (they move bytes), so they cannot fail on it; the
//! depth limit is capped below serde_json's own recursion limit (128) so that
//! a patch of any accepted entity parses.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::entity::EntityKey;
use crate::error::{Error, Result};
use crate::json::Json;

/// The deepest nesting `shards.max_json_depth` may allow: serde_json refuses
/// more than 127 nested levels, and floe must be able to parse what it stored.
pub const MAX_JSON_DEPTH_CEILING: usize = 100;

/// Size and nesting limits of entity JSON, from `[shards]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Largest JSON text of an entity (and of a merge patch), in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of objects and arrays; `{}` is depth 1.
    pub max_depth: usize,
}

/// Which JSON a check is about, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonRole {
    /// The data of a create, put or upsert.
    Data,
    /// A merge patch.
    Patch,
    /// The entity a merge patch produced.
    Patched,
    /// The entity as stored (written before the limit existed).
    Stored,
}

impl JsonRole {
    fn name(self) -> &'static str {
        match self {
            JsonRole::Data => "entity data",
            JsonRole::Patch => "merge patch",
            JsonRole::Patched => "patched entity",
            JsonRole::Stored => "stored entity",
        }
    }
}

impl JsonLimits {
    /// Checks JSON text in one pass without building a tree: within
    /// `max_bytes`, well-formed, one object, nested at most `max_depth`
    /// levels, and no object naming a key twice.
    pub fn check_text(&self, key: &EntityKey, role: JsonRole, text: &str) -> Result<()> {
        self.check_size(key, text.len())?;
        let violation = Cell::new(None);
        let seed = Check {
            depth: 0,
            max_depth: self.max_depth,
            violation: &violation,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let checked = seed.deserialize(&mut de).and_then(|kind| {
            de.end()?;
            Ok(kind)
        });
        match (checked, violation.take()) {
            (_, Some(Violation::TooDeep)) => Err(self.too_deep(key, role)),
            (_, Some(Violation::Duplicate(name))) => Err(Error::DuplicateJsonKey {
                entity: key.display(),
                what: role.name(),
                key: name,
            }),
            (Err(e), None) => Err(Error::MalformedJson(e)),
            (Ok(Kind::Object), None) => Ok(()),
            (Ok(Kind::Other(kind)), None) => Err(Error::InvalidEntity {
                entity: key.display(),
                reason: format!("{} must be a JSON object, got {kind}", role.name()),
            }),
        }
    }

    /// Checks entity data floe is handed as JSON text.
    pub fn check_json(&self, key: &EntityKey, json: &Json) -> Result<()> {
        self.check_text(key, JsonRole::Data, json.as_str())
    }

    /// Checks a tree's nesting without recursing (a tree built by a library
    /// caller can be arbitrarily deep; serializing it would overflow the stack).
    pub fn check_depth(&self, key: &EntityKey, role: JsonRole, value: &Value) -> Result<()> {
        if depth_exceeds(value, self.max_depth) {
            return Err(self.too_deep(key, role));
        }
        Ok(())
    }

    /// Serializes entity data given as a tree, within the limits.
    pub fn to_json(&self, key: &EntityKey, value: &Value) -> Result<Json> {
        self.check_depth(key, JsonRole::Data, value)?;
        let json = Json::from_value(value).map_err(|e| Error::InvalidEntity {
            entity: key.display(),
            reason: e.to_string(),
        })?;
        self.check_size(key, json.len())?;
        Ok(json)
    }

    /// Parses a merge patch given as text: the checks of
    /// [`JsonLimits::check_text`], then the tree.
    pub fn parse_patch(&self, key: &EntityKey, text: &str) -> Result<Value> {
        self.check_text(key, JsonRole::Patch, text)?;
        Ok(serde_json::from_str(text)?)
    }

    /// Refuses JSON text longer than `max_bytes`.
    pub fn check_size(&self, key: &EntityKey, size: usize) -> Result<()> {
        if size > self.max_bytes {
            return Err(Error::PayloadTooLarge {
                entity: key.display(),
                size,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    pub(crate) fn too_deep(&self, key: &EntityKey, role: JsonRole) -> Error {
        Error::JsonTooDeep {
            entity: key.display(),
            what: role.name(),
            limit: self.max_depth,
        }
    }
}

/// Whether `value` nests objects and arrays more than `max` levels deep;
/// iterative, so any depth is safe to look at.
pub fn depth_exceeds(value: &Value, max: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > max {
            return true;
        }
        stack.extend(
            children
                .filter(|c| c.is_array() || c.is_object())
                .map(|c| (c, depth + 1)),
        );
    }
    false
}

/// What the checking pass found wrong besides syntax; kept aside because a
/// serde error carries only a message.
#[derive(Debug)]
enum Violation {
    TooDeep,
    Duplicate(String),
}

/// What the top-level value was.
enum Kind {
    Object,
    Other(&'static str),
}

/// A seed that walks one JSON value without keeping it. It recurses, but at
/// most `max_depth` (<= [`MAX_JSON_DEPTH_CEILING`]) levels before it stops,
/// and serde_json stops at 128 levels itself.
#[derive(Clone, Copy)]
struct Check<'v> {
    depth: usize,
    max_depth: usize,
    violation: &'v Cell<Option<Violation>>,
}

impl Check<'_> {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        if self.depth + 1 > self.max_depth {
            self.violation.set(Some(Violation::TooDeep));
            return Err(E::custom("too deep"));
        }
        Ok(Check {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = Kind;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::Other("a string"))
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Other("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let inner = self.nested()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(Kind::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let inner = self.nested()?;
        // Most objects are small: a linear scan beats hashing until then.
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(name) = map.next_key_seed(KeyName)? {
            let repeated = if many.is_empty() && few.len() < 16 {
                let seen = few.contains(&name);
                few.push(name.clone());
                seen
            } else {
                if many.is_empty() {
                    many.extend(few.drain(..));
                }
                !many.insert(name.clone())
            };
            if repeated {
                self.violation
                    .set(Some(Violation::Duplicate(name.into_owned())));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(inner)?;
        }
        Ok(Kind::Object)
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct KeyName;

impl<'de> DeserializeSeed<'de> for KeyName {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyName {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: JsonLimits = JsonLimits {
        max_bytes: 1 << 20,
        max_depth: 8,
    };

    fn key() -> EntityKey {
        EntityKey::new("t", "T", "1")
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "{\"a\":".repeat(depth - 1) + "{", "}".repeat(depth))
    }

    fn check(text: &str) -> Result<()> {
        LIMITS.check_text(&key(), JsonRole::Data, text)
    }

    #[test]
    fn depth_is_counted_in_containers() {
        assert!(check(&nested(8)).is_ok());
        assert!(matches!(
            check(&nested(9)),
            Err(Error::JsonTooDeep { limit: 8, .. })
        ));
        assert!(check(r#"{"a":[[[[[[1]]]]]]}"#).is_ok(), "7 levels");
        assert!(matches!(
            check(r#"{"a":[[[[[[[[]]]]]]]]}"#),
            Err(Error::JsonTooDeep { .. })
        ));
        // Far past serde_json's own limit: still the typed error, no overflow.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let deep = format!("{{\"a\":{deep}}}");
        assert!(matches!(check(&deep), Err(Error::JsonTooDeep { .. })));
        let value: Value = serde_json::from_str(&nested(8)).unwrap();
        assert!(!depth_exceeds(&value, 8) && depth_exceeds(&value, 7));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_level_and_size() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":{"c":1,"c":1}}"#,
            r#"{"x":[{"k":1,"k":2}]}"#,
            r#"{"a\u0062":1,"ab":2}"#,
        ] {
            assert!(
                matches!(check(text), Err(Error::DuplicateJsonKey { .. })),
                "{text}"
            );
        }
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!("{{{}}}", many.join(","));
        assert!(check(&ok).is_ok());
        let dup = format!("{{{},\"k3\":0}}", many.join(","));
        let err = check(&dup).unwrap_err();
        assert!(err.to_string().contains("\"k3\" twice"), "{err}");
        assert!(check(r#"{"a":1,"A":2,"b":{"a":1}}"#).is_ok());
    }

    #[test]
    fn size_syntax_and_object_checks() {
        let small = JsonLimits {
            max_bytes: 10,
            max_depth: 8,
        };
        assert!(matches!(
            small.check_text(&key(), JsonRole::Data, r#"{"a":"0123456789"}"#),
            Err(Error::PayloadTooLarge { limit: 10, .. })
        ));
        assert!(matches!(check("{\"a\":"), Err(Error::MalformedJson(_))));
        assert!(matches!(check("{} {}"), Err(Error::MalformedJson(_))));
        assert!(matches!(check("[1]"), Err(Error::InvalidEntity { .. })));
        assert!(matches!(check("3"), Err(Error::InvalidEntity { .. })));
        let deep: Value = serde_json::from_str(&nested(9)).unwrap();
        assert!(matches!(
            LIMITS.to_json(&key(), &deep),
            Err(Error::JsonTooDeep { .. })
        ));
        let patch = LIMITS.parse_patch(&key(), r#"{"a":null}"#).unwrap();
        assert_eq!(patch, serde_json::json!({"a": null}));
    }

    proptest! {
        /// The checker agrees with serde_json on every well-formed object
        /// within the limits: it accepts exactly those, whatever the content.
        #[test]
        fn accepts_what_serde_parses_within_limits(value in arb_json(4)) {
            let text = serde_json::to_string(&serde_json::json!({ "v": value })).unwrap();
            prop_assert!(check(&text).is_ok(), "{}", text);
        }
    }

    fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(depth, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
