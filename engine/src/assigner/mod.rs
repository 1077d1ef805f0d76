//! Shard assignment inputs, apart from routing itself: which partition key an
//! entity has ([`KeyExtractor`]), and how loaded each shard is
//! (the crate's load tracker, read through [`crate::ShardCluster`], with
//! utilization and [`RebalanceHint`]s).
//!
//! Both are pure and synchronous. Extraction is a function of the entity and
//! the configuration; the tracker takes the time as an argument. Routing a
//! key to a shard lives elsewhere; here a shard is its `u32` id.
//!
//! ```
//! use floe_engine::{EntityKey, KeyExtractor, PartitionKeySpec};
//!
//! // Orders live with their customer; everything else by id.
//! let keys = KeyExtractor::new(PartitionKeySpec::id())
//!     .with_type("Order", PartitionKeySpec::parse(&["customer.id"])?.with_strict(true));
//! let order = EntityKey::new("acme", "Order", "o-1");
//! let data = serde_json::json!({"customer": {"id": "c-42"}});
//! assert_eq!(keys.extract(&order, Some(&data))?, "c-42");
//! // A get carries no data: the caller must bring the partition key.
//! assert!(keys.needs_data("Order"));
//! # Ok::<(), floe_engine::Error>(())
//! ```

mod extract;
mod hints;
mod load;
mod spec;

pub use extract::{KeyExtractor, KeyFn};
pub use hints::{HintKind, Priority, RebalanceHint, ShardLimits, ShardUtilization};
pub(crate) use load::LoadTracker;
pub use load::{AccessKind, ShardAccess, ShardTotals};
pub use spec::{KeyField, PartitionKeySpec};
