# Sourced by .ci/run (and usable by hand): makes or reuses the Python venv with the pinned
# reference libraries and sets $PYTHON. The venv is cached under ~/.cache/llorch, keyed by the
# hash of scripts/requirements.txt, so a changed pin builds a new one; a fresh machine installs
# it from PyPI (about two minutes, ~5.6 GB).
#
#     source scripts/venv.sh                   # HF transformers + PyTorch
#     source scripts/venv.sh --with-llamacpp   # and llama.cpp (scripts/requirements-llamacpp.txt)
#     source scripts/venv.sh --others          # Flax, keras-hub, tinygrad: a venv of their own
#                                              # (scripts/requirements-others.txt), in $PYTHON
#
# With --with-llamacpp, llama-cpp-python is built from its source release into the same venv
# (about 4.5 minutes on 2 cores, once per pin) and the release stays unpacked at
# $LLAMACPP_SRC, whose vendor/llama.cpp holds the converter (convert_hf_to_gguf.py) that
# scripts/dump_llamacpp.py runs.
_here="$(dirname "${BASH_SOURCE[0]}")"
_cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"

# _make_venv DIR REQUIREMENTS CHECK [NO_DEPS_PIN]: keeps DIR if the Python code CHECK runs in
# it, else builds DIR afresh from REQUIREMENTS (and NO_DEPS_PIN installed without its
# dependencies).
_make_venv() {
    "$1/bin/python" -c "$3" 2>/dev/null && return 0
    echo "creating $1 from $2 (a few minutes)"
    rm -rf "$1"
    mkdir -p "$(dirname "$1")"
    python3 -m venv "$1"
    "$1/bin/pip" install --quiet --upgrade pip
    "$1/bin/pip" install --quiet -r "$2"
    if [ -n "${4:-}" ]; then "$1/bin/pip" install --quiet --no-deps "$4"; fi
}

if [ "${1:-}" = "--others" ]; then
    # transformers 4.57.6 (the last with Flax) cannot share a venv with transformers 5 and torch.
    _oreq="$_here/requirements-others.txt"
    _ovenv="$_cache/others-$(sha256sum "$_oreq" | cut -c1-16)"
    # keras-hub's pin lives in a comment: with its dependencies it would pull tensorflow-text.
    _make_venv "$_ovenv" "$_oreq" \
        "import os; os.environ['KERAS_BACKEND'] = 'jax'; import flax, jax, keras_hub, tinygrad, transformers" \
        "$(grep -o "keras-hub==[0-9.]*" "$_oreq")"
    PYTHON="$_ovenv/bin/python"
    export PYTHON
    return 0 2>/dev/null || exit 0
fi

_req="$_here/requirements.txt"
_venv="$_cache/venv-$(sha256sum "$_req" | cut -c1-16)"
_make_venv "$_venv" "$_req" "import torch, transformers, numpy, safetensors"
PYTHON="$_venv/bin/python"
export PYTHON

if [ "${1:-}" = "--with-llamacpp" ]; then
    _lreq="$_here/requirements-llamacpp.txt"
    _lpin=$(grep -o '^llama-cpp-python==[0-9.]*' "$_lreq" | cut -d= -f3)
    LLAMACPP_SRC="$_venv/src/llama_cpp_python-$_lpin"
    if ! [ -f "$LLAMACPP_SRC/vendor/llama.cpp/convert_hf_to_gguf.py" ] ||
        ! "$PYTHON" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$_lpin')" 2>/dev/null; then
        echo "building llama-cpp-python $_lpin into $_venv (about 4.5 minutes)"
        rm -rf "$_venv/src" && mkdir -p "$_venv/src"
        # Only llama-cpp-python's own source: its build tools (cmake, ninja) come as wheels.
        "$_venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$_lpin" -d "$_venv/src"
        tar -xzf "$_venv/src/llama_cpp_python-$_lpin.tar.gz" -C "$_venv/src"
        "$_venv/bin/pip" install --quiet "$LLAMACPP_SRC"
    fi
    export LLAMACPP_SRC
fi
