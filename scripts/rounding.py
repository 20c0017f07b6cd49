"""The weight formats of llorch's --weights, rounded by code not written here: torch's own
conversions for BF16 and F16, and llama.cpp's gguf-py quantizer (quantize, then dequantize) for
Q8_0. dump_reference.py --weights-as FORMAT rounds a model with these before HF runs it, so that
the dump judges an engine's arithmetic on the same rounded weights.

Which tensors are rounded is llama.cpp's choice for GPT-2 (convert_hf_to_gguf.py), and llorch's:
the matrices of the products (wte, which is also the tied lm_head, and each block's c_attn,
c_proj, c_fc and mlp c_proj weights). Position embeddings, biases and LayerNorm parameters stay
float32. Q8_0's blocks of 32 run along each matrix's input dimension, as llama.cpp's do (ggml's
rows are the input dimension): along wte's rows [V, C], down the columns of a Conv1D weight
[in, out].
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch

FORMATS = ("f32", "bf16", "f16", "q8_0")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gguf_module():
    """llama.cpp's gguf-py: the one vendored with the pinned llama.cpp ($LLAMACPP_SRC, set by
    `source scripts/venv.sh --with-llamacpp`), else an installed `gguf` package."""
    src = os.environ.get("LLAMACPP_SRC")
    if src:
        sys.path.insert(0, str(Path(src) / "vendor" / "llama.cpp" / "gguf-py"))
    try:
        import gguf
    except ImportError:
        sys.exit("error: Q8_0 needs llama.cpp's gguf-py: `source scripts/venv.sh --with-llamacpp` first "
                 "(or pip install gguf)")
    return gguf


def is_rounded(name):
    """Whether a parameter of GPT2LMHeadModel (`transformer.h.0.attn.c_attn.weight`) is held in
    the format."""
    name = name.removeprefix("transformer.")
    return name == "wte.weight" or (name.startswith("h.") and name.endswith(CONV1D))


def q8_0_round(matrix, along_rows):
    """A float32 matrix quantized to Q8_0 by gguf-py and dequantized: blocks of 32 along each row
    (along_rows) or down each column."""
    gguf = gguf_module()
    m = matrix if along_rows else matrix.T
    qtype = gguf.GGMLQuantizationType.Q8_0
    rounded = gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(m), qtype), qtype)
    return np.ascontiguousarray(rounded if along_rows else rounded.T)


def rounded(matrix, fmt, along_rows):
    """A float32 numpy matrix rounded to `fmt` and widened back (Q8_0's blocks along each row,
    or down each column)."""
    if fmt == "f32":
        return matrix
    if fmt == "q8_0":
        return q8_0_round(matrix, along_rows)
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[fmt]
    return torch.from_numpy(np.ascontiguousarray(matrix)).to(dtype).to(torch.float32).numpy()


def round_model(model, fmt):
    """Rounds the model's matrices (float32 parameters) to `fmt` in place; returns a sentence for
    the manifest saying how."""
    if fmt == "f32":
        return None
    for name, param in model.named_parameters():
        if not is_rounded(name):
            continue
        assert param.dtype == torch.float32, f"{name} must be float32 before rounding"
        with torch.no_grad():
            param.copy_(torch.from_numpy(rounded(param.numpy(), fmt, along_rows=name.endswith("wte.weight"))))
        if not torch.isfinite(param).all():
            sys.exit(f"error: {name} is not finite once rounded to {fmt}")
    if fmt == "q8_0":
        gguf = gguf_module()
        # .../llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py/gguf/__init__.py when vendored
        parts = Path(gguf.__file__).parts
        origin = parts[-6] if len(parts) >= 6 and parts[-3] == "gguf-py" else "the gguf package"
        return f"gguf-py quantize + dequantize (Q8_0), llama.cpp's as vendored in {origin}"
    return f"torch {torch.__version__}: .to(torch.{ {'bf16': 'bfloat16', 'f16': 'float16'}[fmt] }).to(torch.float32)"
