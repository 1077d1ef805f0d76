"""The pyiceberg side of `floe bench land`: appends N events of floe's
`floe.events` columns from an in-memory Arrow table (built before the clock
starts) into a fresh SQLite catalog, and prints the rate as JSON.

    python pyiceberg_append.py EVENTS PAYLOAD_BYTES WORKDIR
"""

import json
import os
import sys
import time
import uuid

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog


def table(n: int, payload_bytes: int) -> pa.Table:
    note = "x" * max(payload_bytes - 60, 0)
    seq = range(n)
    tenants = [f"tenant-{s % 1000:04}" for s in seq]
    ids = [f"order-{s % 100000:06}" for s in seq]
    versions = [s // 100000 + 1 for s in seq]
    return pa.table(
        {
            "event_id": [str(uuid.UUID(int=s + (1 << 100))) for s in seq],
            "idempotency_key": [f"{t}/Order/{i}@v{v}" for t, i, v in zip(tenants, ids, versions)],
            "kind": ["created" if v == 1 else "updated" for v in versions],
            "namespace": tenants,
            "entity_type": ["Order"] * n,
            "entity_id": ids,
            "partition_key": tenants,
            "key_hash": pa.array([hash(t) for t in tenants], pa.int64()),
            "shard": pa.array([s % 16 for s in seq], pa.int32()),
            "version": pa.array(versions, pa.int64()),
            "event_time": pa.array(
                [1_763_683_200_000_000 + s * 1000 for s in seq], pa.timestamp("us", tz="UTC")
            ),
            "state": [
                f'{{"seq":{s},"status":"paid","total_cents":{s % 10000},"note":"{note}"}}' for s in seq
            ],
            "pipeline_partition": pa.array([s % 16 for s in seq], pa.int32()),
            "pipeline_offset": pa.array([s // 16 for s in seq], pa.int64()),
        }
    )


def main() -> None:
    n, payload_bytes, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.makedirs(f"{workdir}/warehouse", exist_ok=True)
    data = table(n, payload_bytes)
    catalog = SqlCatalog(
        "bench", uri=f"sqlite:///{workdir}/catalog.db", warehouse=f"file://{workdir}/warehouse"
    )
    catalog.create_namespace("floe")
    events = catalog.create_table(
        "floe.events", schema=data.schema, properties={"write.parquet.compression-codec": "zstd"}
    )
    started = time.perf_counter()
    events.append(data)
    seconds = time.perf_counter() - started
    assert events.scan().to_arrow().num_rows == n
    print(json.dumps({"events": n, "seconds": seconds, "events_per_s": n / seconds}))


if __name__ == "__main__":
    main()
