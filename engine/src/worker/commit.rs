//! Settling a group commit: append its events, then apply and acknowledge
//! them (or, in cluster mode, refuse the acknowledgement when the ownership
//! changed while the append was in flight).

use super::batch::{GroupCommit, Outbox};
use super::{ShardStats, ShardWorker, WorkerProbe, copy_pipeline_error};
use crate::cluster::OwnerRefusal;
use crate::command::WriteAck;
use crate::dedup::ack_for;
use crate::event::now_us;

use std::sync::atomic::Ordering;

impl ShardWorker {
    /// Appends a batch's events, applies them and answers their callers.
    pub(super) async fn commit(
        &mut self,
        group: GroupCommit,
        outbox: &mut Outbox,
        stats: &mut ShardStats,
        probe: &WorkerProbe,
        owner_epoch: u64,
    ) {
        let GroupCommit {
            events, waiting, ..
        } = group;
        stats.batches += 1;
        let started = now_us().max(1) as u64;
        probe.append_started_us.store(started, Ordering::Release);
        let appended = self.pipeline.append(&events).await;
        probe.append_started_us.store(0, Ordering::Release);
        probe.last_append_us.store(
            (now_us().max(0) as u64).saturating_sub(started),
            Ordering::Release,
        );
        // Durable now; still the owner under the same grant? If not, the
        // events are in the pipeline (the next owner reads them when it
        // restores the shard) and are applied here too, but nobody is told
        // they succeeded: the callers get a retryable refusal.
        let lost = match (&appended, self.owner()) {
            (Ok(_), Ok(epoch)) if epoch == owner_epoch => None,
            (Ok(_), Ok(_)) => Some(OwnerRefusal {
                reason: "the shard was granted again while the write was in flight".into(),
                owner: None,
                owner_addr: None,
            }),
            (Ok(_), Err(refusal)) => Some(refusal),
            (Err(_), _) => None,
        };
        match appended {
            Ok(_) if lost.is_some() => {
                let refusal = lost.expect("checked");
                stats.write_errors += waiting.len() as u64;
                tracing::warn!(shard = self.shard, %refusal, events = events.len(), "durable writes not acknowledged: ownership lost meanwhile");
                for event in events {
                    self.keys.settle_event(&event, true);
                    if event.request_fingerprint.is_some() {
                        self.idempotency.settle(&event.idempotency_key);
                    }
                    self.dedup.observe(&event);
                    self.state.apply_owned(event);
                }
                for (reply, _) in waiting {
                    outbox.send(reply, Err(self.not_owner(&refusal)));
                }
            }
            Ok(_) => {
                let count = events.len() as u64;
                let mut acks = Vec::with_capacity(events.len());
                for event in events {
                    self.keys.settle_event(&event, true);
                    if event.request_fingerprint.is_some() {
                        self.idempotency.settle(&event.idempotency_key);
                    }
                    self.dedup.observe_written(&event);
                    acks.push(ack_for(&event));
                    self.state.apply_owned(event);
                }
                stats.writes += count;
                // Most acks have one waiter: move them; clone only for the
                // retries of a write inside the same batch.
                let mut waiters = vec![0u32; acks.len()];
                for (_, index) in &waiting {
                    waiters[*index] += 1;
                }
                let mut acks: Vec<Option<WriteAck>> = acks.into_iter().map(Some).collect();
                for (reply, index) in waiting {
                    waiters[index] -= 1;
                    let ack = if waiters[index] == 0 {
                        acks[index].take()
                    } else {
                        acks[index].clone()
                    };
                    if let Some(ack) = ack {
                        outbox.send(reply, Ok(ack));
                    }
                }
            }
            Err(error) => {
                // The outcome is unknown (some events may be durable); nothing
                // is applied here, and a restart replays whatever was durable.
                stats.write_errors += waiting.len() as u64;
                stats.append_failures += 1;
                for event in &events {
                    self.keys.settle_event(event, false);
                    if event.request_fingerprint.is_some() {
                        self.idempotency.settle(&event.idempotency_key);
                    }
                }
                tracing::warn!(shard = self.shard, %error, events = events.len(), "append failed");
                if let Some(gate) = &self.gate {
                    gate.outcome_unknown(self.shard, owner_epoch);
                }
                for (reply, _) in waiting {
                    outbox.send(reply, Err(copy_pipeline_error(&error)));
                }
            }
        }
    }
}
