#!/usr/bin/env bash
# Installs s3s-fs, an S3-compatible server over a directory (crates.io), once
# per machine and prints the path of its binary. The lake tests start it on
# loopback as their object store. Cached under ~/.cargo/floe-tools and reused
# whenever the version matches; the build takes ~2-3 minutes on 2 cores.
#
#   FLOE_S3S_BIN=$(scripts/install-s3s.sh)
set -euo pipefail
source "$(dirname "$0")/install-tool.sh"

# 0.15 and later need a newer Rust than rust-toolchain.toml pins; `binary`
# builds the command-line server.
install_tool s3s-fs 0.14.1 binary 3
