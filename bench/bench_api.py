#!/usr/bin/env python3
"""The Python API's costs, with a scripted model (no model time: only the engine's own work).

    .venv/bin/python bench/bench_api.py [--runs 100]

* ``run`` vs ``await arun``: wall time per 2-iteration run (the async form runs the generator in a worker
  thread and hands events to the loop) — its overhead per run;
* the default run store (SQLite + JSONL under runs_dir, what the CLI records into) vs ``store=None``: the cost
  of recording a run;
* sessions: a follow-up question with an L3 code cell in a session (the worker is kept) vs the same question as
  a fresh run (a new worker is started every time).

Prints a Markdown table and writes ``bench/out/bench_api.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from contextbox import RLM, Config  # noqa: E402
from contextbox.providers import ScriptedProvider  # noqa: E402

TEXT = "".join(f"line {i}: event {'ERROR' if i % 7 == 0 else 'INFO'} code {i * 13}\n" for i in range(5000))
FIND = json.dumps({"op": "find", "text": "ERROR", "max": 5})
FINAL = json.dumps({"op": "final", "answer": "line 0"})
CELL = "```repl\nFINAL(str(len(context)))\n```"


def rlm(replies: list[str], **kw: Any) -> RLM:
    return RLM(model=ScriptedProvider(replies), config=Config(), **kw)


def per_run(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--cells", type=int, default=10)
    a = ap.parse_args()
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="bench-api-")
    rows: dict[str, float] = {}
    one, rec, aone = (rlm([FIND, FINAL] * a.runs, store=None), rlm([FIND, FINAL] * a.runs),
                      rlm([FIND, FINAL] * a.runs, store=None))
    rows["run, store=None (ms)"] = per_run(lambda: one.run("q?", TEXT), a.runs)
    rows["arun, store=None (ms)"] = per_run(lambda: asyncio.run(aone.arun("q?", TEXT)), a.runs)
    t = time.perf_counter()
    rec.run("q?", TEXT)  # opens the store
    rows["opening the default store, once per RLM (ms)"] = (time.perf_counter() - t) * 1000 - rows[
        "run, store=None (ms)"]
    rows["run, default store (ms)"] = per_run(lambda: rec.run("q?", TEXT), a.runs - 1)
    rows["arun overhead per run (ms)"] = rows["arun, store=None (ms)"] - rows["run, store=None (ms)"]
    rows["recording overhead per run (ms)"] = rows["run, default store (ms)"] - rows["run, store=None (ms)"]

    fresh = per_run(lambda: rlm([FIND, CELL], levels="l1,l3", store=None).run("q?", TEXT), a.cells)
    r = rlm([FIND] + [CELL] * (a.cells + 1), levels="l1,l3", store=None)
    with r.session(TEXT) as s:
        s.ask("first")  # starts the worker
        follow = per_run(lambda: s.ask("again"), a.cells)
        answers = {res.answer for res in s.results}
    assert answers == {str(len(TEXT))}, answers  # every follow-up ran its cell in the kept worker
    rows["L3 question, fresh run (ms)"] = fresh
    rows["L3 question, session follow-up (ms)"] = follow

    print("| measure | median |\n|---|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_api.json").write_text(json.dumps({"runs": a.runs, "cells": a.cells, **rows}, indent=2))


if __name__ == "__main__":
    main()
