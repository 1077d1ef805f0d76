#!/usr/bin/env bash
# A bounded fuzz run of the decoders of what floe reads from disk (fuzz/):
# the embedded log's segment check (frames, torn tail vs corruption) and the
# binary event codec. Installs cargo-fuzz if missing (cached in ~/.cargo/bin).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 30 (or FLOE_FUZZ_SECONDS)
#
# A crash fails the run and leaves the input in fuzz/artifacts/<target>/:
# fix the bug and add the input as a regression test.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-${FLOE_FUZZ_SECONDS:-30}}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz builds with nightly-only flags (-Zsanitizer=address, coverage
# passes); the pinned stable toolchain accepts them under RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in log_frames event_codec; do
    # Fuzz from a copy of the checked-in seeds, so the run leaves no files.
    work="$(mktemp -d)"
    cp corpus/"$target"/* "$work"/
    echo "==> fuzzing $target for ${seconds}s"
    log="$work.log"
    if ! cargo fuzz run -O "$target" "$work" -- -max_total_time="$seconds" -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E "^(INFO: seed corpus|Done)" "$log" || true
    rm -rf "$work" "$log"
done
