#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus (see fuzz/README.md): a 1-layer,
4-wide GPT-2 (config JSON, byte 0xFF, safetensors bytes) in both tensor namings, and a
one-tensor reference dump in float32 and in float64 (manifest JSON, byte 0xFF, .npy bytes)."""

import io
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
rng = np.random.default_rng(0)
C, V, P = 4, 4, 4


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


config = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": C, "n_positions": P, "vocab_size": V,
          "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}
t = {"wte.weight": r(V, C), "wpe.weight": r(P, C), "ln_f.weight": r(C), "ln_f.bias": r(C)}
for ln in ("ln_1", "ln_2"):
    t[f"h.0.{ln}.weight"], t[f"h.0.{ln}.bias"] = r(C), r(C)
for name, n_in, n_out in [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, 4 * C),
                          ("mlp.c_proj", 4 * C, C)]:
    t[f"h.0.{name}.weight"], t[f"h.0.{name}.bias"] = r(n_in, n_out), r(n_out)

(CORPUS / "model_loader").mkdir(parents=True, exist_ok=True)
(CORPUS / "reference_loader").mkdir(parents=True, exist_ok=True)
head = json.dumps(config).encode() + b"\xff"
(CORPUS / "model_loader" / "tiny-openai-naming").write_bytes(head + save(t))
(CORPUS / "model_loader" / "tiny-hf-naming").write_bytes(head + save({"transformer." + k: v for k, v in t.items()}))

def reference_seed(dtype):
    npy = io.BytesIO()
    np.save(npy, r(2, 3).astype(dtype))
    manifest = {
        "format": "llorch-reference/2", "generator": {"dtype": dtype},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": C, "n_positions": P, "vocab_size": V,
                  "layer_norm_epsilon": 1e-5, "n_inner": 4 * C},
        "cases": [{"name": "c", "prompt": None, "token_ids": [1, 2],
                   "sampling": {"temperature": 1.0, "top_k": None, "top_p": None}, "next_token": 3,
                   "max_new_tokens": 1, "generated_ids": [3], "generated_text": None,
                   "tensors": [{"phase": "prefill", "checkpoint": 0, "layer": None, "name": "embeddings",
                                "file": "c/t.npy", "shape": [2, 3], "dtype": dtype}]}],
    }
    return json.dumps(manifest).encode() + b"\xff" + npy.getvalue()


(CORPUS / "reference_loader" / "one-tensor").write_bytes(reference_seed("float32"))
(CORPUS / "reference_loader" / "one-tensor-f64").write_bytes(reference_seed("float64"))
