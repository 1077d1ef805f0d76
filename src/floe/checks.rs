//! Checks of what callers hand to a write, before anything is routed.

use floe_engine::{EntityKey, Json};
use serde_json::Value;

use crate::error::Result;

pub(super) fn display(key: &EntityKey) -> floe_engine::EntityKeyDisplay {
    floe_engine::EntityKeyDisplay(key.to_string())
}

pub(super) fn to_json(key: &EntityKey, value: &Value, limit: usize) -> Result<Json> {
    let json = Json::from_value(value).map_err(|e| floe_engine::Error::InvalidEntity {
        entity: display(key),
        reason: e.to_string(),
    })?;
    check_size(key, &json, limit)?;
    Ok(json)
}

pub(super) fn check_size(key: &EntityKey, json: &Json, limit: usize) -> Result<()> {
    if json.len() > limit {
        return Err(floe_engine::Error::PayloadTooLarge {
            entity: display(key),
            size: json.len(),
            limit,
        }
        .into());
    }
    Ok(())
}
