"""The writing half of llorch's reference format (CHECKPOINTS.md, "Reference dump format"),
shared by every script that dumps an engine: scripts/dump_reference.py (HF transformers),
dump_llamacpp.py (llama.cpp), dump_flax.py, dump_keras.py and dump_tinygrad.py. What a dump
holds comes from its engine; how it is laid out on disk, which options choose its cases and how
they are read come from here, so that all dumps read alike."""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

FORMAT = "llorch-reference/2"


def dump_parser(doc):
    """The command line every dumper starts from: its docstring as help, the model directory,
    the output directory and the case options; each script adds its own (--dtype, ...)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="HF model directory (config.json, model.safetensors, tokenizer)")
    parser.add_argument("--out", required=True, help="directory to write manifest.json and the .npy files to")
    add_case_arguments(parser)
    return parser


def add_case_arguments(parser):
    """The options that say which cases a dump holds, the same for every engine's script."""
    parser.add_argument("--prompt", default="Hello.", help='prompt of the single case (default "Hello.")')
    parser.add_argument("--name", default="hello", help="name of the single case (default hello)")
    parser.add_argument("--cases", help="JSON file with a list of cases: name, prompt or token_ids, and optional "
                        "temperature, top_k, top_p, max_new_tokens")
    parser.add_argument("--temperature", type=float, default=1.0, help="checkpoint 11 temperature (default 1.0)")
    parser.add_argument("--top-k", type=int, default=None, help="checkpoint 11 top-k (default off)")
    parser.add_argument("--top-p", type=float, default=None, help="checkpoint 11 top-p (default off)")
    parser.add_argument("--max-new-tokens", type=int, default=10,
                        help="checkpoint 12 generation length (default 10)")


def add_corpus_arguments(parser):
    """The options of a corpus dump (`llorch validate --corpus`), the same for every engine."""
    parser.add_argument("--corpus", help="a text file: dump every position's logits over its windows instead of cases")
    parser.add_argument("--window", type=int, default=128, help="--corpus: tokens per window (default 128)")
    parser.add_argument("--max-tokens", type=int, help="--corpus: use only the text's first N tokens")


def corpus_windows(args, tokens, n_ctx):
    """The corpus cut as every engine's dump cuts it: consecutive windows of --window tokens from
    the start, the remainder after the last whole window dropped. Returns (manifest's corpus
    entry, the windows' token ids); exits with a message when no window fits."""
    if args.max_tokens is not None:
        tokens = tokens[:args.max_tokens]
    window = args.window
    if not 2 <= window <= n_ctx:
        sys.exit(f"error: --window {window} must be 2 to the context of {n_ctx}")
    count = len(tokens) // window
    if count == 0:
        sys.exit(f"error: the corpus has {len(tokens)} tokens, fewer than one window of {window}")
    info = {"file": Path(args.corpus).name, "window": window, "windows": count, "tokens": len(tokens)}
    return info, [tokens[i * window:(i + 1) * window] for i in range(count)]


def corpus_case(i, ids, entries, next_token):
    """Window i as a case of the manifest: its tokens and its logits' entry."""
    return {"name": f"w{i:04d}", "prompt": None, "token_ids": ids,
            "sampling": {"temperature": 1.0, "top_k": None, "top_p": None},
            "next_token": next_token, "max_new_tokens": 0, "generated_ids": [], "generated_text": None,
            "tensors": entries}


def read_cases(args):
    """The cases of `--cases FILE`, or the single one of `--prompt`/`--name`, with every
    setting filled in; exits with a message on a malformed case."""
    if args.cases:
        cases = json.loads(Path(args.cases).read_text())
    else:
        cases = [{"name": args.name, "prompt": args.prompt}]
    for c in cases:
        c.setdefault("temperature", args.temperature)
        c.setdefault("top_k", args.top_k)
        c.setdefault("top_p", args.top_p)
        c.setdefault("max_new_tokens", args.max_new_tokens)
        if not c.get("name") or "/" in c["name"]:
            sys.exit(f"error: every case needs a name without '/': {c}")
        if "prompt" not in c and "token_ids" not in c:
            sys.exit(f"error: case {c['name']!r} needs a prompt or token_ids")
        if c["temperature"] <= 0:
            sys.exit(f"error: case {c['name']!r}: temperature must be > 0 for checkpoint 11")
    return cases


def model_info(cfg):
    """The manifest's `model` from an HF GPT2Config (every transformers version spells it so)."""
    return {
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_embd": cfg.n_embd,
        "n_positions": cfg.n_positions,
        "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "n_inner": cfg.n_inner if cfg.n_inner is not None else 4 * cfg.n_embd,
    }


def hf_tokenizer(model_dir):
    """(encode, decode) of the model directory's tokenizer by HF transformers, as dump_reference.py
    tokenizes; (None, None) when the directory has no tokenizer files (cases then give token_ids)."""
    d = Path(model_dir)
    if not ((d / "tokenizer.json").is_file() or (d / "vocab.json").is_file()):
        return None, None
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    return (lambda text: tok.encode(text, add_special_tokens=False),
            lambda ids: tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))


def check_model_dir(model_dir):
    """Exits with a message unless `model_dir` holds an HF GPT-2 checkpoint."""
    for needed in ("config.json", "model.safetensors"):
        if not (Path(model_dir) / needed).is_file():
            sys.exit(f"error: {model_dir} is not an HF GPT-2 model directory: it has no {needed}")


def case_token_ids(case, encode, n_ctx):
    """A case's prompt tokens: its token_ids, or its prompt through `encode` (None when the
    engine has no tokenizer); exits with a message on an empty prompt or one that leaves no room
    for the generation in the context of `n_ctx`."""
    if "token_ids" in case:
        ids = [int(t) for t in case["token_ids"]]
    elif encode is None:
        sys.exit(f"error: the model has no tokenizer; give case {case['name']!r} token_ids")
    else:
        ids = list(encode(case["prompt"]))
    if not ids:
        sys.exit(f"error: case {case['name']!r} has an empty prompt")
    if len(ids) + case["max_new_tokens"] > n_ctx:
        sys.exit(f"error: case {case['name']!r} does not fit the context of {n_ctx}")
    return ids


def sampling_of(case):
    """A case's checkpoint-11 settings, as the manifest records them."""
    return {k: case[k] for k in ("temperature", "top_k", "top_p")}


def case_entry(case, token_ids, next_token, generated, text, entries):
    """One case of the manifest: its inputs and settings, the token-level outcomes
    (checkpoints 10 and 12) and its tensors' entries."""
    return {
        "name": case["name"],
        "prompt": case.get("prompt"),
        "token_ids": token_ids,
        "sampling": sampling_of(case),
        "next_token": next_token,
        "max_new_tokens": case["max_new_tokens"],
        "generated_ids": generated,
        "generated_text": text,
        "tensors": entries,
    }


def dump_cases(args, out, manifest, capture, encode=None, decode=None, dtype="float32"):
    """The case loop every engine's script runs: each case of `args` tokenized (`encode`, or
    its token_ids), run by `capture(case, token_ids)` -> (tensors, next token, generated ids),
    written as `dtype` files under `out` and entered into `manifest`, which is then written."""
    for case in read_cases(args):
        token_ids = case_token_ids(case, encode, manifest["model"]["n_positions"])
        tensors, next_token, generated = capture(case, token_ids)
        entries, files = write_tensors(out, case["name"], tensors, dtype)
        text = None if decode is None else decode(token_ids + generated)
        manifest["cases"].append(case_entry(case, token_ids, next_token, generated, text, entries))
        print(f"case {case['name']}: {len(token_ids)} prompt tokens, {len(entries)} tensors in {files} files, "
              f"greedy continuation {generated}", file=sys.stderr)
    write_manifest(out, manifest)


def stop_at_eos(ids, eos):
    """A greedy continuation cut as HF's `generate` returns it: through the first end-of-text
    token, which it keeps."""
    ids = [int(t) for t in ids]
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def file_name(case, phase, cp, layer, name):
    at = "" if layer is None else f"_l{layer:02d}"
    # "decode" -> decode_cp.., "decode:8" -> decode8_cp..
    prefix = "" if phase == "prefill" else phase.replace(":", "") + "_"
    return f"{case}/{prefix}cp{cp:02d}{at}_{name}.npy"


def write_tensors(out, case, tensors, dtype):
    """Writes one case's tensors, (phase, checkpoint, layer, name, array) each, as .npy files of
    `dtype` ("float32" or "float64") under out/case, and returns (manifest entries, files
    written). A tensor identical to one already written points to that file (an engine's cache
    holds c_attn's K and V themselves: k_cache is k, bit for bit)."""
    case_dir = Path(out) / case
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    entries = []
    written = {}  # content hash -> file
    for phase, cp, layer, name, array in tensors:
        array = np.ascontiguousarray(array, dtype=np.dtype(dtype))
        key = hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()
        rel = written.get(key)
        if rel is None:
            rel = file_name(case, phase, cp, layer, name)
            np.save(Path(out) / rel, array)
            written[key] = rel
        entries.append({"phase": phase, "checkpoint": cp, "layer": layer, "name": name, "file": rel,
                        "shape": list(array.shape), "dtype": dtype})
    return entries, len(written)


def write_manifest(out, manifest):
    path = Path(out) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
