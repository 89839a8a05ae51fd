"""A second Ctrl-C of ``rlm ask`` landing at a chosen point of the cancelled run's ending.

The real CLI (``contextbox.cli.main``) runs in a child process against the slow fake server; the
first press is a real SIGINT once the model call is in flight, the second lands exactly where a
signal arriving during a C call of the main thread is handled: as that call returns (the run store's
``BEGIN IMMEDIATE`` or ``COMMIT``, or the main thread's first C call after the first press). A
KeyboardInterrupt raised there left the SQLite transaction open (exit 1, a traceback, the run left
``running``), turned into a logged store error (the second press lost), or, inside the first press's
handler, hung the CLI. A run whose main thread is stuck is still stopped, and recorded, at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeLLMServer
from test_cli_runs import provider_toml

import contextbox
from contextbox.stores.sqlite import SqliteRunStore
from contextbox.types import Event

SRC = str(Path(contextbox.__file__).resolve().parent.parent)
FIND = json.dumps({"op": "find", "text": "key"})

HARNESS = r'''
import os, signal, sys, threading, time
from pathlib import Path
import contextbox.stores.sqlite as ss
from contextbox import cli

runs, where, ctx = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
first = threading.Event()
stuck = threading.Event()


class Conn:  # the store's write connection: the second press lands as WHERE's statement returns
    def __init__(self, c):
        self.c, self.pressed = c, False

    def __getattr__(self, k):
        return getattr(self.c, k)

    def execute(self, sql, *a):
        if where == "stuck-store" and sql == "BEGIN IMMEDIATE" and first.is_set():
            stuck.set()  # the main thread hangs inside a store write, holding the store
            time.sleep(60)
        r = self.c.execute(sql, *a)
        if sql == where and first.is_set() and not self.pressed:
            self.pressed = True
            signal.raise_signal(signal.SIGINT)  # its handlers run as this call returns
        return r


returned = [0]
def profile(frame, event, arg):  # "c-call N": the second press lands as the main thread's N-th C call
    if event == "c_return" and first.is_set():  # after the first press returns
        returned[0] += 1
        if where == f"c-call {returned[0]}":
            signal.raise_signal(signal.SIGINT)


entered = cli.Progress.__enter__
def enter(self):  # the run starts: watch the main thread's C calls
    if where.startswith("c-call"):
        sys.setprofile(profile)
    return entered(self)
cli.Progress.__enter__ = enter

init = ss.SqliteRunStore.__init__
def patched(self, *a, **k):
    init(self, *a, **k)
    self._w = Conn(self._w)
ss.SqliteRunStore.__init__ = patched

shown = cli.Progress.on_event
def on_event(self, ev):  # "stuck": the main thread hangs once the run has been cancelled
    shown(self, ev)
    if where == "stuck" and ev.type == "error":
        stuck.set()
        time.sleep(60)
cli.Progress.on_event = on_event


def presses():
    while not any('"lm_request"' in p.read_text() for p in runs.glob("*.jsonl")):
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGINT)
    first.set()
    if where.startswith("stuck") and stuck.wait(30):
        os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=presses, daemon=True).start()
sys.exit(cli.main(["ask", "key?", "-c", ctx, "--model", "fake/m", "--runs-dir", str(runs)]))
'''


def ask_and_press(tmp_path: Path, where: str) -> tuple[subprocess.CompletedProcess, float]:
    runs = tmp_path / "runs"
    (tmp_path / "harness.py").write_text(HARNESS)
    (tmp_path / "c.txt").write_text("the key is 99\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "HOME": str(tmp_path), "CONTEXTBOX_RUNS_DIR": ""}
    with FakeLLMServer(FIND, latency=5.0) as srv:
        provider_toml(tmp_path, srv)
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, str(tmp_path / "harness.py"), str(runs), where, str(tmp_path / "c.txt")],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        return p, time.monotonic() - t0


def recorded(runs: Path) -> tuple[list[tuple[str, str]], list[tuple[int, str, str]]]:
    with sqlite3.connect(runs / "runs.sqlite") as c:
        rows = c.execute("SELECT status, reason FROM runs").fetchall()
        evs = c.execute("SELECT seq, type, json_extract(data, '$.status') FROM events ORDER BY seq").fetchall()
    return rows, evs


@pytest.mark.parametrize("where", ["BEGIN IMMEDIATE", "COMMIT", "c-call 1"])
def test_a_second_ctrl_c_landing_inside_a_store_write_leaves_a_whole_cancelled_run(tmp_path, where):
    """"c-call 1": the second press lands inside the first one's handler (a Python handler may run inside
    another), which held the lock of the cancel Event as it set it: the nested handler set it too and waited
    for that lock forever (the CLI hung)."""
    p, _ = ask_and_press(tmp_path, where)
    assert p.returncode == 130, p.stderr
    assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr
    assert "ERROR" not in p.stderr, p.stderr  # no store write failed on the way
    rows, evs = recorded(tmp_path / "runs")
    assert [s for s, _ in rows] == ["cancelled"]
    assert [seq for seq, _, _ in evs] == list(range(len(evs)))  # nothing lost, nothing twice
    assert [(t, s) for _, t, s in evs if t == "run_end"] == [("run_end", "cancelled")] and evs[-1][1] == "run_end"
    log = [json.loads(x) for x in next((tmp_path / "runs").glob("*.jsonl")).read_text().splitlines()]
    assert [(e["seq"], e["type"]) for e in log] == [(seq, t) for seq, t, _ in evs]  # the JSONL log in step


def test_a_second_ctrl_c_stops_a_run_whose_main_thread_is_stuck_and_records_it_cancelled(tmp_path):
    p, took = ask_and_press(tmp_path, "stuck")
    assert p.returncode == 130, p.stderr
    assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr
    rows, evs = recorded(tmp_path / "runs")
    assert rows == [("cancelled", "stopped by a second Ctrl-C")]
    assert [(t, s) for _, t, s in evs if t == "run_end"] == [("run_end", "cancelled")]
    run_id = next((tmp_path / "runs").glob("*.jsonl")).stem
    assert f"rlm: stopped by a second Ctrl-C; run {run_id} cancelled" in p.stderr
    assert took < 40  # the stuck main thread (60 s) was not waited for


@pytest.mark.parametrize("after", ["BEGIN IMMEDIATE", "INSERT OR IGNORE INTO events", "COMMIT"])
def test_an_interrupt_landing_inside_a_store_write_leaves_no_transaction_open(tmp_path, after):
    """Python code that runs the engine in its main thread (a REPL, a script) gets Ctrl-C as a
    KeyboardInterrupt anywhere: the store stays usable and the interrupt is not turned into another error."""
    store = SqliteRunStore(tmp_path / "runs.sqlite")
    real = store._w

    class Interrupting:  # the write connection, interrupted as AFTER's statement returns
        armed = True

        def __getattr__(self, k: str) -> Any:
            return getattr(real, k)

        def execute(self, sql: str, *a: Any) -> Any:
            r = real.execute(sql, *a)
            if self.armed and sql.startswith(after):
                self.armed = False
                raise KeyboardInterrupt
            return r

    store.append(Event("run_start", {"question": "q"}, run_id="r1", seq=0))
    store._w = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        store.append(Event("iteration_start", {"iteration": 1}, run_id="r1", seq=1))
    assert not real.in_transaction
    store.finish_run("r1", "cancelled", "stopped")
    assert store.get_run("r1")["status"] == "cancelled"
    kept = ["iteration_start"] if after == "COMMIT" else []  # stored once committed, rolled back before
    assert [e.type for e in store.events("r1")] == ["run_start", *kept, "error", "run_end"]
    store.close()


def test_a_second_ctrl_c_exits_even_when_the_stuck_main_thread_holds_the_run_store(tmp_path):
    p, took = ask_and_press(tmp_path, "stuck-store")
    assert p.returncode == 130 and "Traceback" not in p.stderr, p.stderr
    assert took < 40  # neither the stuck thread (60 s) nor the store it holds was waited for
    # the end could not be written: the run is not lost, the next reader marks it interrupted (its process is gone)
    listed = subprocess.run([sys.executable, "-m", "contextbox.cli", "runs", "list", "--runs-dir",
                             str(tmp_path / "runs"), "--json"], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC, "HOME": str(tmp_path)}, timeout=60)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"], listed.stderr
