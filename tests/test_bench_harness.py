"""The bench harness end to end: dry run, scripted models with the direct baseline, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_data_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from contextbox.bench.runner import BenchOptions, Runner, cut_context, run_bench
from contextbox.bench.tasks import generate
from contextbox.cli import main
from contextbox.errors import ContextWindowError, UsageError
from contextbox.types import Completion

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


def _direct_on_128k(tmp_path, provider):
    """The direct baseline's record for a 128k oolong task with ``provider`` as the model."""
    runner = Runner(BenchOptions(["oolong"], out=tmp_path, model="scripted:/dev/null", data=DATA()))

    class Fake:
        root = provider

    runner._rlm = Fake()
    return runner.run_direct(generate("oolong", 1, 0, [128000], DATA())[0])


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

    small = Small()
    rec = _direct_on_128k(tmp_path, small)
    assert rec["status"] == "answered" and rec["answer"] == "42"
    assert len(small.sizes) >= 2 and small.sizes[-1] <= 25_000 and rec["cut"]


def test_direct_cuts_in_proportion_to_the_overflow_the_window_error_reports(tmp_path):
    """A log takes ~2 characters a token, not 4: the cut follows the token count llama.cpp reports."""
    from contextbox.bench.runner import cut_factor

    class Dense:
        name, context_window = "dense", 10_000

        def __init__(self):
            self.sizes = []

        def complete(self, messages, **opts):
            n = len(messages[-1]["content"])
            self.sizes.append(n)
            tokens = n // 2  # two characters a token
            if tokens > 10_000:
                raise ContextWindowError(f"the prompt does not fit (Requested tokens ({tokens}) exceed context "
                                         "window of 10000)")
            return Completion("42", tokens, 1)

    dense = Dense()
    rec = _direct_on_128k(tmp_path, dense)
    assert rec["status"] == "answered" and len(dense.sizes) == 2  # one proportional cut is enough
    assert 0.85 * 20_000 <= dense.sizes[-1] <= 20_000  # and keeps most of what fits
    assert cut_factor("Requested tokens (20000) exceed context window of 10000", 10_000, 0) == 0.475
    assert cut_factor("too long", 10_000, 0) == 0.8


def test_cut_context():
    assert cut_context("x" * 100, 1000, 10) == "x" * 100
    assert len(cut_context("x" * 10_000, 1000, 500)) == 2000


def test_unknown_suite_is_usage_error(tmp_path, capsys):
    assert main(["bench", "nope", "--dry-run", "--out", str(tmp_path)]) == 2
    assert "unknown bench suite" in capsys.readouterr().err
    assert main(["bench", "report"]) == 2


def test_direct_window_placements(tmp_path):
    """``start`` keeps the head; ``random`` keeps as much from a seeded offset at a line start; whole
    contexts that fit are kept whole either way."""
    import random

    from contextbox.bench.runner import window_span

    text = "".join(f"line {i:05d} " + "x" * (i % 50) + "\n" for i in range(3000))
    assert window_span(text, len(text), "random", random.Random(1)) == (0, len(text))
    assert window_span(text, 1000, "start", random.Random(1)) == (0, 1000)
    spans = [window_span(text, 1000, "random", random.Random(i)) for i in range(50)]
    assert all(b - a == 1000 and 0 <= a and b <= len(text) for a, b in spans)
    assert all(a == 0 or text[a - 1] == "\n" for a, _ in spans)
    starts = sorted(a for a, _ in spans)
    assert starts[0] < len(text) * 0.2 and starts[-1] > len(text) * 0.6  # spread over the whole context
    assert window_span(text, 1000, "random", random.Random(7)) == window_span(text, 1000, "random", random.Random(7))
    with pytest.raises(UsageError):
        window_span(text, 1000, "middle", random.Random(0))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab\n", min_size=0, max_size=3000), st.integers(0, 4000), st.integers(0, 10**6))
def test_window_span_property(text, budget, seed):
    import random

    from contextbox.bench.runner import window_span

    for placement in ("start", "random"):
        a, b = window_span(text, budget, placement, random.Random(seed))
        assert 0 <= a <= b <= len(text) and b - a == min(budget, len(text))
        assert placement == "random" or a == 0


def test_random_direct_window_in_a_dry_run(tmp_path):
    """A dry-run direct reply is right exactly when the needle lies in the kept span; with ``random`` the
    kept spans move, so needles past the head are found too."""
    out = tmp_path / "w"
    assert main(["bench", "sniah", "--dry-run", "--n", "8", "--lengths", "64k", "--baseline", "direct", "--no-rlm",
                 "--direct-window", "random", "--window-tokens", "4000", "--out", str(out),
                 "--data", str(DATA())]) == 0
    recs = _records(out)
    assert len(recs) == 8 and all(r["window"] == "random" and r["cut"] and r["method"] == "direct-random" for r in recs)
    for r in recs:
        a, b = r["kept_span"]
        inside = a <= r["evidence"][0] and r["evidence"][1] <= b
        assert r["correct"] == inside and b - a == r["kept_chars"]
    assert len({tuple(r["kept_span"]) for r in recs}) > 4
    assert any(r["correct"] and r["evidence"][0] > r["kept_chars"] for r in recs)  # beyond the head, yet found
    assert "window at the random" in (out / "report.md").read_text()
    assert "random offset per task" in (out / "report.md").read_text()
    head = tmp_path / "h"
    assert main(["bench", "sniah", "--dry-run", "--n", "8", "--lengths", "64k", "--baseline", "direct", "--no-rlm",
                 "--window-tokens", "4000", "--out", str(head), "--data", str(DATA())]) == 0
    hrecs = _records(head)
    assert all(r["kept_span"][0] == 0 and r["window"] == "start" and r["method"] == "direct" for r in hrecs)
    assert all(r["correct"] == (r["evidence"][1] <= r["kept_chars"]) for r in hrecs)


def test_lines_length_only_for_logs(tmp_path, capsys):
    assert main(["bench", "logs,oolong", "--dry-run", "--lengths", "2000l", "--out", str(tmp_path)]) == 2
    assert "in lines" in capsys.readouterr().err
    assert not (tmp_path / "results.jsonl").exists()
