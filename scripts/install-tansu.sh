#!/usr/bin/env bash
# Installs tansu, a Kafka-protocol broker from crates.io, once per machine and
# prints the path of its binary. The build takes ~23 minutes on 2 cores, so it
# is cached under ~/.cargo/floe-tools and reused whenever the version matches.
#
#   FLOE_TANSU_BIN=$(scripts/install-tansu.sh)
set -euo pipefail
source "$(dirname "$0")/install-tool.sh"

# dynostore + libsql give tansu its SQLite storage engine; the memory engine
# loses records (see docs/operations.md).
install_tool tansu 0.6.0 dynostore,libsql 25
