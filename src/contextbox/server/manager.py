"""Runs in the background: one thread per run, a cap on how many run at once, cancel, and
wake-ups for the readers that follow a run live.

Every event goes to the SQLite store first (the engine appends it as it happens); then the
run's thread wakes every follower of that run. Followers read the store by ``seq``, so a
follower never misses an event and a slow one holds nothing back: there is no per-client
buffer to overflow.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, _fill, check_limits
from ..context import Context
from ..errors import ConfigError, ContextboxError, UsageError
from ..executors import parse_levels
from ..store_sqlite import ACTIVE, SqliteRunStore

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


class RunManager:
    def __init__(self, config: Config, store: SqliteRunStore, max_concurrent: int):
        self.config = config
        self.address = (config.server.host, config.server.port)
        self.store = store
        self.max_concurrent = max_concurrent
        self.notifier = Notifier()
        self._lock = threading.Lock()
        self._active: dict[str, ActiveRun] = {}
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
        lim = copy.deepcopy(self.config.limits)
        if limits:
            if not isinstance(limits, dict):
                raise UsageError("limits must be an object, e.g. {\"max_iterations\": 10}")
            try:
                _fill(lim, limits, "limits")
                check_limits(lim)
            except ConfigError as e:
                raise UsageError(str(e)) from None
        return lim

    def start(self, question: str, context: Context, *, model: str | None = None, sub_model: str | None = None,
              levels: Any = None, limits: dict[str, Any] | None = None, source: str = "api",
              meta: dict[str, Any] | None = None) -> str:
        """Validate, build the engine and start the run's thread. Raises TooManyRuns or UsageError."""
        from ..engine import RLM, new_run_id

        if not isinstance(question, str) or not question.strip():
            raise UsageError("question must be a non-empty string")
        lv = parse_levels(levels) if levels not in (None, "", []) else None
        lim = self.build_limits(limits)
        self.check_spec(model, "model")
        self.check_spec(sub_model, "sub_model")
        run_id = new_run_id()
        active = ActiveRun(run_id)
        with self._lock:
            if self._closed:
                raise TooManyRuns("the server is shutting down")
            if len(self._active) >= self.max_concurrent:
                raise TooManyRuns(
                    f"too many runs in progress: {len(self._active)} of at most {self.max_concurrent} "
                    "(server.max_concurrent_runs); wait for one to finish or cancel one, then retry")
            self._active[run_id] = active
        try:
            rlm = RLM(model=model or None, sub_model=sub_model or None, levels=lv, limits=lim, config=self.config,
                      store=self.store)
            self.store.create_run(run_id, question=question, model=rlm.root.name, sub_model=rlm.sub.name,
                                  levels=list(rlm.levels), source=source, meta=meta)
        except BaseException:
            with self._lock:
                self._active.pop(run_id, None)
            raise
        t = threading.Thread(target=self._run, args=(active, rlm, question, context), daemon=True,
                             name=f"run-{run_id}")
        active.thread = t
        t.start()
        return run_id

    def _run(self, active: ActiveRun, rlm: Any, question: str, context: Context) -> None:
        rid = active.run_id
        try:
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

    def _end_if_open(self, rid: str, reason: str) -> None:
        try:
            row = self.store.get_run(rid)
            if row is not None and row["status"] in ACTIVE:
                self.store.finish_run(rid, "failed", reason)
        except (ContextboxError, OSError, RuntimeError) as e:
            log.error("run %s: could not record its end: %s", rid, e)

    # ------------------------------------------------------------------ control
    def active_ids(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def is_active(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._active

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            a = self._active.get(run_id)
        if a is None:
            return False
        a.cancel.set()
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        with self._lock:
            a = self._active.get(run_id)
        return True if a is None else a.done.wait(timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every run in flight and wait (up to ``timeout``) for them to end."""
        with self._lock:
            self._closed = True
            runs = list(self._active.values())
        for a in runs:
            a.cancel.set()
        deadline = time.monotonic() + timeout
        for a in runs:
            a.done.wait(max(0.0, deadline - time.monotonic()))
