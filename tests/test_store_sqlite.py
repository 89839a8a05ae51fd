"""The SQLite run store: events, runs, usage, WAL, threads, restarts, export, and the CLI on it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import cmd, make_rlm

from contextbox import Context
from contextbox.errors import UsageError
from contextbox.stores.jsonl import JsonlRunStore, summarize
from contextbox.stores.sqlite import SqliteRunStore, TeeRunStore, default_db_path
from contextbox.types import Event

RLM_BIN = str(Path(sys.executable).with_name("rlm"))


@pytest.fixture
def store(tmp_path):
    s = SqliteRunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def ev(rid: str, seq: int, type: str, data: dict | None = None, path: str = "0", ts: float | None = None) -> Event:
    e = Event(type, data or {}, run_id=rid, seq=seq, path=path)
    if ts is not None:
        e.ts = ts
    return e


def fill(store: SqliteRunStore, rid: str, *, end: bool = True, ts: float = 1000.0) -> list[Event]:
    evs = [ev(rid, 0, "run_start", {"question": "q?", "model": "m", "sub_model": "s", "levels": ["l1"]}, ts=ts),
           ev(rid, 1, "iteration_start", {"iteration": 1}, ts=ts + 1),
           ev(rid, 2, "lm_response", {"iteration": 1, "text": "x", "input_tokens": 10, "output_tokens": 2,
                                      "cost_usd": 0.5, "model": "m"}, ts=ts + 2),
           ev(rid, 3, "sub_call", {"model": "s", "input_tokens": 4, "output_tokens": 1}, ts=ts + 3),
           ev(rid, 4, "lm_response", {"iteration": 1, "text": "y", "input_tokens": 3, "output_tokens": 3,
                                      "model": "m"}, path="0.0", ts=ts + 4)]
    if end:
        evs.append(ev(rid, 5, "run_end", {"answer": "A", "status": "answered", "reason": None, "iterations": 1,
                                          "elapsed_s": 5.0, "usage": {"total": {"total_tokens": 23, "cost_usd": 0.5}}},
                      ts=ts + 5))
    for e in evs:
        store.append(e)
    return evs


def test_wal_events_runs_and_usage(store):
    assert store._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    evs = fill(store, "r1")
    got = store.events("r1")
    assert [e.to_dict() for e in got] == [e.to_dict() for e in evs]
    assert [e.seq for e in store.events("r1", after=2)] == [3, 4, 5]
    assert [e.seq for e in store.events("r1", after=0, limit=2)] == [1, 2]
    assert store.count_events("r1") == 6 and store.next_seq("r1") == 6
    run = store.get_run("r1")
    assert run["status"] == "answered" and run["answer"] == "A" and run["question"] == "q?"
    assert run["started"] == 1000.0 and run["finished"] == 1005.0 and run["iterations"] == 1
    assert run["tokens"] == 23 and run["levels"] == ["l1"] and run["model"] == "m"
    u = store.usage_totals("r1")
    assert u["total"]["total_tokens"] == 23 and u["total"]["calls"] == 3
    assert u["by_role"]["root"]["total_tokens"] == 12 and u["by_role"]["sub"]["total_tokens"] == 5
    assert u["by_role"]["child"]["total_tokens"] == 6 and u["by_role"]["root"]["cost_usd"] == 0.5
    # the row matches what the JSONL run log's summary says
    s = summarize(got)
    assert (s["status"], s["answer"], s["iterations"], s["tokens"]) == (run["status"], run["answer"],
                                                                        run["iterations"], run["tokens"])


def test_duplicate_event_is_ignored_not_doubled(store):
    fill(store, "r1", end=False)
    store.append(ev("r1", 2, "lm_response", {"input_tokens": 99}))
    assert store.count_events("r1") == 5
    assert store.usage_totals("r1")["by_role"]["root"]["input_tokens"] == 10


def test_list_paging_status_prefix_and_reopen(tmp_path):
    path = tmp_path / "d" / "runs.sqlite"
    s = SqliteRunStore(path)
    for i in range(5):
        fill(s, f"run-{i}", end=i != 4, ts=1000.0 + 100 * i)
    s.create_run("queued-1", question="later", model="m")
    s.close()
    s = SqliteRunStore(path)  # survives a reopen
    rows = s.list_runs(limit=3)
    assert [r["run_id"] for r in rows][:1] == ["queued-1"]
    assert len(rows) == 3 and s.count_runs() == 6
    assert [r["run_id"] for r in s.list_runs(limit=3, offset=3)] == ["run-2", "run-1", "run-0"]
    assert [r["run_id"] for r in s.list_runs(status="running")] == ["run-4"]
    assert s.count_runs("answered") == 4
    assert s.resolve_id("queued") == "queued-1"
    with pytest.raises(UsageError, match="'run-' is ambiguous: it matches run-0, run-1, …"):
        s.resolve_id("run-")
    with pytest.raises(UsageError, match="no run 'nope'"):
        s.resolve_id("nope")
    with pytest.raises(UsageError):
        s.events("nope")
    assert s.get_run("nope") is None
    assert [e.seq for e in s.events("run-1")] == list(range(6))
    s.close()


def test_mark_interrupted_ends_dead_runs_only(store):
    fill(store, "dead", end=False)
    fill(store, "done")
    store.create_run("queued")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fill(store, "other-process", end=False)
        store._w.execute("UPDATE runs SET pid=? WHERE run_id='other-process'", (alive.pid,))
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        store._w.execute("UPDATE runs SET pid=? WHERE run_id='dead'", (gone.pid,))
        ids = store.mark_interrupted()
    finally:
        alive.kill()
        alive.wait()
    assert sorted(ids) == ["dead", "queued"]
    run = store.get_run("dead")
    assert run["status"] == "interrupted" and "server stopped" in run["reason"]
    evs = store.events("dead")
    assert [e.seq for e in evs] == list(range(7)) and [e.type for e in evs[-2:]] == ["error", "run_end"]
    assert evs[-1].data["usage"]["total"]["total_tokens"] == 23 and evs[-1].data["iterations"] == 1
    assert store.get_run("done")["status"] == "answered"
    assert store.get_run("other-process")["status"] == "running"
    assert store.mark_interrupted() == ["other-process"]  # now its process is gone
    assert store.mark_interrupted() == []


def test_many_threads_write_and_read_without_loss(store):
    n_threads, n_events = 8, 150
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        try:
            for i in range(n_events):
                store.append(ev(f"t{k}", i, "warning", {"i": i, "text": "é" * (i % 7)}))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader() -> None:
        try:
            while not stop.is_set():
                for k in range(n_threads):
                    seqs = [e.seq for e in store.events(f"t{k}")] if store.has_run(f"t{k}") else []
                    assert seqs == list(range(len(seqs)))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    for k in range(n_threads):
        assert [e.data["i"] for e in store.events(f"t{k}")] == list(range(n_events))


def test_export_jsonl_and_engine_integration(store):
    rlm = make_rlm([cmd("find", text="beta"), cmd("final", answer="found")])
    rlm.store = store
    res = rlm.run("where?", Context.from_value("alpha beta\n"))
    lines = list(store.export_jsonl(res.run_id[:10]))
    assert [json.loads(x) for x in lines] == [e.to_dict() for e in res.events]
    run = store.get_run(res.run_id)
    assert run["status"] == "answered" and run["answer"] == "found" and run["iterations"] == 2
    assert run["usage"] == res.usage.to_dict() | {"total": res.usage.to_dict()["total"]}


def test_tee_store_writes_both_and_reads_either(tmp_path):
    sq, js = SqliteRunStore(tmp_path / "runs.sqlite"), JsonlRunStore(tmp_path)
    tee = TeeRunStore(sq, js)
    fill(tee, "both", ts=2000.0)
    fill(js, "jsonl-only", ts=3000.0)
    assert (tmp_path / "both.jsonl").exists() and sq.count_events("both") == 6
    assert [e.seq for e in tee.events("jsonl-only")] == list(range(6))
    assert [r["run_id"] for r in tee.list_runs()] == ["jsonl-only", "both"]
    with pytest.raises(UsageError):
        tee.events("nope")
    tee.close()


def test_cli_ask_writes_sqlite_and_runs_commands_read_it(tmp_path):
    runs = tmp_path / "runs"
    script = tmp_path / "s.json"
    script.write_text(json.dumps([cmd("find", text="key"), cmd("final", answer="42")]))
    ctx = tmp_path / "c.txt"
    ctx.write_text("the key is 42\n")

    def rlm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([RLM_BIN, *args], capture_output=True, text=True, cwd=tmp_path)

    p = rlm("ask", "key?", "-c", str(ctx), "--model", f"scripted:{script}", "--runs-dir", str(runs), "--json")
    assert p.returncode == 0, p.stderr
    rid = json.loads(p.stdout)["run_id"]
    assert (runs / f"{rid}.jsonl").exists() and default_db_path(runs).exists()
    with sqlite3.connect(default_db_path(runs)) as c:
        assert c.execute("SELECT status FROM runs WHERE run_id=?", (rid,)).fetchone()[0] == "answered"
    (runs / f"{rid}.jsonl").unlink()  # from here on only SQLite has it
    listing = rlm("runs", "--runs-dir", str(runs), "list")
    assert rid in listing.stdout and "answered" in listing.stdout
    show = rlm("runs", "show", rid, "--runs-dir", str(runs))
    assert show.returncode == 0 and "FINAL: 42" in show.stdout
    export = rlm("runs", "export", rid[:12], "--runs-dir", str(runs))
    lines = [json.loads(x) for x in export.stdout.splitlines()]
    assert export.returncode == 0 and lines[0]["type"] == "run_start" and lines[-1]["type"] == "run_end"
    assert [x["seq"] for x in lines] == list(range(len(lines)))
    missing = rlm("runs", "export", "nope", "--runs-dir", str(runs))
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr
