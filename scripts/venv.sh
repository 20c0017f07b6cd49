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
if [ "${1:-}" = "--others" ]; then
    # transformers 4.57.6 (the last with Flax) cannot share a venv with transformers 5 and torch.
    _oreq="$(dirname "${BASH_SOURCE[0]}")/requirements-others.txt"
    _okey=$(sha256sum "$_oreq" | cut -c1-16)
    _ovenv="${LLORCH_CACHE:-$HOME/.cache/llorch}/others-$_okey"
    if ! KERAS_BACKEND=jax "$_ovenv/bin/python" -c "import flax, jax, keras_hub, tinygrad, transformers" 2>/dev/null; then
        echo "creating $_ovenv from $_oreq (about two minutes)"
        rm -rf "$_ovenv"
        mkdir -p "$(dirname "$_ovenv")"
        python3 -m venv "$_ovenv"
        "$_ovenv/bin/pip" install --quiet --upgrade pip
        "$_ovenv/bin/pip" install --quiet -r "$_oreq"
        "$_ovenv/bin/pip" install --quiet --no-deps "$(grep -o "keras-hub==[0-9.]*" "$_oreq")"
    fi
    PYTHON="$_ovenv/bin/python"
    export PYTHON
    return 0 2>/dev/null || exit 0
fi

_req="$(dirname "${BASH_SOURCE[0]}")/requirements.txt"
_key=$(sha256sum "$_req" | cut -c1-16)
_venv="${LLORCH_CACHE:-$HOME/.cache/llorch}/venv-$_key"
if ! "$_venv/bin/python" -c "import torch, transformers, numpy, safetensors" 2>/dev/null; then
    echo "creating $_venv from $_req"
    rm -rf "$_venv"
    mkdir -p "$(dirname "$_venv")"
    python3 -m venv "$_venv"
    "$_venv/bin/pip" install --quiet --upgrade pip
    "$_venv/bin/pip" install --quiet -r "$_req"
fi
PYTHON="$_venv/bin/python"
export PYTHON

if [ "${1:-}" = "--with-llamacpp" ]; then
    _lreq="$(dirname "${BASH_SOURCE[0]}")/requirements-llamacpp.txt"
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
