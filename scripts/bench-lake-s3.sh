#!/usr/bin/env bash
# `floe bench land` and `floe bench query` on the local lake (SQLite catalog +
# local files) and on REST catalog + S3 on loopback (`floe catalog serve` over
# s3s-fs), each pair in the same run; see docs/benchmarks.md.
#
#   FLOE=target/release/floe EVENTS=200000 QUERY_EVENTS=1000000 scripts/bench-lake-s3.sh
set -euo pipefail
FLOE=${FLOE:-target/release/floe}
EVENTS=${EVENTS:-200000}
QUERY_EVENTS=${QUERY_EVENTS:-1000000}
QUERY_ENTITIES=${QUERY_ENTITIES:-$((QUERY_EVENTS / 5))}
RUNS=${RUNS:-7}
S3S=${FLOE_S3S_BIN:-$("$(dirname "$0")/install-s3s.sh")}
S3_PORT=${S3_PORT:-19601}
CATALOG_PORT=${CATALOG_PORT:-19602}
W=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/s3/lake"
"$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key bench --secret-key bench-secret "$W/s3" \
    >"$W/s3.log" 2>&1 &
pids+=($!)
props="[lake.properties]
\"s3.endpoint\" = \"http://127.0.0.1:$S3_PORT\"
\"s3.access-key-id\" = \"bench\"
\"s3.secret-access-key\" = \"bench-secret\"
\"s3.region\" = \"us-east-1\"
\"s3.path-style-access\" = \"true\""

# A REST catalog of its own (SQLite under $W/NAME) over s3://lake/NAME, and
# a floe configuration pointing at it: $W/NAME/floe.toml.
serve_catalog() {
    local name=$1 port=$2
    mkdir -p "$W/$name"
    cat >"$W/$name/catalog.toml" <<EOT
data_dir = "$W/$name/catalog"
[lake]
catalog = "sqlite://$W/$name/catalog/catalog.db"
warehouse = "s3://lake/$name"
$props
EOT
    cat >"$W/$name/floe.toml" <<EOT
data_dir = "$W/$name/floe"
[lake]
catalog = "rest://127.0.0.1:$port"
warehouse = "s3://lake/$name"
$props
EOT
    "$FLOE" --config "$W/$name/catalog.toml" catalog serve --listen "127.0.0.1:$port" \
        >"$W/$name/catalog.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        grep -qs "listening on" "$W/$name/catalog.log" && return 0
        sleep 0.1
    done
    echo "floe catalog serve did not start: $(cat "$W/$name/catalog.log")" >&2
    exit 1
}

for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && break; sleep 0.1; done

serve_catalog land "$CATALOG_PORT"
"$FLOE" --config "$W/land/floe.toml" bench land --events "$EVENTS" --configured-lake

serve_catalog query "$((CATALOG_PORT + 1))"
"$FLOE" --config "$W/query/floe.toml" bench query --events "$QUERY_EVENTS" \
    --entities "$QUERY_ENTITIES" --runs "$RUNS" --configured-lake
