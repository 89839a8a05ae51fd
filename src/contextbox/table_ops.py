"""Exact table operations: the engine aggregates, the model only says what to aggregate.

Pure functions (no model, no engine) on a :class:`Table` (or a list of dict rows). The L1
commands (``table_commands``), the code-cell helpers and the L3 worker call these.

* ``count_by`` / ``word_counts`` / ``top`` / ``unique`` / ``filter_rows`` / ``stats`` /
  ``sort_rows`` / ``join``.
* ``records`` / ``extract`` (text → rows) live in :mod:`contextbox.table_records`, the value
  readers (``to_number``, ``as_number``, ``as_date``, ``order_key``) in
  :mod:`contextbox.table_values`; both are re-exported here so that the table helpers are one
  namespace (the L3 worker loads this one module).

Missing values are ``None`` (shown as ``(missing)``).

Numbers: ``stats`` and the comparisons ``gt``/``ge``/``lt``/``le`` read the *first number* in a
value (``"123ms"`` → 123, ``"1,234"`` → 1234, ``"-4.5"`` → -4.5). ``eq``/``ne``/``in`` against a
number and ``sort`` read a value as a number only when it *is* one, optionally with a unit
(``"123ms"``, ``" 42 "``; not ``"2024-03-01"``).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .errors import CommandError
from .ops import compile_regex
from .table import Table
from .table_records import extract, records
from .table_values import DATE_FORMATS, as_date, as_number, as_table, order_key, to_number
from .table_values import column as _col
from .table_values import exact as _exact
from .table_values import fields as _fields
from .table_values import hashable as _hashable

__all__ = [  # records/extract and the value readers too: one namespace for callers and the L3 worker
    "DATE_FORMATS", "MAX_JOIN_ROWS", "METHODS", "MISSING", "OPS", "PERCENTILES", "UNIQUE_SAMPLE", "Table",
    "as_date", "as_number", "as_table", "count_by", "extract", "filter_rows", "join", "order_key",
    "parse_where", "records", "sort_rows", "stats", "to_number", "top", "unique", "word_counts",
]

#: ``join`` refuses to build more rows than this
MAX_JOIN_ROWS = 1_000_000
#: how many distinct values ``unique`` shows
UNIQUE_SAMPLE = 20
MISSING = "(missing)"
PERCENTILES = (50, 90, 95, 99)
METHODS = ("nearest", "inclusive", "exclusive")


# ----------------------------------------------------------------------------- aggregation
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
