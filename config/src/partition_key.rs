//! `[partition_key]`: which field of an entity routes it, by default and
//! per type, with partial tables layered over the defaults.

use std::collections::BTreeMap;

use floe_engine::{KeyExtractor, PartitionKeySpec};
use serde::{Deserialize, Serialize};

/// Partition-key extraction: a default spec and per-type specs.
///
/// A partial table changes only the keys it names: `[partition_key]` with
/// only `strict = true` keeps the `$namespace` key, and a
/// `[partition_key.types.T]` table takes the keys it does not name from the
/// default spec (so `[partition_key.types.OrderItem]` alone leaves every
/// other type routed exactly as before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PartitionKeyToml")]
pub struct PartitionKeyConfig {
    /// The spec for types without their own.
    #[serde(flatten)]
    pub default: PartitionKeySpec,
    /// Specs by entity type.
    pub types: BTreeMap<String, PartitionKeySpec>,
}

impl Default for PartitionKeyConfig {
    fn default() -> Self {
        PartitionKeyConfig {
            default: PartitionKeySpec::tenant(),
            types: BTreeMap::new(),
        }
    }
}

/// `[partition_key]` as written: every key optional, so that what is absent
/// takes its default instead of [`PartitionKeySpec`]'s own (`$id`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionKeyToml {
    fields: Option<OneOrMany>,
    fallback: Option<floe_engine::KeyField>,
    strict: Option<bool>,
    #[serde(default)]
    types: BTreeMap<String, SpecToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecToml {
    fields: Option<OneOrMany>,
    fallback: Option<floe_engine::KeyField>,
    strict: Option<bool>,
}

/// `fields = "a"` or `fields = ["a", "b"]` (an untagged enum would lose the
/// key field's own error, such as an unknown `$` name).
struct OneOrMany(Vec<floe_engine::KeyField>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key field or a list of key fields")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<OneOrMany, E> {
                Ok(OneOrMany(vec![s.parse().map_err(E::custom)?]))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<OneOrMany, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = seq.next_element()? {
                    fields.push(field);
                }
                Ok(OneOrMany(fields))
            }
        }
        d.deserialize_any(Fields)
    }
}

impl SpecToml {
    /// `base` with the keys this table names replaced.
    fn over(self, base: &PartitionKeySpec) -> std::result::Result<PartitionKeySpec, String> {
        let mut spec = base.clone();
        if let Some(OneOrMany(fields)) = self.fields {
            spec.fields = fields;
        }
        if let Some(fallback) = self.fallback {
            spec.fallback = Some(fallback);
        }
        if let Some(strict) = self.strict {
            spec.strict = strict;
        }
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }
}

impl TryFrom<PartitionKeyToml> for PartitionKeyConfig {
    type Error = String;

    fn try_from(toml: PartitionKeyToml) -> std::result::Result<Self, String> {
        let default = SpecToml {
            fields: toml.fields,
            fallback: toml.fallback,
            strict: toml.strict,
        }
        .over(&PartitionKeyConfig::default().default)
        .map_err(|e| format!("partition_key: {e}"))?;
        let types = toml
            .types
            .into_iter()
            .map(|(name, spec)| {
                let spec = spec
                    .over(&default)
                    .map_err(|e| format!("partition_key.types.{name}: {e}"))?;
                Ok((name, spec))
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(PartitionKeyConfig { default, types })
    }
}

impl PartitionKeyConfig {
    /// The extractor this configuration describes.
    pub fn extractor(&self) -> KeyExtractor {
        let mut extractor = KeyExtractor::new(self.default.clone());
        for (entity_type, spec) in &self.types {
            extractor = extractor.with_type(entity_type, spec.clone());
        }
        extractor
    }
}
