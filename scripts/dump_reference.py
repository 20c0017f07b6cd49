#!/usr/bin/env python3
"""Dump llorch reference tensors from Hugging Face transformers.

Loads an HF GPT-2 model directory with GPT2LMHeadModel (eager attention, eval, float32 or
float64) and captures every checkpoint tensor from HF's own modules: forward hooks, HF's eager
attention function, past_key_values, the logits, HF's logits warpers and `generate`. Nothing
here comes from llorch's Rust code. Writes one .npy per tensor plus manifest.json; the format is
described in CHECKPOINTS.md ("Reference dump format").

With --dtype float64 the whole model runs in double precision: that dump is the truth that
llorch measures both its own engine and PyTorch's float32 run against (the accuracy verdict).

With --dtype bfloat16 or float16 PyTorch computes in that precision (weights and activations
cast by torch, as users run it): not a reference of correct arithmetic but the yardstick of
`llorch cost`, what the precision costs PyTorch against the float64 truth.

With --weights-as bf16|f16|q8_0 the model's matrices are first rounded as `llorch --weights`
holds them (scripts/rounding.py: torch's conversion, llama.cpp's gguf-py for Q8_0), in float32,
before HF runs: the dump then judges an engine's arithmetic on those rounded weights.

    python scripts/dump_reference.py --model DIR --prompt "Hello." --out DIR
    python scripts/dump_reference.py --model DIR --cases cases.json --out DIR/reference
    python scripts/dump_reference.py --model DIR --cases cases.json --dtype float64 --out DIR/reference-f64
    python scripts/dump_reference.py --model DIR --cases cases.json --weights-as bf16 --out DIR/reference-bf16
    python scripts/dump_reference.py --model DIR --cases cases.json --dtype bfloat16 --out DIR/pytorch-bf16
    python scripts/dump_reference.py --model DIR --corpus text.txt --window 128 --dtype float64 --out DIR/corpus-f64

With --corpus FILE the dump holds a corpus instead of cases (`llorch validate --corpus FILE`):
the text tokenized, cut into consecutive windows of --window tokens (the remainder after the
last whole window dropped), each window a case whose one tensor is every position's logits
(checkpoint 8, the prompt's pass); the manifest's `corpus` says how it was cut.
"""

import contextlib
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2LMHeadModel
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.models.gpt2 import modeling_gpt2

from dump_format import (FORMAT, add_corpus_arguments, check_model_dir, corpus_case, corpus_windows, dump_cases,
                         dump_parser, hf_tokenizer, model_info, sampling_of, write_manifest, write_tensors)
from rounding import FORMATS, round_model

# --dtype: (torch's dtype, the dump's file dtype, the source's name suffix). bfloat16 and float16
# are what users run PyTorch at to save memory: their values are widened exactly to float32 files.
DTYPES = {
    "float32": (torch.float32, "float32", "f32"),
    "float64": (torch.float64, "float64", "f64"),
    "bfloat16": (torch.bfloat16, "float32", "bf16"),
    "float16": (torch.float16, "float32", "f16"),
}


def load_model(model_dir, dtype=torch.float32):
    model = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager", dtype=dtype)
    return model.eval()


@contextlib.contextmanager
def attention_capture(store):
    """Wraps HF's eager attention function to keep, per layer, the input of its softmax (the
    scaled scores plus the causal mask) and the probabilities it returns."""
    original = modeling_gpt2.eager_attention_forward
    real_softmax = torch.nn.functional.softmax

    def wrapped(module, query, key, value, attention_mask, **kwargs):
        seen = {}

        def softmax(x, *args, **kw):
            seen["scores"] = x.detach().clone()
            return real_softmax(x, *args, **kw)

        torch.nn.functional.softmax = softmax
        try:
            out, weights = original(module, query, key, value, attention_mask, **kwargs)
        finally:
            torch.nn.functional.softmax = real_softmax
        store[module.layer_idx] = (seen["scores"], weights.detach().clone())
        return out, weights

    modeling_gpt2.eager_attention_forward = wrapped
    try:
        yield
    finally:
        modeling_gpt2.eager_attention_forward = original


def heads(x, n_head):
    """[1, T, C] -> [n_head, T, head_dim], as GPT2Attention's view(...).transpose(1, 2)."""
    _, t, c = x.shape
    return x.view(1, t, n_head, c // n_head).transpose(1, 2)[0]


def warpers(sampling):
    """HF's sampling warpers in the order `generate` builds them."""
    procs = LogitsProcessorList()
    if sampling["temperature"] != 1.0:
        procs.append(TemperatureLogitsWarper(sampling["temperature"]))
    if sampling.get("top_k"):
        procs.append(TopKLogitsWarper(sampling["top_k"]))
    if sampling.get("top_p") is not None and sampling["top_p"] < 1.0:
        procs.append(TopPLogitsWarper(sampling["top_p"]))
    return procs


def run_hooked(model, input_ids, past=None):
    """One forward pass of HF with the checkpoint hooks on its modules. Returns (modules,
    attention, output): modules maps (checkpoint, layer, name) to the hooked module outputs,
    attention maps a layer to its (pre-softmax scores, probabilities)."""
    modules = {}

    def keep(key):
        def hook(_module, _inputs, output):
            modules[key] = output.detach().clone()
        return hook

    tr = model.transformer
    handles = [tr.drop.register_forward_hook(keep((0, None, "embeddings")))]
    for layer, block in enumerate(tr.h):
        handles += [
            block.ln_1.register_forward_hook(keep((1, layer, "ln_1"))),
            block.attn.c_attn.register_forward_hook(keep((2, layer, "c_attn"))),
            block.attn.c_proj.register_forward_hook(keep((5, layer, "attn_out"))),
            block.ln_2.register_forward_hook(keep((6, layer, "ln_2"))),
            block.mlp.act.register_forward_hook(keep((6, layer, "gelu"))),
            block.mlp.register_forward_hook(keep((6, layer, "mlp_out"))),
            block.register_forward_hook(keep((7, layer, "block_out"))),
        ]
    handles.append(tr.ln_f.register_forward_hook(keep((8, None, "ln_f"))))
    attention = {}
    try:
        with attention_capture(attention):
            out = model(input_ids=input_ids, past_key_values=past, use_cache=True)
    finally:
        for h in handles:
            h.remove()
    return modules, attention, out


def to_numpy(t):
    """A tensor's values as a numpy copy; numpy has no bfloat16, so the reduced precisions are
    widened to float32 (exactly: every bfloat16 and float16 value is a float32)."""
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.numpy().copy()


def phase_tensors(cfg, phase, modules, attention, out):
    """The checkpoint tensors 0-9 of one pass, as (phase, checkpoint, layer, name, np.ndarray).
    Copied out at once: the cache is updated in place by the next pass."""
    tensors = []

    def add(cp, layer, name, t):
        tensors.append((phase, cp, layer, name, to_numpy(t)))

    add(0, None, "embeddings", modules[(0, None, "embeddings")][0])
    cache = out.past_key_values
    for layer in range(cfg.n_layer):
        add(1, layer, "ln_1", modules[(1, layer, "ln_1")][0])
        q, k, v = modules[(2, layer, "c_attn")].split(cfg.n_embd, dim=2)
        add(2, layer, "q", heads(q, cfg.n_head))
        add(2, layer, "k", heads(k, cfg.n_head))
        add(2, layer, "v", heads(v, cfg.n_head))
        add(3, layer, "k_cache", cache.layers[layer].keys[0])
        add(3, layer, "v_cache", cache.layers[layer].values[0])
        scores, probs = attention[layer]
        add(4, layer, "scores", scores[0])
        add(4, layer, "attn_probs", probs[0])
        add(5, layer, "attn_out", modules[(5, layer, "attn_out")][0])
        add(6, layer, "ln_2", modules[(6, layer, "ln_2")][0])
        add(6, layer, "gelu", modules[(6, layer, "gelu")][0])
        add(6, layer, "mlp_out", modules[(6, layer, "mlp_out")][0])
        add(7, layer, "block_out", modules[(7, layer, "block_out")][0])
    add(8, None, "ln_f", modules[(8, None, "ln_f")][0])
    logits = out.logits[0]  # [T, V]
    add(8, None, "logits", logits)
    add(9, None, "selected_logits", logits[-1])
    return tensors


@torch.no_grad()
def capture(model, token_ids, sampling, max_new_tokens, decode_steps=(1,)):
    """Runs HF on `token_ids` (the prefill), then decode steps through HF's cache along its own
    greedy continuation, and returns (tensors, next token, greedy continuation): tensors is a
    list of (phase, checkpoint, layer, name, np.ndarray). Decode step k feeds the continuation's
    token k (the argmax after the prompt is token 1) at position T + k - 1; the steps in
    `decode_steps` are recorded, those in between only run."""
    cfg = model.config
    ids = torch.tensor([token_ids])
    modules, attention, out = run_hooked(model, ids)
    tensors = phase_tensors(cfg, "prefill", modules, attention, out)
    last = out.logits[0, -1]
    next_token = int(torch.argmax(last))

    # Checkpoint 11: HF's warpers on the last logits, then softmax.
    warped = warpers(sampling)(ids, last[None, :].clone())
    tensors.append(("prefill", 11, None, "probs", to_numpy(torch.softmax(warped, dim=-1)[0])))

    # Checkpoint 12: HF's own greedy generate.
    eos = cfg.eos_token_id
    generated = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=eos,
        eos_token_id=eos,
    )[0, len(token_ids):].tolist()

    # Checkpoints 0-9 of the decode steps: the continuation's tokens one at a time through HF's
    # cache (token 1 is the argmax after the prompt).
    feed = [next_token] + generated[1:]
    # A continuation that ended early (end of text) has its last token as its last step.
    decode_steps = sorted({min(step, len(feed)) for step in decode_steps})
    past = out.past_key_values
    for step in range(1, max(decode_steps) + 1):
        modules, attention, out = run_hooked(model, torch.tensor([[feed[step - 1]]]), past)
        if step in decode_steps:
            tensors += phase_tensors(cfg, decode_phase(step), modules, attention, out)
        past = out.past_key_values
    return tensors, next_token, generated


def decode_phase(step):
    """The manifest's phase of decode step `step`: "decode" for the first (as every dump has
    it), "decode:K" for a later one."""
    return "decode" if step == 1 else f"decode:{step}"


def parse_decode_steps(text, max_new_tokens):
    """--decode-steps: step numbers from 1, "last" being the continuation's last token."""
    steps = set()
    for part in text.split(","):
        step = max_new_tokens if part == "last" else int(part)
        if not 1 <= step <= max_new_tokens:
            sys.exit(f"error: decode step {part} is outside 1 to the {max_new_tokens} generated tokens")
        steps.add(step)
    return sorted(steps)


def library_versions(dtype):
    return {
        "name": f"pytorch-{DTYPES[dtype][2]}",
        "script": "scripts/dump_reference.py",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "dtype": dtype,
        "attn_implementation": "eager",
    }


@torch.no_grad()
def dump_corpus(model, encode, args, out, file_dtype, manifest):
    """The corpus's windows as cases, each holding every position's logits [W, V]."""
    if encode is None:
        sys.exit(f"error: {args.model} has no tokenizer to cut the corpus with")
    tokens = encode(Path(args.corpus).read_text(encoding="utf-8"))
    manifest["corpus"], windows = corpus_windows(args, tokens, model.config.n_positions)
    for i, ids in enumerate(windows):
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        entries, _ = write_tensors(out, f"w{i:04d}", [("prefill", 8, None, "logits", to_numpy(logits))], file_dtype)
        manifest["cases"].append(corpus_case(i, ids, entries, int(torch.argmax(logits[-1]))))
    print(f"corpus {args.corpus}: {manifest['corpus']['tokens']} tokens, {len(windows)} windows", file=sys.stderr)


def main():
    p = dump_parser(__doc__)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="precision HF runs in (default float32; float64 is the truth of llorch's accuracy "
                        "verdict; bfloat16 and float16, written as float32 files, are the yardsticks of "
                        "`llorch cost`)")
    p.add_argument("--weights-as", choices=FORMATS, default="f32",
                   help="round the model's matrices to this format first, as llorch --weights does "
                        "(default f32: the checkpoint's weights as they are)")
    p.add_argument("--decode-steps", default="1",
                   help='decode steps to record, from 1, along the greedy continuation, e.g. "1,2,8,last" '
                        '(default 1: the token after the prompt)')
    add_corpus_arguments(p)
    args = p.parse_args()
    if args.weights_as != "f32" and args.dtype in ("bfloat16", "float16"):
        p.error(f"--dtype {args.dtype} casts the weights itself; --weights-as goes with float32 or float64")

    check_model_dir(args.model)
    torch.manual_seed(0)
    torch_dtype, file_dtype, _ = DTYPES[args.dtype]
    # Rounded in float32, as the engine rounds the checkpoint's float32 values; then widened.
    model = load_model(args.model, torch.float32)
    rounding = round_model(model, args.weights_as)
    model = model.to(torch_dtype)
    encode, decode = hf_tokenizer(args.model)
    out = Path(args.out)
    generator = library_versions(args.dtype)
    if rounding is not None:
        generator["weights_as"] = args.weights_as
        generator["weights_rounding"] = rounding
    manifest = {"format": FORMAT, "generator": generator, "model": model_info(model.config), "cases": []}
    if args.corpus:
        dump_corpus(model, encode, args, out, file_dtype, manifest)
        write_manifest(out, manifest)
        return
    def run_case(case, ids):
        steps = parse_decode_steps(args.decode_steps, case["max_new_tokens"])
        return capture(model, ids, sampling_of(case), case["max_new_tokens"], steps)

    dump_cases(args, out, manifest, run_case, encode, decode, file_dtype)


if __name__ == "__main__":
    main()
