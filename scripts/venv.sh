# Sourced by .ci/run (and usable by hand): makes or reuses the Python venv with the pinned
# reference libraries and sets $PYTHON. The venv is cached under ~/.cache/llorch, keyed by the
# hash of scripts/requirements.txt, so a changed pin builds a new one; a fresh machine installs
# it from PyPI (about two minutes, ~5.6 GB).
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
