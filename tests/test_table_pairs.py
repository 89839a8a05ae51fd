"""``pairs`` (table_pairs.py) against plain Python (hypothesis), as an L1 command and in code cells;
deliberate bugs in it (a value paired with itself, both orders, text order, ``>`` for ``>=``) fail the
property."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import pytest
from helpers import cmd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextbox import RLM, Config, Context, table_ops, table_pairs
from contextbox.bench.scoring import score
from contextbox.errors import CommandError
from contextbox.providers import ScriptedProvider
from contextbox.table import Table

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: user ids as ints and as digit strings of other lengths ("9" < "10" only as numbers), names, missing
values = st.one_of(st.integers(100, 112), st.sampled_from([str(i) for i in (1, 2, 9, 10, 11, 30)]),
                   st.sampled_from(["ann", "bob", "Cy"]), st.none())


def _key(v: Any) -> tuple[Any, ...]:
    """Plain Python's order for the pairs: numbers (and digit strings) by value, then text."""
    if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
        return (0, int(v))
    return (1, v)


def reference(vals: list[Any], k: int) -> list[tuple[Any, Any]]:
    counts = Counter(v for v in vals if v is not None)
    qual = sorted((v for v, c in counts.items() if c >= k), key=_key)
    return list(itertools.combinations(qual, 2))


def check(vals: list[Any], k: int) -> None:
    out = table_pairs.pairs(Table({"user": vals, "x": list(range(len(vals)))}), "user", k)
    got = list(zip(out.column("a.user"), out.column("b.user"), strict=True))
    want = reference(vals, k)
    assert got == want
    assert out.columns == ["a.user", "b.user"] and out.meta["pairs"] == len(want)
    assert out.meta["values"] == len({v for p in want for v in p}) or len(want) == 0
    assert table_pairs.qualifying(Table({"user": vals}), "user", k) == sorted(
        (v for v, c in Counter(v for v in vals if v is not None).items() if c >= k), key=_key)
    # the text an answer copies: one "(a, b)" line per pair, which the bench's scorer reads back whole
    text = out.as_text()
    assert text.splitlines() == [f"({a}, {b})" for a, b in want]


@SETTINGS
@given(st.lists(values, max_size=60), st.integers(1, 5))
def test_pairs_is_combinations_of_the_qualifying_values(vals: list[Any], k: int) -> None:
    check(vals, k)


@pytest.mark.parametrize("mutant", ["self_pairs", "both_orders", "text_order", "strict", "missing_counts"])
def test_a_bug_in_pairs_fails_the_property(monkeypatch, mutant: str) -> None:
    """Each deliberate bug is caught by the property test above (hypothesis finds a counterexample)."""
    real_qualifying = table_pairs.qualifying
    if mutant == "self_pairs":
        monkeypatch.setattr(table_pairs.itertools, "combinations", itertools.combinations_with_replacement)
    elif mutant == "both_orders":
        monkeypatch.setattr(table_pairs.itertools, "combinations", itertools.permutations)
    elif mutant == "text_order":
        monkeypatch.setattr(table_pairs, "_order_value", table_ops.order_key)
    elif mutant == "strict":
        monkeypatch.setattr(table_pairs, "qualifying", lambda t, f, k=1: real_qualifying(t, f, k + 1))
    elif mutant == "missing_counts":  # None counted as a value
        monkeypatch.setattr(table_pairs, "column", lambda t, f: ["∅" if v is None else v for v in t.column(f)])

    @settings(max_examples=300, deadline=None, database=None, report_multiple_bugs=False,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(values, max_size=60), st.integers(1, 5))
    def prop(vals: list[Any], k: int) -> None:
        check(vals, k)

    with pytest.raises(AssertionError):
        prop()


def test_pairs_equals_count_by_then_filter_then_join_pairs() -> None:
    """The one step equals the three existing ops it replaces (count_by → filter count → join pairs)."""
    vals = [5, 7, 5, 9, 7, 5, 11, None, 9, 13]
    t = Table({"user": vals})
    counts = table_ops.filter_rows(table_ops.count_by(t, "user"), {"count": {"ge": 2}, "user": {"ne": None}})
    users = Table({"user": counts.column("user")})
    joined = table_ops.join(users, users)
    want = list(zip(joined.column("a.user"), joined.column("b.user"), strict=True))
    out = table_pairs.pairs(t, "user", 2)
    assert list(zip(*out.cols.values(), strict=True)) == want == [(5, 7), (5, 9), (7, 9)]


def test_pairs_text_scores_one_against_the_bench_gold() -> None:
    vals = [31345, 99139, 31345, 42153, 99139, 42153, 5, 42153]
    out = table_pairs.pairs(Table({"user": vals}), "user", 2)
    gold = [list(p) for p in itertools.combinations(sorted({31345, 99139, 42153}), 2)]
    assert score("pairs", out.as_text(), gold) == 1.0
    assert out.as_text().startswith("(31345, 42153)\n")


@pytest.mark.parametrize("args,msg", [
    (("user", 0), "at_least"), (("user", True), "at_least"), (("user", "2"), "at_least"),
    (("nope", 1), "nope"), (("", 1), "column name"),
])
def test_bad_arguments_are_one_line_errors(args: tuple[Any, Any], msg: str) -> None:
    with pytest.raises(CommandError) as e:
        table_pairs.pairs(Table({"user": [1, 2]}), *args)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_too_many_pairs_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(table_pairs, "MAX_JOIN_ROWS", 9)
    with pytest.raises(CommandError, match="10 pairs of 5 values"):
        table_pairs.pairs(Table({"u": list(range(5))}), "u")
    assert table_pairs.pairs(Table({"u": list(range(4))}), "u").n == 6


LINES = "".join(f"2024-03-01 08:00:{i % 60:02d} {lvl} user={u} done\n"
                for i, (lvl, u) in enumerate([("ERROR", 7), ("INFO", 3), ("ERROR", 12), ("ERROR", 7), ("ERROR", 3),
                                              ("ERROR", 12), ("INFO", 9), ("ERROR", 9), ("ERROR", 12)]))


def test_the_l1_command_lists_the_pairs_and_final_var_answers_with_them() -> None:
    replies = [cmd("extract", pattern=r"(?P<level>[A-Z]+) user=(?P<user>\d+)", store="t"),
               cmd("filter", on="t", where={"level": "ERROR"}, store="e"),
               cmd("pairs", on="e", field="user", at_least=2, store="p"),
               cmd("final_var", name="p")]
    rlm = RLM(model=ScriptedProvider(replies), config=Config(), levels="l1")
    res = rlm.run("pairs?", Context.from_value(LINES))
    step = next(s for s in res.steps if s.op == "pairs")
    # users with >= 2 ERROR lines: 7 (2), 12 (3); 3 and 9 have one each
    assert "2 value(s) qualify, 1 pair(s)" in step.output and "values: 7, 12" in step.output
    assert res.answer == "(7, 12)"
    none = RLM(model=ScriptedProvider(replies[:2] + [cmd("pairs", on="e", field="user", at_least=3),
                                                     cmd("final", answer="none")]), config=Config(), levels="l1")
    res = none.run("pairs?", Context.from_value(LINES))
    assert "no pair" in next(s for s in res.steps if s.op == "pairs").output


def test_the_l1_command_reports_a_bad_field_and_keeps_running() -> None:
    replies = [cmd("extract", pattern=r"user=(?P<user>\d+)", store="t"), cmd("pairs", on="t", field="usr"),
               cmd("pairs", on="t", field="user", at_least=2), cmd("final_var", name="t1")]
    res = RLM(model=ScriptedProvider(replies), config=Config(), levels="l1").run("q?", Context.from_value(LINES))
    bad = [s for s in res.steps if s.op == "pairs"][0]
    assert bad.error and "usr" in bad.output
    # every user has >= 2 lines; kept without "store" under an automatic name, numbers in numeric order
    assert res.answer == "(3, 7)\n(3, 9)\n(3, 12)\n(7, 9)\n(7, 12)\n(9, 12)"


def test_pairs_in_a_code_cell() -> None:
    code = ("```repl\nrows = extract(r'(?P<level>[A-Z]+) user=(?P<user>\\d+)')\n"
            "p = pairs(filter_(rows, {'level': 'ERROR'}), 'user', 2)\nFINAL(str(p))\n```")
    rlm = RLM(model=ScriptedProvider([cmd("count", pattern="ERROR"), code]), config=Config(), levels="l1,l2")
    res = rlm.run("q?", Context.from_value(LINES))
    assert res.status == "answered", res.reason
    assert json.loads(res.answer.replace("'", '"')) == [["7", "12"]]


def test_the_l3_worker_helper_matches_the_host_function() -> None:
    """The L3 worker runs pairs from its own copy of the package (table_ops' sibling module)."""
    from contextbox.levels import _native_worker

    rows = [{"user": u} for u in (3, 7, 3, 12, 7, 12, 12, 9)]
    assert _native_worker._TABLE_FNS["pairs"](table_ops, None, rows, "user", 2) == [[3, 7], [3, 12], [7, 12]]


def test_the_schema_offers_pairs_over_any_column_once_a_table_exists() -> None:
    from contextbox.schema import command_schema

    t = Table({"user": [1, 2], "label": ["a", "b"]})
    schema = command_schema(("l1",), variables={"t": t}, fields=["label"])
    branch = next(b for b in schema["anyOf"] if b["properties"]["op"]["const"] == "pairs")
    assert branch["properties"]["field"] == {"enum": ["user", "label"]}  # not limited to the aggregate's column
    assert branch["properties"]["on"] == {"enum": ["t"]} and branch["required"] == ["thought", "op", "on", "field"]
    assert branch["properties"]["at_least"]["minimum"] == 1
