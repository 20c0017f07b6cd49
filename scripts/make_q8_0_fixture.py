#!/usr/bin/env python3
"""Writes fixtures/q8_0/: float32 rows and what llama.cpp's own Q8_0 quantizer (gguf-py's
`quants.quantize`, bit-exact with ggml's quantize_row_q8_0_ref) makes of them, for llorch's
test that its Q8_0 blocks equal llama.cpp's byte for byte (`cargo test q8_0`, no Python).

The rows: the bundled model's wte rows and mlp.c_fc weight's columns (blocks as llorch and
llama.cpp cut them), random rows at many scales, and hand-made edge cases: quants at exactly
.5 (C's roundf rounds them away from zero), all-zero blocks, scales that are F16 subnormals, a
negative largest weight, and scales that round across an F16 step.

    source scripts/venv.sh --with-llamacpp
    python scripts/make_q8_0_fixture.py --model fixtures/tiny-gpt2 --out fixtures/q8_0
"""

import argparse
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from rounding import gguf_module


def edge_rows():
    rows = []
    ties = np.zeros(32, np.float32)
    ties[:6] = [127.0, 0.5, -0.5, 2.5, -1.5, 126.5]  # d = 1: quants at exact halves
    rows.append(ties)
    rows.append(np.zeros(32, np.float32))
    tiny = np.full(32, 1e-7, np.float32)  # d ~ 8e-10: an F16 subnormal scale (or zero)
    tiny[3] = -3e-6
    rows.append(tiny)
    neg = np.linspace(-1.0, 0.3, 32, dtype=np.float32)
    rows.append(neg)
    rows.append(np.full(32, 65504.0 * 100, np.float32))  # d = 51574: a large finite scale
    steps = np.arange(32, dtype=np.float32) * np.float32(1.0 + 2.0 ** -11)  # d between F16 steps
    rows.append(steps)
    return np.stack(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    gguf = gguf_module()
    tensors = load_file(str(Path(args.model) / "model.safetensors"))
    name = lambda n: n if n in tensors else f"transformer.{n}"
    wte = tensors[name("wte.weight")][:64]  # [64, C]: blocks along each row
    c_fc = tensors[name("h.0.mlp.c_fc.weight")].T  # [out, in]: blocks along the input dimension
    rng = np.random.default_rng(0)
    scaled = (rng.standard_normal((64, 64)) * 10.0 ** rng.uniform(-6, 3, (64, 1))).astype(np.float32)
    pieces = [wte, c_fc, scaled, np.tile(edge_rows(), (1, 2))]
    width = 64
    rows = np.concatenate([np.ascontiguousarray(x[:, :width], dtype=np.float32) for x in pieces])
    blocks = gguf.quants.quantize(rows, gguf.GGMLQuantizationType.Q8_0)  # [R, 2 * 34] bytes
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "weights.npy", rows)
    np.save(out / "blocks.npy", np.ascontiguousarray(blocks, dtype=np.uint8))
    print(f"wrote {rows.shape[0]} rows of {width} float32 and their Q8_0 blocks {blocks.shape} to {out}")


if __name__ == "__main__":
    main()
