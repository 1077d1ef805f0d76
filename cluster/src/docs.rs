//! A versioned document in etcd (the topology): JSON under `docs/<name>`, replaced only
//! by a compare-and-swap on the revision it was read at, watched by every node.
//!
//! [`TopologyStore`] has the shape of the engine's `floe_engine::TopologyStore` (branch
//! `h4-arch-core`, `engine/src/topology_store.rs`: `load` and `store` of a `Topology`),
//! made generic over the document so this crate needs no dependency on the engine; the
//! lead unifies the two at merge (an `impl floe_engine::TopologyStore for
//! EtcdDocStore<Topology>` is a few lines once both are on main). On etcd, `store` is a
//! compare-and-swap against the revision this store last read or wrote: a node whose view
//! of the topology is stale gets [`Error::Conflict`] and must load again, it never
//! overwrites another node's change. The revision-level API ([`EtcdDocStore::load_versioned`],
//! [`EtcdDocStore::compare_and_swap`], [`EtcdDocStore::watch`]) is there for callers that
//! carry revisions themselves.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::watch::{self as mirror, Entry, Snapshot, TaskGuard, timed};

/// A document and the store revision it was read at (the compare-and-swap token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The revision of the document's last change.
    pub revision: i64,
    /// The document.
    pub value: T,
}

/// Where a deployment keeps the one document in force (the engine's shape, generic).
#[async_trait]
pub trait TopologyStore<T>: Send + Sync + std::fmt::Debug {
    /// The stored document, `None` before the first `store`.
    async fn load(&self) -> Result<Option<T>>;

    /// Replaces the stored document durably (on etcd: only if it is still the version
    /// this store last saw, else [`Error::Conflict`]).
    async fn store(&self, value: &T) -> Result<()>;
}

/// [`TopologyStore`] on etcd.
pub struct EtcdDocStore<T> {
    client: Client,
    key: String,
    timeout: Duration,
    config: ClusterConfig,
    /// Revision of the document as this store last read or wrote it (`None`: absent or
    /// never read): what `store` compares against.
    seen: Arc<Mutex<Option<i64>>>,
    _doc: PhantomData<fn() -> T>,
}

impl<T> Clone for EtcdDocStore<T> {
    fn clone(&self) -> Self {
        EtcdDocStore {
            client: self.client.clone(),
            key: self.key.clone(),
            timeout: self.timeout,
            config: self.config.clone(),
            seen: Arc::new(Mutex::new(*lock(&self.seen))),
            _doc: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for EtcdDocStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDocStore")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync> EtcdDocStore<T> {
    /// The document `name` of the configured cluster.
    pub fn new(client: &Client, config: &ClusterConfig, name: &str) -> Self {
        EtcdDocStore {
            client: client.clone(),
            key: config.keys().doc(name),
            timeout: config.etcd_timeout(),
            config: config.clone(),
            seen: Arc::new(Mutex::new(None)),
            _doc: PhantomData,
        }
    }

    /// The etcd key holding the document.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn decode(&self, entry: &Entry) -> Result<Versioned<T>> {
        let value = serde_json::from_slice(&entry.value).map_err(|e| Error::Corrupt {
            key: self.key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Versioned {
            revision: entry.mod_revision,
            value,
        })
    }

    /// Follows the document: every change (by any node) shows up in the returned watch.
    pub fn watch(&self) -> DocWatch<T> {
        let (rx, task) = mirror::spawn(
            self.client.clone(),
            self.key.clone(),
            false,
            crate::membership::timing(&self.config),
        );
        DocWatch {
            store: self.clone(),
            rx,
            _task: task,
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync> EtcdDocStore<T> {
    /// The document with its revision, if one was ever stored.
    pub async fn load_versioned(&self) -> Result<Option<Versioned<T>>> {
        let mut client = self.client.clone();
        let resp = timed(
            "load document",
            self.timeout,
            client.get(self.key.as_str(), None),
        )
        .await?;
        let doc = resp
            .kvs()
            .first()
            .map(|kv| self.decode(&Entry::from(kv)))
            .transpose()?;
        *lock(&self.seen) = doc.as_ref().map(|d| d.revision);
        Ok(doc)
    }

    /// Stores `value` if the document is still at `expected` (`None`: never stored).
    /// Returns the new revision, or [`Error::Conflict`] with the revision found.
    pub async fn compare_and_swap(&self, expected: Option<i64>, value: &T) -> Result<i64> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Corrupt {
            key: self.key.clone(),
            reason: format!("the document does not serialize: {e}"),
        })?;
        let key = self.key.as_str();
        let compare = match expected {
            None => Compare::create_revision(key, CompareOp::Equal, 0),
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, bytes, None)])
            .or_else([TxnOp::get(key, None)]);
        let mut client = self.client.clone();
        let resp = timed("store document", self.timeout, client.txn(txn)).await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            *lock(&self.seen) = Some(revision);
            return Ok(revision);
        }
        let found = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        Err(Error::Conflict {
            key: self.key.clone(),
            expected,
            found,
        })
    }
}

#[async_trait]
impl<T: Serialize + DeserializeOwned + Send + Sync> TopologyStore<T> for EtcdDocStore<T> {
    async fn load(&self) -> Result<Option<T>> {
        Ok(self.load_versioned().await?.map(|d| d.value))
    }

    async fn store(&self, value: &T) -> Result<()> {
        let expected = *lock(&self.seen);
        self.compare_and_swap(expected, value).await.map(|_| ())
    }
}

fn lock(seen: &Mutex<Option<i64>>) -> std::sync::MutexGuard<'_, Option<i64>> {
    // A plain value: a panicking holder cannot leave it half-written.
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// The latest version of a document, kept current from an etcd watch.
#[derive(Debug)]
pub struct DocWatch<T> {
    store: EtcdDocStore<T>,
    rx: watch::Receiver<Snapshot>,
    _task: TaskGuard,
}

impl<T: Serialize + DeserializeOwned + Send + Sync> DocWatch<T> {
    /// The document as last seen (`Ok(None)`: absent or not listed yet).
    pub fn current(&self) -> Result<Option<Versioned<T>>> {
        let snapshot = self.rx.borrow();
        snapshot
            .entries
            .get(&self.store.key)
            .map(|e| self.store.decode(e))
            .transpose()
    }

    /// Whether the watch has listed the document at least once (before that,
    /// [`DocWatch::current`] says `None` whether or not it exists).
    pub fn listed(&self) -> bool {
        self.rx.borrow().revision > 0
    }

    /// A receiver woken on every change of the document.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.rx.clone()
    }

    /// Waits until the document is at a revision of at least `revision`, or `timeout`.
    pub async fn wait_for_revision(
        &mut self,
        revision: i64,
        timeout: Duration,
    ) -> Result<Option<Versioned<T>>> {
        let key = self.store.key.clone();
        let reached = tokio::time::timeout(
            timeout,
            self.rx.wait_for(|s| {
                s.entries
                    .get(&key)
                    .is_some_and(|e| e.mod_revision >= revision)
            }),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if reached { self.current() } else { Ok(None) }
    }
}
