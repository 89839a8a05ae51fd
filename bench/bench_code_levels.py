"""Benchmarks of the code levels.

    PYTHONPATH=src .venv/bin/python bench/bench_code_levels.py [--skip-1g | --only-1g]

* L2 cell overhead with a 3 MB context, after warm-up (target <= 30 ms);
* L3 worker start: executor made -> first cell answered (target <= 300 ms);
* L3 with a 1 GiB context: start-up (executor made -> first cell answered, the context sent
  to the worker included) and the worker's RSS after loading (target <= context + 200 MB);
* word frequency over a 100 MB log: L3 cell vs the same code run by a plain python.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from contextbox.context import Context
from contextbox.executors import Action, Session, executor_factory
from contextbox.types import Limits

MIB = 1 << 20
WORDS = "error warning info debug user login logout request response timeout retry cache miss hit db query".split()
WORD_FREQ = "from collections import Counter\nc = Counter(context.split())\nprint(c.most_common(3))"


def session(ctx: Context, **svc: Any) -> Session:
    return Session(context=ctx, limits=Limits(), levels=("l1", "l2", "l3"), run_id="bench", services=svc)


def cell(ex: Any, code: str) -> Any:
    return ex.run(Action(kind="code", level=ex.level, op="code", args={"code": code}, source=code))


def log_lines(n_bytes: int, seed: int = 1) -> str:
    rnd = random.Random(seed)
    out, size, i = [], 0, 0
    while size < n_bytes:
        line = f"2024-01-01T00:00:{i % 60:02d} host{i % 17} " + " ".join(rnd.choices(WORDS, k=10)) + f" id={i}\n"
        out.append(line)
        size += len(line)
        i += 1
    return "".join(out)


def bench_l2_overhead() -> dict[str, float]:
    ctx = Context.from_value(log_lines(3 * 10**6))
    ex = executor_factory("l2")(session(ctx))  # type: ignore[misc]
    try:
        t0 = time.perf_counter()
        cell(ex, "x = 0")
        first = time.perf_counter() - t0
        for _ in range(5):
            cell(ex, "x = 1")
        times = []
        for i in range(50):
            t0 = time.perf_counter()
            cell(ex, f"x = {i}\nprint(x)")
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cell(ex, "print(len(find('timeout')))")
        find_t = time.perf_counter() - t0
    finally:
        ex.close()
    return {
        "first_cell_ms": first * 1000,
        "cell_ms_median": statistics.median(times) * 1000,
        "cell_ms_p95": sorted(times)[int(0.95 * len(times))] * 1000,
        "find_cell_ms": find_t * 1000,
    }


def bench_l3_start() -> dict[str, float]:
    ctx = Context.from_value("small context\n")
    times, inner = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        ex = executor_factory("l3")(session(ctx))  # type: ignore[misc]
        cell(ex, "pass")
        times.append(time.perf_counter() - t0)
        inner.append(ex._proc.ready["report"]["startup_ms"])
        ex.close()
    return {
        "start_ms_median": statistics.median(times) * 1000,
        "start_ms_max": max(times) * 1000,
        "worker_reported_ms": statistics.median(inner),
    }


def _rss(pid: int) -> tuple[int, int]:
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0]) * 1024
    return vals["VmRSS"], vals["VmHWM"]


def bench_l3_1g(tmp: Path) -> dict[str, float]:
    path = tmp / "one_gib.log"
    block = log_lines(16 * MIB).encode()
    with open(path, "wb") as f:
        left = 1 << 30
        while left > 0:
            f.write(block[:left])
            left -= min(left, len(block))
    try:
        ctx = Context.load(str(path))
        size = path.stat().st_size
        t0 = time.perf_counter()
        ex = executor_factory("l3")(session(ctx))  # type: ignore[misc]
        out = cell(ex, "print(len(context))")
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cell(ex, "pass")
        warm_ms = (time.perf_counter() - t0) * 1000
        assert out.text.strip() == str(len(ctx.text)), out.text
        rss, hwm = _rss(ex._proc.popen.pid)
        t0 = time.perf_counter()
        out = cell(ex, "print(context.count('timeout'))")
        count_s = time.perf_counter() - t0
        ex.close()
        del ctx
    finally:
        path.unlink()
    return {
        "context_mib": size / MIB,
        "start_to_first_cell_s": start_s,
        "next_cell_ms": warm_ms,
        "rss_mib": rss / MIB,
        "peak_rss_mib": hwm / MIB,
        "rss_over_context_mib": (rss - size) / MIB,
        "count_cell_s": count_s,
    }


def bench_wordfreq(tmp: Path) -> dict[str, float]:
    path = tmp / "hundred_mb.log"
    path.write_text(log_lines(100 * 10**6))
    try:
        ctx = Context.load(str(path))
        ex = executor_factory("l3")(session(ctx))  # type: ignore[misc]
        cell(ex, "pass")
        t0 = time.perf_counter()
        out = cell(ex, WORD_FREQ)
        l3_s = time.perf_counter() - t0
        ex.close()
        script = (
            f"import time\ncontext = open({str(path)!r}, encoding='utf-8').read()\nt0 = time.perf_counter()\n"
            f"{WORD_FREQ}\nprint('T', time.perf_counter() - t0)"
        )
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        direct_s = float(res.stdout.strip().split("T ")[-1])
        assert out.text.strip() == res.stdout.strip().split("\n")[0], (out.text, res.stdout)
    finally:
        path.unlink()
    return {"l3_cell_s": l3_s, "direct_python_s": direct_s, "ratio": l3_s / direct_s}


def main() -> None:
    results: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="cbx-bench-") as d:
        tmp = Path(d)
        only_1g = "--only-1g" in sys.argv
        if not only_1g:
            results.append(("L2 cell overhead, 3 MB context", bench_l2_overhead()))
            results.append(("L3 worker start, 14-character context", bench_l3_start()))
        if "--skip-1g" not in sys.argv:
            results.append(("L3 1 GiB context", bench_l3_1g(tmp)))
        if not only_1g:
            results.append(("word frequency, 100 MB log", bench_wordfreq(tmp)))
    width = max(len(k) for _, r in results for k in r)
    for title, r in results:
        print(f"\n{title}")
        for k, v in r.items():
            print(f"  {k:<{width}}  {v:10.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
