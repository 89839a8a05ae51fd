"""The War and Peace needle at 10 depths with a real model (default: the embedded local model).

    .venv/bin/python bench/bench_needle.py [--model local] [--depths 10] [--seed 1] [--text PATH]

Targets (issue "works out of the box"): exact answer at >= 9 of 10 depths, median <= 3 iterations,
median wall time <= 60 s per question, model load <= 10 s after the first assembly.
Writes bench/out/bench_needle.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from contextbox import RLM, Config
from contextbox.demos.common import find_text
from contextbox.demos.war_and_peace import run_needle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="local")
    ap.add_argument("--depths", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--text")
    ap.add_argument("--out", default="bench/out/bench_needle.json")
    args = ap.parse_args()

    text = find_text(args.text).read_text(encoding="utf-8")
    config = Config.load(model=args.model)
    t = time.monotonic()
    rlm = RLM(config=config)
    if hasattr(rlm.root, "load"):
        rlm.root.load()
    load_s = time.monotonic() - t
    depths = [round(0.05 + i * 0.9 / (args.depths - 1), 3) for i in range(args.depths)]
    rows = []
    for i, d in enumerate(depths):
        r = run_needle(rlm, text, args.seed + i, d)
        rows.append(r)
        print(f"depth {d:.0%}: {r['answer']!r} expected {r['code']} "
              f"{'OK' if r['correct'] else 'MISS'} it={r['iterations']} {r['seconds']}s", flush=True)
    correct = sum(r["correct"] for r in rows)
    med_it = statistics.median(r["iterations"] for r in rows)
    med_s = statistics.median(r["seconds"] for r in rows)
    summary = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "model": rlm.root.name, "correct": correct, "n": len(rows), "median_iterations": med_it,
        "median_seconds": med_s, "model_load_s": round(load_s, 2), "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print()
    print("| metric | value | target |")
    print("|---|---|---|")
    print(f"| exact answers | {correct}/{len(rows)} | >= 9/10 |")
    print(f"| median iterations | {med_it} | <= 3 |")
    print(f"| median wall time per question | {med_s:.1f} s | <= 60 s |")
    print(f"| model load (assembled, warm cache) | {load_s:.1f} s | <= 10 s |")


if __name__ == "__main__":
    main()
