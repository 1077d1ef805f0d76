//! Checks of what callers hand to a write, before anything is routed.

use floe_engine::EntityKey;

pub(super) fn display(key: &EntityKey) -> floe_engine::EntityKeyDisplay {
    floe_engine::EntityKeyDisplay(key.to_string())
}
