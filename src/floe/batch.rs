//! [`Floe::write_many`]: many writes in, one outcome each out.

use floe_engine::WriteAck;

use super::{Floe, WriteRequest};
use crate::error::Result;

impl Floe {
    /// Performs many writes at once and returns one outcome per request, in
    /// order. Each request is checked, routed and admitted on its own,
    /// exactly as [`Floe::write`] would do it if the requests were sent one
    /// after another in this order: each is atomic and idempotent by its key,
    /// a bad request fails alone with its error and the others go on, two
    /// writes of one entity apply in request order (so the second of two
    /// creates, or a stale `expected_version`, gets a version conflict), and
    /// a request repeated with the same idempotency key gets the first one's
    /// outcome.
    ///
    /// What is cheaper than many [`Floe::write`] calls: each shard gets its
    /// requests as one message and makes them durable in one group commit
    /// (up to `shards.max_batch`), and the caller waits once. An `Ok` outcome
    /// means durable and applied; an error that [`crate::Error::is_retryable`]
    /// calls retryable leaves the outcome unknown (retry with the same
    /// idempotency key).
    pub async fn write_many(&self, requests: Vec<WriteRequest>) -> Vec<Result<WriteAck>> {
        if let Err(e) = self.check_open() {
            let message = e.to_string();
            return requests
                .iter()
                .map(|_| Err(floe_engine::Error::Closed(message.clone()).into()))
                .collect();
        }
        let mut out: Vec<Option<Result<WriteAck>>> = Vec::with_capacity(requests.len());
        let mut commands = Vec::with_capacity(requests.len());
        let mut sent = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let command = match self.resolve_partition_key(request).await {
                Ok(request) => self.command(request),
                Err(e) => Err(e),
            };
            let command = match command {
                Ok(command) => self
                    .reactivate_for(&command.partition_key)
                    .await
                    .map(|()| command),
                Err(e) => Err(e),
            };
            match command {
                Ok(command) => {
                    commands.push(command);
                    sent.push(index);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let routed = self.inner.cluster.write_many(commands).await;
        for (index, routed) in sent.into_iter().zip(routed) {
            self.record_write(&routed);
            out[index] = Some(routed.result.map_err(Into::into));
        }
        // `sent` and the cluster's answers have the same length: every slot
        // is filled.
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(floe_engine::Error::Closed("the write was not answered".into()).into())
                })
            })
            .collect()
    }
}
