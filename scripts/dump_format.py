"""The writing half of llorch's reference format (CHECKPOINTS.md, "Reference dump format"),
shared by every script that dumps an engine: scripts/dump_reference.py (HF transformers) and
scripts/dump_llamacpp.py (llama.cpp). What a dump holds comes from its engine; how it is laid
out on disk comes from here, so that all dumps read alike."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

FORMAT = "llorch-reference/2"


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


def file_name(case, phase, cp, layer, name):
    at = "" if layer is None else f"_l{layer:02d}"
    prefix = "" if phase == "prefill" else f"{phase}_"
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
