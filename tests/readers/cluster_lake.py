"""Independent judge of a cluster's shared lake: pyiceberg opens floe.events
through floe's SQLite catalog, scans the current snapshot and prints one JSON
object the Rust test compares with its oracle of acknowledged writes.

    python cluster_lake.py CATALOG_DB WAREHOUSE_DIR

- `count`: rows; `duplicate_keys`: idempotency keys seen more than once (with
  their counts, at most 20 listed) and `duplicate_key_count`;
- `conflicts`: (namespace/type/id, version) pairs landed twice with different
  data (at most 20) and `conflict_count`;
- `epochless_count`: rows without a positive `owner_epoch` (every event a
  cluster node writes carries the epoch of its grant, an etcd revision);
- `latest`: per entity `namespace/type/id`, the version, owner epoch and data
  (parsed JSON, `null` when deleted) of its largest (owner epoch, version),
  the order floe applies events in: a replay of the lake.
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
    epochs = rows.get("owner_epoch") or [None] * len(rows["version"])
    epochless = sum(1 for e in epochs if not e)
    for ns, ty, eid, version, epoch, state in zip(
        rows["namespace"],
        rows["entity_type"],
        rows["entity_id"],
        rows["version"],
        epochs,
        rows["state"],
    ):
        entity = f"{ns}/{ty}/{eid}"
        data = json.loads(state) if state is not None else None
        previous = seen.setdefault((entity, version), data)
        if previous != data:
            conflicts.append([entity, version])
        rank = (epoch or 0, version)
        if entity not in latest or (latest[entity]["epoch"], latest[entity]["version"]) < rank:
            latest[entity] = {"version": version, "epoch": epoch or 0, "data": data}
    print(
        json.dumps(
            {
                "count": len(rows["idempotency_key"]),
                "duplicate_key_count": len(duplicates),
                "duplicate_keys": dict(list(duplicates.items())[:20]),
                "conflict_count": len(conflicts),
                "conflicts": conflicts[:20],
                "epochless_count": epochless,
                "latest": latest,
            }
        )
    )


if __name__ == "__main__":
    main()
