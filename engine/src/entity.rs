use crate::json::Json;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{EntityKeyDisplay, Error, Result};

/// Identifies one entity: a namespace (usually the tenant), a type and an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityKey {
    /// Namespace, usually the tenant.
    pub namespace: String,
    /// Entity type, e.g. `Order`.
    pub entity_type: String,
    /// Id, unique within namespace and type.
    pub id: String,
}

impl EntityKey {
    /// Longest namespace, type or id accepted, in bytes.
    pub const MAX_PART_BYTES: usize = 512;

    /// A key from its three parts.
    pub fn new(
        namespace: impl Into<String>,
        entity_type: impl Into<String>,
        id: impl Into<String>,
    ) -> Self {
        EntityKey {
            namespace: namespace.into(),
            entity_type: entity_type.into(),
            id: id.into(),
        }
    }

    #[allow(dead_code, reason = "used by the shard state on main")]
    pub(crate) fn display(&self) -> EntityKeyDisplay {
        EntityKeyDisplay(self.to_string())
    }

    /// Checks that every part is a usable name: not empty, at most
    /// [`EntityKey::MAX_PART_BYTES`] bytes, no control characters. A
    /// [`ShardHandle`](crate::ShardHandle) refuses a write of a key that
    /// fails this (with [`Error::InvalidEntity`]), so the library, the CLI
    /// and the HTTP API refuse the same keys.
    pub fn validate(&self) -> Result<()> {
        for (what, value) in [
            ("namespace", &self.namespace),
            ("type", &self.entity_type),
            ("id", &self.id),
        ] {
            let reason = if value.is_empty() {
                format!("{what} must not be empty")
            } else if value.len() > Self::MAX_PART_BYTES {
                format!(
                    "{what} is {} bytes, more than {}",
                    value.len(),
                    Self::MAX_PART_BYTES
                )
            } else if value.chars().any(char::is_control) {
                format!("{what} contains a control character")
            } else {
                continue;
            };
            return Err(Error::InvalidEntity {
                entity: self.display(),
                reason,
            });
        }
        Ok(())
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.entity_type, self.id)
    }
}

/// A live entity as a reader sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Namespace, type and id.
    #[serde(flatten)]
    pub key: EntityKey,
    /// Version after the last change; the first version is 1.
    pub version: u64,
    /// The entity's data, a JSON object.
    pub data: Json,
    /// Timestamp of the last change, microseconds since the Unix epoch.
    pub updated_at_us: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_empty_long_and_control_parts() {
        let long = "x".repeat(EntityKey::MAX_PART_BYTES + 1);
        let cases = [
            (
                EntityKey::new("", "Order", "o-1"),
                "namespace must not be empty",
            ),
            (EntityKey::new("acme", "", "o-1"), "type must not be empty"),
            (EntityKey::new("acme", "Order", ""), "id must not be empty"),
            (
                EntityKey::new("acme", "Order", long.as_str()),
                "id is 513 bytes, more than 512",
            ),
            (
                EntityKey::new("ac\nme", "Order", "o-1"),
                "namespace contains a control character",
            ),
            (
                EntityKey::new("acme", "Order", "o\u{7f}"),
                "id contains a control character",
            ),
        ];
        for (key, reason) in cases {
            match key.validate() {
                Err(Error::InvalidEntity { reason: got, .. }) => assert_eq!(got, reason),
                other => panic!("{key:?}: {other:?}"),
            }
        }
        let longest = "y".repeat(EntityKey::MAX_PART_BYTES);
        for ok in [
            EntityKey::new("acme", "Order", "o-1"),
            EntityKey::new("a c/m%e", "Ördér", "🦀 @1"),
            EntityKey::new(longest.as_str(), "T", "1"),
        ] {
            ok.validate().unwrap();
        }
    }
}
