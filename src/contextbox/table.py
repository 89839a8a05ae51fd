"""``Table``: rows with named columns, the value the table operations pass around.

A table is a variable like any other (``store`` / ``on``): ``records`` and ``extract`` make
one, ``count_by`` / ``top`` / ``unique`` / ``filter`` / ``stats`` / ``sort`` / ``join`` read one,
and a typed ``llm_map`` adds a column aligned with its rows. Storage is columnar (one list a
column) so that millions of rows stay cheap; a row reads as a ``dict``.

Columns ``doc`` and ``line`` (when present) say where a row came from: the document's path
and the 0-based line number of the row's first line in the context.

In code cells (L2/L3) a table crosses the boundary as a plain ``list`` of ``dict`` rows;
every function that takes a table also takes such a list.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .errors import CommandError

#: what the model sees of a table when no limit is given
DEFAULT_RENDER_ROWS = 20
#: how a missing value (None) is shown
MISSING = "(missing)"


def cell_text(value: Any) -> str:
    """One value as text: strings as they are, None as ``(missing)``, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return MISSING
    return json.dumps(value, ensure_ascii=False, default=str)


class Table:
    """Named columns of equal length. ``meta`` holds notes (e.g. ``unmatched`` line count)."""

    __slots__ = ("cols", "n", "meta")

    def __init__(self, cols: dict[str, list[Any]] | None = None, *, meta: dict[str, Any] | None = None):
        cols = dict(cols or {})
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of unequal length: { {k: len(v) for k, v in cols.items()} }")
        self.cols: dict[str, list[Any]] = cols
        self.n: int = lengths.pop() if lengths else 0
        self.meta: dict[str, Any] = dict(meta or {})

    # ------------------------------------------------------------ construction
    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None,
                  *, meta: dict[str, Any] | None = None) -> Table:
        """A table from dict rows; columns are ``columns`` or the union of keys in first-seen order."""
        rows = list(rows)
        names: list[str] = list(columns) if columns is not None else []
        if columns is None:
            seen: set[str] = set()
            for r in rows:
                for k in r:
                    if k not in seen:
                        seen.add(k)
                        names.append(str(k))
        return cls({k: [r.get(k) for r in rows] for k in names}, meta=meta)

    @classmethod
    def coerce(cls, value: Any, what: str = "this op") -> Table:
        """A Table from a Table, a list of dicts, or a list of scalars (one column ``value``)."""
        if isinstance(value, Table):
            return value
        if isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            return cls.from_rows([value])  # one row
        if isinstance(value, list):
            if all(isinstance(v, dict) for v in value):
                return cls.from_rows(value)
            if all(not isinstance(v, (dict, list)) for v in value):
                return cls({"value": list(value)})
        raise CommandError(
            f"{what} needs a table (from records, extract or llm_map, or a list of rows), "
            f"not a {type(value).__name__}"
        )

    # ------------------------------------------------------------ access
    @property
    def columns(self) -> list[str]:
        return list(self.cols)

    def __len__(self) -> int:
        return self.n

    def column(self, name: str) -> list[Any]:
        """One column's values; a clear error naming the columns when there is no such column."""
        try:
            return self.cols[name]
        except KeyError:
            raise CommandError(f"no column {name!r}; the table's columns are: {', '.join(self.cols) or '(none)'}"
                               ) from None

    def row(self, i: int) -> dict[str, Any]:
        if not -self.n <= i < self.n:
            raise IndexError(f"row {i} out of range: the table has {self.n} rows")
        return {k: v[i] for k, v in self.cols.items()}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.row(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = list(self.cols)
        for vals in zip(*self.cols.values(), strict=True):
            yield dict(zip(names, vals, strict=True))

    def to_rows(self) -> list[dict[str, Any]]:
        return list(self)

    def take(self, indices: Sequence[int]) -> Table:
        """The rows at ``indices``, in that order."""
        return Table({k: [v[i] for i in indices] for k, v in self.cols.items()}, meta=dict(self.meta))

    def head(self, k: int) -> Table:
        return Table({name: v[:k] for name, v in self.cols.items()}, meta=dict(self.meta))

    def with_column(self, name: str, values: list[Any]) -> Table:
        """A new table with ``name`` set to ``values`` (replaced if it exists)."""
        if len(values) != self.n and self.cols:
            raise ValueError(f"column {name!r} has {len(values)} values for {self.n} rows")
        cols = dict(self.cols)
        cols[name] = list(values)
        return Table(cols, meta=dict(self.meta))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and self.cols == other.cols

    def __repr__(self) -> str:
        return f"Table({self.n} rows × {len(self.cols)} columns {self.columns})"

    # ------------------------------------------------------------ display
    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": [[v[i] for v in self.cols.values()] for i in range(self.n)],
                "meta": self.meta}

    def profile(self, scan: int = 200_000, examples: int = 5, max_cell: int = 40) -> list[str]:
        """One line per column: how many distinct values, in how many rows, and a few examples.

        Lets a model pick the right column by its values (``name: 5 distinct in 1,666 rows: DiskFull, …``)
        rather than guess from the column's name. Counts over the first ``scan`` rows."""
        n = min(self.n, scan)
        where = "" if n == self.n else f" (in the first {n:,} rows)"
        out = []
        for k, v in self.cols.items():
            if k in ("doc", "line"):
                continue
            seen: dict[Any, None] = {}
            present = 0
            for x in v[:n]:
                if x is None or x == "":
                    continue
                present += 1
                if len(seen) <= 10_000:
                    seen.setdefault(x if not isinstance(x, (list, dict)) else json.dumps(x, default=str), None)
            distinct = f"{len(seen):,}" if len(seen) <= 10_000 else "over 10,000"
            rows = "" if present == n else f" in {present:,} rows"
            shown = []
            for x in list(seen)[:examples]:
                s = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False, default=str)
                s = " ".join(s.split())
                shown.append(s if len(s) <= max_cell else s[: max_cell - 1] + "…")
            out.append(f"- {k}: {distinct} distinct{rows}; e.g. {', '.join(shown) or '(empty)'}")
        return [f"columns{where}:"] + out if out else []

    def render(self, max_rows: int = DEFAULT_RENDER_ROWS, max_cell: int = 120) -> str:
        """Compact text: a header with the row count and columns, then up to ``max_rows`` rows."""
        head = f"table: {self.n:,} row(s); columns: {', '.join(self.cols) or '(none)'}"
        notes = [f"{k}: {v}" for k, v in self.meta.items() if not str(k).startswith("_")]
        if notes:
            head += " (" + "; ".join(notes) + ")"
        lines = [head]
        shown = min(self.n, max(0, max_rows))
        for i in range(shown):
            cells = []
            for k, v in self.cols.items():
                s = cell_text(v[i])
                s = " ".join(s.split())
                if len(s) > max_cell:
                    s = s[: max_cell - 1] + "…"
                cells.append(f"{k}={s}")
            lines.append(f"[{i}] " + " | ".join(cells))
        if shown < self.n:
            lines.append(f"… {self.n - shown:,} more row(s)")
        return "\n".join(lines)

    def counts_lines(self, limit: int | None = None) -> list[str]:
        """``value: count`` lines of a count table (from count_by / top)."""
        names = list(self.cols)
        keys, counts = names[:-1], self.cols[names[-1]]
        out = []
        for i in range(self.n if limit is None else min(limit, self.n)):
            value = " | ".join(cell_text(self.cols[k][i]) for k in keys)
            out.append(f"{value}: {counts[i]}")
        return out

    def as_text(self) -> str:
        """The table as plain text (``final_var``, ``on``): one row per line — a one-column table
        as its values, a count table as ``value: count`` lines, a pair table as ``(a, b)``,
        other rows as their values joined by `` | ``."""
        kind = self.meta.get("_kind")
        if kind == "counts" and len(self.cols) >= 2:
            return "\n".join(self.counts_lines())
        cols = list(self.cols.values())
        if kind == "pairs" and len(cols) == 2:
            return "\n".join(f"({cell_text(a)}, {cell_text(b)})" for a, b in zip(*cols, strict=True))
        if len(cols) == 1:
            return "\n".join(cell_text(v) for v in cols[0])
        return "\n".join(" | ".join(cell_text(c[i]) for c in cols) for i in range(self.n))
