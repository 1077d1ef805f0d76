//! floe's cluster coordination on etcd.
//!
//! A floe cluster is N `floe` nodes sharing one pipeline and one lake; etcd holds who
//! is a member, who owns which shard, and the topology. This crate is that layer alone,
//! with no knowledge of the engine, so it builds and tests in seconds against a real
//! etcd:
//!
//! - [`ClusterConfig`]: the `[cluster]` configuration, validated before anything runs;
//! - [`Member`]: registration under a lease, kept alive; duplicate node ids and foreign
//!   cluster ids refused; [`NodeWatch`] follows the live nodes;
//! - [`Election`]: the placement controller's election; [`LeaderTerm`] fences its writes;
//! - [`place`]: the pure placement function (balanced, sticky, deterministic);
//! - [`Controller`]: writes ownership [`Grant`]s (compare-and-swap, fenced by the term),
//!   with planned handovers ([`HandoverStage`], [`move_step`]) and drains ([`drain`]);
//! - [`OwnershipLease`]: the node-side answer to "may I acknowledge a write on shard S
//!   now?", with the [`OwnerEpoch`] to stamp on the event;
//! - [`EtcdDocStore`]: the versioned topology document ([`TopologyStore`]);
//! - [`Reshard`]: a shard-count migration across the cluster ([`request_reshard`], the
//!   nodes' [`record_paused`], the leader's [`Controller::step_reshard`]);
//! - [`EpochFence`]: the replay rule that makes a stale owner's late events lose;
//! - [`routing_view`]: the shard map clients route by; [`check_forwarded`] and the
//!   [`ClusterToken`]: the rules of node-to-node forwarding.
//!
//! `docs/cluster.md` in the repository has the design and the fencing argument.
#![deny(missing_docs)]

mod config;
mod controller_loop;
mod docs;
mod drain;
mod election;
mod error;
mod fence;
mod forward;
mod grants;
mod handover;
mod keys;
mod lease;
mod membership;
mod ownership;
mod placement;
mod planned;
mod reshard;
mod routing;
mod status;
#[cfg(feature = "test-util")]
pub mod testing;
mod watch;

/// A shard number, as in the engine's topology (`0..shard_count`).
pub type ShardId = u32;

pub use config::{ClusterConfig, MAX_ID_LEN};
pub use controller_loop::run_controller;
pub use docs::{DocWatch, EtcdDocStore, TopologyStore, Versioned};
pub use drain::{
    DrainStatus, HandoverWatch, drain, drain_and_wait, drain_status, draining_nodes, record_ready,
    undrain,
};
pub use election::{Election, LeaderTerm, current_leader, current_sink};
pub use error::{Error, Result};
pub use fence::{EpochFence, EventStamp, FenceVerdict};
pub use forward::{
    CLUSTER_TOKEN_ENV, CLUSTER_TOKEN_HEADER, ClusterToken, FORWARDED_BY, FORWARDED_TO,
    ForwardRefusal, Forwarded, MIN_TOKEN_LEN, backoff as forward_backoff, check_forwarded,
    is_retry_answer,
};
pub use grants::{Controller, Grant, OwnerEpoch, PreviousOwner, read_grants};
pub use handover::{
    HandoverEvent, HandoverIntent, HandoverStage, InvalidTransition, MoveStep, ReadyRecord,
    move_step, placeable,
};
pub use keys::Keys;
pub use lease::{LeaseClock, LeaseState};
pub use membership::{
    ClusterMeta, LeaseHandle, Member, NodeRecord, NodeWatch, connect, live_nodes,
};
pub use ownership::{Held, OwnershipLease, Refusal, StopBarrier};
pub use placement::{Assignment, moves, place, standbys};
pub use planned::Reconciled;
pub use reshard::{
    RESHARD_DOC, Reshard, ReshardPhase, ReshardStep, TOPOLOGY_DOC, abort_reshard, paused_nodes,
    record_paused, request_reshard, reshard_store,
};
pub use routing::{LeaderWatch, NodeRoute, RouteState, RoutingView, ShardRoute, routing_view};
pub use status::{ClusterStatus, NodeStatus, ShardStatus, status};
pub use watch::{Entry, Snapshot};
