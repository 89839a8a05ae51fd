"""A pool of endpoints serving one model spec: routing, limits, retries, failover, cool-down.

Several ``[[providers]]`` tables with the same ``name`` form a pool; the model spec
``NAME/MODEL`` then resolves to a :class:`Pool` that implements the provider protocol and
spreads calls over its members:

* **routing** — each call goes to the least-loaded healthy endpoint: the lowest
  ``(in_flight + 1) / weight``, ties broken round-robin;
* **limits** — an endpoint never has more than ``max_concurrency`` calls in flight, nor
  more than ``rpm`` calls started in any 60 seconds; a call waits for a free slot;
* **retries** — 429, 5xx, timeouts, resets and malformed bodies (errors whose
  ``retryable`` is true) are retried on the same endpoint up to its ``max_retries`` with
  exponential backoff and full jitter (a server's ``Retry-After`` wins), then the call
  **fails over** to another endpoint (so does an :class:`~contextbox.errors.AuthError`:
  the other endpoint may hold another key);
* **cool-down** — an endpoint that fails ``failure_threshold`` calls in a row is taken
  out for ``cooldown_s`` seconds (doubling while it keeps failing, up to
  ``max_cooldown_s``); afterwards exactly one call probes it: success puts it back.

The members' own retries are switched off: the pool does all retrying, so that it can
fail over instead of hammering a broken endpoint. Retries and failovers are reported
through the call's ``on_retry(attempt, delay_s, error)`` and
``on_failover(from_endpoint, to_endpoint, error)`` options; the engine turns them into
``retry`` and ``failover`` events. Each member config's ``role`` (``root``, ``sub``,
``both``) is honoured by :meth:`Pool.for_role`, which the engine applies to the root and
sub-model; the views share the endpoints' load and health.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import AuthError, ProviderError, ProviderUnavailable, UsageError
from ..types import Completion
from .base import Provider, ProviderConfig
from .retry import backoff_delay

log = logging.getLogger("contextbox")

OnFailover = Callable[[str, str, Exception], None]


class Endpoint:
    """One member of a pool and its live state. Guarded by the pool's condition."""

    def __init__(self, provider: Provider, config: ProviderConfig, label: str) -> None:
        self.provider = provider
        self.config = config
        self.label = label
        self.weight = max(float(config.weight or 1.0), 1e-6)
        self.max_concurrency = max(1, int(config.max_concurrency or 1))
        self.rpm = int(config.rpm) if config.rpm else None
        self.max_retries = max(0, int(config.max_retries))
        self.in_flight = 0
        self.failures = 0  # consecutive failed calls
        self.cooled_until = 0.0  # monotonic; > now while cooling down
        self.cooldown = 0.0  # the current cool-down length (doubles while failing)
        self.probing = False  # a probe call after a cool-down is in flight
        self.started: deque[float] = deque()  # start times of calls in the last 60 s (rpm)
        self.calls = 0
        self.errors = 0

    def cooling(self, now: float) -> bool:
        return self.cooled_until > now

    def needs_probe(self) -> bool:
        """Cooled down before and not yet proven healthy again."""
        return self.cooldown > 0 and self.failures > 0

    def rpm_wait(self, now: float) -> float:
        """Seconds until this endpoint may start another call under its ``rpm`` (0 = now)."""
        if self.rpm is None:
            return 0.0
        while self.started and self.started[0] <= now - 60.0:
            self.started.popleft()
        if len(self.started) < self.rpm:
            return 0.0
        return self.started[0] + 60.0 - now

    def stats(self) -> dict[str, Any]:
        return {"endpoint": self.label, "in_flight": self.in_flight, "calls": self.calls, "errors": self.errors,
                "failures_in_row": self.failures, "cooling": self.cooling(time.monotonic())}


class _Shared:
    """State shared by a pool and its role views: the endpoints and one condition."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self.cond = threading.Condition()
        self.rr = itertools.count()


def _no_member_retries(provider: Provider) -> Provider:
    """Switch a member's own retries off (the pool retries); members belong to the pool."""
    cfg = getattr(provider, "config", None)
    if isinstance(cfg, ProviderConfig) and cfg.max_retries:
        try:
            provider.config = dataclasses.replace(cfg, max_retries=0)  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # a read-only provider keeps its retries
            log.debug("pool member %s keeps its own retries", getattr(provider, "name", provider))
    return provider


def _tagged(err: Exception, label: str) -> Exception:
    """A copy of ``err`` whose message names the endpoint (for events)."""
    try:
        tagged = copy.copy(err)
        tagged.args = (f"[{label}] {err}",)
        return tagged
    except Exception:  # noqa: BLE001 - an odd exception type: report it as it is
        return err


class Pool:
    """Routes calls for one model spec across several endpoints (see the module docs)."""

    #: consecutive failures that take an endpoint out
    failure_threshold = 3
    #: first cool-down (seconds); doubles while the probe keeps failing
    cooldown_s = 5.0
    max_cooldown_s = 120.0
    #: backoff of the pool's retries (tests and benchmarks make it tiny)
    retry_base_delay = 0.5
    retry_max_delay = 8.0

    def __init__(
        self,
        spec: str,
        members: Sequence[Provider],
        configs: Sequence[ProviderConfig],
        *,
        _shared: _Shared | None = None,
        _active: list[Endpoint] | None = None,
    ) -> None:
        if len(members) != len(configs) or not members:
            raise UsageError(f"pool {spec!r} needs one config per member and at least one member")
        self.name = spec
        if _shared is None:
            eps = [
                Endpoint(_no_member_retries(m), c, f"{c.name}#{i}" + (f"@{c.base_url}" if c.base_url else ""))
                for i, (m, c) in enumerate(zip(members, configs, strict=True))
            ]
            _shared = _Shared(eps)
        self._shared = _shared
        self.endpoints: list[Endpoint] = list(_active if _active is not None else _shared.endpoints)
        windows = [e.provider.context_window for e in self.endpoints if e.provider.context_window]
        self.context_window: int | None = min(windows) if windows else None
        self.supports_schema = all(getattr(e.provider, "supports_schema", False) for e in self.endpoints)

    # ------------------------------------------------------------------ views
    def for_role(self, role: str) -> Pool:
        """The endpoints whose ``role`` is ``role`` or ``both`` (sharing load and health)."""
        if role not in ("root", "sub"):
            raise ValueError(f"role must be root or sub, not {role!r}")
        active = [e for e in self._shared.endpoints if e.config.role in (role, "both")]
        if not active:
            raise UsageError(f"pool {self.name!r} has no endpoint with role {role!r} or 'both'; "
                             f"set role in its [[providers]] tables")
        if len(active) == len(self.endpoints) and all(a is b for a, b in zip(active, self.endpoints, strict=True)):
            return self
        view = Pool.__new__(Pool)
        view.__dict__.update(self.__dict__)
        Pool.__init__(view, self.name, [e.provider for e in active], [e.config for e in active],
                      _shared=self._shared, _active=active)
        return view

    def stats(self) -> list[dict[str, Any]]:
        """A snapshot of every endpoint's load and health."""
        with self._shared.cond:
            return [e.stats() for e in self.endpoints]

    # ------------------------------------------------------------------ slots
    def _usable(self, e: Endpoint, now: float) -> bool:
        if e.in_flight >= e.max_concurrency or e.rpm_wait(now) > 0:
            return False
        if e.cooling(now):
            return False
        if e.needs_probe():  # after a cool-down: one probe at a time
            return not e.probing
        return True

    def _acquire(self, exclude: set[int], deadline: float | None, prefer: Endpoint | None = None,
                 wait_cooling: bool = True) -> Endpoint | None:
        """Take a slot on the best endpoint not in ``exclude`` (ids); wait while all are busy.

        Returns ``None`` when no candidate is left (all excluded, or all cooling down and
        ``wait_cooling`` is false).
        """
        cond = self._shared.cond
        with cond:
            while True:
                now = time.monotonic()
                cands = [e for e in self.endpoints if id(e) not in exclude]
                if not cands:
                    return None
                if not wait_cooling and all(e.cooling(now) or (e.needs_probe() and e.probing) for e in cands):
                    return None
                usable = [e for e in cands if self._usable(e, now)]
                if prefer is not None and prefer in usable:
                    chosen = prefer
                elif usable:
                    turn = next(self._shared.rr)
                    n = len(usable)
                    chosen = min(((e.in_flight + 1) / e.weight, (i - turn) % n, e)
                                 for i, e in enumerate(usable))[2] if n > 1 else usable[0]
                else:
                    chosen = None
                if chosen is not None:
                    chosen.in_flight += 1
                    chosen.calls += 1
                    if chosen.needs_probe():
                        chosen.probing = True
                        log.info("pool %s: probing %s after its cool-down", self.name, chosen.label)
                    if chosen.rpm is not None:
                        chosen.started.append(now)
                    return chosen
                # nothing free: wait for a release, an rpm slot or the end of a cool-down
                waits = [0.5]
                for e in cands:
                    if e.cooling(now):
                        waits.append(e.cooled_until - now)
                    w = e.rpm_wait(now)
                    if w > 0:
                        waits.append(w)
                timeout = max(0.001, min(waits))
                if deadline is not None:
                    if now >= deadline:
                        raise ProviderUnavailable(f"{self.name}: timed out waiting for a free endpoint")
                    timeout = min(timeout, deadline - now)
                cond.wait(timeout)

    def _release(self, e: Endpoint, ok: bool, err: Exception | None = None) -> None:
        cond = self._shared.cond
        with cond:
            e.in_flight -= 1
            was_probe = e.probing
            e.probing = False
            if ok:
                if e.failures:
                    log.info("pool %s: %s is healthy again", self.name, e.label)
                e.failures = 0
                e.cooldown = 0.0
            else:
                e.errors += 1
                e.failures += 1
                if was_probe or e.failures >= self.failure_threshold and not e.cooling(time.monotonic()):
                    e.cooldown = min(self.max_cooldown_s, e.cooldown * 2 if e.cooldown else self.cooldown_s)
                    e.cooled_until = time.monotonic() + e.cooldown
                    log.warning("pool %s: %s failed %d call(s) in a row, cooling down %.1fs: %s",
                                self.name, e.label, e.failures, e.cooldown, err)
            cond.notify_all()

    # ------------------------------------------------------------------ calls
    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        """Send ``messages`` to the best endpoint; retry, fail over, or raise the last error."""
        on_retry = opts.pop("on_retry", None)
        on_failover: OnFailover | None = opts.pop("on_failover", None)
        timeout = opts.get("timeout")
        deadline = time.monotonic() + float(timeout) if timeout is not None else None
        tried: set[int] = set()
        ep = self._acquire(tried, deadline)
        assert ep is not None  # nothing is excluded yet
        attempt = 0
        while True:
            if deadline is not None:
                opts["timeout"] = max(0.05, deadline - time.monotonic())
            try:
                c = ep.provider.complete(messages, **opts)
            except Exception as e:
                self._release(ep, ok=False, err=e)
                if not isinstance(e, ProviderError) or not (e.retryable or isinstance(e, AuthError)):
                    raise
                nxt = self._next_attempt(ep, e, attempt, tried, deadline, on_retry)
                if nxt is ep:
                    attempt += 1
                    continue
                if nxt is None:
                    raise
                log.info("pool %s: failover %s -> %s after %s", self.name, ep.label, nxt.label, e)
                if on_failover is not None:
                    on_failover(ep.label, nxt.label, e)
                ep, attempt = nxt, 0
                continue
            self._release(ep, ok=True)
            if not c.model:
                c.model = self.name
            c.endpoint = ep.label
            return c

    def _next_attempt(self, ep: Endpoint, err: ProviderError, attempt: int, tried: set[int],
                      deadline: float | None, on_retry: Any) -> Endpoint | None:
        """After a failure on ``ep``: the endpoint to try next (``ep`` again after a backoff)."""
        now = time.monotonic()
        if err.retryable and attempt < ep.max_retries and not ep.cooling(now):
            delay = backoff_delay(attempt + 1, self.retry_base_delay, self.retry_max_delay, err.retry_after)
            if deadline is None or now + delay < deadline:
                if on_retry is not None:
                    on_retry(attempt + 1, delay, _tagged(err, ep.label))
                if delay > 0:
                    time.sleep(delay)
                if not ep.cooling(time.monotonic()):
                    again = self._acquire(tried | {id(e) for e in self.endpoints if e is not ep}, deadline,
                                          prefer=ep, wait_cooling=False)
                    if again is not None:
                        return again
        tried.add(id(ep))
        return self._acquire(tried, deadline, wait_cooling=False)

    def __repr__(self) -> str:
        return f"Pool({self.name!r}, {[e.label for e in self.endpoints]})"
