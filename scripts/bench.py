#!/usr/bin/env python3
"""Speed of llorch in every weight format beside HF PyTorch (float32 and bfloat16) and llama.cpp
(in the same formats) on the same random-weight GPT-2 models, as one table.

    source scripts/venv.sh && $PYTHON scripts/bench.py            # GPT-2-small and -medium shapes
    source scripts/venv.sh --with-llamacpp && $PYTHON scripts/bench.py   # and llama.cpp beside them
    $PYTHON scripts/bench.py --model fixtures/tiny-gpt2 --decode-tokens 4   # any model dir

Models in the GPT-2-small (124M) and GPT-2-medium (355M) shapes are made with
scripts/make_random_gpt2.py when absent (cached under ~/.cache/llorch/bench). For each model:
`llorch bench` times our engine and measures the machine's read bandwidth (the floor of a
decoded token: every weight read once), PyTorch is timed the same way with the same thread
count, and `llorch generate` runs once under wait4() for its peak RSS. Each format of llorch
(--weights) has its own floor: its own bytes a token at the measured read bandwidth. With the
llama.cpp venv, llama.cpp is timed too in each format: the model converted by its own converter
(--outtype f32, bf16, f16, q8_0), its default context settings, the same thread count. Speeds
are compared as ratios measured in one run on one machine; the absolute times say little
elsewhere.
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


FORMATS = ("f32", "bf16", "f16", "q8_0")


def llorch_bench(llorch, model, fmt, args):
    cmd = [llorch, "bench", "--model", str(model), "--weights", fmt, "--format", "json", "--prompt-tokens",
           str(args.prompt_tokens), "--decode-tokens", str(args.decode_tokens), "--repeats", str(args.repeats)]
    env = threads_env(args)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def llorch_peak_rss(llorch, model, fmt, args):
    """Peak RSS (bytes) of `llorch generate` for the benchmark's prompt and decode length."""
    ids = ",".join(str(i) for i in range(args.prompt_tokens))
    cmd = [llorch, "generate", "--model", str(model), "--weights", fmt, "--tokens", ids, "--temp", "0",
           "--max-tokens", str(args.decode_tokens), "--format", "json"]
    env = threads_env(args)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {proc.stderr.read().decode()}")
    return usage.ru_maxrss * 1024


def pytorch_bench(model_dir, dtype, args):
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
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


def llamacpp_bench(model_dir, fmt, args):
    """llama.cpp on the same model (its converter to a GGUF in `fmt`, its default context
    settings, the same thread count), timed like PyTorch, in a child process; None when the
    llama.cpp venv is not set up (`source scripts/venv.sh --with-llamacpp`).

    llama.cpp's defaults repack weights into its CPU "extra buffer types" where it has kernels
    for them. On the Intel Xeon with AMX lent here, llama-cpp-python 0.3.36's Q8_0 run with them
    crashed (a segmentation fault in llama_decode, prompt or decode step, also on the bundled
    tiny model); when the child dies so, it is run again with `use_extra_bufts = false`, and the
    result says so (`extra_bufts`)."""
    if not os.environ.get("LLAMACPP_SRC"):
        return None
    for extra in (True, False):
        cmd = [sys.executable, __file__, "--llamacpp-child", str(model_dir), fmt, str(extra), "--threads",
               str(args.threads), "--prompt-tokens", str(args.prompt_tokens), "--decode-tokens",
               str(args.decode_tokens), "--repeats", str(args.repeats)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode == 0:
            return json.loads(run.stdout)
        print(f"llama.cpp in {fmt} with extra buffer types {extra} failed (exit {run.returncode}): "
              f"{run.stderr.strip()[-300:]}", file=sys.stderr)
    sys.exit(f"error: llama.cpp failed in {fmt} on {model_dir}")


def llamacpp_child(model_dir, fmt, extra, args):
    sys.path.insert(0, str(ROOT / "scripts"))
    import dump_llamacpp as lc
    import tempfile

    lc.quiet_logs()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = lc.convert(model_dir, Path(tmp), fmt)
        engine = lc.Engine(gguf, args.threads, capture=False, extra_bufts=extra)
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
    print(json.dumps({"decode_ms_per_token": 1e3 * steps[len(steps) // 2], "prefill_ms_last_logits": 1e3 * last,
                      "prefill_ms_all_logits": 1e3 * full, "version": lc.llama_cpp.__version__,
                      "extra_bufts": extra}))


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="small,medium", help="comma-separated: small, medium")
    p.add_argument("--model", action="append", default=[], help="benchmark this model directory instead")
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated weight formats")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--llorch", default=os.environ.get("LLORCH", str(ROOT / "target/release/llorch")))
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("LLORCH_CACHE", Path.home() / ".cache/llorch")) / "bench")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    p.add_argument("--llamacpp-child", nargs=3, metavar=("MODEL", "FORMAT", "EXTRA_BUFTS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.llamacpp_child:
        model_dir, fmt, extra = args.llamacpp_child
        return llamacpp_child(model_dir, fmt, extra == "True", args)
    if not Path(args.llorch).exists():
        sys.exit(f"error: {args.llorch} does not exist: cargo build --release, or pass --llorch")
    formats = args.formats.split(",")
    if unknown := [f for f in formats if f not in FORMATS]:
        sys.exit(f"error: unknown formats {unknown}; they are {', '.join(FORMATS)}")

    models = [(Path(m).name, Path(m)) for m in args.model] or \
        [(f"gpt2-{s}-shape", ensure_model(s, args.cache)) for s in args.shapes.split(",")]
    # llorch first, for every model, while this process is small: a child's ru_maxrss counts the
    # forking parent's resident memory at exec (Linux keeps the larger), and PyTorch, run in this
    # process last, leaves it at gigabytes (measured: every format of the medium shape then
    # "peaked" at the same 1.5 GB).
    results = []
    for name, model in models:
        runs = []
        for fmt in formats:
            print(f"benchmarking {name} ({model}) in {fmt}", file=sys.stderr)
            ours = llorch_bench(args.llorch, model, fmt, args)
            ours["peak_rss_bytes"] = llorch_peak_rss(args.llorch, model, fmt, args)
            runs.append({"format": fmt, "llorch": ours})
        results.append({"model": name, "formats": runs})
    for (name, model), result in zip(models, results):
        for run in result["formats"]:
            print(f"benchmarking llama.cpp on {name} in {run['format']}", file=sys.stderr)
            run["llama.cpp"] = llamacpp_bench(model, run["format"], args)
        print(f"benchmarking PyTorch on {name}", file=sys.stderr)
        result["pytorch"] = {dtype: pytorch_bench(model, dtype, args) for dtype in ("float32", "bfloat16")}

    print(f"CPU: {cpu_name()}, {args.threads} threads; prompt {args.prompt_tokens} tokens, "
          f"decode median of {args.decode_tokens} steps, prefill best of {args.repeats}")
    head = ("model", "format", "engine", "decode ms/tok", "tok/s", "vs floor", "vs llama.cpp", "prefill ms (last)",
            "prefill ms (all)", "peak RSS / weights")
    rows = []
    for r in results:
        for run in r["formats"]:
            o, peer, fmt = run["llorch"], run["llama.cpp"], run["format"]
            floor, weights = o["floor_ms_per_token"], o["bytes_per_token"]
            engines = [("llorch", o)]
            if peer:
                repack = "" if peer["extra_bufts"] else ", no repacking (crashed with it)"
                engines.append((f"llama.cpp {peer['version']}{repack}", peer))
            for engine, m in engines:
                rss = f"{m['peak_rss_bytes'] / weights:.2f}" if "peak_rss_bytes" in m else "-"
                vs = lambda key: f" ({peer[key] / m[key]:.2f}x)" if peer else ""
                rows.append((r["model"], fmt, engine, f"{m['decode_ms_per_token']:.2f}",
                             f"{1e3 / m['decode_ms_per_token']:.1f}", f"{m['decode_ms_per_token'] / floor:.2f}x",
                             f"{peer['decode_ms_per_token'] / m['decode_ms_per_token']:.2f}x" if peer else "-",
                             f"{m['prefill_ms_last_logits']:.1f}{vs('prefill_ms_last_logits')}",
                             f"{m['prefill_ms_all_logits']:.1f}{vs('prefill_ms_all_logits')}", rss))
            spread = o["read_bandwidth_spread_gbs"]
            rows.append((r["model"], fmt, "floor", f"{floor:.2f}", f"{1e3 / floor:.1f}", "1.00x", "",
                         f"read {o['read_bandwidth_gbs']:.1f} GB/s (best; median {spread[1]:.1f})",
                         f"{weights / 1e6:.0f} MB/token", ""))
        floor = r["formats"][0]["llorch"]["floor_ms_per_token"] if r["formats"][0]["format"] == "f32" else None
        for dtype, m in r["pytorch"].items():
            rows.append((r["model"], dtype, "pytorch " + m["torch"], f"{m['decode_ms_per_token']:.2f}",
                         f"{1e3 / m['decode_ms_per_token']:.1f}",
                         f"{m['decode_ms_per_token'] / floor:.2f}x (f32's)" if floor else "-", "-",
                         f"{m['prefill_ms_last_logits']:.1f}", f"{m['prefill_ms_all_logits']:.1f}", "-"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print("(vs floor: the engine's time / its format's bandwidth floor; vs llama.cpp: llama.cpp's time in the "
          "same format / this engine's, above 1 is faster, also in brackets beside prefill; peak RSS over the "
          "format's weight bytes)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads, "results": results}, indent=2))


if __name__ == "__main__":
    main()
