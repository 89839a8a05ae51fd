"""``rlm batch TASKS.jsonl --out OUT.jsonl``: the command line of :mod:`contextbox.batch`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import UsageError
from .pricing import format_cost

#: without a terminal, progress is printed at most this often
PLAIN_EVERY_S = 10.0


def add_parser(sub: Any, positive_int: Any) -> None:
    b = sub.add_parser("batch", help="answer many questions (a JSONL or CSV task file), locally or on Ray")
    b.add_argument("tasks", metavar="TASKS", help="JSONL (or .csv) tasks: id, question, context | context_path, model, sub_model, "
                                 "levels, limits")
    b.add_argument("--out", metavar="FILE", help="results, one JSON line per finished run (default: TASKS.out.jsonl); "
                                 "re-running skips ids already in it")
    b.add_argument("--workers", type=positive_int, default=4, help="runs at once (default 4)")
    b.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local threads (default) or Ray tasks (pip install 'contextbox[ray]')")
    b.add_argument("--address", metavar="ADDRESS", help="Ray cluster address (default: start a local Ray)")
    b.add_argument("--ray-actors", type=positive_int, metavar="N", help="Ray worker processes (default: the cluster's CPUs)")
    b.add_argument("-m", "--model", metavar="MODEL", help="default root model of tasks that name none")
    b.add_argument("--sub-model", metavar="MODEL", help="default sub-model for delegation")
    b.add_argument("--levels", metavar="LEVELS", help="default levels, e.g. l1,l4")
    b.add_argument("--max-iterations", type=positive_int, metavar="N", help="stop each run after N model turns")
    b.add_argument("--timeout", type=float, dest="timeout_s", metavar="SECONDS", help="per run")
    b.add_argument("--max-tokens", type=positive_int, dest="batch_max_tokens", metavar="N",
                   help="the whole batch: no new run (nor call) once N tokens are used")
    b.add_argument("--max-cost", type=float, dest="batch_max_cost", metavar="USD",
                   help="the whole batch: no call that could take the batch past USD; no new run once spent")
    b.add_argument("--retry-failed", action="store_true", help="also re-run ids whose last result is not answered")
    b.add_argument("--runs-dir", metavar="DIR", help="the runs folder (default from config)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


class BatchProgress:
    """A rich progress bar on a terminal (done/failed/running, tokens, cost), plain lines otherwise."""

    def __init__(self, total: int, skipped: int, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self.total, self.skipped = total, skipped
        self.done = self.failed = self.running = self.tokens = 0
        self.cost = 0.0
        self.t0 = time.monotonic()
        self._last_print = 0.0
        self._lock = threading.Lock()
        self.progress = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), console=self.console) if self.live else None
        self.bar = self.progress.add_task("batch", total=total - skipped, info="") if self.progress else None

    def __enter__(self) -> BatchProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def info(self) -> str:
        return (f"{self.done:,} done · {self.failed:,} failed · {self.running:,} running · {self.tokens:,} tokens · "
                f"{format_cost(self.cost)}")

    def __call__(self, kind: str, payload: Any) -> None:
        with self._lock:
            if kind == "start":
                self.running += 1
            elif kind == "end":
                self.running -= 1
                self.done += 1
                self.failed += payload.get("status") != "answered"
            elif kind == "call":
                self.tokens += int(payload.get("input_tokens") or 0) + int(payload.get("output_tokens") or 0)
                self.cost += float(payload.get("cost_usd") or 0.0)
            elif kind == "usage":  # a remote run's usage, known when it ends
                self.tokens += int(payload.get("total_tokens") or 0)
                self.cost += float(payload.get("cost_usd") or 0.0)
            if self.progress is not None and self.bar is not None:
                self.progress.update(self.bar, completed=self.done, info=self.info())
            elif not self.quiet and kind == "end" and time.monotonic() - self._last_print >= PLAIN_EVERY_S:
                self._last_print = time.monotonic()
                self.console.print(f"batch: {self.done:,}/{self.total - self.skipped:,} · {self.info()}", markup=False)


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import BatchRunner, LocalExecutor, check_prices, load_tasks, make_ledger
    from .cli import _store
    from .config import Config

    config = Config.load(args.config, model=args.model, sub_model=args.sub_model, levels=args.levels,
                         runs_dir=args.runs_dir, max_iterations=args.max_iterations, timeout_s=args.timeout_s)
    if args.batch_max_cost is not None and args.batch_max_cost <= 0:
        raise UsageError(f"--max-cost must be more than 0, got {args.batch_max_cost:g}")
    if args.address and args.engine != "ray":
        raise UsageError("--address needs --engine ray")
    tasks = load_tasks(args.tasks)
    out = args.out or str(Path(args.tasks).with_suffix("")) + ".out.jsonl"
    check_prices(tasks, config, args.batch_max_cost)
    store = _store(config, None)
    if args.engine == "ray":
        from .ray_engine import RayExecutor

        executor: Any = RayExecutor(config, store, args.workers, address=args.address, actors=args.ray_actors)
        ledger: Any = executor.ledger(args.batch_max_tokens, args.batch_max_cost)
    else:
        executor = LocalExecutor(config, store, args.workers)
        ledger = make_ledger(args.batch_max_tokens, args.batch_max_cost, config)
    runner = BatchRunner(tasks, out, executor, ledger=ledger, retry_failed=args.retry_failed)
    prog = BatchProgress(len(tasks), runner.stats.skipped, args.quiet)
    runner.listener = prog
    if runner.stats.skipped and not args.quiet:
        sys.stderr.write(f"rlm batch: {runner.stats.skipped:,} of {len(tasks):,} task(s) already in {out}; "
                         f"running {len(runner.todo):,}\n")

    def on_sigint(signum: int, frame: Any) -> None:
        if runner.cancel.is_set():
            raise KeyboardInterrupt
        sys.stderr.write("rlm batch: cancelling (Ctrl-C again to quit now); finished runs are in the results\n")
        runner.cancel.set()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        with prog:
            stats = runner.run()
    finally:
        signal.signal(signal.SIGINT, old)
        executor.close()
    if not args.quiet:
        cost = "cost unknown" if stats.cost_unknown else format_cost(stats.cost_usd)
        by = ", ".join(f"{k} {v}" for k, v in sorted(stats.statuses.items())) or "nothing run"
        sys.stderr.write(f"rlm batch: {stats.done:,} run(s) finished ({by}) · {stats.skipped:,} skipped · "
                         f"{stats.tokens:,} tokens · {cost} · {time.monotonic() - prog.t0:.1f}s → {out}\n")
        if stats.not_started:
            sys.stderr.write(f"rlm batch: {stats.not_started:,} task(s) not started: {stats.stop_reason}; "
                             f"run the same command again to continue\n")
    if stats.stop_reason == "cancelled":
        return 130
    return 0 if stats.failed == 0 and stats.not_started == 0 else 1
