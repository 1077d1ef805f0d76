//! A key range kept up to date from etcd: list, then watch from the listed revision;
//! on any error (etcd restarted, watch cancelled by a compaction, connection lost) list
//! again. Consumers read the latest [`Snapshot`] from a `tokio::sync::watch` channel.
//!
//! A snapshot can be stale while etcd is unreachable; nothing that needs safety relies
//! on its freshness (see `ownership`), only liveness does.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Revision of the key's last change.
    pub mod_revision: i64,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
}

impl From<&etcd_client::KeyValue> for Entry {
    fn from(kv: &etcd_client::KeyValue) -> Self {
        Entry {
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

/// The keys of a range at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The etcd revision this snapshot reflects (0 before the first list).
    pub revision: i64,
    /// Key -> entry.
    pub entries: BTreeMap<String, Entry>,
}

/// Aborts a background task when dropped, so a view's task never outlives the view.
#[derive(Debug)]
pub(crate) struct TaskGuard(pub(crate) JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs an etcd call under a deadline, mapping both failures to [`Error`].
pub(crate) async fn timed<T>(
    op: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(Error::etcd(op)),
        Err(_) => Err(Error::EtcdTimeout { op, timeout }),
    }
}

/// Lists `key` (a prefix when `prefix` is set).
pub(crate) async fn list(
    client: &mut Client,
    key: &str,
    prefix: bool,
    timeout: Duration,
) -> Result<Snapshot> {
    let options = prefix.then(|| GetOptions::new().with_prefix());
    let resp = timed("list", timeout, client.get(key, options)).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let entries = resp
        .kvs()
        .iter()
        .filter_map(|kv| Some((kv.key_str().ok()?.to_owned(), Entry::from(kv))))
        .collect();
    Ok(Snapshot { revision, entries })
}

/// Timing of a [`spawn`]ed watcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WatchTiming {
    /// Deadline of a list or watch creation.
    pub(crate) timeout: Duration,
    /// Pause before listing again after an error.
    pub(crate) retry: Duration,
    /// Longest quiet time on a watch before listing again anyway (bounds staleness
    /// when a connection hangs without failing).
    pub(crate) resync: Duration,
}

/// Keeps `key` (a prefix when `prefix` is set) mirrored into a watch channel until
/// every receiver is gone or the guard is dropped.
pub(crate) fn spawn(
    client: Client,
    key: String,
    prefix: bool,
    timing: WatchTiming,
) -> (watch::Receiver<Snapshot>, TaskGuard) {
    let (tx, rx) = watch::channel(Snapshot::default());
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = mirror(client, key, prefix, timing, &tx) => {}
            _ = tx.closed() => {}
        }
    });
    (rx, TaskGuard(task))
}

async fn mirror(
    mut client: Client,
    key: String,
    prefix: bool,
    timing: WatchTiming,
    tx: &watch::Sender<Snapshot>,
) {
    loop {
        let mut snapshot = match list(&mut client, &key, prefix, timing.timeout).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::debug!(%key, error = %e, "listing for a watch failed; retrying");
                tokio::time::sleep(timing.retry).await;
                continue;
            }
        };
        publish(tx, &snapshot);
        let mut options = WatchOptions::new().with_start_revision(snapshot.revision + 1);
        if prefix {
            options = options.with_prefix();
        }
        let mut stream = match timed(
            "watch",
            timing.timeout,
            client.watch(key.as_str(), Some(options)),
        )
        .await
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%key, error = %e, "opening a watch failed; retrying");
                tokio::time::sleep(timing.retry).await;
                continue;
            }
        };
        loop {
            let resp = match tokio::time::timeout(timing.resync, stream.message()).await {
                Ok(Ok(Some(resp))) => resp,
                // Quiet for `resync`, closed, or failed: list again.
                _ => break,
            };
            if resp.canceled() {
                break;
            }
            let mut changed = false;
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(k) = kv.key_str() else { continue };
                match event.event_type() {
                    EventType::Put => snapshot.entries.insert(k.to_owned(), Entry::from(kv)),
                    EventType::Delete => snapshot.entries.remove(k),
                };
                changed = true;
            }
            if let Some(h) = resp.header() {
                snapshot.revision = snapshot.revision.max(h.revision());
            }
            if changed {
                publish(tx, &snapshot);
            }
        }
        tokio::time::sleep(timing.retry).await;
    }
}

/// Sends `snapshot`, waking receivers only when the entries changed (a re-list that
/// finds the same keys only moves the revision).
fn publish(tx: &watch::Sender<Snapshot>, snapshot: &Snapshot) {
    tx.send_if_modified(|current| {
        let changed = current.entries != snapshot.entries;
        *current = snapshot.clone();
        changed
    });
}
