"""Reading table cells: numbers, dates, a total order over mixed values, and column access.

Shared by :mod:`contextbox.table_records` (records, extract) and :mod:`contextbox.table_ops`
(aggregations, filter, stats, sort, join).

Numbers: ``to_number`` reads the *first number* in a value (``"123ms"`` → 123, ``"1,234"`` →
1234, ``"-4.5"`` → -4.5); ``as_number`` reads a value as a number only when it *is* one,
optionally with a unit (``"123ms"``, ``" 42 "``; not ``"2024-03-01"``).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any

from .errors import CommandError
from .table import Table

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


def exact(x: float, ints: bool) -> int | float:
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


def hashable(v: Any) -> Any:
    """A value usable as a dict key: lists, dicts and sets as their JSON text."""
    return json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, dict, set)) else v


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


# ----------------------------------------------------------------------------- columns
def as_table(value: Any, what: str) -> Table:
    """A :class:`Table` from a table or a list of dict rows (``what``: the op, for the error)."""
    return Table.coerce(value, what)


def column(t: Table, name: str) -> list[Any]:
    """A column; an empty table from an empty list of rows has every column, empty."""
    return [] if t.n == 0 and not t.cols else t.column(name)


def fields(field: Any, what: str) -> list[str]:
    """``field`` (a column name or a list of them) as a list of names; a clear error otherwise."""
    names = [field] if isinstance(field, str) else field
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(f, str) and f for f in names):
        raise CommandError(f"{what} needs 'field': a column name (or a list of column names)")
    return list(names)
