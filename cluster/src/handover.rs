//! Planned handover of a shard between two live nodes (a node joins, a node is
//! drained): the pure rules, no I/O.
//!
//! A failover has no choice: the old owner is gone, so the new one restores after its
//! lease expired. A planned move can do better, because the old owner still serves:
//!
//! ```text
//! controller              new owner B                          old owner A
//! intent handover/S ----> Warming: restore S from the lake
//!                         and the pipeline tail (A serves)
//!                         Warm: caught up; ready/S/<e> -------> (nothing)
//! grant S to B, listing A  Granted: keeps tailing              stops acknowledging S,
//!                                                              waits for its in-flight append,
//!                         <------------------------------------ writes released/S/<e>
//!                         CatchingUp: reads the rest of the tail
//!                         to the high watermark read now
//!                         Serving
//! ```
//!
//! The write pause on S is only "A stops" to "B caught up": a few etcd round trips and
//! the events A acknowledged since B's last catch-up, instead of a whole restore. The
//! fencing rules are the same as for any grant (`ownership`): B serves only once A
//! released S (or A's lease is gone) and after reading the pipeline to the high
//! watermark read after that, so it holds every event A acknowledged.
//!
//! [`HandoverStage`] is the new owner's side, [`move_step`] the controller's decision
//! for one shard, [`placeable`] the nodes placement may use while some drain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ShardId;
use crate::grants::{Grant, OwnerEpoch};
use crate::membership::NodeRecord;

/// The leader's request that `to` warm shard `shard` up, to take it over from the grant
/// at `from_epoch` (`<root>/handover/<shard>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverIntent {
    /// The shard.
    #[serde(skip)]
    pub shard: ShardId,
    /// The epoch of the grant being replaced (the old owner's).
    pub from_epoch: OwnerEpoch,
    /// The old owner.
    pub from_node: String,
    /// The new owner.
    pub to_node: String,
    /// The new owner's lease: an intent for an earlier incarnation of the node is void.
    pub to_lease: i64,
}

impl HandoverIntent {
    /// Whether this intent asks node `node_id` (with lease `lease_id`) to take the shard
    /// over from the grant `from`.
    pub fn is_for(&self, node_id: &str, lease_id: i64, from: OwnerEpoch) -> bool {
        self.to_node == node_id && self.to_lease == lease_id && self.from_epoch == from
    }
}

/// The new owner's "warm and caught up" record (`<root>/ready/<shard>/<from_epoch>`,
/// attached to its lease so it dies with the node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyRecord {
    /// The node that is warm.
    pub node_id: String,
    /// Its lease.
    pub lease_id: i64,
}

/// Where the new owner of a planned move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverStage {
    /// Restoring the shard from the lake and the pipeline while the old owner serves.
    Warming,
    /// Caught up with the pipeline at least once (the ready record may be written);
    /// keeps following the tail.
    Warm,
    /// The grant names this node; the old owner has not let go yet. `warm`: whether the
    /// warm-up had finished (a grant may come unwarmed after the handover timeout).
    Granted {
        /// The grant's epoch.
        epoch: OwnerEpoch,
        /// Whether a warm state exists.
        warm: bool,
    },
    /// The old owner let go: reading the rest of the tail (everything, if not warm).
    CatchingUp {
        /// The grant's epoch.
        epoch: OwnerEpoch,
        /// Whether only the rest of the tail is read.
        warm: bool,
    },
    /// Restored: the shard serves under `epoch`.
    Serving {
        /// The grant's epoch.
        epoch: OwnerEpoch,
    },
    /// The intent was withdrawn (placement changed its mind) or the shard went to
    /// another node: the warm state is dropped.
    Abandoned,
}

/// What happens to a handover, from the new owner's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverEvent {
    /// The warm-up reached the pipeline's high watermark.
    WarmedUp,
    /// Reading the lake or the pipeline failed (warming starts over).
    Failed,
    /// A grant of the shard to this node at this epoch was seen.
    Granted(OwnerEpoch),
    /// Every previous owner let go of the shard (the grant is active).
    LetGo,
    /// The tail is read to the high watermark read after [`HandoverEvent::LetGo`].
    CaughtUp,
    /// The intent is gone without a grant to this node, or the shard was granted to
    /// another node.
    Withdrawn,
}

/// A transition the handover protocol does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("handover: {event:?} cannot happen in stage {stage:?}")]
pub struct InvalidTransition {
    /// The stage.
    pub stage: HandoverStage,
    /// The event.
    pub event: HandoverEvent,
}

impl HandoverStage {
    /// The stage after `event`.
    ///
    /// The rules that matter for safety: nothing leads to `Serving` except `CaughtUp`
    /// from `CatchingUp`, which only `LetGo` from `Granted` reaches, so a shard is never
    /// served before its previous owner let go and the tail was read after that.
    pub fn on(self, event: HandoverEvent) -> Result<HandoverStage, InvalidTransition> {
        use HandoverEvent as E;
        use HandoverStage as S;
        let next = match (self, event) {
            (S::Warming, E::WarmedUp) | (S::Warm, E::WarmedUp) => S::Warm,
            (S::Warming, E::Failed) | (S::Warm, E::Failed) => S::Warming,
            (S::Warming, E::Granted(epoch)) => S::Granted { epoch, warm: false },
            (S::Warm, E::Granted(epoch)) => S::Granted { epoch, warm: true },
            // A later grant to this node (the controller re-granted under a new lease
            // check or a new leader): the same handover under the newer epoch.
            (S::Granted { warm, .. }, E::Granted(epoch)) => S::Granted { epoch, warm },
            // A grant that came before the warm-up finished may still finish it.
            (S::Granted { epoch, .. }, E::WarmedUp) => S::Granted { epoch, warm: true },
            (S::Granted { epoch, .. }, E::Failed) => S::Granted { epoch, warm: false },
            (S::Granted { epoch, warm }, E::LetGo) => S::CatchingUp { epoch, warm },
            // A failed catch-up reads everything again.
            (S::CatchingUp { epoch, .. }, E::Failed) => S::CatchingUp { epoch, warm: false },
            (S::CatchingUp { epoch, .. }, E::CaughtUp) => S::Serving { epoch },
            (S::Serving { .. }, E::Withdrawn) => S::Abandoned,
            (S::Abandoned, _) => S::Abandoned,
            (_, E::Withdrawn) => S::Abandoned,
            (stage, event) => return Err(InvalidTransition { stage, event }),
        };
        Ok(next)
    }

    /// Whether a warm state is worth keeping (it is read on, and used at cutover).
    pub fn keeps_warm_state(&self) -> bool {
        matches!(
            self,
            HandoverStage::Warm | HandoverStage::Granted { warm: true, .. }
        )
    }
}

/// What the controller does about one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveStep {
    /// The shard stays with its owner (a pending intent for it is withdrawn).
    Stay,
    /// Grant at once: there is no live owner to hand over from (never granted, the
    /// owner's lease is gone, or the owner restarted under a new lease).
    GrantCold,
    /// Ask the target to warm up: write (or replace) the shard's intent.
    Propose,
    /// The target is warming up: nothing to do yet.
    Wait,
    /// The target is warm: grant it; the old owner stops and releases.
    Cutover,
    /// The target did not warm up within the handover timeout: grant it anyway (it
    /// restores after the old owner released).
    CutoverUnwarmed,
}

/// The controller's decision for a shard whose grant is `grant` and whose place is
/// `target`. `owner_lease`: the lease the grant's node is registered with now, if live;
/// `intent`, `ready`: the shard's handover intent and the ready record for the current
/// grant's epoch; `waited`: how long this controller has seen the current intent.
pub fn move_step(
    grant: Option<&Grant>,
    target: &NodeRecord,
    owner_lease: Option<i64>,
    intent: Option<&HandoverIntent>,
    ready: Option<&ReadyRecord>,
    waited: Duration,
    timeout: Duration,
) -> MoveStep {
    let Some(grant) = grant else {
        return MoveStep::GrantCold;
    };
    if grant.node_id == target.node_id && grant.lease_id == target.lease_id {
        return MoveStep::Stay;
    }
    // The owner is gone, or it is the target under a new lease (it restarted): nobody
    // serves the shard, so waiting for a warm-up would only lengthen the outage.
    if owner_lease != Some(grant.lease_id) || grant.node_id == target.node_id {
        return MoveStep::GrantCold;
    }
    let current = intent.filter(|i| i.is_for(&target.node_id, target.lease_id, grant.epoch));
    match current {
        None => MoveStep::Propose,
        Some(_)
            if ready
                .is_some_and(|r| r.node_id == target.node_id && r.lease_id == target.lease_id) =>
        {
            MoveStep::Cutover
        }
        Some(_) if waited >= timeout => MoveStep::CutoverUnwarmed,
        Some(_) => MoveStep::Wait,
    }
}

/// The nodes placement may put shards on: the live nodes that are not draining, or,
/// when every live node drains, all of them (a shard always has somewhere to be).
pub fn placeable(
    live: &BTreeMap<String, NodeRecord>,
    draining: &BTreeSet<String>,
) -> BTreeSet<String> {
    let open: BTreeSet<String> = live
        .keys()
        .filter(|n| !draining.contains(*n))
        .cloned()
        .collect();
    if open.is_empty() {
        live.keys().cloned().collect()
    } else {
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::PreviousOwner;

    const E: OwnerEpoch = OwnerEpoch(10);

    fn node(id: &str, lease: i64) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            advertised_addr: format!("{id}:1"),
            lease_id: lease,
            registered_revision: 1,
        }
    }

    fn grant(owner: &str, lease: i64) -> Grant {
        Grant {
            shard: 3,
            node_id: owner.into(),
            lease_id: lease,
            epoch: E,
            previous: Vec::<PreviousOwner>::new(),
        }
    }

    fn intent(to: &str, lease: i64, from: OwnerEpoch) -> HandoverIntent {
        HandoverIntent {
            shard: 3,
            from_epoch: from,
            from_node: "a".into(),
            to_node: to.into(),
            to_lease: lease,
        }
    }

    fn ready(id: &str, lease: i64) -> ReadyRecord {
        ReadyRecord {
            node_id: id.into(),
            lease_id: lease,
        }
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn the_new_owner_serves_only_after_the_old_one_let_go_and_the_tail_is_read() {
        use HandoverEvent as Ev;
        use HandoverStage as S;
        let mut stage = S::Warming;
        for (event, expected) in [
            (Ev::WarmedUp, S::Warm),
            (Ev::WarmedUp, S::Warm),
            (
                Ev::Granted(E),
                S::Granted {
                    epoch: E,
                    warm: true,
                },
            ),
            (
                Ev::LetGo,
                S::CatchingUp {
                    epoch: E,
                    warm: true,
                },
            ),
            (Ev::CaughtUp, S::Serving { epoch: E }),
        ] {
            stage = stage.on(event).unwrap();
            assert_eq!(stage, expected);
        }
        // No shortcut to serving: not from warm, not from granted, not before the tail.
        for stage in [
            S::Warming,
            S::Warm,
            S::Granted {
                epoch: E,
                warm: true,
            },
        ] {
            let err = stage.on(Ev::CaughtUp).unwrap_err();
            assert_eq!(err.stage, stage);
        }
        assert!(S::Warm.on(Ev::LetGo).is_err());
        assert!(S::Warming.on(Ev::LetGo).is_err());
        assert!(S::Serving { epoch: E }.on(Ev::LetGo).is_err());
    }

    #[test]
    fn unwarmed_grants_and_failures_fall_back_to_a_full_read() {
        use HandoverEvent as Ev;
        use HandoverStage as S;
        let granted = S::Warming.on(Ev::Granted(E)).unwrap();
        assert_eq!(
            granted,
            S::Granted {
                epoch: E,
                warm: false
            }
        );
        assert!(!granted.keeps_warm_state());
        // The warm-up may still finish before the old owner lets go.
        let warm = granted.on(Ev::WarmedUp).unwrap();
        assert_eq!(
            warm,
            S::Granted {
                epoch: E,
                warm: true
            }
        );
        assert!(warm.keeps_warm_state());
        assert_eq!(
            warm.on(Ev::Failed).unwrap(),
            S::Granted {
                epoch: E,
                warm: false
            }
        );
        let catching = warm.on(Ev::LetGo).unwrap();
        assert_eq!(
            catching.on(Ev::Failed).unwrap(),
            S::CatchingUp {
                epoch: E,
                warm: false
            }
        );
        assert_eq!(S::Warm.on(Ev::Failed).unwrap(), S::Warming);
        // A newer grant to the same node keeps the warm state.
        assert_eq!(
            warm.on(Ev::Granted(OwnerEpoch(12))).unwrap(),
            S::Granted {
                epoch: OwnerEpoch(12),
                warm: true
            }
        );
    }

    #[test]
    fn a_withdrawn_intent_abandons_the_warm_state_for_good() {
        use HandoverEvent as Ev;
        use HandoverStage as S;
        for stage in [
            S::Warming,
            S::Warm,
            S::Granted {
                epoch: E,
                warm: true,
            },
            S::CatchingUp {
                epoch: E,
                warm: true,
            },
            S::Serving { epoch: E },
        ] {
            assert_eq!(stage.on(Ev::Withdrawn).unwrap(), S::Abandoned);
        }
        assert_eq!(S::Abandoned.on(Ev::Granted(E)).unwrap(), S::Abandoned);
        assert!(!S::Abandoned.keeps_warm_state());
    }

    #[test]
    fn a_live_owner_hands_over_only_once_the_target_is_warm() {
        let b = node("b", 2);
        let g = grant("a", 1);
        let step = |intent: Option<&HandoverIntent>, ready: Option<&ReadyRecord>, waited| {
            move_step(Some(&g), &b, Some(1), intent, ready, waited, T)
        };
        assert_eq!(step(None, None, Duration::ZERO), MoveStep::Propose);
        let current = intent("b", 2, E);
        assert_eq!(step(Some(&current), None, Duration::ZERO), MoveStep::Wait);
        assert_eq!(
            step(Some(&current), Some(&ready("b", 2)), Duration::ZERO),
            MoveStep::Cutover
        );
        // A ready record of another node, or of the target's earlier lease, is not it.
        assert_eq!(
            step(Some(&current), Some(&ready("c", 2)), Duration::ZERO),
            MoveStep::Wait
        );
        assert_eq!(
            step(Some(&current), Some(&ready("b", 1)), Duration::ZERO),
            MoveStep::Wait
        );
        assert_eq!(step(Some(&current), None, T), MoveStep::CutoverUnwarmed);
        // An intent for another target, another lease or an older grant is replaced.
        for stale in [
            intent("c", 3, E),
            intent("b", 1, E),
            intent("b", 2, OwnerEpoch(9)),
        ] {
            assert_eq!(
                step(Some(&stale), Some(&ready("b", 2)), T),
                MoveStep::Propose
            );
        }
    }

    #[test]
    fn without_a_live_owner_the_grant_is_immediate() {
        let b = node("b", 2);
        let g = grant("a", 1);
        let current = intent("b", 2, E);
        assert_eq!(
            move_step(None, &b, None, None, None, Duration::ZERO, T),
            MoveStep::GrantCold
        );
        // The owner's lease is gone, or it is registered under another one.
        for lease in [None, Some(7)] {
            assert_eq!(
                move_step(Some(&g), &b, lease, Some(&current), None, Duration::ZERO, T),
                MoveStep::GrantCold
            );
        }
        // The owner restarted: its new incarnation gets the shard back at once.
        let a2 = node("a", 5);
        assert_eq!(
            move_step(Some(&g), &a2, Some(5), None, None, Duration::ZERO, T),
            MoveStep::GrantCold
        );
        assert_eq!(
            move_step(Some(&g), &node("a", 1), Some(1), Some(&current), None, T, T),
            MoveStep::Stay
        );
    }

    #[test]
    fn draining_nodes_get_nothing_unless_every_node_drains() {
        let live: BTreeMap<String, NodeRecord> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), node(n, i as i64)))
            .collect();
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(placeable(&live, &set(&[])), set(&["a", "b", "c"]));
        assert_eq!(placeable(&live, &set(&["b", "zz"])), set(&["a", "c"]));
        assert_eq!(
            placeable(&live, &set(&["a", "b", "c"])),
            set(&["a", "b", "c"])
        );
    }
}
