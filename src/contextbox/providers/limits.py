"""Limits that hold across runs, threads and processes: ``max_concurrency``, ``rpm`` and ``tpm``
per endpoint.

A :class:`~contextbox.providers.pool.Pool` enforces its endpoints' limits inside one pool
object; every run resolves its own providers, so two runs in one process (``rlm batch
--workers``, ``rlm serve``), or runs on several Ray workers, would each get the whole limit.
A *limiter* hands out permits per endpoint key instead:

* :class:`PermitBook` — the bookkeeping (no locking, no clock of its own): permits in flight,
  calls ended in the last 60 s (``rpm``: a call counts from its permit until 60 s after its end, so
  the requests a server sees in any 60 s never exceed ``rpm``, however late each one left) and tokens of the last 60 s plus the estimates of
  calls in flight (``tpm``). A permit has a *holder* (a process); :meth:`PermitBook.reap`
  gives back every permit of a holder that stopped renewing its lease (a dead worker).
* :class:`LocalLimiter` — a :class:`PermitBook` under a condition: one per process.
  :mod:`contextbox.ray_engine` hosts one in a named Ray actor for a whole cluster.
* :class:`LimitedProvider` — wraps one endpoint's provider: each call takes a permit first
  (waiting while the endpoint is at a limit) and gives it back with the tokens it used.

:func:`install_limiter` makes a limiter the process's; from then on
:func:`~contextbox.providers.base.resolve` wraps every API endpoint it builds (a pool's
members one by one, so a pool's retries and failovers take a permit per attempt) and builds
each model spec's provider once for the process (:func:`shared_provider`). Nothing is wrapped
or shared while no limiter is installed (a single ``rlm ask`` is one run: its pool's limits hold).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ProviderUnavailable
from ..types import Completion

log = logging.getLogger("contextbox")

WINDOW_S = 60.0
#: a waiting acquire re-checks at least this often (a reaped lease, a deadline)
MAX_WAIT_S = 0.5


@dataclass(frozen=True)
class EndpointLimits:
    """What one endpoint allows at once: calls in flight, calls started per minute, tokens per minute."""

    max_concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    @property
    def unlimited(self) -> bool:
        return not (self.max_concurrency or self.rpm or self.tpm)


@dataclass
class _Key:
    limits: EndpointLimits
    in_flight: int = 0
    held_tokens: int = 0  # estimates of calls in flight (tpm)
    ends: deque[float] = field(default_factory=deque)  # end times of finished calls of the last 60 s (rpm)
    used: deque[tuple[float, int]] = field(default_factory=deque)  # (end time, tokens) of finished calls
    calls: int = 0
    max_in_flight: int = 0

    def trim(self, now: float) -> None:
        while self.ends and self.ends[0] <= now - WINDOW_S:
            self.ends.popleft()
        while self.used and self.used[0][0] <= now - WINDOW_S:
            self.used.popleft()


@dataclass
class _Permit:
    key: str
    holder: str
    tokens: int


class PermitBook:
    """Permits per endpoint key (see the module docs). Not thread-safe: callers lock."""

    def __init__(self) -> None:
        self.keys: dict[str, _Key] = {}
        self.permits: dict[int, _Permit] = {}
        self.seen: dict[str, float] = {}  # holder -> last lease renewal (monotonic)
        self._ids = itertools.count(1)

    def try_take(self, key: str, limits: EndpointLimits, tokens: int, holder: str,
                 now: float) -> tuple[int | None, float]:
        """A permit id, or ``(None, seconds worth waiting before trying again)``."""
        k = self.keys.get(key)
        if k is None:
            k = self.keys[key] = _Key(limits)
        else:
            k.limits = limits  # the latest config wins
        k.trim(now)
        self.seen[holder] = now
        wait = self._wait(k, max(0, int(tokens)), now)
        if wait > 0:
            return None, wait
        pid = next(self._ids)
        self.permits[pid] = _Permit(key, holder, max(0, int(tokens)))
        k.in_flight += 1
        k.max_in_flight = max(k.max_in_flight, k.in_flight)
        k.held_tokens += max(0, int(tokens))
        k.calls += 1
        return pid, 0.0

    @staticmethod
    def _wait(k: _Key, tokens: int, now: float) -> float:
        lim = k.limits
        if lim.max_concurrency and k.in_flight >= lim.max_concurrency:
            return MAX_WAIT_S  # a release wakes the waiters
        waits = []
        # a call holds an rpm slot from its permit until 60 s after it ended: its request reached the server
        # somewhere in between, so no 60 s at the server ever sees more than rpm requests
        if lim.rpm and k.in_flight + len(k.ends) >= lim.rpm:
            if k.in_flight >= lim.rpm:
                waits.append(MAX_WAIT_S)
            else:
                waits.append(k.ends[len(k.ends) - (lim.rpm - k.in_flight)] + WINDOW_S - now)
        if lim.tpm:
            window = sum(n for _, n in k.used) + k.held_tokens
            # a call larger than the whole limit goes alone once nothing else counts
            if window and window + tokens > lim.tpm:
                if k.used:
                    waits.append(k.used[0][0] + WINDOW_S - now)
                else:
                    waits.append(MAX_WAIT_S)
        return max([w for w in waits if w > 0], default=0.0)

    def give_back(self, permit_id: int, used_tokens: int | None, now: float) -> bool:
        """Release a permit; ``used_tokens`` (None: the call failed, nothing used) count in the tpm window."""
        p = self.permits.pop(permit_id, None)
        if p is None:
            return False
        k = self.keys[p.key]
        k.in_flight -= 1
        k.held_tokens -= p.tokens
        if k.limits.rpm:
            k.ends.append(now)
        if used_tokens and k.limits.tpm:
            k.used.append((now, int(used_tokens)))
        return True

    def renew(self, holder: str, now: float) -> None:
        self.seen[holder] = now

    def reap(self, now: float, lease_s: float) -> list[str]:
        """Give back the permits of holders not seen for ``lease_s``; returns those holders."""
        dead = [h for h, t in self.seen.items() if now - t > lease_s]
        for h in dead:
            del self.seen[h]
        if dead:
            gone = set(dead)
            for pid in [i for i, p in self.permits.items() if p.holder in gone]:
                self.give_back(pid, None, now)
            log.warning("limiter: returned the permits of %d holder(s) whose lease expired", len(dead))
        return dead

    def stats(self) -> dict[str, dict[str, Any]]:
        return {key: {"in_flight": k.in_flight, "max_in_flight": k.max_in_flight, "calls": k.calls,
                      "limits": vars(k.limits) if hasattr(k.limits, "__dict__") else str(k.limits)}
                for key, k in self.keys.items()}


class Limiter(Protocol):
    def acquire(self, key: str, limits: EndpointLimits, tokens: int, deadline: float | None = None) -> Any: ...

    def release(self, permit: Any, used_tokens: int | None) -> None: ...


class LocalLimiter:
    """A :class:`PermitBook` under a condition variable: the limiter of one process.

    ``lease_s`` (optional) reaps holders that stop calling :meth:`renew` (the Ray broker's
    workers); holders in this process never expire while ``lease_s`` is None.
    """

    def __init__(self, lease_s: float | None = None, holder: str = "local") -> None:
        self.book = PermitBook()
        self.cond = threading.Condition()
        self.lease_s = lease_s
        self.holder = holder

    def acquire(self, key: str, limits: EndpointLimits, tokens: int = 0, deadline: float | None = None,
                holder: str | None = None) -> int:
        with self.cond:
            while True:
                now = time.monotonic()
                if self.lease_s is not None:
                    if self.book.reap(now, self.lease_s):
                        self.cond.notify_all()
                pid, wait = self.book.try_take(key, limits, tokens, holder or self.holder, now)
                if pid is not None:
                    return pid
                if deadline is not None:
                    if now >= deadline:
                        raise ProviderUnavailable(f"{key}: timed out waiting for a permit (endpoint limits "
                                                  f"max_concurrency/rpm/tpm)")
                    wait = min(wait, deadline - now)
                self.cond.wait(max(0.001, min(wait, MAX_WAIT_S)))

    def release(self, permit: Any, used_tokens: int | None = None) -> None:
        with self.cond:
            if self.book.give_back(int(permit), used_tokens, time.monotonic()):
                self.cond.notify_all()

    def renew(self, holder: str) -> None:
        with self.cond:
            self.book.renew(holder, time.monotonic())

    def stats(self) -> dict[str, dict[str, Any]]:
        with self.cond:
            return self.book.stats()


# ---------------------------------------------------------------------- the process's limiter
_current: Limiter | None = None
_current_lock = threading.Lock()


def install_limiter(limiter: Limiter | None) -> Limiter | None:
    """Make ``limiter`` the process's (None: none); returns the one it replaces."""
    global _current
    with _current_lock:
        old, _current = _current, limiter
        _providers.clear()
    return old


def current_limiter() -> Limiter | None:
    return _current


def ensure_local_limiter() -> Limiter:
    """The process's limiter, installing a :class:`LocalLimiter` when there is none."""
    global _current
    with _current_lock:
        if _current is None:
            _current = LocalLimiter()
        return _current


_providers: dict[Any, Any] = {}


def shared_provider(key: Any, build: Any) -> Any:
    """While a limiter is installed, one provider per model spec and config for the whole process:
    runs share its HTTP connections (a new SDK client costs ~30 ms of CPU and a connection) and a
    pool's health. Without a limiter every call of ``resolve`` builds a new one."""
    if _current is None:
        return build()
    with _current_lock:
        p = _providers.get(key)
    if p is None:
        p = build()
        with _current_lock:
            p = _providers.setdefault(key, p)
    return p


def endpoint_key(config: Any, index: int = 0) -> str:
    """The key of an endpoint: its config name, member index and base URL (as a pool labels it)."""
    base = getattr(config, "base_url", None)
    return f"{config.name}#{index}" + (f"@{base}" if base else "")


def limits_of(config: Any) -> EndpointLimits:
    return EndpointLimits(getattr(config, "max_concurrency", None) or None, getattr(config, "rpm", None) or None,
                          getattr(config, "tpm", None) or None)


def estimate_call_tokens(messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    """What a call may use, for ``tpm``: the prompt estimate plus its ``max_tokens`` (if set)."""
    from ..budget import estimate_prompt_tokens

    return estimate_prompt_tokens(messages) + int(max_tokens or 0)


class LimitedProvider:
    """One endpoint's provider whose every call takes a permit of ``limiter`` (see the module docs)."""

    def __init__(self, provider: Any, key: str, limits: EndpointLimits, limiter: Limiter) -> None:
        self.__dict__["_inner"] = provider
        self.__dict__["key"] = key
        self.__dict__["limits"] = limits
        self.__dict__["limiter"] = limiter

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. a pool switching a member's retries off
        setattr(self.__dict__["_inner"], name, value)

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        timeout = opts.get("timeout")
        t0 = time.monotonic()
        deadline = t0 + float(timeout) if timeout is not None else None
        permit = self.limiter.acquire(self.key, self.limits, estimate_call_tokens(messages, opts.get("max_tokens")),
                                      deadline)
        used: int | None = None
        try:
            if timeout is not None:
                opts["timeout"] = max(0.05, float(timeout) - (time.monotonic() - t0))
            c = self._inner.complete(messages, **opts)
            used = int(c.input_tokens or 0) + int(c.output_tokens or 0)
            return c
        finally:
            self.limiter.release(permit, used)

    def __repr__(self) -> str:
        return f"LimitedProvider({self._inner!r}, {self.key!r})"


def limited(provider: Any, config: Any, index: int = 0) -> Any:
    """``provider`` wrapped with the process's limiter (as it is when none is installed or it has no limits)."""
    lim = current_limiter()
    if lim is None or isinstance(provider, LimitedProvider):
        return provider
    limits = limits_of(config)
    if limits.unlimited:
        return provider
    return LimitedProvider(provider, endpoint_key(config, index), limits, lim)
