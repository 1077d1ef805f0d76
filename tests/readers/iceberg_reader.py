"""Independent reader: opens floe's SQLite catalog with pyiceberg, scans
floe.events to Arrow and prints one JSON line of figures that the Rust test
compares with what floe wrote.

    python iceberg_reader.py DATA_DIR
"""

import json
import sys

import duckdb
from pyiceberg.catalog.sql import SqlCatalog

MASK = (1 << 64) - 1


def main() -> None:
    data = sys.argv[1]
    catalog = SqlCatalog(
        "floe",
        uri=f"sqlite:///{data}/catalog.db",
        warehouse=f"file://{data}/warehouse",
    )
    table = catalog.load_table("floe.events")
    arrow = table.scan().to_arrow()
    rows = arrow.to_pydict()
    key_hash_sum = 0
    version_sum = 0
    state_bytes = 0
    for key_hash, version, state in zip(rows["key_hash"], rows["version"], rows["state"]):
        key_hash_sum = (key_hash_sum + (key_hash & MASK)) & MASK
        version_sum += version
        state_bytes += len(state.encode()) if state is not None else 0
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot else {}
    offsets = {k: int(v) for k, v in summary.items() if k.startswith("floe.offsets.")}
    # A second reader that knows nothing of Iceberg: DuckDB over the data
    # files the snapshot lists.
    files = [p.removeprefix("file://") for p in table.inspect.files().column("file_path").to_pylist()]
    duckdb_count = (
        duckdb.connect().execute(f"select count(*) from read_parquet({files!r})").fetchone()[0]
        if files
        else 0
    )
    print(
        json.dumps(
            {
                "count": arrow.num_rows,
                "distinct_keys": len(set(rows["idempotency_key"])),
                "key_hash_sum": key_hash_sum,
                "version_sum": version_sum,
                "state_bytes": state_bytes,
                "offsets_total": sum(offsets.values()),
                "duckdb_count": duckdb_count,
                "schema": [f.name for f in arrow.schema],
            }
        )
    )


if __name__ == "__main__":
    main()
