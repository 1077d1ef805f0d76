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
# On a fresh machine the broker's build (~25 minutes) runs in the background
# while floe builds: the two builds' serial stretches (a single crate
# compiling, linking) leave a core idle that the other one fills. The tests
# wait for it below.
tansu_pid=""
if [[ -z "${FLOE_TANSU_BIN:-}" ]]; then
    tansu_out="$(mktemp)"
    tansu_log="$(mktemp)"
    scripts/install-tansu.sh >"$tansu_out" 2>"$tansu_log" &
    tansu_pid=$!
fi
wait_for_tansu() {
    [[ -n "$tansu_pid" ]] || return 0
    if ! wait "$tansu_pid"; then
        cat "$tansu_log" >&2
        echo "error: installing the test broker (tansu) failed" >&2
        exit 1
    fi
    tansu_pid=""
    FLOE_TANSU_BIN="$(cat "$tansu_out")"
    rm -f "$tansu_out" "$tansu_log"
    export FLOE_TANSU_BIN
}
# The lake tests start their own S3-compatible server (floe-s3-server over
# s3s-fs, ~3 minutes to build once, cached like tansu), installed in the
# background too.
s3s_pid=""
if [[ -z "${FLOE_S3S_BIN:-}" ]]; then
    s3s_out="$(mktemp)"
    s3s_log="$(mktemp)"
    scripts/install-s3s.sh >"$s3s_out" 2>"$s3s_log" &
    s3s_pid=$!
fi
wait_for_s3s() {
    [[ -n "$s3s_pid" ]] || return 0
    if ! wait "$s3s_pid"; then
        cat "$s3s_log" >&2
        echo "error: installing the test object store (floe-s3-server) failed" >&2
        exit 1
    fi
    s3s_pid=""
    FLOE_S3S_BIN="$(cat "$s3s_out")"
    rm -f "$s3s_out" "$s3s_log"
    export FLOE_S3S_BIN
}
FLOE_PYTHON="${FLOE_PYTHON:-$(scripts/python-env.sh)}"
export FLOE_PYTHON
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
# etcd-client's gRPC transport (tonic) links axum's router; floe's own HTTP
# server must not: axum may appear in the tree only below tonic.
if grep -E "$forbidden" <<<"$lib_deps" | grep -v '^axum '; then
    echo "error: the floe library (no default features) depends on the crates above" >&2
    exit 1
fi
if cargo tree -p floe --no-default-features -e normal -i axum --locked 2>/dev/null \
    | grep -E '^[├└]── floe v' >/dev/null; then
    echo "error: the floe library (no default features) depends on axum directly" >&2
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

log "waiting for the test broker and object store"
wait_for_tansu
echo "tansu: $FLOE_TANSU_BIN"
wait_for_s3s
echo "floe-s3-server: $FLOE_S3S_BIN"

log "doc tests"
cargo test --workspace --all-features --locked --doc

# Last, so that the run ends on nextest's summary of every test.
log "cargo nextest run"
cargo nextest run --workspace --all-features --locked --no-fail-fast
