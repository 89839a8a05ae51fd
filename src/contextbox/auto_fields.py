"""Automatic fields: what ``extract`` does without a pattern.

A small model cannot write regexes reliably, so ``extract`` with no pattern splits each
structured line into named fields by these rules, tried in order:

1. **JSON object lines** (``{...}``): the object's keys; nested objects become dotted keys
   (``a.b``), lists and other values stay as they are.
2. **Separated fields**: a line with ``||``, a tab, or at least two ``|`` is cut at those
   separators. A field ``key: value`` or ``key=value`` becomes column ``key``; any other field
   is classified as a whole, like a token (rule 4).
3. **Key-colon lines**: a line that starts with ``key: value`` is cut before each further
   ``key: `` that follows a ``,``, ``;`` or two spaces (``Date: Jan 02, 2023;  User: 5``).
4. **Tokens**: otherwise the line is cut at whitespace, keeping ``"double quoted"`` text
   together. A token ``key=value`` becomes column ``key`` (quotes around the value dropped).
   Every other token is classified (brackets, trailing ``,`` ``;`` ``:`` dropped first), and the
   first token of a type fills the column named for the type, the second ``TYPE2``, and so on:

   ========== ===============================================================
   type       tokens
   ========== ===============================================================
   timestamp  date and time in one token: ``2024-03-01T08:00:01.5Z``,
              ``01/Mar/2024:08:00:01``
   date       ``2024-03-01``, ``2024/03/01``, ``03/01/2024``, ``01/Mar/2024``,
              ``Jan 02`` / ``Jan 02, 2023`` (a month name and a day: two or three tokens)
   time       ``08:00:01``, ``8:00``, ``08:00:01.123``
   level      ``TRACE DEBUG INFO NOTICE WARN WARNING ERROR ERR CRITICAL FATAL``
              ``SEVERE ALERT PANIC`` (upper case, or any case inside ``[...]``)
   method     ``GET POST PUT DELETE PATCH HEAD OPTIONS CONNECT``
   ip         IPv4 (with an optional ``:port``), IPv6 (``::`` or 4+ colons)
   url        ``scheme://...``
   path       starts with ``/``
   status     a 3-digit number 100–599 on a line that also has a method or a path
   duration   a number with a time unit: ``123ms``, ``1.5s``, ``20us``, ``5min``, ``2h``
              (the text is kept; ``stats`` reads the number)
   number     ``42``, ``-4.5``, ``1,234``, ``1e6``, ``12%`` (other 3-digit numbers too)
   name       identifier-like: CamelCase (``DiskFull``, ``NullPointerException``),
              with ``_`` (``disk_full``) or dotted (``java.lang.Error``)
   message    ``"quoted text"`` (quotes dropped); also, when a line has no quoted text,
              free text: from the first run of three plain words (or two ending the
              line) to the end of the line, as written (``key=value`` tokens after it
              stay columns)
   word       anything else
   ========== ===============================================================

So ``2024-03-01 08:00:01 ERROR 10.0.0.1 GET /api/x 500 123ms DiskFull "disk is full"`` gives
date, time, level, ip, method, path, status, duration, name, message — and a line without the
optional ``DiskFull`` gives the same columns with ``name`` missing. Keys named ``doc`` or
``line`` (the position columns) get a trailing ``_``; a key seen twice in one line gets ``2``.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any

LEVELS = frozenset(
    "TRACE DEBUG INFO NOTICE WARN WARNING ERROR ERR CRITICAL CRIT FATAL SEVERE ALERT EMERG PANIC".split()
)
METHODS = frozenset("GET POST PUT DELETE PATCH HEAD OPTIONS CONNECT".split())
RESERVED = ("doc", "line")

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
_TZ = r"(?:Z|[+-]\d{2}:?\d{2})?"
_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DATE = rf"\d{{4}}-\d{{2}}-\d{{2}}|\d{{4}}/\d{{2}}/\d{{2}}|\d{{1,2}}/\d{{1,2}}/\d{{4}}|\d{{1,2}}/{_MON}/\d{{4}}"
#: one alternation, most specific first; ``fullmatch(...).lastgroup`` is the token's kind
_KINDS = re.compile(
    rf"(?P<timestamp>(?:\d{{4}}-\d{{2}}-\d{{2}}[T ]|\d{{4}}/\d{{2}}/\d{{2}}[T ]|\d{{1,2}}/{_MON}/\d{{4}}:){_TIME}{_TZ})"
    rf"|(?P<date>{_DATE})"
    rf"|(?P<time>{_TIME}{_TZ})"
    r"|(?P<ip>(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})"
    r"|(?P<url>[A-Za-z][\w+.-]*://\S+)"
    r"|(?P<path>/\S*)"
    r"|(?P<int3>[1-5]\d\d)"
    rf"|(?P<duration>{_NUM}(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d))"
    rf"|(?P<number>{_NUM}%?)"
    r"|(?P<ident>[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)"
)
_CAMEL = re.compile(r"[a-z0-9][A-Z]")
_TOKEN = re.compile(r'(?:"[^"]*"?|[^\s"])+')
_KV = re.compile(r'([A-Za-z_][\w.\-]*)=(.*)', re.S)
_FIELD_KV = re.compile(r"([A-Za-z_][\w .\-]{0,40}?)\s*[:=]\s*(.*)", re.S)
_COLON_HEAD = re.compile(r"\s*[A-Za-z_][\w.\-]*: ")
_COLON_KEYS = re.compile(r"(?:^\s*|[,;]\s*|\s{2,})([A-Za-z_][\w.\-]*): ")
_STRIP = "[](){}<>,;"
_MONTHS = frozenset("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec January February March April June July "
                    "August September October November December".split())
_DAY = re.compile(r"\d{1,2},?")
_YEAR = re.compile(r"\d{4}")
_CACHE_MAX = 200_000
_cache: dict[str, str] = {}


def classify(token: str) -> str:
    """The kind of one token (quotes and brackets already stripped): a type name of the table above,
    or ``int3`` (a 3-digit number that may be a status) and ``level``/``method`` checks done here."""
    kind = _cache.get(token)
    if kind is not None:
        return kind
    if token in LEVELS:
        kind = "level"
    elif token in METHODS:
        kind = "method"
    else:
        m = _KINDS.fullmatch(token)
        kind = m.lastgroup or "word" if m else "word"
        if kind == "ip" and ":" in token and "." not in token and "::" not in token and token.count(":") < 4:
            kind = "word"
        elif kind == "ident":
            kind = "name" if ("_" in token.strip("_") or "." in token or _CAMEL.search(token)) else "word"
    if len(_cache) < _CACHE_MAX:
        _cache[token] = kind
    return kind


def _put(row: dict[str, Any], name: str, value: Any) -> None:
    """Add ``name`` = ``value``, numbering the name when it is taken (``number``, ``number2``, …)."""
    if name in RESERVED:
        name += "_"
    if name not in row:
        row[name] = value
        return
    i = 2
    while f"{name}{i}" in row:
        i += 1
    row[f"{name}{i}"] = value


def _core(token: str) -> tuple[str, bool]:
    """A token without brackets and trailing punctuation; and whether it was bracketed."""
    core = token.strip(_STRIP)
    bracketed = len(core) < len(token) and token[:1] in "[(<{"
    if core.endswith(":") and len(core) > 1:
        core = core[:-1]
    if core.endswith(".") and len(core) > 1 and core[-2].isalpha():
        core = core[:-1]
    return core, bracketed


def _kind_of(core: str, bracketed: bool) -> str:
    if bracketed and core.upper() in LEVELS:
        return "level"
    return classify(core)


def _token_items(line: str) -> list[tuple[str, str, Any, int, int]]:
    """The classified tokens of a stripped line: (kind, key or "", value, start, end)."""
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(line)]
    items: list[tuple[str, str, Any, int, int]] = []  # (kind, key or "", value, start, end)
    has_quote = False
    k = 0
    while k < len(toks):
        tok, a, b = toks[k]
        k += 1
        if tok[0] == '"':
            items.append(("message", "", tok.strip('"'), a, b))
            has_quote = True
            continue
        kv = _KV.fullmatch(tok)
        if kv and kv.group(2):
            items.append(("kv", kv.group(1), kv.group(2).strip('"'), a, b))
            continue
        if tok in _MONTHS and k < len(toks) and _DAY.fullmatch(toks[k][0]):  # Jan 02[, 2023]
            b = toks[k][2]
            k += 1
            if toks[k - 1][0].endswith(",") and k < len(toks) and _YEAR.fullmatch(toks[k][0]):
                b = toks[k][2]
                k += 1
            items.append(("date", "", line[a:b].rstrip(",;"), a, b))
            continue
        core, br = _core(tok)
        items.append((_kind_of(core, br) if core else "word", "", core or tok, a, b))
    if not has_quote:  # free text: from a run of 3+ plain words (or 2 at the end) to the end
        kinds = [it[0] for it in items]
        for k in range(len(items)):
            run = kinds[k:k + 3]
            if run == ["word"] * 3 or (run == ["word"] * 2 and k + 2 == len(items)):
                j = next((x for x in range(k, len(items)) if kinds[x] == "kv"), len(items))
                text = line[items[k][3]:items[j - 1][4]]
                items[k:j] = [("message", "", text, items[k][3], items[j - 1][4])]
                break
    return items


def _items_row(items: list[tuple[str, str, Any, int, int]]) -> dict[str, Any]:
    """The row of a line's classified tokens: one column per token, named by kind or key."""
    row: dict[str, Any] = {}
    web = any(it[0] in ("method", "path") for it in items)
    for kind, name, value, _, _ in items:
        if kind == "kv":
            _put(row, name, value)
        elif kind == "int3":
            _put(row, "status" if web and "status" not in row else "number", value)
        else:
            _put(row, kind, value)
    return row


def _field_value(field: str) -> tuple[str, str]:
    """(column kind, value) of a positional field of a separated line."""
    if " " not in field:
        core, br = _core(field)
        kind = _kind_of(core, br) if core else "word"
        return ("number" if kind == "int3" else kind), core or field
    if field.startswith('"') and field.endswith('"') and len(field) > 1:
        return "message", field[1:-1]
    m = _KINDS.fullmatch(field)
    return (m.lastgroup if m and m.lastgroup == "timestamp" else "message"), field


def _flatten(obj: dict[str, Any], prefix: str, row: dict[str, Any]) -> None:
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            _flatten(v, name + ".", row)
        else:
            _put(row, name, v)


def parse_line(line: str) -> dict[str, Any]:
    """The automatic fields of one line (see the module docstring); ``{}`` for a blank line."""
    s = line.strip()
    if not s:
        return {}
    row: dict[str, Any] = {}
    if s[0] == "{" and s[-1] == "}":
        try:
            obj = json.loads(s)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            _flatten(obj, "", row)
            return row
    sep = "||" if "||" in s else "\t" if "\t" in s else "|" if s.count("|") >= 2 else None
    if sep is not None:
        for field in s.split(sep):
            field = field.strip()
            if not field:
                continue
            kv = _FIELD_KV.fullmatch(field)
            if kv and not _KINDS.fullmatch(field) and not kv.group(2).startswith("//"):
                _put(row, kv.group(1).strip(), kv.group(2).strip())
            else:
                kind, value = _field_value(field)
                _put(row, kind, value)
        return row
    if _COLON_HEAD.match(s):
        keys = list(_COLON_KEYS.finditer(s))
        for i, m in enumerate(keys):
            end = keys[i + 1].start() if i + 1 < len(keys) else len(s)
            _put(row, m.group(1), s[m.end():end].strip().rstrip(",;").strip())
        return row
    return _items_row(_token_items(s))


# ----------------------------------------------------------------------------- fast path
class Columns:
    """Rows whose names vary, made into columns block by block.

    Rows come in line order, from templates (value tuples, one part per template) or one by one
    (``add``). ``flush`` turns a block's rows into columns: the rows back in order, each value
    interned while its column has few distinct values (a column of levels or paths holds a few
    strings, not millions). Columns come out in first-seen order (by row, then place in the row);
    absent cells are None."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {}
        self.first: dict[str, tuple[int, int]] = {}
        self.docs: list[Any] = []
        self.lines: list[Any] = []
        self.n = 0  # rows flushed into ``cols``
        self.m = 0  # rows of the current block
        self._memo: dict[str, dict[Any, Any] | None] = {}
        self._slow_idx: list[int] = []
        self._slow: dict[str, list[Any]] = {}
        self._parts: list[tuple[list[str], list[int], list[Any]]] = []

    def add(self, names: Any, values: Any, doc: Any, line: Any) -> None:
        """One row of any shape."""
        n, cols = len(self._slow_idx), self._slow
        for k, (name, v) in enumerate(zip(names, values, strict=True)):
            col = cols.get(name)
            if col is None:
                col = cols[name] = [None] * n
                self.first.setdefault(name, (self.n + self.m, k))
            elif len(col) < n:
                col.extend([None] * (n - len(col)))
            col.append(v)
        self._slow_idx.append(self.m)
        self.docs.append(doc)
        self.lines.append(line)
        self.m += 1

    def part(self, names: list[str]) -> tuple[list[int], list[Any]]:
        """A template part of the current block: append ``self.m`` and value tuples (or values,
        for one name) to the lists returned, and the row's doc and line to ``docs``/``lines``."""
        idx: list[int] = []
        rows: list[Any] = []
        self._parts.append((names, idx, rows))
        return idx, rows

    def _intern(self, name: str, vals: list[Any]) -> list[Any]:
        memo = self._memo.setdefault(name, {})
        if memo is None:
            return vals
        try:
            vals = list(map(memo.setdefault, vals, vals))
        except TypeError:  # lists or dicts (JSON lines)
            self._memo[name] = None
            return vals
        if len(memo) > 50_000:  # many distinct values: interning saves nothing
            self._memo[name] = None
        return vals

    def flush(self) -> None:
        """Move the current block's rows into the columns."""
        m, base = self.m, self.n
        if not m:
            return
        parts: list[tuple[list[int], dict[str, Any]]] = []
        if self._slow_idx:
            for col in self._slow.values():
                col.extend([None] * (len(self._slow_idx) - len(col)))
            parts.append((self._slow_idx, self._slow))
        for names, idx, rows in self._parts:
            if not idx:
                continue
            cols = [rows] if len(names) == 1 else [list(map(operator.itemgetter(k), rows)) for k in range(len(names))]
            parts.append((idx, dict(zip(names, cols, strict=True))))
            for k, name in enumerate(names):
                if (base + idx[0], k) < self.first.get(name, (base + m, 0)):
                    self.first[name] = (base + idx[0], k)
        if len(parts) == 1:
            pick: Any = list
        else:
            order = [i for idx, _ in parts for i in idx]
            perm = sorted(range(m), key=order.__getitem__)
            pick = operator.itemgetter(*perm) if m > 1 else list
        names_here = dict.fromkeys(name for _, cols in parts for name in cols)
        for name in names_here:
            flat: list[Any] = []
            for idx, cols in parts:
                vals = cols.get(name)
                flat.extend(vals if vals is not None else [None] * len(idx))
            col = self.cols.setdefault(name, [])
            if len(col) < base:
                col.extend([None] * (base - len(col)))
            col.extend(self._intern(name, list(pick(flat))))
        self.n, self.m = base + m, 0
        self._slow_idx, self._slow, self._parts = [], {}, []

    def columns(self) -> dict[str, list[Any]]:
        self.flush()
        out: dict[str, list[Any]] = {}
        for name in sorted(self.first, key=self.first.__getitem__):
            col = self.cols[name]
            col.extend([None] * (self.n - len(col)))
            out[name] = col
        out.update({"doc": self.docs, "line": self.lines})
        return out


#: exact patterns for tokens whose kind is certain (a template line holds only these)
_TPL = {
    "timestamp": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z?",
    "date": r"\d{4}-\d{2}-\d{2}",
    "time": r"\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?",
    "level": "(?:" + "|".join(sorted(LEVELS, key=len, reverse=True)) + ")",
    "method": "(?:" + "|".join(sorted(METHODS, key=len, reverse=True)) + ")",
    "ip": r"(?:\d{1,3}\.){3}\d{1,3}",
    "path": r"/(?:[\w\-./?=&%+~]*[\w\-/?=&%+~])?",
    "int3": r"[1-5]\d\d",
    "duration": r"\d+(?:\.\d+)?(?:ms|us|ns|s|m|h)",
    "number": r"-\d+(?:\.\d+)?|(?![1-5]\d\d(?![\d.]))\d+(?:\.\d+)?",
    "name": r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+",
    "word": r"[a-z][a-z0-9]*",
}
_TPL_RX = {k: re.compile(v) for k, v in _TPL.items()}
_QUOTED = re.compile(r'"[^"\n|\t\r]*"')
_KV_VALUE = r'[^\s"|]+'
#: slow lines of one shape before the shape gets a template; how many templates at most
SHAPE_MIN = 8
MAX_TEMPLATES = 32
_LEARN_LINES = 1000
_LEARN_BUDGET = 20_000


def line_shape(line: str) -> tuple[tuple[str, str], ...] | None:
    """The template shape of a line — (kind, key) per token — when every token is of a certain
    kind (``_TPL``, quoted text, ``key=value``); else None."""
    s = line.strip()
    if not s or s[0] == "{" or "|" in s or "\t" in s or _COLON_HEAD.match(s):
        return None
    shape = []
    for kind, key, _, a, b in _token_items(s):
        raw = s[a:b]
        if kind == "kv":
            ok = re.fullmatch(re.escape(key) + "=" + _KV_VALUE, raw) is not None
        elif kind == "message":
            ok = _QUOTED.fullmatch(raw) is not None
        else:
            rx = _TPL_RX.get(kind)
            ok = rx is not None and rx.fullmatch(raw) is not None
        if not ok:
            return None
        shape.append((kind, key))
    return tuple(shape)


def _piece(kind: str, key: str) -> str:
    if kind == "kv":
        return re.escape(key) + "=(" + _KV_VALUE + ")"
    if kind == "message":
        return '"([^"\n|\t\r]*)"'
    return "(" + _TPL[kind] + ")"


class Templates:
    """Whole-line regexes for the common line shapes, learnt from the lines themselves.

    A line a template matches gets exactly the fields :func:`parse_line` would give it (each
    template token pattern is a subset of what the classifier calls that kind, and no template
    line can take another branch of ``parse_line``); other lines go through ``parse_line``.
    One ``finditer`` over the text then does the work of the per-line parser."""

    def __init__(self) -> None:
        self.shapes: list[tuple[tuple[str, str], ...]] = []
        self.rx: re.Pattern[str] | None = None
        self.alts: dict[int, tuple[list[str], tuple[int, ...]]] = {}
        self.seen: dict[tuple[tuple[str, str], ...], int] = {}
        self.learning = True
        self.budget = _LEARN_BUDGET  # lines looked at for new shapes, in all

    def learn(self, lines: list[str]) -> None:
        for ln in lines:
            shape = line_shape(ln)
            if shape is not None:
                self.seen[shape] = self.seen.get(shape, 0) + 1
        self._update()

    def _update(self) -> None:
        new = [sh for sh, c in sorted(self.seen.items(), key=lambda kv: -kv[1])
               if c >= SHAPE_MIN and sh not in self.shapes]
        if not new:
            return
        self.shapes += new[: MAX_TEMPLATES - len(self.shapes)]
        self.learning = len(self.shapes) < MAX_TEMPLATES and self.budget > 0
        parts, group = [], 1
        for shape in self.shapes:
            outer = group
            group += 1 + len(shape)
            names = list(_items_row([(k, key, None, 0, 0) for k, key in shape]))
            self.alts[outer] = (names, tuple(range(outer + 1, outer + 1 + len(shape))))
            parts.append("(^ *" + " +".join(_piece(k, key) for k, key in shape) + "[ \r]*$)")
        self.rx = re.compile("|".join(parts), re.MULTILINE)

    def scan(self, text: str, start: int, stop: int, line: int, doc: Any, acc: Columns) -> tuple[int, int]:
        """Rows for the lines of ``text[start:stop]`` (``stop`` at a line start or the end).
        Returns (the next line number, lines without fields)."""
        pos, unmatched = start, 0
        learn = min(_LEARN_LINES, self.budget) if self.learning else 0
        self.budget -= learn
        if self.rx is not None:
            sinks: dict[int, tuple[Any, Any, tuple[int, ...]]] = {}
            for alt, (names, groups) in self.alts.items():
                idx, rows = acc.part(names)
                sinks[alt] = (idx.append, rows.append, groups if len(groups) > 1 else groups[0])
            lines, fast = acc.lines.append, 0
            for m in self.rx.finditer(text, start, stop):
                s = m.start()
                if s > pos:
                    acc.m += fast
                    line, unmatched, learn = self._slow(text[pos:s], line, doc, acc, unmatched, learn)
                    fast = 0
                put_idx, put_row, groups = sinks[m.lastindex]  # type: ignore[index]
                put_idx(acc.m + fast)
                put_row(m.group(*groups) if type(groups) is tuple else m.group(groups))
                lines(line)
                fast += 1
                line += 1
                pos = m.end() + 1
            acc.m += fast
            acc.docs.extend([doc] * (len(acc.lines) - len(acc.docs)))  # one doc per scan: same for every row
        if pos < stop:
            line, unmatched, learn = self._slow(text[pos:stop], line, doc, acc, unmatched, learn)
        acc.flush()
        if self.learning:
            self._update()
        return line, unmatched

    def _slow(self, chunk: str, line: int, doc: Any, acc: Columns, unmatched: int,
              learn: int) -> tuple[int, int, int]:
        lines = chunk.split("\n")
        if lines[-1] == "":
            lines.pop()
        for ln in lines:
            row = parse_line(ln)
            if row:
                acc.add(row.keys(), row.values(), doc, line)
            else:
                unmatched += 1
            if learn > 0:
                learn -= 1
                shape = line_shape(ln)
                if shape is not None:
                    self.seen[shape] = self.seen.get(shape, 0) + 1
            line += 1
        return line, unmatched, learn
