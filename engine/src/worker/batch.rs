//! The bookkeeping of one group commit: the events it appends, who waits
//! for which of them, and where each outcome goes (a single write's reply,
//! or an item of a [`super::Request::WriteMany`], answered together).

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::command::{Command, WriteAck};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::state::PendingChanges;

/// What a shard made of one write of a batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Admitted and settled: acknowledged (durable and applied), or refused.
    Done(Result<WriteAck>),
    /// Routed under another routing epoch: not admitted, handed back to be
    /// routed again.
    Stale(Command),
}

/// Where a write's outcome goes.
#[derive(Debug)]
pub(super) enum Reply {
    /// A single write's caller.
    One(oneshot::Sender<Outcome>),
    /// Item `item` of the outbox's batch `batch`.
    Item { batch: usize, item: usize },
}

/// The writes a group commit appends.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    /// The batch's changes so far, which later writes of the batch see.
    pub(super) pending: PendingChanges,
    /// The events to append, in admission order.
    pub(super) events: Vec<Event>,
    /// Who waits for which event (a retry of an earlier write of the batch
    /// waits for that write's event).
    pub(super) waiting: Vec<(Reply, usize)>,
    /// Caller idempotency key -> (index of its event, request fingerprint),
    /// so that a retry arriving in the same batch as its original is one.
    pub(super) batch_keys: HashMap<String, (usize, u64)>,
    /// The owner epoch the batch is served under (0 outside cluster mode).
    pub(super) owner_epoch: u64,
}

/// The batches of writes answered together once the group commit settled.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    batches: Vec<(oneshot::Sender<Vec<Outcome>>, Vec<Outcome>)>,
}

impl Outbox {
    /// Opens a batch of `len` writes answered on `reply`; its index.
    pub(super) fn open(&mut self, reply: oneshot::Sender<Vec<Outcome>>, len: usize) -> usize {
        // Every item is overwritten before the batch is sent (each write is
        // answered exactly once); the filler never reaches a caller.
        let filler = || Outcome::Done(Err(Error::Closed("the shard did not answer".into())));
        self.batches
            .push((reply, std::iter::repeat_with(filler).take(len).collect()));
        self.batches.len() - 1
    }

    /// Answers one write.
    pub(super) fn send(&mut self, reply: Reply, result: Result<WriteAck>) {
        match reply {
            Reply::One(tx) => {
                let _ = tx.send(Outcome::Done(result));
            }
            Reply::Item { batch, item } => self.batches[batch].1[item] = Outcome::Done(result),
        }
    }

    /// Sends every batch's outcomes.
    pub(super) fn flush(self) {
        for (reply, outcomes) in self.batches {
            let _ = reply.send(outcomes);
        }
    }
}
