"""Sessions: ``RLM.session(context)`` and ``rlm chat -c PATH`` — one context, several questions, variables and
the code namespace kept between them, each question its own run linked to the session in the store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest
from helpers import cmd
from test_cli import rlm as rlm_cli
from test_cli import script

from contextbox import RLM, Config, RLMSession, UsageError
from contextbox.providers import ScriptedProvider
from contextbox.stores.sqlite import SqliteRunStore

LOG = "\n".join(f"2024-01-0{i % 9 + 1} {'ERROR' if i % 3 == 0 else 'INFO'} svc{i % 4} took {i * 7} ms"
                for i in range(30)) + "\n"


def make(replies: list[Any], *, levels: str = "l1", store: Any = None) -> tuple[RLM, ScriptedProvider]:
    p = ScriptedProvider(replies)
    return RLM(model=p, config=Config(), levels=levels, store=store), p


def test_l1_variables_and_tables_persist_between_questions(tmp_path):
    store = SqliteRunStore(tmp_path / "runs.sqlite")
    rlm, provider = make([
        # question 1: make a table, answer from it
        cmd("extract", store="t", pattern=r"(?P<day>\S+) (?P<level>\w+) (?P<svc>\w+) took (?P<ms>\d+) ms"),
        cmd("count_by", on="t", field="level", store="levels"), cmd("final_var", name="levels"),
        # question 2: the table is still there — no extract this time
        cmd("stats", on="t", field="ms"), cmd("final", answer="203"),
    ], store=store)
    with rlm.session(LOG) as s:
        r1 = s.ask("How many ERROR lines?")
        assert r1.status == "answered" and "ERROR" in r1.answer and "10" in r1.answer
        assert {"t", "levels"} <= set(s.variables)
        r2 = s.ask("What is the mean time?")
    assert r2.status == "answered" and r2.answer == "203"
    stats = [e for e in r2.events if e.type == "action_end" and e.data["op"] == "stats"][0]
    assert not stats.data["error"] and "mean" in stats.data["output"] and "203" in stats.data["output"]
    # the second question's first message says what the session keeps
    q2_first = provider.requests[3][1]["content"]
    assert "question 2 of a session" in q2_first and "levels" in q2_first and "t" in q2_first
    # each question is its own run, both linked to the session
    assert r1.run_id != r2.run_id and s.results == [r1, r2]
    rows = store.list_runs(session_id=s.session_id)
    assert {r["run_id"] for r in rows} == {r1.run_id, r2.run_id}
    assert all(r["session_id"] == s.session_id for r in rows)
    assert store.list_runs(session_id="s-other") == []
    start = [e for e in r2.events if e.type == "run_start"][0]
    assert start.data["session_id"] == s.session_id and start.data["turn"] == 2
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions WHERE session_id=?", (s.session_id,)).fetchone()[0] == 1


def test_without_a_session_the_next_run_starts_from_zero():
    rlm, _ = make([cmd("find", text="ERROR"), cmd("set", name="x", value="kept"), cmd("final", answer="ok"),
                   cmd("get", name="x"), cmd("final", answer="done")])
    rlm.run("q1", LOG)
    r2 = rlm.run("q2", LOG)
    get = [e for e in r2.events if e.type == "action_end" and e.data["op"] == "get"][0]
    assert get.data["error"] and "no variable" in get.data["output"]


@pytest.mark.parametrize("level", ["l2", "l3"])
def test_code_namespace_persists_between_questions(level):
    cell = "```repl\n{}\n```"
    rlm, _ = make([cmd("find", text="ERROR"), cell.format("secret = 41\nFINAL('stored')"),
                   cell.format("FINAL(str(secret + 1))")], levels=f"l1,{level}")
    with rlm.session(LOG) as s:
        assert s.ask("store it").answer == "stored"
        r2 = s.ask("use it")
        assert r2.status == "answered" and r2.answer == "42"
        executor = s.state.executors[level]
    assert executor._closed  # closing the session stops the sandbox / worker


def test_l3_worker_is_the_same_process_across_questions():
    cell = "```repl\n{}\n```"
    rlm, _ = make([cmd("find", text="ERROR"), cell.format("FINAL('a')"), cell.format("FINAL('b')")],
                  levels="l1,l3")
    with rlm.session(LOG) as s:
        s.ask("one")
        pid = s.state.executors["l3"].worker_pid()
        s.ask("two")
        assert s.state.executors["l3"].worker_pid() == pid and pid is not None


def test_session_async_ask_and_one_question_at_a_time():
    rlm, _ = make([cmd("find", text="ERROR"), cmd("set", name="x", value="v1"), cmd("final", answer="one"),
                   cmd("get", name="x"), cmd("final", answer="two")])
    s = rlm.session(LOG)
    assert isinstance(s, RLMSession)
    first = s.stream("q1")
    with pytest.raises(UsageError, match="answering a question already"):
        s.stream("q2")
    list(first)
    r2 = asyncio.run(s.aask("q2"))
    assert r2.answer == "two" and "v1" in [e for e in r2.events if e.type == "action_end"][0].data["output"]
    s.close()
    with pytest.raises(UsageError, match="session is closed"):
        s.ask("q3")


def test_a_failed_question_does_not_end_the_session():
    rlm, _ = make(["not a command", "still not", "nope", cmd("find", text="ERROR"), cmd("final", answer="ok")])
    rlm.limits = rlm.limits.replace(max_consecutive_errors=3)
    with rlm.session(LOG) as s:
        assert s.ask("q1").status == "failed"
        assert s.ask("q2").answer == "ok"


# ---------------------------------------------------------------------- rlm chat
def test_rlm_chat_answers_each_line_and_links_runs(tmp_path):
    ctx = tmp_path / "log.txt"
    ctx.write_text(LOG)
    runs = tmp_path / "runs"
    model = script(tmp_path, cmd("extract", store="t", pattern=r"(?P<day>\S+) (?P<level>\w+) "),
                   cmd("count_by", on="t", field="level", store="c"), cmd("final_var", name="c"),
                   cmd("get", name="c"), cmd("final", answer="INFO is the most frequent"))
    p = rlm_cli("chat", "-c", str(ctx), "--model", model, "--runs-dir", str(runs),
                stdin="How many of each level?\nWhich is the most frequent?\n",
                env={"CONTEXTBOX_RUNS_DIR": str(runs)})
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[-1] == "INFO is the most frequent" and any("ERROR" in ln for ln in out[:-1])
    sid = [w for w in p.stderr.split() if w.startswith("s-")][0]
    listed = rlm_cli("runs", "list", "--json", "--runs-dir", str(runs))
    rows = [r for r in json.loads(listed.stdout) if r.get("session_id") == sid]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"answered"}
    plain = rlm_cli("runs", "list", "--runs-dir", str(runs))
    assert plain.stdout.count(f"session={sid}") == 2


def test_rlm_chat_needs_a_context_file(tmp_path):
    p = rlm_cli("chat", "-c", "-", "--model", "scripted:x", stdin="q\n")
    assert p.returncode == 2 and "reads its questions from stdin" in p.stderr and p.stderr.count("\n") == 1
