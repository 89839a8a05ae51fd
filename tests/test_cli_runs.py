"""The CLI's runs on the record and its usage errors, through the real ``rlm`` entry point:
a second Ctrl-C, a killed CLI, reading a store that does not exist, ambiguous run ids, a
missing API key, empty and binary contexts, --exclude of directories."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from fakeserver import FakeLLMServer
from test_cli import RLM, rlm, script

FIND = json.dumps({"op": "find", "text": "key"})


def provider_toml(tmp_path: Path, srv: FakeLLMServer) -> None:
    (tmp_path / "contextbox.toml").write_text(
        f'[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "{srv.base_url}"\nmax_retries = 0\n')


def start_slow_ask(tmp_path: Path, runs: Path) -> subprocess.Popen:
    ctx = tmp_path / "c.txt"
    ctx.write_text("the key is 99\n")
    env = {**os.environ, "CONTEXTBOX_RUNS_DIR": ""}
    env.pop("CONTEXTBOX_MODEL", None)
    p = subprocess.Popen([RLM, "ask", "key?", "-c", str(ctx), "--model", "fake/m", "--runs-dir", str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                         start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the first model call is in flight
        logs = list(runs.glob("*.jsonl"))
        if logs and '"lm_request"' in logs[0].read_text():
            return p
        time.sleep(0.05)
    p.kill()
    raise AssertionError("the run did not start: " + p.communicate()[1])


def status_in_db(runs: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(runs / "runs.sqlite") as c:
        return c.execute("SELECT status, reason FROM runs").fetchall()


@pytest.mark.parametrize("gap_s", [0.0, 0.1, 0.4])  # during the call, during cancelling, after the run ended
def test_second_ctrl_c_exits_130_without_traceback_and_records_cancelled(tmp_path, gap_s):
    runs = tmp_path / "runs"
    with FakeLLMServer(FIND, latency=5.0) as srv:
        provider_toml(tmp_path, srv)
        p = start_slow_ask(tmp_path, runs)
        p.send_signal(signal.SIGINT)
        time.sleep(gap_s)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [s for s, _ in status_in_db(runs)] == ["cancelled"]
    shown = rlm("runs", "list", "--runs-dir", str(runs), "--json")
    assert json.loads(shown.stdout)[0]["status"] == "cancelled"


def test_killed_cli_run_shows_interrupted_in_the_next_runs_list(tmp_path):
    runs = tmp_path / "runs"
    with FakeLLMServer(FIND, latency=5.0) as srv:
        provider_toml(tmp_path, srv)
        p = start_slow_ask(tmp_path, runs)
        assert [s for s, _ in status_in_db(runs)] == ["running"]
        p.kill()
        p.communicate(timeout=30)
    listed = rlm("runs", "list", "--runs-dir", str(runs), "--json")
    assert listed.returncode == 0, listed.stderr
    row = json.loads(listed.stdout)[0]
    assert row["status"] == "interrupted" and str(p.pid) in row["reason"]
    assert status_in_db(runs)[0][0] == "interrupted"
    shown = rlm("runs", "show", row["run_id"], "--runs-dir", str(runs))
    assert "end: interrupted" in shown.stdout


def test_runs_list_of_a_new_directory_creates_nothing(tmp_path):
    new = tmp_path / "nothing-here"
    p = rlm("runs", "list", "--runs-dir", str(new))
    assert p.returncode == 0 and "no runs" in p.stdout
    p = rlm("runs", "list", "--runs-dir", str(new), "--json")
    assert json.loads(p.stdout) == []
    p = rlm("runs", "show", "abc", "--runs-dir", str(new))
    assert p.returncode == 2 and "no run 'abc'" in p.stderr
    assert not new.exists()


def test_ambiguous_run_id_prefix_is_named(tmp_path):
    runs = tmp_path / "runs"
    ctx = tmp_path / "c.txt"
    ctx.write_text("the key is 99\n")
    ids = []
    for _ in range(2):
        model = script(tmp_path, {"op": "find", "text": "key"}, {"op": "final", "answer": "99"})
        p = rlm("ask", "key?", "-c", str(ctx), "--model", model, "--json", "--runs-dir", str(runs))
        ids.append(json.loads(p.stdout)["run_id"])
    common = os.path.commonprefix(ids)
    assert len(common) >= 8  # same day: ids share the date
    p = rlm("runs", "show", common[:8], "--runs-dir", str(runs))
    assert p.returncode == 2 and "ambiguous" in p.stderr and ids[0] in p.stderr
    assert "no run" not in p.stderr
    assert rlm("runs", "show", ids[1], "--runs-dir", str(runs)).returncode == 0


def test_missing_api_key_of_a_builtin_provider_exits_2_in_one_line(tmp_path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("x\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CONTEXTBOX_MODEL")}
    p = subprocess.run([RLM, "ask", "q", "-c", str(ctx), "--model", "openai/gpt-4o-mini", "--runs-dir",
                        str(tmp_path / "r")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0]
    assert "the [[providers]] table" not in lines[0]  # there is no such table: openai is built in
    assert not (tmp_path / "r").exists()  # nothing started, nothing recorded


def test_empty_context_is_a_usage_error(tmp_path):
    ctx = tmp_path / "empty.txt"
    ctx.write_text("  \n")
    model = script(tmp_path, {"op": "final", "answer": "nothing"})
    p = rlm("ask", "q", "-c", str(ctx), "--model", model, "--runs-dir", str(tmp_path / "r"))
    assert p.returncode == 2 and "context is empty" in p.stderr and p.stdout == ""


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xfe\xfa\xfb" * 50 + b"ok"])
def test_named_binary_file_is_refused(tmp_path, data):
    f = tmp_path / "img.png"
    f.write_bytes(data)
    model = script(tmp_path, {"op": "final", "answer": "x"})
    p = rlm("ask", "q", "-c", str(f), "--model", model, "--runs-dir", str(tmp_path / "r"))
    assert p.returncode == 2 and "binary file" in p.stderr and "Traceback" not in p.stderr


def test_exclude_names_directories_at_any_depth(tmp_path):
    from contextbox.context import Context

    root = tmp_path / "proj"
    for rel in ("src/a.txt", "node_modules/x/b.txt", "pkg/node_modules/c.txt", "pkg/d.txt", "build/cache/e.txt",
                "build/f.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel + "\n")
    docs = [d.path for d in Context.load(root, exclude=["node_modules", "build/cache"]).documents]
    assert docs == ["build/f.txt", "pkg/d.txt", "src/a.txt"]
    docs = [d.path for d in Context.load(root, exclude=["node_modules/"]).documents]
    assert "pkg/node_modules/c.txt" not in docs and "node_modules/x/b.txt" not in docs and len(docs) == 4
    # excluded trees are not walked: an unreadable directory inside one is never opened
    locked = root / "node_modules" / "locked"
    locked.mkdir()
    walked = []
    real_walk = os.walk

    def spy(top, *a, **k):
        for item in real_walk(top, *a, **k):
            walked.append(item[0])
            yield item

    import contextbox.context as cmod
    cmod.os.walk = spy
    try:
        Context.load(root, exclude=["node_modules"])
    finally:
        cmod.os.walk = real_walk
    assert not any("node_modules" in w for w in walked)


def test_runs_show_prints_sub_calls_readably_and_json_holds_prompts_and_answers(tmp_path):
    runs = tmp_path / "runs"
    ctx = tmp_path / "c.txt"
    text = "".join(f"row {i}: colour {'red' if i % 3 else 'blue'}\n" for i in range(30))
    ctx.write_text(text)
    from contextbox.ops import chunk_lines

    size = 200
    n = len(chunk_lines(text, size)[0])
    model = script(tmp_path, {"op": "llm_map", "prompt": "Which colours?", "chunk_size": size},
                   *[f"answer-{i}\nsecond line" for i in range(n)], {"op": "final", "answer": "red, blue"})
    p = rlm("ask", "colours?", "-c", str(ctx), "--model", model, "--levels", "l1,l4", "--json",
            "--runs-dir", str(runs))
    assert p.returncode == 0, p.stderr
    rid = json.loads(p.stdout)["run_id"]
    shown = rlm("runs", "show", rid, "--runs-dir", str(runs)).stdout
    heads = [ln for ln in shown.splitlines() if "sub-call" in ln]
    assert len(heads) == n and all("tok" in h and "{" not in h for h in heads)
    assert shown.count("  prompt: Which colours?") == n
    assert sum(f"answer: answer-{i}" in shown for i in range(n)) == n and "second line" in shown
    events = [json.loads(x) for x in rlm("runs", "show", rid, "--runs-dir", str(runs), "--json").stdout.splitlines()]
    subs = [e["data"] for e in events if e["type"] == "sub_call"]
    assert len(subs) == n
    assert sorted(s["answer"] for s in subs) == [f"answer-{i}\nsecond line" for i in range(n)]
    assert "".join(s["prompt"].split("]\n", 1)[1] for s in sorted(subs, key=lambda s: s["index"])) == text


def test_server_listing_marks_a_dead_processes_run_interrupted_and_keeps_its_own(tmp_path):
    import sys

    from contextbox.config import Config
    from contextbox.server import create_app
    from contextbox.stores.sqlite import SqliteRunStore

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cfg = Config()
    cfg.runs_dir = tmp_path / "runs"
    store = SqliteRunStore(tmp_path / "runs" / "runs.sqlite")
    app = create_app(cfg, store=store)
    try:
        store.create_run("cli-run", question="q")  # this process's: in flight
        store.create_run("killed-run", question="q")
        with store._lock:
            store._w.execute("UPDATE runs SET status='running', pid=? WHERE run_id='killed-run'", (dead.pid,))
            store._w.execute("UPDATE runs SET status='running' WHERE run_id='cli-run'")
        from starlette.testclient import TestClient

        with TestClient(app, base_url="http://localhost") as c:
            rows = {r["id"]: r for r in c.get("/v1/runs").json()["runs"]}
        assert rows["killed-run"]["status"] == "interrupted" and str(dead.pid) in rows["killed-run"]["reason"]
        assert rows["cli-run"]["status"] == "running"
    finally:
        app.state.manager.shutdown(5)
        store.close()
