"""``rlm batch``: many questions, each a full run, on local worker threads or on a Ray cluster.

Tasks are JSON lines (or CSV rows with the same columns)::

    {"id": "q1", "question": "...", "context": "inline text" | "context_path": "docs/",
     "model": "openai/gpt-4o-mini", "sub_model": ..., "levels": "l1,l4", "limits": {"max_iterations": 10}}

Results stream to ``OUT.jsonl`` as runs finish, one line each (``id``, ``answer``, ``status``,
``reason``, ``iterations``, ``usage``, ``cost_usd``, ``run_id``, ``elapsed_s``); every run is in the
run store. Running the same command again skips every id that has a line (a cancelled run's
line does not count; ``retry_failed`` also re-runs ids whose last line is not ``answered``), so a
batch killed at any point resumes without losing or repeating a finished run. A torn last line
(the process died while writing it) is cut off before appending.

A batch budget (``max_tokens``/``max_cost``) is one reservation ledger
(:class:`~contextbox.budget.Budget`) that every call of every run also reserves from
(:class:`~contextbox.budget.SharedBudget`); once it is spent no new run is started.

The executors: :class:`LocalExecutor` (``workers`` threads in this process, one
:class:`~contextbox.providers.limits.LocalLimiter` shared by all runs) and
:class:`contextbox.ray_engine.RayExecutor`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .budget import Budget, SharedBudget, ledger_spent
from .config import Config
from .context import Context
from .errors import ContextboxError, UsageError
from .types import Event

log = logging.getLogger("contextbox")

TASK_KEYS = ("id", "question", "context", "context_path", "model", "sub_model", "levels", "limits")
#: statuses whose line does not count as done on resume (the run was stopped from outside)
NOT_DONE = ("cancelled", "interrupted")


@dataclass
class BatchTask:
    id: str
    question: str
    context: str | None = None
    context_path: str | None = None
    model: str | None = None
    sub_model: str | None = None
    levels: str | list[str] | None = None
    limits: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- reading tasks
def _task(d: dict[str, Any], where: str) -> BatchTask:
    unknown = sorted(set(d) - set(TASK_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(TASK_KEYS)}")
    if d.get("id") is None:
        raise UsageError(f"{where}: every task needs an \"id\"")
    if not isinstance(d.get("question"), str) or not d["question"].strip():
        raise UsageError(f"{where}: task {d['id']!r} needs a non-empty \"question\"")
    if (d.get("context") is None) == (d.get("context_path") is None):
        raise UsageError(f"{where}: task {d['id']!r} needs exactly one of \"context\" and \"context_path\"")
    limits = d.get("limits")
    if isinstance(limits, str):
        try:
            limits = json.loads(limits)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: task {d['id']!r}: limits must be a JSON object: {e}") from None
    if limits is not None and not isinstance(limits, dict):
        raise UsageError(f"{where}: task {d['id']!r}: limits must be an object, e.g. {{\"max_iterations\": 10}}")
    for k in ("context", "context_path", "model", "sub_model"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise UsageError(f"{where}: task {d['id']!r}: {k} must be a string")
    return BatchTask(str(d["id"]), d["question"], d.get("context"), d.get("context_path"), d.get("model"),
                     d.get("sub_model"), d.get("levels"), limits)


def load_tasks(path: str | os.PathLike[str]) -> list[BatchTask]:
    """The tasks of a ``.jsonl`` (or ``.csv``) file; a bad line is a UsageError naming it. Ids must be unique.

    A relative ``context_path`` is relative to the tasks file's folder.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"tasks file not found: {p}")
    tasks: list[BatchTask] = []
    try:
        with p.open(encoding="utf-8", newline="") as f:
            if p.suffix.lower() == ".csv":
                reader = csv.DictReader(f)
                if reader.fieldnames is None:
                    raise UsageError(f"{p}: the CSV file has no header row (id,question,context,...)")
                for n, row in enumerate(reader, start=2):
                    tasks.append(_task({k: (None if v == "" else v) for k, v in row.items() if k is not None},
                                       f"{p}:{n}"))
            else:
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UsageError(f"{p}:{n}: not a JSON object: {e}") from None
                    if not isinstance(d, dict):
                        raise UsageError(f"{p}:{n}: each line must be a JSON object")
                    tasks.append(_task(d, f"{p}:{n}"))
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: not UTF-8 text: {e}") from None
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise UsageError(f"{p}: the id {t.id!r} appears twice; ids must be unique")
        seen.add(t.id)
        if t.context_path is not None and not Path(t.context_path).expanduser().is_absolute():
            t.context_path = str(p.parent / t.context_path)
    return tasks


# ---------------------------------------------------------------------- the results file
def read_results(path: str | os.PathLike[str], repair: bool = False) -> dict[str, dict[str, Any]]:
    """The last line of each id in a results file (missing file: empty). ``repair`` cuts off a
    torn last line (one the process died while writing)."""
    p = Path(path)
    if not p.exists():
        return {}
    data = p.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        log.warning("%s: the last line was cut off (a crash while writing); it is dropped", p)
        if repair:
            with p.open("r+b") as f:
                f.truncate(cut)
    out: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(data[:cut].decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{p}:{n}: not a results line (JSON); is --out the right file?") from None
        if isinstance(d, dict) and "id" in d:
            out[str(d["id"])] = d
    return out


def pending_tasks(tasks: list[BatchTask], done: dict[str, dict[str, Any]], retry_failed: bool = False) -> list[BatchTask]:
    """The tasks still to run given the results already written."""
    def finished(t: BatchTask) -> bool:
        line = done.get(t.id)
        if line is None or line.get("status") in NOT_DONE:
            return False
        return not (retry_failed and line.get("status") != "answered")

    return [t for t in tasks if not finished(t)]


class ResultWriter:
    """Appends one JSON line per finished run and flushes it at once (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise UsageError(f"the folder of --out {self.path} does not exist")
        self._f = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._f.write(text)
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()


# ---------------------------------------------------------------------- one run
def result_line(task_id: str, res: Any, elapsed_s: float) -> dict[str, Any]:
    """The results-file line of a finished run."""
    total = res.usage.to_dict()["total"]
    return {"id": task_id, "answer": res.answer, "status": res.status, "reason": res.reason,
            "iterations": res.iterations, "usage": total, "cost_usd": total.get("cost_usd"), "run_id": res.run_id,
            "elapsed_s": round(elapsed_s, 4)}


def failed_line(task_id: str, message: str, elapsed_s: float = 0.0) -> dict[str, Any]:
    """The line of a task that could not start (bad model, missing context…)."""
    return {"id": task_id, "answer": None, "status": "failed", "reason": message, "iterations": 0, "usage": None,
            "cost_usd": None, "run_id": None, "elapsed_s": round(elapsed_s, 4)}


def interrupted_line(task_id: str, message: str) -> dict[str, Any]:
    """The line of a task whose worker died under it: not done, a re-run starts it again."""
    return failed_line(task_id, message[:400]) | {"status": "interrupted"}


def build_limits(config: Config, limits: dict[str, Any] | None) -> Any:
    """The config's limits with a task's (or a request's) overrides; a bad key is a UsageError."""
    import copy

    from .config import _fill, check_limits
    from .errors import ConfigError

    lim = copy.deepcopy(config.limits)
    if limits:
        if not isinstance(limits, dict):
            raise UsageError("limits must be an object, e.g. {\"max_iterations\": 10}")
        try:
            _fill(lim, limits, "limits")
            check_limits(lim)
        except ConfigError as e:
            raise UsageError(str(e)) from None
    return lim


def task_context(task: BatchTask, inline: Context | None = None) -> Context:
    if task.context_path is not None:
        return Context.load([task.context_path])
    return inline if inline is not None else Context.from_value(task.context or "")


def task_events(task: BatchTask, config: Config, *, store: Any = None, ledger: Any = None,
                cancel: threading.Event | None = None, context: Context | None = None,
                run_id: str | None = None) -> Generator[Event, None, dict[str, Any]]:
    """Run one task, yielding its events as they happen; returns its results line (never raises
    for a task's own error)."""
    from .engine import RLM

    t0 = time.monotonic()
    try:
        lim = build_limits(config, task.limits)
        rlm = RLM(model=task.model or None, sub_model=task.sub_model or None,
                  levels=task.levels if task.levels not in (None, "", []) else None, limits=lim, config=config,
                  store=store)
        if ledger is not None:
            rlm.budget = SharedBudget.for_run_in(rlm.limits, ledger, config.prices, config.providers)
        ctx = task_context(task, context)
        stream = rlm.stream(task.question, ctx, cancel=cancel, run_id=run_id)
        yield from stream
        res = stream.result
        assert res is not None
        return result_line(task.id, res, time.monotonic() - t0)
    except ContextboxError as e:
        return failed_line(task.id, str(e), time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - one broken task must not end the batch
        log.exception("task %s crashed", task.id)
        return failed_line(task.id, f"internal error: {type(e).__name__}: {e}", time.monotonic() - t0)


def run_task(task: BatchTask, config: Config, *, store: Any = None, ledger: Any = None,
             cancel: threading.Event | None = None, context: Context | None = None,
             on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
    """Run one task to its end; returns its results line (never raises for a task's own error)."""
    events = task_events(task, config, store=store, ledger=ledger, cancel=cancel, context=context)
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(ev)


# ---------------------------------------------------------------------- progress and summary
@dataclass
class BatchStats:
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown: bool = False
    not_started: int = 0
    stop_reason: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, line: dict[str, Any]) -> None:
        self.done += 1
        st = str(line.get("status"))
        self.statuses[st] = self.statuses.get(st, 0) + 1
        if st != "answered":
            self.failed += 1
        u = line.get("usage") or {}
        self.tokens += int(u.get("total_tokens") or 0)
        if line.get("usage") is not None and line.get("cost_usd") is None and u.get("cost_unknown_calls"):
            self.cost_unknown = True
        self.cost_usd += float(line.get("cost_usd") or 0.0)


Listener = Callable[[str, Any], None]  # ("start", task) | ("end", line) | ("tokens", n, cost)


# ---------------------------------------------------------------------- executors
def model_keys(tasks: Iterable[BatchTask]) -> list[tuple[str | None, str | None, str | None]]:
    """The distinct (model, sub_model, levels) of the tasks, in order: what :func:`warm_up` loads."""
    keys: dict[tuple[str | None, str | None, str | None], None] = {}
    for t in tasks:
        lv = ",".join(t.levels) if isinstance(t.levels, list) else t.levels
        keys.setdefault((t.model or None, t.sub_model or None, lv or None), None)
    return list(keys)


def warm_up(config: Config, keys: Iterable[tuple[str | None, str | None, str | None]]) -> int:
    """Load, once per process, what the runs of these models need before the first one starts: each
    provider (its SDK is imported and its HTTP client built, shared by the runs) and the price table.
    No model is called. A key that does not build is left to fail on its task's own line. Returns
    how many keys built."""
    from .engine import RLM

    n = 0
    for model, sub_model, levels in keys:
        try:
            RLM(model=model, sub_model=sub_model, levels=levels, config=config, store=None)
            n += 1
        except ContextboxError as e:
            log.debug("warm-up of %s skipped: %s", model, e)
    return n


class TaskFeed:
    """The tasks an executor starts next: while it has room and the batch may start one."""

    def __init__(self, tasks: Iterable[BatchTask], may_start: Callable[[], bool]) -> None:
        self._it = iter(tasks)
        self._may_start = may_start
        self.exhausted = False

    def take(self, room: int) -> Iterator[BatchTask]:
        while room > 0 and not self.exhausted and self._may_start():
            t = next(self._it, None)
            if t is None:
                self.exhausted = True
                return
            room -= 1
            yield t


class LocalExecutor:
    """Runs tasks on ``workers`` threads of this process, limits shared through one LocalLimiter."""

    def __init__(self, config: Config, store: Any, workers: int) -> None:
        from .providers.limits import ensure_local_limiter

        self.config, self.store, self.workers = config, store, max(1, int(workers))
        ensure_local_limiter()  # also: one provider (SDK client) per model for all runs
        self._warm: set[Any] = set()

    def prepare(self, tasks: Iterable[BatchTask]) -> None:
        """Load the tasks' models in this process before the first run (see :func:`warm_up`)."""
        keys = [k for k in model_keys(tasks) if k not in self._warm]
        warm_up(self.config, keys)
        self._warm.update(keys)

    def run(self, tasks: Iterable[BatchTask], emit: Listener, ledger: Any, cancel: threading.Event,
            may_start: Callable[[], bool]) -> None:
        futures: dict[Future[dict[str, Any]], BatchTask] = {}
        feed = TaskFeed(tasks, may_start)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="batch") as pool:
            while True:
                for t in feed.take(self.workers - len(futures)):
                    emit("start", t)
                    futures[pool.submit(self._one, t, ledger, cancel, emit)] = t
                if not futures:
                    return
                finished, _ = wait(list(futures), timeout=0.5, return_when=FIRST_COMPLETED)
                for f in finished:
                    futures.pop(f)
                    emit("end", f.result())

    def _one(self, task: BatchTask, ledger: Any, cancel: threading.Event, emit: Listener) -> dict[str, Any]:
        def on_event(ev: Event) -> None:
            if ev.type in ("lm_response", "sub_call"):
                emit("call", ev.data)

        return run_task(task, self.config, store=self.store, ledger=ledger, cancel=cancel, on_event=on_event)

    def close(self) -> None:
        pass


def make_ledger(max_tokens: int | None, max_cost: float | None, config: Config) -> Budget | None:
    """The batch ledger (None without a batch budget)."""
    import math

    if max_cost is not None and math.isinf(max_cost):
        max_cost = None
    if max_tokens is None and max_cost is None:
        return None
    from . import pricing

    provs = list(config.providers)
    return Budget(max_tokens, max_cost, price=lambda spec, i, o: pricing.cost(spec, i, o, config.prices, provs),
                  reserve_output_tokens=config.limits.reserve_output_tokens)


def check_prices(tasks: list[BatchTask], config: Config, max_cost: float | None) -> None:
    """A batch cost limit needs the price of every model the tasks name (UsageError otherwise)."""
    if max_cost is None:
        return
    from . import pricing

    models = {t.model or config.model for t in tasks} | {t.sub_model or config.sub_model for t in tasks}
    for m in sorted(x for x in models if x):
        if pricing.cost(m, 1000, 1000, config.prices, config.providers) is None:
            raise UsageError(f"--max-cost needs the price of {m}, which is unknown; add it to the config file: "
                             f"[prices] \"{m}\" = {{ input = USD_PER_MTOK, output = USD_PER_MTOK }}")


class BatchRunner:
    """Runs a task list through an executor, writing results and honouring the batch budget."""

    def __init__(self, tasks: list[BatchTask], out: str | os.PathLike[str], executor: Any, *,
                 ledger: Any = None, retry_failed: bool = False,
                 listener: Listener | None = None) -> None:
        done = read_results(out, repair=True)
        self.todo = pending_tasks(tasks, done, retry_failed)
        self.stats = BatchStats(total=len(tasks), skipped=len(tasks) - len(self.todo))
        self.out = out
        self.executor = executor
        self.ledger = ledger
        self.listener = listener
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._batch_stop: str | None = None

    def may_start(self) -> bool:
        if self.cancel.is_set():
            return False
        if self._batch_stop is not None:
            return False
        if self.ledger is not None:
            why = ledger_spent(self.ledger)
            if why:
                self._batch_stop = f"batch budget: {why}"
                return False
        return True

    def _emit(self, kind: str, payload: Any) -> None:
        with self._lock:
            if kind == "start":
                self.stats.running += 1
            elif kind == "end":
                self.stats.running -= 1
                line = payload
                self.stats.add(line)
                self.writer.write(line)
                if line.get("status") == "budget_exceeded" and "(batch budget)" in str(line.get("reason") or ""):
                    self._batch_stop = "batch budget: " + str(line.get("reason"))
        if self.listener is not None:
            self.listener(kind, payload)

    def run(self) -> BatchStats:
        self.writer = ResultWriter(self.out)
        started = [0]

        def tasks() -> Iterator[BatchTask]:
            for t in self.todo:
                started[0] += 1
                yield t

        try:
            prepare = getattr(self.executor, "prepare", None)
            if prepare is not None and self.todo:
                prepare(self.todo)
            self.executor.run(tasks(), self._emit, self.ledger, self.cancel, self.may_start)
        finally:
            self.writer.close()
        self.stats.not_started = len(self.todo) - started[0]
        if self.cancel.is_set():
            self.stats.stop_reason = "cancelled"
        elif self._batch_stop:
            self.stats.stop_reason = self._batch_stop
        return self.stats
