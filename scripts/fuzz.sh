#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets) for SECONDS each (default 60), starting from
# the committed seed corpus in fuzz/corpus, copied so the run does not touch the tree.
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails this script: turn it into a
# regression test in tests/errors.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in model_loader reference_loader; do
    cp -r "fuzz/corpus/$target" "$work/$target"
    echo "--- fuzzing $target for ${seconds}s"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$work/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 \
        | grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY)|panicked|ERROR" || true)
    # cargo fuzz exits non-zero on a crash, but the pipe above hides it: check for artifacts.
    if compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
        echo "fuzz target $target crashed: see fuzz/artifacts/$target/"
        exit 1
    fi
done
