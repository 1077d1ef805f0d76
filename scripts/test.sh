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
    # A cheap release profile, as for tansu: the runner's speed is not what
    # the tests measure.
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
        CARGO_PROFILE_RELEASE_INCREMENTAL=false \
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
    # Clippy lints floe's own crates while they compile for the tests, as
    # the compiler of the workspace members (what `cargo clippy` does, with
    # the same `-D warnings`). `cargo clippy` on its own would type-check
    # every dependency a second time, in metadata-only mode that the test
    # build cannot reuse: ~6 minutes on 2 cores (docs/benchmarks.md).
    RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
    CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
    export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
fi

# Embedding floe must not compile the server's or the command line's
# dependencies: the library without default features names none of them
# and builds.
log "the library without the server and the CLI"
forbidden='^(axum|clap|indicatif|hdrhistogram|prometheus|prometheus-client) '
lib_deps="$(cargo tree -p floe --no-default-features -e normal --prefix none --format '{p}' --locked)"
if grep -E "$forbidden" <<<"$lib_deps"; then
    echo "error: the floe library (no default features) depends on the crates above" >&2
    exit 1
fi
cargo check -p floe --no-default-features --lib --locked

log "building (and linting) every target"
cargo nextest run --workspace --all-features --locked --no-run
# nextest builds no benchmarks; this lints them and checks that they build.
cargo test --workspace --all-features --locked --benches --no-run

# The decoders of what floe reads from disk, fuzzed for a bounded time
# (scripts/fuzz.sh; its own small build: the embedded log without the sink).
if [[ "${FLOE_FUZZ_SECONDS:-30}" != 0 ]]; then
    log "fuzz (${FLOE_FUZZ_SECONDS:-30}s per target)"
    # Its own workspace and flags: built by plain rustc, not the lint wrapper.
    env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS scripts/fuzz.sh "${FLOE_FUZZ_SECONDS:-30}"
fi

log "doc tests"
cargo test --workspace --all-features --locked --doc

# Last, so that the run ends on nextest's summary of every test.
log "cargo nextest run"
cargo nextest run --workspace --all-features --locked --no-fail-fast
