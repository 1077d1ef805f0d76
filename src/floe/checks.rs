//! Checks of what callers hand to a write, before anything is routed.

use floe_engine::EntityKey;

use crate::error::Result;

/// Longest namespace, type or id accepted, in bytes.
const MAX_NAME_BYTES: usize = 512;

pub(super) fn display(key: &EntityKey) -> floe_engine::EntityKeyDisplay {
    floe_engine::EntityKeyDisplay(key.to_string())
}

pub(super) fn check_key(key: &EntityKey) -> Result<()> {
    for (what, value) in [
        ("namespace", &key.namespace),
        ("type", &key.entity_type),
        ("id", &key.id),
    ] {
        let reason = if value.is_empty() {
            format!("{what} must not be empty")
        } else if value.len() > MAX_NAME_BYTES {
            format!(
                "{what} is {} bytes, more than {MAX_NAME_BYTES}",
                value.len()
            )
        } else if value.chars().any(char::is_control) {
            format!("{what} contains a control character")
        } else {
            continue;
        };
        return Err(floe_engine::Error::InvalidEntity {
            entity: display(key),
            reason,
        }
        .into());
    }
    Ok(())
}
