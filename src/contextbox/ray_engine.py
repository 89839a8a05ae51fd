"""Ray: the batch executor, the cluster-wide permit broker, and sub-calls fanned out to Ray workers.

Ray is optional (``pip install 'contextbox[ray]'``); this module imports it only when used.

* **The broker** — one named, detached actor per cluster (``contextbox-limits`` in the
  ``contextbox`` namespace) hosting a :class:`~contextbox.providers.limits.LocalLimiter`: every
  process of the batch takes its endpoint permits there (:class:`RayLimiter`), so
  ``max_concurrency``, ``rpm`` and ``tpm`` hold across all workers. Each process renews a
  lease every few seconds from a daemon thread; the permits of a process that stops renewing
  (it died) are given back after ``lease_s``. The broker also hosts batch ledgers: the
  ``--max-cost``/``--max-tokens`` :class:`~contextbox.budget.Budget` every call of every run
  reserves from (:class:`RayLedger`), reservations of dead processes released the same way.
* **The executor** — :class:`RayExecutor` starts ``actors`` threaded Ray actors (default: one
  per CPU of the cluster) and sends each run to the least busy one as an actor task; runs are
  I/O-bound, so one actor runs many at once (``--workers`` in total). A run's events come back
  with its result and go into the driver's run store. An inline context is put in the object
  store once per batch (once per distinct text) and each actor process fetches it once; a
  ``context_path`` is read where the worker runs (a path on a shared filesystem).
* **Fan-out** — with ``[delegation] engine = "ray"`` a run's sub-model calls (``llm_query``,
  ``llm_map``, batches, the typed map) are sent to a pool of Ray actors (``contextbox-sub-N``)
  by :class:`RaySubProvider`; the calling run keeps order, reservations and usage as before.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .errors import BudgetExceeded, ProviderUnavailable, UsageError
from .providers.limits import EndpointLimits, LocalLimiter, install_limiter
from .types import Completion, Event

log = logging.getLogger("contextbox")

NAMESPACE = "contextbox"
BROKER_NAME = "contextbox-limits"
LEASE_S = 15.0
#: threads of the broker actor: permit requests waiting at once
BROKER_THREADS = 256
#: how long a process keeps a permit it no longer uses (``max_concurrency``-only endpoints)
PERMIT_LINGER_S = 0.05
SUB_ACTORS = 2
SUB_ACTOR_THREADS = 64


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("the Ray engine needs Ray: pip install 'contextbox[ray]'") from None
    return ray


def connect(address: str | None = None) -> Any:
    """Ray, connected: to ``address``, else to the cluster this process already joined, else a
    new local one (``ray.init()``) whose workers import this contextbox."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    src = str(Path(__file__).resolve().parent.parent)
    try:
        if address:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        else:
            path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
            ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"cannot connect to Ray{f' at {address}' if address else ''}: {e}") from None
    return ray


# ---------------------------------------------------------------------- the broker
class PermitBroker:
    """The cluster's limiter and batch ledgers (a Ray actor; see the module docs)."""

    def __init__(self, lease_s: float = LEASE_S) -> None:
        from .budget import Budget

        self._Budget = Budget
        self.lease_s = lease_s
        self.limiter = LocalLimiter(lease_s=lease_s, holder="broker")
        self.ledgers: dict[str, Any] = {}
        self.holds: dict[int, tuple[str, str, Any]] = {}  # id -> (ledger, holder, reservation)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # permits
    def acquire(self, holder: str, key: str, limits: tuple[Any, Any, Any], tokens: int,
                timeout: float | None) -> tuple[int | None, str | None]:
        deadline = time.monotonic() + timeout if timeout is not None else None
        try:
            return self.limiter.acquire(key, EndpointLimits(*limits), tokens, deadline, holder=holder), None
        except ProviderUnavailable as e:
            return None, str(e)

    def release(self, permit: int, used_tokens: int | None) -> None:
        self.limiter.release(permit, used_tokens)

    def renew(self, holder: str) -> None:
        self.limiter.renew(holder)
        self._reap()

    def stats(self) -> dict[str, Any]:
        self._reap()
        return self.limiter.stats()

    def _reap(self) -> None:
        lim = self.limiter
        with lim.cond:
            if lim.book.reap(time.monotonic(), self.lease_s):
                lim.cond.notify_all()
            alive = set(lim.book.seen)
        with self._lock:
            dead = [(i, h) for i, h in self.holds.items() if h[1] not in alive]
            for i, _ in dead:
                del self.holds[i]
        for _, (lid, _, r) in dead:
            self.ledgers[lid].release(r)

    # batch ledgers
    def open_ledger(self, lid: str, max_tokens: int | None, max_cost: float | None) -> None:
        with self._lock:
            if lid not in self.ledgers:
                self.ledgers[lid] = self._Budget(max_tokens, max_cost)

    def hold(self, lid: str, holder: str, spec: str, tokens: int, cost: float | None,
             what: str) -> tuple[int | None, str | None]:
        self.limiter.renew(holder)
        try:
            r = self.ledgers[lid].hold_amount(spec, tokens, cost, what=what)
        except BudgetExceeded as e:
            return None, str(e)
        with self._lock:
            i = next(self._ids)
            self.holds[i] = (lid, holder, r)
        return i, None

    def unhold(self, i: int, tokens: int | None = None, cost: float | None = None, settle: bool = False) -> None:
        with self._lock:
            h = self.holds.pop(i, None)
        if h is None:
            return
        led = self.ledgers[h[0]]
        if settle:
            led.settle(h[2], int(tokens or 0), cost)
        else:
            led.release(h[2])

    def ledger_check(self, lid: str) -> str | None:
        try:
            self.ledgers[lid].check()
        except BudgetExceeded as e:
            return str(e)
        return None

    def ledger_snapshot(self, lid: str) -> dict[str, Any]:
        self._reap()
        return self.ledgers[lid].snapshot()


def broker(lease_s: float = LEASE_S) -> Any:
    """The cluster's broker actor (created on first use)."""
    ray = require_ray()
    cls = ray.remote(PermitBroker)
    return cls.options(name=BROKER_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                       num_cpus=0, max_concurrency=BROKER_THREADS).remote(lease_s)


class RayLimiter:
    """This process's limiter: permits from the broker; a daemon thread renews the lease.

    A permit of an endpoint limited by ``max_concurrency`` alone is kept in this process for
    ``linger_s`` after its call ends, and the next call here to that endpoint takes it without
    a round trip to the broker (two fewer actor calls a call); an unused one goes back to the
    broker after ``linger_s``. The process never holds more permits than the broker granted
    it, so the cluster-wide limit holds. A permit of an endpoint with ``rpm``/``tpm`` always
    goes back (the broker counts every call)."""

    def __init__(self, broker_handle: Any, lease_s: float = LEASE_S, holder: str | None = None,
                 linger_s: float = PERMIT_LINGER_S) -> None:
        self.ray = require_ray()
        self.broker = broker_handle
        self.holder = holder or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_s = lease_s
        self.linger_s = linger_s
        self._stop = threading.Event()
        #: permits taken from the broker, those reused from this process's idle ones, and the
        #: seconds spent getting them (the broker's round trips and waits)
        self.acquired = 0
        self.reused = 0
        self.acquire_s = 0.0
        self._lock = threading.Lock()
        self._idle: dict[str, collections.deque[tuple[int, float]]] = {}  # key -> (permit, idle since)
        self._keys: dict[int, str] = {}  # a kept-able permit in use -> its key
        self.broker.renew.remote(self.holder)
        threading.Thread(target=self._beat, name="contextbox-lease", daemon=True).start()
        if linger_s > 0:
            threading.Thread(target=self._sweep_loop, name="contextbox-permits", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.broker.renew.remote(self.holder)
            except Exception as e:  # noqa: BLE001 - Ray shutting down
                log.debug("lease renewal failed: %s", e)
                return

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.linger_s / 2):
            self.sweep()

    def sweep(self, now: float | None = None) -> int:
        """Give back the idle permits kept longer than ``linger_s``; how many went back."""
        now = time.monotonic() if now is None else now
        out: list[int] = []
        with self._lock:
            for q in self._idle.values():
                while q and now - q[0][1] >= self.linger_s:
                    out.append(q.popleft()[0])
        for pid in out:
            try:
                self.broker.release.remote(pid, None)
            except Exception as e:  # noqa: BLE001 - Ray shutting down
                log.debug("permit release failed: %s", e)
        return len(out)

    def acquire(self, key: str, limits: EndpointLimits, tokens: int = 0, deadline: float | None = None) -> int:
        keep = self.linger_s > 0 and not limits.rpm and not limits.tpm
        if keep:
            with self._lock:
                q = self._idle.get(key)
                if q:
                    pid = q.pop()[0]  # the most recently used: the others age out first
                    self._keys[pid] = key
                    self.reused += 1
                    return pid
        t0 = time.monotonic()
        timeout = None if deadline is None else max(0.0, deadline - t0)
        pid, err = self.ray.get(self.broker.acquire.remote(
            self.holder, key, (limits.max_concurrency, limits.rpm, limits.tpm), int(tokens), timeout))
        with self._lock:
            self.acquired += 1
            self.acquire_s += time.monotonic() - t0
            if pid is not None and keep:
                self._keys[pid] = key
        if pid is None:
            raise ProviderUnavailable(err or f"{key}: no permit")
        return pid

    def release(self, permit: Any, used_tokens: int | None = None) -> None:
        with self._lock:
            key = self._keys.pop(permit, None)
            if key is not None and not self._stop.is_set():
                self._idle.setdefault(key, collections.deque()).append((permit, time.monotonic()))
                return
        self.broker.release.remote(permit, used_tokens)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            idle = sum(len(q) for q in self._idle.values())
        return {"acquired": self.acquired, "reused": self.reused, "acquire_s": self.acquire_s, "idle": idle}

    def stop(self) -> None:
        self._stop.set()
        self.sweep(now=float("inf"))


class _Held:
    def __init__(self, i: int) -> None:
        self.i = i
        self.done = False


class RayLedger:
    """A batch ledger on the broker, as a :class:`~contextbox.budget.SharedBudget` parent."""

    def __init__(self, broker_handle: Any, lid: str, max_tokens: int | None, max_cost: float | None,
                 holder: str) -> None:
        self.ray = require_ray()
        self.broker, self.lid, self.holder = broker_handle, lid, holder
        self.max_total_tokens, self.max_cost_usd = max_tokens, max_cost

    def hold_amount(self, spec: str, tokens: int, cost_usd: float | None, *, what: str = "the next call",
                    check: Any = None) -> _Held:
        i, err = self.ray.get(self.broker.hold.remote(self.lid, self.holder, spec, int(tokens), cost_usd, what))
        if i is None:
            raise BudgetExceeded(err or "the batch budget is spent")
        return _Held(i)

    def release(self, r: _Held) -> None:
        if not r.done:
            r.done = True
            self.broker.unhold.remote(r.i)

    def settle(self, r: _Held, tokens: int, cost_usd: float | None) -> None:
        if not r.done:
            r.done = True
            self.broker.unhold.remote(r.i, tokens, cost_usd, True)

    def check(self) -> None:
        err = self.ray.get(self.broker.ledger_check.remote(self.lid))
        if err:
            raise BudgetExceeded(err)

    def snapshot(self) -> dict[str, Any]:
        return self.ray.get(self.broker.ledger_snapshot.remote(self.lid))


_process_limiter: RayLimiter | None = None
_process_lock = threading.Lock()


def join_cluster_limits(lease_s: float = LEASE_S) -> RayLimiter:
    """Make the broker this process's limiter (once per process)."""
    global _process_limiter
    with _process_lock:
        if _process_limiter is None:
            _process_limiter = RayLimiter(broker(lease_s), lease_s)
            install_limiter(_process_limiter)
        return _process_limiter


# ---------------------------------------------------------------------- batch workers
class BatchWorker:
    """A Ray actor running many runs at once on threads (see :class:`RayExecutor`)."""

    def __init__(self, config: Any, ledger: tuple[str, int | None, float | None] | None, lease_s: float) -> None:
        logging.getLogger("contextbox").setLevel(logging.WARNING)
        lim = join_cluster_limits(lease_s)
        self.config = config
        self.ledger = RayLedger(lim.broker, ledger[0], ledger[1], ledger[2], lim.holder) if ledger else None
        self.cancel = threading.Event()
        self.contexts: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.fetches = 0
        self.cancels: dict[str, threading.Event] = {}  # the server's runs in flight here
        self.streamed = 0
        self._lock = threading.Lock()

    def _context(self, box: list[Any] | None) -> Any:
        if not box:
            return None
        from .context import Context

        ref = box[0]
        key = ref.hex()
        with self._lock:  # held while fetching: runs waiting for the same context get the one copy
            ctx = self.contexts.get(key)
            if ctx is not None:
                self.contexts.move_to_end(key)
                return ctx
            ctx = Context.from_value(require_ray().get(ref))
            self.fetches += 1
            self.contexts[key] = ctx
            while len(self.contexts) > 8:
                self.contexts.popitem(last=False)
        return ctx

    def run(self, task: dict[str, Any], box: list[Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from .batch import BatchTask, run_task

        events: list[Event] = []
        line = run_task(BatchTask(**task), self.config, ledger=self.ledger, cancel=self.cancel,
                        context=self._context(box), on_event=events.append)
        return line, [e.to_dict() for e in events]

    def stream(self, task: dict[str, Any], box: list[Any], run_id: str) -> Any:
        """One run whose events go back as they happen (a Ray streaming generator): ``("event",
        EVENT)`` each, then ``("end", LINE)``. ``box`` holds a reference to the context's
        description (:func:`contextbox.server.manager.context_from`); ``cancel_run(run_id)`` stops it."""
        from .batch import BatchTask, task_events
        from .server.manager import context_from

        spec = require_ray().get(box[0])
        cancel = threading.Event()
        with self._lock:
            self.cancels[run_id] = cancel
            self.streamed += 1
        try:
            events = task_events(BatchTask(**task), self.config, ledger=self.ledger, cancel=cancel,
                                 context=context_from(spec), run_id=run_id)
            while True:
                try:
                    ev = next(events)
                except StopIteration as stop:
                    yield ("end", stop.value)
                    return
                yield ("event", ev.to_dict())
        finally:
            with self._lock:
                self.cancels.pop(run_id, None)

    def cancel_run(self, run_id: str) -> bool:
        with self._lock:
            ev = self.cancels.get(run_id)
        if ev is not None:
            ev.set()
        return ev is not None

    def prepare(self, keys: list[tuple[str | None, str | None, str | None]]) -> int:
        from .batch import warm_up

        return warm_up(self.config, keys)

    def cancel_all(self) -> None:
        self.cancel.set()

    def info(self) -> dict[str, Any]:
        lim = _process_limiter
        return {"pid": os.getpid(), "context_fetches": self.fetches, "streamed": self.streamed, **(lim.stats() if lim else {})}


class RayExecutor:
    """Runs batch tasks on Ray actors (see the module docs)."""

    def __init__(self, config: Any, store: Any, workers: int, *, address: str | None = None,
                 actors: int | None = None, lease_s: float = LEASE_S) -> None:
        self.ray = connect(address)
        self.config, self.store, self.workers, self.lease_s = config, store, max(1, int(workers)), lease_s
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.n_actors = max(1, min(actors or cpus, self.workers))
        self.broker = broker(lease_s)
        self.actors: list[Any] = []
        self._refs: dict[str, Any] = {}
        self._ledger: tuple[str, int | None, float | None] | None = None
        self._warm: set[Any] = set()
        self._lock = threading.Lock()
        self._load: list[int] = []  # runs of run_one in flight, per actor

    def ledger(self, max_tokens: int | None, max_cost: float | None) -> RayLedger | None:
        """The batch ledger on the broker (None without a batch budget)."""
        import math

        if max_cost is not None and math.isinf(max_cost):
            max_cost = None
        if max_tokens is None and max_cost is None:
            return None
        lid = f"batch-{uuid.uuid4().hex[:8]}"
        self.ray.get(self.broker.open_ledger.remote(lid, max_tokens, max_cost))
        self._ledger = (lid, max_tokens, max_cost)
        return RayLedger(self.broker, lid, max_tokens, max_cost, holder=f"driver-{os.getpid()}")

    def _start(self) -> None:
        per = -(-self.workers // self.n_actors)
        cls = self.ray.remote(BatchWorker)
        self.actors = [cls.options(max_concurrency=per + 2).remote(self.config, self._ledger, self.lease_s)
                       for _ in range(self.n_actors)]
        self._load = [0] * len(self.actors)

    def _send(self, task: Any) -> tuple[dict[str, Any], list[Any] | None]:
        """A task as it goes to an actor: an inline context goes by reference, put in the object
        store once per distinct text (nested in a list: the actor fetches it once per process,
        Ray does not copy it per task)."""
        d = task.to_dict()
        if task.context is None:
            return d, None
        h = hashlib.sha256(task.context.encode("utf-8", "surrogatepass")).hexdigest()
        ref = self._refs.get(h)
        if ref is None:
            ref = self._refs[h] = self.ray.put(task.context)
        d["context"] = d["context_path"] = None
        return d, [ref]

    def prepare(self, tasks: Any) -> None:
        """Start the actors and load the tasks' models in each of them before the first run
        (:func:`~contextbox.batch.warm_up`); returns when every actor is ready."""
        from .batch import model_keys

        if not self.actors:
            self._start()
        keys = [k for k in model_keys(tasks) if k not in self._warm]
        if keys:
            self.ray.get([a.prepare.remote(keys) for a in self.actors])
            self._warm.update(keys)

    def run(self, tasks: Any, emit: Any, ledger: Any, cancel: threading.Event, may_start: Any) -> None:
        from .batch import TaskFeed, interrupted_line

        if not self.actors:
            self._start()
        load = [0] * len(self.actors)
        inflight: dict[Any, tuple[Any, int]] = {}
        feed = TaskFeed(tasks, may_start)
        cancelled = False
        while True:
            for t in feed.take(self.workers - len(inflight)):
                a = min(range(len(self.actors)), key=load.__getitem__)
                emit("start", t)
                inflight[self.actors[a].run.remote(*self._send(t))] = (t, a)
                load[a] += 1
            if not inflight:
                return
            if cancel.is_set() and not cancelled:
                cancelled = True
                for actor in self.actors:
                    actor.cancel_all.remote()
            ready, _ = self.ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                t, a = inflight.pop(ref)
                load[a] -= 1
                try:
                    line, events = self.ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a dead worker: the task is not done
                    line, events = interrupted_line(t.id, f"the Ray worker failed: {type(e).__name__}: {e}"), []
                self._store(events)
                if line.get("usage"):
                    emit("usage", line["usage"])
                emit("end", line)

    def run_one(self, task: Any, context_spec: dict[str, Any], *, run_id: str, on_event: Any,
                cancel: threading.Event) -> dict[str, Any]:
        """One run on the least busy actor (``rlm serve --engine ray``): its events are passed to
        ``on_event`` as they happen; setting ``cancel`` stops it there. ``context_spec`` describes
        the context (:func:`contextbox.server.manager.context_from`; a path is read where the actor
        runs). Returns its results line; a dead actor gives an ``interrupted`` one."""
        from .batch import interrupted_line

        with self._lock:
            if not self.actors:
                self._start()
            a = min(range(len(self.actors)), key=self._load.__getitem__)
            self._load[a] += 1
        actor = self.actors[a]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.1):
                if cancel.is_set():
                    actor.cancel_run.remote(run_id)
                    return

        threading.Thread(target=watch, name=f"cancel-{run_id}", daemon=True).start()
        line: dict[str, Any] | None = None
        try:
            gen = actor.stream.options(num_returns="streaming").remote(task.to_dict(), [self.ray.put(context_spec)],
                                                                       run_id)
            for ref in gen:
                kind, payload = self.ray.get(ref)
                if kind == "event":
                    on_event(Event.from_dict(payload))
                else:
                    line = payload
        except Exception as e:  # noqa: BLE001 - a dead worker: the run did not end
            line = interrupted_line(task.id, f"the Ray worker failed: {type(e).__name__}: {e}")
        finally:
            done.set()
            with self._lock:
                self._load[a] -= 1
        return line or interrupted_line(task.id, "the Ray worker ended the run without a result")

    def _store(self, events: list[dict[str, Any]]) -> None:
        if self.store is None:
            return
        for d in events:
            try:
                self.store.append(Event.from_dict(d))
            except OSError as e:
                log.error("run store write failed: %s", e)

    def stats(self) -> dict[str, Any]:
        return self.ray.get(self.broker.stats.remote())

    def actor_info(self) -> list[dict[str, Any]]:
        return self.ray.get([a.info.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception as e:  # noqa: BLE001
                log.debug("could not stop a batch actor: %s", e)
        self.actors = []


# ---------------------------------------------------------------------- fan-out of sub-calls
class SubCallWorker:
    """A Ray actor making sub-model calls on threads, providers cached per spec."""

    def __init__(self, lease_s: float = LEASE_S) -> None:
        join_cluster_limits(lease_s)
        self.providers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def complete(self, spec: str, providers: list[Any], messages: list[dict[str, Any]],
                 opts: dict[str, Any]) -> Completion:
        from .providers.base import resolve

        key = spec + repr(providers)
        with self._lock:
            p = self.providers.get(key)
            self.calls += 1
        if p is None:
            p = resolve(spec, providers)
            with self._lock:
                self.providers[key] = p
        return p.complete(messages, **opts)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "calls": self.calls}


def sub_actors(n: int = SUB_ACTORS) -> list[Any]:
    ray = require_ray()
    cls = ray.remote(SubCallWorker)
    return [cls.options(name=f"contextbox-sub-{i}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                        max_concurrency=SUB_ACTOR_THREADS).remote() for i in range(n)]


class RaySubProvider:
    """A sub-model whose calls run on the fan-out actors (``[delegation] engine = "ray"``)."""

    def __init__(self, local: Any, spec: str, config: Any) -> None:
        self.ray = connect(None)
        self.local = local
        self.spec = spec
        self.name = getattr(local, "name", spec)
        self.context_window = getattr(local, "context_window", None)
        self.supports_schema = getattr(local, "supports_schema", False)
        self.providers = list(config.providers)
        self.actors = sub_actors()
        self._rr = itertools.count()

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        sendable = {k: v for k, v in opts.items() if not callable(v)}
        actor = self.actors[next(self._rr) % len(self.actors)]
        try:
            return self.ray.get(actor.complete.remote(self.spec, self.providers, messages, sendable))
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise


def ray_sub_provider(local: Any, spec: str | None, config: Any) -> Any:
    """``local`` as a :class:`RaySubProvider` when it is an API model (scripted and local ones stay here)."""
    if not spec or spec.startswith(("scripted:", "local")) or "/" not in spec:
        log.warning("[delegation] engine = \"ray\": the sub-model %s runs in this process (only API models fan "
                    "out to Ray)", spec)
        return local
    return RaySubProvider(local, spec, config)
