#!/usr/bin/env python3
"""Dump llorch reference tensors from Hugging Face's Flax GPT-2 (JAX, XLA's CPU kernels).

`FlaxGPT2LMHeadModel` is HF's separate Flax implementation of GPT-2 (modeling_flax_gpt2.py,
transformers 4.57.6, the last release with Flax), not a port of the PyTorch module at run time:
other model code, other kernels (XLA), its own KV cache. With --dtype float64 (jax_enable_x64)
it is a second float64 truth, independent of PyTorch's.

Every tensor comes from the library, taken from outside without editing it: the modules' outputs
by Flax's `capture_intermediates`, the attention's scores and probabilities by wrapping
`jax.nn.softmax` (the input of the softmax is q·kᵀ/√D plus Flax's mask bias), GELU by wrapping
`ACT2FN["gelu_new"]`, K and V from the `cache` collection. The prompt and the decode step run
through Flax's own cache as its `generate` runs them (a cache of T+1 slots, position ids, an
attention mask over the slots); checkpoint 11 is Flax's logits warpers, checkpoint 12 greedy
decoding through Flax's public call and cache (`greedy`).

Runs in the venv of scripts/requirements-others.txt (`source scripts/venv.sh --others`), which
holds no torch: the safetensors are read by transformers' Flax loader.

    python scripts/dump_flax.py --model DIR --cases cases.json --out DIR/flax
    python scripts/dump_flax.py --model DIR --cases cases.json --dtype float64 --out DIR/flax-f64
"""

import contextlib
import platform
from pathlib import Path

import numpy as np

from dump_format import FORMAT, check_model_dir, dump_cases, dump_parser, hf_tokenizer, model_info, sampling_of

DTYPES = {"float32": "f32", "float64": "f64"}


def parse_args():
    p = dump_parser(__doc__)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="precision Flax computes in (default float32; float64 enables jax_enable_x64)")
    return p.parse_args()


ARGS = parse_args()
import jax  # noqa: E402  (x64 must be set before JAX makes its first array)

jax.config.update("jax_enable_x64", ARGS.dtype == "float64")
jax.config.update("jax_platforms", "cpu")
import flax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import transformers  # noqa: E402
from transformers import FlaxGPT2LMHeadModel  # noqa: E402
from transformers.generation.flax_logits_process import (  # noqa: E402
    FlaxLogitsProcessorList,
    FlaxTemperatureLogitsWarper,
    FlaxTopKLogitsWarper,
    FlaxTopPLogitsWarper,
)
from transformers.models.gpt2 import modeling_flax_gpt2  # noqa: E402


@contextlib.contextmanager
def library_taps(seen):
    """Wraps jax.nn.softmax (Flax's dot_product_attention_weights calls it once per layer) and
    the MLP's activation, recording their inputs and outputs in call order, i.e. layer order."""
    real_softmax = jax.nn.softmax
    real_gelu = modeling_flax_gpt2.ACT2FN["gelu_new"]

    def softmax(x, *args, **kwargs):
        y = real_softmax(x, *args, **kwargs)
        seen["softmax"].append((np.asarray(x), np.asarray(y)))
        return y

    def gelu(x):
        y = real_gelu(x)
        seen["gelu"].append(np.asarray(y))
        return y

    jax.nn.softmax = softmax
    modeling_flax_gpt2.ACT2FN["gelu_new"] = gelu
    try:
        yield
    finally:
        jax.nn.softmax = real_softmax
        modeling_flax_gpt2.ACT2FN["gelu_new"] = real_gelu


def run_tapped(model, ids, position, cache, slots):
    """One pass of Flax's module over `ids` (positions from `position`) through `cache`, with
    every module's output captured. Returns (logits [T, V], the intermediates, the updated cache,
    the softmax and GELU taps)."""
    t = len(ids)
    seen = {"softmax": [], "gelu": []}
    with library_taps(seen):
        out, state = model.module.apply(
            {"params": model.params, "cache": cache},
            jnp.array([ids], dtype="i4"),
            jnp.ones((1, slots), dtype="i4"),  # as Flax's generate: every slot of the cache, the mask does the rest
            jnp.arange(position, position + t, dtype="i4")[None, :],
            None, None, True, False, False, False, True,  # deterministic, not init_cache, ..., return_dict
            mutable=["cache", "intermediates"],
            capture_intermediates=True,
        )
    return np.asarray(out.logits[0]), state["intermediates"], state["cache"], seen


def new_cache(model, slots):
    """Flax's empty cache of `slots` positions. Its cache_index is made int32; under
    jax_enable_x64 the attention's dynamic_slice mixes it with int64 indices and fails, so the
    index takes JAX's default integer type (a no-op in float32)."""
    cache = model.init_cache(1, slots)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.astype(jnp.int_) if path[-1].key == "cache_index" else x, cache)


def greedy(model, token_ids, max_new_tokens):
    """Greedy generation through Flax's public call and cache, as its `generate` runs it (the
    prompt into a cache of every slot, then one token per step with its position id); Flax's
    `generate` itself makes the int32 cache index that fails under x64 (new_cache)."""
    t, eos = len(token_ids), model.config.eos_token_id
    slots = t + max_new_tokens
    mask = jnp.ones((1, slots), dtype="i4")
    out = model(jnp.array([token_ids], dtype="i4"), attention_mask=mask, position_ids=jnp.arange(t)[None, :],
                past_key_values=new_cache(model, slots))
    generated = []
    while len(generated) < max_new_tokens:
        token = int(jnp.argmax(out.logits[0, -1]))
        generated.append(token)
        if token == eos:  # HF's generate keeps the end-of-text token, then stops
            break
        position = t + len(generated) - 1
        out = model(jnp.array([[token]], dtype="i4"), attention_mask=mask,
                    position_ids=jnp.array([[position]]), past_key_values=out.past_key_values)
    return generated


def heads(x, n_head):
    """[T, C] -> [n_head, T, head_dim], as Flax's _split_heads then the dump format's order."""
    t, c = x.shape
    return x.reshape(t, n_head, c // n_head).transpose(1, 0, 2)


def phase_tensors(cfg, phase, logits, inter, cache, seen, keys):
    """The checkpoint tensors 0-9 of one pass, as (phase, checkpoint, layer, name, array);
    `keys` is how many cache slots hold keys after the pass."""
    tr = inter["transformer"]
    first = lambda module: np.asarray(module["__call__"][0])  # noqa: E731
    tensors = [(phase, 0, None, "embeddings", first(tr["dropout"])[0])]
    for layer in range(cfg.n_layer):
        block = tr["h"][str(layer)]
        attn_cache = cache["transformer"]["h"][str(layer)]["attn"]
        q, k, v = np.split(first(block["attn"]["c_attn"])[0], 3, axis=-1)
        scores, probs = seen["softmax"][layer]
        # The cache is [1, slots, H, D]; the slots past `keys` are still empty.
        k_cache = np.asarray(attn_cache["cached_key"])[0, :keys].transpose(1, 0, 2)
        v_cache = np.asarray(attn_cache["cached_value"])[0, :keys].transpose(1, 0, 2)
        tensors += [
            (phase, 1, layer, "ln_1", first(block["ln_1"])[0]),
            (phase, 2, layer, "q", heads(q, cfg.n_head)),
            (phase, 2, layer, "k", heads(k, cfg.n_head)),
            (phase, 2, layer, "v", heads(v, cfg.n_head)),
            (phase, 3, layer, "k_cache", k_cache),
            (phase, 3, layer, "v_cache", v_cache),
            (phase, 4, layer, "scores", scores[0, :, :, :keys]),
            (phase, 4, layer, "attn_probs", probs[0, :, :, :keys]),
            (phase, 5, layer, "attn_out", first(block["attn"]["c_proj"])[0]),
            (phase, 6, layer, "ln_2", first(block["ln_2"])[0]),
            (phase, 6, layer, "gelu", seen["gelu"][layer][0]),
            (phase, 6, layer, "mlp_out", first(block["mlp"])[0]),
            # A block returns a tuple: the residual stream first.
            (phase, 7, layer, "block_out", np.asarray(block["__call__"][0][0])[0]),
        ]
    tensors += [
        (phase, 8, None, "ln_f", first(tr["ln_f"])[0]),
        (phase, 8, None, "logits", logits),
        (phase, 9, None, "selected_logits", logits[-1]),
    ]
    return tensors


def warpers(sampling):
    """Flax's sampling warpers in the order its `generate` builds them (_get_logits_warper)."""
    procs = FlaxLogitsProcessorList()
    if sampling["temperature"] != 1.0:
        procs.append(FlaxTemperatureLogitsWarper(sampling["temperature"]))
    if sampling.get("top_k"):
        procs.append(FlaxTopKLogitsWarper(top_k=sampling["top_k"], min_tokens_to_keep=1))
    if sampling.get("top_p") is not None and sampling["top_p"] < 1.0:
        procs.append(FlaxTopPLogitsWarper(top_p=sampling["top_p"], min_tokens_to_keep=1))
    return procs


def capture(model, token_ids, sampling, max_new_tokens):
    """The prompt's pass and one decode step with its argmax through Flax's cache, checkpoint 11
    on the prompt's last logits, and Flax's greedy generate. Returns (tensors, next token,
    generated ids)."""
    cfg = model.config
    t = len(token_ids)
    cache = new_cache(model, t + 1)
    logits, inter, cache, seen = run_tapped(model, token_ids, 0, cache, t + 1)
    tensors = phase_tensors(cfg, "prefill", logits, inter, cache, seen, t)
    next_token = int(np.argmax(logits[-1]))

    ids = jnp.array([token_ids], dtype="i4")
    warped = warpers(sampling)(ids, jnp.asarray(logits[-1])[None, :], t)
    tensors.append(("prefill", 11, None, "probs", np.asarray(jax.nn.softmax(warped, axis=-1))[0]))

    logits, inter, cache, seen = run_tapped(model, [next_token], t, cache, t + 1)
    tensors += phase_tensors(cfg, "decode", logits, inter, cache, seen, t + 1)

    return tensors, next_token, greedy(model, token_ids, max_new_tokens)


def generator_info(dtype):
    return {
        "name": f"flax-{DTYPES[dtype]}",
        "script": "scripts/dump_flax.py",
        "python": platform.python_version(),
        "transformers": transformers.__version__,
        "flax": flax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "dtype": dtype,
        "model_code": "HF transformers' Flax GPT-2 (models/gpt2/modeling_flax_gpt2.py)",
        "kernels": f"XLA on {jax.devices()[0].platform} (jaxlib {jaxlib.__version__})",
    }


def main():
    args = ARGS
    check_model_dir(args.model)
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    model = FlaxGPT2LMHeadModel.from_pretrained(args.model, from_pt=True, dtype=dtype)
    # The parameters widened exactly to the compute dtype (a no-op in float32).
    model.params = jax.tree_util.tree_map(lambda p: p.astype(dtype), model.params)
    encode, decode = hf_tokenizer(args.model)
    out = Path(args.out)
    manifest = {"format": FORMAT, "generator": generator_info(args.dtype), "model": model_info(model.config),
                "cases": []}
    dump_cases(args, out, manifest, lambda case, ids: capture(model, ids, sampling_of(case), case["max_new_tokens"]),
               encode, decode, args.dtype)


if __name__ == "__main__":
    main()
