#!/usr/bin/env python3
"""Checks what `llorch validate --format json` found about a peer engine (CI, after a
three-way run: ours, PyTorch float32 and float64, and the peer), and prints it:

- every failing row involves the peer: ours and PyTorch agree with each other everywhere;
- in every case the peer's first failing tensor, in forward order, is the expected one;
- the peer is named the odd one out, and nothing else is;
- the peer's tokens (checkpoints 10 and 12) agree with everyone's;
- with --truths N: the run had N float64 truths, and they agreed with each other on every tensor.

    python scripts/check_peer.py REPORT.json --peer llama.cpp-f32 --first prefill:6:0:gelu
"""

import argparse
import json
import sys


def place(row):
    layer = "-" if row["layer"] is None else row["layer"]
    return f"{row['phase']}:{row['checkpoint']}:{layer}:{row['tensor']}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="llorch validate --format json output")
    p.add_argument("--peer", required=True, help="the peer's source name, e.g. llama.cpp-f32")
    p.add_argument("--first", required=True, help="PHASE:CHECKPOINT:LAYER:TENSOR of its expected first deviation")
    p.add_argument("--truths", type=int, help="the number of float64 truths the run must have, all agreeing")
    args = p.parse_args()

    report = json.load(open(args.report))
    rows = report["rows"]
    involves = lambda r: args.peer in r["pair"]
    problems = []

    others = [r for r in rows if not r["passed"] and not involves(r)]
    if others:
        problems.append(f"{len(others)} failing rows without {args.peer}, first {place(others[0])} {others[0]['pair']}")
    for case in sorted({r["case"] for r in rows}):
        failing = [r for r in rows if r["case"] == case and involves(r) and not r["passed"]]
        first = place(failing[0]) if failing else None
        worst = max((r["stats"]["max_abs"] for r in failing[:3] if r["stats"]), default=None)
        print(f"case {case}: {args.peer} first deviates at {first} (max |diff| {worst:.3g})" if failing
              else f"case {case}: {args.peer} passes everything")
        if first != args.first:
            problems.append(f"case {case}: first deviation {first}, expected {args.first}")
    odd = [o["source"] for o in report["odd_ones_out"]]
    if odd != [args.peer]:
        problems.append(f"odd ones out {odd}, expected [{args.peer!r}]")
    tokens = [r for r in rows if r["checkpoint"] in (10, 12) and involves(r)]
    if not tokens or not all(r["passed"] for r in tokens):
        problems.append(f"{args.peer}'s tokens disagree: {[r['detail'] for r in tokens if not r['passed']]}")
    else:
        print(f"{args.peer}'s next tokens and greedy generations agree with every other source ({len(tokens)} rows)")
    if args.truths is not None:
        truths = report.get("truths") or {"sources": [], "disagreements": 0}
        if len(truths["sources"]) != args.truths or truths["disagreements"]:
            problems.append(f"truths {truths['sources']} with {truths['disagreements']} disagreements, expected "
                            f"{args.truths} agreeing")
        else:
            print(f"the {args.truths} truths {truths['sources']} agree (worst |diff| {truths['worst_abs']:.2g})")
    if problems:
        sys.exit("check_peer: " + "; ".join(problems))


if __name__ == "__main__":
    main()
