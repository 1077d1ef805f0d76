#!/usr/bin/env bash
# The one install function of the server binaries the tests start
# (install-tansu.sh, install-s3s.sh): `cargo install` a crate from crates.io,
# or a package of this repository (tools/), once per machine into
# ~/.cargo/floe-tools (or $FLOE_TOOLS_DIR), reused whenever the recorded
# version matches, and print the path of its binary. Sourced, not run:
#
#   source "$(dirname "$0")/install-tool.sh"
#   install_tool CRATE VERSION FEATURES MINUTES [PATH]
#
# FEATURES is the comma-separated `--features` list; MINUTES is what the
# message says the build takes. With PATH the package at PATH is installed
# and VERSION should change with its sources (see install-s3s.sh).

install_tool() {
    local crate=$1 version=$2 features=$3 minutes=$4 path=${5:-}
    local root="${FLOE_TOOLS_DIR:-$HOME/.cargo/floe-tools}"
    local bin="$root/bin/$crate"

    if [[ -x "$bin" ]] && grep -qs "^$version\$" "$root/$crate.version"; then
        echo "$bin"
        return 0
    fi

    echo "installing $crate $version into $root (once per machine, ~$minutes min)" >&2
    # The servers' speed does not matter to the tests: a cheap release
    # profile (no LTO, many codegen units, opt-level 1, no debug info) cuts
    # the build.
    local source=(--path "$path")
    [[ -n "$path" ]] || source=("$crate" --version "$version")
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
        CARGO_PROFILE_RELEASE_INCREMENTAL=false CARGO_PROFILE_RELEASE_STRIP=true \
    cargo install "${source[@]}" --locked --features "$features" --root "$root" >&2
    echo "$version" > "$root/$crate.version"
    echo "$bin"
}
