#!/usr/bin/env python3
"""Dump llorch reference tensors from a GPT-2 forward written here on tinygrad's tensor ops.

What is whose: tinygrad has no GPT-2 in any package (its examples/gpt2.py is only in its
repository, imports a repository-only module and downloads weights), so the *model code* below
is ours — about seventy lines that follow HF's GPT-2 (Conv1D weights as [in, out], tied lm_head,
tanh GELU, a KV cache of our own). The *kernels* are tinygrad's: every number is computed by
tinygrad's Tensor operations (its matmul, layernorm, softmax, gelu, topk, sort, cumsum) compiled
by its CPU backend. It shares no code with llorch's engine or diagnose/stages.rs. It therefore
checks our engine's arithmetic against another library's kernels with the same reading of the
model; it cannot catch a misreading of GPT-2 that this file shares with ours (HF PyTorch, Flax,
keras-hub and llama.cpp, whose model code is their own, do).

Runs in the venv of scripts/requirements-others.txt (`source scripts/venv.sh --others`); tinygrad's
CPU backend compiles its kernels with clang.

    python scripts/dump_tinygrad.py --model DIR --cases cases.json --out DIR/tinygrad
    python scripts/dump_tinygrad.py --model DIR --cases cases.json --dtype float64 --out DIR/tinygrad-f64
"""

import json
import math
import os
import platform
from pathlib import Path

os.environ.setdefault("DEV", "CPU")
import numpy as np  # noqa: E402
import tinygrad  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tinygrad import Tensor, dtypes  # noqa: E402

from dump_format import (FORMAT, check_model_dir, dump_cases, dump_parser, hf_tokenizer, sampling_of,  # noqa: E402
                         stop_at_eos)

DTYPES = {"float32": (dtypes.float32, "f32"), "float64": (dtypes.float64, "f64")}


class Gpt2:
    """The checkpoint's tensors by their HF names, as tinygrad tensors of the compute dtype, and
    the model's sizes from config.json."""

    def __init__(self, model_dir, dtype):
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        self.n_layer, self.n_head, self.n_embd = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.eos = cfg.get("eos_token_id")
        self.info = {
            "n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd,
            "n_positions": cfg["n_positions"], "vocab_size": cfg["vocab_size"], "layer_norm_epsilon": self.eps,
            "n_inner": cfg.get("n_inner") or 4 * self.n_embd,
        }
        raw = load_file(str(Path(model_dir) / "model.safetensors"))
        # Checkpoints saved from GPT2LMHeadModel prefix "transformer."; GPT2Model's do not.
        self.w = {k.removeprefix("transformer."): Tensor(v.astype(np.float32)).cast(dtype).realize()
                  for k, v in raw.items()}

    def p(self, name):
        return self.w[name]


def layer_norm(x, g, b, eps):
    return x.layernorm(axis=-1, eps=eps) * g + b


def conv1d(x, w, b):
    """HF's Conv1D: x [T, in] @ w [in, out] + b."""
    return x.matmul(w) + b


def forward(m, ids, position, cache, tap):
    """The model on `ids` at positions position.. with the per-layer K/V `cache` (lists of
    [H, n, D], extended in place); `tap(checkpoint, layer, name, tensor)` sees every checkpoint
    tensor. Returns the logits [T, V]."""
    t, n_head, c = len(ids), m.n_head, m.n_embd
    d = c // n_head
    # [T, C]: token plus position embeddings
    x = m.p("wte.weight")[Tensor(ids)] + m.p("wpe.weight")[Tensor(list(range(position, position + t)))]
    tap(0, None, "embeddings", x)
    for layer in range(m.n_layer):
        at = lambda name: m.p(f"h.{layer}.{name}")  # noqa: E731
        h = layer_norm(x, at("ln_1.weight"), at("ln_1.bias"), m.eps)  # [T, C]
        tap(1, layer, "ln_1", h)
        qkv = conv1d(h, at("attn.c_attn.weight"), at("attn.c_attn.bias"))  # [T, 3C]
        q, k, v = (qkv[:, i * c:(i + 1) * c].reshape(t, n_head, d).permute(1, 0, 2) for i in range(3))  # [H, T, D]
        tap(2, layer, "q", q)
        tap(2, layer, "k", k)
        tap(2, layer, "v", v)
        keys, values = cache[layer]
        keys = k if keys is None else keys.cat(k, dim=1)  # [H, n, D], n = position + T
        values = v if values is None else values.cat(v, dim=1)
        keys, values = keys.realize(), values.realize()
        cache[layer] = (keys, values)
        tap(3, layer, "k_cache", keys)
        tap(3, layer, "v_cache", values)
        n = keys.shape[1]
        # Query i sits at position + i and sees keys 0..position + i.
        future = Tensor.arange(n).reshape(1, n) > (Tensor.arange(t) + position).reshape(t, 1)  # [T, n]
        scores = (q.matmul(keys.transpose(1, 2)) * (1.0 / math.sqrt(d))).masked_fill(future, -math.inf)  # [H, T, n]
        tap(4, layer, "scores", scores)
        probs = scores.softmax(axis=-1)  # [H, T, n]
        tap(4, layer, "attn_probs", probs)
        merged = probs.matmul(values).permute(1, 0, 2).reshape(t, c)  # [T, C]
        attn_out = conv1d(merged, at("attn.c_proj.weight"), at("attn.c_proj.bias"))
        tap(5, layer, "attn_out", attn_out)
        x = x + attn_out
        h = layer_norm(x, at("ln_2.weight"), at("ln_2.bias"), m.eps)
        tap(6, layer, "ln_2", h)
        g = conv1d(h, at("mlp.c_fc.weight"), at("mlp.c_fc.bias")).gelu(approximate="tanh")  # [T, 4C]
        tap(6, layer, "gelu", g)
        mlp_out = conv1d(g, at("mlp.c_proj.weight"), at("mlp.c_proj.bias"))
        tap(6, layer, "mlp_out", mlp_out)
        x = x + mlp_out
        tap(7, layer, "block_out", x)
    h = layer_norm(x, m.p("ln_f.weight"), m.p("ln_f.bias"), m.eps)
    tap(8, None, "ln_f", h)
    logits = h.matmul(m.p("wte.weight").transpose())  # [T, V], the lm_head tied to wte
    tap(8, None, "logits", logits)
    return logits


def warped_probs(logits, sampling):
    """Checkpoint 11: HF's warpers in `generate`'s order (temperature, top-k, top-p) on tinygrad's
    ops, then softmax. logits [V]."""
    x = logits
    if sampling["temperature"] != 1.0:
        x = x / sampling["temperature"]
    if sampling.get("top_k"):
        kth = x.topk(sampling["top_k"])[0][-1]
        x = x.masked_fill(x < kth, -math.inf)
    if sampling.get("top_p") is not None and sampling["top_p"] < 1.0:
        ascending = x.sort(descending=False)[0]
        removed = ascending.softmax().cumsum() <= 1 - sampling["top_p"]
        # HF removes the lowest tokens while their cumulative mass stays within 1 - top_p, and
        # always keeps the top one.
        cut = min(int(removed.sum().item()), x.shape[0] - 1)
        x = x.masked_fill(x < ascending[cut], -math.inf)
    return x.softmax()


def new_cache(m):
    return [(None, None) for _ in range(m.n_layer)]


def capture(m, token_ids, sampling, max_new_tokens):
    """The prompt's pass, the decode step after its argmax, checkpoint 11, and a greedy
    generation from a fresh cache. Returns (tensors, next token, generated ids)."""
    tensors = []

    def tapper(phase):
        return lambda cp, layer, name, x: tensors.append((phase, cp, layer, name, x.numpy()))

    t = len(token_ids)
    cache = new_cache(m)
    logits = forward(m, token_ids, 0, cache, tapper("prefill"))
    tensors.append(("prefill", 9, None, "selected_logits", logits[-1].numpy()))
    next_token = int(logits[-1].argmax().item())
    tensors.append(("prefill", 11, None, "probs", warped_probs(logits[-1], sampling).numpy()))
    step = forward(m, [next_token], t, cache, tapper("decode"))
    tensors.append(("decode", 9, None, "selected_logits", step[-1].numpy()))

    cache, generated = new_cache(m), []
    logits = forward(m, token_ids, 0, cache, lambda *_: None)
    while len(generated) < max_new_tokens:
        token = int(logits[-1].argmax().item())
        generated.append(token)
        if token == m.eos:  # HF's generate keeps the end-of-text token, then stops
            break
        logits = forward(m, [token], t + len(generated) - 1, cache, lambda *_: None)
    return tensors, next_token, stop_at_eos(generated, m.eos)


def generator_info(dtype):
    return {
        "name": f"tinygrad-{DTYPES[dtype][1]}",
        "script": "scripts/dump_tinygrad.py",
        "python": platform.python_version(),
        "tinygrad": tinygrad.__version__ if hasattr(tinygrad, "__version__") else "0.14.0",
        "numpy": np.__version__,
        "dtype": dtype,
        "model_code": "ours: the GPT-2 forward in scripts/dump_tinygrad.py (not tinygrad's)",
        "kernels": f"tinygrad's Tensor operations on its {Tensor.empty(1).device} backend",
    }


def main():
    p = dump_parser(__doc__)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="precision tinygrad computes in (default float32)")
    args = p.parse_args()
    check_model_dir(args.model)
    m = Gpt2(args.model, DTYPES[args.dtype][0])
    encode, decode = hf_tokenizer(args.model)
    out = Path(args.out)
    manifest = {"format": FORMAT, "generator": generator_info(args.dtype), "model": m.info, "cases": []}
    dump_cases(args, out, manifest, lambda case, ids: capture(m, ids, sampling_of(case), case["max_new_tokens"]),
               encode, decode, args.dtype)


if __name__ == "__main__":
    main()
