"""``rlm batch`` on local workers: task files, results streaming and resume, shared limits, batch budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import contextbox
from contextbox.batch import BatchRunner, BatchTask, LocalExecutor, load_tasks, pending_tasks, read_results
from contextbox.config import Config
from contextbox.errors import UsageError
from contextbox.providers.limits import (
    EndpointLimits,
    LocalLimiter,
    PermitBook,
    install_limiter,
)
from contextbox.stores.sqlite import SqliteRunStore

SRC = str(Path(contextbox.__file__).resolve().parent.parent)


def rlm(*args: str, cwd: Path, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "CONTEXTBOX_RUNS_DIR": str(cwd / "runs"), "XDG_CONFIG_HOME": str(cwd)}
    env.pop("CONTEXTBOX_MODEL", None)
    cmd = [sys.executable, "-m", "contextbox.cli", *args]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def write_tasks(path: Path, n: int, **extra) -> list[str]:
    ids = [f"t{i:03d}" for i in range(n)]
    with path.open("w") as f:
        for i, tid in enumerate(ids):
            f.write(json.dumps({"id": tid, "question": f"question {tid}: how many b?",
                                "context": "ab " * (i + 1), **extra}) + "\n")
    return ids


def scripted(tmp_path: Path, *replies) -> str:
    p = tmp_path / "script.json"
    p.write_text(json.dumps([r if isinstance(r, str) or "text" in r else json.dumps(r) for r in replies]))
    return f"scripted:{p}"


def turns(n: int, answer: str = "fake answer"):
    """Fake-server replies for runs of ``n`` iterations: counts, then the answer (by the turns so far)."""
    def reply(body: dict) -> str:
        done = sum(m.get("role") == "assistant" for m in body.get("messages", []))
        return json.dumps({"op": "final", "answer": answer} if done >= n - 1 else {"op": "count", "pattern": "b"})
    return reply


@pytest.fixture
def no_limiter():
    old = install_limiter(None)
    yield
    install_limiter(old)


# ---------------------------------------------------------------------- task files
def test_jsonl_and_csv_give_the_same_tasks(tmp_path):
    (tmp_path / "docs").mkdir()
    rows = [{"id": "a", "question": "Q1?", "context": "text one", "model": "scripted:x.json", "levels": "l1,l4",
             "limits": {"max_iterations": 3}},
            {"id": "b", "question": "Q2?", "context_path": "docs"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (tmp_path / "t.csv").write_text('id,question,context,context_path,model,levels,limits\n'
                                    'a,Q1?,text one,,scripted:x.json,"l1,l4","{""max_iterations"": 3}"\n'
                                    'b,Q2?,,docs,,,\n')
    j, c = load_tasks(tmp_path / "t.jsonl"), load_tasks(tmp_path / "t.csv")
    assert j == c
    assert j[0].limits == {"max_iterations": 3} and j[0].levels == "l1,l4"
    assert j[1].context_path == str(tmp_path / "docs") and j[1].context is None


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "context": "x"}', "needs a non-empty \"question\""),
    ('{"id": "a", "question": "q", "context": "x", "context_path": "y"}', "exactly one of"),
    ('{"id": "a", "question": "q"}', "exactly one of"),
    ('{"question": "q", "context": "x"}', "needs an \"id\""),
    ('{"id": "a", "question": "q", "context": "x", "colour": 1}', "unknown field(s) colour"),
    ('{"id": "a", "question": "q", "context": "x", "limits": [1]}', "limits must be an object"),
    ('{"id": "a", "question": "q", "context": "x"}\n{"id": "a", "question": "q", "context": "y"}', "appears twice"),
    ('{"id": "a", "question": "q", "context": "x"}\nnot json', "t.jsonl:2: not a JSON object"),
])
def test_bad_task_lines_are_one_clear_error(tmp_path, line, message):
    (tmp_path / "t.jsonl").write_text(line + "\n")
    with pytest.raises(UsageError) as e:
        load_tasks(tmp_path / "t.jsonl")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_torn_last_line_is_cut_and_cancelled_runs_count_as_not_done(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "a", "status": "answered"}) + "\n"
                   + json.dumps({"id": "b", "status": "cancelled"}) + "\n"
                   + json.dumps({"id": "c", "status": "failed"}) + "\n" + '{"id": "d", "sta')
    done = read_results(out, repair=True)
    assert set(done) == {"a", "b", "c"}
    assert out.read_text().endswith('"failed"}\n')  # the torn line is gone: new lines start clean
    tasks = [BatchTask(x, "q", "ctx") for x in "abcde"]
    assert [t.id for t in pending_tasks(tasks, done)] == ["b", "d", "e"]
    assert [t.id for t in pending_tasks(tasks, done, retry_failed=True)] == ["b", "c", "d", "e"]


# ---------------------------------------------------------------------- the command
def test_fifty_tasks_eight_workers_all_in_results_and_run_store(tmp_path):
    ids = write_tasks(tmp_path / "tasks.jsonl", 50)
    model = scripted(tmp_path, {"op": "count", "pattern": "b"}, {"op": "final", "answer": "counted"})
    p = rlm("batch", "tasks.jsonl", "--out", "out.jsonl", "--workers", "8", "--model", model, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == ids
    assert all(x["status"] == "answered" and x["answer"] == "counted" and x["iterations"] == 2 for x in lines)
    assert all(x["usage"]["calls"] == 2 and x["usage"]["total_tokens"] > 0 for x in lines)
    store = SqliteRunStore(tmp_path / "runs" / "runs.sqlite")
    rows = {r["run_id"]: r for r in store.list_runs(limit=200)}
    assert {x["run_id"] for x in lines} <= set(rows) and len(rows) == 50
    assert all(rows[x["run_id"]]["answer"] == "counted" for x in lines)
    listed = rlm("runs", "list", "-n", "100", cwd=tmp_path)
    assert all(x["run_id"] in listed.stdout for x in lines)
    # the same command again runs nothing
    p2 = rlm("batch", "tasks.jsonl", "--out", "out.jsonl", "--workers", "8", "--model", model, cwd=tmp_path)
    assert p2.returncode == 0 and "50 of 50 task(s) already in out.jsonl" in p2.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 50
    store.close()


def fake_config(tmp_path: Path, base_url: str, **limits) -> Path:
    extra = "".join(f"{k} = {v}\n" for k, v in limits.items())
    cfg = tmp_path / "contextbox" / "config.toml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(f'[[providers]]\nname = "fake"\nbase_url = "{base_url}"\nmax_retries = 0\n{extra}')
    return cfg


def test_killed_halfway_then_rerun_answers_each_task_exactly_once(tmp_path, fake_llm):
    fake_llm.latency = 0.3
    fake_llm.replies = turns(2)
    fake_config(tmp_path, fake_llm.base_url, max_concurrency=8)
    ids = write_tasks(tmp_path / "tasks.jsonl", 50)
    args = ("batch", "tasks.jsonl", "--out", "out.jsonl", "--workers", "8", "--model", "fake/m")
    proc = rlm(*args, cwd=tmp_path, background=True)
    out = tmp_path / "out.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = read_results(out)
    assert 20 <= len(first) < 50, len(first)
    p = rlm(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.endswith("}")]
    assert sorted(x["id"] for x in lines) == ids, p.stderr  # each id once: nothing lost, nothing written twice
    assert all(x["status"] == "answered" and x["answer"] == "fake answer" for x in lines)
    # the fake server saw each run answered before the kill exactly once
    firsts = [json.dumps(m) for r in fake_llm.requests if len(m := r.get("messages") or []) <= 2]  # {}: cut by the kill
    for tid in first:
        assert sum(f"question {tid}:" in m for m in firsts) == 1, tid  # started once
    assert fake_llm.max_in_flight <= 8


def test_concurrency_limit_holds_across_runs(tmp_path, fake_llm, no_limiter):
    fake_llm.latency = 0.1
    fake_llm.replies = turns(2)
    fake_config(tmp_path, fake_llm.base_url, max_concurrency=3)
    config = Config.load(tmp_path / "contextbox" / "config.toml", model="fake/m")
    write_tasks(tmp_path / "t.jsonl", 12)
    runner = BatchRunner(load_tasks(tmp_path / "t.jsonl"), tmp_path / "out.jsonl", LocalExecutor(config, None, 8))
    stats = runner.run()
    assert stats.done == 12 and stats.failed == 0
    assert fake_llm.max_in_flight == 3  # 8 runs at once, never more than 3 calls at the endpoint


def test_batch_token_budget_stops_new_runs(tmp_path, no_limiter):
    write_tasks(tmp_path / "tasks.jsonl", 20, limits={"reserve_output_tokens": 20})
    model = scripted(tmp_path, {"text": '{"op": "count", "pattern": "b"}', "input_tokens": 300, "output_tokens": 10},
                     {"text": '{"op": "final", "answer": "x"}', "input_tokens": 300, "output_tokens": 10})
    p = rlm("batch", "tasks.jsonl", "--out", "out.jsonl", "--workers", "2", "--model", model, "--max-tokens",
            "3000", cwd=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    used = sum(x["usage"]["total_tokens"] for x in lines if x["usage"])
    assert p.returncode == 1 and "not started" in p.stderr and "batch budget" in p.stderr
    assert used <= 3000 and 1 <= len(lines) < 20
    assert sum(x["status"] == "answered" for x in lines) >= 1, lines


def test_unknown_price_with_batch_cost_limit_is_a_usage_error(tmp_path):
    write_tasks(tmp_path / "tasks.jsonl", 2)
    p = rlm("batch", "tasks.jsonl", "--model", "openrouter/some-unpriced-model", "--max-cost", "1", cwd=tmp_path)
    assert p.returncode == 2 and "price of openrouter/some-unpriced-model" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------- the permit book
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 8), st.lists(st.tuples(st.booleans(), st.floats(0, 20)), max_size=60))
def test_permit_book_never_exceeds_concurrency_or_rpm(conc, rpm, steps):
    """Against a plain model: calls in flight ≤ max_concurrency; a call holds an rpm slot from its permit
    until 60 s after its end, so no 60 s window can hold more than rpm calls, wherever in its span each one
    reached the server."""
    book, clock = PermitBook(), Clock()
    lim = EndpointLimits(max_concurrency=conc, rpm=rpm)
    held: list[tuple[int, float]] = []
    spans: list[tuple[float, float]] = []  # (permit, end) of finished calls
    for take, dt in steps:
        clock.t += dt
        if take or not held:
            pid, wait = book.try_take("k", lim, 0, "h", clock.t)
            recent = [e for _, e in spans if e > clock.t - 60]
            expect_ok = len(held) < conc and len(held) + len(recent) < rpm
            assert (pid is not None) == expect_ok
            if pid is None:
                assert wait > 0
            else:
                held.append((pid, clock.t))
        else:
            pid, t0 = held.pop(0)
            assert book.give_back(pid, 1, clock.t)
            spans.append((t0, clock.t))
        assert book.keys["k"].in_flight == len(held) <= conc
    # the worst case at the server: each request sent as late as possible (at its call's end); in any 60 s
    # window, at most rpm of them
    ends = sorted(e for _, e in spans)
    assert all(sum(w <= e < w + 60 for e in ends) <= rpm for w in ends)


def test_tpm_counts_used_tokens_and_estimates_in_flight():
    book = PermitBook()
    lim = EndpointLimits(tpm=1000)
    a, _ = book.try_take("k", lim, 600, "h", 0.0)
    assert a is not None
    b, wait = book.try_take("k", lim, 600, "h", 1.0)  # 600 held + 600 > 1000
    assert b is None and wait > 0
    book.give_back(a, 300, 2.0)  # it used only 300
    c, _ = book.try_take("k", lim, 600, "h", 3.0)
    assert c is not None
    d, wait = book.try_take("k", lim, 200, "h", 4.0)  # 300 used + 600 held + 200 > 1000: wait for 300 to age out
    assert d is None and wait == pytest.approx(58.0)
    e, _ = book.try_take("k", lim, 200, "h", 62.5)
    assert e is not None


def test_a_dead_holders_permits_come_back_after_its_lease():
    lim = LocalLimiter(lease_s=0.3)
    limits = EndpointLimits(max_concurrency=1)
    lim.acquire("k", limits, holder="dead-worker")
    t0 = time.monotonic()
    lim.acquire("k", limits, deadline=t0 + 5, holder="alive")  # waits until the dead holder's lease runs out
    assert 0.25 <= time.monotonic() - t0 < 3
    assert lim.stats()["k"]["in_flight"] == 1


# ---------------------------------------------------------------------- start-up and scheduling
def test_prepare_builds_each_model_once_before_the_first_run(tmp_path, fake_llm, no_limiter):
    """``prepare`` loads each distinct model of the tasks (the shared provider the runs then use);
    no model is called, and a model that cannot be built is left to its task's own line."""
    from contextbox.batch import model_keys
    from contextbox.providers import limits as limits_mod

    fake_llm.replies = turns(2)
    fake_config(tmp_path, fake_llm.base_url, max_concurrency=4)
    config = Config.load(tmp_path / "contextbox" / "config.toml", model="fake/m")
    tasks = [BatchTask("a", "q?", context="ab"), BatchTask("b", "q?", context="ab", model="fake/other"),
             BatchTask("c", "q?", context="ab", model="nosuchprovider/x"), BatchTask("d", "q?", context="ab")]
    assert model_keys(tasks) == [(None, None, None), ("fake/other", None, None), ("nosuchprovider/x", None, None)]
    ex = LocalExecutor(config, None, 4)
    ex.prepare(tasks)
    assert fake_llm.request_count == 0
    built = dict(limits_mod._providers)
    assert len(built) == 2  # fake/m and fake/other, each once
    stats = BatchRunner(tasks, tmp_path / "out.jsonl", ex).run()
    assert limits_mod._providers == built  # the runs used the providers prepare built, no new one
    assert stats.statuses == {"answered": 3, "failed": 1}


def test_task_feed_takes_only_while_there_is_room_and_the_batch_may_start():
    from contextbox.batch import TaskFeed

    tasks = [BatchTask(str(i), "q?", context="x") for i in range(7)]
    allow = [True]
    feed = TaskFeed(tasks, lambda: allow[0])
    assert [t.id for t in feed.take(3)] == ["0", "1", "2"]
    assert [t.id for t in feed.take(0)] == []
    allow[0] = False
    assert list(feed.take(5)) == [] and not feed.exhausted
    allow[0] = True
    assert [t.id for t in feed.take(10)] == ["3", "4", "5", "6"] and feed.exhausted
    assert list(feed.take(10)) == []


def test_serve_address_without_engine_ray_is_a_one_line_error(tmp_path, capsys, no_limiter):
    from contextbox.cli import main

    code = main(["serve", "--address", "127.0.0.1:6379", "--port", "1", "--runs-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--address needs --engine ray" in err, err
