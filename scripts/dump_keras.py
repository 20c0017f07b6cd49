#!/usr/bin/env python3
"""Dump llorch reference tensors from keras-hub's GPT-2 (Keras 3 on JAX).

keras-hub's `GPT2Backbone` and `GPT2CausalLM` are the Keras team's own GPT-2: their own layers
(TransformerDecoder, CachedMultiHeadAttention, ReversibleEmbedding), their own converter of the HF
checkpoint (`from_preset(DIR)` reads config.json and model.safetensors), their own cache. The
most independent authorship among the references; float32 only (its float64 run kept some op
in float32 here: logits 1.3e-6 off PyTorch's float64).

Every tensor comes from keras-hub's layers, taken from outside: each sublayer's `call` is wrapped
on its instance to keep its output (LayerNorms, the Q/K/V projections, the attention's Softmax
layer — its input is q·kᵀ/√D before the mask, which the Softmax layer applies itself — the
attention and MLP outputs, the decoder blocks). Tapping the scores takes Keras's explicit
attention path (einsum, Softmax layer), which it runs whenever scores are asked for, instead of
its fused kernel (`taps` says more). The prompt and the decode step run through
`GPT2CausalLM.call_with_cache`, the cached call its `generate` uses, with a cache of T+1 slots;
checkpoint 12 is greedy decoding through the same call. keras-hub's samplers apply one of
temperature, top-k or top-p each (not HF's chain of warpers), so checkpoint 11 is omitted.

Runs in the venv of scripts/requirements-others.txt (`source scripts/venv.sh --others`).

    python scripts/dump_keras.py --model DIR --cases cases.json --out DIR/keras
"""

import contextlib
import json
import os
import platform
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from dump_format import FORMAT, check_model_dir, dump_cases, dump_parser, hf_tokenizer  # noqa: E402

OMITTED = [{
    "phase": "prefill",
    "checkpoint": 11,
    "name": "probs",
    "reason": "keras-hub's samplers (TopKSampler, TopPSampler, ...) apply one filter each, not HF's chain of "
              "temperature, top-k and top-p warpers, so it has no tensor for checkpoint 11",
}]


@contextlib.contextmanager
def taps(backbone, seen):
    """Wraps the `call` of every sublayer whose output is a checkpoint, on its instance; each call
    appends (tap name, layer, output as numpy) to `seen`, in call order."""
    wrapped = []

    def tap(layer_obj, name, index, pick=lambda out, *a, **k: out):
        real = layer_obj.call

        def call(*args, **kwargs):
            out = real(*args, **kwargs)
            seen.append((name, index, np.asarray(pick(out, *args, **kwargs))))
            return out

        layer_obj.call = call
        wrapped.append((layer_obj, real))

    tap(backbone.embeddings_dropout, "embeddings", None)
    for i, block in enumerate(backbone.transformer_layers):
        attn = block._self_attention_layer
        tap(block._self_attention_layer_norm, "ln_1", i)
        tap(attn._query_dense, "q", i)
        tap(attn._key_dense, "k", i)
        tap(attn._value_dense, "v", i)
        tap(attn._softmax, "scores", i, pick=masked_scores)
        tap(attn._softmax, "attn_probs", i)
        tap(attn, "attn_out", i, pick=lambda out, *a, **k: out[0])  # (output, cache)
        tap(attn, "cache", i, pick=lambda out, *a, **k: out[1])  # [B, 2, slots, H, D]
        tap(block._feedforward_layer_norm, "ln_2", i)
        # GPT-2's tanh GELU is the intermediate Dense's activation: its output is the GELU's.
        tap(block._feedforward_intermediate_dense, "gelu", i)
        tap(block._feedforward_output_dense, "mlp_out", i)
        tap(block, "block_out", i, pick=lambda out, *a, **k: out[0])  # (x, cache)
    tap(backbone.layer_norm, "ln_f", None)
    # Keras runs a fused attention kernel (jax's dot_product_attention, no Softmax layer) unless
    # the scores are asked for or dropout is on; asking for them takes its explicit path, q·kᵀ by
    # einsum and its Softmax layer, whose input and output are then tapped. Same arithmetic in
    # another order: CachedMultiHeadAttention drops the scores it did not ask for.
    for block in backbone.transformer_layers:
        attn = block._self_attention_layer
        real = attn._compute_attention
        attn._compute_attention = lambda *a, real=real, **k: real(*a, **{**k, "return_attention_scores": True})
        wrapped.append((attn, None))
    try:
        yield
    finally:
        for layer_obj, real in reversed(wrapped):
            if real is None:
                del layer_obj._compute_attention
            else:
                layer_obj.call = real


def masked_scores(_out, x, mask=None):
    """The Softmax layer's input with its mask applied in the dump format's spelling: Keras puts
    -1e9 where the mask is false (inside the layer), the format wants a masked score at or below
    -1e30, so those entries are written as -inf. The unmasked entries are Keras's own values."""
    x = np.asarray(x)
    if mask is None:
        return x
    return np.where(np.broadcast_to(np.asarray(mask) > 0.5, x.shape), x, -np.inf).astype(x.dtype)


def phase_tensors(phase, seen, logits, keys):
    """The checkpoint tensors 0-9 of one pass from the taps; `keys` is how many cache slots hold
    keys after it."""
    got = {}
    for name, index, value in seen:
        got.setdefault((name, index), value)  # each tap fires once per pass
    heads = lambda x: x[0].transpose(1, 0, 2)  # [1, T, H, D] -> [H, T, D]  # noqa: E731
    tensors = [(phase, 0, None, "embeddings", got[("embeddings", None)][0])]
    layers = sorted({i for _, i, _ in seen if i is not None})
    for i in layers:
        cache = got[("cache", i)][0]  # [2, slots, H, D]
        tensors += [
            (phase, 1, i, "ln_1", got[("ln_1", i)][0]),
            (phase, 2, i, "q", heads(got[("q", i)])),
            (phase, 2, i, "k", heads(got[("k", i)])),
            (phase, 2, i, "v", heads(got[("v", i)])),
            (phase, 3, i, "k_cache", cache[0, :keys].transpose(1, 0, 2)),
            (phase, 3, i, "v_cache", cache[1, :keys].transpose(1, 0, 2)),
            (phase, 4, i, "scores", got[("scores", i)][0, :, :, :keys]),
            (phase, 4, i, "attn_probs", got[("attn_probs", i)][0, :, :, :keys]),
            (phase, 5, i, "attn_out", got[("attn_out", i)][0]),
            (phase, 6, i, "ln_2", got[("ln_2", i)][0]),
            (phase, 6, i, "gelu", got[("gelu", i)][0]),
            (phase, 6, i, "mlp_out", got[("mlp_out", i)][0]),
            (phase, 7, i, "block_out", got[("block_out", i)][0]),
        ]
    tensors += [
        (phase, 8, None, "ln_f", got[("ln_f", None)][0]),
        (phase, 8, None, "logits", logits),
        (phase, 9, None, "selected_logits", logits[-1]),
    ]
    return tensors


def empty_cache(lm, slots):
    """An empty cache as GPT2CausalLM._build_cache shapes it: [1, layers, 2, slots, H, D]."""
    b = lm.backbone
    return ops.zeros([1, b.num_layers, 2, slots, b.num_heads, b.hidden_dim // b.num_heads], dtype=lm.compute_dtype)


def run(lm, ids, cache, index):
    """keras-hub's cached call on `ids` written at cache slot `index`: (logits [T, V], cache)."""
    logits, _, cache = lm.call_with_cache(ops.convert_to_tensor([ids], dtype="int32"), cache, index)
    return np.asarray(logits)[0], cache


def capture(lm, token_ids, max_new_tokens, eos):
    """The prompt's pass, the decode step after its argmax, and greedy decoding, all through
    call_with_cache. Returns (tensors, next token, generated ids)."""
    t = len(token_ids)
    seen = []
    with taps(lm.backbone, seen):
        logits, cache = run(lm, token_ids, empty_cache(lm, t + 1), 0)
    tensors = phase_tensors("prefill", seen, logits, t)
    next_token = int(np.argmax(logits[-1]))
    seen.clear()
    with taps(lm.backbone, seen):
        step, _ = run(lm, [next_token], cache, t)
    tensors += phase_tensors("decode", seen, step, t + 1)

    logits, cache = run(lm, token_ids, empty_cache(lm, t + max_new_tokens), 0)
    generated = []
    while len(generated) < max_new_tokens:
        token = int(np.argmax(logits[-1]))
        generated.append(token)
        if token == eos:  # HF's generate keeps the end-of-text token, then stops
            break
        logits, cache = run(lm, [token], cache, t + len(generated) - 1)
    return tensors, next_token, generated


def model_info(backbone, eps):
    return {
        "n_layer": backbone.num_layers,
        "n_head": backbone.num_heads,
        "n_embd": backbone.hidden_dim,
        "n_positions": backbone.max_sequence_length,
        "vocab_size": backbone.vocabulary_size,
        "layer_norm_epsilon": eps,
        "n_inner": backbone.intermediate_dim,
    }


def generator_info():
    return {
        "name": "keras-hub-f32",
        "script": "scripts/dump_keras.py",
        "python": platform.python_version(),
        "keras_hub": keras_hub.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "dtype": "float32",
        "model_code": "keras-hub's GPT2Backbone and GPT2CausalLM, converted from the HF checkpoint by keras-hub",
        "kernels": f"Keras 3 ops on JAX/XLA ({jax.devices()[0].platform})",
    }


def main():
    p = dump_parser(__doc__)
    args = p.parse_args()
    check_model_dir(args.model)
    backbone = keras_hub.models.GPT2Backbone.from_preset(args.model, dtype="float32")
    eps = backbone.layer_norm.epsilon
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    eos = json.loads((Path(args.model) / "config.json").read_text()).get("eos_token_id")
    encode, decode = hf_tokenizer(args.model)
    out = Path(args.out)
    manifest = {"format": FORMAT, "generator": generator_info(), "model": model_info(backbone, eps),
                "omitted": OMITTED, "cases": []}
    dump_cases(args, out, manifest, lambda case, ids: capture(lm, ids, case["max_new_tokens"], eos), encode, decode)


if __name__ == "__main__":
    main()
