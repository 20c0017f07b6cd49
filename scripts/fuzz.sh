#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets) for SECONDS each (default 60), starting from
# the committed seed corpus in fuzz/corpus, copied so the run does not touch the tree.
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# A crash fails this script and leaves its input in fuzz/artifacts/TARGET/: turn it into a
# regression test in tests/it/errors.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in model_loader reference_loader; do
    cp -r "fuzz/corpus/$target" "$work/$target"
    log="$work/$target.log"
    echo "--- fuzzing $target for ${seconds}s"
    if ! (cd fuzz && cargo fuzz run "$target" "$work/$target" -- \
            -max_total_time="$seconds" -rss_limit_mb=4096 > "$log" 2>&1); then
        tail -n 60 "$log"
        echo "fuzz target $target failed: the crashing input is in fuzz/artifacts/$target/"
        exit 1
    fi
    # The run must have happened, not merely exited 0.
    grep -E "^Done [0-9]+ runs in" "$log"
done
