#!/usr/bin/env bash
# Runs every floe test. Works on a fresh machine: it installs what the tests
# need (cargo-nextest if missing) and reuses what an earlier run installed.
#
#   scripts/test.sh            lint + all tests
#   FLOE_SKIP_LINT=1 scripts/test.sh   tests only
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

# The cluster tests start their own etcd (Debian's etcd-server, 3.4); building
# the etcd client runs protoc (protobuf-compiler). Both install in seconds.
apt_install() {
    if [[ -z "${FLOE_APT_UPDATED:-}" ]]; then
        apt-get update -qq
        FLOE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v etcd >/dev/null 2>&1 && [[ -z "${FLOE_ETCD_BIN:-}" ]]; then
    log "installing etcd"
    apt_install etcd-server
fi
if ! command -v protoc >/dev/null 2>&1 && [[ -z "${PROTOC:-}" ]]; then
    log "installing protoc"
    apt_install protobuf-compiler
fi
FLOE_ETCD_BIN="${FLOE_ETCD_BIN:-$(command -v etcd)}"
export FLOE_ETCD_BIN

# The Kafka tests start their own broker from this binary; the reader tests
# run Python clients from this interpreter. Both are cached across runs.
FLOE_TANSU_BIN="${FLOE_TANSU_BIN:-$(scripts/install-tansu.sh)}"
FLOE_PYTHON="${FLOE_PYTHON:-$(scripts/python-env.sh)}"
export FLOE_TANSU_BIN FLOE_PYTHON
# Tests that need the broker or the readers fail (never skip) when these are
# missing and FLOE_REQUIRE_SERVICES is set, as it is here.
export FLOE_REQUIRE_SERVICES=1

if [[ -z "${FLOE_SKIP_LINT:-}" ]]; then
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy"
    cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
fi

log "doc tests"
cargo test --workspace --all-features --locked --doc

# Last, so that the run ends on nextest's summary of every test.
log "cargo nextest run"
cargo nextest run --workspace --all-features --locked --no-fail-fast
