"""The checkpoint table of llorch (tensors, masks, tolerances, accuracy rules), read from
`llorch checkpoints --format json` so that the Python side keeps no copy of its own.

The binary is $LLORCH when set, else `cargo run --release` in this repository.
"""

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load():
    """{checkpoint number: its entry}; each entry has tolerance {atol, rtol} or {exact: true},
    accuracy {k, floor} or None, and tensors [{name, shape, kind, mask}]."""
    llorch = os.environ.get("LLORCH")
    cmd = [llorch] if llorch else ["cargo", "run", "--release", "--quiet", "--"]
    try:
        out = subprocess.run(cmd + ["checkpoints", "--format", "json"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or e
        raise SystemExit(f"error: cannot read the checkpoint table from llorch ({' '.join(cmd)}): {detail}")
    try:
        return {c["checkpoint"]: c for c in json.loads(out)["checkpoints"]}
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {' '.join(cmd)} checkpoints --format json did not print the checkpoint table: {e}")


def masked(table, checkpoint, name):
    """Whether tensor `name` of `checkpoint` compares causal entries only."""
    for t in table[checkpoint]["tensors"]:
        if t["name"] == name:
            return t.get("mask") == "causal"
    raise KeyError(f"checkpoint {checkpoint} has no tensor {name!r}")
