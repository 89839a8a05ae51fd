"""Exact table operations: the engine aggregates, the model only says what to aggregate.

Pure functions (no model, no engine) on a ``str``, a :class:`Context` or a :class:`Table` (or a
list of dict rows). The L1 commands (``table_commands``) and the code-cell helpers call these.

* ``records``: cut text into records (lines, blank-line paragraphs, a literal delimiter, or a
  regex that starts each record) → columns ``text``, ``doc``, ``line``.
* ``extract``: one row per line (or record) where a regex matches, columns its named groups;
  without a pattern, automatic fields (:mod:`contextbox.auto_fields`).
* ``count_by`` / ``top`` / ``unique`` / ``filter_rows`` / ``stats`` / ``sort_rows`` / ``join``.

Positions: ``doc`` is the document's path, ``line`` the 0-based line in the context (for a
variable's text: in that text). Missing values are ``None`` (shown as ``(missing)``).

Numbers: ``stats`` and the comparisons ``gt``/``ge``/``lt``/``le`` read the *first number* in a
value (``"123ms"`` → 123, ``"1,234"`` → 1234, ``"-4.5"`` → -4.5). ``eq``/``ne``/``in`` against a
number and ``sort`` read a value as a number only when it *is* one, optionally with a unit
(``"123ms"``, ``" 42 "``; not ``"2024-03-01"``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import auto_fields
from .context import Context
from .errors import CommandError
from .host_limits import checkpoint
from .ops import compile_regex, parse_flags
from .table import Table

#: ``join`` refuses to build more rows than this
MAX_JOIN_ROWS = 1_000_000
#: how many distinct values ``unique`` shows
UNIQUE_SAMPLE = 20
MISSING = "(missing)"
PERCENTILES = (50, 90, 95, 99)
METHODS = ("nearest", "inclusive", "exclusive")
_LINE_MODES = {"line": "line", "lines": "line", "blank_line": "blank", "blank_lines": "blank", "paragraph": "blank"}
_BLANK = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")
_BLOCK = 16 << 20  # characters per block when scanning lines of a big text

_NUM_CORE = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+"
_FIRST_NUM = re.compile(rf"(?<![\w.])(?:{_NUM_CORE})")
_WHOLE_NUM = re.compile(rf"\s*\+?({_NUM_CORE})\s*(?:[A-Za-zµ%]+)?\s*")


# ----------------------------------------------------------------------------- numbers
def _num_text(s: str) -> int | float:
    s = s.replace(",", "")
    if "." in s or "e" in s or "E" in s:
        f = float(s)
        return f
    return int(s)


def to_number(value: Any) -> int | float | None:
    """The first number in a value (``"123ms"`` → 123); numbers as they are; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    m = _FIRST_NUM.search(value if isinstance(value, str) else str(value))
    return _num_text(m.group(0)) if m else None


def as_number(value: Any) -> int | float | None:
    """A value that *is* a number, optionally with a unit (``"123ms"``, ``"1,234"``); else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    if not isinstance(value, str):
        return None
    m = _WHOLE_NUM.fullmatch(value)
    return _num_text(m.group(1)) if m else None


def _exact(x: float, ints: bool) -> int | float:
    """An int when the inputs were ints and ``x`` is integral."""
    return int(x) if ints and isinstance(x, float) and x.is_integer() else x


def order_key(value: Any) -> tuple[Any, ...]:
    """A total order over mixed values: numbers, then text (code-point order), then missing."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, tuple):
        return (1, tuple(order_key(v) for v in value))
    return (1, value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- sources
def as_table(value: Any, what: str) -> Table:
    return Table.coerce(value, what)


def _as_context(source: Any, what: str) -> Context:
    if isinstance(source, Context):
        return source
    if isinstance(source, str):
        return Context.from_value(source)
    raise CommandError(f"{what} works on text (a str or the context), not a {type(source).__name__}")


def _segments(ctx: Context) -> Iterator[tuple[str, int, int, int]]:
    """(document path, start, end, first line) of each document of a context."""
    if len(ctx.documents) > 1:
        for d in ctx.documents:
            yield d.path, d.start, d.end, ctx.line_of(d.start)
    else:
        path = ctx.documents[0].path if ctx.documents else "<text>"
        yield path, 0, len(ctx.text), 0


def _col(t: Table, name: str) -> list[Any]:
    """A column; an empty table from an empty list of rows has every column, empty."""
    return [] if t.n == 0 and not t.cols else t.column(name)


def _fields(field: Any, what: str) -> list[str]:
    names = [field] if isinstance(field, str) else field
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(f, str) and f for f in names):
        raise CommandError(f"{what} needs 'field': a column name (or a list of column names)")
    return list(names)


# ----------------------------------------------------------------------------- records
def records(source: str | Context, by: str = "line", regex: bool = False) -> Table:
    """Cut text into records: columns ``text``, ``doc``, ``line`` (0-based first line of the record).

    ``by``: ``"line"`` (each line; the text kept as is but for a trailing ``\\r``),
    ``"blank_line"`` (paragraphs separated by blank lines), any other string is a literal
    delimiter; with ``regex=True`` ``by`` is a Python regex (multi-line: ``^`` is a line start)
    and a new record starts at each match (text before the first match is a record too).
    Paragraph and delimiter records are stripped of surrounding whitespace. Empty records
    are skipped and counted in ``meta["empty_skipped"]``. Multi-document contexts are cut
    per document.
    """
    ctx = _as_context(source, "records")
    if not isinstance(by, str) or by == "":
        raise CommandError('records needs \'by\': "line", "blank_line", a delimiter, or a regex with regex=true')
    mode = "regex" if regex else _LINE_MODES.get(by, "literal")
    rx = compile_regex(by, re.MULTILINE) if mode == "regex" else None
    texts: list[str] = []
    docs: list[str] = []
    lines: list[int] = []
    empty = 0
    text = ctx.text
    for path, start, end, base in _segments(ctx):
        if mode == "line":
            empty += _line_records(text, start, end, base, path, texts, docs, lines)
            continue
        seg = text[start:end]
        if mode == "blank":
            cuts = [(m.start(), m.end()) for m in _BLANK.finditer(seg)]
        elif mode == "literal":
            cuts, i = [], seg.find(by)
            while i >= 0:
                cuts.append((i, i + len(by)))
                i = seg.find(by, i + len(by))
        else:
            assert rx is not None
            cuts = [(m.start(), m.start()) for m in rx.finditer(seg)]
            if cuts and cuts[0][0] == 0:
                cuts = cuts[1:]  # the first record starts at the very beginning
        spans, pos = [], 0
        for a, b in cuts:
            spans.append((pos, a))
            pos = b
        spans.append((pos, len(seg)))
        empty += _span_records(seg, spans, base, path, texts, docs, lines)
    meta = {"records": len(texts), "empty_skipped": empty}
    return Table({"text": texts, "doc": docs, "line": lines}, meta=meta)


def _line_records(text: str, start: int, end: int, base: int, path: str,
                  texts: list[str], docs: list[str], lines: list[int]) -> int:
    empty = 0
    for block_start, block_line, block in _line_blocks(text, start, end, base):
        del block_start
        for i, ln in enumerate(block):
            if ln.endswith("\r"):
                ln = ln[:-1]
            if not ln.strip():
                empty += 1
                continue
            texts.append(ln)
            docs.append(path)
            lines.append(block_line + i)
    return empty


def _line_blocks(text: str, start: int, end: int, base: int) -> Iterator[tuple[int, int, list[str]]]:
    """The lines of ``text[start:end]`` in blocks of about ``_BLOCK`` characters:
    (block start offset, its first line number, its lines). A trailing newline adds no line."""
    pos, line = start, base
    while pos < end:
        checkpoint()  # a host call's deadline / the run's cancel
        stop = _block_end(text, pos, end)
        block = text[pos:stop].split("\n")
        if block[-1] == "":
            block.pop()
        yield pos, line, block
        line += len(block)
        pos = stop


def _span_records(seg: str, spans: list[tuple[int, int]], base: int, path: str,
                  texts: list[str], docs: list[str], lines: list[int]) -> int:
    empty, at, line = 0, 0, base
    for a, b in spans:
        piece = seg[a:b]
        body = piece.strip()
        if not body:
            empty += 1
            continue
        lead = a + len(piece) - len(piece.lstrip())
        line += seg.count("\n", at, lead)
        at = lead
        texts.append(body)
        docs.append(path)
        lines.append(line)
    return empty


# ----------------------------------------------------------------------------- extract
def extract(source: str | Context | Table | list[Any], pattern: str | None = None, flags: Any = "") -> Table:
    """One row per line (or per record of a table with a ``text`` column) where ``pattern`` matches.

    Columns: the pattern's named groups (``(?P<type>\\w+)``), or ``match`` (the whole match,
    plus ``g1``, ``g2``… for unnamed groups) — then ``doc`` and ``line``. Only the first match
    of a line counts; a match may not run past its line's end (one that does is searched again
    within its line). Lines without a match are counted in ``meta["unmatched"]``.
    Without a pattern: automatic fields (see :mod:`contextbox.auto_fields`).
    """
    table_mode = isinstance(source, (Table, list))
    if pattern is None or pattern == "":
        return _extract_auto_table(as_table(source, "extract")) if table_mode else _extract_auto(
            _as_context(source, "extract"))
    rx = compile_regex(pattern, parse_flags(flags) | re.MULTILINE)
    names = sorted(rx.groupindex, key=rx.groupindex.__getitem__)
    for bad in ("doc", "line"):
        if bad in names:
            raise CommandError(f"the group name {bad!r} is taken by the position column {bad!r}; "
                               f"rename the group, e.g. (?P<{bad}_value>...)")
    if names:
        getters: list[Any] = names
        cols = list(names)
    else:
        getters = list(range(rx.groups + 1))
        cols = ["match"] + [f"g{i}" for i in range(1, rx.groups + 1)]
    if table_mode:
        return _extract_table(as_table(source, "extract"), rx, getters, cols)
    ctx = _as_context(source, "extract")
    out: list[list[Any]] = [[] for _ in cols]
    docs: list[str] = []
    lines: list[int] = []
    total = 0
    for path, start, end, base in _segments(ctx):
        total += _scan(ctx.text, start, end, base, rx, getters, out, lines)
        docs.extend([path] * (len(lines) - len(docs)))
    cols_d = dict(zip(cols, out, strict=True))
    cols_d.update({"doc": docs, "line": lines})
    return Table(cols_d, meta={"unmatched": total - len(lines)})


def _scan(text: str, start: int, end: int, base: int, rx: re.Pattern[str], getters: list[Any],
          out: list[list[Any]], lines: list[int]) -> int:
    """Append the first match of each line of ``text[start:end]`` to ``out``/``lines``;
    return the number of lines there."""
    one = len(getters) == 1
    g0 = getters[0]
    col0 = out[0]
    line, pos, last, scan_from = base, start, -1, start
    count = text.count
    find = text.find
    rounds = 0
    while scan_from <= end:
        rounds += 1
        if not rounds & 1023:
            checkpoint()
        restart = -1
        for m in rx.finditer(text, scan_from, end):
            s = m.start()
            if s == end and (end == start or text[end - 1] == "\n"):
                break  # the end of the text after a final newline is no line
            line += count("\n", pos, s)
            pos = s
            if line == last:  # the line has its row: go on at the next line
                nl = find("\n", s, end)
                restart = end + 1 if nl < 0 else nl + 1
                break
            e = m.end()
            if e > s and find("\n", s, e) >= 0:  # ran past the line's end: search within the line
                ls = text.rfind("\n", start, s) + 1
                nl = find("\n", s, end)
                le = end if nl < 0 else nl
                m = rx.search(text[ls:le])  # type: ignore[assignment]
                restart = le + 1
                if m is None:
                    break
            if one:
                col0.append(m.group(g0))
            else:
                for c, g in zip(out, getters, strict=True):
                    c.append(m.group(g))
            lines.append(line)
            last = line
            if restart >= 0:
                break
        if restart < 0:
            break
        if restart <= end:
            line += count("\n", pos, restart)
            pos = restart
        scan_from = restart
    if pos < end:
        line += count("\n", pos, end)
    return line - base + (1 if end > start and text[end - 1] != "\n" else 0)


def _extract_table(t: Table, rx: re.Pattern[str], getters: list[Any], cols: list[str]) -> Table:
    texts = _col(t, "text") if "text" in t.cols else _no_text(t)
    docs_in = t.cols.get("doc", [None] * t.n)
    lines_in = t.cols.get("line", list(range(t.n)))
    out: list[list[Any]] = [[] for _ in cols]
    docs: list[Any] = []
    lines: list[Any] = []
    for i, s in enumerate(texts):
        m = rx.search(s) if isinstance(s, str) else None
        if m is None:
            continue
        for c, g in zip(out, getters, strict=True):
            c.append(m.group(g))
        docs.append(docs_in[i])
        lines.append(lines_in[i])
    d = dict(zip(cols, out, strict=True))
    d.update({"doc": docs, "line": lines})
    return Table(d, meta={"unmatched": t.n - len(lines)})


def _no_text(t: Table) -> list[Any]:
    raise CommandError("extract on a table needs a 'text' column (a table from records); "
                       f"this table's columns are: {', '.join(t.columns) or '(none)'}")


def _extract_auto(ctx: Context) -> Table:
    acc, unmatched, tpl = auto_fields.Columns(), 0, auto_fields.Templates()
    text = ctx.text
    for path, start, end, base in _segments(ctx):
        line, pos = base, start
        while pos < end:
            checkpoint()
            stop = _block_end(text, pos, end)
            if tpl.rx is None and pos == start:
                tpl.learn(text[pos:min(stop, pos + 400_000)].split("\n")[:auto_fields.SHAPE_MIN * 125])
            line, um = tpl.scan(text, pos, stop, line, path, acc)
            unmatched += um
            pos = stop
    return Table(acc.columns(), meta={"unmatched": unmatched, "fields": "automatic"})


def _block_end(text: str, pos: int, end: int) -> int:
    """Where a block of about ``_BLOCK`` characters from ``pos`` ends: after a newline, or at ``end``."""
    stop = min(end, pos + _BLOCK)
    if stop < end:
        nl = text.find("\n", stop, end)
        stop = end if nl < 0 else nl + 1
    return stop


def _extract_auto_table(t: Table) -> Table:
    texts = _col(t, "text") if "text" in t.cols else _no_text(t)
    docs = t.cols.get("doc", [None] * t.n)
    lines = t.cols.get("line", list(range(t.n)))
    acc, unmatched = auto_fields.Columns(), 0
    for i, s in enumerate(texts):
        row = auto_fields.parse_line(s) if isinstance(s, str) else {}
        if row:
            acc.add(row.keys(), row.values(), docs[i], lines[i])
        else:
            unmatched += 1
    return Table(acc.columns(), meta={"unmatched": unmatched, "fields": "automatic"})


# ----------------------------------------------------------------------------- aggregation
def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, dict, set)) else v


def count_by(table: Table | list[Any], field: str | Sequence[str]) -> Table:
    """Rows per distinct value of ``field`` (or per combination of several fields): columns
    ``field…``, ``count``; most frequent first, ties by value (numbers, then text). Missing values
    (None) are a bucket of their own, always last: "the most frequent value" is never "no value". ``meta``: ``total`` rows, ``distinct`` values."""
    t = as_table(table, "count_by")
    fields = _fields(field, "count_by")
    cols = [_col(t, f) for f in fields]
    keys: Any = cols[0] if len(cols) == 1 else zip(*cols, strict=True)
    try:
        counter = Counter(keys)
    except TypeError:  # lists or dicts in a column (from JSON lines)
        counter = Counter(_hashable(k) if len(cols) == 1 else tuple(map(_hashable, k))
                          for k in (cols[0] if len(cols) == 1 else zip(*cols, strict=True)))
    def missing(k: Any) -> bool:
        return k is None or (len(cols) > 1 and any(x is None for x in k))

    items = sorted(counter.items(), key=lambda kv: (missing(kv[0]), -kv[1], order_key(kv[0])))
    out: dict[str, list[Any]] = {}
    if len(fields) == 1:
        out[fields[0]] = [k for k, _ in items]
    else:
        for j, f in enumerate(fields):
            out[f] = [k[j] for k, _ in items]
    out["n" if "count" in fields else "count"] = [c for _, c in items]
    return Table(out, meta={"total": t.n, "distinct": len(items), "_kind": "counts", "_fields": fields})


_WORDS = re.compile(r"\w+(?:'\w+)?", re.UNICODE)


def word_counts(table: Table | list[Any], field: str, stop: Sequence[str] | None = None) -> Table:
    """How often each word occurs in ``field`` over all rows (case-folded; ``stop`` words left out):
    a count table ``word``, ``count``, most frequent first (ties by word). ``meta``: ``total`` words
    counted, ``distinct`` words, ``rows``."""
    t = as_table(table, "word_counts")
    col = _col(t, field)
    if stop is not None and (isinstance(stop, str) or not all(isinstance(w, str) for w in stop)):
        raise CommandError("word_counts 'stop' must be a list of words, e.g. [\"the\", \"a\"]")
    skip = {w.casefold() for w in (stop or [])}
    counter: Counter[str] = Counter()
    for v in col:
        if v is None:
            continue
        counter.update(w for w in _WORDS.findall(str(v).casefold()) if w not in skip)
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return Table({"word": [w for w, _ in items], "count": [c for _, c in items]},
                 meta={"total": sum(counter.values()), "distinct": len(items), "rows": t.n, "_kind": "counts",
                       "_fields": ["word"]})


def top(table: Table | list[Any], field: str | Sequence[str], k: int = 10) -> Table:
    """The ``k`` most frequent values of ``field`` with their counts (the head of ``count_by``)."""
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise CommandError(f"top needs 'k', a positive number of values, not {k!r}")
    counts = count_by(table, field)
    out = counts.head(k)
    out.meta["shown"] = min(k, counts.n)
    return out


def unique(table: Table | list[Any], field: str) -> Table:
    """The distinct values of ``field`` in first-seen order: a one-column table.
    ``meta``: ``distinct`` (how many), ``rows`` (of the input), ``sample`` (the first 20)."""
    t = as_table(table, "unique")
    name = _fields(field, "unique")
    if len(name) != 1:
        raise CommandError("unique takes one field; use count_by for combinations of fields")
    col = _col(t, name[0])
    try:
        values = list(dict.fromkeys(col))
    except TypeError:
        seen: dict[Any, Any] = {}
        for v in col:
            seen.setdefault(_hashable(v), v)
        values = list(seen.values())
    meta = {"distinct": len(values), "rows": t.n, "sample": values[:UNIQUE_SAMPLE], "_kind": "unique"}
    return Table({name[0]: values}, meta=meta)


# ----------------------------------------------------------------------------- filter
OPS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "regex", "startswith")
_ALIASES = {"==": "eq", "=": "eq", "!=": "ne", "<>": "ne", ">": "gt", ">=": "ge", "<": "lt", "<=": "le",
            "not in": "not_in", "nin": "not_in", "equals": "eq", "match": "regex", "starts_with": "startswith"}
_EXPR = re.compile(r"\s*([^\s=!<>]+)\s*(==|!=|<>|>=|<=|=|>|<)\s*(.*?)\s*")


def _expr_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.strip("'")


def parse_where(where: Any) -> list[tuple[str, str, Any]]:
    """``{field: value | [values] | {op: value}}`` or ``"count >= 5 and type == DiskFull"`` →
    a list of (field, op, value), all of which must hold."""
    conds: list[tuple[str, str, Any]] = []
    if isinstance(where, str):
        for part in re.split(r"\s+and\s+|\s*&&\s*", where.strip(), flags=re.I):
            m = _EXPR.fullmatch(part)
            if not m:
                raise CommandError(f"cannot read the condition {part!r}; write e.g. \"count >= 5\" or "
                                   "{\"field\": {\"ge\": 5}}")
            conds.append((m.group(1), _ALIASES[m.group(2)], _expr_value(m.group(3))))
        return conds
    if not isinstance(where, dict) or not where:
        raise CommandError('filter needs \'where\': {"field": value} or {"field": {"op": value}}; '
                           f"ops: {', '.join(OPS)}")
    for name, spec in where.items():
        if isinstance(spec, dict):
            if not spec:
                raise CommandError(f"filter: the condition on {name!r} is empty; ops: {', '.join(OPS)}")
            for op, value in spec.items():
                key = _ALIASES.get(str(op).strip().lower(), str(op).strip().lower())
                if key not in OPS:
                    raise CommandError(f"filter: unknown op {op!r} for {name!r}; ops: {', '.join(OPS)}")
                conds.append((str(name), key, value))
        elif isinstance(spec, list):
            conds.append((str(name), "in", spec))
        else:
            conds.append((str(name), "eq", spec))
    return conds


def _equals(cell: Any, value: Any) -> bool:
    if cell is None or value is None:
        return cell is None and (value is None or value == MISSING)
    if cell == value and type(cell) is type(value):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return as_number(cell) == value
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return as_number(value) == cell
    return str(cell) == str(value)


#: the date formats filter compares as dates (the value and the cells may differ in format)
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%b %d, %Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y", "%d/%b/%Y", "%b %d %Y",
                "%B %d %Y", "%d.%m.%Y")


def as_date(value: Any) -> _dt.date | None:
    """A date from a cell or a filter value (``2023-03-03``, ``Mar 03, 2023``, ``3 March 2023``, ...; a
    leading ISO date of a timestamp too), else None. ``03/04/2023`` is ambiguous and never a date here."""
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if not isinstance(value, str) or not 6 <= len(value.strip()) <= 40 or not any(ch.isdigit() for ch in value):
        return None
    v = value.strip()
    m = _ISO_DAY.match(v)
    if m:
        v = m.group(0)
    for fmt in DATE_FORMATS:
        try:
            return _dt.datetime.strptime(v, fmt).date()
        except ValueError:
            continue
    return None


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(?=$|[T ])")


def _predicate(op: str, value: Any, name: str) -> Callable[[Any], bool]:
    if op in ("eq", "ne"):
        return (lambda c: _equals(c, value)) if op == "eq" else (lambda c: not _equals(c, value))
    if op in ("in", "not_in"):
        if not isinstance(value, list):
            raise CommandError(f"filter: {op!r} on {name!r} needs a list of values")
        return (lambda c: any(_equals(c, v) for v in value)) if op == "in" else (
            lambda c: not any(_equals(c, v) for v in value))
    if op == "contains":
        low = str(value).lower()
        return lambda c: c is not None and low in str(c).lower()
    if op == "startswith":
        pre = str(value)
        return lambda c: c is not None and str(c).startswith(pre)
    if op == "regex":
        rx = compile_regex(str(value))
        return lambda c: c is not None and rx.search(str(c)) is not None
    cmp = {"gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}[op]
    day = as_date(value)
    if day is not None:  # "before Mar 03, 2023": compare as dates whatever the cells' format
        def dated(c: Any) -> bool:
            d = as_date(c)
            return d is not None and cmp(d, day)
        return dated
    target = as_number(value)
    if target is not None:
        def num(c: Any) -> bool:
            x = to_number(c)
            return x is not None and cmp(x, target)
        return num
    text = str(value)
    return lambda c: c is not None and not isinstance(c, (int, float)) and cmp(str(c), text)


def filter_rows(table: Table | list[Any], where: Any) -> Table:
    """The rows where every condition holds (AND), in order.

    ``where``: ``{field: value}`` (eq), ``{field: [values]}`` (in), ``{field: {op: value, …}}``
    with ops eq, ne, gt, ge, lt, le, in, not_in, contains (case-insensitive), regex (search),
    startswith — or a string ``"count >= 5 and type == DiskFull"``. ``gt``/``ge``/``lt``/``le``
    against a number compare the first number of each value ("123ms" → 123; values without one
    never match); against text they compare text (ISO dates work). ``eq`` against a number
    matches values that are that number (also "123ms" for 123); otherwise values equal as text.
    """
    t = as_table(table, "filter")
    keep = list(range(t.n))
    for name, op, value in parse_where(where):
        col = _col(t, name)
        pred = _predicate(op, value, name)
        keep = [i for i in keep if pred(col[i])]
    out = t.take(keep)
    out.meta = {k: v for k, v in t.meta.items() if k.startswith("_")}
    out.meta["kept"] = f"{len(keep):,} of {t.n:,} rows"
    return out


# ----------------------------------------------------------------------------- stats, sort
def stats(table: Table | list[Any], field: str, method: str = "nearest") -> dict[str, Any]:
    """count, sum, min, max, mean, median, p50, p90, p95, p99 of the numbers in ``field``.

    Each value gives its first number ("123ms" → 123, "1,234" → 1234); values without one are
    counted in ``skipped``. ``median`` is ``statistics.median``. Percentiles: ``method="nearest"``
    (default) is the nearest rank — the ceil(p/100 · n)-th smallest value, always an observed
    value; ``"inclusive"`` / ``"exclusive"`` are ``statistics.quantiles(values, n=100, method=…)``
    (interpolated). Integers stay integers where the result is exact.
    """
    if method not in METHODS:
        raise CommandError(f"stats 'method' must be one of {', '.join(METHODS)}, not {method!r}")
    t = as_table(table, "stats")
    name = _fields(field, "stats")
    if len(name) != 1:
        raise CommandError("stats takes one field")
    nums: list[int | float] = []
    skipped = 0
    for v in _col(t, name[0]):
        x = to_number(v)
        if x is None or (isinstance(x, float) and math.isnan(x)):
            skipped += 1
        else:
            nums.append(x)
    out: dict[str, Any] = {"field": name[0], "count": len(nums)}
    if not nums:
        out.update({k: None for k in ("sum", "min", "max", "mean", "median", *(f"p{p}" for p in PERCENTILES))})
        out.update({"skipped": skipped, "method": method})
        return out
    nums.sort()
    n = len(nums)
    ints = all(isinstance(x, int) for x in nums)
    total: int | float = sum(nums) if ints else math.fsum(nums)
    mean = total // n if ints and total % n == 0 else total / n
    out.update({"sum": total, "min": nums[0], "max": nums[-1], "mean": mean,
                "median": _exact(statistics.median(nums), ints)})
    if method == "nearest":
        for p in PERCENTILES:
            out[f"p{p}"] = nums[max(0, -(-p * n // 100) - 1)]
    else:
        cuts = statistics.quantiles(nums, n=100, method=method) if n > 1 else [nums[0]] * 99
        for p in PERCENTILES:
            out[f"p{p}"] = _exact(cuts[p - 1], ints)
    out.update({"skipped": skipped, "method": method})
    return out


def sort_rows(table: Table | list[Any], field: str, desc: bool = False) -> Table:
    """The rows ordered by ``field`` (stable). Numeric order when every value is a number (also
    "123ms"); otherwise text order. Missing values go last either way."""
    t = as_table(table, "sort")
    name = _fields(field, "sort")
    if len(name) != 1:
        raise CommandError("sort takes one field")
    col = _col(t, name[0])
    present = [i for i, v in enumerate(col) if v is not None]
    missing = [i for i, v in enumerate(col) if v is None]
    nums = [as_number(col[i]) for i in present]
    if all(x is not None for x in nums):
        keys: list[Any] = nums
    else:
        keys = [col[i] if isinstance(col[i], str) else json.dumps(col[i], default=str) for i in present]
    order = sorted(range(len(present)), key=keys.__getitem__, reverse=bool(desc))
    out = t.take([present[j] for j in order] + missing)
    out.meta = {k: v for k, v in t.meta.items() if k.startswith("_")}
    out.meta["sorted_by"] = f"{name[0]} {'desc' if desc else 'asc'}"
    return out


# ----------------------------------------------------------------------------- join
def _row_key(t: Table, i: int, first: str | None = None) -> tuple[Any, ...]:
    head = (_order_value(t.cols[first][i]),) if first is not None else ()
    return head + tuple(_order_value(v[i]) for v in t.cols.values())


def _order_value(v: Any) -> tuple[Any, ...]:
    x = as_number(v)
    return (0, x) if x is not None else order_key(v)


def join(a: Table | list[Any], b: Table | list[Any], key: str | None = None, pairs: bool = False) -> Table:
    """Rows of ``a`` with rows of ``b``.

    * ``key``: inner join on equal values of column ``key`` (in both tables; missing values
      never match); the key column appears once, other names in both get ``a.``/``b.``.
    * no key: the cross product (every row of ``a`` with every row of ``b``).
    * ``pairs=True`` (always when ``a`` is ``b``): each unordered pair of distinct rows once —
      rows equal in every column count as one — written (smaller, larger), comparing rows
      column by column from the first (numbers as numbers); all columns get ``a.``/``b.`` (the
      key once). With a key, only pairs with equal keys. Answers "every pair of users who both…".
    Refuses to build more than ``MAX_JOIN_ROWS`` rows.
    """
    same = a is b
    ta, tb = as_table(a, "join"), as_table(b, "join")
    if key is not None and (not isinstance(key, str) or not key):
        raise CommandError("join 'key' must be a column name present in both tables")
    if key is not None:
        _col(ta, key), _col(tb, key)
    if pairs or same:
        return _pairs(ta, tb, key)
    if key is None:
        _check_size(ta.n * tb.n)
        ia = [i for i in range(ta.n) for _ in range(tb.n)]
        ib = [j for _ in range(ta.n) for j in range(tb.n)]
    else:
        index: dict[Any, list[int]] = {}
        for j, v in enumerate(_col(tb, key)):
            if v is not None:
                index.setdefault(_hashable(v), []).append(j)
        ka = [_hashable(v) if v is not None else None for v in _col(ta, key)]
        _check_size(sum(len(index.get(k, ())) for k in ka if k is not None))
        ia, ib = [], []
        for i, k in enumerate(ka):
            for j in index.get(k, ()) if k is not None else ():
                ia.append(i)
                ib.append(j)
    return _combine(ta, tb, ia, ib, key, prefix_all=False)


def _check_size(n: int) -> None:
    if n > MAX_JOIN_ROWS:
        raise CommandError(f"join would make {n:,} rows, more than the limit of {MAX_JOIN_ROWS:,}; "
                           "filter the tables first (filter, unique) or join on a key")


def _combine(ta: Table, tb: Table, ia: list[int], ib: list[int], key: str | None, prefix_all: bool) -> Table:
    out: dict[str, list[Any]] = {}
    if key is not None:
        ka = ta.cols.get(key, [])
        out[key] = [ka[i] for i in ia]
    for side, t, idx, other in (("a", ta, ia, tb), ("b", tb, ib, ta)):
        for name, col in t.cols.items():
            if name == key:
                continue
            label = f"{side}.{name}" if prefix_all or name in other.cols or name == key else name
            out[label] = [col[i] for i in idx]
    return Table(out, meta={"rows": len(ia)})


def _distinct_rows(t: Table) -> dict[tuple[Any, ...], int]:
    rows: dict[tuple[Any, ...], int] = {}
    for i in range(t.n):
        rows.setdefault(tuple(_hashable(v[i]) for v in t.cols.values()), i)
    return rows


def _pairs(ta: Table, tb: Table, key: str | None) -> Table:
    if ta.columns != tb.columns:
        raise CommandError("join with pairs needs two tables with the same columns "
                           f"({', '.join(ta.columns)} vs {', '.join(tb.columns)})")
    ra, rb = _distinct_rows(ta), _distinct_rows(tb)
    kpos = ta.columns.index(key) if key is not None else -1
    groups: dict[Any, list[tuple[Any, ...]]] = {}
    for vals in rb:
        groups.setdefault(vals[kpos] if key is not None else None, []).append(vals)
    cands = sum(len(groups.get(vals[kpos] if key is not None else None, ())) for vals in ra)
    if cands > 4 * MAX_JOIN_ROWS:  # too much work to even look: about half the candidates are pairs
        _check_size(cands // 2)
    found: dict[tuple[tuple[Any, ...], tuple[Any, ...]], tuple[tuple[Table, int], tuple[Table, int]]] = {}
    for va, i in ra.items():
        if key is not None and va[kpos] is None:
            continue
        for vb in groups.get(va[kpos] if key is not None else None, ()):
            if vb == va:
                continue
            x, y = (ta, i), (tb, rb[vb])
            if _row_key(*y, key) < _row_key(*x, key):
                x, y, va_, vb_ = y, x, vb, va
            else:
                va_, vb_ = va, vb
            found.setdefault((va_, vb_), (x, y))
    _check_size(len(found))
    pair_list = sorted(found.values(), key=lambda p: (_row_key(*p[0], key), _row_key(*p[1], key)))
    out: dict[str, list[Any]] = {key: []} if key is not None else {}
    names = [c for c in ta.columns if c != key]
    for side in ("a", "b"):
        for c in names:
            out[f"{side}.{c}"] = []
    for (t1, i1), (t2, i2) in pair_list:
        if key is not None:
            out[key].append(t1.cols[key][i1])
        for c in names:
            out[f"a.{c}"].append(t1.cols[c][i1])
            out[f"b.{c}"].append(t2.cols[c][i2])
    return Table(out, meta={"pairs": len(pair_list), "_kind": "pairs"})
