#!/usr/bin/env python3
"""Train the bundled model: a 2-layer, 64-wide GPT-2 with the real 50,257-token tokenizer, on the
King James Version of the Bible, seeded, on the CPU.

Every other model llorch is tested on has random weights, whose activations are all of one size
and whose greedy text is noise. This one is trained: its weights have the structure training
gives (a few large embedding and LayerNorm values, attention that has learnt where to look),
and `llorch generate "Hello." --temp 0` prints English words.

The corpus is public domain (the KJV of 1611, whose copyright has expired) and comes from
Debian's bible-kjv-text package, which prints it through its `bible` program:

    apt-get install bible-kjv-text
    source scripts/venv.sh && $PYTHON scripts/train_tiny_gpt2.py --out fixtures/tiny-gpt2

The same seed, steps and library versions (scripts/requirements.txt) give the same weights on
the same machine; float32 training on another CPU may differ in the last bits. The script
checks what it made as make_random_gpt2.py does: HF in float32 and float64 must agree to half of
every checkpoint's tolerance, and their greedy tokens must be equal.
"""

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_random_gpt2  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = REPO / "fixtures" / "gpt2-tokenizer"
EOS = 50256


def kjv_text():
    """The whole KJV as plain text: verse numbers removed, one paragraph per chapter, the books'
    chapter headings ("Genesis 1") kept as lines of their own."""
    try:
        raw = subprocess.run(["bible", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit("error: the corpus comes from Debian's bible-kjv-text: apt-get install bible-kjv-text")
    chapters, lines = [], []
    for line in raw.splitlines():
        if re.fullmatch(r"\S.* \d+", line.strip()) and not line.startswith(" "):
            if lines:
                chapters.append(" ".join(lines))
            chapters.append(line.strip())
            lines = []
        elif line.strip():
            lines.append(re.sub(r"^\s*\d+\s+", "", line).strip())
    if lines:
        chapters.append(" ".join(lines))
    return "\n\n".join(chapters) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=128, help="tokens per training sequence")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tokenizer = GPT2Tokenizer(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt"))
    text = kjv_text()
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    print(f"corpus: the KJV from bible-kjv-text, {len(text)} characters, {len(ids)} tokens", file=sys.stderr)

    config = GPT2Config(
        n_layer=2, n_head=4, n_embd=64, n_positions=1024, vocab_size=EOS + 1,
        bos_token_id=EOS, eos_token_id=EOS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(args.seed)
    warmup = max(1, args.steps // 20)
    start = time.time()
    model.train()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(ids) - args.context - 1, (args.batch,), generator=generator)
        batch = torch.stack([ids[s:s + args.context] for s in starts.tolist()])
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}: loss {loss.item():.3f}, lr {lr:.2e}, "
                  f"{time.time() - start:.0f} s", file=sys.stderr)
    model.eval()

    out = Path(args.out)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    model.config.llorch_trained = {
        "corpus": "King James Version (1611, public domain), Debian package bible-kjv-text",
        "tokens": len(ids), "steps": args.steps, "batch": args.batch, "context": args.context,
        "lr": args.lr, "seed": args.seed, "final_loss": round(loss.item(), 3),
    }
    model.save_pretrained(out)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER / f, out / f)
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}) + "\n")

    prompt = tokenizer.encode("Hello.")
    worst, where, gen32, gen64 = make_random_gpt2.float64_check(out, prompt)
    print(f"greedy from 'Hello.': {tokenizer.decode(prompt + gen32)!r}", file=sys.stderr)
    print(f"float32 vs float64: worst |diff| is {worst:.3f} of the tolerance ({where})", file=sys.stderr)
    # As make_random_gpt2.py: past half a tolerance, or with other greedy tokens, a correct
    # engine could fail against the float32 reference.
    if worst > 0.5 or gen32 != gen64:
        sys.exit(f"error: float32 and float64 disagree by {worst:.2f} of a tolerance at {where}, or "
                 f"their greedy tokens differ: the float32 reference would not be a good peer")


if __name__ == "__main__":
    main()
