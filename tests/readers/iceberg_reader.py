"""Independent reader: opens floe's SQLite catalog with pyiceberg, scans
floe.events to Arrow and prints one JSON line of figures that the Rust test
compares with what floe wrote.

    python iceberg_reader.py DATA_DIR
"""

import json
import sys

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
    print(
        json.dumps(
            {
                "count": arrow.num_rows,
                "distinct_keys": len(set(rows["idempotency_key"])),
                "key_hash_sum": key_hash_sum,
                "version_sum": version_sum,
                "state_bytes": state_bytes,
                "offsets_total": sum(offsets.values()),
                "schema": [f.name for f in arrow.schema],
            }
        )
    )


if __name__ == "__main__":
    main()
