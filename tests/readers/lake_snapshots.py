"""Independent reader for lake maintenance tests: opens floe's SQLite catalog
with pyiceberg and prints one JSON object describing every live snapshot of
floe.events (rows, distinct idempotency keys, distinct pipeline positions,
the offsets in its summary, its data files and whether any is listed twice)
and every file the snapshots reference.

    python lake_snapshots.py CATALOG_DB WAREHOUSE_DIR [current]

With `current`, only the current snapshot is read.
"""

import json
import sys

from pyiceberg.catalog.sql import SqlCatalog

MASK = (1 << 64) - 1


def main() -> None:
    catalog_db, warehouse = sys.argv[1], sys.argv[2]
    catalog = SqlCatalog("floe", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{warehouse}")
    table = catalog.load_table("floe.events")
    snapshots = []
    referenced = set()
    current = table.current_snapshot()
    only_current = len(sys.argv) > 3 and sys.argv[3] == "current"
    for snapshot in table.snapshots():
        if only_current and (current is None or snapshot.snapshot_id != current.snapshot_id):
            continue
        mine = set()
        arrow = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
        rows = arrow.to_pydict()
        key_hash_sum = 0
        for key_hash in rows["key_hash"]:
            key_hash_sum = (key_hash_sum + (key_hash & MASK)) & MASK
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        offsets = {k: int(v) for k, v in summary.items() if k.startswith("floe.offsets.")}
        mine.add(snapshot.manifest_list)
        files = []
        for manifest in snapshot.manifests(table.io):
            mine.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                files.append(entry.data_file.file_path)
                mine.add(entry.data_file.file_path)
        referenced |= mine
        snapshots.append(
            {
                "id": snapshot.snapshot_id,
                "operation": str(snapshot.summary.operation.value) if snapshot.summary else None,
                "count": arrow.num_rows,
                "distinct_keys": len(set(rows["idempotency_key"])),
                "distinct_positions": len(set(zip(rows["pipeline_partition"], rows["pipeline_offset"]))),
                "key_hash_sum": key_hash_sum,
                "offsets_total": sum(offsets.values()),
                "files": len(files),
                "duplicate_files": len(files) - len(set(files)),
                "referenced": sorted(mine),
            }
        )
    print(
        json.dumps(
            {
                "current": current.snapshot_id if current else None,
                "metadata_location": table.metadata_location,
                "snapshots": snapshots,
                "referenced": sorted(referenced),
            }
        )
    )


if __name__ == "__main__":
    main()
