//! Committed offsets, the commit lease that fences a second sink, and the
//! commit of data files together with the offsets they cover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use floe_engine::Offset;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use uuid::Uuid;

use super::catalog::Lake;
use super::fence::CommitFence;
use super::layout::{
    HEARTBEAT_PROPERTY, LEASE_PROPERTY, OFFSETS_PREFIX, OWNER_PROPERTY, PARTITIONS_PROPERTY,
};
use super::pinned;
use crate::error::{Error, Result};

/// Commit attempts for retryable failures before the sink gives up.
const COMMIT_ATTEMPTS: u32 = 5;
/// Commit attempts when the table moved in between (a maintenance commit):
/// each is a reload, a re-check and a commit again.
const CONFLICT_ATTEMPTS: u32 = 20;

/// Whether a failed commit is tried again (after reloading and checking).
fn again(e: &iceberg::Error, attempt: u32) -> bool {
    (e.retryable() && attempt < COMMIT_ATTEMPTS)
        || (pinned::moved(e) && attempt < CONFLICT_ATTEMPTS)
}

/// The pause before attempt `attempt + 1`: `base` doubling, at most 16x.
fn backoff(base_ms: u64, attempt: u32) -> Duration {
    Duration::from_millis(base_ms << attempt.min(4))
}

/// What the lake says has been landed: the next offset to consume per pipeline
/// partition, from the newest snapshot that carries floe's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffsets {
    /// The snapshot whose summary holds these offsets (`None`: nothing landed).
    pub snapshot_id: Option<i64>,
    /// Next offset to consume, indexed by partition.
    pub offsets: Vec<Offset>,
}

impl CommittedOffsets {
    /// Reads the offsets from the table's snapshot history: the newest snapshot
    /// (walking back through parents) whose summary has `floe.partitions`.
    pub fn of(table: &Table, partitions: u32) -> Result<CommittedOffsets> {
        let metadata = table.metadata();
        let mut next = metadata.current_snapshot();
        while let Some(snapshot) = next {
            let summary = &snapshot.summary().additional_properties;
            if let Some(recorded) = summary.get(PARTITIONS_PROPERTY) {
                if recorded.parse::<u32>().ok() != Some(partitions) {
                    return Err(Error::LakeConfig(format!(
                        "floe.events was landed from a pipeline of {recorded} partitions, this one has {partitions}"
                    )));
                }
                let mut offsets = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    let key = format!("{OFFSETS_PREFIX}{p}");
                    let value =
                        summary
                            .get(&key)
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| {
                                Error::Layout(format!(
                                    "snapshot {} has no valid {key} property",
                                    snapshot.snapshot_id()
                                ))
                            })?;
                    offsets.push(value);
                }
                return Ok(CommittedOffsets {
                    snapshot_id: Some(snapshot.snapshot_id()),
                    offsets,
                });
            }
            next = snapshot
                .parent_snapshot_id()
                .and_then(|id| metadata.snapshot_by_id(id));
        }
        Ok(CommittedOffsets {
            snapshot_id: None,
            offsets: vec![0; partitions as usize],
        })
    }

    fn summary(offsets: &[Offset], owner: &str) -> HashMap<String, String> {
        let mut props: HashMap<String, String> = offsets
            .iter()
            .enumerate()
            .map(|(p, o)| (format!("{OFFSETS_PREFIX}{p}"), o.to_string()))
            .collect();
        props.insert(PARTITIONS_PROPERTY.into(), offsets.len().to_string());
        props.insert(OWNER_PROPERTY.into(), owner.to_string());
        props
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The right to commit to `floe.events`: table properties name the owner and
/// when it last renewed. A sink refuses to start while another owner's lease
/// is fresh, and checks it still owns the lease before every commit.
///
/// Every commit is made against the table version the checks read
/// (`pinned`): if anything committed in between, the catalog refuses it and
/// the sink reloads and checks again, so a check can never be stale.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// `<instance>/<uuid>`: where the sink runs, and this run.
    owner: String,
    instance: String,
    ttl: Duration,
    /// An election outside the lake that must still hold before each commit.
    fence: Option<Arc<dyn CommitFence>>,
}

impl Lease {
    /// Takes the lease unless another sink holds a fresh one. With a
    /// `fence` (an elected sink), another owner's lease is taken over: the
    /// election deposed it (see `fence`).
    pub(crate) async fn acquire(
        lake: &Lake,
        instance: &str,
        ttl: Duration,
        fence: Option<Arc<dyn CommitFence>>,
    ) -> Result<Lease> {
        let lease = Lease {
            owner: format!("{instance}/{}", Uuid::new_v4()),
            instance: instance.to_string(),
            ttl,
            fence,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let table = lake.load_table().await?;
            if let Some((owner, age)) = lease.other_fresh_owner(&table) {
                if lease.fence.is_none() {
                    return Err(Error::Fenced {
                        owner,
                        heartbeat_age_ms: age,
                        lease_ms: ttl.as_millis() as u64,
                    });
                }
                tracing::info!(previous = %owner, heartbeat_age_ms = age, "elected sink takes the commit lease over");
            }
            lease.fenced().await?;
            let tx = lease
                .stamp(Transaction::new(&table))
                .map_err(|e| Error::iceberg("preparing the lease commit", e))?;
            match pinned::commit(lake.catalog(), &table, tx).await {
                Ok(_) => break,
                // Something committed in between: look at the table again.
                Err(e) if again(&e, attempt) => {
                    tokio::time::sleep(backoff(20, attempt)).await;
                }
                Err(e) => return Err(Error::iceberg("committing the sink lease", e)),
            }
        }
        // Two sinks that raced here both committed; the later one won. Check.
        lease.check(&lake.load_table().await?)?;
        Ok(lease)
    }

    /// The owner and heartbeat age of a lease held by someone else, if fresh.
    fn other_fresh_owner(&self, table: &Table) -> Option<(String, u64)> {
        let props = table.metadata().properties();
        let owner = props.get(OWNER_PROPERTY)?;
        if owner.split('/').next() == Some(self.instance.as_str()) {
            // This instance's earlier run: gone, or we could not be here.
            return None;
        }
        let heartbeat: u64 = props.get(HEARTBEAT_PROPERTY)?.parse().ok()?;
        let ttl: u64 = props
            .get(LEASE_PROPERTY)
            .and_then(|t| t.parse().ok())
            .unwrap_or(self.ttl.as_millis() as u64);
        let age = now_ms().saturating_sub(heartbeat);
        (age < ttl).then(|| (owner.clone(), age))
    }

    /// Fails with [`Error::Deposed`] if the sink's election says no.
    async fn fenced(&self) -> Result<()> {
        match &self.fence {
            Some(fence) => fence
                .check()
                .await
                .map_err(|reason| Error::Deposed { reason }),
            None => Ok(()),
        }
    }

    /// Fails with [`Error::Fenced`] unless this lease is the table's owner.
    pub(crate) fn check(&self, table: &Table) -> Result<()> {
        let props = table.metadata().properties();
        match props.get(OWNER_PROPERTY) {
            Some(owner) if *owner == self.owner => Ok(()),
            other => Err(Error::Fenced {
                owner: other.cloned().unwrap_or_else(|| "nobody".into()),
                heartbeat_age_ms: props
                    .get(HEARTBEAT_PROPERTY)
                    .and_then(|h| h.parse::<u64>().ok())
                    .map_or(0, |h| now_ms().saturating_sub(h)),
                lease_ms: self.ttl.as_millis() as u64,
            }),
        }
    }

    /// Adds "this sink owns the lease, renewed now" to a transaction.
    fn stamp(&self, tx: Transaction) -> iceberg::Result<Transaction> {
        let action = tx
            .update_table_properties()
            .set(OWNER_PROPERTY.into(), self.owner.clone())
            .set(HEARTBEAT_PROPERTY.into(), now_ms().to_string())
            .set(LEASE_PROPERTY.into(), self.ttl.as_millis().to_string());
        action.apply(tx)
    }

    /// Whether the lease should be renewed, given the last commit's time.
    pub(crate) fn due(&self, last_renewal: std::time::Instant) -> bool {
        last_renewal.elapsed() >= self.ttl / 3
    }

    /// Renews the lease with a properties-only commit (no snapshot).
    /// A conflict (a maintenance commit landed in between) is retried.
    pub(crate) async fn renew(&self, lake: &Lake) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let table = lake.load_table().await?;
            self.check(&table)?;
            self.fenced().await?;
            let tx = self
                .stamp(Transaction::new(&table))
                .map_err(|e| Error::iceberg("preparing the lease renewal", e))?;
            match pinned::commit(lake.catalog(), &table, tx).await {
                Ok(_) => return Ok(()),
                Err(e) if again(&e, attempt) => {
                    tokio::time::sleep(backoff(20, attempt)).await;
                }
                Err(e) => return Err(Error::iceberg("renewing the sink lease", e)),
            }
        }
    }

    /// Gives the lease up so the next sink can start at once.
    pub(crate) async fn release(&self, lake: &Lake) -> Result<()> {
        let table = lake.load_table().await?;
        if self.check(&table).is_err() {
            return Ok(());
        }
        self.fenced().await?;
        let tx = Transaction::new(&table);
        let tx = tx
            .update_table_properties()
            .set(HEARTBEAT_PROPERTY.into(), "0".into())
            .apply(tx)
            .map_err(|e| Error::iceberg("preparing the lease release", e))?;
        pinned::commit(lake.catalog(), &table, tx)
            .await
            .map_err(|e| Error::iceberg("releasing the sink lease", e))?;
        Ok(())
    }

    /// Commits `files` with `next` offsets in one fast-append snapshot, after
    /// checking that this sink still owns the lease, that its fence (if any)
    /// still holds and that the lake is still at `expected` (nobody else
    /// committed since). The commit is made against the table version those
    /// checks read, so a commit landing in between makes the catalog refuse
    /// this one. A refused or retryable failure is retried after re-checking;
    /// if an earlier attempt did land (its reply was lost), the re-check sees
    /// `next` and the commit is not repeated.
    pub(crate) async fn commit(
        &self,
        lake: &Lake,
        expected: &CommittedOffsets,
        next: &[Offset],
        files: Vec<DataFile>,
    ) -> Result<CommittedOffsets> {
        let partitions = next.len() as u32;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let table = lake.load_table().await?;
            self.check(&table)?;
            let current = CommittedOffsets::of(&table, partitions)?;
            if attempt > 1 && current.offsets == next {
                return Ok(current);
            }
            if current.offsets != expected.offsets {
                return Err(Error::ConcurrentCommit {
                    expected: expected.snapshot_id,
                    found: current.snapshot_id,
                });
            }
            self.fenced().await?;
            let head = table.metadata().current_snapshot_id();
            let tx = Transaction::new(&table);
            let append = tx
                .fast_append()
                .add_data_files(files.clone())
                .set_snapshot_properties(CommittedOffsets::summary(next, &self.owner));
            let tx = append
                .apply(tx)
                .and_then(|tx| self.stamp(tx))
                .map_err(|e| Error::iceberg("preparing the commit", e))?;
            match pinned::commit(lake.catalog(), &table, tx).await {
                Ok(table) => {
                    let snapshot = table.metadata().current_snapshot();
                    let parent = snapshot.and_then(|s| s.parent_snapshot_id());
                    if parent != head {
                        // Cannot happen: the commit asserted `head` (pinned).
                        // Refuse to carry on from a history nobody checked.
                        return Err(Error::ConcurrentCommit {
                            expected: head,
                            found: parent,
                        });
                    }
                    return Ok(CommittedOffsets {
                        snapshot_id: snapshot.map(|s| s.snapshot_id()),
                        offsets: next.to_vec(),
                    });
                }
                Err(e) if again(&e, attempt) => {
                    // A compaction that landed in between moved the head but
                    // not the offsets: the re-check passes and this retries.
                    tracing::warn!(error = %e, attempt, "retrying the Iceberg commit");
                    tokio::time::sleep(backoff(50, attempt)).await;
                }
                Err(e) => return Err(Error::iceberg("committing data files and offsets", e)),
            }
        }
    }
}
