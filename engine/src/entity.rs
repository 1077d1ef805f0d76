use crate::json::Json;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::EntityKeyDisplay;

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
