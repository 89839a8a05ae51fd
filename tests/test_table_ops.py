"""The table operations against plain Python (hypothesis), and the automatic fields."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from contextbox import auto_fields, ops, table_ops
from contextbox.context import Context
from contextbox.errors import CommandError
from contextbox.table import Table

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(st.sampled_from(["a", "b", "c", "B", "ab", ""]), st.none(), st.integers(-3, 3))
texts = st.text(alphabet="ab \n\r\t-x1", max_size=80)


def col(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return [r.get(name) for r in rows]


# ----------------------------------------------------------------------------- count_by / top / unique
@SETTINGS
@given(st.lists(values, max_size=60))
def test_count_by_is_counter(vals: list[Any]) -> None:
    t = Table({"v": vals})
    out = table_ops.count_by(t, "v")
    got = dict(zip(out.column("v"), out.column("count"), strict=True))
    assert got == Counter(vals)
    assert out.meta["total"] == len(vals) and out.meta["distinct"] == len(set(vals))
    keys = [(v is None, -c, table_ops.order_key(v)) for v, c in zip(out.column("v"), out.column("count"), strict=True)]
    assert keys == sorted(keys)  # most frequent first, ties by value, missing values last


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from("xy"), st.sampled_from([1, 2, None])), max_size=40))
def test_count_by_several_fields(pairs: list[tuple[str, Any]]) -> None:
    rows = [{"a": a, "b": b} for a, b in pairs]
    out = table_ops.count_by(rows, ["a", "b"])
    got = {(r["a"], r["b"]): r["count"] for r in out}
    assert got == Counter(pairs)


def test_count_by_missing_bucket_and_ties() -> None:
    out = table_ops.count_by([{"t": "b"}, {"t": None}, {"t": "a"}, {"t": "b"}, {"x": 1}], "t")
    assert out.to_rows() == [{"t": "b", "count": 2}, {"t": "a", "count": 1}, {"t": None, "count": 2}]
    assert out.as_text() == "b: 2\na: 1\n(missing): 2"  # "no value" is never the most frequent value
    unhashable = table_ops.count_by([{"t": [1, 2]}, {"t": [1, 2]}, {"t": {"k": 1}}], "t")
    assert unhashable.column("count") == [2, 1]


@SETTINGS
@given(st.lists(values, max_size=60), st.integers(1, 8))
def test_top_is_head_of_count_by(vals: list[Any], k: int) -> None:
    full = table_ops.count_by(Table({"v": vals}), "v")
    assert table_ops.top(Table({"v": vals}), "v", k) == full.head(k)
    present = Counter(v for v in vals if v is not None)
    ranked = [c for _, c in present.most_common()] + ([vals.count(None)] if None in vals else [])
    assert ranked[:k] == table_ops.top(Table({"v": vals}), "v", k).column("count")
    with pytest.raises(CommandError, match="positive"):
        table_ops.top(Table({"v": vals}), "v", 0)


@SETTINGS
@given(st.lists(values, max_size=60))
def test_unique_first_seen(vals: list[Any]) -> None:
    out = table_ops.unique(Table({"v": vals}), "v")
    assert out.column("v") == list(dict.fromkeys(vals))
    assert out.meta["distinct"] == len(set(vals)) and out.meta["sample"] == list(dict.fromkeys(vals))[:20]


# ----------------------------------------------------------------------------- stats
def nearest_rank(xs: list[Any], p: int) -> Any:
    s = sorted(xs)
    rank = math.ceil(Fraction(p, 100) * len(s))
    return s[max(rank, 1) - 1]


@SETTINGS
@given(st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=200))
def test_stats_integers(xs: list[int]) -> None:
    s = table_ops.stats(Table({"v": [f"{x}ms" for x in xs]}), "v")
    assert s["count"] == len(xs) and s["sum"] == sum(xs) and s["min"] == min(xs) and s["max"] == max(xs)
    assert Fraction(s["mean"]) == Fraction(sum(xs), len(xs)) or math.isclose(s["mean"], statistics.mean(xs))
    assert s["median"] == statistics.median(xs)
    for p in (50, 90, 95, 99):
        assert s[f"p{p}"] == nearest_rank(xs, p) and isinstance(s[f"p{p}"], int)
    if len(xs) > 1:
        for method in ("inclusive", "exclusive"):
            q = statistics.quantiles(xs, n=100, method=method)
            m = table_ops.stats([{"v": x} for x in xs], "v", method)
            assert [m[f"p{p}"] for p in (50, 90, 95, 99)] == [q[p - 1] for p in (50, 90, 95, 99)]


@SETTINGS
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=100))
def test_stats_floats(xs: list[float]) -> None:
    s = table_ops.stats(Table({"v": xs}), "v")
    assert s["median"] == statistics.median(xs)
    assert math.isclose(s["sum"], math.fsum(xs), abs_tol=1e-6)
    assert [s[f"p{p}"] for p in (50, 90, 95, 99)] == [nearest_rank(xs, p) for p in (50, 90, 95, 99)]


def test_stats_parsing_and_skipped() -> None:
    rows = [{"d": v} for v in ["123ms", "1,234", "-4.5", "n/a", None, "x=7", 3, True]]
    s = table_ops.stats(rows, "d")
    assert s["count"] == 5 and s["skipped"] == 3  # n/a, None, True
    assert s["sum"] == 123 + 1234 - 4.5 + 7 + 3 and s["min"] == -4.5 and s["max"] == 1234
    assert table_ops.stats([{"d": "7"}, {"d": "9"}], "d")["mean"] == 8  # exact: stays an int
    assert isinstance(table_ops.stats([{"d": "7"}, {"d": "9"}], "d")["mean"], int)
    empty = table_ops.stats([{"d": "none"}], "d")
    assert empty["count"] == 0 and empty["p95"] is None and empty["skipped"] == 1
    with pytest.raises(CommandError, match="method"):
        table_ops.stats(rows, "d", "linear")


# ----------------------------------------------------------------------------- filter
nums = st.integers(-5, 5)


@SETTINGS
@given(st.lists(st.tuples(nums, st.sampled_from(["Apple", "banana", "cherry", "APPLE pie"])), max_size=40),
       st.sampled_from(["gt", "ge", "lt", "le", "eq", "ne"]), nums)
def test_filter_numeric_is_list_comprehension(rows: list[tuple[int, str]], op: str, k: int) -> None:
    table = [{"n": f"{n}ms", "s": s} for n, s in rows]
    py = {"gt": lambda x: x > k, "ge": lambda x: x >= k, "lt": lambda x: x < k, "le": lambda x: x <= k,
          "eq": lambda x: x == k, "ne": lambda x: x != k}[op]
    got = table_ops.filter_rows(table, {"n": {op: k}}).to_rows()
    assert got == [r for r, (n, _) in zip(table, rows, strict=True) if py(n)]


@SETTINGS
@given(st.lists(st.tuples(nums, st.sampled_from(["Apple", "banana", "cherry", "APPLE pie", None])), max_size=40))
def test_filter_text_ops_and_and(rows: list[tuple[int, Any]]) -> None:
    table = [{"n": n, "s": s} for n, s in rows]
    f = table_ops.filter_rows
    assert f(table, {"s": {"contains": "apple"}}).to_rows() == [r for r in table if r["s"] and "apple" in r["s"].lower()]
    assert f(table, {"s": {"startswith": "b"}}).to_rows() == [r for r in table if r["s"] and r["s"].startswith("b")]
    assert f(table, {"s": {"regex": "^[A-Z]"}}).to_rows() == [r for r in table if r["s"] and re.search("^[A-Z]", r["s"])]
    assert f(table, {"s": ["banana", "cherry"]}).to_rows() == [r for r in table if r["s"] in ("banana", "cherry")]
    assert f(table, {"s": {"not_in": ["banana"]}}).to_rows() == [r for r in table if r["s"] != "banana"]
    assert f(table, {"n": {"ge": 0}, "s": "cherry"}).to_rows() == [r for r in table if r["n"] >= 0 and r["s"] == "cherry"]
    assert f(table, "n >= 1 and n < 4").to_rows() == [r for r in table if 1 <= r["n"] < 4]


def test_filter_count_table_and_errors() -> None:
    counts = table_ops.count_by([{"t": t} for t in "aaabbc"], "t")
    kept = table_ops.filter_rows(counts, "count >= 2")
    assert kept.as_text() == "a: 3\nb: 2"  # still a count table
    assert table_ops.filter_rows([{"d": "2024-03-02"}, {"d": "2024-02-28"}], {"d": {"ge": "2024-03-01"}}).n == 1
    assert table_ops.filter_rows([{"s": "500"}, {"s": 500}, {"s": "5000"}], {"s": 500}).n == 2
    with pytest.raises(CommandError, match="unknown op 'bigger'.*ops: eq"):
        table_ops.filter_rows(counts, {"count": {"bigger": 1}})
    with pytest.raises(CommandError, match="columns are: t, count"):
        table_ops.filter_rows(counts, {"nope": 1})
    with pytest.raises(CommandError, match="cannot read the condition"):
        table_ops.filter_rows(counts, "count is big")


# ----------------------------------------------------------------------------- sort
@SETTINGS
@given(st.lists(st.one_of(st.integers(-50, 50), st.none()), max_size=40), st.booleans())
def test_sort_numeric_is_sorted(xs: list[Any], desc: bool) -> None:
    rows = [{"v": None if x is None else f"{x}ms", "i": i} for i, x in enumerate(xs)]
    got = table_ops.sort_rows(rows, "v", desc).to_rows()
    present = [r for r in rows if r["v"] is not None]
    want = sorted(present, key=lambda r: int(r["v"][:-2]), reverse=desc) + [r for r in rows if r["v"] is None]
    assert got == want


@SETTINGS
@given(st.lists(st.text(alphabet="abcAB1", max_size=4), max_size=40), st.booleans())
def test_sort_text_is_sorted(xs: list[str], desc: bool) -> None:
    assume(not all(table_ops.as_number(x) is not None for x in xs))
    rows = [{"v": x, "i": i} for i, x in enumerate(xs)]
    assert table_ops.sort_rows(rows, "v", desc).to_rows() == sorted(rows, key=lambda r: r["v"], reverse=desc)


# ----------------------------------------------------------------------------- join
small = st.lists(st.tuples(st.integers(0, 4), st.sampled_from("pqr")), max_size=12)


@SETTINGS
@given(small, small)
def test_join_on_key_is_nested_loops(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> None:
    ta = [{"k": k, "x": x} for k, x in a]
    tb = [{"k": k, "y": y} for k, y in b]
    got = table_ops.join(ta, tb, "k").to_rows()
    assert got == [{"k": r["k"], "x": r["x"], "y": s["y"]} for r in ta for s in tb if r["k"] == s["k"]]
    same = table_ops.join(ta, [{"k": k, "x": y} for k, y in b], "k").to_rows()
    assert all(set(r) == {"k", "a.x", "b.x"} for r in same)


@SETTINGS
@given(small, small)
def test_join_cross_product(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> None:
    got = table_ops.join([{"k": k} for k, _ in a], [{"y": y} for _, y in b]).to_rows()
    assert got == [{"k": k, "y": y} for k, _ in a for _, y in b]


@SETTINGS
@given(st.lists(st.integers(1, 30), max_size=15))
def test_join_pairs_of_distinct_rows(users: list[int]) -> None:
    rows = [{"user": str(u)} for u in users]
    got = [(r["a.user"], r["b.user"]) for r in table_ops.join(rows, rows).to_rows()]  # a is b: pairs
    want = sorted({(min(x, y), max(x, y)) for x in users for y in users if x != y})
    assert got == [(str(x), str(y)) for x, y in want]  # numeric order, each pair once
    two = table_ops.join(rows, [{"user": str(u)} for u in users], pairs=True)
    assert [(r["a.user"], r["b.user"]) for r in two] == got


def test_join_pairs_with_key_and_text_form() -> None:
    rows = [{"date": d, "user": u} for d, u in [("d1", "9"), ("d1", "10"), ("d2", "3"), ("d1", "9"), ("d2", "4")]]
    out = table_ops.join(rows, rows, key="date")
    assert out.to_rows() == [{"date": "d1", "a.user": "9", "b.user": "10"},
                             {"date": "d2", "a.user": "3", "b.user": "4"}]
    users = table_ops.unique(rows, "user")
    assert table_ops.join(users, users).as_text().splitlines()[:2] == ["(3, 4)", "(3, 9)"]


def test_join_cap_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_ops, "MAX_JOIN_ROWS", 10)
    with pytest.raises(CommandError, match="join would make 12 rows, more than the limit of 10"):
        table_ops.join([{"a": i} for i in range(3)], [{"b": i} for i in range(4)])
    with pytest.raises(CommandError, match="more than the limit"):
        table_ops.join([{"u": i} for i in range(6)], [{"u": i} for i in range(6)], pairs=True)
    assert table_ops.join([{"u": i} for i in range(5)], [{"u": i} for i in range(5)], pairs=True).n == 10
    with pytest.raises(CommandError, match="same columns"):
        table_ops.join([{"u": 1}], [{"v": 1}], pairs=True)
    with pytest.raises(CommandError, match="no column 'k'"):
        table_ops.join([{"u": 1}], [{"u": 1}], key="k")


# ----------------------------------------------------------------------------- records
@SETTINGS
@given(texts)
def test_records_lines_are_splitlines(text: str) -> None:
    t = table_ops.records(text)
    lines = ops.lines(text)
    want = [(ln.removesuffix("\r"), i) for i, ln in enumerate(lines) if ln.strip()]
    assert list(zip(t.column("text"), t.column("line"), strict=True)) == want
    assert t.meta["empty_skipped"] == len(lines) - len(want)
    assert set(t.column("doc")) <= {"<text>"}


@SETTINGS
@given(texts, st.sampled_from(["-", "x1", "\n", "ab"]))
def test_records_delimiter_is_split(text: str, delim: str) -> None:
    t = table_ops.records(text, by=delim)
    want, pos = [], 0
    for piece in text.split(delim):
        start = pos + len(piece) - len(piece.lstrip())
        if piece.strip():
            want.append((piece.strip(), text.count("\n", 0, start)))
        pos += len(piece) + len(delim)
    assert list(zip(t.column("text"), t.column("line"), strict=True)) == want
    assert t.meta["empty_skipped"] == len(text.split(delim)) - len(want)


@SETTINGS
@given(texts)
def test_records_blank_lines_and_regex(text: str) -> None:
    paras = [p.strip() for p in re.split(r"\n(?:[ \t\r\f\v]*\n)+", text)]
    assert table_ops.records(text, by="blank_line").column("text") == [p for p in paras if p]
    starts = [m.start() for m in re.finditer(r"^a", text, re.M)]
    bounds = ([0] if not starts or starts[0] else []) + starts + [len(text)]
    want = [text[x:y].strip() for x, y in zip(bounds, bounds[1:], strict=False)]
    assert table_ops.records(text, by="^a", regex=True).column("text") == [w for w in want if w]


def test_records_multi_document() -> None:
    ctx = Context.from_documents([("one.log", "a\n\nb\n"), ("two.log", "c\nd")])
    t = table_ops.records(ctx)
    assert t.to_rows() == [
        {"text": "a", "doc": "one.log", "line": 1}, {"text": "b", "doc": "one.log", "line": 3},
        {"text": "c", "doc": "two.log", "line": 5}, {"text": "d", "doc": "two.log", "line": 6},
    ]
    assert all(ops.lines(ctx.text)[r["line"]] == r["text"] for r in t)
    assert t.meta["empty_skipped"] == 1
    paras = table_ops.records(ctx, by="blank_line")
    assert paras.column("text") == ["a", "b", "c\nd"] and paras.column("line") == [1, 3, 5]
    with pytest.raises(CommandError, match="records needs 'by'"):
        table_ops.records("x", by="")


# ----------------------------------------------------------------------------- extract
line_text = st.text(alphabet="ab1 :=\r", max_size=12)
PATTERNS = [r"a+", r"(?P<n>\d)", r"b(?P<x>a)?", r"^a", r"a$", r"(a)(b)", r"\s*b", r"x*", r"a\s+b", r"(?P<k>\w+)=(?P<v>\w*)"]


@SETTINGS
@given(st.lists(line_text, max_size=12), st.sampled_from(PATTERNS), st.booleans())
def test_extract_is_re_per_line(lines: list[str], pattern: str, trailing: bool) -> None:
    text = "\n".join(lines) + ("\n" if trailing and lines else "")
    t = table_ops.extract(text, pattern)
    rx = re.compile(pattern, re.M)
    names = list(rx.groupindex) or ["match"] + [f"g{i}" for i in range(1, rx.groups + 1)]
    want, missing = [], 0
    for i, ln in enumerate(ops.lines(text)):
        m = rx.search(ln)
        if m is None:
            missing += 1
            continue
        vals = [m.group(n) for n in rx.groupindex] if rx.groupindex else [m.group(g) for g in range(rx.groups + 1)]
        want.append({**dict(zip(names, vals, strict=True)), "doc": "<text>", "line": i})
    assert t.to_rows() == want
    assert t.meta["unmatched"] == missing


def test_extract_spanning_match_is_searched_in_its_line() -> None:
    t = table_ops.extract("x a\nb x\nab", r"a\s+b|x")
    assert t.to_rows() == [{"match": "x", "doc": "<text>", "line": 0}, {"match": "x", "doc": "<text>", "line": 1}]


def test_extract_multi_document_and_table_input() -> None:
    ctx = Context.from_documents([("a.log", "ERROR DiskFull\nok\n"), ("b.log", "ERROR Net\nERROR DiskFull")])
    t = table_ops.extract(ctx, r"ERROR (?P<type>\w+)")
    assert t.to_rows() == [{"type": "DiskFull", "doc": "a.log", "line": 1},
                           {"type": "Net", "doc": "b.log", "line": 4},
                           {"type": "DiskFull", "doc": "b.log", "line": 5}]
    assert t.meta["unmatched"] == 1  # "ok"; the ==> headers <== are not lines of a document
    recs = table_ops.records("Date: 1\nUser: 5\n\nDate: 2\nUser: 6\n\nnothing", by="blank_line")
    got = table_ops.extract(recs, r"User: (?P<user>\d+)")
    assert got.to_rows() == [{"user": "5", "doc": "<text>", "line": 0}, {"user": "6", "doc": "<text>", "line": 3}]
    assert got.meta["unmatched"] == 1
    with pytest.raises(CommandError, match="needs a 'text' column"):
        table_ops.extract([{"a": "x"}], "x")


def test_extract_errors() -> None:
    with pytest.raises(CommandError, match=r"group name 'line' is taken.*\(\?P<line_value>"):
        table_ops.extract("x", r"(?P<line>x)")
    with pytest.raises(CommandError, match="bad regex"):
        table_ops.extract("x", r"(unclosed")
    with pytest.raises(CommandError, match="works on text"):
        table_ops.extract(42, "x")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- automatic fields
def test_auto_fields_log_line() -> None:
    row = auto_fields.parse_line('2024-03-01 08:00:01 ERROR 10.0.0.1 GET /api/x 500 123ms DiskFull "disk is full"')
    assert row == {"date": "2024-03-01", "time": "08:00:01", "level": "ERROR", "ip": "10.0.0.1", "method": "GET",
                   "path": "/api/x", "status": "500", "duration": "123ms", "name": "DiskFull",
                   "message": "disk is full"}
    without = auto_fields.parse_line('2024-03-01 08:00:02 INFO 10.0.0.2 POST /b 200 7ms "fine"')
    assert set(without) == set(row) - {"name"}  # the optional token leaves the other columns as they are


def test_auto_fields_other_shapes() -> None:
    p = auto_fields.parse_line
    assert p("Date: Jan 02, 2023 || User: 12345 || Instance: What is X?") == {
        "Date": "Jan 02, 2023", "User": "12345", "Instance": "What is X?"}
    assert p('level=warn user="ann lee" took=12ms line=3') == {
        "level": "warn", "user": "ann lee", "took": "12ms", "line_": "3"}
    assert p('{"user": "bob", "n": 3, "req": {"path": "/x"}, "tags": [1]}') == {
        "user": "bob", "n": 3, "req.path": "/x", "tags": [1]}
    assert p("a\tb\t42") == {"word": "a", "word2": "b", "number": "42"}
    assert p("user: ann, action: login;  result: ok") == {"user": "ann", "action": "login", "result": "ok"}
    assert p("[WARN] NullPointerException at java.lang.Thread 42% 1,234 -4.5 fe80::1 https://x.org/a") == {
        "level": "WARN", "name": "NullPointerException", "word": "at", "name2": "java.lang.Thread", "number": "42%",
        "number2": "1,234", "number3": "-4.5", "ip": "fe80::1", "url": "https://x.org/a"}
    assert p("2024-03-05T10:11:12.123Z 12:00 03/01/2024 Jan 5, 2024 404 1.5s") == {
        "timestamp": "2024-03-05T10:11:12.123Z", "time": "12:00", "date": "03/01/2024", "date2": "Jan 5, 2024",
        "number": "404", "duration": "1.5s"}  # no method or path: a 3-digit number is a number
    assert p("INFO cache miss for key ten") == {"level": "INFO", "message": "cache miss for key ten"}
    assert p("   ") == {}


LOG_TOKENS = [
    "2024-03-01", "08:00:01", "08:00:01.5", "2024-03-01T08:00:01Z", "ERROR", "INFO", "GET", "POST", "10.0.0.1",
    "/api/x", "/a.", "500", "200", "5000", "12ms", "3.5s", "42", "-7", "DiskFull", "Ab", "disk", "x9", "user=bob",
    "line=3", "status=201", '"quoted words"', '"a|b"', "Jan", "02,", "2023", "[WARN]", "a_b", "x.y", "{", "key:",
    "|", "\t", "ok.", "v2.0", "ERROR:", "€", '"a|b|c"', "404", "DELETE", "/", "x=", "=y", "1e5", "Mar",
]
log_tokens = st.sampled_from(LOG_TOKENS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(log_tokens, min_size=1, max_size=8), min_size=1, max_size=3), st.data())
def test_templates_give_exactly_the_per_line_fields(bases: list[list[str]], data: Any) -> None:
    """The whole-text fast path (learnt line templates) equals parse_line on every line.

    Each base line comes 10 times (so a template is learnt from it), then in variants with a
    token or two swapped for any other: a template that matched too much would give one of
    them other fields than parse_line does."""
    lines = [" ".join(b) for b in bases for _ in range(10)]
    for _ in range(data.draw(st.integers(5, 40))):
        toks = list(data.draw(st.sampled_from(bases)))
        for _ in range(data.draw(st.integers(1, 2))):
            toks[data.draw(st.integers(0, len(toks) - 1))] = data.draw(log_tokens)
        lines.append(" ".join(toks) + data.draw(st.sampled_from(["", " ", "\r"])))
    text = "\n".join(lines) + "\n"
    got = table_ops.extract(text)
    acc = auto_fields.Columns()
    unmatched = 0
    for i, ln in enumerate(ops.lines(text)):
        row = auto_fields.parse_line(ln)
        if row:
            acc.add(row.keys(), row.values(), "<text>", i)
        else:
            unmatched += 1
    want = Table(acc.columns())
    assert got == want and got.columns == want.columns and got.meta["unmatched"] == unmatched


def _fast_equals_slow(text: str) -> None:
    got = table_ops.extract(text)
    acc = auto_fields.Columns()
    for i, ln in enumerate(ops.lines(text)):
        row = auto_fields.parse_line(ln)
        if row:
            acc.add(row.keys(), row.values(), "<text>", i)
    want = Table(acc.columns())
    assert got.n == want.n
    for i in range(got.n):  # row by row first, for a readable failure
        assert (ops.lines(text)[got.row(i)["line"]], got.row(i)) == (ops.lines(text)[want.row(i)["line"]], want.row(i))
    assert got == want and got.columns == want.columns


@pytest.mark.parametrize("base", [
    '2024-03-01 08:00:01 ERROR 10.0.0.1 GET /api/x 500 123ms DiskFull "disk is full"',
    "2024-03-01T08:00:01Z INFO api req=ab12 POST /v1/items/5 status=200 took=12ms",
    'GET /a 42 -7 x9 disk "m"',
])
def test_templates_against_every_one_token_change(base: str) -> None:
    """Every line that differs from a learnt template's line in one token gets parse_line's fields."""
    toks = base.split(" ")
    vocab = sorted(set(LOG_TOKENS) | set(toks))
    lines = [base] * 10
    for i in range(len(toks)):
        for v in vocab:
            lines.append(" ".join(toks[:i] + [v] + toks[i + 1:]))
    _fast_equals_slow("\n".join(lines) + "\n")


def test_templates_are_used_on_a_log() -> None:
    from random import Random

    from contextbox.bench.logs import make_log

    text, _ = make_log(40_000, Random(3))
    tpl = auto_fields.Templates()
    tpl.learn(ops.lines(text))
    assert len(tpl.shapes) == 2  # lines with and without the error type
    assert tpl.rx is not None and all(tpl.rx.match(ln) for ln in ops.lines(text))
    t = table_ops.extract(text)
    assert t.columns[:8] == ["date", "time", "level", "ip", "method", "path", "status", "duration"]
    assert Counter(v for v in t.column("name") if v) == Counter(re.findall(r"ms (\w+) \"", text))


@SETTINGS
@given(st.lists(st.text(alphabet="ab cAB.", max_size=12) | st.none(), max_size=30))
def test_word_counts_is_a_counter_of_casefolded_words(vals: list[Any]) -> None:
    import re as _re

    out = table_ops.word_counts(Table({"m": vals}), "m", stop=["a"])
    ref = Counter(w for v in vals if v is not None for w in _re.findall(r"\w+", v.casefold()) if w != "a")
    assert dict(zip(out.column("word"), out.column("count"), strict=True)) == ref
    keys = [(-c, w) for w, c in zip(out.column("word"), out.column("count"), strict=True)]
    assert keys == sorted(keys) and out.meta["total"] == sum(ref.values())
    with pytest.raises(CommandError, match="list of words"):
        table_ops.word_counts(Table({"m": vals}), "m", stop="the")


def test_filter_compares_dates_as_dates_across_formats():
    import datetime as dt

    from hypothesis import given
    from hypothesis import strategies as st

    fmts = ["%Y-%m-%d", "%b %d, %Y", "%d %B %Y"]

    @given(st.lists(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)), min_size=1, max_size=30),
           st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)),
           st.sampled_from(fmts), st.sampled_from(fmts), st.sampled_from(["lt", "le", "gt", "ge"]))
    def check(days, bound, cell_fmt, value_fmt, op):
        t = table_ops.Table({"d": [d.strftime(cell_fmt) for d in days], "i": list(range(len(days)))})
        got = table_ops.filter_rows(t, {"d": {op: bound.strftime(value_fmt)}}).column("i")
        cmp = {"lt": lambda a: a < bound, "le": lambda a: a <= bound, "gt": lambda a: a > bound,
               "ge": lambda a: a >= bound}[op]
        assert got == [i for i, d in enumerate(days) if cmp(d)]

    check()
