"""Independent client of a lake behind a catalog: pyiceberg opens floe.events
through the catalog named by a JSON of properties (a REST catalog with an S3
warehouse, or floe's SQLite catalog), scans it to Arrow and prints one JSON
line of figures that the Rust test compares with what floe wrote.

    python iceberg_rest_reader.py read PROPERTIES_JSON
    python iceberg_rest_reader.py conflict PROPERTIES_JSON

`read`: figures of floe.events. `conflict`: creates a scratch table, appends
through two handles loaded at the same snapshot and reports how the second
(stale) commit was refused.
"""

import json
import sys

import pyarrow as pa
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import CommitFailedException

MASK = (1 << 64) - 1


def catalog(props):
    return load_catalog("floe", **props)


def read(props) -> dict:
    cat = catalog(props)
    namespaces = [".".join(ns) for ns in cat.list_namespaces()]
    tables = [".".join(t) for t in cat.list_tables("floe")]
    table = cat.load_table("floe.events")
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
    positions = set(zip(rows["pipeline_partition"], rows["pipeline_offset"]))
    return {
        "namespaces": namespaces,
        "tables": tables,
        "count": arrow.num_rows,
        "distinct_keys": len(set(rows["idempotency_key"])),
        "distinct_positions": len(positions),
        "key_hash_sum": key_hash_sum,
        "version_sum": version_sum,
        "state_bytes": state_bytes,
        "offsets_total": sum(offsets.values()),
        "location": table.metadata.location,
    }


def conflict(props) -> dict:
    cat = catalog(props)
    if ("floe_check",) not in cat.list_namespaces():
        cat.create_namespace("floe_check")
    data = pa.table({"n": pa.array([1, 2, 3], pa.int64())})
    # No client-side retries: pyiceberg would otherwise refresh and rebase
    # the stale append after the 409 (which it does correctly).
    table = cat.create_table(
        "floe_check.appends", schema=data.schema, properties={"commit.retry.num-retries": "0"}
    )
    table.append(data)
    # Two writers at the same snapshot: the first appends, the second's
    # append asserts the snapshot it started from, which is gone.
    first = cat.load_table("floe_check.appends")
    stale = cat.load_table("floe_check.appends")
    first.append(data)
    outcome = {"first_rows": len(first.scan().to_arrow())}
    try:
        stale.append(data)
        outcome["stale"] = "committed"
    except CommitFailedException as e:
        outcome["stale"] = "CommitFailedException"
        outcome["message"] = str(e)
    outcome["rows_after"] = len(cat.load_table("floe_check.appends").scan().to_arrow())
    cat.drop_table("floe_check.appends")
    del table
    return outcome


def main() -> None:
    mode, props = sys.argv[1], json.loads(sys.argv[2])
    result = read(props) if mode == "read" else conflict(props)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
