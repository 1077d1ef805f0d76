//! [`WriteRequest`]: one write and its options, as callers build it.

use std::sync::Arc;

use floe_engine::{EntityKey, Json};
use serde_json::Value;

/// A write, with every option. Build one with [`WriteRequest::create`],
/// [`WriteRequest::upsert`], [`WriteRequest::update`] or [`WriteRequest::delete`].
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    pub(super) key: EntityKey,
    pub(super) op: WriteOp,
    pub(super) expected_version: Option<u64>,
    pub(super) idempotency_key: Option<String>,
    pub(super) partition_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum WriteOp {
    Create(Data),
    Upsert(Data),
    Update(Value),
    Delete,
    Restore(Data, u64),
}

/// Entity data as the caller has it: a tree, JSON text already checked to
/// be an object, or text not checked yet.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Data {
    Value(Value),
    Json(Json),
    Text(Arc<str>),
}

impl WriteRequest {
    fn new(key: EntityKey, op: WriteOp) -> Self {
        WriteRequest {
            key,
            op,
            expected_version: None,
            idempotency_key: None,
            partition_key: None,
        }
    }

    /// Creates an entity; fails if it exists.
    pub fn create(key: EntityKey, data: Value) -> Self {
        Self::new(key, WriteOp::Create(Data::Value(data)))
    }

    /// Creates or replaces an entity.
    pub fn upsert(key: EntityKey, data: Value) -> Self {
        Self::new(key, WriteOp::Upsert(Data::Value(data)))
    }

    /// [`WriteRequest::create`] for data that is already JSON text (an HTTP
    /// body, a message): floe keeps the text and parses it only if the
    /// partition key comes from its fields.
    pub fn create_json(key: EntityKey, data: Json) -> Self {
        Self::new(key, WriteOp::Create(Data::Json(data)))
    }

    /// [`WriteRequest::upsert`] for data that is already JSON text.
    pub fn upsert_json(key: EntityKey, data: Json) -> Self {
        Self::new(key, WriteOp::Upsert(Data::Json(data)))
    }

    /// [`WriteRequest::upsert`] for JSON text nobody has checked yet (an
    /// HTTP body, a line of a file): floe checks it once, in the same pass
    /// as its limits (size, depth, duplicate keys, one object), instead of
    /// [`Json::parse`] and then the limits. Malformed text fails the write
    /// with `MalformedJson`.
    pub fn upsert_text(key: EntityKey, text: impl Into<Arc<str>>) -> Self {
        Self::new(key, WriteOp::Upsert(Data::Text(text.into())))
    }

    /// [`WriteRequest::create`] for JSON text not checked yet (see
    /// [`WriteRequest::upsert_text`]).
    pub fn create_text(key: EntityKey, text: impl Into<Arc<str>>) -> Self {
        Self::new(key, WriteOp::Create(Data::Text(text.into())))
    }

    /// Applies a JSON merge patch (RFC 7386) to an existing entity.
    pub fn update(key: EntityKey, patch: Value) -> Self {
        Self::new(key, WriteOp::Update(patch))
    }

    /// Deletes an existing entity.
    pub fn delete(key: EntityKey) -> Self {
        Self::new(key, WriteOp::Delete)
    }

    /// Sets an entity to `data` at exactly `version` (at least 1), unless it
    /// is already at or past that version here, which is
    /// [`floe_engine::Error::AlreadyRestored`] and changes nothing: a line of
    /// `floe export`, imported into another deployment.
    pub fn restore(key: EntityKey, data: Value, version: u64) -> Self {
        Self::new(key, WriteOp::Restore(Data::Value(data), version))
    }

    /// [`WriteRequest::restore`] for JSON text not checked yet (see
    /// [`WriteRequest::upsert_text`]).
    pub fn restore_text(key: EntityKey, text: impl Into<Arc<str>>, version: u64) -> Self {
        Self::new(key, WriteOp::Restore(Data::Text(text.into()), version))
    }

    /// Fails with a version conflict unless the entity is at `version`
    /// (0: must not exist).
    pub fn expected_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// A key that makes retries safe: a second write with the same key
    /// returns the first one's outcome and emits nothing.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Routes by this partition key instead of extracting it; needed for
    /// updates and deletes when the key comes from data fields.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }
}
