#!/usr/bin/env bash
# Full-size GPT-2 shapes end to end: random-weight models in the GPT-2-small (124M) and
# GPT-2-medium (355M) shapes, HF references (float32, and the float64 truth) for "Hello." and a
# 345-token prompt with non-ASCII text, and `llorch validate --checkpoint all --layer all` on
# each: ours, PyTorch float32 and float64 against each other, with the accuracy verdict. On the
# small shape, llama.cpp too (scripts/dump_llamacpp.py): a three-way run in which llama.cpp must
# first deviate at layer 0's GELU and ours and PyTorch nowhere. Called by .ci/run.
#
# Models and references are cached under ~/.cache/llorch/full-size, keyed by the hash of
# everything that determines them (scripts, pins, cases, shape arguments); a fresh machine
# builds them (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh --with-llamacpp
LLORCH=${LLORCH:-target/release/llorch}
CACHE="${LLORCH_CACHE:-$HOME/.cache/llorch}/full-size"
CASES=fixtures/full-size.cases.json
# The shapes llama.cpp is dumped and checked on as a peer.
PEER_MODELS=(gpt2-small-shape)

# name, then make_random_gpt2.py arguments
MODELS=(
    "gpt2-small-shape|--n-layer 12 --n-head 12 --n-embd 768 --seed 124 --init-range 0.05 --naming hf"
    "gpt2-medium-shape|--n-layer 24 --n-head 16 --n-embd 1024 --seed 355 --init-range 0.05 --naming openai"
)

inputs_hash() {  # the files a model and its reference are made from, plus the shape arguments
    { cat scripts/make_random_gpt2.py scripts/dump_reference.py scripts/dump_format.py scripts/requirements.txt \
        "$CASES"; echo "$1"; } \
        | sha256sum | cut -c1-16
}

declare -A DIRS  # name -> its model directory
for entry in "${MODELS[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    dir="$CACHE/$name-$(inputs_hash "$args")"
    DIRS[$name]=$dir
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

for name in "${PEER_MODELS[@]}"; do
    dir=${DIRS[$name]}
    key=$({ cat scripts/dump_llamacpp.py scripts/dump_format.py scripts/requirements-llamacpp.txt "$CASES"; } \
        | sha256sum | cut -c1-16)
    peer="$dir/llamacpp-$key"
    if [ ! -f "$peer/manifest.json" ]; then
        echo "--- dumping llama.cpp's tensors for $name"
        rm -rf "$dir"/llamacpp-*
        "$PYTHON" scripts/dump_llamacpp.py --model "$dir" --cases "$CASES" --out "$peer.tmp"
        mv "$peer.tmp" "$peer"
    fi
    echo "--- validating $name three ways: ours, PyTorch (float32, float64) and llama.cpp"
    report=$(mktemp)
    set +e
    "$LLORCH" validate --model "$dir" --reference "$dir/reference" --reference "$dir/reference-f64" \
        --reference "$peer" --checkpoint all --layer all -q --format json -o "$report"
    code=$?
    set -e
    [ "$code" = 1 ] || { echo "expected exit 1 (llama.cpp's GELU is outside the tolerances), got $code"; exit 1; }
    "$PYTHON" scripts/check_peer.py "$report" --peer llama.cpp-f32 --first prefill:6:0:gelu
    rm -f "$report"
done
