"""The SQLite run store in detail: permissions, bad paths, old schemas, the run row each event
updates, usage roles and unknown costs, the queue, id prefixes, paging, and the tee store.

Written against the survivors of `make mutation MODULES=store_sqlite.py` (docs/mutation.md): each
test states what the store must do, so a changed operator, constant or dropped clause fails one.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from contextbox.errors import UsageError
from contextbox.stores.jsonl import JsonlRunStore
from contextbox.stores.sqlite import (
    SqliteRunStore,
    TeeRunStore,
    _alive,
    _cost,
    ambiguous,
    default_db_path,
    default_store,
    private_dir,
    private_file,
)
from contextbox.types import Event


@pytest.fixture
def store(tmp_path):
    s = SqliteRunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def ev(rid: str, seq: int, type: str, data: dict | None = None, path: str = "0", ts: float = 1000.0) -> Event:
    return Event(type, data or {}, run_id=rid, seq=seq, path=path, ts=ts)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# ----------------------------------------------------------------------------- files and paths
def test_private_dir_and_file_are_for_this_user_only(tmp_path):
    d = tmp_path / "a" / "b"
    private_dir(d, "x")
    assert d.is_dir() and mode(d) == 0o700
    private_dir(d, "x")  # exists already: fine
    f = d / "db"
    private_file(f, "x")
    assert f.is_file() and f.stat().st_size == 0 and mode(f) == 0o600
    f.write_text("kept")
    private_file(f, "x")  # an existing file is neither truncated nor an error
    assert f.read_text() == "kept"


def test_private_dir_and_file_refuse_what_is_in_the_way(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match=r"^the run log: .*file is not a directory$"):
        private_dir(blocker, "the run log")
    with pytest.raises(UsageError, match=r"^the run log: cannot create the directory .*blocker: Not a directory$"):
        private_dir(blocker / "blocker", "the run log")
    with pytest.raises(UsageError, match=r"^the run store: .* is a directory, not a database file$"):
        private_file(tmp_path, "the run store")
    with pytest.raises(UsageError, match=r"^the run store: cannot open .*: No such file or directory$"):
        private_file(tmp_path / "missing" / "db", "the run store")


def test_store_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_db_path("~/runs") == tmp_path / "runs" / "runs.sqlite"
    s = SqliteRunStore("~/deep/er/r.sqlite")
    try:
        assert s.path == tmp_path / "deep" / "er" / "r.sqlite" and s.root == tmp_path / "deep" / "er"
        assert mode(s.path) == 0o600 and mode(s.root) == 0o700
    finally:
        s.close()


def test_a_file_that_is_not_a_database_is_a_usage_error(tmp_path):
    bad = tmp_path / "runs.sqlite"
    bad.write_bytes(b"this is not an SQLite database file at all" * 100)
    with pytest.raises(UsageError, match=r"^the run store .*runs\.sqlite cannot be used: "):
        SqliteRunStore(bad)


def test_default_store_picks_the_database(tmp_path):
    cfg = SimpleNamespace(runs_dir=str(tmp_path / "cfg-runs"), server=SimpleNamespace(db=None))
    tee = default_store(cfg)
    assert tee.stores[0].path == tmp_path / "cfg-runs" / "runs.sqlite"
    assert tee.stores[1].root == tmp_path / "cfg-runs" and tee.root == tmp_path / "cfg-runs"
    tee.close()
    cfg.server.db = str(tmp_path / "elsewhere.sqlite")
    tee = default_store(cfg)
    assert tee.stores[0].path == tmp_path / "elsewhere.sqlite"
    tee.close()
    tee = default_store(cfg, tmp_path / "explicit")  # an explicit runs dir keeps its own database
    assert tee.stores[0].path == tmp_path / "explicit" / "runs.sqlite"
    assert tee.stores[1].root == tmp_path / "explicit"
    tee.close()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="the runs directory .*afile is not a directory"):
        default_store(cfg, tmp_path / "afile")


def test_a_closed_store_says_so(tmp_path):
    s = SqliteRunStore(tmp_path / "r.sqlite")
    s.close()
    with pytest.raises(RuntimeError, match="^the run store is closed$"):
        s.events("x")


def test_connections_wait_for_a_busy_database(tmp_path):
    s = SqliteRunStore(tmp_path / "r.sqlite", timeout_s=2.5)
    try:
        assert s._r().execute("PRAGMA busy_timeout").fetchone()[0] == 2500
        assert s._w.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        s.close()


# ----------------------------------------------------------------------------- helpers
def test_cost_of_a_call_event():
    assert _cost({}) == 0.0
    assert _cost({"cost_usd": None}) is None
    assert _cost({"cost_usd": "0.25"}) == 0.25 and isinstance(_cost({"cost_usd": 1}), float)


def test_ambiguous_shows_two_matches_then_an_ellipsis():
    assert ambiguous("r", ["r1", "r2"]) == ("run id prefix 'r' is ambiguous: it matches r1, r2; give more of the id")
    assert ambiguous("r", ["r1", "r2", "r3"]).endswith("matches r1, r2, …; give more of the id")


def test_alive_tells_live_dead_own_and_zombie_processes():
    assert _alive(None) is False and _alive(0) is False
    assert _alive(os.getpid()) is False  # this process does not count: it is the one asking
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _alive(p.pid) is True
    finally:
        p.kill()
    deadline = time.monotonic() + 10  # killed, not yet reaped: a zombie
    while time.monotonic() < deadline and Path(f"/proc/{p.pid}/stat").read_text().split(") ")[1][:1] != "Z":
        time.sleep(0.02)
    assert _alive(p.pid) is False
    p.wait()
    assert _alive(p.pid) is False
    assert _alive(1) is True  # init: exists (and may be another user's)


# ----------------------------------------------------------------------------- old stores
OLD_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT NOT NULL DEFAULT 'queued', created REAL NOT NULL,
    started REAL, finished REAL, question TEXT, model TEXT, sub_model TEXT, levels TEXT, answer TEXT, reason TEXT,
    iterations INTEGER, tokens INTEGER, cost_usd REAL, elapsed_s REAL, usage TEXT, source TEXT, meta TEXT,
    pid INTEGER);
CREATE TABLE usage (run_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, role TEXT NOT NULL,
    model TEXT, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0, latency_s REAL, PRIMARY KEY (run_id, seq));
INSERT INTO runs (run_id, status, created, question) VALUES ('old', 'answered', 5.0, 'old q');
INSERT INTO usage VALUES ('old', 2, '0', 'root', 'm', 7, 3, 0.5, 0.1);
"""


def test_a_store_of_an_older_version_is_brought_up_to_date(tmp_path):
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as c:
        c.executescript(OLD_SCHEMA)
    s = SqliteRunStore(path)
    try:
        assert s.get_run("old")["question"] == "old q" and s.get_run("old")["session_id"] is None
        assert s.usage_totals("old")["total"]["total_tokens"] == 10  # the old usage rows are kept
        # a session id can be stored now, and a call of an unpriced model costs "unknown"
        s.append(ev("new", 0, "run_start", {"question": "q", "session_id": "sess-1"}))
        s.append(ev("new", 1, "lm_response", {"input_tokens": 1, "cost_usd": None}))
        assert s.get_run("new")["session_id"] == "sess-1"
        assert s.usage_totals("new")["total"]["cost_usd"] is None
    finally:
        s.close()
    s = SqliteRunStore(path)  # migrating again changes nothing
    try:
        assert s.usage_totals("old")["total"]["cost_usd"] == 0.5
    finally:
        s.close()


# ----------------------------------------------------------------------------- writing
def test_create_run_records_the_request_and_is_not_overwritten(store):
    store.create_run("r", question="q?", model="m", sub_model="s", levels=["l1", "l2"], source="api",
                     meta={"k": "é"})
    before = time.time()
    row = store.get_run("r")
    assert row["status"] == "queued" and row["question"] == "q?" and row["model"] == "m"
    assert row["sub_model"] == "s" and row["levels"] == ["l1", "l2"] and row["source"] == "api"
    assert row["meta"] == {"k": "é"} and before - 60 < row["created"] <= before
    assert row["usage"]["total"] == {"calls": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                                     "cost_usd": 0.0, "cost_unknown_calls": 0, "estimated": False}
    store.create_run("r", question="other", status="running")  # the first record stays
    assert store.get_run("r")["question"] == "q?" and store.get_run("r")["status"] == "queued"
    store.create_run("bare", status="running")
    bare = store.get_run("bare")
    assert bare["status"] == "running" and bare["levels"] is None and bare["meta"] is None


def test_an_event_without_a_run_id_is_refused(store):
    with pytest.raises(UsageError, match="^an event without a run id cannot be stored$"):
        store.append(Event("warning", {}))


def test_a_failed_append_stores_nothing_and_leaves_the_store_usable(store):
    store.append(ev("r", 0, "run_start", {"question": "q"}))
    with pytest.raises(ValueError):
        store.append(ev("r", 1, "lm_response", {"input_tokens": "many"}))
    assert store.count_events("r") == 1 and store.usage_totals("r")["total"]["calls"] == 0
    store.append(ev("r", 1, "warning", {}))  # no transaction was left open
    assert store.count_events("r") == 1 + 1


def test_a_duplicate_event_is_logged(store, caplog):
    with caplog.at_level(logging.WARNING, logger="contextbox"):
        store.append(ev("r", 0, "warning", {"a": 1}))
        store.append(ev("r", 1, "warning", {"a": 1}))
        assert caplog.records == []  # a new event: nothing to say
        store.append(ev("r", 0, "warning", {"a": 2}))
    assert [r.getMessage() for r in caplog.records] == ["run r: event seq 0 stored already; the duplicate is ignored"]
    assert store.events("r")[0].data == {"a": 1}


def test_usage_rows_by_role_model_cost_and_latency(store):
    store.append(ev("r", 0, "lm_response", {"model": "big", "input_tokens": 10, "output_tokens": 1,
                                            "cost_usd": 0.25, "latency_s": 1.5}))
    store.append(ev("r", 1, "lm_response", {"model": "big", "input_tokens": 5, "output_tokens": 2}, path="0.1"))
    store.append(ev("r", 2, "sub_call", {"model": "small", "input_tokens": 3, "output_tokens": 4,
                                         "cost_usd": None}))
    store.append(ev("r", 3, "sub_call", {"input_tokens": None, "output_tokens": None}))
    store.append(ev("r", 4, "code_result", {"input_tokens": 99}))  # not a model call
    rows = store._r().execute("SELECT seq, path, role, model, latency_s FROM usage ORDER BY seq").fetchall()
    assert [tuple(r) for r in rows] == [(0, "0", "root", "big", 1.5), (1, "0.1", "child", "big", None),
                                        (2, "0", "sub", "small", None), (3, "0", "sub", None, None)]
    u = store.usage_totals("r")
    assert u["total"] == {"calls": 4, "input_tokens": 18, "output_tokens": 7, "total_tokens": 25, "cost_usd": None,
                          "cost_unknown_calls": 1, "estimated": False}
    assert u["by_role"]["root"] == {"calls": 1, "input_tokens": 10, "output_tokens": 1, "total_tokens": 11,
                                    "cost_usd": 0.25, "cost_unknown_calls": 0, "estimated": False}
    assert u["by_role"]["child"]["cost_usd"] == 0.0 and u["by_role"]["sub"]["cost_unknown_calls"] == 1
    assert set(u["by_model"]) == {"big", "small", ""}
    assert u["by_model"]["big"]["calls"] == 2 and u["by_model"]["big"]["total_tokens"] == 18
    assert u["by_model"][""]["total_tokens"] == 0 and u["by_model"]["big"]["cost_usd"] == 0.25
    # cost sums are rounded to 8 places
    store.append(ev("s", 0, "lm_response", {"cost_usd": 0.1}))
    store.append(ev("s", 1, "lm_response", {"cost_usd": 0.2}))
    assert store.usage_totals("s")["total"]["cost_usd"] == 0.3


def test_the_run_row_follows_the_root_run_only(store):
    store.create_run("r", question="asked", status="queued")
    store.append(ev("r", 0, "run_start", {"model": "m", "sub_model": "s", "levels": ["l1"]}, ts=10.0))
    row = store.get_run("r")
    assert row["status"] == "running" and row["started"] == 10.0 and row["question"] == "asked"
    assert row["levels"] == ["l1"] and row["model"] == "m" and row["sub_model"] == "s"
    store.append(ev("r", 1, "iteration_start", {"iteration": 3}, ts=11.0))
    assert store.get_run("r")["iterations"] == 3
    # a child's events do not touch the root run's row
    store.append(ev("r", 2, "run_start", {"question": "child q", "model": "c"}, path="0.0", ts=12.0))
    store.append(ev("r", 3, "iteration_start", {"iteration": 9}, path="0.0"))
    store.append(ev("r", 4, "run_end", {"status": "failed", "answer": "child"}, path="0.0"))
    row = store.get_run("r")
    assert (row["status"], row["question"], row["model"], row["iterations"], row["answer"]) == (
        "running", "asked", "m", 3, None)
    store.append(ev("r", 5, "run_end", {"answer": "A", "reason": "why", "iterations": 4, "elapsed_s": 2.5,
                                        "usage": {"total": {"total_tokens": 7, "cost_usd": 0.01}}}, ts=20.0))
    row = store.get_run("r")
    assert row["status"] == "failed"  # a run_end without a status is a failed run
    assert (row["finished"], row["answer"], row["reason"], row["iterations"], row["tokens"], row["cost_usd"],
            row["elapsed_s"]) == (20.0, "A", "why", 4, 7, 0.01, 2.5)
    assert row["usage"] == {"total": {"total_tokens": 7, "cost_usd": 0.01}}
    # an ended run is not started again by a late run_start
    store.append(ev("r", 6, "run_start", {"question": "again", "model": "x"}, ts=30.0))
    row = store.get_run("r")
    assert (row["status"], row["started"], row["model"]) == ("failed", 10.0, "m")


def test_a_run_end_without_usage_leaves_the_usage_to_the_usage_rows(store):
    store.append(ev("r", 0, "lm_response", {"input_tokens": 4, "output_tokens": 1}))
    store.append(ev("r", 1, "run_end", {"status": "answered", "answer": "x"}))
    row = store.get_run("r")
    assert row["tokens"] is None and row["usage"]["total"]["total_tokens"] == 5


def test_run_start_of_a_session_records_the_session(store):
    store.append(ev("r", 0, "run_start", {"question": "q", "session_id": "s1", "context": {"docs": 2}}, ts=5.0))
    store.append(ev("r2", 0, "run_start", {"question": "q2", "session_id": "s1", "context": {"docs": 9}}, ts=6.0))
    store.append(ev("r3", 0, "run_start", {"question": "q3"}, ts=7.0))
    rows = store._r().execute("SELECT session_id, created, context FROM sessions").fetchall()
    assert [tuple(r) for r in rows] == [("s1", 5.0, json.dumps({"docs": 2}))]
    assert [r["run_id"] for r in store.list_runs(session_id="s1")] == ["r2", "r"]
    assert store.get_run("r3")["session_id"] is None and store.get_run("r")["levels"] is None


def test_finish_run_appends_an_error_and_a_run_end(store):
    store.create_run("r", status="running")
    store._w.execute("UPDATE runs SET started=? WHERE run_id='r'", (time.time() - 3,))
    store.append(ev("r", 0, "iteration_start", {"iteration": 2}))
    store.append(ev("r", 1, "lm_response", {"input_tokens": 5, "output_tokens": 5}))
    end = store.finish_run("r", "crashed", "it broke")
    evs = store.events("r")
    assert [(e.seq, e.type) for e in evs] == [(0, "iteration_start"), (1, "lm_response"), (2, "error"),
                                              (3, "run_end")]
    assert evs[2].data == {"message": "it broke", "fatal": True, "status": "crashed"}
    assert end.seq == 3 and end.data["status"] == "crashed" and end.data["reason"] == "it broke"
    assert end.data["answer"] is None and end.data["run_id"] == "r" and end.data["iterations"] == 2
    assert end.data["usage"]["total"]["total_tokens"] == 10
    assert 2.5 < end.data["elapsed_s"] < 60
    row = store.get_run("r")
    assert row["status"] == "crashed" and row["reason"] == "it broke" and row["tokens"] == 10
    # a run never recorded: its elapsed time counts from now, and no iterations
    end = store.finish_run("ghost", "interrupted", "gone")
    assert end.seq == 1 and end.data["iterations"] == 0 and 0 <= end.data["elapsed_s"] < 5


# ----------------------------------------------------------------------------- the queue
def test_the_queue_keeps_waiting_requests_oldest_first(store):
    for rid in ("b", "a", "c"):
        store.create_run(rid)
        store.enqueue(rid, {"question": rid, "é": True})
        time.sleep(0.01)
    store.enqueue("a", {"question": "a2"})  # a new request for a run replaces the old and moves it back
    assert store.queued_requests() == [("b", {"question": "b", "é": True}), ("c", {"question": "c", "é": True}),
                                       ("a", {"question": "a2"})]
    store.append(ev("c", 0, "run_start", {"question": "c"}))  # started: no longer waiting
    store.dequeue("b")
    assert store.queued_requests() == [("a", {"question": "a2"})]


def test_mark_interrupted_keeps_queued_requests_and_own_runs(store):
    store.create_run("waiting")
    store.enqueue("waiting", {"question": "w"})
    store.create_run("lost")  # queued, but its request is gone
    store.create_run("mine", status="running")
    store.append(ev("started", 0, "run_start", {}))
    store.enqueue("started", {"question": "s"})  # running with a queue row
    store._w.execute("UPDATE runs SET pid=NULL WHERE run_id IN ('waiting', 'lost', 'started')")  # process gone
    assert sorted(store.mark_interrupted(keep_own=True)) == ["lost", "started"]
    assert store.get_run("waiting")["status"] == "queued" and store.get_run("mine")["status"] == "running"
    got = store.get_run("lost")
    assert got["status"] == "interrupted" and "(pid ?)" in got["reason"]
    assert store.mark_interrupted() == ["mine"]  # at startup this process's own runs are stale too
    assert f"(pid {os.getpid()})" in store.events("mine")[-1].data["reason"]


# ----------------------------------------------------------------------------- reading
def test_run_id_prefixes_are_literal(store):
    for rid in ("a_b-1", "axb-2", "50%-3", "5x-4"):
        store.create_run(rid)
    assert store.resolve_id("a_") == "a_b-1"  # "_" is not a wildcard
    assert store.resolve_id("50%") == "50%-3"  # nor is "%"
    assert store.resolve_id("axb-2") == "axb-2"
    with pytest.raises(UsageError, match=r"no run '' in .*; see 'rlm runs list'"):
        store.resolve_id("")
    with pytest.raises(UsageError, match="'a' is ambiguous: it matches a_b-1, axb-2; give"):
        store.resolve_id("a")


def test_events_by_prefix_after_and_limit(store):
    for i in range(5):
        store.append(ev("run-xyz", i, "warning", {"i": i}, ts=100.0 + i, path="0.1" if i == 2 else "0"))
    got = store.events("run-x")  # a prefix names the run
    assert [(e.seq, e.run_id, e.ts, e.path, e.data) for e in got][2] == (2, "run-xyz", 102.0, "0.1", {"i": 2})
    assert [e.seq for e in store.events("run-xyz", after=1, limit=2)] == [2, 3]
    assert store.events("run-x", after=0) == []  # with 'after' (a stream being read) the id is taken as it is
    assert [e.seq for e in store.events("run-xyz", limit=0)] == []
    assert store.next_seq("run-xyz") == 5 and store.next_seq("none") == 0
    assert store.count_events("none") == 0 and store.has_run("run-xyz") and not store.has_run("run-x")


def test_list_runs_newest_first_with_filters(store):
    store.create_run("q1")  # queued: never started, sorted by its creation time
    store._w.execute("UPDATE runs SET created=50.0 WHERE run_id='q1'")
    store.append(ev("a", 0, "run_start", {"session_id": "s"}, ts=10.0))
    store.append(ev("b", 0, "run_start", {}, ts=100.0))
    store.append(ev("c", 0, "run_start", {"session_id": "s"}, ts=100.0))
    store.append(ev("c", 1, "run_end", {"status": "answered"}, ts=101.0))
    rows = store.list_runs()
    assert [r["run_id"] for r in rows] == ["c", "b", "q1", "a"]  # ties by id, newest first
    assert rows[2]["started"] == 50.0 and "usage" not in rows[0] and rows[0]["status"] == "answered"
    assert [r["run_id"] for r in store.list_runs(limit=2, offset=1)] == ["b", "q1"]
    assert [r["run_id"] for r in store.list_runs(status="running")] == ["b", "a"]
    assert [r["run_id"] for r in store.list_runs(status="running", session_id="s")] == ["a"]
    assert [r["run_id"] for r in store.list_runs(session_id="s")] == ["c", "a"]
    assert store.count_runs() == 4 and store.count_runs("running") == 2 and store.count_runs("nope") == 0


def test_export_pages_through_long_runs(store):
    n = 2345
    for i in range(n):
        store.append(ev("long", i, "warning", {"i": i}))
    lines = list(store.export_jsonl("lon"))
    assert len(lines) == n and all(x.endswith("\n") for x in lines)
    assert [json.loads(x)["data"]["i"] for x in lines] == list(range(n))
    assert json.loads(lines[0]) == ev("long", 0, "warning", {"i": 0}).to_dict()


# ----------------------------------------------------------------------------- the tee store
def test_tee_needs_a_store():
    with pytest.raises(ValueError, match="^TeeRunStore needs at least one store$"):
        TeeRunStore()


class Broken:
    root = Path("/nowhere")

    def __init__(self, exc: Exception):
        self.exc, self.closed = exc, False

    def append(self, event: Event) -> None:
        raise self.exc

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("exc", [OSError("disk full"), sqlite3.OperationalError("database is locked")])
def test_tee_keeps_writing_the_other_store_when_one_fails(tmp_path, caplog, exc):
    js = JsonlRunStore(tmp_path)
    broken = Broken(exc)
    tee = TeeRunStore(broken, js)
    with caplog.at_level(logging.ERROR, logger="contextbox"), pytest.raises(OSError, match=str(exc)):
        tee.append(ev("r", 0, "warning", {"x": 1}))
    assert [e.data for e in js.events("r")] == [{"x": 1}]
    assert [r.getMessage() for r in caplog.records] == [f"run log write failed (Broken): {exc}"]
    tee.close()
    assert broken.closed


def test_tee_does_not_swallow_other_errors(tmp_path):
    tee = TeeRunStore(Broken(ValueError("bug")), JsonlRunStore(tmp_path))
    with pytest.raises(ValueError, match="bug"):
        tee.append(ev("r", 0, "warning"))


def test_tee_finishes_a_run_in_every_store_once(tmp_path):
    sq, js = SqliteRunStore(tmp_path / "runs.sqlite"), JsonlRunStore(tmp_path)
    tee = TeeRunStore(js, sq)
    tee.append(ev("r", 0, "run_start", {"question": "q"}))
    tee.append(ev("r", 1, "iteration_start", {"iteration": 1}))
    tee.finish_run("r", "crashed", "boom")
    want = [(0, "run_start"), (1, "iteration_start"), (2, "error"), (3, "run_end")]
    assert [(e.seq, e.type) for e in sq.events("r")] == want
    assert [(e.seq, e.type) for e in js.events("r")] == want
    tee.finish_run("r", "crashed", "again")  # ended already: nothing more
    tee.finish_run("never", "crashed", "unknown run")
    assert sq.count_events("r") == 4 and len(js.events("r")) == 4 and not sq.has_run("never")
    assert [json.loads(x)["type"] for x in tee.export_jsonl("r")] == [t for _, t in want]
    tee.close()
    only_jsonl = TeeRunStore(JsonlRunStore(tmp_path / "j"))
    only_jsonl.finish_run("r", "crashed", "no sqlite store")  # nothing to do, no error
    assert only_jsonl.mark_interrupted() == []


def test_tee_marks_interrupted_in_its_sqlite_stores(tmp_path):
    sq = SqliteRunStore(tmp_path / "runs.sqlite")
    sq.create_run("stale", status="running")
    sq._w.execute("UPDATE runs SET pid=NULL")
    tee = TeeRunStore(JsonlRunStore(tmp_path / "j"), sq)
    assert tee.mark_interrupted() == ["stale"]
    tee.close()


def test_tee_reads_from_the_first_store_that_has_the_run(tmp_path):
    a, b = JsonlRunStore(tmp_path / "a"), JsonlRunStore(tmp_path / "b")
    for s, rid in ((a, "one-1"), (b, "run-2"), (b, "run-3")):
        s.append(ev(rid, 0, "warning", {"in": str(s.root.name)}))
    tee = TeeRunStore(a, b)
    assert tee.events("one-1")[0].data == {"in": "a"}
    assert tee.events("run-2")[0].data == {"in": "b"}
    with pytest.raises(UsageError, match="'run-' is ambiguous"):
        tee.events("run-")  # ambiguous in b is the error to report, not "no run" from a
    with pytest.raises(UsageError, match="'run-' is ambiguous"):
        TeeRunStore(b, a).events("run-")  # nor "no run" from a store read after it
    with pytest.raises(UsageError, match="no run 'zzz'"):
        tee.events("zzz")
    empty = tmp_path / "b" / "run-9.jsonl"
    empty.write_text("")
    with pytest.raises(UsageError, match="no run 'run-9' in .*; see 'rlm runs list'"):
        TeeRunStore(JsonlRunStore(tmp_path / "a"), JsonlRunStore(tmp_path / "b")).events("run-9")


def test_tee_lists_runs_merged_newest_first_up_to_the_limit(tmp_path):
    sq, js = SqliteRunStore(tmp_path / "runs.sqlite"), JsonlRunStore(tmp_path / "j")
    tee = TeeRunStore(sq, js)
    for i, rid in enumerate(("a", "b", "c")):
        tee.append(ev(rid, 0, "run_start", {"question": rid}, ts=10.0 + i))
    js.append(ev("d", 0, "run_start", {"question": "d"}, ts=50.0))
    sq.append(ev("e", 0, "run_start", {"question": "e"}, ts=1.0))
    assert [r["run_id"] for r in tee.list_runs()] == ["d", "c", "b", "a", "e"]
    assert [r["run_id"] for r in tee.list_runs(limit=2)] == ["d", "c"]
    assert tee.list_runs()[1]["question"] == "c"
    tee.close()


# ----------------------------------------------------------------------------- what the first run of
# `tests/mutation.py --modules store_sqlite.py` (fourth session) found untested
def test_a_live_process_whose_name_holds_a_parenthesis_is_alive():
    # /proc/PID/stat is "PID (NAME) STATE ...": NAME may hold ") Z", so the state follows the *last* ")"
    code = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, b'x) Z y', 0, 0, 0); "
            "print('named', flush=True); time.sleep(30)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "named"
        assert ") Z y)" in Path(f"/proc/{p.pid}/stat").read_text()
        assert _alive(p.pid) is True
    finally:
        p.kill()
        p.wait()


def test_empty_levels_and_meta_are_stored_as_unknown(store):
    store.create_run("r", levels=[], meta={})
    row = store.get_run("r")
    assert row["levels"] is None and row["meta"] is None


def test_finishing_a_run_that_never_started_counts_from_its_creation(store):
    store.create_run("q")  # queued, never started
    store._w.execute("UPDATE runs SET created=? WHERE run_id='q'", (time.time() - 100.5,))
    end = store.finish_run("q", "interrupted", "gone")
    assert abs(end.data["elapsed_s"] - 100.5) < 0.4  # not from now, not rounded to whole seconds
    store.append(ev("s", 0, "run_start", {"question": "q"}, ts=time.time()))
    assert 0 <= store.finish_run("s", "crashed", "x").data["elapsed_s"] < 0.9  # just started: under a second


def test_marking_runs_interrupted_logs_their_ids(store, caplog):
    for rid in ("r1", "r2"):
        store.create_run(rid, status="running")
    store._w.execute("UPDATE runs SET pid=NULL")
    with caplog.at_level(logging.WARNING, logger="contextbox"):
        assert sorted(store.mark_interrupted()) == ["r1", "r2"]
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs in (["marked 2 run(s) interrupted: r1, r2"], ["marked 2 run(s) interrupted: r2, r1"])


def test_list_runs_shows_fifty_by_default(tmp_path):
    sq = SqliteRunStore(tmp_path / "runs.sqlite")
    tee = TeeRunStore(sq)
    try:
        for i in range(51):
            sq.create_run(f"r{i:02}")
        assert len(sq.list_runs()) == 50 and len(tee.list_runs()) == 50
        assert len(sq.list_runs(limit=51)) == 51
    finally:
        tee.close()


def test_export_keeps_non_ascii_text_as_the_jsonl_log_does(tmp_path):
    sq, js = SqliteRunStore(tmp_path / "runs.sqlite"), JsonlRunStore(tmp_path)
    tee = TeeRunStore(sq, js)
    try:
        tee.append(ev("r", 0, "warning", {"text": "Ærø — 東京"}))
        (line,) = list(sq.export_jsonl("r"))
        assert "Ærø — 東京" in line and json.loads(line)["data"] == {"text": "Ærø — 東京"}
        assert list(tee.export_jsonl("r")) == [line]
    finally:
        tee.close()


def test_tee_finish_run_gives_every_store_the_status_and_reason(tmp_path):
    sq, js = SqliteRunStore(tmp_path / "runs.sqlite"), JsonlRunStore(tmp_path)
    tee = TeeRunStore(sq, js)
    try:
        tee.append(ev("r", 0, "run_start", {"question": "q"}))
        tee.finish_run("r", "crashed", "boom")
        for s in (sq, js):
            end = s.events("r")[-1]
            assert (end.type, end.data["status"], end.data["reason"]) == ("run_end", "crashed", "boom")
    finally:
        tee.close()


def test_tee_events_of_an_unknown_run_name_the_first_store_that_was_asked(tmp_path):
    sq, js = SqliteRunStore(tmp_path / "db" / "runs.sqlite"), JsonlRunStore(tmp_path / "logs")
    tee = TeeRunStore(sq, js)
    try:
        with pytest.raises(UsageError, match=r"^no run 'nope' in .*db/runs\.sqlite; see 'rlm runs list'$"):
            tee.events("nope")
        sq.create_run("empty")  # known, but without events: no store has them
        with pytest.raises(UsageError, match=r"^no run 'empty' in .*db; see 'rlm runs list'$"):
            TeeRunStore(sq).events("empty")
    finally:
        tee.close()


def test_the_store_names_itself_when_its_path_is_unusable(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"^the run store: .*file is not a directory$"):
        SqliteRunStore(tmp_path / "file" / "runs.sqlite")
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(UsageError, match=r"^the run store: .*dir\.sqlite is a directory, not a database file$"):
        SqliteRunStore(tmp_path / "dir.sqlite")


def test_connections_wait_thirty_seconds_by_default(store):
    assert store._r().execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_reads_in_one_thread_reuse_one_connection(store):
    store.append(ev("r", 0, "warning"))
    store.events("r")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        store.events("r")
        store.get_run("r")
    assert len(os.listdir("/proc/self/fd")) - before <= 2  # no descriptor (connection) per read


def test_event_data_that_is_not_json_is_stored_as_text(store):
    store.append(ev("r", 0, "warning", {"path": Path("/x/y"), "n": 1}))
    store.create_run("q", meta={"file": Path("/a/b")})
    assert store.events("r")[0].data == {"path": "/x/y", "n": 1}
    assert store.get_run("q")["meta"] == {"file": "/a/b"}


def test_migrating_an_old_store_is_logged(tmp_path, caplog):
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as c:
        c.executescript(OLD_SCHEMA)
    with caplog.at_level(logging.INFO, logger="contextbox"):
        SqliteRunStore(path).close()
    assert [r.getMessage() for r in caplog.records] == [f"run store {path}: usage.cost_usd may now be NULL "
                                                        "(unknown price)"]


def test_run_id_prefixes_with_backslashes_and_percent_signs(store):
    for rid in ("a\\b-1", "a\\c-2", "ab-3", "50%-4", "50abc-5"):
        store.create_run(rid)
    assert store.resolve_id("a\\b") == "a\\b-1"
    with pytest.raises(UsageError, match="is ambiguous"):
        store.resolve_id("a\\")
    assert store.resolve_id("50%") == "50%-4"  # "%" is no wildcard: 50abc-5 does not match
