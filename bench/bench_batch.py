#!/usr/bin/env python3
"""Batch benchmark: ``rlm batch`` throughput on local workers and on Ray, and a cluster-wide rpm limit.

    .venv/bin/python bench/bench_batch.py                    # all three parts (~2 minutes)
    .venv/bin/python bench/bench_batch.py --parts local,ray  # no rpm part

What it measures, against the loopback fake OpenAI server of ``tests/`` answering every call after
``--latency`` (300 ms) with scripted root replies (``count``, ``count``, ``final``: 3 iterations a run):

* **local** — 200 tasks, ``--workers 32``, the endpoint's ``max_concurrency = 32``: throughput as a
  share of the ideal the limit allows (32 calls at once, each 300 ms: 600 calls in 5.6 s) [≥ 0.8],
  timed from the first task sent; the engine's start (``executor.prepare``: the model's SDK
  imported and its client built, once per process) is shown apart, and the share with it;
* **ray** — the same on a local Ray cluster (``ray.init(num_cpus=2)``, 2 worker actors), timed from
  the first task sent (the cluster's start and the actors' are shown apart) [≥ 0.8]; the
  endpoint's highest number of calls at once is checked to be ≤ 32;

Since each run's 3 calls follow one another, 200 runs on 32 slots take at least 7 rounds of 0.9 s
(6.3 s: 0.89 of the ideal) when every call takes exactly 300 ms; the ideal is kept as the issue
defines it.
* **rpm** — ``rpm = 600`` on Ray: 250 tasks (750 calls); the most calls the fake server saw in any
  60 s window [≤ 630, within 5 %], and that the 601st call had to wait for the window to move.

The fake server runs in this process (``--server thread``, the default) or in a process of its own
(``--server process``: as a real endpoint, it does not share the batch's interpreter lock; its CPU
is on the same 2 cores and is reported apart).

Prints a Markdown table (with the CPU seconds the batch took: this process, the fake server's and
the Ray actors'; figures that depend far less on the machine's load than wall time)
and writes ``bench/out/bench_batch.json``. ``bench/profile_batch.py`` splits the local CPU by thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from fakeserver import FakeLLMServer  # noqa: E402

from contextbox.batch import BatchRunner, LocalExecutor, load_tasks  # noqa: E402
from contextbox.config import Config  # noqa: E402


def turns(n: int):
    def reply(body: dict[str, Any]) -> str:
        done = sum(m.get("role") == "assistant" for m in body.get("messages", []))
        return json.dumps({"op": "final", "answer": "ok"} if done >= n - 1 else {"op": "count", "pattern": "b"})
    return reply


def setup(tmp: Path, base_url: str, n: int, **limits: Any) -> tuple[Config, list[Any]]:
    extra = "".join(f"{k} = {v}\n" for k, v in limits.items())
    cfg = tmp / f"c{len(list(tmp.glob('c*.toml')))}.toml"
    cfg.write_text(f'model = "fake/m"\n[[providers]]\nname = "fake"\nbase_url = "{base_url}"\nmax_retries = 0\n'
                   f'timeout_s = 600\n{extra}[limits]\ntimeout_s = 600\n')
    tasks = tmp / f"t{n}.jsonl"
    with tasks.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"t{i}", "question": f"how many b? ({i})", "context": "A short note about a cab.\nNothing else here.\n"}) + "\n")
    return Config.load(cfg, runs_dir=str(tmp / "runs")), load_tasks(tasks)


def _serve(conn: Any, iterations: int, latency: float) -> None:
    """The fake server in a process of its own, answering ``stats``/``reset``/``stop`` on ``conn``."""
    with FakeLLMServer(replies=turns(iterations), latency=latency) as srv:
        conn.send(srv.base_url)
        while True:
            cmd = conn.recv()
            if cmd == "stats":
                conn.send((srv.request_count, srv.max_in_flight, list(srv.arrivals)))
            elif cmd == "reset":
                srv.reset()
                conn.send(None)
            else:
                return


class ServerProcess:
    """The fake server run by another process of this machine (``--server process``), as a real
    endpoint would be: its CPU still counts on the machine's cores, but its threads do not share
    the batch's interpreter lock. Arrival times are ``time.monotonic()``, one clock for all
    processes (Linux ``CLOCK_MONOTONIC``)."""

    def __init__(self, iterations: int, latency: float) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")  # before any thread of this process starts
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, iterations, latency), daemon=True)
        self.latency = latency

    def __enter__(self) -> ServerProcess:
        self.proc.start()
        self.base_url = self._conn.recv()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._conn.send("stop")
        self.proc.join(10)
        self.pid = self.proc.pid

    def _stats(self) -> tuple[int, int, list[float]]:
        self._conn.send("stats")
        return self._conn.recv()

    @property
    def request_count(self) -> int:
        return self._stats()[0]

    @property
    def max_in_flight(self) -> int:
        return self._stats()[1]

    @property
    def arrivals(self) -> list[float]:
        return self._stats()[2]

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)


def in_flight(srv: Any, t0: float, wall: float) -> dict[str, float]:
    """The mean number of calls at once at the server over the batch's wall time (each call is
    answered after ``latency``): 32 all the time would be the ideal."""
    busy = len(srv.arrivals) * srv.latency
    return {"mean_in_flight": busy / wall if wall else 0.0}


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process of this machine has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def max_in_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--rpm", type=int, default=600)
    ap.add_argument("--rpm-tasks", type=int, default=250)
    ap.add_argument("--parts", default="local,ray,rpm")
    ap.add_argument("--server", choices=["process", "thread"], default="thread",
                    help="the fake server in this process (default) or in a process of its own, as a real endpoint")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    results: dict[str, Any] = {"tasks": a.tasks, "latency_s": a.latency, "max_concurrency": a.concurrency,
                               "iterations": a.iterations}
    calls = a.tasks * a.iterations
    ideal_s = calls * a.latency / a.concurrency
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    server: Any = (ServerProcess(a.iterations, a.latency) if a.server == "process"
                   else FakeLLMServer(replies=turns(a.iterations), latency=a.latency))
    results["server"] = a.server
    with server as srv:
        server_cpu = getattr(srv, "cpu", lambda: 0.0)  # a server in this process: in its CPU
        if "local" in parts:
            config, tasks = setup(tmp, srv.base_url, a.tasks, max_concurrency=a.concurrency)
            t0 = time.monotonic()
            lex = LocalExecutor(config, None, a.concurrency)
            lex.prepare(tasks)  # the engine's start: the model's SDK imported, its client built
            start = time.monotonic() - t0
            t0, c0, s0 = time.monotonic(), time.process_time(), server_cpu()
            st = BatchRunner(tasks, tmp / "local.jsonl", lex).run()
            wall = time.monotonic() - t0
            cpu, srv_cpu = time.process_time() - c0, server_cpu() - s0
            ok = st.statuses.get("answered", 0)
            results["local"] = {"wall_s": wall, "start_s": start, "answered": ok, "calls": srv.request_count,
                                "cpu_s": cpu, "server_cpu_s": srv_cpu, "cpu_ms_per_run": 1000 * cpu / a.tasks,
                                "max_in_flight": srv.max_in_flight, "ratio": ideal_s / wall,
                                "ratio_with_start": ideal_s / (wall + start), **in_flight(srv, t0, wall)}
            rows.append(("local --workers 32", start, wall, ok, srv.request_count, srv.max_in_flight,
                         results["local"]["mean_in_flight"], ideal_s / wall, ideal_s / (wall + start), cpu, srv_cpu, None))
            srv.reset()
        if parts & {"ray", "rpm"}:
            import ray

            from contextbox import ray_engine

            t0 = time.monotonic()
            ray.init(num_cpus=2, include_dashboard=False, namespace=ray_engine.NAMESPACE, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(ROOT / "src")}})
            results["ray_start_s"] = time.monotonic() - t0
        if "ray" in parts:
            config, tasks = setup(tmp, srv.base_url, a.tasks, max_concurrency=a.concurrency)
            t0 = time.monotonic()
            ex = ray_engine.RayExecutor(config, None, a.concurrency, actors=2)
            ex.prepare(tasks)  # actors up, the model loaded in each (their start is not the batch's)
            start = time.monotonic() - t0
            pids = [i["pid"] for i in ex.actor_info()]
            a0 = sum(proc_cpu(p) for p in pids)
            t0, c0, s0 = time.monotonic(), time.process_time(), server_cpu()
            st = BatchRunner(tasks, tmp / "ray.jsonl", ex).run()
            wall = time.monotonic() - t0
            cpu, srv_cpu = time.process_time() - c0, server_cpu() - s0
            actors_cpu = sum(proc_cpu(p) for p in pids) - a0
            ex.close()
            ok = st.statuses.get("answered", 0)
            results["ray"] = {"wall_s": wall, "start_s": start, "answered": ok, "calls": srv.request_count,
                              "cpu_s": cpu, "server_cpu_s": srv_cpu, "actors_cpu_s": actors_cpu,
                              "cpu_ms_per_run": 1000 * (cpu + actors_cpu) / a.tasks,
                              "max_in_flight": srv.max_in_flight, "ratio": ideal_s / wall,
                              "ratio_with_start": ideal_s / (wall + start), **in_flight(srv, t0, wall)}
            rows.append(("ray (2 actors) --workers 32", start, wall, ok, srv.request_count, srv.max_in_flight,
                         results["ray"]["mean_in_flight"], ideal_s / wall, ideal_s / (wall + start), cpu, srv_cpu, actors_cpu))
            srv.reset()
        if "rpm" in parts:
            config, tasks = setup(tmp, srv.base_url, a.rpm_tasks, max_concurrency=a.concurrency, rpm=a.rpm)
            ex = ray_engine.RayExecutor(config, None, a.concurrency, actors=2)
            t0 = time.monotonic()
            st = BatchRunner(tasks, tmp / "rpm.jsonl", ex).run()
            wall = time.monotonic() - t0
            ex.close()
            arr = list(srv.arrivals)
            peak = max_in_window(arr)
            first = min(arr)
            later = sorted(arr)[a.rpm] - first if len(arr) > a.rpm else None
            results["rpm"] = {"rpm": a.rpm, "calls": len(arr), "max_in_60s": peak, "wall_s": wall,
                              "answered": st.statuses.get("answered", 0), "call_601_after_s": later,
                              "within_5pct": peak <= a.rpm * 1.05}
    print(f"\n{a.tasks} tasks × {a.iterations} calls, server latency {a.latency:g} s, max_concurrency "
          f"{a.concurrency}: ideal {ideal_s:.2f} s\n")
    print("| engine | start s | wall s | answered | calls | max calls at once | mean calls at once | share of ideal | "
          "with the start | CPU s: this process + the fake server's (+ Ray actors) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, start, wall, ok, n, peak, mean, ratio, ratio_all, cpu, srv_cpu, actors in rows:
        cpus = f"{cpu:.2f} + {srv_cpu:.2f}" + (f" + {actors:.2f}" if actors is not None else "")
        print(f"| {name} | {start:.2f} | {wall:.2f} | {ok} | {n} | {peak} | {mean:.1f} | {ratio:.2f} | {ratio_all:.2f} "
              f"| {cpus} |")
    print(f"\nCPU over the batch's wall time; the fake server {'in its own process' if a.server == 'process' else 'in this process (its CPU is in the first figure)'}; locally this process "
          "runs the runs; Ray's own daemons are not counted")
    if "ray_start_s" in results:
        print(f"\nRay cluster start: {results['ray_start_s']:.1f} s (not in the Ray wall time)")
    if "rpm" in results:
        r = results["rpm"]
        print(f"\nrpm = {r['rpm']} on Ray, {r['calls']} calls: at most {r['max_in_60s']} in any 60 s "
              f"(limit +5 % = {r['rpm'] * 1.05:.0f}); call {a.rpm + 1} came {r['call_601_after_s']:.1f} s after "
              f"the first; wall {r['wall_s']:.1f} s")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_batch.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
