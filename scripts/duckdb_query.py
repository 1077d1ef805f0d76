"""The DuckDB side of `floe bench query`: runs SQL over `read_parquet` of the
same data files floe's query reads, and prints each query's median time and
row count as JSON.

    python duckdb_query.py SPEC.json

SPEC: {"files": [...], "runs": N, "queries": {"name": "SQL with {events}"}}.
`{events}` is replaced by read_parquet over the files.
"""

import json
import statistics
import sys
import time

import duckdb


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    con = duckdb.connect()
    files = ", ".join("'" + p.replace("'", "''") + "'" for p in spec["files"])
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet([{files}])")
    out = {"threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}
    for name, sql in spec["queries"].items():
        sql = sql.replace("{events}", "events")
        rows = con.execute(sql).fetchall()  # warm-up: footers and OS cache
        times = []
        for _ in range(spec["runs"]):
            started = time.perf_counter()
            rows = con.execute(sql).fetchall()
            times.append((time.perf_counter() - started) * 1000.0)
        out[name] = {"median_ms": statistics.median(times), "rows": len(rows), "first": [str(v) for v in rows[0]] if rows else []}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
