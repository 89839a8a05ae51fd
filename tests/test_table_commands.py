"""The table ops as L1 commands (through the engine, scripted model) and as code-cell helpers (L2, L3)."""

from __future__ import annotations

import json
import re
from collections import Counter
from random import Random
from typing import Any

import pytest
from helpers import cmd, fed_back, outputs, run
from test_code_levels import make_session
from test_code_levels import run as run_cell

from contextbox import Context, ops
from contextbox.bench.logs import make_log
from contextbox.errors import CommandError
from contextbox.executors import Action, Session, executor_factory
from contextbox.levels.commands import SPECS, CommandExecutor, as_text, validate
from contextbox.schema import TABLE_SHAPES, command_schema
from contextbox.table import Table
from contextbox.types import Limits

ERR_RE = r"ms (?P<type>[A-Z]\w+) \""


def log(size: int = 30_000, seed: int = 7) -> str:
    return make_log(size, Random(seed))[0]


def errors_per_line(text: str) -> Counter[str]:
    """The error types, independently: one regex search per line."""
    return Counter(m.group(1) for ln in text.splitlines() if (m := re.search(r"ms ([A-Z]\w+) \"", ln)))


def executor(value: Any) -> CommandExecutor:
    return CommandExecutor(Session(Context.from_value(value), Limits(), ("l1",), "t"))


def do(ex: CommandExecutor, **c: Any) -> str:
    return ex.run(Action("command", "l1", c["op"], c)).text


# ----------------------------------------------------------------------------- through the engine
def test_extract_count_by_final_var_is_exactly_counter() -> None:
    text = log()
    res, rlm = run([cmd("extract", pattern=ERR_RE, store="errs"), cmd("count_by", field="type", on="errs",
                                                                       store="counts"),
                    cmd("final_var", name="counts")], text)
    assert res.status == "answered"
    got = {k: int(v) for k, v in (ln.rsplit(": ", 1) for ln in res.answer.splitlines())}
    want = errors_per_line(text)
    assert got == dict(want) and sum(want.values()) > 20
    assert [c for _, c in Counter(got).most_common()] == list(got.values())  # most frequent first
    seen = fed_back(rlm)
    assert f"{sum(want.values()):,} row(s)" in seen[0] and "columns: type, doc, line" in seen[0]
    assert f"count_by type: {len(want)} distinct value(s) over {sum(want.values()):,} row(s)\n" in seen[1]


def test_implicit_table_automatic_fields_and_stats() -> None:
    text = log(20_000, 3)
    res, rlm = run([cmd("extract"), cmd("stats", field="duration"), cmd("top", field="ip", k=3),
                    cmd("final", answer="done")], text)
    assert res.status == "answered"
    seen = fed_back(rlm)
    assert "(stored in 't1')" in seen[0] and "(automatic fields)" in seen[0]
    durations = sorted(int(m) for m in re.findall(r" (\d+)ms ", text))
    p95 = durations[-(-95 * len(durations) // 100) - 1]
    assert "stats of duration (on: t1): count=" in seen[1] and f" p95={p95} " in seen[1]
    assert f"count={len(durations)} " in seen[1] and f"sum={sum(durations)} " in seen[1]
    ips = Counter(ln.split()[3] for ln in text.splitlines())
    top3 = "\n".join(f"{ip}: {n}" for ip, n in sorted(ips.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
    assert top3 in seen[2] and "(on: t1)" in seen[2]


def test_errors_are_one_line_and_the_run_goes_on() -> None:
    text = log(8_000)
    bad = [
        cmd("count_by", field="type"),  # no table yet
        cmd("extract", pattern=r"(?P<line>\d+)"),  # reserved group name
        cmd("extract", pattern="(unclosed"),
        cmd("extract", pattern=ERR_RE),
        cmd("count_by", field="kind"),  # no such column
        cmd("filter", where={"type": {"bigger": 3}}),
        cmd("stats", field="type", method="median"),
        cmd("join", on=["t1"]),
        cmd("top", field="type", k=0),
        cmd("final", answer="ok"),
    ]
    res, rlm = run(bad, text, max_consecutive_errors=20)
    assert res.status == "answered" and res.answer == "ok"
    outs = outputs(res)
    errors = [o for i, o in enumerate(outs) if i != 3 and i != len(outs) - 1]
    assert all(o.startswith("error: ") and "\n" not in o for o in errors), errors
    assert "there is none yet" in errors[0] and "'line' is taken" in errors[1] and "bad regex" in errors[2]
    assert "columns are: type, doc, line" in errors[3] and "unknown op 'bigger'" in errors[4]
    assert "method" in errors[5] and "two table variable names" in errors[6] and "positive" in errors[7]


def test_multi_document_records_and_count_by_doc() -> None:
    docs = {"a.log": "x 1\n\ny 2\n", "b.log": "z 3\nw 4\nv 5"}
    ctx = Context.from_value(docs)
    res, rlm = run([cmd("records", store="recs"), cmd("count_by", field="doc", on="recs", store="per"),
                    cmd("get", name="recs[3]"), cmd("final_var", name="per")], ctx)
    assert res.answer == "b.log: 3\na.log: 2"
    seen = fed_back(rlm)
    assert "records by 'line': 5 record(s), 1 empty skipped" in seen[0]
    assert seen[2].endswith("w 4")  # recs[3] reads as its text
    ex = executor(docs)
    do(ex, op="records", store="recs")
    t = ex.s.variables["recs"]
    lines = ops.lines(ctx.text)
    assert all(lines[r["line"]] == r["text"] for r in t) and t.column("doc") == ["a.log"] * 2 + ["b.log"] * 3


def test_repetition_aid_sees_a_new_table() -> None:
    text = "ERROR DiskFull\nERROR Net\nWARN Slow\n"
    replies = [cmd("extract", pattern=r"ERROR (?P<t>\w+)"), cmd("count_by", field="t"),
               cmd("extract", pattern=r"(?P<t>[A-Z]+) "), cmd("count_by", field="t"),
               cmd("count_by", field="t"), cmd("final", answer="x")]
    res, rlm = run(replies, text)
    seen = fed_back(rlm)
    assert "DiskFull: 1" in seen[1] and "(on: t1)" in seen[1]
    assert "ERROR: 2\nWARN: 1" in seen[3] and "(on: t2)" in seen[3]  # same command, new table: it ran
    assert "you already ran this exact action" in seen[4]  # the same again on the same table: not run


def test_pairs_through_the_engine() -> None:
    lines = [f"Date: Jan 0{d}, 2023 || User: {u} || Instance: q{i}" for i, (d, u) in
             enumerate([(1, 12), (2, 7), (3, 12), (4, 30), (5, 7), (6, 101)])]
    text = "\n".join(lines) + "\n"
    res, rlm = run([cmd("extract", store="recs"), cmd("unique", field="User", on="recs", store="users"),
                    cmd("join", on=["users", "users"], store="pairs"), cmd("final_var", name="pairs")], text)
    users = sorted({12, 7, 30, 101})
    want = [f"({a}, {b})" for i, a in enumerate(users) for b in users[i + 1:]]
    assert res.answer.splitlines() == want


# ----------------------------------------------------------------------------- the executor directly
def test_filter_sort_unique_join_outputs_and_store() -> None:
    ex = executor(log(10_000, 5))
    do(ex, op="extract", store="t")
    out = do(ex, op="filter", where={"level": "ERROR", "status": {"ge": 500}}, store="bad")
    bad = ex.s.variables["bad"]
    assert out.startswith(f"filter: kept {bad.n:,} of {ex.s.variables['t'].n:,} row(s) (on: t)")
    assert bad.n and all(r["level"] == "ERROR" and int(r["status"]) >= 500 for r in bad)
    out = do(ex, op="sort", field="duration", desc=True, on="bad", store="slow")
    ms = [int(v[:-2]) for v in ex.s.variables["slow"].column("duration")]
    assert ms == sorted(ms, reverse=True) and out.startswith("sort by duration desc")
    out = do(ex, op="unique", field="ip", on="t", store="ips")
    ips = ex.s.variables["ips"]
    assert ips.columns == ["ip"] and out.startswith(f"unique ip: {ips.n:,} distinct value(s)")
    assert as_text(ips) == "\n".join(ips.column("ip"))  # a one-column table reads as its values
    do(ex, op="count_by", field="name", on="bad", store="kinds")
    kept = do(ex, op="filter", where="count >= 2", on="kinds")
    assert all(int(ln.rsplit(": ", 1)[1]) >= 2 for ln in kept.splitlines()[1:] if ": " in ln)
    out = do(ex, op="join", on=["bad", "kinds"], key="name")
    assert re.search(r"join of bad and kinds on 'name': [\d,]+ row\(s\)", out)
    got = do(ex, op="get", name="kinds")
    assert got.startswith("kinds: table: ") and "columns: name, count" in got
    assert do(ex, op="get", name="kinds[0]").startswith("kinds[0] (dict")


def test_as_text_forms() -> None:
    counts = Table({"t": ["a", None], "count": [3, 1]}, meta={"_kind": "counts"})
    assert as_text(counts) == "a: 3\n(missing): 1"
    assert as_text(Table({"a.u": ["1", "2"], "b.u": ["3", "4"]}, meta={"_kind": "pairs"})) == "(1, 3)\n(2, 4)"
    assert as_text(Table({"x": [1, None], "y": ["p", "q"]})) == "1 | p\n(missing) | q"


def test_validate_join_on_list_and_specs() -> None:
    assert validate({"op": "join", "on": ["a", "b"]})["on"] == ["a", "b"]
    for bad in (["a"], ["a", "b", "c"], ["a", "no such"], [1, 2]):
        with pytest.raises(CommandError, match="two table variable names"):
            validate({"op": "join", "on": bad})
    with pytest.raises(CommandError, match="must be a variable name"):
        validate({"op": "count_by", "field": "x", "on": ["a", "b"]})  # only join takes a list
    for op in ("records", "extract", "count_by", "top", "unique", "filter", "stats", "sort", "join"):
        assert op in SPECS and validate(json.loads(SPECS[op].example))["op"] == op


def test_constrained_schema_branches_are_valid_commands() -> None:
    assert not {"count_by", "stats"} & {b["properties"]["op"]["const"] for b in command_schema(("l1",))["anyOf"]}
    tables = {"t": Table({"a": [1], "b": ["x"]})}
    branches = {b["properties"]["op"]["const"]: b for b in command_schema(("l1",), variables=tables)["anyOf"]}
    assert branches["count_by"]["properties"]["field"] == {"enum": ["a", "b"]}
    assert branches["count_by"]["properties"]["on"] == {"enum": ["t"]}
    for op, (req, opt) in TABLE_SHAPES.items():
        b = branches[op]
        assert set(b["required"]) == {"thought", "op", *req}
        cmd_ = {"op": op, **{k: ("x" if v.get("type") == "string" or "enum" in v else 1) for k, v in req.items()}}
        if op == "filter":
            cmd_["where"] = "count >= 2"
        validate(cmd_)  # every op the schema allows is an op the executor knows, with these arguments
        assert set(opt) <= set(SPECS[op].optional) | {"on", "store"}


# ----------------------------------------------------------------------------- code cells
@pytest.fixture(params=("l2", "l3"))
def level(request: pytest.FixtureRequest) -> str:
    return request.param


def test_table_helpers_in_cells(level: str) -> None:
    text = log(12_000, 11)
    ex = executor_factory(level)(make_session(text))  # type: ignore[misc]
    try:
        out = run_cell(ex, f"""import json
rows = extract(r'{ERR_RE}')
counts = count_by(rows, 'type')
print(json.dumps({{r['type']: r['count'] for r in counts}}, sort_keys=True))
auto = extract()
s = stats(auto, 'duration')
print(s['count'], s['p95'], s['median'])
print(len(unique(auto, 'ip')), top(auto, 'level', k=1)[0]['level'])
print(len(filter_(auto, {{'status': {{'ge': 500}}}})), sort_(rows, 'line', desc=True)[0]['line'])
print(len(records()), len(join(unique(rows, 'type'), unique(rows, 'type'), pairs=True)))
print(extract(r'(?P<w>\\w+)', table=records(text='a b\\n\\nc d', by='blank_line')))
""")
        assert not out.error, out.text
        lines = out.text.strip().splitlines()
        want = errors_per_line(text)
        assert json.loads(lines[0]) == dict(want)
        durations = sorted(int(m) for m in re.findall(r" (\d+)ms ", text))
        import statistics
        p95 = durations[-(-95 * len(durations) // 100) - 1]
        assert lines[1] == f"{len(durations)} {p95} {statistics.median(durations)}"
        ips = {ln.split()[3] for ln in text.splitlines()}
        levels = Counter(ln.split()[2] for ln in text.splitlines())
        assert lines[2] == f"{len(ips)} {levels.most_common(1)[0][0]}"
        n_bad = sum(1 for ln in text.splitlines() if int(ln.split()[6]) >= 500)
        last_err = max(i for i, ln in enumerate(text.splitlines()) if re.search(ERR_RE, ln))
        assert lines[3] == f"{n_bad} {last_err}"
        assert lines[4] == f"{len(text.splitlines())} {len(want) * (len(want) - 1) // 2}"
        assert lines[5] == ("[{'w': 'a', 'doc': '<text>', 'line': 0}, {'w': 'c', 'doc': '<text>', 'line': 2}]")
        out = run_cell(ex, "count_by(extract(), 'nope')")
        assert out.error and "no column 'nope'; the table's columns are: date, time" in out.text
    finally:
        ex.close()


def test_table_helpers_multi_document_cells(level: str) -> None:
    s = make_session({"a.log": "ERROR A\nok\n", "b.log": "ERROR B\n"})
    ex = executor_factory(level)(s)  # type: ignore[misc]
    try:
        out = run_cell(ex, "print([(r['t'], r['doc'], r['line']) for r in extract(r'ERROR (?P<t>\\w)')])")
        assert out.text.strip() == "[('A', 'a.log', 1), ('B', 'b.log', 4)]", out.text
    finally:
        ex.close()


def test_a_new_table_is_shown_with_a_profile_of_its_columns() -> None:
    t = Table({"level": ["INFO", "ERROR", "INFO", "ERROR"], "name": [None, "DiskFull", None, "Quota"],
               "line": [0, 1, 2, 3]})
    prof = t.profile()
    assert prof[0] == "columns:"
    assert "- level: 2 distinct; e.g. INFO, ERROR" in prof
    assert "- name: 2 distinct in 2 rows; e.g. DiskFull, Quota" in prof
    assert not any(p.startswith("- line") for p in prof)
    assert t.profile(scan=2)[0] == "columns (in the first 2 rows):"
    ex = CommandExecutor(Session(Context.from_value("a=1 b=x\na=2 b=y\n"), Limits(), ("l1",), "r"))
    out = ex.run(Action("command", "l1", "extract", {"op": "extract", "store": "t"}))
    assert "- b: 2 distinct; e.g. x, y" in out.text


def test_a_runaway_extract_pattern_is_stopped() -> None:
    from types import SimpleNamespace

    s = Session(Context.from_value("a" * 40 + "b\n"), Limits(), ("l1",), "t",
                config=SimpleNamespace(regex_timeout_s=0.3))
    with pytest.raises(CommandError, match=r"extract '\(a\+\)\+\$' ran longer than 0.3 s and was stopped"):
        CommandExecutor(s).run(Action("command", "l1", "extract", {"op": "extract", "pattern": "(a+)+$"}))


def test_final_var_refuses_a_whole_table_and_the_schema_offers_only_small_results() -> None:
    from contextbox.schema import command_schema

    big = Table({"v": list(range(5000))})
    small = Table({"v": ["a"], "count": [3]}, meta={"_kind": "counts"})
    s = Session(Context.from_value("x\n"), Limits(), ("l1",), "r", variables={"big": big, "small": small})
    with pytest.raises(CommandError, match="'big' holds 5,000 rows, too much for an answer"):
        CommandExecutor(s).run(Action("command", "l1", "final_var", {"op": "final_var", "name": "big"}))
    out = CommandExecutor(s).run(Action("command", "l1", "final_var", {"op": "final_var", "name": "small"}))
    assert out.final == "a: 3"
    branch = next(b for b in command_schema(("l1",), variables=s.variables)["anyOf"]
                  if b["properties"]["op"]["const"] == "final_var")
    assert branch["properties"]["name"] == {"enum": ["small"]}
