#!/usr/bin/env bash
# Installs floe-s3-server (tools/s3-server: s3s-fs 0.14.1's file-backed S3
# store behind an accept loop that sets TCP_NODELAY), an S3-compatible server
# over a directory, once per machine and prints the path of its binary. The
# lake tests and scripts/bench-lake-s3.sh start it on loopback as their
# object store. Cached under ~/.cargo/floe-tools and rebuilt only when the
# tool's sources change; the build takes ~2-3 minutes on 2 cores.
#
#   FLOE_S3S_BIN=$(scripts/install-s3s.sh)
set -euo pipefail
source "$(dirname "$0")/install-tool.sh"

tool="$(cd "$(dirname "$0")/../tools/s3-server" && pwd)"
# The recorded version is a digest of the sources, so an edit reinstalls.
version="$(cd "$tool" && cat Cargo.toml Cargo.lock src/*.rs | sha256sum | cut -c1-16)"
install_tool floe-s3-server "$version" "" 3 "$tool"
