//! floe: an event-sourced sharding engine.
#![deny(missing_docs)]
