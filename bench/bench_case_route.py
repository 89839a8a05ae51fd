#!/usr/bin/env python3
"""The case route's engine part on generated case files: what each suspect's sub-call gets, and how fast.

    .venv/bin/python bench/bench_case_route.py                 # 40 cases of 100,000 characters
    .venv/bin/python bench/bench_case_route.py --cases 10 --length 400000

No model runs. For every generated ``detective`` case (``rlm bench detective``'s generator, seeds
0..N-1) it runs ``suspects`` (:func:`contextbox.case_route.build`) and checks, against the case's
known solution, that each of the five suspects' dossiers holds what decides them — their own
statement, the staff statement that confirms or breaks their alibi (a broken one names nobody: it is
found through the place), their own attribute line and none of the others' — and that the shared block
holds the forensic note. It then reports the sub-call prompt sizes (characters; ≈ tokens at 4 a token)
and the time of ``suspects``. Writes ``bench/out/bench_case_route.json``.

What this cannot measure: whether the 1.5B sub-model states the facts right from these prompts — that
is ``rlm bench detective --model local --n 3``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from contextbox.bench.detective import detective  # noqa: E402
from contextbox.case_route import TASK, build  # noqa: E402


def check(task) -> dict:
    roles = task.meta["roles"]
    t0 = time.perf_counter()
    rows, evidence, victims = build(task.context, task.question)
    took = time.perf_counter() - t0
    by_name = {r["name"]: r["text"] for r in rows}
    ok = {"statement": 0, "alibi": 0, "attribute": 0, "only_own_attribute": 0, "examined": 0}
    for name, role in roles.items():
        text = by_name.get(name)
        if text is None:
            continue
        ok["examined"] += 1
        ok["statement"] += f"STATEMENT OF {name.upper()}" in text
        broken = "alone there" in text
        confirmed = f"with {name}, and {name} never left" in text
        ok["alibi"] += (broken and not confirmed) if role in ("culprit", "broken") else (confirmed and not broken)
        ok["attribute"] += re.search(rf"{name} (wears|wore|smokes)", text) is not None
        ok["only_own_attribute"] += not any(re.search(rf"{s} (wears|wore|smokes)", text) for s in roles if s != name)
    tr = {r["name"]: r["trace"] for r in rows}
    fits = [tr[n] for n, role in roles.items() if role in ("culprit", "match") and n in tr]
    rest = [tr[n] for n, role in roles.items() if role not in ("culprit", "match") and n in tr]
    ok["trace_separates"] = 5 * (bool(fits) and bool(rest) and min(fits) > max(rest))  # per case, scaled to 5
    head = len(TASK.format(question=task.question, evidence=evidence))
    return {"id": task.id, "chars": len(task.context), "suspects_s": took, "candidates": len(rows),
            "forensic_shared": "FORENSIC NOTE" in evidence,
            "victim_left_out": bool(victims) and victims[0] in task.question and victims[0] not in by_name,
            "checks": ok, "prefix_chars": head, "dossier_chars": [len(r["text"]) for r in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--length", type=int, default=100_000)
    args = ap.parse_args()
    tasks = [t for seed in range(args.cases) for t in detective(1, seed, [args.length], None)]
    results = [check(t) for t in tasks]
    n = len(results)
    total = {k: sum(r["checks"][k] for r in results) for k in results[0]["checks"]}
    dossiers = [c for r in results for c in r["dossier_chars"]]
    print(f"| {n} cases of {args.length:,} characters | share of the 5 suspects |")
    print("|---|---|")
    for k, v in total.items():
        print(f"| {k} | {v}/{5 * n} ({v / (5 * n):.0%}) |")
    print(f"| forensic note in the shared block | {sum(r['forensic_shared'] for r in results)}/{n} |")
    print(f"| victim left out of the suspects | {sum(r['victim_left_out'] for r in results)}/{n} |")
    print(f"\ncandidates examined: median {statistics.median(r['candidates'] for r in results)}; "
          f"shared prefix median {statistics.median(r['prefix_chars'] for r in results):,.0f} chars; "
          f"dossier median {statistics.median(dossiers):,.0f} chars (max {max(dossiers):,}); "
          f"suspects op median {statistics.median(r['suspects_s'] for r in results) * 1000:.0f} ms "
          f"(max {max(r['suspects_s'] for r in results) * 1000:.0f} ms)")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_case_route.json").write_text(json.dumps({"cases": n, "length": args.length, "totals": total,
                                                           "results": results}, indent=1))
    return 0 if all(v == 5 * n for v in total.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
