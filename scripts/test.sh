#!/usr/bin/env bash
# Runs every floe test. Works on a fresh machine: it installs what the tests
# need (cargo-nextest if missing) and reuses what an earlier run installed.
#
#   scripts/test.sh            lint + all tests + a bounded fuzz run
#   FLOE_SKIP_LINT=1 scripts/test.sh   tests only
#   FLOE_FUZZ_SECONDS=N        seconds per fuzz target (default 30; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

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

# The decoders of what floe reads from disk, fuzzed for a bounded time
# (scripts/fuzz.sh; its own small build: the embedded log without the sink).
if [[ "${FLOE_FUZZ_SECONDS:-30}" != 0 ]]; then
    log "fuzz (${FLOE_FUZZ_SECONDS:-30}s per target)"
    scripts/fuzz.sh "${FLOE_FUZZ_SECONDS:-30}"
fi

log "doc tests"
cargo test --workspace --all-features --locked --doc

# Last, so that the run ends on nextest's summary of every test.
log "cargo nextest run"
cargo nextest run --workspace --all-features --locked --no-fail-fast
