#!/usr/bin/env bash
# Full-size GPT-2 shapes end to end: random-weight models in the GPT-2-small (124M) and
# GPT-2-medium (355M) shapes, HF references (float32, and the float64 truth) for "Hello." and a
# 345-token prompt with non-ASCII text, and `llorch validate --checkpoint all --layer all` on
# each: ours, PyTorch float32 and float64 against each other, with the accuracy verdict. Called by .ci/run.
#
# Models and references are cached under ~/.cache/llorch/full-size, keyed by the hash of
# everything that determines them (scripts, pins, cases, shape arguments); a fresh machine
# builds them (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
LLORCH=${LLORCH:-target/release/llorch}
CACHE="${LLORCH_CACHE:-$HOME/.cache/llorch}/full-size"
CASES=fixtures/full-size.cases.json

# name, then make_random_gpt2.py arguments
MODELS=(
    "gpt2-small-shape|--n-layer 12 --n-head 12 --n-embd 768 --seed 124 --init-range 0.05 --naming hf"
    "gpt2-medium-shape|--n-layer 24 --n-head 16 --n-embd 1024 --seed 355 --init-range 0.05 --naming openai"
)

inputs_hash() {  # the files a model and its reference are made from, plus the shape arguments
    { cat scripts/make_random_gpt2.py scripts/dump_reference.py scripts/requirements.txt "$CASES"; echo "$1"; } \
        | sha256sum | cut -c1-16
}

for entry in "${MODELS[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    dir="$CACHE/$name-$(inputs_hash "$args")"
    # Models made from older inputs are stale: drop them so the cache stays one model per shape.
    for old in "$CACHE/$name"-*; do
        if [ -e "$old" ] && [ "$old" != "$dir" ]; then rm -rf "$old"; fi
    done
    if [ ! -f "$dir/reference/manifest.json" ]; then
        echo "--- making $name ($args)"
        rm -rf "$dir"
        mkdir -p "$CACHE"
        # shellcheck disable=SC2086
        "$PYTHON" scripts/make_random_gpt2.py --out "$dir" $args
        "$PYTHON" scripts/dump_reference.py --model "$dir" --cases "$CASES" --dtype float64 \
            --out "$dir/reference-f64"
        "$PYTHON" scripts/dump_reference.py --model "$dir" --cases "$CASES" --out "$dir/reference.tmp"
        mv "$dir/reference.tmp" "$dir/reference"  # last: its manifest marks the model complete
    else
        echo "--- $name: cached in $dir"
    fi
    echo "--- validating $name: every checkpoint, every layer, both cases, both references"
    start=$SECONDS
    "$LLORCH" validate --model "$dir" --checkpoint all --layer all --mode chained,isolated
    echo "--- $name validated in $((SECONDS - start))s"
done
