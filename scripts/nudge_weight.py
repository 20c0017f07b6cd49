#!/usr/bin/env python3
"""Copy an HF GPT-2 model directory with one weight nudged, to see llorch catch a reference
that disagrees: dump a reference from the copy and validate the original against it and its
own references.

    python scripts/nudge_weight.py --model DIR --out DIR --tensor h.2.mlp.c_fc.weight --by 1e-3

The element nudged is the tensor's first; the tensor name may be given with or without the
"transformer." prefix.
"""

import argparse
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model directory to copy")
    p.add_argument("--out", required=True, help="directory to write the nudged copy to")
    p.add_argument("--tensor", required=True, help='weight to nudge, e.g. "h.2.mlp.c_fc.weight"')
    p.add_argument("--by", type=float, default=1e-3, help="amount added to its first element (default 1e-3)")
    args = p.parse_args()

    src, out = Path(args.model), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("reference*"))
    weights = load_file(src / "model.safetensors")
    name = next((n for n in (args.tensor, f"transformer.{args.tensor}", args.tensor.removeprefix("transformer."))
                 if n in weights), None)
    if name is None:
        sys.exit(f"error: {src / 'model.safetensors'} has no tensor {args.tensor!r}")
    weights[name].view(-1)[0] += args.by
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    print(f"{out}: {name}[0] nudged by {args.by}", file=sys.stderr)


if __name__ == "__main__":
    main()
