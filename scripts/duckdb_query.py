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
        # Arrow results: no per-value Python objects (and no pytz for
        # timestamptz), as floe's results are Arrow batches too.
        table = con.execute(sql).to_arrow_table()  # warm-up: footers, OS cache
        times = []
        for _ in range(spec["runs"]):
            started = time.perf_counter()
            table = con.execute(sql).to_arrow_table()
            times.append((time.perf_counter() - started) * 1000.0)
        out[name] = {"median_ms": statistics.median(times), "rows": table.num_rows}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
