#!/usr/bin/env bash
# Installs s3s-fs, an S3-compatible server over a directory (crates.io), once
# per machine and prints the path of its binary. The lake tests start it on
# loopback as their object store. Cached under ~/.cargo/floe-tools and reused
# whenever the version matches; the build takes ~2-3 minutes on 2 cores.
#
#   FLOE_S3S_BIN=$(scripts/install-s3s.sh)
set -euo pipefail

# 0.15 and later need a newer Rust than rust-toolchain.toml pins.
version=0.14.1
root="${FLOE_TOOLS_DIR:-$HOME/.cargo/floe-tools}"
bin="$root/bin/s3s-fs"

if [[ -x "$bin" ]] && grep -qs "^$version\$" "$root/s3s-fs.version"; then
    echo "$bin"
    exit 0
fi

echo "installing s3s-fs $version into $root (once per machine, ~3 min)" >&2
# `binary` builds the command-line server. The server's speed does not matter
# to the tests: the same cheap release profile as for tansu.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false CARGO_PROFILE_RELEASE_STRIP=true \
cargo install s3s-fs --version "$version" --locked --features binary \
    --root "$root" >&2
echo "$version" > "$root/s3s-fs.version"
echo "$bin"
