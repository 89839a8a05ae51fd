"""``rlm bench seed-cases``: the seed project's case files, their contexts, match rules and dry run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from contextbox.bench.runner import BenchOptions, run_bench
from contextbox.bench.scoring import format_gold, score
from contextbox.bench.seed import load_all, plan
from contextbox.bench.tasks import generate
from contextbox.cli import main


def _case(data: Path, name: str) -> dict:
    return json.loads((data / "seed" / name).read_text())


def test_every_case_file_loads_and_builds_its_context(bench_data):
    cases, errors = load_all(bench_data)
    files = sorted(p.name for p in (bench_data / "seed").glob("*.json"))
    assert errors == [] and [p.name for p, _, _ in cases] == files
    by_file = {p.name: ctx for p, _, ctx in cases}
    # generate_log: exactly the stated count per level
    params = _case(bench_data, "log_counting.json")["context_params"]
    log = by_file["log_counting.json"].splitlines()
    assert len(log) == params["total_lines"]
    for level, n in params["distribution"].items():
        assert sum(1 for x in log if re.search(rf"\[{level}\]", x)) == n
        assert sum(x.count(level) for x in log) == n  # the level word appears nowhere else
    # repeat_with_needle: the needle is line needle_line (1-based) and appears once
    p = _case(bench_data, "niah_deep.json")["context_params"]
    lines = by_file["niah_deep.json"].splitlines()
    assert len(lines) == p["total_lines"] and lines[p["needle_line"] - 1] == p["needle"]
    assert by_file["niah_deep.json"].count(p["needle"]) == 1 and "{" not in by_file["niah_deep.json"]
    assert by_file["code_analysis.json"] == _case(bench_data, "code_analysis.json")["context"]
    assert by_file["demo_large_logs.json"].count("\n") == 5000
    assert by_file["demo_war_and_peace.json"] == (bench_data / "war_and_peace.txt").read_text(encoding="utf-8")


def test_tasks_keep_each_query_and_its_rule(bench_data):
    tasks = generate("seed-cases", 1, 0, None, bench_data)
    n = sum(len(_case(bench_data, p.name)["queries"]) for p in (bench_data / "seed").glob("*.json"))
    assert len(tasks) == n == 14 and all(t.kind == "seed" for t in tasks)
    t = next(t for t in tasks if t.meta["file"] == "log_counting.json" and t.meta["match_type"] == "regex")
    assert t.meta["regex_pattern"] == "40.*100|0\\.4|40%|2:5" and t.gold == "40"
    assert score("seed", "ERROR:WARN is 40:100", t.gold, t.meta) == 1.0
    assert score("seed", "40", t.gold, t.meta) == 0.0
    assert {t.id for t in tasks} >= {"seed-niah_simple-0", "seed-code_analysis-3"}
    for t in tasks:
        if t.meta["match_type"] != "regex":
            assert score("seed", format_gold("seed", t.gold, t.meta), t.gold, t.meta) == 1.0


def test_dry_run_validates_and_prints_without_a_model(tmp_path, capsys, bench_data):
    assert main(["bench", "seed-cases", "--dry-run", "--data", str(bench_data), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "seed-cases: 6 case file(s), 14 queries would run" in out
    assert "niah_simple (niah_simple.json): generator repeat_with_needle, " in out
    assert '[regex] What is the ratio of ERROR to WARN messages?  → expected "40.*100|0\\\\.4|40%|2:5"' in out
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written


def _bad_data(tmp_path: Path, bench_data: Path, files: dict[str, object]) -> Path:
    data = tmp_path / "data"
    (data / "trec").mkdir(parents=True)
    (data / "seed").mkdir()
    shutil.copy(bench_data / "seed" / "niah_simple.json", data / "seed")
    for name, body in files.items():
        (data / "seed" / name).write_text(body if isinstance(body, str) else json.dumps(body))
    return data


def test_invalid_case_files_are_named_with_the_problem(tmp_path, capsys, bench_data):
    q = {"query": "q?", "expected": "x", "match_type": "contains"}
    data = _bad_data(tmp_path, bench_data, {
        "a.json": "{not json",
        "b.json": {"name": "b", "context": "t", "queries": [{**q, "match_type": "fuzzy"}]},
        "c.json": {"name": "c", "context": "t", "context_url": "/samples/large-logs", "queries": [q]},
        "d.json": {"name": "d", "context_generator": "generate_log",
                   "context_params": {"total_lines": 10, "distribution": {"INFO": 9}}, "queries": [q]},
        "e.json": {"name": "e", "context": "t", "queries": [{**q, "match_type": "regex", "expected": "(("}]},
        "f.json": {"name": "f", "context": "t", "queries": [{**q, "match_type": "contains_all"}]},
        "g.json": {"name": "g", "context_generator": "repeat_with_needle", "queries": [q],
                   "context_params": {"filler_line": "x {n}", "total_lines": 5, "needle_line": 9, "needle": "N"}},
    })
    lines, errors = plan(data)
    assert len(errors) == 7 and len(lines) == 2  # niah_simple still listed
    expect = {"a.json": "not readable JSON", "b.json": "match_type 'fuzzy'", "c.json": "exactly one of",
              "d.json": "sums to 9, not total_lines=10", "e.json": "bad regex", "f.json": "list of non-empty strings",
              "g.json": "past total_lines"}
    for e in errors:
        name = e.split(":", 1)[0]
        assert expect.pop(name) in e, e
    assert main(["bench", "seed-cases", "--dry-run", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("rlm: error: ") == 7 and "Traceback" not in err
    assert main(["bench", "seed-cases", "--data", str(data), "--out", str(tmp_path / "o"), "--model",
                 "scripted:/dev/null"]) == 2
    assert "seed case files are invalid" in capsys.readouterr().err


def test_scripted_run_reports_per_case(tmp_path, bench_data):
    tasks = generate("seed-cases", 1, 0, None, bench_data)
    good = {"regex": {"log_counting.json": "40 ERROR to 100 WARN", "demo_large_logs.json": "top: 10.0.1.2"}}
    replies: list[str] = []
    for t in tasks:
        answer = good["regex"][t.meta["file"]] if t.meta["match_type"] == "regex" else format_gold("seed", t.gold)
        if t.id == "seed-niah_deep-0":
            answer = "NIGHTINGALES"  # not the whole token
        replies.append(answer)
    script = tmp_path / "s.json"
    script.write_text(json.dumps(replies))
    out = tmp_path / "o"
    # one scripted reply per query through the direct baseline: this tests the case rules and the per-case report
    run_bench(BenchOptions(["seed-cases"], model=f"scripted:{script}", baselines=["direct"], rlm=False, out=out,
                           data=bench_data))
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 14 and sum(r["correct"] for r in recs) == 13
    assert [r["task_id"] for r in recs if not r["correct"]] == ["seed-niah_deep-0"]
    report = (out / "report.md").read_text()
    assert "## Seed cases" in report
    assert "| niah_deep | niah_deep.json | direct | 3 | 2 | contains |" in report
    assert "| log_counting | log_counting.json | direct | 3 | 3 | contains, regex |" in report
