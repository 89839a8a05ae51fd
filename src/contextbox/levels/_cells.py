"""What the two code levels (L2 sandbox, L3 native worker) share.

* :class:`OutputBuffer` — keeps the first ``cap`` characters a cell prints and counts the rest;
* :class:`CellState` — what ``FINAL`` / ``FINAL_VAR`` / ``SHOW_VARS`` asked for during a cell;
* :func:`host_functions` — the functions a cell can call that run in the host process:
  the L1 operations on the context, ``llm_query`` / ``llm_query_batched``, the typed
  ``llm_map`` and the answer helpers;
* small formatting helpers (the cut note, tracebacks, the variable listing).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import host_limits
from ..errors import CommandError

if TYPE_CHECKING:
    from ..executors import Session

log = logging.getLogger("contextbox")

DEFAULT_OUTPUT_CAP = 20_000
#: names the code levels define in a cell's namespace (hidden from SHOW_VARS)
HELPER_NAMES = (
    "context",
    "Document",
    "find",
    "regex",
    "count",
    "lines",
    "chunk",
    "slice_",
    "split",
    "records",
    "extract",
    "count_by",
    "top",
    "unique",
    "filter_",
    "stats",
    "sort_",
    "join",
    "pairs",
    "search",
    "llm_query",
    "llm_query_batched",
    "rlm_query",
    "rlm_query_batched",
    "llm_map",
    "FINAL",
    "FINAL_VAR",
    "SHOW_VARS",
)
#: the helpers a cell can call, as the L2 and L3 prompts describe them
HELPERS_DOC = """\
find(needle), regex(pattern, flags=""), count(pattern) (both ignore case unless case_sensitive=True), \
lines(start, end), \
chunk(size, overlap=0), slice_(start, end), split(delimiter), \
search(query, k=10) (lines ranked by shared words: [{line, text, score, ...}]) — on the context, or on another str \
with text=...; tables as lists of dict rows, computed exactly: records(by="line"), extract(pattern=None) \
(a column per named group; no pattern: automatic fields), count_by(rows, field), top(rows, field, k=10), \
unique(rows, field), filter_(rows, where), stats(rows, field), sort_(rows, field, desc=False), \
join(a, b, key=None, pairs=False), \
pairs(rows, field, at_least=1) (every [smaller, larger] pair of values in >= at_least rows); llm_query(prompt) -> str asks a sub-model; llm_query_batched(prompts) -> list[str]; \
llm_map(prompt, records, choices=[...]) -> a label per record (None: failed); \
FINAL(answer) ends the run with that answer; FINAL_VAR("name") answers with a variable's value; \
SHOW_VARS() lists your variables."""
_TB_MAX_LINES = 30
_TB_MAX_CHARS = 3000


def output_cap(session: Session) -> int:
    """The per-cell cap on printed characters (services ``max_code_output_chars``)."""
    try:
        return max(200, int(session.services.get("max_code_output_chars", DEFAULT_OUTPUT_CAP)))
    except (TypeError, ValueError):
        return DEFAULT_OUTPUT_CAP


def cut_note(cut: int) -> str:
    """The line appended to output that was cut."""
    return f"[… {cut:,} more characters cut; print less, or slice what you print]"


class OutputBuffer:
    """Collects printed text up to ``cap`` characters and counts what did not fit."""

    def __init__(self, cap: int):
        self.cap = cap
        self.parts: list[str] = []
        self.kept = 0
        self.cut = 0

    def write(self, text: str) -> None:
        if not text:
            return
        room = self.cap - self.kept
        if room <= 0:
            self.cut += len(text)
            return
        if len(text) > room:
            self.parts.append(text[:room])
            self.kept += room
            self.cut += len(text) - room
        else:
            self.parts.append(text)
            self.kept += len(text)

    def callback(self, stream: str, text: str) -> None:
        """A ``print_callback`` for pydantic-monty."""
        self.write(text)

    def add_cut(self, n: int) -> None:
        self.cut += max(0, int(n))

    def text(self) -> str:
        out = "".join(self.parts)
        if self.cut:
            out += ("" if not out or out.endswith("\n") else "\n") + cut_note(self.cut)
        return out


@dataclass
class CellState:
    """What the answer helpers recorded while one cell ran."""

    final: str | None = None
    final_var: str | None = None
    show_vars: bool = False
    notes: list[str] = field(default_factory=list)


def to_answer(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def check_var_name(name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise CommandError(
            f"FINAL_VAR takes the name of a variable as a string, e.g. FINAL_VAR('answer'), not {name!r}"
        )
    return name


def format_vars(pairs: Iterable[tuple[str, str]]) -> str:
    """``SHOW_VARS()`` output from (name, type name) pairs, user variables only."""
    items = [(k, t) for k, t in pairs if not k.startswith("_") and k not in HELPER_NAMES]
    if not items:
        return "variables: (none yet)"
    return "variables: " + ", ".join(f"{k}: {t}" for k, t in sorted(items))


def shorten_traceback(tb: str) -> str:
    """Keep a traceback short: the first frames, the last frames and the error line."""
    lines = tb.rstrip("\n").split("\n")
    if len(lines) > _TB_MAX_LINES:
        head, tail = lines[:7], lines[-(_TB_MAX_LINES - 8) :]
        lines = head + [f"  [… {len(lines) - len(head) - len(tail)} traceback lines cut]"] + tail
    out = "\n".join(lines)
    if len(out) > _TB_MAX_CHARS:
        out = out[:1000] + "\n  [… traceback cut]\n" + out[-(_TB_MAX_CHARS - 1100) :]
    return out


def compose(output: str, error_text: str | None, notes: list[str]) -> str:
    """Printed output, then the error (if any), then notes from the executor."""
    parts = [output.rstrip("\n")] if output else []
    if error_text:
        parts.append(error_text.rstrip("\n"))
    parts += notes
    text = "\n".join(p for p in parts if p)
    return text if text else "(no output; print() what you want to see)"


def _opt_text(session: Session, text: Any) -> str:
    if text is None:
        return session.context.text
    if not isinstance(text, str):
        raise CommandError(f"text= must be a str, not {type(text).__name__}")
    g = host_limits.current()
    if g is not None:
        g.check_input(text, g.what)
    return text


def bounded(session: Session, fns: dict[str, Callable[..., Any]],
            deadline: float | None = None) -> dict[str, Callable[..., Any]]:
    """``fns`` wrapped so that each call runs under a :class:`~contextbox.host_limits.HostGuard`: the run's
    ``[limits]`` on input, result and hits, ``deadline`` (the cell's end) and the run's timeout and cancel flag."""

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            guard = host_limits.guard_for(session, deadline, what=name)
            with host_limits.guarded(guard):
                return guard.check_result(fn(*args, **kwargs), name)

        call.__name__ = getattr(fn, "__name__", name)
        return call

    return {name: wrap(name, fn) for name, fn in fns.items()}


def host_functions(session: Session, state: CellState | None = None,
                   deadline: float | None = None) -> dict[str, Callable[..., Any]]:
    """The functions a cell calls that run in the host: L1 operations, sub-calls, and with ``state`` the
    answer helpers (L2's; L3's worker keeps its own).

    The L1 operations work on the whole context unless ``text=`` names another string; each
    call is bounded (:func:`bounded`): ``deadline`` is the end of the cell that calls it.
    """
    from .. import ops

    def find(needle: str, case_sensitive: bool = False, max: int | None = 100, *, text: str | None = None) -> Any:
        return ops.find(_opt_text(session, text), needle, case_sensitive=case_sensitive, max=max)

    def regex(pattern: str, flags: Any = "", max: int | None = 100, *, text: str | None = None) -> Any:
        return ops.regex(_opt_text(session, text), pattern, flags=flags, max=max,
                         timeout_s=getattr(session.config, "regex_timeout_s", None))

    def count(pattern: str | None = None, what: str | None = None, case_sensitive: bool = False, *,
              text: str | None = None) -> Any:
        return ops.count(_opt_text(session, text), pattern, what=what, case_sensitive=case_sensitive)

    def lines(start: int | None = 0, end: int | None = None, *, text: str | None = None) -> list[str]:
        if text is not None:
            return ops.lines(_opt_text(session, text), start, end)
        ctx = session.context  # the context's line index: only the lines asked for are cut out
        a, b, _ = slice(start, end).indices(ctx.n_lines)
        piece = ctx.text[ctx.line_start(a) : ctx.line_start(max(a, b))]
        got = piece.split("\n") if piece else []
        if piece.endswith("\n"):
            got.pop()
        return got

    def chunk(size: int, overlap: int = 0, *, text: str | None = None) -> list[str]:
        return ops.chunk(_opt_text(session, text), size, overlap)

    def slice_(start: int | None = 0, end: int | None = None, *, text: str | None = None) -> str:
        return ops.slice_text(_opt_text(session, text), start, end)

    def split(delimiter: str, *, text: str | None = None) -> list[str]:
        return ops.split(_opt_text(session, text), delimiter)

    def search(query: str, k: int = 10, unit: str = "line", text: str | None = None) -> list[dict[str, Any]]:
        from ..search import search as ranked

        return ranked(session.context if text is None else _opt_text(session, text), query, k, unit)

    fns: dict[str, Callable[..., Any]] = {
        "find": find,
        "regex": regex,
        "count": count,
        "lines": lines,
        "chunk": chunk,
        "slice_": slice_,
        "split": split,
        "search": search,
    }
    fns.update(table_functions(session))
    fns = bounded(session, fns, deadline)
    if state is not None:  # L2 runs its answer helpers in the host; L3 in the worker
        fns.update(answer_functions(state, host_limits.max_answer_chars(session)))
    fns.update(query_functions(session))
    return fns


#: a cell's regex over a big text may run this many characters per second before it is stopped
_SCAN_RATE = 10_000_000


def table_functions(session: Session) -> dict[str, Callable[..., Any]]:
    """The table operations for code cells: tables cross the boundary as lists of dict rows.

    ``records``/``extract`` read the context unless ``text=`` (a str) or, for ``extract``,
    ``table=`` (rows with a ``text`` column) is given."""
    from .. import ops, table_ops, table_records
    from ..table import Table

    def _source(text: Any) -> Any:
        return session.context if text is None else _opt_text(session, text)

    def _guard(fn: Callable[[], Any], chars: int, what: str) -> Any:
        return ops.run_guarded(fn, max(ops.REGEX_TIMEOUT_S, chars / _SCAN_RATE), what)

    def records(by: str = "line", regex: bool = False, *, text: str | None = None) -> list[dict[str, Any]]:
        src = _source(text)
        g = host_limits.current()
        if g is not None and by == "line" and not regex:  # one row per line: counted before it is built
            g.check_items(src.n_lines if text is None else ops.n_lines(src), "records",
                          "records of a part: records(text=...)")
        run = lambda: table_records.records(src, by, regex)  # noqa: E731
        return (_guard(run, len(src.text if text is None else src), "records") if regex else run()).to_rows()

    def extract(pattern: str | None = None, flags: Any = "", *, text: str | None = None,
                table: Any = None) -> list[dict[str, Any]]:
        src = Table.coerce(table, "extract") if table is not None else _source(text)
        run = lambda: table_records.extract(src, pattern, flags)  # noqa: E731
        size = len(session.context.text) if text is None else len(str(text))
        return (_guard(run, size, f"extract {pattern!r}") if pattern else run()).to_rows()

    def count_by(table: Any, field: Any) -> list[dict[str, Any]]:
        return table_ops.count_by(table, field).to_rows()

    def top(table: Any, field: Any, k: int = 10) -> list[dict[str, Any]]:
        return table_ops.top(table, field, k).to_rows()

    def unique(table: Any, field: str) -> list[Any]:
        return table_ops.unique(table, field).column(field)

    def filter_(table: Any, where: Any) -> list[dict[str, Any]]:
        return table_ops.filter_rows(table, where).to_rows()

    def stats(table: Any, field: str, method: str = "nearest") -> dict[str, Any]:
        return table_ops.stats(table, field, method)

    def sort_(table: Any, field: str, desc: bool = False) -> list[dict[str, Any]]:
        return table_ops.sort_rows(table, field, desc).to_rows()

    def join(a: Any, b: Any, key: str | None = None, pairs: bool = False) -> list[dict[str, Any]]:
        return table_ops.join(a, b, key, pairs).to_rows()

    def pairs(table: Any, field: str, at_least: int = 1) -> list[list[Any]]:
        from .. import table_pairs

        out = table_pairs.pairs(table, field, at_least)
        return [list(r) for r in zip(*out.cols.values(), strict=True)]

    return {"records": records, "extract": extract, "count_by": count_by, "top": top, "unique": unique,
            "filter_": filter_, "stats": stats, "sort_": sort_, "join": join, "pairs": pairs}


def answer_functions(state: CellState, max_answer: int = host_limits.DEFAULT_MAX_ANSWER_CHARS,
                     ) -> dict[str, Callable[..., Any]]:
    """FINAL / FINAL_VAR / SHOW_VARS, recording into ``state`` (resolved after the cell).

    ``FINAL`` refuses an answer over ``max_answer`` characters where it is called."""

    def FINAL(answer: Any) -> None:  # noqa: N802 - the RLM name
        state.final = host_limits.check_answer(to_answer(answer), max_answer)
        state.final_var = None

    def FINAL_VAR(name: Any) -> None:  # noqa: N802
        state.final_var = check_var_name(name)
        state.final = None

    def SHOW_VARS() -> None:  # noqa: N802
        state.show_vars = True

    return {"FINAL": FINAL, "FINAL_VAR": FINAL_VAR, "SHOW_VARS": SHOW_VARS}


def query_functions(session: Session) -> dict[str, Callable[..., Any]]:
    """``llm_query`` and ``llm_query_batched`` bound to the session's sub-model."""

    def llm_query(prompt: Any) -> str:
        if session.sub_query is None:
            raise CommandError(
                "llm_query is not available in this run: sub-model calls are not enabled for "
                "this set of levels; work with the context directly"
            )
        if not isinstance(prompt, str):
            raise CommandError(f"llm_query(prompt) takes a str, not {type(prompt).__name__}")
        return to_answer(session.sub_query(prompt))

    def llm_query_batched(prompts: Any) -> list[str]:
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
            raise CommandError("llm_query_batched(prompts) takes a list of str")
        batched = session.services.get("llm_query_batched")
        if callable(batched):
            if session.sub_query is None:
                llm_query("")  # raises the "not enabled" error
            for p in prompts:
                if not isinstance(p, str):
                    raise CommandError(f"llm_query_batched: every prompt must be a str, not {type(p).__name__}")
            return [to_answer(r) for r in batched(list(prompts))]
        return [llm_query(p) for p in prompts]

    def _service(name: str) -> Callable[..., Any]:
        fn = session.services.get(name)
        if not callable(fn):
            raise CommandError(f"{name} is not available in this run: allow delegation with --levels ...,l4")
        return fn

    def rlm_query(prompt: Any, context: Any = None) -> str:
        if not isinstance(prompt, str):
            raise CommandError(f"rlm_query(prompt, context=None) takes a str prompt, not {type(prompt).__name__}")
        return to_answer(_service("rlm_query")(prompt, context))

    def rlm_query_batched(prompts: Any, context: Any = None) -> list[str]:
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
            raise CommandError("rlm_query_batched(prompts, context=None) takes a list of str")
        return [to_answer(r) for r in _service("rlm_query_batched")([str(p) for p in prompts], context)]

    def llm_map(prompt: Any, records: Any, choices: Any = None, schema: Any = None, per_call: Any = None,
                field: Any = None) -> list[Any]:
        """Typed map: one validated value per record (a label, or JSON matching ``schema``); None where failed."""
        return list(_service("llm_map")(prompt, records, choices, schema, per_call, field))

    return {"llm_query": llm_query, "llm_query_batched": llm_query_batched, "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched, "llm_map": llm_map}


_PY_INPUT = re.compile(r"<python-input-(\d+)>")


def rename_cells(tb: str, names: dict[int, str]) -> str:
    """Replace monty's ``<python-input-N>`` file names by the model's cell names."""
    return _PY_INPUT.sub(lambda m: names.get(int(m.group(1)), "<cell>"), tb)
