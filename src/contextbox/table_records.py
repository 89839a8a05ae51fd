"""Cutting text into table rows: ``records`` and ``extract`` (pure functions, no model, no engine).

* ``records``: cut text into records (lines, blank-line paragraphs, a literal delimiter, or a
  regex that starts each record) → columns ``text``, ``doc``, ``line``.
* ``extract``: one row per line (or record) where a regex matches, columns its named groups;
  without a pattern, automatic fields (:mod:`contextbox.auto_fields`).

Positions: ``doc`` is the document's path, ``line`` the 0-based line in the context (for a
variable's text: in that text).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from . import auto_fields
from .context import Context
from .errors import CommandError
from .host_limits import checkpoint
from .ops import compile_regex, parse_flags
from .table import Table
from .table_values import as_table
from .table_values import column as _col

_LINE_MODES = {"line": "line", "lines": "line", "blank_line": "blank", "blank_lines": "blank", "paragraph": "blank"}
_BLANK = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")
_BLOCK = 16 << 20  # characters per block when scanning lines of a big text


# ----------------------------------------------------------------------------- sources
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
