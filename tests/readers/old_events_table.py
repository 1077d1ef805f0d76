"""Writes a lake as floe did before the `owner_epoch` and `request_fingerprint`
columns: `floe.events` with the first 14 columns (ids 1-14 in order, floe's
partition spec) and N landed events of pipeline partition 0 at offsets 0..N,
with the snapshot properties floe's sink writes (one pipeline partition).

    python old_events_table.py CATALOG_DB WAREHOUSE_DIR N

Each event is entity `acme/Order/o-<i>` at version 1, idempotency key
`old-<i>`, key hash `i`.
"""

import os
import sys
import uuid

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import BucketTransform, DayTransform
from pyiceberg.types import (
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

COLUMNS = [
    ("event_id", StringType(), pa.string(), True),
    ("idempotency_key", StringType(), pa.string(), True),
    ("kind", StringType(), pa.string(), True),
    ("namespace", StringType(), pa.string(), True),
    ("entity_type", StringType(), pa.string(), True),
    ("entity_id", StringType(), pa.string(), True),
    ("partition_key", StringType(), pa.string(), True),
    ("key_hash", LongType(), pa.int64(), True),
    ("shard", IntegerType(), pa.int32(), True),
    ("version", LongType(), pa.int64(), True),
    ("event_time", TimestamptzType(), pa.timestamp("us", tz="UTC"), True),
    ("state", StringType(), pa.string(), False),
    ("pipeline_partition", IntegerType(), pa.int32(), True),
    ("pipeline_offset", LongType(), pa.int64(), True),
]


def main() -> None:
    catalog_db, warehouse, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(warehouse, exist_ok=True)
    catalog = SqlCatalog("floe", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{warehouse}")
    catalog.create_namespace("floe")
    schema = Schema(
        *[
            NestedField(i + 1, name, kind, required=required)
            for i, (name, kind, _, required) in enumerate(COLUMNS)
        ]
    )
    spec = PartitionSpec(
        PartitionField(source_id=11, field_id=1000, transform=DayTransform(), name="event_day"),
        PartitionField(
            source_id=7, field_id=1001, transform=BucketTransform(16), name="partition_key_bucket"
        ),
    )
    table = catalog.create_table("floe.events", schema=schema, partition_spec=spec)
    seq = range(n)
    values = {
        "event_id": [str(uuid.UUID(int=i + 1)) for i in seq],
        "idempotency_key": [f"old-{i}" for i in seq],
        "kind": ["created"] * n,
        "namespace": ["acme"] * n,
        "entity_type": ["Order"] * n,
        "entity_id": [f"o-{i}" for i in seq],
        "partition_key": ["acme"] * n,
        "key_hash": list(seq),
        "shard": [0] * n,
        "version": [1] * n,
        "event_time": [1_700_000_000_000_000 + i for i in seq],
        "state": [f'{{"i":{i}}}' for i in seq],
        "pipeline_partition": [0] * n,
        "pipeline_offset": list(seq),
    }
    arrow_schema = pa.schema(
        [pa.field(name, kind, nullable=not required) for name, _, kind, required in COLUMNS]
    )
    data = pa.table({name: pa.array(values[name], kind) for name, _, kind, _ in COLUMNS}, schema=arrow_schema)
    table.append(
        data, snapshot_properties={"floe.offsets.0": str(n), "floe.partitions": "1"}
    )


if __name__ == "__main__":
    main()
