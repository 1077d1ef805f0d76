//! The node side of ownership: which shards this node may acknowledge writes on, now.
//!
//! A shard is acknowledged on only while all of these hold:
//! 1. the node's lease is valid on its own clock (last keepalive sent + TTL - margin);
//! 2. the latest grant this node has seen for the shard names it with that lease;
//! 3. that grant is *active*: every previous owner it lists has released the shard or
//!    lost its lease in etcd (a fact read from etcd, not a guess from clocks).
//!
//! The order of steps makes two owners of one shard impossible: a previous owner first
//! stops serving (locally, under the view's lock), then writes its release; the new owner
//! activates only after reading that release, or after etcd expired the previous lease,
//! which happens no earlier than `TTL` after the previous owner's last keepalive *send*,
//! while the previous owner stopped at `TTL - margin` after it.
//!
//! The view's copy of the grants may lag etcd (a slow watch, etcd down): that can delay
//! a handover, never overlap two owners, because activation needs a release or an
//! expired lease.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;

use crate::ShardId;
use crate::error::{Error, Result};
use crate::grants::{Grant, OwnerEpoch, PreviousOwner, ReleaseValue, grants_of, has_let_go};
use crate::keys::Keys;
use crate::lease::LeaseState;
use crate::membership::{LeaseHandle, Member, timing};
use crate::watch::{self as mirror, Snapshot, TaskGuard, timed};

/// Why this node may not acknowledge a write on a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No grant of the shard names this node (with its current lease).
    #[error("the shard is not granted to this node")]
    NotGranted,
    /// Granted, but a previous owner has neither released it nor lost its lease yet.
    #[error("waiting for the previous owner {node_id:?} to let go")]
    AwaitingHandover {
        /// The previous owner waited for.
        node_id: String,
    },
    /// The node's lease has not been renewed in time: it may be about to expire in etcd.
    #[error("the node's lease is past its safe deadline")]
    LeaseExpiring,
    /// The node's lease is gone from etcd.
    #[error("the node's lease is gone")]
    LeaseLost,
}

/// What a node waits for between stopping a shard and writing its release: until no
/// write of the shard accepted before it stopped can still become durable. The new
/// owner reads the pipeline to its high watermark after the release, so with this
/// barrier it finds every event the old owner ever appended for the shard, not only
/// the acknowledged ones (a write refused as `not_owner` after it became durable is
/// then found by its idempotency key when the caller retries on the new owner).
#[async_trait::async_trait]
pub trait StopBarrier: Send + Sync + 'static {
    /// Returns once the shard's writes in flight are settled (durable or failed).
    async fn stopped(&self, shard: ShardId);
}

/// One shard this node holds a grant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The grant.
    pub grant: Grant,
    /// Whether every previous owner has let go.
    pub active: bool,
}

/// The node's view of its shard ownership, kept current by a background task.
#[derive(Debug, Clone)]
pub struct OwnershipLease {
    lease: LeaseHandle,
    state: Arc<watch::Sender<BTreeMap<ShardId, Held>>>,
    grants: Arc<watch::Sender<BTreeMap<ShardId, Grant>>>,
    unreleased: Arc<std::sync::atomic::AtomicBool>,
    _task: Arc<TaskGuard>,
}

impl OwnershipLease {
    /// Starts following the grants of `member`.
    pub fn start(member: &Member) -> OwnershipLease {
        Self::start_with(member, None)
    }

    /// [`OwnershipLease::start`] with a [`StopBarrier`] waited on (at most the safety
    /// margin: by then every append started under the lease has completed or failed)
    /// before each release is written.
    pub fn start_with(member: &Member, barrier: Option<Arc<dyn StopBarrier>>) -> OwnershipLease {
        let config = member.config();
        let keys = config.keys();
        let (grants, grants_task) =
            mirror::spawn(member.client().clone(), keys.shards(), true, timing(config));
        // The release records, so that a new owner hears a release at once instead of
        // at its next poll.
        let (releases, releases_task) = mirror::spawn(
            member.client().clone(),
            keys.releases(),
            true,
            timing(config),
        );
        let state = Arc::new(watch::channel(BTreeMap::new()).0);
        let all_grants = Arc::new(watch::channel(BTreeMap::new()).0);
        let unreleased = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let follower = Follower {
            unreleased: unreleased.clone(),
            grants: all_grants.clone(),
            client: member.client().clone(),
            keys,
            node_id: member.record().node_id.clone(),
            lease: member.lease().clone(),
            timeout: config.etcd_timeout(),
            poll: config.handover_poll(),
            state: state.clone(),
            released: BTreeSet::new(),
            releases,
            barrier,
            margin: config.safety_margin(),
        };
        let task = tokio::spawn(async move {
            // The mirrors live exactly as long as the follower.
            let (_grants_task, _releases_task) = (grants_task, releases_task);
            follower.run(grants).await;
        });
        OwnershipLease {
            lease: member.lease().clone(),
            state,
            grants: all_grants,
            unreleased,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// May this node acknowledge a write on `shard` now? `Ok` carries the owner epoch to
    /// stamp on the event. Ask after the write is durable and right before acknowledging.
    pub fn may_acknowledge(&self, shard: ShardId) -> Result<OwnerEpoch> {
        let refuse = |reason| Err(Error::NotOwner { shard, reason });
        match self.lease.state() {
            LeaseState::Valid { .. } => {}
            LeaseState::Expiring => return refuse(Refusal::LeaseExpiring),
            LeaseState::Lost => return refuse(Refusal::LeaseLost),
        }
        let state = self.state.borrow();
        match state.get(&shard) {
            Some(held) if held.active => Ok(held.grant.epoch),
            Some(held) => refuse(Refusal::AwaitingHandover {
                node_id: held
                    .grant
                    .previous
                    .first()
                    .map_or_else(String::new, |p| p.node_id.clone()),
            }),
            None => refuse(Refusal::NotGranted),
        }
    }

    /// Whether a later grant lists this node as a previous owner it has not written the
    /// release for yet (as of the last time the grants were followed).
    pub fn releases_pending(&self) -> bool {
        self.unreleased.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The shards this node holds grants for (active or waiting for a handover).
    pub fn held(&self) -> BTreeMap<ShardId, Held> {
        self.state.borrow().clone()
    }

    /// The latest grant of `shard` this node has seen (whoever it names): where
    /// a caller refused here should go.
    pub fn grant_of(&self, shard: ShardId) -> Option<Grant> {
        self.grants.borrow().get(&shard).cloned()
    }

    /// Every grant as last seen.
    pub fn grants(&self) -> BTreeMap<ShardId, Grant> {
        self.grants.borrow().clone()
    }

    /// A receiver that changes whenever the held shards change.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<ShardId, Held>> {
        self.state.subscribe()
    }

    /// Waits until `pred` holds for the held shards, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&BTreeMap<ShardId, Held>) -> bool,
    ) -> Option<BTreeMap<ShardId, Held>> {
        let mut rx = self.state.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| pred(s)))
            .await
            .ok()?
            .ok()
            .map(|s| s.clone())
    }
}

struct Follower {
    grants: Arc<watch::Sender<BTreeMap<ShardId, Grant>>>,
    client: Client,
    keys: Keys,
    node_id: String,
    lease: LeaseHandle,
    timeout: Duration,
    poll: Duration,
    state: Arc<watch::Sender<BTreeMap<ShardId, Held>>>,
    /// (shard, epoch) this node has written a release for.
    released: BTreeSet<(ShardId, OwnerEpoch)>,
    /// Every release record, mirrored.
    releases: watch::Receiver<Snapshot>,
    barrier: Option<Arc<dyn StopBarrier>>,
    margin: Duration,
    unreleased: Arc<std::sync::atomic::AtomicBool>,
}

impl Follower {
    async fn run(mut self, mut grants: watch::Receiver<Snapshot>) {
        loop {
            if self.lease.state() == LeaseState::Lost {
                // Nothing bound to a lost lease is ours any more.
                self.state.send_replace(BTreeMap::new());
                return;
            }
            let snapshot = grants.borrow_and_update().clone();
            if snapshot.revision > 0 {
                let all = grants_of(&self.keys, &snapshot);
                self.follow(&all).await;
                self.grants.send_replace(all);
            }
            let waiting = self.state.borrow().values().any(|h| !h.active);
            tokio::select! {
                changed = grants.changed() => if changed.is_err() { return },
                _ = self.releases.changed(), if waiting => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    fn is_me(&self, node_id: &str, lease_id: i64) -> bool {
        node_id == self.node_id && lease_id == self.lease.lease_id()
    }

    async fn follow(&mut self, all: &BTreeMap<ShardId, Grant>) {
        // First: a drain waiting for "nothing held" must not see the shards step 1
        // drops as settled before their releases are written.
        self.note_unreleased(all);

        // 1. Stop serving every shard whose latest grant is no longer ours at the epoch
        //    held, and take new grants as waiting. This happens before any release below
        //    is written.
        self.state.send_if_modified(|held| {
            let before = held.clone();
            held.retain(|shard, h| all.get(shard).is_some_and(|g| g.epoch == h.grant.epoch));
            for (shard, g) in all {
                if self.is_me(&g.node_id, g.lease_id) && !held.contains_key(shard) {
                    held.insert(
                        *shard,
                        Held {
                            grant: g.clone(),
                            active: false,
                        },
                    );
                }
            }
            *held != before
        });

        // 2. Release every epoch of ours that a later grant lists as a previous owner.
        for (shard, g) in all {
            for p in &g.previous {
                if self.is_me(&p.node_id, p.lease_id) && !self.released.contains(&(*shard, p.epoch))
                {
                    // Step 1 stopped new batches; wait for the one in flight.
                    if let Some(barrier) = &self.barrier
                        && tokio::time::timeout(self.margin, barrier.stopped(*shard))
                            .await
                            .is_err()
                    {
                        tracing::warn!(
                            shard,
                            "the shard's writes in flight did not settle within the safety margin; releasing anyway"
                        );
                    }
                    match self.release(*shard, p).await {
                        Ok(()) => {
                            self.released.insert((*shard, p.epoch));
                        }
                        Err(e) => tracing::debug!(shard, error = %e, "writing a release failed"),
                    }
                }
            }
        }

        self.note_unreleased(all);

        // 3. Activate waiting grants whose previous owners have all let go.
        let waiting: Vec<Grant> = self
            .state
            .borrow()
            .values()
            .filter(|h| !h.active)
            .map(|h| h.grant.clone())
            .collect();
        for g in waiting {
            match self.previous_let_go(&g).await {
                Ok(true) => {
                    self.state
                        .send_if_modified(|held| match held.get_mut(&g.shard) {
                            Some(h) if h.grant.epoch == g.epoch => {
                                h.active = true;
                                tracing::info!(shard = g.shard, epoch = %g.epoch, "serving shard");
                                true
                            }
                            _ => false,
                        });
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(shard = g.shard, error = %e, "handover check failed"),
            }
        }
    }

    async fn previous_let_go(&mut self, g: &Grant) -> Result<bool> {
        for p in &g.previous {
            // An earlier epoch of our own: step 1 already replaced it in the view.
            if self.is_me(&p.node_id, p.lease_id) {
                continue;
            }
            if self.released_in_mirror(g.shard, p) {
                continue;
            }
            if !has_let_go(&mut self.client, &self.keys, g.shard, p, self.timeout).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Publishes whether a grant lists this node as a previous owner it has not
    /// released yet.
    fn note_unreleased(&self, all: &BTreeMap<ShardId, Grant>) {
        let unreleased = all.iter().any(|(shard, g)| {
            g.previous.iter().any(|p| {
                self.is_me(&p.node_id, p.lease_id) && !self.released.contains(&(*shard, p.epoch))
            })
        });
        self.unreleased
            .store(unreleased, std::sync::atomic::Ordering::Release);
    }

    /// Whether the mirrored release records show `p` released `shard`.
    fn released_in_mirror(&self, shard: ShardId, p: &PreviousOwner) -> bool {
        let key = self.keys.released(shard, p.epoch);
        self.releases
            .borrow()
            .entries
            .get(&key)
            .and_then(|e| serde_json::from_slice::<ReleaseValue>(&e.value).ok())
            .is_some_and(|r| r.node_id == p.node_id && r.lease_id == p.lease_id)
    }

    async fn release(&mut self, shard: ShardId, epoch_of: &PreviousOwner) -> Result<()> {
        let value = serde_json::to_vec(&ReleaseValue {
            node_id: self.node_id.clone(),
            lease_id: self.lease.lease_id(),
        })
        .expect("a release serializes");
        let key = self.keys.released(shard, epoch_of.epoch);
        timed(
            "write release",
            self.timeout,
            self.client.put(key, value, None),
        )
        .await?;
        tracing::info!(shard, epoch = %epoch_of.epoch, "released shard");
        Ok(())
    }
}
