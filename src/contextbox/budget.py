"""Budgets that hold with real money: reservations against one ledger per run tree.

Every model call — the root's, a sub-call, a child run's at any depth — first *reserves* its
worst case against ``max_total_tokens`` and ``max_cost_usd``: the prompt's tokens (estimated
from its characters, conservatively) plus the most it may write (the call's ``max_tokens``,
else ``[limits] reserve_output_tokens``), priced by :mod:`contextbox.pricing`. A call the
remaining budget (limit − spent − reserved) cannot cover is not sent. While other calls are in
flight it waits for them to settle (they usually give back part of what they held); when it
still cannot be covered with nothing in flight — or could not be even if all of them gave
everything back — it raises :class:`BudgetExceeded`. When a call returns, its reservation is
released and its real usage recorded (*settled*); a call that fails releases its reservation
and records nothing.

So sixteen concurrent sub-calls of an ``llm_map`` cannot all pass a check before any of them
has spent: the seventeenth sees the sixteen reservations. A run ends over its limit only by
what calls used beyond their reservation (a provider counting more prompt tokens than
estimated, a reply longer than the reserved output). Child runs share their parent's
:class:`Budget` (one ledger for the whole tree), not a copy of what was left.

:func:`effective_limits` turns the configured limits into the enforced ones: the default cost
limit for runs whose models all have a known price, and a :class:`UsageError` for a cost
limit on a model whose price is unknown.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from . import pricing
from .errors import BudgetExceeded, UsageError
from .types import DEFAULT_MAX_COST_USD, DEFAULT_RESERVE_OUTPUT_TOKENS, Limits

log = logging.getLogger("contextbox")

#: characters per token for the prompt estimate; low on purpose (≈4 for English prose), so a
#: reservation covers code, numbers and other token-dense text too
CHARS_PER_TOKEN = 3
#: tokens a chat message costs beyond its text (role, separators)
MESSAGE_OVERHEAD_TOKENS = 4
#: how often a call waiting for room re-checks the run's time limit and cancel
WAIT_POLL_S = 0.1


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A generous estimate of a chat prompt's tokens (for reservations, not for reports)."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # text parts
            chars += sum(len(str(p.get("text", "")) if isinstance(p, dict) else str(p)) for p in content)
    return -(-chars // CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages)


@dataclasses.dataclass
class Reservation:
    """What one call in flight holds of the budget until it is settled or released."""

    model: str
    tokens: int
    cost_usd: float | None
    done: bool = False


class Budget:
    """The token and cost ledger of one run tree. Thread-safe.

    ``spent_*`` is what settled calls used, ``reserved_*`` what calls in flight hold.
    ``price(spec, input_tokens, output_tokens)`` returns USD or None (unknown).
    """

    def __init__(self, max_total_tokens: int | None = None, max_cost_usd: float | None = None, *,
                 price: Any = None, reserve_output_tokens: int = DEFAULT_RESERVE_OUTPUT_TOKENS) -> None:
        self.max_total_tokens = max_total_tokens
        self.max_cost_usd = max_cost_usd
        self.reserve_output_tokens = max(1, int(reserve_output_tokens))
        self._price = price or (lambda spec, i, o: pricing.cost(spec, i, o))
        self.spent_tokens = 0
        self.spent_cost_usd = 0.0
        self.cost_unknown_calls = 0
        self.reserved_tokens = 0
        self.reserved_cost_usd = 0.0
        self.in_flight = 0
        self.calls = 0
        self._lock = threading.Condition(threading.Lock())

    @classmethod
    def for_run(cls, limits: Limits, prices: dict[str, tuple[float, float]] | None = None,
                providers: Iterable[Any] | None = None) -> Budget:
        """The ledger of a root run: its limits, priced with ``[prices]`` and the configured endpoints."""
        provs = list(providers or ())
        return cls(limits.max_total_tokens, limits.max_cost_usd,
                   price=lambda spec, i, o: pricing.cost(spec, i, o, prices, provs),
                   reserve_output_tokens=limits.reserve_output_tokens)

    # ------------------------------------------------------------------ pricing
    def cost(self, spec: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD for a call of ``spec`` (None: unknown price)."""
        return self._price(spec, input_tokens, output_tokens)

    # ------------------------------------------------------------------ reservations
    def reserve(self, spec: str, messages: list[dict[str, Any]], max_tokens: int | None = None, *,
                what: str = "the next call", check: Callable[[], None] | None = None) -> Reservation:
        """Hold the worst case of one call of ``spec`` with ``messages``, or raise BudgetExceeded.

        ``check`` is called while waiting for calls in flight to settle (it raises to stop
        waiting: the run's time limit, a cancel).
        """
        prompt = estimate_prompt_tokens(messages)
        out = int(max_tokens) if max_tokens else self.reserve_output_tokens
        need_cost = self.cost(spec, prompt, out) if self.max_cost_usd is not None else None
        return self.hold_amount(spec, prompt + out, need_cost, what=what, check=check)

    def hold_amount(self, spec: str, tokens: int, cost_usd: float | None, *, what: str = "the next call",
                    check: Callable[[], None] | None = None) -> Reservation:
        """Hold ``tokens`` and ``cost_usd`` for a call of ``spec``, waiting while calls in flight
        may free room, or raise BudgetExceeded."""
        if self.max_cost_usd is not None and cost_usd is None:  # effective_limits refuses this before a run
            raise UsageError(f"max_cost_usd={self.max_cost_usd:g} but the price of {spec} is unknown; set it in "
                             f"the config: [prices] \"{spec}\" = {{ input = USD, output = USD }} (per million tokens)")
        with self._lock:
            while True:
                short = self._shortfall(spec, tokens, cost_usd, what)
                if short is None:
                    break
                never = self._never_fits(tokens, cost_usd)
                if never or self.in_flight == 0:
                    raise BudgetExceeded(short)
                self._lock.wait(WAIT_POLL_S)
                if check is not None:
                    check()
            self.reserved_tokens += tokens
            self.reserved_cost_usd += cost_usd or 0.0
            self.in_flight += 1
        return Reservation(spec, tokens, cost_usd)

    def _shortfall(self, spec: str, tokens: int, cost_usd: float | None, what: str) -> str | None:
        """Why the budget cannot hold this call now (None: it can). Call with the lock held."""
        if self.max_total_tokens is not None:
            left = self.max_total_tokens - self.spent_tokens - self.reserved_tokens
            if tokens > left:
                return (f"max_total_tokens={self.max_total_tokens:,}: {what} ({spec}) needs up to {tokens:,} tokens "
                        f"but only {max(0, left):,} are left ({self.spent_tokens:,} used, "
                        f"{self.reserved_tokens:,} held by {self.in_flight} call(s) in flight)")
        if self.max_cost_usd is not None and cost_usd is not None:
            left_usd = self.max_cost_usd - self.spent_cost_usd - self.reserved_cost_usd
            if cost_usd > left_usd:
                return (f"max_cost_usd={self.max_cost_usd:g}: {what} ({spec}) could cost up to ${cost_usd:.4f} "
                        f"but only ${max(0.0, left_usd):.4f} is left (${self.spent_cost_usd:.4f} spent, "
                        f"${self.reserved_cost_usd:.4f} held by {self.in_flight} call(s) in flight)")
        return None

    def _never_fits(self, tokens: int, cost_usd: float | None) -> bool:
        """Whether the call could not fit even once every call in flight has given everything back."""
        if self.max_total_tokens is not None and tokens > self.max_total_tokens - self.spent_tokens:
            return True
        return (self.max_cost_usd is not None and cost_usd is not None
                and cost_usd > self.max_cost_usd - self.spent_cost_usd)

    def release(self, r: Reservation) -> None:
        """Give back what ``r`` held (the call failed or never ran). Idempotent."""
        with self._lock:
            self._drop(r)

    def settle(self, r: Reservation, tokens: int, cost_usd: float | None) -> None:
        """Release ``r`` and record what the call really used."""
        with self._lock:
            self._drop(r)
            self.spent_tokens += int(tokens)
            self.calls += 1
            if cost_usd is None:
                self.cost_unknown_calls += 1
            else:
                self.spent_cost_usd += cost_usd

    def _drop(self, r: Reservation) -> None:
        if r.done:
            return
        r.done = True
        self.reserved_tokens -= r.tokens
        self.reserved_cost_usd -= r.cost_usd or 0.0
        self.in_flight -= 1
        if self.in_flight == 0:  # no float dust left behind
            self.reserved_cost_usd = 0.0
        self._lock.notify_all()  # calls waiting for room look again

    @contextmanager
    def held(self, spec: str, messages: list[dict[str, Any]], max_tokens: int | None = None, *,
             what: str = "the next call", check: Callable[[], None] | None = None) -> Iterator[Reservation]:
        """``with budget.held(...) as r: ...; budget.settle(r, ...)`` — released on any exit without a settle."""
        r = self.reserve(spec, messages, max_tokens, what=what, check=check)
        try:
            yield r
        finally:
            self.release(r)

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Raise BudgetExceeded when settled usage is already past a limit."""
        with self._lock:
            if self.max_total_tokens is not None and self.spent_tokens > self.max_total_tokens:
                raise BudgetExceeded(f"max_total_tokens={self.max_total_tokens} exceeded ({self.spent_tokens:,} used)")
            if self.max_cost_usd is not None and self.spent_cost_usd > self.max_cost_usd:
                raise BudgetExceeded(f"max_cost_usd={self.max_cost_usd:g} exceeded (${self.spent_cost_usd:.4f} used)")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"spent_tokens": self.spent_tokens, "spent_cost_usd": self.spent_cost_usd,
                    "reserved_tokens": self.reserved_tokens, "reserved_cost_usd": self.reserved_cost_usd,
                    "in_flight": self.in_flight, "calls": self.calls, "cost_unknown_calls": self.cost_unknown_calls}


# ---------------------------------------------------------------------- limits
def effective_limits(limits: Limits, models: Iterable[str], prices: dict[str, tuple[float, float]] | None = None,
                     providers: Iterable[Any] | None = None) -> Limits:
    """The limits a run enforces, given the models it will call.

    ``max_cost_usd`` unset becomes :data:`DEFAULT_MAX_COST_USD` when every model has a known
    price and one costs money (else no limit: free models cost 0, an unknown cost cannot be
    capped); ``inf`` becomes no limit. A cost limit with a model whose price is unknown is a
    :class:`UsageError` naming the model and the ``[prices]`` entry to add. An ``inf``
    ``timeout_s`` is no time limit.
    """
    provs = list(providers or ())
    specs = list(dict.fromkeys(models))
    costs = {m: pricing.cost(m, 1000, 1000, prices, provs) for m in specs}
    unknown = [m for m, c in costs.items() if c is None]
    cap = limits.max_cost_usd
    if cap is not None and math.isinf(cap):
        cap = None
    elif cap is None:
        cap = DEFAULT_MAX_COST_USD if not unknown and any(c for c in costs.values()) else None
    elif unknown:
        m = unknown[0]
        raise UsageError(
            f"max_cost_usd={cap:g} needs the price of {m}, which is unknown; add it to the config file: "
            f"[prices] \"{m}\" = {{ input = USD_PER_MTOK, output = USD_PER_MTOK }} (or drop the cost limit)")
    timeout = limits.timeout_s
    if timeout is not None and math.isinf(timeout):
        timeout = None
    return dataclasses.replace(limits, max_cost_usd=cap, timeout_s=timeout)


# ---------------------------------------------------------------------- a ledger shared by many runs
class SharedBudget(Budget):
    """A run's ledger whose every call is also reserved in ``parent``, a ledger many runs share
    (``rlm batch --max-cost/--max-tokens``). The same rules hold at both levels: a call the run
    or the batch cannot cover is not sent; what it holds is given back (or settled) in both.

    ``parent`` needs ``max_total_tokens``, ``max_cost_usd``, ``hold_amount``, ``release``,
    ``settle`` and ``check`` — a :class:`Budget`, or a proxy to one in another process.
    """

    def __init__(self, *args: Any, parent: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.parent = parent

    @classmethod
    def for_run_in(cls, limits: Limits, parent: Any, prices: dict[str, tuple[float, float]] | None = None,
                   providers: Iterable[Any] | None = None) -> SharedBudget:
        provs = list(providers or ())
        return cls(limits.max_total_tokens, limits.max_cost_usd, parent=parent,
                   price=lambda spec, i, o: pricing.cost(spec, i, o, prices, provs),
                   reserve_output_tokens=limits.reserve_output_tokens)

    def reserve(self, spec: str, messages: list[dict[str, Any]], max_tokens: int | None = None, *,
                what: str = "the next call", check: Callable[[], None] | None = None) -> Reservation:
        prompt = estimate_prompt_tokens(messages)
        out = int(max_tokens) if max_tokens else self.reserve_output_tokens
        priced = self.max_cost_usd is not None or self.parent.max_cost_usd is not None
        need_cost = self.cost(spec, prompt, out) if priced else None
        outer = self.parent.hold_amount(spec, prompt + out, need_cost, what=f"{what} (batch budget)", check=check)
        try:
            r = self.hold_amount(spec, prompt + out, need_cost, what=what, check=check)
        except BaseException:
            self.parent.release(outer)
            raise
        r.outer = outer  # type: ignore[attr-defined]
        return r

    def release(self, r: Reservation) -> None:
        super().release(r)
        outer = getattr(r, "outer", None)
        if outer is not None:
            self.parent.release(outer)

    def settle(self, r: Reservation, tokens: int, cost_usd: float | None) -> None:
        outer = getattr(r, "outer", None)
        super().settle(r, tokens, cost_usd)
        if outer is not None:
            r.outer = None  # type: ignore[attr-defined]
            self.parent.settle(outer, tokens, cost_usd)

    def check(self) -> None:
        super().check()
        self.parent.check()


def ledger_spent(ledger: Any) -> str | None:
    """Why a batch ledger has nothing left to start a run with (None: it has)."""
    snap = ledger.snapshot()
    if ledger.max_total_tokens is not None and snap["spent_tokens"] >= ledger.max_total_tokens:
        return f"max_tokens={ledger.max_total_tokens:,} spent ({snap['spent_tokens']:,} used)"
    if ledger.max_cost_usd is not None and snap["spent_cost_usd"] >= ledger.max_cost_usd:
        return f"max_cost={ledger.max_cost_usd:g} spent (${snap['spent_cost_usd']:.4f} used)"
    return None
