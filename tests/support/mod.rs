//! What several end-to-end tests share: an oracle of acknowledged writes and
//! the state a reopened `Floe` serves, in the same shape.

use std::collections::BTreeMap;

use floe::{EntityKey, Floe};
use serde_json::Value;

/// Entity -> (version, data) as acknowledged; `Value::Null` marks a delete.
pub(crate) type Oracle = BTreeMap<EntityKey, (u64, Value)>;

/// Every live `t/Thing` entity floe serves.
pub(crate) async fn state_of(floe: &Floe) -> Oracle {
    let mut state = Oracle::new();
    for entity in floe.list("t", "Thing", None, usize::MAX).await.unwrap() {
        state.insert(
            entity.key.clone(),
            (entity.version, entity.data.to_value().unwrap()),
        );
    }
    state
}

/// The oracle without deleted entities.
pub(crate) fn live(oracle: &Oracle) -> Oracle {
    oracle
        .iter()
        .filter(|(_, (_, v))| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
