#!/usr/bin/env python3
"""Speed of llorch beside HF PyTorch on the same random-weight GPT-2 models, as one table.

    source scripts/venv.sh && $PYTHON scripts/bench.py            # GPT-2-small and -medium shapes
    source scripts/venv.sh --with-llamacpp && $PYTHON scripts/bench.py   # and llama.cpp beside them
    $PYTHON scripts/bench.py --model fixtures/tiny-gpt2 --decode-tokens 4   # any model dir

Models in the GPT-2-small (124M) and GPT-2-medium (355M) shapes are made with
scripts/make_random_gpt2.py when absent (cached under ~/.cache/llorch/bench). For each model:
`llorch bench` times our engine and measures the machine's read bandwidth (the floor of a
decoded token: every weight read once), PyTorch is timed the same way with the same thread
count, and `llorch generate` runs once under wait4() for its peak RSS. With the llama.cpp venv,
llama.cpp is timed too: the model converted by its own converter to an F32 GGUF, its default
context settings, the same thread count. Speeds are compared as
ratios measured in one run on one machine; the absolute times say little elsewhere.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    "small": ["--n-layer", "12", "--n-head", "12", "--n-embd", "768", "--seed", "124"],
    "medium": ["--n-layer", "24", "--n-head", "16", "--n-embd", "1024", "--seed", "355"],
}
ROOT = Path(__file__).resolve().parent.parent


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def ensure_model(shape, cache):
    out = cache / f"gpt2-{shape}-shape"
    if not (out / "model.safetensors").exists():
        print(f"making the GPT-2-{shape}-shaped model in {out}", file=sys.stderr)
        subprocess.run([sys.executable, str(ROOT / "scripts/make_random_gpt2.py"), "--out", str(out),
                        *SHAPES[shape]], check=True)
    return out


def threads_env(args):
    """llorch's threads: rayon's pool size, which also sizes the engine's team (every product,
    attention's heads, LayerNorm and GELU run on the team)."""
    return dict(os.environ, RAYON_NUM_THREADS=str(args.threads))


def llorch_bench(llorch, model, args):
    cmd = [llorch, "bench", "--model", str(model), "--format", "json", "--prompt-tokens",
           str(args.prompt_tokens), "--decode-tokens", str(args.decode_tokens), "--repeats", str(args.repeats)]
    env = threads_env(args)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def llorch_peak_rss(llorch, model, args):
    """Peak RSS (bytes) of `llorch generate` for the benchmark's prompt and decode length."""
    ids = ",".join(str(i) for i in range(args.prompt_tokens))
    cmd = [llorch, "generate", "--model", str(model), "--tokens", ids, "--temp", "0",
           "--max-tokens", str(args.decode_tokens), "--format", "json"]
    env = threads_env(args)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {proc.stderr.read().decode()}")
    return usage.ru_maxrss * 1024


def pytorch_bench(model_dir, args):
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    model = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ids = torch.arange(args.prompt_tokens).unsqueeze(0) % model.config.vocab_size
    best = lambda f: min(timed(f) for _ in range(args.repeats))
    with torch.inference_mode():
        model(ids, logits_to_keep=1)  # warm-up
        last = best(lambda: model(ids, logits_to_keep=1))
        full = best(lambda: model(ids))
        out = model(ids, use_cache=True, logits_to_keep=1)
        past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        steps = []
        for _ in range(args.decode_tokens):
            start = time.perf_counter()
            out = model(token, past_key_values=past, use_cache=True, logits_to_keep=1)
            steps.append(time.perf_counter() - start)
            past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    steps.sort()
    return {"decode_ms_per_token": 1e3 * steps[len(steps) // 2], "prefill_ms_last_logits": 1e3 * last,
            "prefill_ms_all_logits": 1e3 * full, "torch": torch.__version__}


def llamacpp_bench(model_dir, args):
    """llama.cpp on the same model (its converter, F32 GGUF, its default context settings, the
    same thread count), timed like PyTorch; None when the llama.cpp venv is not set up
    (`source scripts/venv.sh --with-llamacpp`)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import dump_llamacpp as lc
    except (ImportError, SystemExit):
        return None
    if not os.environ.get("LLAMACPP_SRC"):
        return None
    import tempfile

    lc.quiet_logs()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = lc.convert(model_dir, Path(tmp))
        engine = lc.Engine(gguf, args.threads, capture=False)
        engine.open_context(args.prompt_tokens + args.decode_tokens + 8)
        vocab = lc.llama.llama_vocab_n_tokens(engine.vocab)
        ids = [i % vocab for i in range(args.prompt_tokens)]

        def prefill(all_logits):
            engine.reset()
            engine.decode(ids, 0, all_logits=all_logits)

        best = lambda f: min(timed(f) for _ in range(args.repeats))
        prefill(False)  # warm-up
        last = best(lambda: prefill(False))
        full = best(lambda: prefill(True))
        prefill(False)
        steps = []
        for i in range(args.decode_tokens):
            token = engine.sample_greedy()
            steps.append(timed(lambda: engine.decode([token], args.prompt_tokens + i, all_logits=False)))
        engine.close()
    steps.sort()
    return {"decode_ms_per_token": 1e3 * steps[len(steps) // 2], "prefill_ms_last_logits": 1e3 * last,
            "prefill_ms_all_logits": 1e3 * full, "version": lc.llama_cpp.__version__}


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="small,medium", help="comma-separated: small, medium")
    p.add_argument("--model", action="append", default=[], help="benchmark this model directory instead")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--llorch", default=os.environ.get("LLORCH", str(ROOT / "target/release/llorch")))
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LLORCH_CACHE", Path.home() / ".cache/llorch")) / "bench")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    args = p.parse_args()
    if not Path(args.llorch).exists():
        sys.exit(f"error: {args.llorch} does not exist: cargo build --release, or pass --llorch")

    models = [(Path(m).name, Path(m)) for m in args.model] or \
        [(f"gpt2-{s}-shape", ensure_model(s, args.cache)) for s in args.shapes.split(",")]
    results = []
    for name, model in models:
        print(f"benchmarking {name} ({model})", file=sys.stderr)
        ours = llorch_bench(args.llorch, model, args)
        ours["peak_rss_bytes"] = llorch_peak_rss(args.llorch, model, args)
        weights = (model / "model.safetensors").stat().st_size
        theirs = pytorch_bench(model, args)
        peer = llamacpp_bench(model, args)
        results.append({"model": name, "weights_bytes": weights, "llorch": ours, "pytorch": theirs,
                        "llama.cpp": peer})

    print(f"CPU: {cpu_name()}, {args.threads} threads; prompt {args.prompt_tokens} tokens, "
          f"decode median of {args.decode_tokens} steps, prefill best of {args.repeats}")
    head = ("model", "engine", "decode ms/tok", "tok/s", "vs PyTorch", "vs floor", "prefill ms (last)",
            "prefill ms (all)", "peak RSS / weights")
    rows = []
    for r in results:
        floor, o, t = r["llorch"]["floor_ms_per_token"], r["llorch"], r["pytorch"]
        engines = [("llorch", o), ("pytorch " + t["torch"], t)]
        if r["llama.cpp"]:
            engines.append(("llama.cpp (llama-cpp-python " + r["llama.cpp"]["version"] + ")", r["llama.cpp"]))
        for engine, m in engines:
            rss = f"{m['peak_rss_bytes'] / r['weights_bytes']:.2f}" if "peak_rss_bytes" in m else "-"
            rows.append((r["model"], engine, f"{m['decode_ms_per_token']:.2f}", f"{1e3 / m['decode_ms_per_token']:.1f}",
                         f"{t['decode_ms_per_token'] / m['decode_ms_per_token']:.2f}x",
                         f"{m['decode_ms_per_token'] / floor:.2f}x",
                         f"{m['prefill_ms_last_logits']:.1f} ({t['prefill_ms_last_logits'] / m['prefill_ms_last_logits']:.2f}x)",
                         f"{m['prefill_ms_all_logits']:.1f} ({t['prefill_ms_all_logits'] / m['prefill_ms_all_logits']:.2f}x)",
                         rss))
        rows.append((r["model"], "floor", f"{floor:.2f}", f"{1e3 / floor:.1f}", "", "1.00x",
                     f"read {o['read_bandwidth_gbs']:.1f} GB/s", f"{o['bytes_per_token'] / 1e6:.0f} MB/token", ""))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print("(vs PyTorch: PyTorch's time / this engine's, above 1 is faster; vs floor: this engine's "
          "time / the bandwidth floor; prefill ratios in brackets are PyTorch's time / this engine's)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads, "results": results}, indent=2))


if __name__ == "__main__":
    main()
