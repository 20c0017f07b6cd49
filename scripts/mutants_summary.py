#!/usr/bin/env python3
"""Summarise a cargo-mutants run of the engine judged by the bundled validation
(scripts/mutants.sh): how many mutants were caught, missed, timed out or did not build, and for
the caught whether the validation's first failing row is the mutated function's own stage.

    python3 scripts/mutants_summary.py target/mutants/mutants.out [--record mutants/results.tsv]

A mutant's stage is the checkpoint where a bug in its function first shows in a forward pass
(STAGES below: the map from engine files and functions to checkpoints). tests/validation_gate.rs
prints the first failing row as "FIRST FAILURE: ... checkpoint N ...", read from the mutant's log.
A caught mutant is then

  at its stage       the first failing row is one of its function's checkpoints;
  at another stage   it is a checkpoint before or after them (say which: a reason to look);
  as an error        the validation stopped with an error (a load refused, a panic) before any row;
  shared code        its function serves every stage (threads, scratch, tape): no one checkpoint.

A missed mutant is looked up in mutants/equivalent.tsv, the triage: a mutant there is equivalent
(no validation can tell it from the engine) or beyond any validation's reach (it changes only
what happens on a bad input no reference exists for), and the file says why; one not there is
a gap, and with --fail-on-gap (CI) the summary exits 1.

--record merges this run's lines into a tab-separated record (mutant, outcome, verdict, first
failure or why it is triaged, commit), replacing the lines of the same mutants, so that shards run on different days add up to
the whole score; the record keeps the commit each line was measured on.

Standard library only: this runs beside cargo, not in the Python reference environment.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Engine file (under src/engine/) or "file:function" -> the checkpoints where a bug there first
# shows, in forward order (CHECKPOINTS.md's table). A function entry overrides its file's.
# None: the code serves every stage (no single checkpoint is its own).
STAGES: dict[str, set[int] | None] = {
    # Loading: a wrong weight shows at the first stage that reads it.
    "config.rs": {0, 1, 2},
    "weights.rs": {0, 1, 2},
    "format.rs": {0, 2},
    "packed.rs": {0, 2},  # wte is packed too: the embeddings read it first
    "tokenizer.rs": {0, 12},
    "tokenizer.rs:Gpt2Tokenizer::decode": {12},
    "tokenizer.rs:TextStream<'_>::next": {12},
    # The forward pass, stage by stage.
    "gpt2.rs": {0, 8, 9},
    "gpt2.rs:Gpt2::forward": {12},  # generation's pass (llorch generate, checkpoint 12)
    "block.rs": {1, 2, 3, 4, 5, 6, 7},
    "layer_norm.rs": {1},
    "linear.rs": {2},
    "kernels/driver.rs": {2},
    "kernels/mod.rs": {2},
    "kernels/tile.rs": {2},
    "kernels/lanes.rs": {2},
    "kernels/widen.rs": {2},
    "attention.rs": {2, 3, 4, 5},
    "attention.rs:query_key": {4},
    "attention.rs:visible_keys": {4},
    "attention.rs:softmax_in_place": {4},
    "attention.rs:weighted_values": {5},
    "kv_cache.rs": {3},
    "kv_cache.rs:KvCache::logits": {8, 9},
    "mlp.rs": {6},
    "math.rs": None,
    "math.rs:sum_f64": {1},
    "math.rs:exp": {4},
    "sampling.rs": {10, 11},
    "sampling.rs:argmax": {10, 12},
    "generate.rs": {12},
    # Shared by every stage.
    "team.rs": None,
    "claim.rs": None,
    "scratch.rs": None,
    "tape.rs": None,
    "checkpoint.rs": None,
}

TRIAGE = Path(__file__).resolve().parent.parent / "mutants" / "equivalent.tsv"

FIRST_FAILURE = re.compile(r"FIRST FAILURE: (.*)")
# The row form of the line (an error's form has "exit" and its message instead, which may name
# a checkpoint too).
CHECKPOINT = re.compile(r"\bmode \S+ checkpoint (\d+)\b")


def stage_of(file: str, function: str | None) -> set[int] | None:
    """The checkpoints of a mutant's function; KeyError for an engine file the map does not
    know, so a new file cannot be missed."""
    name = file.removeprefix("src/engine/")
    if function and f"{name}:{function}" in STAGES:
        return STAGES[f"{name}:{function}"]
    return STAGES[name]


def load_triage(path: Path) -> list[tuple[str, str, str]]:
    """(mutant without its line and column, a fragment of the line it mutates, why)."""
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if n == 1 or not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise SystemExit(f"{path}:{n}: want 3 tab-separated fields (mutant, source, why), got {len(fields)}")
        entries.append((fields[0], fields[1], fields[2]))
    return entries


def unplaced(name: str) -> str:
    """A mutant's name without its line and column, which move with every edit above it."""
    return re.sub(r":\d+:\d+: ", ": ", name, count=1)


def mutated_line(diff: Path) -> str:
    """The source line a mutant changes, as it was: the first removed line of its diff."""
    if not diff.is_file():
        return ""
    for line in diff.read_text(errors="replace").splitlines():
        if line.startswith("-") and not line.startswith("---"):
            return line[1:].strip()
    return ""


def equivalent(triage: list[tuple[str, str, str]], name: str, source: str) -> str | None:
    for mutant, fragment, why in triage:
        if mutant == unplaced(name) and fragment in source:
            return why
    return None


def first_failure(log: Path) -> str | None:
    if not log.is_file():
        return None
    found = FIRST_FAILURE.findall(log.read_text(errors="replace"))
    return found[-1].strip() if found else None


def verdict(outcome: str, stages: set[int] | None, failure: str | None) -> str:
    if outcome != "caught":
        return outcome
    if stages is None:
        return "caught, shared code"
    match = CHECKPOINT.search(failure or "")
    if match is None:
        return "caught as an error"
    checkpoint = int(match.group(1))
    if checkpoint in stages:
        return "caught at its stage"
    return "caught at another stage"


OUTCOMES = {
    "CaughtMutant": "caught",
    "MissedMutant": "missed",
    "Timeout": "timeout",
    "Unviable": "unviable",
}


def rows(out_dir: Path, triage: list[tuple[str, str, str]]) -> list[dict]:
    """One row per mutant the run finished, from outcomes.json."""
    outcomes = json.loads((out_dir / "outcomes.json").read_text())["outcomes"]
    result = []
    for o in outcomes:
        scenario = o["scenario"]
        if not isinstance(scenario, dict) or "Mutant" not in scenario:
            continue  # the baseline
        mutant = scenario["Mutant"]
        outcome = OUTCOMES.get(o["summary"], o["summary"].lower())
        function = (mutant.get("function") or {}).get("function_name")
        stages = stage_of(mutant["file"], function)
        failure = first_failure(out_dir / o["log_path"]) if outcome == "caught" else None
        source = mutated_line(out_dir / o.get("diff_path", ""))
        why = equivalent(triage, mutant["name"], source) if outcome == "missed" else None
        result.append({
            "mutant": mutant["name"],
            "outcome": outcome,
            "stages": stages,
            "failure": failure or why or "",
            "source": source,
            "verdict": ("equivalent" if why else "gap") if outcome == "missed" else verdict(outcome, stages, failure),
        })
    return result


def show_stages(stages: set[int] | None) -> str:
    if stages is None:
        return "every stage"
    return ",".join(map(str, sorted(stages)))


def report(found: list[dict]) -> None:
    counts = Counter(r["outcome"] for r in found)
    gaps = sum(r["verdict"] == "gap" for r in found)
    print(f"{len(found)} mutants: " + ", ".join(f"{counts[k]} {k}" for k in ("caught", "missed", "timeout", "unviable")))
    print(f"missed: {counts['missed'] - gaps} triaged (mutants/equivalent.tsv: equivalent, or beyond any"
          f" validation's reach), {gaps} gaps")
    killed = counts["caught"] + counts["timeout"]
    judged = killed + gaps
    if judged:
        # A timeout is a mutant the validation did not pass (it never finished): killed.
        print(f"score, (caught + timeout) / (caught + timeout + gaps): {killed}/{judged} = {killed / judged:.1%}")
    verdicts = Counter(r["verdict"] for r in found if r["outcome"] == "caught")
    for v, n in sorted(verdicts.items()):
        print(f"  {v}: {n}")
    for r in found:
        if r["verdict"] == "caught at another stage":
            print(f"  another stage: {r['mutant']}\n      expected {show_stages(r['stages'])}; {r['failure']}")
    for r in found:
        if r["outcome"] == "timeout":
            print(f"  timeout: {r['mutant']}")
    for r in found:
        if r["verdict"] == "gap":
            print(f"  GAP: {r['mutant']}\n      {r['source']}")


def record(found: list[dict], path: Path, out_dir: Path) -> None:
    # The commit the mutants were made from: mutants.sh writes it beside mutants.out (the run may
    # have been of another checkout); else this checkout's.
    written = out_dir.parent / "commit"
    if written.is_file():
        commit = written.read_text().strip()
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines()[1:]:
            lines[line.split("\t", 1)[0]] = line
    for r in found:
        lines[r["mutant"]] = "\t".join([r["mutant"], r["outcome"], r["verdict"], r["failure"], commit])
    # A mutant is named by its line and column: once its code moves, changes or goes, the line
    # measured it no longer describes the engine (and the mutant at its new place is another
    # name). The record keeps only the mutants this checkout has.
    listing = subprocess.run(["cargo", "mutants", "--list"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    if listing.returncode == 0:
        current = set(listing.stdout.splitlines())
        stale = [name for name in lines if name not in current]
        for name in stale:
            del lines[name]
        if stale:
            print(f"dropped {len(stale)} lines of mutants this checkout no longer has (their code moved or changed)")
        print(f"{len(lines)} of this checkout's {len(current)} mutants are recorded; {len(current) - len(lines)} still to run")
    else:
        print("mutants_summary: cargo mutants --list failed: stale lines were not dropped", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "mutant\toutcome\tverdict\tfirst failure\tcommit"
    path.write_text("\n".join([header, *sorted(lines.values())]) + "\n")
    print(f"recorded {len(found)} mutants in {path} ({len(lines)} in all)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="cargo-mutants' mutants.out directory")
    parser.add_argument("--record", type=Path, help="merge this run into a tab-separated record")
    parser.add_argument("--fail-on-gap", action="store_true", help="exit 1 if a missed mutant is not triaged")
    args = parser.parse_args()
    if not (args.out_dir / "outcomes.json").is_file():
        print(f"mutants_summary: {args.out_dir}/outcomes.json not found: did cargo mutants run?", file=sys.stderr)
        return 2
    found = rows(args.out_dir, load_triage(TRIAGE))
    report(found)
    listed = json.loads((args.out_dir / "mutants.json").read_text())
    if len(listed) > len(found):
        print(f"not run (the run was stopped first): {len(listed) - len(found)} of {len(listed)} mutants")
    if args.record:
        record(found, args.record, args.out_dir)
    if args.fail_on_gap and any(r["verdict"] == "gap" for r in found):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
