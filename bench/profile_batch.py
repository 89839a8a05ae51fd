#!/usr/bin/env python3
"""CPU per run of ``rlm batch`` on local workers: where the engine's time goes (not a timed test).

    nice -n 19 env PYTHONPATH=src .venv/bin/python bench/profile_batch.py             # CPU figures
    nice -n 19 env PYTHONPATH=src .venv/bin/python bench/profile_batch.py --profile   # + cProfile of the runs
    ... bench/profile_batch.py --repeat 5          # the least CPU of 5 batches (a loaded machine)
    ... bench/profile_batch.py --concurrency 1 --latency 0 --tasks 100 --repeat 5   # serial: least noise

The same batch as ``bench_batch.py`` (200 tasks × 3 scripted iterations, the loopback fake OpenAI
server in this process answering after ``--latency``, ``max_concurrency = 32``, ``--workers 32``),
run twice: without a run store (as ``bench_batch.py``) and with the run store ``rlm batch`` uses
(SQLite + JSONL). CPU is measured, not wall time (wall time on a shared machine depends on the
load; CPU time much less):

* by kind of thread (``time.thread_time`` of each): **runs** — the batch's worker threads (each
  run's engine loop: prompts, parsing, commands, events, store writes); **calls** — the thread
  each model call runs on (the provider: SDK, HTTP client); **server** — the fake server's
  request handling (timed per request); **driver** — the thread running the batch (results
  file, scheduling); **other threads**; **unaccounted** — the rest of the process's CPU
  (``time.process_time``): threads still alive at the end (the HTTP server's accept loop)...

``--profile`` merges a cProfile of every thread above and prints the top functions by their own
time and by cumulative time (cProfile inflates CPU: use the shares).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

import fakeserver  # noqa: E402
from bench_batch import setup, turns  # noqa: E402
from fakeserver import FakeLLMServer  # noqa: E402

from contextbox.batch import BatchRunner, LocalExecutor  # noqa: E402

ORIGINAL = {"handle": fakeserver._Handler.handle_one_request, "run": threading.Thread.run}


def bucket(name: str) -> str:
    """What a thread does, from its name."""
    if name.startswith("batch"):
        return "runs"  # the batch's worker threads: the engine loop of each run
    if name.startswith("rlm-"):
        return "calls"  # a run's model call (the engine waits for it on another thread)
    return "other"


class Meter:
    """Thread CPU by kind of thread: the runs' engine loops, their model calls, the fake server's
    requests (one connection serves many, so its requests are timed one by one), the driver."""

    def __init__(self, profile: bool, kinds: set[str] | None = None) -> None:
        self.lock = threading.Lock()
        self.cpu: dict[str, float] = {}
        self.profile = profile
        self.kinds = kinds
        self.stats: pstats.Stats | None = None

    def add(self, key: str, cpu: float, prof: cProfile.Profile | None) -> None:
        with self.lock:
            self.cpu[key] = self.cpu.get(key, 0.0) + cpu
            if prof is not None:
                if self.stats is None:
                    self.stats = pstats.Stats(prof, stream=io.StringIO())
                else:
                    self.stats.add(prof)

    def timed(self, key: str, fn: Any) -> Any:
        on = self.profile and (self.kinds is None or key in self.kinds)
        prof = cProfile.Profile(time.thread_time) if on else None  # CPU, not wall
        t0 = time.thread_time()
        if prof is not None:
            prof.enable()
        try:
            return fn()
        finally:
            if prof is not None:
                prof.disable()
            self.add(key, time.thread_time() - t0, prof)

    def install(self) -> None:
        meter = self
        handle, run = ORIGINAL["handle"], ORIGINAL["run"]

        def timed_handle(self: Any) -> None:
            meter.timed("server", lambda: handle(self))

        def timed_run(self: threading.Thread) -> None:
            meter.timed(bucket(self.name), lambda: run(self))

        fakeserver._Handler.handle_one_request = timed_handle  # type: ignore[method-assign]
        threading.Thread.run = timed_run  # type: ignore[method-assign]


def one(srv: FakeLLMServer, tmp: Path, a: argparse.Namespace, with_store: bool, profile: bool) -> dict[str, Any]:
    meter = Meter(profile, set(a.kinds.split(",")) if a.kinds else None)
    meter.install()
    config, tasks = setup(tmp, srv.base_url, a.tasks, max_concurrency=a.concurrency)
    store = None
    if with_store:
        from contextbox.stores.sqlite import default_store

        store = default_store(config, str(tmp / f"runs-{time.monotonic_ns()}"))
    ex = LocalExecutor(config, store, a.concurrency)
    ex.prepare(tasks)
    srv.reset()
    meter.cpu.clear()
    meter.stats = None
    c0, t0 = time.process_time(), time.monotonic()
    runner = BatchRunner(tasks, tmp / f"out-{time.monotonic_ns()}.jsonl", ex)
    st = meter.timed("driver", runner.run)
    wall = time.monotonic() - t0
    cpu = time.process_time() - c0
    if store is not None:
        store.close()
    n = a.tasks
    calls = srv.request_count
    ideal = calls * a.latency / a.concurrency
    ms = {k: 1000 * v / n for k, v in meter.cpu.items()}
    known = sum(meter.cpu.values())
    out = {"store": with_store, "answered": st.statuses.get("answered", 0), "calls": calls,
           "ms_per_run": {"runs": ms.get("runs", 0.0), "calls": ms.get("calls", 0.0), "server": ms.get("server", 0.0),
                          "driver": ms.get("driver", 0.0), "other threads": ms.get("other", 0.0),
                          "unaccounted": 1000 * (cpu - known) / n},
           "process_ms": 1000 * cpu / n, "process_s": cpu, "wall_s": wall, "share": ideal / wall}
    if meter.stats is not None:
        for key in ("tottime", "cumulative"):
            s = io.StringIO()
            meter.stats.stream = s
            meter.stats.sort_stats(key).print_stats(a.top)
            out[f"profile_{key}"] = s.getvalue()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="run each batch N times, report the one with least CPU")
    ap.add_argument("--profile", action="store_true", help="cProfile the runs (slower; shares only)")
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--kinds", help="profile only these kinds of thread: runs,calls,server,driver,other")
    ap.add_argument("--store", choices=["both", "yes", "no"], default="both")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="profile-batch-"))
    rows = []
    with FakeLLMServer(replies=turns(a.iterations), latency=a.latency) as srv:
        for with_store in {"both": (False, True), "yes": (True,), "no": (False,)}[a.store]:
            tries = [one(srv, tmp, a, with_store, a.profile) for _ in range(a.repeat)]
            r = min(tries, key=lambda t: t["process_ms"])  # the least disturbed by other processes
            r["process_ms_all"] = [round(t["process_ms"], 2) for t in tries]
            rows.append(r)
            for key in ("profile_tottime", "profile_cumulative"):
                if key in r:
                    print(f"\n## {'with' if with_store else 'without'} a store: {key}\n{r[key]}")
    print(f"\n{a.tasks} tasks × {a.iterations} calls, latency {a.latency:g} s, --workers {a.concurrency}"
          f"{' (cProfile on: CPU inflated)' if a.profile else ''}; least CPU of {a.repeat} batch(es): process CPU ms "
          f"a run of each: {', '.join(str(r['process_ms_all']) for r in rows)}\n")
    parts = list(rows[0]["ms_per_run"])
    print("CPU ms a run (3 calls), by thread kind: " + ", ".join(parts) + "\n")
    print("| run store | answered | " + " | ".join(parts) + " | process CPU ms a run | process CPU s | wall s | "
          "share of ideal |")
    print("|---|---|" + "---|" * len(parts) + "---|---|---|---|")
    for r in rows:
        cells = " | ".join(f"{r['ms_per_run'][k]:.1f}" for k in parts)
        print(f"| {'SQLite + JSONL' if r['store'] else 'none'} | {r['answered']} | {cells} | {r['process_ms']:.1f} | "
              f"{r['process_s']:.2f} | {r['wall_s']:.2f} | {r['share']:.2f} |")
    json_out = HERE / "out"
    json_out.mkdir(exist_ok=True)
    (json_out / "profile_batch.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if not k.startswith("profile_")} for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
