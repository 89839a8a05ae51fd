"""Pairs of values: the exact aggregate behind "every pair of users who both have at least K …".

:func:`qualifying` is ``count_by field`` then ``filter count >= at_least`` in one step: the values of
a column that occur in at least ``at_least`` rows (a missing value never qualifies). :func:`pairs`
is every unordered pair of distinct qualifying values once, written (smaller, larger) — numbers
compared as numbers, so ``9`` comes before ``10`` — in order; a table of two columns
``a.<field>``, ``b.<field>`` whose text (``final_var``) is one ``(a, b)`` line per pair, the form
pairs questions ask for.

The rows are usually a filtered table (the rows labelled X), so "users with at least K rows labelled
X" is ``filter label = X`` → ``pairs field=user at_least=K``.
"""

from __future__ import annotations

import itertools
from typing import Any

from .errors import CommandError
from .table import Table
from .table_ops import MAX_JOIN_ROWS, _order_value
from .table_values import as_table, column, hashable

__all__ = ["pairs", "qualifying"]


def _at_least(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommandError(f"pairs 'at_least' must be a whole number of rows >= 1, got {value!r}")
    return value


def qualifying(table: Table | list[Any], field: str, at_least: int = 1) -> list[Any]:
    """The distinct values of ``field`` found in at least ``at_least`` rows, smallest first
    (numbers as numbers, then text); missing values (None) never qualify."""
    t = as_table(table, "pairs")
    if not isinstance(field, str) or not field:
        raise CommandError("pairs 'field' must be a column name, e.g. \"user\"")
    k = _at_least(at_least)
    counts: dict[Any, int] = {}
    first: dict[Any, Any] = {}
    for v in column(t, field):
        if v is None:
            continue
        h = hashable(v)
        counts[h] = counts.get(h, 0) + 1
        first.setdefault(h, v)
    return sorted((first[h] for h, c in counts.items() if c >= k), key=_order_value)


def pairs(table: Table | list[Any], field: str, at_least: int = 1) -> Table:
    """Every pair (smaller, larger) of distinct values of ``field`` that each occur in at least
    ``at_least`` rows, in order; columns ``a.<field>``, ``b.<field>``. ``meta``: ``values`` (how
    many qualify), ``at_least``, ``pairs``; ``_values`` the qualifying values themselves.
    Refuses to build more than ``MAX_JOIN_ROWS`` pairs."""
    qual = qualifying(table, field, at_least)
    n = len(qual) * (len(qual) - 1) // 2
    if n > MAX_JOIN_ROWS:
        raise CommandError(f"pairs would make {n:,} pairs of {len(qual):,} values, more than the limit of "
                           f"{MAX_JOIN_ROWS:,}; filter the rows first or raise at_least")
    a, b = [], []
    for x, y in itertools.combinations(qual, 2):
        a.append(x)
        b.append(y)
    return Table({f"a.{field}": a, f"b.{field}": b},
                 meta={"values": len(qual), "at_least": at_least, "pairs": n, "_kind": "pairs", "_values": qual,
                       "_field": field})
