"""Independent check of a GDPR erase: looks for the erased entity's bytes in
every file of the warehouse and in every snapshot pyiceberg can read.

    python erase_check.py CATALOG_DB WAREHOUSE_DIR ENTITY_ID NEEDLE...

Each file is searched raw, then decoded: Parquet with pyarrow (pages are
zstd-compressed, so every value and every column statistic is compared),
Avro (manifests, manifest lists) block by block after its codec. Every live
snapshot is scanned with pyiceberg for rows of ENTITY_ID. Prints one JSON
object: the files holding a needle (raw or decoded), the snapshots holding a
row of the entity, and the current snapshot's rows per entity id.
"""

import json
import os
import sys
import zlib

import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog

MAGIC = b"Obj\x01"


def read_long(data: bytes, at: int) -> tuple[int, int]:
    """Avro zig-zag varint."""
    shift, value = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), at


def avro_blocks(data: bytes) -> list[bytes]:
    """The decompressed data blocks of an Avro object container file."""
    if not data.startswith(MAGIC):
        raise ValueError("not an Avro container")
    at = len(MAGIC)
    meta = {}
    while True:
        count, at = read_long(data, at)
        if count == 0:
            break
        if count < 0:
            _, at = read_long(data, at)
            count = -count
        for _ in range(count):
            n, at = read_long(data, at)
            key = data[at : at + n].decode()
            at += n
            n, at = read_long(data, at)
            meta[key] = data[at : at + n]
            at += n
    at += 16  # sync marker
    codec = meta.get("avro.codec", b"null").decode()
    blocks = [json.dumps({k: v.decode(errors="replace") for k, v in meta.items()}).encode()]
    while at < len(data):
        _, at = read_long(data, at)
        size, at = read_long(data, at)
        block = data[at : at + size]
        at += size + 16
        if codec == "null":
            blocks.append(block)
        elif codec == "deflate":
            blocks.append(zlib.decompress(block, -15))
        else:
            raise ValueError(f"Avro codec {codec} is not handled by this check")
    return blocks


def parquet_texts(path: str) -> list[bytes]:
    """Every value and every column statistic of a Parquet file, as bytes."""
    texts = []
    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            stats = group.column(c).statistics
            if stats is not None and stats.has_min_max:
                texts.append(str(stats.min).encode())
                texts.append(str(stats.max).encode())
    table = parquet.read()
    for column in table.columns:
        for value in column.to_pylist():
            if value is not None:
                texts.append(str(value).encode())
    return texts


def main() -> None:
    catalog_db, warehouse, entity_id = sys.argv[1], sys.argv[2], sys.argv[3]
    needles = [n.encode() for n in sys.argv[3:]]
    raw_hits, decoded_hits, files = [], [], 0
    for root, _, names in os.walk(warehouse):
        for name in names:
            path = os.path.join(root, name)
            files += 1
            data = open(path, "rb").read()
            if any(n in data for n in needles):
                raw_hits.append(path)
            if name.endswith(".parquet"):
                decoded = parquet_texts(path)
            elif name.endswith(".avro"):
                decoded = avro_blocks(data)
            else:
                decoded = [data]
            if any(n in d for d in decoded for n in needles):
                decoded_hits.append(path)

    catalog = SqlCatalog("floe", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{warehouse}")
    table = catalog.load_table("floe.events")
    snapshot_hits, snapshots = [], 0
    for snapshot in table.snapshots():
        snapshots += 1
        ids = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow().column("entity_id").to_pylist()
        if entity_id in ids:
            snapshot_hits.append(snapshot.snapshot_id)
    current = table.current_snapshot()
    rows = {}
    if current is not None:
        for i in table.scan().to_arrow().column("entity_id").to_pylist():
            rows[i] = rows.get(i, 0) + 1
    print(
        json.dumps(
            {
                "files": files,
                "raw_hits": sorted(raw_hits),
                "decoded_hits": sorted(decoded_hits),
                "snapshots": snapshots,
                "snapshot_hits": snapshot_hits,
                "current_rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
