"""Runs in the background: one thread per run, a cap on how many run at once, a queue for the
rest, cancel, and wake-ups for the readers that follow a run live.

**The queue.** A run submitted while ``max_concurrent_runs`` are in flight waits, in order, with
status ``queued`` (its place is :meth:`RunManager.position`), up to ``max_queued_runs``; only a
full queue refuses a run (:class:`TooManyRuns`, HTTP 429 with ``Retry-After``). The request of a
queued run (its question, models, limits and how to load its context) is kept in the store's
queue table, so a server restarted in between starts the queued runs again, in order.

Every event goes to the SQLite store first (the engine appends it as it happens); then the
run's thread wakes every follower of that run. Followers read the store by ``seq``, so a
follower never misses an event and a slow one holds nothing back: there is no per-client
buffer to overflow.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..context import Context
from ..errors import ContextboxError, UsageError
from ..executors import parse_levels
from ..stores.sqlite import ACTIVE, SqliteRunStore

log = logging.getLogger("contextbox")


class TooManyRuns(Exception):
    pass


class Notifier:
    """Thread-safe wake-ups for asyncio waiters, per run id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[asyncio.Event]:
        ev = asyncio.Event()
        key = (asyncio.get_running_loop(), ev)
        with self._lock:
            self._subs.setdefault(run_id, set()).add(key)
        try:
            yield ev
        finally:
            with self._lock:
                subs = self._subs.get(run_id)
                if subs is not None:
                    subs.discard(key)
                    if not subs:
                        del self._subs[run_id]

    def notify(self, run_id: str) -> None:
        with self._lock:
            subs = list(self._subs.get(run_id, ()))
        for loop, ev in subs:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop is closed
                pass


@dataclass
class ActiveRun:
    run_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    #: a queued run: what starts it (the engine, the question, the context)
    pending: tuple[Any, str, Any] | None = None
    #: with a Ray executor: the run as a batch task and its context's description
    remote: tuple[Any, dict[str, Any]] | None = None


def context_from(spec: dict[str, Any]) -> Context:
    """Rebuild a context from its description (a queued run's, kept in the store; a run sent to Ray)."""
    kind = spec.get("kind")
    if kind == "value":
        text = spec.get("text") or ""
        ctx = Context.from_documents([(str(spec["name"]), text)]) if spec.get("name") else Context.from_value(text)
    elif kind == "docs":
        ctx = Context.from_documents([(str(n), str(t)) for n, t in spec.get("docs") or []])
    else:
        return _loaded(spec)
    if spec.get("context_kind"):  # a context described by spec_of keeps its kind (e.g. json)
        ctx.kind = str(spec["context_kind"])
    return ctx


def _loaded(spec: dict[str, Any]) -> Context:
    kind = spec.get("kind")
    if kind == "sample":
        from . import samples

        return Context.from_documents([(f"{spec['name']}.txt", samples.sample_text(spec["name"]))])
    if kind == "path":
        return Context.load(str(spec["path"]))
    raise UsageError(f"a queued run's context cannot be rebuilt: unknown kind {kind!r}")


def spec_of(context: Context) -> dict[str, Any]:
    """A description of a context :func:`context_from` rebuilds (its documents and kind)."""
    docs = [[d.path, context.text[d.start:d.end]] for d in context.documents]
    if len(docs) == 1 and docs[0][1] == context.text:
        return {"kind": "value", "text": context.text, "context_kind": context.kind, "name": docs[0][0]}
    return {"kind": "docs", "docs": docs, "context_kind": context.kind}


class RunManager:
    """The server's runs: each on a thread of this process, or, with ``executor`` (a
    :class:`contextbox.ray_engine.RayExecutor`, ``rlm serve --engine ray``), on the Ray actors of
    ``rlm batch``, its events streamed back into the store as they happen."""

    def __init__(self, config: Config, store: SqliteRunStore, max_concurrent: int, max_queued: int | None = None,
                 executor: Any = None):
        self.config = config
        self.executor = executor
        self.address = (config.server.host, config.server.port)
        self.store = store
        self.max_concurrent = max_concurrent
        self.max_queued = config.server.max_queued_runs if max_queued is None else max_queued
        self.notifier = Notifier()
        self._lock = threading.Lock()
        self._active: dict[str, ActiveRun] = {}
        self._queue: collections.OrderedDict[str, ActiveRun] = collections.OrderedDict()
        self._closed = False

    # ------------------------------------------------------------------ starting
    def check_spec(self, spec: str | None, what: str) -> None:
        """Refuse a model whose provider is this server itself (UsageError, one line)."""
        from .security import self_loop

        url = self_loop(spec, self.config.providers, *self.address)
        if url:
            raise UsageError(f"{what} {spec!r} would call this server itself: its base URL {url} is the address "
                             f"rlm serve listens on; serve on another port (--port) or use another provider")

    def build_limits(self, limits: dict[str, Any] | None) -> Any:
        from ..batch import build_limits

        return build_limits(self.config, limits)

    def start(self, question: str, context: Context, *, model: str | None = None, sub_model: str | None = None,
              levels: Any = None, limits: dict[str, Any] | None = None, source: str = "api",
              meta: dict[str, Any] | None = None, context_spec: dict[str, Any] | None = None,
              run_id: str | None = None) -> str:
        """Validate, build the engine and start the run's thread, or queue the run when
        ``max_concurrent`` are in flight. Raises TooManyRuns (the queue is full) or UsageError.

        ``context_spec`` says how to load the context again (see :func:`context_from`): a queued
        run with one survives a restart."""
        from ..engine import RLM, new_run_id

        if not isinstance(question, str) or not question.strip():
            raise UsageError("question must be a non-empty string")
        lv = parse_levels(levels) if levels not in (None, "", []) else None
        lim = self.build_limits(limits)
        self.check_spec(model, "model")
        self.check_spec(sub_model, "sub_model")
        resumed = run_id is not None
        run_id = run_id or new_run_id()
        active = ActiveRun(run_id)
        with self._lock:
            if self._closed:
                raise TooManyRuns("the server is shutting down")
            queued = bool(self._queue) or len(self._active) >= self.max_concurrent
            if queued and len(self._queue) >= self.max_queued and not resumed:
                raise TooManyRuns(
                    f"too many runs: {len(self._active)} in progress (server.max_concurrent_runs = "
                    f"{self.max_concurrent}) and {len(self._queue)} queued (server.max_queued_runs = "
                    f"{self.max_queued}); retry later")
            slot = self._queue if queued else self._active
            slot[run_id] = active
        try:
            rlm = RLM(model=model or None, sub_model=sub_model or None, levels=lv, limits=lim, config=self.config,
                      store=self.store)
            if not resumed:
                self.store.create_run(run_id, question=question, model=rlm.root.name, sub_model=rlm.sub.name,
                                      levels=list(rlm.levels), source=source, meta=meta)
            if queued and context_spec is not None and not resumed:
                self.store.enqueue(run_id, {"question": question, "model": model, "sub_model": sub_model,
                                            "levels": levels, "limits": limits, "source": source,
                                            "context": context_spec})
        except BaseException:
            with self._lock:
                self._active.pop(run_id, None)
                self._queue.pop(run_id, None)
            self._start_next()
            raise
        if self.executor is not None:
            from ..batch import BatchTask

            active.remote = (BatchTask(run_id, question, model=model or None, sub_model=sub_model or None,
                                       levels=levels, limits=limits),
                             context_spec if context_spec is not None else spec_of(context))
        if queued:
            active.pending = (rlm, question, context)
            self._start_next()  # a run may have ended meanwhile
        else:
            self._launch(active, rlm, question, context)
        return run_id

    def _launch(self, active: ActiveRun, rlm: Any, question: str, context: Context) -> None:
        try:
            self.store.dequeue(active.run_id)  # started: a restart must not start it again
        except (OSError, RuntimeError) as e:
            log.error("run %s: could not take it off the stored queue: %s", active.run_id, e)
        t = threading.Thread(target=self._run, args=(active, rlm, question, context), daemon=True,
                             name=f"run-{active.run_id}")
        active.thread = t
        t.start()

    def _start_next(self) -> None:
        """Start queued runs while there is room (in order)."""
        while True:
            with self._lock:
                if self._closed or not self._queue or len(self._active) >= self.max_concurrent:
                    return
                rid, active = next(iter(self._queue.items()))
                if active.pending is None:  # still being set up by start()
                    return
                del self._queue[rid]
                self._active[rid] = active
            rlm, question, context = active.pending
            active.pending = None
            self._launch(active, rlm, question, context)
            self.notifier.notify(rid)

    def position(self, run_id: str) -> int | None:
        """A queued run's place in the queue (1 = next to start); None when it is not queued."""
        with self._lock:
            for i, rid in enumerate(self._queue, start=1):
                if rid == run_id:
                    return i
        return None

    def queued_ids(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    def resume_queue(self) -> list[str]:
        """Queue again the runs a previous server left queued in the store (call at startup)."""
        resumed = []
        for rid, req in self.store.queued_requests():
            try:
                ctx = context_from(req.get("context") or {})
                self.start(req.get("question") or "", ctx, model=req.get("model"), sub_model=req.get("sub_model"),
                           levels=req.get("levels"), limits=req.get("limits"), source=req.get("source") or "api",
                           context_spec=req.get("context"), run_id=rid)
                resumed.append(rid)
            except (ContextboxError, OSError) as e:
                log.error("queued run %s cannot start again: %s", rid, e)
                self.store.dequeue(rid)
                self._end_if_open(rid, f"the queued run could not start again after a restart: {e}")
        if resumed:
            log.warning("started again %d queued run(s) left by the previous server", len(resumed))
        return resumed

    def _run(self, active: ActiveRun, rlm: Any, question: str, context: Context) -> None:
        rid = active.run_id
        try:
            if active.remote is not None:
                self._run_remote(active)
                return
            stream = rlm.stream(question, context, run_id=rid, cancel=active.cancel)
            for _ev in stream:
                self.notifier.notify(rid)
        except Exception as e:  # noqa: BLE001 - the engine ends runs itself; this is a last resort
            log.exception("run %s crashed", rid)
            self._end_if_open(rid, f"internal error: {type(e).__name__}: {e}")
        finally:
            self._end_if_open(rid, "the run ended without a run_end event")
            with self._lock:
                self._active.pop(rid, None)
            active.done.set()
            self.notifier.notify(rid)
            self._start_next()

    def _run_remote(self, active: ActiveRun) -> None:
        """The run on the Ray executor: each event it sends back goes into the store, then wakes
        the run's followers (as a local run's engine does)."""
        rid = active.run_id
        assert active.remote is not None
        task, spec = active.remote

        def on_event(ev: Any) -> None:
            try:
                self.store.append(ev)
            except OSError as e:
                log.error("run %s: store write failed: %s", rid, e)
            self.notifier.notify(rid)

        line = self.executor.run_one(task, spec, run_id=rid, on_event=on_event, cancel=active.cancel)
        if line.get("status") == "interrupted" or line.get("run_id") is None:
            self._end_if_open(rid, str(line.get("reason") or "the Ray run ended without a result"))

    def _end_if_open(self, rid: str, reason: str, status: str = "failed") -> None:
        try:
            row = self.store.get_run(rid)
            if row is not None and row["status"] in ACTIVE:
                self.store.finish_run(rid, status, reason)
        except (ContextboxError, OSError, RuntimeError) as e:
            log.error("run %s: could not record its end: %s", rid, e)

    # ------------------------------------------------------------------ control
    def active_ids(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def is_active(self, run_id: str) -> bool:
        """In flight or queued."""
        with self._lock:
            return run_id in self._active or run_id in self._queue

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            a = self._active.get(run_id)
            q = self._queue.pop(run_id, None) if a is None else None
        if q is not None:  # never started: it ends here
            self.store.dequeue(run_id)
            self._end_if_open(run_id, "cancelled while queued", status="cancelled")
            q.done.set()
            self.notifier.notify(run_id)
            return True
        if a is None:
            return False
        a.cancel.set()
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        with self._lock:
            a = self._active.get(run_id) or self._queue.get(run_id)
        return True if a is None else a.done.wait(timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every run in flight and wait (up to ``timeout``) for them to end. Queued runs
        stay queued in the store: the next server starts them."""
        with self._lock:
            self._closed = True
            runs = list(self._active.values())
        for a in runs:
            a.cancel.set()
        deadline = time.monotonic() + timeout
        for a in runs:
            a.done.wait(max(0.0, deadline - time.monotonic()))
