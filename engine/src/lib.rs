//! floe's core: the entity and event model, partition keys, routing, topology,
//! the shard cluster (routing table, shard handles, workers) and the
//! [`Pipeline`] trait that backends implement.
//!
//! The logic here is pure and synchronous where it can be (routing, key
//! extraction, `apply`), so that the live path, recovery and migration replay
//! share it; the shard workers are the only tasks, and they talk to the
//! outside world through [`Pipeline`] alone.
#![deny(missing_docs)]

mod assigner;
mod cluster;
mod codec;
mod command;
mod dedup;
mod digest;
mod entity;
mod error;
mod event;
mod idempotency;
mod json;
mod keyindex;
mod limits;
mod pipeline;
mod routing;
mod slots;
mod snapshot;
mod state;
mod topology;
mod topology_store;
mod worker;

pub use assigner::{
    AccessKind, HintKind, KeyExtractor, KeyField, KeyFn, PartitionKeySpec, Priority, RebalanceHint,
    ShardAccess, ShardLimits, ShardTotals, ShardUtilization,
};
pub use cluster::{
    Admission, AdmissionGuard, Admit, DEFAULT_SKEW_RATIO, KeyLoad, MAX_REROUTES, MovingDigests,
    NextRouting, OwnerRefusal, OwnershipGate, RecoveredShard, Routed, RoutingTable, Shard,
    ShardCluster,
};
pub use codec::{decode_event, encode_event, encoded_len, is_truncated_event};
pub use command::{Command, MAX_IDEMPOTENCY_KEY_BYTES, Operation, WriteAck, merge_patch};
pub use dedup::DedupWindow;
pub use digest::{
    DigestComparison, DigestSummary, EntityDigest, compare_digests, digest_state, summarize_state,
};
pub use entity::{Entity, EntityKey};
pub use error::{EntityKeyDisplay, Error, Result};
pub use event::{Event, EventKind, now_us};
pub use idempotency::IdempotencyIndex;
pub use json::Json;
pub use keyindex::{ClaimRefused, PartitionKeyIndex};
pub use limits::{JsonLimits, JsonRole, MAX_JSON_DEPTH_CEILING, depth_exceeds};
pub use pipeline::{Offset, Pipeline, Record, partition_for};
pub use routing::{
    ArchivedPeriod, HashFunction, KeyTransform, Period, PeriodState, RangeBound, RangeKey,
    RangeRule, RoutedBy, Router, RoutingMetrics, RoutingMetricsSnapshot, ShardInfo, Strategy,
    TimeMiss, cmp_labels, measure_route_ns, parse_instant, parse_offset, shard_name,
};
pub use snapshot::{
    SnapshotHeader, VerifiedSnapshot, decode_snapshot, encode_snapshot, verify_snapshot,
};
pub use state::{EntityRecord, PendingChanges, PrepareLimits, ShardState};
pub use topology::{MAX_SHARDS, Topology};
pub use topology_store::TopologyStore;
pub use worker::{ShardConfig, ShardStats};
