//! The table floe lands its pipeline in: `floe.events`.
//!
//! One column per field of the event contract, plus where the event was found
//! in the pipeline. Partitioned by `day(event_time)` and
//! `bucket(16, partition_key)`; rows sorted by `key_hash` within every file.
//! `docs/iceberg.md` gives the reasons.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{
    NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder, Transform,
    Type, UnboundPartitionSpec,
};
use iceberg::{NamespaceIdent, TableCreation, TableIdent};

use crate::error::{Error, Result};

/// The Iceberg namespace of floe's tables.
pub const NAMESPACE: &str = "floe";
/// The table of landed events.
pub const TABLE: &str = "events";
/// Buckets of the `partition_key` partition field.
pub const KEY_BUCKETS: u32 = 16;

/// Field ids of the `floe.events` schema. Ids are forever: readers resolve
/// columns by id, so a column is never renumbered or reused.
pub(crate) mod field {
    pub(crate) const EVENT_ID: i32 = 1;
    pub(crate) const IDEMPOTENCY_KEY: i32 = 2;
    pub(crate) const KIND: i32 = 3;
    pub(crate) const NAMESPACE: i32 = 4;
    pub(crate) const ENTITY_TYPE: i32 = 5;
    pub(crate) const ENTITY_ID: i32 = 6;
    pub(crate) const PARTITION_KEY: i32 = 7;
    pub(crate) const KEY_HASH: i32 = 8;
    pub(crate) const SHARD: i32 = 9;
    pub(crate) const VERSION: i32 = 10;
    pub(crate) const EVENT_TIME: i32 = 11;
    pub(crate) const STATE: i32 = 12;
    pub(crate) const PIPELINE_PARTITION: i32 = 13;
    pub(crate) const PIPELINE_OFFSET: i32 = 14;
    /// Added after the first release, like the next one: tables created
    /// before them gain them at open ([`super::upgraded_schema`]); their
    /// older files read them as null.
    pub(crate) const OWNER_EPOCH: i32 = 15;
    pub(crate) const REQUEST_FINGERPRINT: i32 = 16;
}

/// Column names, in schema order.
pub(crate) const COLUMNS: [&str; 16] = [
    "event_id",
    "idempotency_key",
    "kind",
    "namespace",
    "entity_type",
    "entity_id",
    "partition_key",
    "key_hash",
    "shard",
    "version",
    "event_time",
    "state",
    "pipeline_partition",
    "pipeline_offset",
    "owner_epoch",
    "request_fingerprint",
];

/// Columns that [`upgraded_schema`] adds to tables created without them.
pub(crate) const OWNER_EPOCH_COLUMN: &str = COLUMNS[14];
pub(crate) const REQUEST_FINGERPRINT_COLUMN: &str = COLUMNS[15];

/// Snapshot summary property prefix of the committed offsets:
/// `floe.offsets.<partition>` = the next offset to consume.
pub const OFFSETS_PREFIX: &str = "floe.offsets.";
/// Snapshot summary property: the pipeline's partition count.
pub const PARTITIONS_PROPERTY: &str = "floe.partitions";
/// Table property naming the sink that holds the commit lease.
pub const OWNER_PROPERTY: &str = "floe.sink.owner";
/// Table property: when the owner last renewed its lease, ms since the epoch.
pub const HEARTBEAT_PROPERTY: &str = "floe.sink.heartbeat-ms";
/// Table property: how long a lease lasts without renewal, in ms.
pub const LEASE_PROPERTY: &str = "floe.sink.lease-ms";

/// `floe.events`.
pub fn table_ident() -> TableIdent {
    TableIdent::new(namespace_ident(), TABLE.to_string())
}

pub(crate) fn namespace_ident() -> NamespaceIdent {
    NamespaceIdent::new(NAMESPACE.to_string())
}

/// The Iceberg schema of `floe.events`.
pub fn schema() -> Result<Schema> {
    use field as f;
    let string = || Type::Primitive(PrimitiveType::String);
    let long = || Type::Primitive(PrimitiveType::Long);
    let int = || Type::Primitive(PrimitiveType::Int);
    let fields = vec![
        NestedField::required(f::EVENT_ID, COLUMNS[0], string()),
        NestedField::required(f::IDEMPOTENCY_KEY, COLUMNS[1], string()),
        NestedField::required(f::KIND, COLUMNS[2], string()),
        NestedField::required(f::NAMESPACE, COLUMNS[3], string()),
        NestedField::required(f::ENTITY_TYPE, COLUMNS[4], string()),
        NestedField::required(f::ENTITY_ID, COLUMNS[5], string()),
        NestedField::required(f::PARTITION_KEY, COLUMNS[6], string()),
        NestedField::required(f::KEY_HASH, COLUMNS[7], long())
            .with_doc("64-bit routing hash of partition_key, bit-cast to a signed long"),
        NestedField::required(f::SHARD, COLUMNS[8], int()),
        NestedField::required(f::VERSION, COLUMNS[9], long()),
        NestedField::required(
            f::EVENT_TIME,
            COLUMNS[10],
            Type::Primitive(PrimitiveType::Timestamptz),
        ),
        NestedField::optional(f::STATE, COLUMNS[11], string())
            .with_doc("the entity's state after the change as JSON; null on delete"),
        NestedField::required(f::PIPELINE_PARTITION, COLUMNS[12], int()),
        NestedField::required(f::PIPELINE_OFFSET, COLUMNS[13], long()),
    ];
    let fields = fields.into_iter().chain(added_fields());
    Schema::builder()
        .with_schema_id(0)
        .with_fields(fields.map(Arc::new))
        .build()
        .map_err(|e| Error::iceberg("building the events schema", e))
}

/// The columns added since the first release, in schema order. Optional, so
/// that data files written before they existed read as null: epoch 0 (a
/// single node's), no fingerprint (as for an event written before
/// fingerprints existed).
fn added_fields() -> [NestedField; 2] {
    let long = || Type::Primitive(PrimitiveType::Long);
    [
        NestedField::optional(field::OWNER_EPOCH, OWNER_EPOCH_COLUMN, long()).with_doc(
            "cluster mode: the owner epoch the shard was served under (an etcd revision); \
             0 or null on a single node",
        ),
        NestedField::optional(
            field::REQUEST_FINGERPRINT,
            REQUEST_FINGERPRINT_COLUMN,
            long(),
        )
        .with_doc(
            "fingerprint of the request that made the change when the caller gave its own \
             idempotency key, bit-cast to a signed long; null otherwise",
        ),
    ]
}

/// The schema `current` becomes when it lacks columns of [`schema`] (a
/// table created by an older floe): `current` plus the missing columns, with
/// schema id `next_id`. `None` when nothing is missing.
pub(crate) fn upgraded_schema(current: &Schema, next_id: i32) -> Result<Option<Schema>> {
    let missing: Vec<_> = added_fields()
        .into_iter()
        .filter(|f| current.field_by_id(f.id).is_none())
        .map(Arc::new)
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let schema = current
        .clone()
        .into_builder()
        .with_schema_id(next_id)
        .with_fields(missing)
        .build()
        .map_err(|e| Error::iceberg("building the upgraded events schema", e))?;
    Ok(Some(schema))
}

/// `day(event_time)`, `bucket(16, partition_key)`.
pub fn partition_spec() -> Result<UnboundPartitionSpec> {
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(field::EVENT_TIME, "event_day", Transform::Day)
        .and_then(|b| {
            b.add_partition_field(
                field::PARTITION_KEY,
                "partition_key_bucket",
                Transform::Bucket(KEY_BUCKETS),
            )
        })
        .map_err(|e| Error::iceberg("building the partition spec", e))?;
    Ok(spec.build())
}

/// `key_hash` ascending: what the sink writes, declared so engines know it.
pub fn sort_order() -> SortOrder {
    SortOrder::builder()
        .with_order_id(1)
        .with_sort_field(SortField {
            source_id: field::KEY_HASH,
            transform: Transform::Identity,
            direction: SortDirection::Ascending,
            null_order: NullOrder::First,
        })
        .build_unbound()
        .expect("a sort order with one field always builds")
}

/// The creation request of `floe.events`.
pub(crate) fn table_creation(properties: HashMap<String, String>) -> Result<TableCreation> {
    Ok(TableCreation::builder()
        .name(TABLE.to_string())
        .schema(schema()?)
        .partition_spec(partition_spec()?)
        .sort_order(sort_order())
        .properties(properties)
        .build())
}
