#!/usr/bin/env python3
"""Checks that a committed reference dump is what its pinned script makes today (CI): the same
cases, tensor names, files and shapes, and every array within 1e-3 of a fresh dump (the slack
is for another CPU's kernels; the same machine reproduces them bit for bit).

    python scripts/compare_dumps.py FRESH_DIR COMMITTED_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    new, old = Path(sys.argv[1]), Path(sys.argv[2])
    mn, mo = (json.loads((d / "manifest.json").read_text()) for d in (new, old))
    strip = lambda m: [{k: v for k, v in c.items() if k != "tensors"} for c in m["cases"]]
    assert strip(mn) == strip(mo), f"{old}: cases differ from a fresh dump"
    assert mn.get("omitted") == mo.get("omitted"), f"{old}: omitted tensors differ from a fresh dump"
    worst = 0.0
    for cn, co in zip(mn["cases"], mo["cases"]):
        assert len(cn["tensors"]) == len(co["tensors"]), f"{old}: case {cn['name']} has another tensor count"
        for tn, to in zip(cn["tensors"], co["tensors"]):
            assert (tn["name"], tn["file"], tn["shape"]) == (to["name"], to["file"], to["shape"]), (tn, to)
            a, b = np.load(new / tn["file"]), np.load(old / to["file"])
            with np.errstate(invalid="ignore"):  # -inf - -inf: masked scores, equal on both sides
                diff = np.where(a == b, 0.0, np.abs(a - b))
            worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)))
    assert worst < 1e-3, f"{old}: an array differs from a fresh dump by {worst:.3g}"
    print(f"{old}: matches a fresh dump (largest difference {worst:.3g}, from this CPU's kernels)")


if __name__ == "__main__":
    main()
