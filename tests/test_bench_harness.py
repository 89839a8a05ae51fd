"""The bench harness end to end: dry run, scripted models with the direct baseline, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contextbox.bench.runner import BenchOptions, Runner, cut_context, run_bench
from contextbox.bench.tasks import generate
from contextbox.cli import main
from contextbox.errors import ContextWindowError
from contextbox.types import Completion

from conftest import shared_data_dir

DATA = shared_data_dir  # called in each test: a missing data folder fails the test, it never skips it


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100


def test_dry_run_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "b"
    rc = main(["bench", "needle-novel,oolong,logs", "--dry-run", "--n", "2", "--lengths", "8k,64k",
               "--out", str(out), "--data", str(DATA())])
    assert rc == 0
    recs = _records(out)
    assert len(recs) == 3 * 2 * 2 * 2  # suites × lengths × n × methods (rlm, direct)
    assert {r["method"] for r in recs} == {"rlm", "direct"}
    for r in recs:
        for key in ("correct", "score", "answer", "iterations", "tokens_root", "tokens_sub", "cost_usd",
                    "elapsed_s", "model"):
            assert key in r
        assert r["dry_run"] and r["model"] == "dry-run:scripted"
    rlm = [r for r in recs if r["method"] == "rlm"]
    assert all(r["correct"] and r["iterations"] == 2 and r["tokens_root"] > 0 for r in rlm)
    direct = [r for r in recs if r["method"] == "direct"]
    assert all(r["cut"] for r in direct if r["context_chars"] > 40_000)  # dry-run window: 8192 tokens
    assert not any(r["correct"] for r in direct if r["cut"] and r["kind"] != "needle")
    report = (out / "report.md").read_text()
    assert "Dry run" in report and "| needle-novel | direct |" in report and "context cut" in report
    for suite in ("needle-novel", "oolong", "logs"):
        _check_png(out / f"accuracy_{suite}.png")
        _check_png(out / f"tokens_{suite}.png")
    assert str(out / "report.md") in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["invocations"][0]["methods"] == ["rlm", "direct"]
    assert "rlms" in meta["invocations"][0]["skipped"]


def test_report_rebuilt_from_jsonl(tmp_path):
    out = tmp_path / "r"
    run_bench(BenchOptions(["detective"], n=2, out=out, dry_run=True, data=DATA(), baselines=["direct"]))
    first = (out / "report.md").read_text()
    (out / "report.md").unlink()
    (out / "accuracy_detective.png").unlink()
    assert main(["bench", "report", str(out)]) == 0
    assert (out / "report.md").read_text() == first
    _check_png(out / "accuracy_detective.png")


def test_scripted_model_with_direct_baseline(tmp_path):
    """A real (non-dry) run: one scripted model serves the RLM tasks, then the direct calls."""
    tasks = generate("sniah", 2, 0, [8000], DATA())
    replies = []
    for t in tasks:
        replies += [json.dumps({"op": "find", "text": t.meta["key"]}), json.dumps({"op": "final", "answer": t.gold})]
    replies += [tasks[0].gold, "I do not know"]
    script = tmp_path / "script.json"
    script.write_text(json.dumps(replies))
    out = tmp_path / "s"
    rc = main(["bench", "sniah", "--model", f"scripted:{script}", "--n", "2", "--lengths", "8k", "--baseline",
               "direct", "--window-tokens", "1200", "--out", str(out), "--data", str(DATA())])
    assert rc == 0
    recs = _records(out)
    assert [(r["method"], r["correct"]) for r in recs] == [("rlm", True), ("rlm", True), ("direct", True),
                                                             ("direct", False)]
    d = recs[2]
    assert d["cut"] and d["kept_chars"] <= 1200 * 4 and d["window_tokens"] == 1200 and d["iterations"] == 1
    assert recs[0]["run_id"] and (out / "runs" / f"{recs[0]['run_id']}.jsonl").is_file()
    assert not recs[0]["dry_run"] and recs[0]["model"].startswith("scripted:")


def test_direct_shrinks_on_context_window_error(tmp_path):
    class Small:
        name, context_window = "small", 10_000

        def __init__(self):
            self.sizes = []

        def complete(self, messages, **opts):
            n = len(messages[-1]["content"])
            self.sizes.append(n)
            if n > 25_000:
                raise ContextWindowError("too long")
            return Completion("42", n // 4, 1)

    runner = Runner(BenchOptions(["oolong"], out=tmp_path, model="scripted:/dev/null", data=DATA()))
    small = Small()

    class Fake:
        root = small

    runner._rlm = Fake()
    task = generate("oolong", 1, 0, [128000], DATA())[0]
    rec = runner.run_direct(task)
    assert rec["status"] == "answered" and rec["answer"] == "42"
    assert len(small.sizes) >= 2 and small.sizes[-1] <= 25_000 and rec["cut"]


def test_cut_context():
    assert cut_context("x" * 100, 1000, 10) == "x" * 100
    assert len(cut_context("x" * 10_000, 1000, 500)) == 2000


def test_unknown_suite_is_usage_error(tmp_path, capsys):
    assert main(["bench", "nope", "--dry-run", "--out", str(tmp_path)]) == 2
    assert "unknown bench suite" in capsys.readouterr().err
    assert main(["bench", "report"]) == 2
