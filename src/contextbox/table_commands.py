"""The table operations as L1 commands: ``records``, ``extract``, ``count_by``, ``top``, ``unique``,
``filter``, ``stats``, ``sort``, ``join``, ``pairs`` (registered with :func:`commands.register_op`).

``on`` names a table variable; without it ``records``/``extract`` read the context and the
other ops the most recently stored table (the output says which: ``(on: t1)``). A table that
``records``/``extract`` make without ``store`` is kept anyway, as ``t1``, ``t2``, … so the next
op can use it. What the model sees is compact: a table's row count, columns and first rows;
counts as ``value: count`` lines; stats as ``p95=…`` pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import table_ops, table_pairs, table_records
from .context import Context
from .errors import CommandError
from .executors import ActionOutput
from .levels.commands import (
    _VAR_NAME,
    INT,
    STR,
    TABLE_INPUT_OPS,
    Spec,
    as_text,
    latest_table,
    register_op,
)
from .ops import REGEX_TIMEOUT_S, run_guarded
from .table import Table, cell_text

if TYPE_CHECKING:
    from .levels.commands import CommandExecutor

BOOL = (bool,)
FIELD = (str, list)
#: lines of counts / rows of a table shown to the model (the output cap still applies)
SHOW_COUNTS = 50
SHOW_ROWS = 10
#: a regex over a big text may run this many characters per second before it is stopped
MIN_SCAN_RATE = 10_000_000


def _timeout(ex: CommandExecutor, chars: int) -> float:
    base = ex._regex_timeout() or REGEX_TIMEOUT_S
    return max(base, chars / MIN_SCAN_RATE)


def _lookup(ex: CommandExecutor, on: str) -> Any:
    m = _VAR_NAME.match(on)
    assert m  # validate() checked it
    name, index = m.group(1), m.group(2)
    if name not in ex.s.variables:
        raise CommandError(f"no variable {name!r}; variables: {ex._var_list()}")
    value = ex.s.variables[name]
    if index is None:
        return value
    i = int(index)
    if isinstance(value, Table):
        if not -value.n <= i < value.n:
            raise CommandError(f"{name}[{i}] is out of range: the table {name!r} has {value.n} rows")
        return value.row(i)
    if not isinstance(value, list):
        raise CommandError(f"{name!r} is a {type(value).__name__}, not a list; drop the [index]")
    if not -len(value) <= i < len(value):
        raise CommandError(f"{name}[{i}] is out of range: {name!r} has {len(value)} items")
    return value[i]


def _input_table(ex: CommandExecutor, cmd: dict[str, Any]) -> tuple[Table, str]:
    """The table an op works on, and the note saying which when 'on' was not given."""
    on = cmd.get("on")
    if on:
        return Table.coerce(_lookup(ex, on), cmd["op"]), ""
    name = latest_table(ex.s)
    if name is None:
        raise CommandError(f"{cmd['op']} works on a table and there is none yet: make one with "
                           '{"op": "extract", "pattern": "..."} or {"op": "records"}, or name one with "on"')
    return ex.s.variables[name], f" (on: {name})"


def _text_source(ex: CommandExecutor, cmd: dict[str, Any]) -> tuple[Any, str]:
    """The context, a variable's text as a one-document context, or a table (for extract)."""
    on = cmd.get("on")
    if not on:
        return ex.s.context, ""
    value = _lookup(ex, on)
    if isinstance(value, Table) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
        return Table.coerce(value, cmd["op"]), ""
    return Context.from_documents([(on, as_text(value))]), ""


#: ops whose new table is shown as a column profile (values per column) before a few rows
PROFILED = ("records", "extract", "filter", "join")
PROFILE_ROWS = 3


def _auto_name(ex: CommandExecutor) -> str:
    i = 1
    while f"t{i}" in ex.s.variables:
        i += 1
    return f"t{i}"


def _table_out(ex: CommandExecutor, cmd: dict[str, Any], head: str, t: Table, *, keep: bool = False,
               read: list[list[int]] | None = None) -> ActionOutput:
    if t.meta.get("_kind") == "counts":
        body = "\n".join(t.counts_lines(SHOW_COUNTS))
    elif cmd["op"] in PROFILED:  # a new table: what each column holds, then a few rows
        body = "\n".join(t.profile() + [t.render(PROFILE_ROWS)])
    else:
        body = t.render(SHOW_ROWS)
    text = f"{head}\n{body}" if head else body
    if t.meta.get("_kind") == "counts" and t.n > SHOW_COUNTS:
        text += f"\n… {t.n - SHOW_COUNTS:,} more value(s); use top, filter or store"
    meta: dict[str, Any] = {"value": t, "read": read or []}
    if keep and not cmd.get("store"):
        meta["store_as"] = _auto_name(ex)
    return ActionOutput(text, hits=t.n, meta=meta)


def _whole(ex: CommandExecutor, src: Any) -> list[list[int]]:
    return [[0, len(src.text)]] if src is ex.s.context else []


# ----------------------------------------------------------------------------- handlers
def op_records(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    src, _ = _text_source(ex, cmd)
    if isinstance(src, Table):
        raise CommandError("records cuts text; 'on' names a table here — use extract on it, or name a text variable")
    by, rx = cmd.get("by") or "line", bool(cmd.get("regex"))
    t = run_guarded(lambda: table_records.records(src, by, rx), _timeout(ex, len(src.text)), f"records by {by!r}") \
        if rx else table_records.records(src, by, rx)
    how = f"regex {by!r}" if rx else repr(by)
    head = f"records by {how}: {t.n:,} record(s)"
    if t.meta.get("empty_skipped"):
        head += f", {t.meta['empty_skipped']:,} empty skipped"
    return _table_out(ex, cmd, head, t, keep=True, read=_whole(ex, src))


def op_extract(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    src, _ = _text_source(ex, cmd)
    pattern, flags = cmd.get("pattern"), cmd.get("flags", "")
    size = len(src.text) if isinstance(src, Context) else sum(len(str(v)) for v in src.cols.get("text", []))
    if pattern:
        t = run_guarded(lambda: table_records.extract(src, pattern, flags), _timeout(ex, size), f"extract {pattern!r}")
    else:
        t = table_records.extract(src, None)
    head = f"extract {'/' + pattern + '/' if pattern else '(automatic fields)'}: {t.n:,} row(s)"
    if t.n == 0:
        head += "; nothing matched — check the pattern against a line you have read"
    return _table_out(ex, cmd, head, t, keep=True, read=_whole(ex, src) if isinstance(src, Context) else [])


def _counts_head(what: str, t: Table, note: str) -> str:
    total, distinct = t.meta.get("total", 0), t.meta.get("distinct", t.n)
    return f"{what}: {distinct:,} distinct value(s) over {total:,} row(s){note}"


def op_count_by(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    out = table_ops.count_by(t, cmd["field"])
    return _table_out(ex, cmd, _counts_head(f"count_by {_fname(cmd['field'])}", out, note), out)


def op_word_counts(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    out = table_ops.word_counts(t, cmd["field"], cmd.get("stop"))
    head = f"word_counts of {cmd['field']}: {out.meta['distinct']:,} distinct word(s), {out.meta['total']:,} in all{note}"
    return _table_out(ex, cmd, head, out)


def op_top(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    k = cmd.get("k", 10)
    out = table_ops.top(t, cmd["field"], k)
    head = _counts_head(f"top {out.n} of {_fname(cmd['field'])}", out, note)
    return _table_out(ex, cmd, head, out)


def op_unique(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    out = table_ops.unique(t, cmd["field"])
    sample = out.meta["sample"]
    shown = ", ".join(cell_text(v) for v in sample)
    more = f" … ({out.n - len(sample):,} more)" if out.n > len(sample) else ""
    text = (f"unique {cmd['field']}: {out.n:,} distinct value(s) over {t.n:,} row(s){note}\n"
            f"first {len(sample)}: {shown}{more}")
    return ActionOutput(text, hits=out.n, meta={"value": out})


def op_filter(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    out = run_guarded(lambda: table_ops.filter_rows(t, cmd["where"]), _timeout(ex, t.n * 50), "filter")
    return _table_out(ex, cmd, f"filter: kept {out.n:,} of {t.n:,} row(s){note}", out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1e15 else repr(v)
    return "(none)" if v is None else str(v)


def op_stats(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    s = table_ops.stats(t, cmd["field"], cmd.get("method") or "nearest")
    keys = ("count", "sum", "min", "max", "mean", "median", *(f"p{p}" for p in table_ops.PERCENTILES))
    pairs = " ".join(f"{k}={_fmt(s[k])}" for k in keys)
    how = "nearest rank" if s["method"] == "nearest" else f"statistics.quantiles method={s['method']}"
    skipped = f"; {s['skipped']:,} value(s) without a number skipped" if s["skipped"] else ""
    text = f"stats of {s['field']}{note}: {pairs}\n(percentiles: {how}{skipped})"
    return ActionOutput(text, meta={"value": s})


def op_sort(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    out = table_ops.sort_rows(t, cmd["field"], bool(cmd.get("desc")))
    return _table_out(ex, cmd, f"sort by {cmd['field']} {'desc' if cmd.get('desc') else 'asc'}{note}", out)


def op_join(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    on = cmd.get("on")
    if not on:
        raise CommandError('join needs "on": the two table variables, e.g. {"op": "join", "on": ["a", "b"], '
                           '"key": "user"} (or one name for the pairs of its rows)')
    names = [on, on] if isinstance(on, str) else on
    a, b = (Table.coerce(_lookup(ex, n), "join") for n in names)
    if names[0] == names[1]:
        b = a
    out = table_ops.join(a, b, cmd.get("key"), bool(cmd.get("pairs")))
    what = "pairs" if a is b or cmd.get("pairs") else "join"
    key = f" on {cmd['key']!r}" if cmd.get("key") else ""
    return _table_out(ex, cmd, f"{what} of {names[0]} and {names[1]}{key}: {out.n:,} row(s)", out)


#: pairs listed in the output (all of them are in the stored table; final_var gives them all)
SHOW_PAIRS = 60


def op_pairs(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    t, note = _input_table(ex, cmd)
    k = cmd.get("at_least", 1)
    out = table_pairs.pairs(t, cmd["field"], k)
    vals = out.meta["_values"]
    head = (f"pairs of {cmd['field']} values in at least {k} row(s){note}: {len(vals):,} value(s) qualify, "
            f"{out.n:,} pair(s) (smaller, larger)")
    shown = ", ".join(cell_text(v) for v in vals[:SHOW_COUNTS]) + (" …" if len(vals) > SHOW_COUNTS else "")
    lines = [head, f"values: {shown or '(none)'}"]
    if out.n:
        lines += out.head(SHOW_PAIRS).as_text().splitlines()
        if out.n > SHOW_PAIRS:
            lines.append(f"… {out.n - SHOW_PAIRS:,} more pair(s)")
    else:
        lines.append("no pair: fewer than two values qualify (the answer is: none)")
    meta: dict[str, Any] = {"value": out}
    if not cmd.get("store"):
        meta["store_as"] = _auto_name(ex)
    return ActionOutput("\n".join(lines), hits=out.n, meta=meta)


def _fname(field: Any) -> str:
    return field if isinstance(field, str) else "+".join(map(str, field))


_ON = '"on": "t1"'
register_op("records", Spec({}, {"by": STR, "regex": BOOL},
                            '{"op": "records", "by": "blank_line", "store": "recs"}'), op_records)
register_op("extract", Spec({}, {"pattern": STR, "flags": (str, list)},
                            '{"op": "extract", "pattern": "ms (?P<type>[A-Z]\\\\w+) ", "store": "t"}'), op_extract)
register_op("count_by", Spec({"field": FIELD}, {}, '{"op": "count_by", "field": "type", ' + _ON + "}"), op_count_by)
register_op("word_counts", Spec({"field": STR}, {"stop": (list,)},
                                '{"op": "word_counts", "field": "message", "stop": ["the", "a"], ' + _ON + "}"),
            op_word_counts)
register_op("top", Spec({"field": FIELD}, {"k": INT}, '{"op": "top", "field": "ip", "k": 5, ' + _ON + "}"), op_top)
register_op("unique", Spec({"field": STR}, {}, '{"op": "unique", "field": "ip", ' + _ON + "}"), op_unique)
register_op("filter", Spec({"where": (dict, str)}, {},
                           '{"op": "filter", "where": {"level": "ERROR", "status": {"ge": 500}}, ' + _ON + "}"),
            op_filter)
register_op("stats", Spec({"field": STR}, {"method": STR}, '{"op": "stats", "field": "duration", ' + _ON + "}"),
            op_stats)
register_op("sort", Spec({"field": STR}, {"desc": BOOL}, '{"op": "sort", "field": "count", "desc": true}'), op_sort)
register_op("join", Spec({}, {"key": STR, "pairs": BOOL}, '{"op": "join", "on": ["a", "b"], "key": "user"}',
                         on_list=True), op_join)
register_op("pairs", Spec({"field": STR}, {"at_least": INT},
                          '{"op": "pairs", "on": "sel", "field": "user", "at_least": 2, "store": "p"}'), op_pairs)
TABLE_INPUT_OPS.update({"count_by", "top", "unique", "filter", "stats", "sort", "pairs"})
