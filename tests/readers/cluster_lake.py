"""Independent judge of a cluster's shared lake: pyiceberg opens floe.events
through floe's SQLite catalog, scans the current snapshot and prints one JSON
object the Rust test compares with its oracle of acknowledged writes.

    python cluster_lake.py CATALOG_DB WAREHOUSE_DIR

- `count`: rows; `duplicate_keys`: idempotency keys seen more than once (with
  their counts, at most 20 listed) and `duplicate_key_count`;
- `conflicts`: (namespace/type/id, version) pairs landed twice with different
  data (at most 20) and `conflict_count`;
- `latest`: per entity `namespace/type/id`, the version and the data (parsed
  JSON, `null` when deleted) of its highest version: a replay of the lake.
"""

import json
import sys
from collections import Counter

from pyiceberg.catalog.sql import SqlCatalog


def main() -> None:
    catalog_db, warehouse = sys.argv[1], sys.argv[2]
    catalog = SqlCatalog("floe", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{warehouse}")
    table = catalog.load_table("floe.events")
    rows = table.scan().to_arrow().to_pydict()
    keys = Counter(rows["idempotency_key"])
    duplicates = {k: n for k, n in keys.items() if n > 1}
    seen = {}
    conflicts = []
    latest = {}
    for ns, ty, eid, version, state in zip(
        rows["namespace"], rows["entity_type"], rows["entity_id"], rows["version"], rows["state"]
    ):
        entity = f"{ns}/{ty}/{eid}"
        data = json.loads(state) if state is not None else None
        previous = seen.setdefault((entity, version), data)
        if previous != data:
            conflicts.append([entity, version])
        if entity not in latest or latest[entity]["version"] < version:
            latest[entity] = {"version": version, "data": data}
    print(
        json.dumps(
            {
                "count": len(rows["idempotency_key"]),
                "duplicate_key_count": len(duplicates),
                "duplicate_keys": dict(list(duplicates.items())[:20]),
                "conflict_count": len(conflicts),
                "conflicts": conflicts[:20],
                "latest": latest,
            }
        )
    )


if __name__ == "__main__":
    main()
