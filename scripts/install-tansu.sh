#!/usr/bin/env bash
# Installs tansu, a Kafka-protocol broker from crates.io, once per machine and
# prints the path of its binary. The build takes ~23 minutes on 2 cores, so it
# is cached under ~/.cargo/floe-tools and reused whenever the version matches.
#
#   FLOE_TANSU_BIN=$(scripts/install-tansu.sh)
set -euo pipefail

version=0.6.0
root="${FLOE_TOOLS_DIR:-$HOME/.cargo/floe-tools}"
bin="$root/bin/tansu"

if [[ -x "$bin" ]] && grep -qs "^$version\$" "$root/tansu.version"; then
    echo "$bin"
    exit 0
fi

echo "installing tansu $version into $root (once per machine, ~25 min)" >&2
# dynostore + libsql give tansu its SQLite storage engine; the memory engine
# loses records (see docs/operations.md).
# The broker's speed does not matter to the tests: a cheap release profile
# (no LTO, many codegen units, opt-level 1, no debug info) cuts the build.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false CARGO_PROFILE_RELEASE_STRIP=true \
cargo install tansu --version "$version" --locked --features dynostore,libsql \
    --root "$root" >&2
echo "$version" > "$root/tansu.version"
echo "$bin"
