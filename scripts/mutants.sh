#!/usr/bin/env bash
# The validator's mutation score: cargo-mutants over the engine (src/engine), each mutant judged
# by the bundled validation alone (tests/validation_gate.rs, .cargo/mutants.toml), never by the
# unit tests. A mutant the validation fails is caught; one it passes survived (missed), and is
# either triaged (mutants/equivalent.tsv says why no validation can fail it) or a gap in the
# validation.
#
#   scripts/mutants.sh                      every mutant (about a thousand: hours on 2 cores)
#   scripts/mutants.sh --shard 3/8          one eighth of them (round robin over the mutants), so
#                                           that the run can be spread over machines or days
#   scripts/mutants.sh --in-diff REV        only the mutants in code changed since REV (CI)
#   scripts/mutants.sh --time-limit 10      stop after 10 minutes and summarise what ran
#   scripts/mutants.sh --fail-on-gap        exit 1 if a missed mutant is not triaged (CI)
#   scripts/mutants.sh -- -F default_       the rest goes to cargo mutants (here: only the
#                                           mutants whose names match default_)
#   scripts/mutants.sh --in-place           mutate this checkout itself, not a copy (quicker
#                                           with a warm target/; do not edit it meanwhile)
#
# Then scripts/mutants_summary.py prints caught / missed / timeout / unviable and, for the
# caught, whether the first failing row of the validation is the mutated function's stage. With
# --record FILE the summary's per-mutant lines are merged into FILE (mutants/results.tsv), the
# record README's score is computed from.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 2; }
shard="" diff_base="" minutes="" out="${LLORCH_MUTANTS_OUT:-target/mutants}" record="" where=(--copy-target=true) gate=() extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --shard) shard="${2:?--shard needs K/N}"; shift 2 ;;
        --in-diff) diff_base="${2:?--in-diff needs a git revision}"; shift 2 ;;
        --time-limit) minutes="${2:?--time-limit needs minutes}"; shift 2 ;;
        --output) out="${2:?--output needs a directory}"; shift 2 ;;
        --record) record="${2:?--record needs a file}"; shift 2 ;;
        --in-place) where=(--in-place); shift ;;
        --fail-on-gap) gate=(--fail-on-gap); shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) usage ;;
        *) echo "mutants.sh: unknown argument $1" >&2; usage ;;
    esac
done
if ! command -v cargo-mutants > /dev/null; then
    echo "mutants.sh: cargo-mutants is not installed: cargo install cargo-mutants --locked --version 27.1.0" >&2
    exit 2
fi

args=(mutants --no-shuffle --minimum-test-timeout 60 "${where[@]}" --output "$out" "${extra[@]}")
if [[ -n "$shard" ]]; then
    args+=(--shard "$shard" --sharding round-robin)
fi
if [[ -n "$diff_base" ]]; then
    mkdir -p "$out"
    git diff "$diff_base" -- src/engine > "$out/engine.diff"
    if [[ ! -s "$out/engine.diff" ]]; then
        echo "mutants.sh: src/engine is unchanged since $diff_base: no mutants to run"
        exit 0
    fi
    args+=(--in-diff "$out/engine.diff")
    # A change of comments or of lines with nothing to mutate has no mutants: cargo-mutants then
    # stops before writing any outcome.
    if [[ -z "$(cargo mutants --list --in-diff "$out/engine.diff" 2> /dev/null)" ]]; then
        echo "mutants.sh: the engine code changed since $diff_base has no mutants"
        exit 0
    fi
fi

if [[ ${where[0]} == --in-place ]]; then
    # A run stopped mid-mutant (the time limit, ^C) can leave rustc's incremental state of that
    # mutant's build behind, which a later build reused here: a baseline that failed with the
    # source clean. Build llorch afresh.
    cargo clean --quiet --package llorch
fi
mkdir -p "$out"
git rev-parse --short HEAD > "$out/commit"  # the record's commit (mutants_summary.py --record)
status=0
if [[ -n "$minutes" ]]; then
    # cargo-mutants writes its outcomes after every mutant, so a run stopped here (SIGINT: it
    # cleans up its build directories) still has a summary of the mutants it finished.
    timeout --signal=INT --kill-after=60 "$((minutes * 60))" cargo "${args[@]}" || status=$?
else
    cargo "${args[@]}" || status=$?
fi
# cargo-mutants: 0 every mutant caught, 2 some missed, 3 some timed out, 4 the baseline failed.
if [[ $status -ne 0 && $status -ne 2 && $status -ne 3 && $status -ne 124 && $status -ne 130 ]]; then
    echo "mutants.sh: cargo mutants failed (exit $status); see $out/mutants.out/debug.log" >&2
    exit 2
fi
summary=(python3 scripts/mutants_summary.py "$out/mutants.out" "${gate[@]}")
if [[ -n "$record" ]]; then
    summary+=(--record "$record")
fi
"${summary[@]}"
