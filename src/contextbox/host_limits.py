"""Bounds on the work the host does for a model: the L1 operations and the code levels' host calls.

The L1 operations (``find``, ``regex``, ``split``, ``chunk``, ``lines``, ``search``, the table
ops, …) run in the engine process, whether an L1 command, an L2 cell or an L3 worker asks
for them. A hostile or careless request must not cost the host unbounded memory or time:

* **input** — a ``text=`` argument longer than ``[limits] max_host_input_chars`` is refused;
* **result** — a result of more than ``[limits] max_host_items`` pieces (hits, lines, rows)
  or more than ``max(max_host_result_chars, 2 × the context)`` characters is refused, before
  it is built where the size is known in advance (``split``, ``chunk``, ``lines``);
* **hits** — ``max`` / ``k`` above ``[limits] max_host_hits`` is refused;
* **time** — every call gets a deadline (the cell's remaining time, never past the run's
  timeout) and the run's cancel flag; the long loops of :mod:`contextbox.ops` call
  :func:`checkpoint`, which raises :class:`HostStopped` once either fires;
* **answers** — a final answer longer than ``[limits] max_answer_chars`` is refused.

The limits and the deadline travel in a thread-local :class:`HostGuard` that
:func:`guarded` installs around one call; code that runs without one (tests, the Python
API's own use of :mod:`contextbox.ops`) is unbounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import CommandError
from .types import Limits

_DEFAULTS = Limits()
DEFAULT_MAX_HOST_INPUT_CHARS = _DEFAULTS.max_host_input_chars
DEFAULT_MAX_HOST_RESULT_CHARS = _DEFAULTS.max_host_result_chars
DEFAULT_MAX_HOST_ITEMS = _DEFAULTS.max_host_items
DEFAULT_MAX_HOST_HITS = _DEFAULTS.max_host_hits
DEFAULT_MAX_ANSWER_CHARS = _DEFAULTS.max_answer_chars


class HostStopped(CommandError):
    """A host call ran out of its time, or the run was cancelled."""


@dataclass
class HostGuard:
    """The limits of one host call, its deadline (``time.monotonic()``) and the run's cancel flag."""

    max_input_chars: int = DEFAULT_MAX_HOST_INPUT_CHARS
    max_result_chars: int = DEFAULT_MAX_HOST_RESULT_CHARS
    max_items: int = DEFAULT_MAX_HOST_ITEMS
    max_hits: int = DEFAULT_MAX_HOST_HITS
    deadline: float | None = None
    cancel: threading.Event | None = None
    what: str = "this call"

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise HostStopped(f"{self.what} was stopped: the run was cancelled")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise HostStopped(f"{self.what} was stopped: it ran out of time (the block's or the run's time limit); "
                              "narrow it (a smaller 'max', a range of lines, a more specific pattern)")

    # -- the size checks (each raises a CommandError naming the [limits] key to change)
    def check_input(self, text: str, what: str) -> None:
        if len(text) > self.max_input_chars:
            raise CommandError(f"{what}: text= holds {len(text):,} characters, over the limit of "
                               f"{self.max_input_chars:,} per call ([limits] max_host_input_chars); "
                               "pass a smaller piece, or work on the context itself")

    def check_hits(self, n: int | None, what: str, arg: str = "max") -> int:
        """``n`` (None: as many as allowed) checked against ``max_hits``; returns the number to collect."""
        if n is None:
            return self.max_hits
        if n > self.max_hits:
            raise CommandError(f"{what}: {arg}={n:,} is over the limit of {self.max_hits:,} hits per call "
                               "([limits] max_host_hits); use count for a total, or narrow the search")
        return n

    def check_items(self, n: int, what: str, hint: str = "") -> None:
        if n > self.max_items:
            raise CommandError(f"{what} would return {n:,} pieces, over the limit of {self.max_items:,} per call "
                               f"([limits] max_host_items){'; ' + hint if hint else ''}")

    def check_chars(self, n: int, what: str, hint: str = "") -> None:
        if n > self.max_result_chars:
            raise CommandError(f"{what} would return {n:,} characters, over the limit of {self.max_result_chars:,} "
                               f"per call ([limits] max_host_result_chars){'; ' + hint if hint else ''}")

    def check_result(self, value: Any, what: str) -> Any:
        """Measure a computed result (lists, dicts, strings) against the item and character limits."""
        items, chars = _measure(value, self.max_items, self.max_result_chars)
        self.check_items(items, what, "ask for a part (a range, a filter, a smaller k)")
        self.check_chars(chars, what, "ask for a part (a range, a filter, a smaller k)")
        return value


def _measure(value: Any, max_items: int, max_chars: int) -> tuple[int, int]:
    """(top-level items, characters of every string inside) — stops counting once over a limit."""
    items = len(value) if isinstance(value, (list, tuple, dict)) else 1
    if items > max_items:
        return items, 0
    chars = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        else:
            chars += 8
        if chars > max_chars:
            break
    return items, chars


_local = threading.local()


def current() -> HostGuard | None:
    """The guard of the host call running in this thread, if any."""
    return getattr(_local, "guard", None)


def checkpoint() -> None:
    """Raise :class:`HostStopped` when the current host call is past its deadline or its run was cancelled."""
    g = getattr(_local, "guard", None)
    if g is not None:
        g.check()


def time_left(default: float) -> float:
    """``default`` seconds, or less when the current host call's deadline is nearer (at least 0.05 s)."""
    g = getattr(_local, "guard", None)
    left = g.remaining() if g is not None else None
    return default if left is None else max(0.05, min(default, left))


@contextmanager
def guarded(guard: HostGuard) -> Iterator[HostGuard]:
    """Install ``guard`` for the calls made in this thread inside the block (nested: the inner one wins)."""
    old = getattr(_local, "guard", None)
    _local.guard = guard
    try:
        guard.check()
        yield guard
    finally:
        _local.guard = old


def guard_for(session: Any, deadline: float | None = None, what: str = "this call") -> HostGuard:
    """A guard from the run's ``[limits]``: ``deadline`` (if given) and the run's own timeout, whichever is first."""
    lim = getattr(session, "limits", None)
    run_deadline = session.services.get("deadline") if getattr(session, "services", None) else None
    dl = [d for d in (deadline, run_deadline) if d is not None]
    ctx_chars = len(session.context.text) if getattr(session, "context", None) is not None else 0
    result_chars = int(getattr(lim, "max_host_result_chars", DEFAULT_MAX_HOST_RESULT_CHARS))
    return HostGuard(
        max_input_chars=int(getattr(lim, "max_host_input_chars", DEFAULT_MAX_HOST_INPUT_CHARS)),
        # a copy of the whole context (chunks, lines) is within bounds: the run already holds the context
        max_result_chars=max(result_chars, 2 * ctx_chars),
        max_items=int(getattr(lim, "max_host_items", DEFAULT_MAX_HOST_ITEMS)),
        max_hits=int(getattr(lim, "max_host_hits", DEFAULT_MAX_HOST_HITS)),
        deadline=min(dl) if dl else None,
        cancel=getattr(session, "cancel", None),
        what=what,
    )


def max_answer_chars(session: Any) -> int:
    return int(getattr(getattr(session, "limits", None), "max_answer_chars", DEFAULT_MAX_ANSWER_CHARS))


def check_answer(answer: str, limit: int) -> str:
    """``answer`` when it fits ``limit`` characters, else a CommandError the model can act on."""
    if len(answer) > limit:
        raise CommandError(f"the answer holds {len(answer):,} characters, over the limit of {limit:,} "
                           "([limits] max_answer_chars); answer with the result itself, not the data it came from")
    return answer


# -- size arithmetic for the ops whose result size is known before they run
def split_pieces(text: str, delimiter: str) -> int:
    return text.count(delimiter) + 1 if delimiter else 1


def chunk_pieces(n_chars: int, size: int, overlap: int) -> tuple[int, int]:
    """(number of chunks, their total characters) of ``ops.chunk`` on ``n_chars`` characters."""
    if n_chars <= 0 or size <= 0 or not 0 <= overlap < size:
        return 0, 0
    step = size - overlap
    n = 1 if n_chars <= size else 1 + -(-(n_chars - size) // step)
    return n, min(n * size, n_chars + (n - 1) * overlap)
