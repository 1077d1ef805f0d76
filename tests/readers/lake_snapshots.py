"""Independent reader for lake maintenance tests: opens floe's SQLite catalog
with pyiceberg and prints one JSON object describing every live snapshot of
floe.events (rows, distinct idempotency keys, distinct pipeline positions,
the offsets in its summary, its data files and whether any is listed twice)
and every file the snapshots reference.

    python lake_snapshots.py CATALOG_DB WAREHOUSE_DIR [current|id=ID|replaces]

With `current`, only the current snapshot is read (`id=ID`: that one); with
`replaces`, only the
`replace` snapshots, their parents and the current one. `history` lists every
snapshot's id, parent and operation either way.
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
    mode = sys.argv[3] if len(sys.argv) > 3 else "all"
    history = [
        {
            "id": s.snapshot_id,
            "parent": s.parent_snapshot_id,
            "operation": str(s.summary.operation.value) if s.summary else None,
        }
        for s in table.snapshots()
    ]
    wanted = None
    if mode == "current":
        wanted = {current.snapshot_id} if current else set()
    elif mode.startswith("id="):
        wanted = {int(mode[3:])}
    elif mode == "replaces":
        wanted = {current.snapshot_id} if current else set()
        for h in history:
            if h["operation"] == "replace":
                wanted.add(h["id"])
                if h["parent"] is not None:
                    wanted.add(h["parent"])
    for snapshot in table.snapshots():
        if wanted is not None and snapshot.snapshot_id not in wanted:
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
                "history": history,
                "referenced": sorted(referenced),
            }
        )
    )


if __name__ == "__main__":
    main()
