//! Which parts of an entity make up its partition key: [`KeyField`] and
//! [`PartitionKeySpec`], both plain configuration (serde).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// One component of a partition key.
///
/// In configuration a field is a string: `$namespace`, `$type` and `$id` name
/// the parts of the entity's [`EntityKey`](crate::EntityKey); anything else is
/// a field of the entity's data, where dots descend into nested objects
/// (`customer.id` reads `{"customer": {"id": ...}}`). A data field whose name
/// itself contains a dot cannot be addressed, and arrays are never indexed
/// (an element's position is not a stable key).
///
/// Parse with [`FromStr`] (or serde), which rejects unknown `$` names (a typo
/// such as `$tenant` must not silently read a data field) and empty path
/// segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyField {
    /// `$namespace`: the entity's namespace, usually the tenant.
    Namespace,
    /// `$type`: the entity's type.
    Type,
    /// `$id`: the entity's id.
    Id,
    /// A field of the entity's data: a name or a dotted path.
    Field(String),
}

impl KeyField {
    /// Whether this field is read from the entity's data rather than its key.
    pub fn reads_data(&self) -> bool {
        matches!(self, KeyField::Field(_))
    }
}

impl FromStr for KeyField {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "$namespace" => Ok(KeyField::Namespace),
            "$type" => Ok(KeyField::Type),
            "$id" => Ok(KeyField::Id),
            _ if s.starts_with('$') => Err(Error::InvalidConfig(format!(
                "unknown partition key field `{s}`: expected $namespace, $type, $id or a data field path"
            ))),
            _ if s.split('.').any(str::is_empty) => Err(Error::InvalidConfig(format!(
                "partition key field `{s}` has an empty path segment"
            ))),
            _ => Ok(KeyField::Field(s.to_owned())),
        }
    }
}

impl fmt::Display for KeyField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyField::Namespace => f.write_str("$namespace"),
            KeyField::Type => f.write_str("$type"),
            KeyField::Id => f.write_str("$id"),
            KeyField::Field(path) => f.write_str(path),
        }
    }
}

impl Serialize for KeyField {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// How the partition key of an entity is formed.
///
/// - `fields`: one field is a simple key (its value as-is); several form a
///   composite key, present only when every field is present (see
///   [`KeyExtractor`](crate::KeyExtractor) for the encoding).
/// - `fallback`: read when the key is missing.
/// - `strict`: when the key and the fallback are both missing, fail the write
///   with [`Error::MissingPartitionKey`] instead of routing by the entity id.
///
/// As JSON: `{"fields": ["tenantId", "region"], "fallback": "$id", "strict": true}`;
/// `fields` may also be a single string, and defaults to `"$id"`.
///
/// A partition key is stored in every event and decides where the entity
/// lives: changing the spec of existing data is a migration, not a config edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionKeySpec {
    /// The fields of the key, in order; never empty.
    #[serde(default = "id_fields", deserialize_with = "one_or_many")]
    pub fields: Vec<KeyField>,
    /// Field read when the key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<KeyField>,
    /// Fail instead of routing by the entity id when no key can be read.
    #[serde(default)]
    pub strict: bool,
}

fn id_fields() -> Vec<KeyField> {
    vec![KeyField::Id]
}

impl Default for PartitionKeySpec {
    /// Route by `$id`: every entity can land anywhere.
    fn default() -> Self {
        PartitionKeySpec::id()
    }
}

impl PartitionKeySpec {
    /// Key = `$id`, the default: each entity lands anywhere, spreading evenly.
    pub fn id() -> Self {
        PartitionKeySpec::field(KeyField::Id)
    }

    /// Key = `$namespace`, the tenant pattern: all of a tenant's entities live
    /// on one shard (isolation, single-shard transactions per tenant).
    pub fn tenant() -> Self {
        PartitionKeySpec::field(KeyField::Namespace)
    }

    /// A simple key of one field.
    pub fn field(field: KeyField) -> Self {
        PartitionKeySpec {
            fields: vec![field],
            fallback: None,
            strict: false,
        }
    }

    /// A composite key of several fields, in order.
    pub fn composite(fields: impl IntoIterator<Item = KeyField>) -> Self {
        PartitionKeySpec {
            fields: fields.into_iter().collect(),
            fallback: None,
            strict: false,
        }
    }

    /// Parses field strings (`"$namespace"`, `"customer.id"`, ...) into a key.
    pub fn parse(fields: &[&str]) -> Result<Self> {
        let spec = PartitionKeySpec::composite(
            fields
                .iter()
                .map(|f| f.parse())
                .collect::<Result<Vec<_>>>()?,
        );
        spec.validate()?;
        Ok(spec)
    }

    /// Sets the field read when the key is missing.
    pub fn with_fallback(mut self, fallback: KeyField) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Sets strict mode.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Whether the key or its fallback reads the entity's data, so that a
    /// request carrying only the [`EntityKey`](crate::EntityKey) cannot be routed.
    pub fn reads_data(&self) -> bool {
        self.fields.iter().any(KeyField::reads_data)
            || self.fallback.as_ref().is_some_and(KeyField::reads_data)
    }

    /// Checks the spec: at least one field. (Deserialization checks it too.)
    pub fn validate(&self) -> Result<()> {
        if self.fields.is_empty() {
            return Err(Error::InvalidConfig(
                "a partition key needs at least one field".into(),
            ));
        }
        Ok(())
    }

    /// The fields looked for, as configured, for error messages.
    pub(crate) fn field_names(&self) -> Vec<String> {
        self.fields
            .iter()
            .chain(&self.fallback)
            .map(ToString::to_string)
            .collect()
    }
}

/// `fields` is `"a"` or `["a", "b"]`, never `[]`.
fn one_or_many<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<KeyField>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<KeyField>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key field or a non-empty list of key fields")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
            Ok(vec![s.parse().map_err(E::custom)?])
        }

        fn visit_seq<A: SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut fields = Vec::new();
            while let Some(field) = seq.next_element()? {
                fields.push(field);
            }
            if fields.is_empty() {
                return Err(de::Error::custom(
                    "a partition key needs at least one field",
                ));
            }
            Ok(fields)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_fields_parse_and_display_round_trip() {
        for (text, field) in [
            ("$namespace", KeyField::Namespace),
            ("$type", KeyField::Type),
            ("$id", KeyField::Id),
            ("customerId", KeyField::Field("customerId".into())),
            ("customer.id", KeyField::Field("customer.id".into())),
        ] {
            assert_eq!(text.parse::<KeyField>().unwrap(), field);
            assert_eq!(field.to_string(), text);
            assert_eq!(
                serde_json::to_string(&field).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<KeyField>(&format!("\"{text}\"")).unwrap(),
                field
            );
        }
    }

    #[test]
    fn bad_key_fields_are_rejected() {
        for bad in ["$tenant", "$", "", "a..b", ".a", "a."] {
            let err = bad.parse::<KeyField>().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{bad}: {err}");
        }
        let err = serde_json::from_str::<KeyField>("\"$tenant\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown partition key field `$tenant`")
        );
    }

    #[test]
    fn spec_deserializes_one_or_many_fields_with_defaults() {
        let spec: PartitionKeySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec, PartitionKeySpec::id());

        let spec: PartitionKeySpec =
            serde_json::from_str(r#"{"fields": "customerId", "fallback": "$id"}"#).unwrap();
        assert_eq!(
            spec,
            PartitionKeySpec::field(KeyField::Field("customerId".into()))
                .with_fallback(KeyField::Id)
        );

        let spec: PartitionKeySpec =
            serde_json::from_str(r#"{"fields": ["$namespace", "region"], "strict": true}"#)
                .unwrap();
        assert_eq!(
            spec,
            PartitionKeySpec::parse(&["$namespace", "region"])
                .unwrap()
                .with_strict(true)
        );

        let back: PartitionKeySpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn spec_rejects_empty_fields_unknown_keys_and_bad_fields() {
        for bad in [
            r#"{"fields": []}"#,
            r#"{"fields": "$tenant"}"#,
            r#"{"fields": ["a", "$bogus"]}"#,
            r#"{"field": "a"}"#,
            r#"{"fields": 7}"#,
        ] {
            assert!(
                serde_json::from_str::<PartitionKeySpec>(bad).is_err(),
                "{bad}"
            );
        }
        assert!(PartitionKeySpec::parse(&[]).is_err());
        assert!(PartitionKeySpec::composite([]).validate().is_err());
    }

    #[test]
    fn reads_data_looks_at_fields_and_fallback() {
        assert!(!PartitionKeySpec::id().reads_data());
        assert!(
            !PartitionKeySpec::tenant()
                .with_fallback(KeyField::Id)
                .reads_data()
        );
        assert!(
            PartitionKeySpec::parse(&["$namespace", "region"])
                .unwrap()
                .reads_data()
        );
        assert!(
            PartitionKeySpec::tenant()
                .with_fallback(KeyField::Field("org".into()))
                .reads_data()
        );
    }
}
