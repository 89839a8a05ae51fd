"""The executor seam.

An *action* is one thing the root model asked for in a reply: an L1 command (a JSON object
with ``op``), a code cell (L2/L3), or a delegation command (L4). Each level has one
executor, made per run by a registered factory from the run's :class:`Session`::

    class Executor(Protocol):
        level: str
        def run(self, action: Action) -> ActionOutput: ...
        def close(self) -> None: ...

The loop asks the run's policy (``levels``) before dispatching; a refused action never
reaches an executor. Executors register with :func:`register_executor` — the built-in
ones exactly like any other.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import UsageError
from .types import Limits

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger("contextbox")

LEVELS = ("l1", "l2", "l3", "l4")
LEVEL_NAMES = {
    "l1": "L1 commands",
    "l2": "L2 sandboxed Python (pydantic-monty)",
    "l3": "L3 native Python worker",
    "l4": "L4 delegation to sub-models",
}


def parse_levels(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"l1,l2"`` / ``["L1", "l4"]`` / ``"all"`` → ``("l1", "l2")``; unknown names are a UsageError."""
    if value is None:
        return ("l1",)
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        lv = str(raw).strip().lower()
        if not lv:
            continue
        if lv == "all":
            return LEVELS
        if lv in ("1", "2", "3", "4"):
            lv = "l" + lv
        if lv not in LEVELS:
            raise UsageError(f"unknown level {raw!r}; levels are l1, l2, l3, l4 (e.g. --levels l1,l4)")
        if lv not in out:
            out.append(lv)
    if not out:
        raise UsageError("no levels given; use e.g. --levels l1")
    return tuple(sorted(out))


@dataclass
class Action:
    """One unit of work from a model reply."""

    kind: str  # "command" | "code"
    level: str  # "l1".."l4"
    op: str  # the command's op, or "code"
    args: dict[str, Any] = field(default_factory=dict)  # command fields, or {"code", "lang"}
    source: str = ""  # canonical text, used to spot repeated actions

    def describe(self, limit: int = 120) -> str:
        s = " ".join(self.source.split())
        return s if len(s) <= limit else s[: limit - 1] + "…"


@dataclass
class ActionOutput:
    """What an action produced. ``text`` is what the model sees (already capped)."""

    text: str
    error: bool = False
    final: str | None = None  # set when the action ended the run with an answer
    hits: int | None = None  # for searches: the number of hits (drives the small-model aids)
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"read": [[start, end], ...]}


class Executor(Protocol):
    level: str

    def run(self, action: Action) -> ActionOutput: ...

    def close(self) -> None: ...


@dataclass
class Session:
    """Per-run state the executors share.

    ``variables`` is the L1 variable store (``set``/``get``/``store``); code levels may
    share it. ``sub_query(prompt) -> str`` calls the sub-model; ``emit(type, data)`` adds an
    event to the run's stream.
    """

    context: Context
    limits: Limits
    levels: tuple[str, ...]
    run_id: str
    variables: dict[str, Any] = field(default_factory=dict)
    config: Any = None
    path: str = "0"
    depth: int = 0
    emit: Callable[[str, dict[str, Any]], None] = lambda t, d: None
    sub_query: Callable[[str], str] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    #: spare slots for executors and delegation (e.g. a child-run factory)
    services: dict[str, Any] = field(default_factory=dict)


ExecutorFactory = Callable[[Session], Executor]
_EXECUTORS: dict[str, ExecutorFactory] = {}
_LAZY = {
    "l1": "contextbox.levels.commands",
    "l2": "contextbox.levels.sandbox",
    "l3": "contextbox.levels.native",
    "l4": "contextbox.levels.delegation",
}


def register_executor(level: str, factory: ExecutorFactory) -> None:
    _EXECUTORS[level] = factory


def executor_factory(level: str) -> ExecutorFactory | None:
    if level not in _EXECUTORS and level in _LAZY:
        try:
            importlib.import_module(_LAZY[level])
        except ImportError as e:  # level not built or its extra not installed
            log.debug("executor for %s unavailable: %s", level, e)
    return _EXECUTORS.get(level)

