"""Tasks, the suite registry, and where the shared data lives.

A suite is a function ``(n, seed, lengths, data_dir) -> list[Task]``; every generator draws
all randomness from ``random.Random`` seeded by the suite's seed, so the same arguments
give the same tasks (and the same contexts) byte for byte.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

log = logging.getLogger("contextbox")


@dataclass
class Task:
    """One benchmark question with its context and exact gold answer.

    ``kind`` names the scorer (:func:`contextbox.bench.scoring.score`). ``evidence`` is the
    character span ``(start, end)`` of the context that holds the answer when it is one
    place (needles), else ``None`` (aggregation needs the whole context).
    """

    suite: str
    id: str
    question: str
    context: str
    gold: Any
    kind: str
    length: int = 0
    depth: float | None = None
    evidence: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.length:
            self.length = len(self.context)

    def header(self) -> dict[str, Any]:
        """Everything but the context (for the JSONL record)."""
        d = asdict(self)
        d.pop("context")
        return d


class Lines(int):
    """A context length given in lines (``20000l``), not characters; only line-based suites take it."""

    def __repr__(self) -> str:
        return f"{int(self)}l"

    __str__ = __repr__


Generator = Callable[[int, int, list[int] | None, Path | None], list[Task]]
SUITES: dict[str, Generator] = {}
#: default context lengths (characters, or :class:`Lines`) per suite, when ``--lengths`` is not given
DEFAULT_LENGTHS: dict[str, list[int]] = {}
#: suites that take lengths in lines (``--lengths 20000l``)
LINE_SUITES: set[str] = set()
#: suites whose contexts are fixed by their data (``--lengths`` does not apply)
FIXED_SUITES: set[str] = set()


def register(name: str, lengths: list[int], lines: bool = False,
             fixed: bool = False) -> Callable[[Generator], Generator]:
    """Register a suite generator under ``name`` with its default lengths (``lines``: takes ``NNNl``;
    ``fixed``: ignores ``--lengths``)."""

    def deco(fn: Generator) -> Generator:
        SUITES[name] = fn
        DEFAULT_LENGTHS[name] = lengths
        if lines:
            LINE_SUITES.add(name)
        if fixed:
            FIXED_SUITES.add(name)
        return fn

    return deco


def check_lengths(suite: str, lengths: list[int] | None) -> None:
    """A one-line error when ``suite`` cannot take one of ``lengths`` (a line count for a character suite)."""
    bad = [x for x in lengths or [] if isinstance(x, Lines)]
    if bad and suite not in LINE_SUITES | FIXED_SUITES:
        raise UsageError(f"length {bad[0]!r} is in lines, which only {', '.join(sorted(LINE_SUITES))} take; "
                         f"give {suite} a length in characters (e.g. 32k)")


def _load_all() -> None:
    from . import detective, logs, needle, oolong, seed  # noqa: F401 - they register their suites


def suite_names() -> list[str]:
    _load_all()
    return list(SUITES)


def generate(suite: str, n: int = 3, seed: int = 0, lengths: list[int] | None = None,
             data_dir: str | Path | None = None) -> list[Task]:
    """The tasks of ``suite``: ``n`` per context length, reproducible from ``seed``."""
    _load_all()
    if suite not in SUITES:
        raise UsageError(f"unknown bench suite {suite!r}; use one of: {', '.join(SUITES)}")
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    check_lengths(suite, lengths)
    tasks = SUITES[suite](n, seed, lengths, Path(data_dir) if data_dir else None)
    log.info("bench: %s generated %d task(s)", suite, len(tasks))
    return tasks


def data_dir(explicit: Path | None = None) -> Path:
    """The shared data folder (``war_and_peace.txt``, ``trec/``, ``seed/``)."""
    here = Path(__file__).resolve().parents[4]
    cands = [explicit, Path(os.environ["CONTEXTBOX_DATA"]) if os.environ.get("CONTEXTBOX_DATA") else None,
             Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data", here / "shared" / "data"]
    for c in cands:
        if c is not None and (c / "trec").is_dir():
            return c
    raise UsageError("the shared data folder (with trec/ and war_and_peace.txt) was not found; "
                     "pass --data DIR or set CONTEXTBOX_DATA")


def read_novel(name: str, explicit: Path | None = None) -> str:
    """A novel from the data folder (War and Peace falls back to :func:`contextbox.demos.common.find_text`)."""
    try:
        path = data_dir(explicit) / name
    except UsageError:
        path = Path("/nonexistent")
    if not path.is_file() and name == "war_and_peace.txt":
        from ..demos.common import find_text

        path = find_text()
    if not path.is_file():
        raise UsageError(f"{name} not found in the data folder; pass --data DIR or set CONTEXTBOX_DATA")
    return path.read_text(encoding="utf-8", errors="replace")


def spread(n: int, lo: float = 0.05, hi: float = 0.95) -> list[float]:
    """``n`` depths spread evenly over ``[lo, hi]`` (the middle for ``n == 1``)."""
    if n == 1:
        return [round((lo + hi) / 2, 3)]
    return [round(lo + i * (hi - lo) / (n - 1), 3) for i in range(n)]


def cut_at_boundary(text: str, length: int) -> str:
    """``text`` cut to at most ``length`` characters, at a sentence or line end when one is near."""
    if len(text) <= length:
        return text
    head = text[:length]
    best = max(head.rfind(". "), head.rfind("\n"))
    return head[: best + 1] if best > length * 0.9 else head


def format_length(n: int) -> str:
    """The length as written on the command line: ``20000l`` for lines, else characters."""
    return repr(n) if isinstance(n, Lines) else str(int(n))


def parse_length(s: str) -> int:
    """``8k`` → 8000, ``4M`` → 4000000, ``12000`` → 12000, ``20000l`` → ``Lines(20000)``."""
    t = s.strip().lower()
    if t.endswith("l"):
        try:
            lines = int(t[:-1].replace("_", ""))
        except ValueError:
            raise UsageError(f"bad length {s!r}: a line count is written like 20000l") from None
        if lines < 100:
            raise UsageError(f"length {s!r} is too small (at least 100 lines)")
        return Lines(lines)
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise UsageError(f"bad length {s!r}: use e.g. 8k, 128k, 1M, a number of characters, "
                         "or 20000l (lines; logs only)") from None
    if v < 1000:
        raise UsageError(f"length {s!r} is too small (at least 1000 characters)")
    return int(v)
