#!/usr/bin/env bash
# floe bench land: local lake vs REST catalog + S3 (s3s-fs) on loopback, one run.
set -euo pipefail
FLOE=${FLOE:-target/release/floe}
EVENTS=${EVENTS:-200000}
W=$(mktemp -d)
mkdir -p "$W/s3/lake"
~/.cargo/floe-tools/bin/s3s-fs --host 127.0.0.1 --port 19601 --access-key bench --secret-key bench-secret "$W/s3" >"$W/s3.log" 2>&1 &
S3=$!
props='[lake.properties]
"s3.endpoint" = "http://127.0.0.1:19601"
"s3.access-key-id" = "bench"
"s3.secret-access-key" = "bench-secret"
"s3.region" = "us-east-1"
"s3.path-style-access" = "true"'
cat >"$W/catalog.toml" <<EOT
data_dir = "$W/catalog"
[lake]
catalog = "sqlite://$W/catalog/catalog.db"
warehouse = "s3://lake/warehouse"
$props
EOT
cat >"$W/floe.toml" <<EOT
data_dir = "$W/floe"
[lake]
catalog = "rest://127.0.0.1:19602"
warehouse = "s3://lake/warehouse"
$props
EOT
sleep 1
"$FLOE" --config "$W/catalog.toml" catalog serve --listen 127.0.0.1:19602 >"$W/catalog.log" 2>&1 &
CAT=$!
sleep 2
"$FLOE" --config "$W/floe.toml" bench land --events "$EVENTS" --configured-lake || true
kill "$CAT" "$S3"
wait "$CAT" "$S3" 2>/dev/null || true
rm -rf "$W"
