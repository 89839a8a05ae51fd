"""The RLM loop in detail: what each refused, skipped or run action records in the event stream and
tells the model.

Written against the survivors of `tests/mutation.py --modules engine.py` (docs/mutation.md): the
visualizer, the run store and the CLI read these event fields, so each test states them exactly.
No test here starts a sandbox (they run inside mutmut's forked workers).
"""

from __future__ import annotations

import pytest
from helpers import cmd, fed_back, run

import contextbox.engine as engine
from contextbox.executors import LEVEL_NAMES

TEXT = "The weather was fine.\nThe secret code is ZEBRA-42.\nNothing else happened.\n"
CODE = "```repl\nprint('hi')\n```"


def test_a_refused_level_is_an_event_with_the_action_and_the_reason():
    res, rlm = run([cmd("find", text="code") + "\n" + CODE, cmd("final", answer="ZEBRA-42")], TEXT,
                   levels="l1,l4")
    (refused,) = [e for e in res.events if e.type == "refused"]
    msg = (f"refused: {LEVEL_NAMES['l2']} is not allowed in this run (allowed: l1, l4). "
           "Use an allowed level.")
    assert refused.data == {"iteration": 1, "index": 1, "level": "l2", "op": "code", "message": msg}
    assert msg in fed_back(rlm)[0]


def test_refused_actions_count_as_errors_in_a_row():
    res, _ = run([CODE] * 5, TEXT, levels="l1", max_consecutive_errors=3)
    assert res.status == "failed" and res.reason == "3 consecutive replies without a valid action"


def test_a_level_this_installation_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(engine, "executor_factory", lambda level: None)
    res, rlm = run([CODE, CODE, CODE], TEXT, levels="l1,l2", max_consecutive_errors=3)
    refused = [e for e in res.events if e.type == "refused"]
    msg = f"refused: {LEVEL_NAMES['l2']} is not available in this installation."
    assert [e.data for e in refused] == [{"iteration": k, "index": 0, "level": "l2", "op": "code", "message": msg}
                                         for k in (1, 2, 3)]
    assert not any(e.type == "action_start" for e in res.events)
    assert fed_back(rlm)[0].endswith(msg) and res.status == "failed"  # each refusal is an error


def test_the_executor_of_a_code_level_comes_from_the_factory_by_its_level(monkeypatch):
    asked: list[str] = []

    class Echo:
        def __init__(self, session):
            pass

        def run(self, action):
            from contextbox.executors import ActionOutput

            return ActionOutput("ran")

        def close(self):
            pass

    def factory(level):
        asked.append(level)
        return Echo

    monkeypatch.setattr(engine, "executor_factory", factory)
    res, _ = run([cmd("find", text="code"), CODE, CODE, cmd("final", answer="x")], TEXT, levels="l1,l2")
    assert asked == ["l2"]  # once per level, and never for L1 commands
    assert res.status == "answered"


def test_a_skipped_repeat_is_an_action_end_marked_skipped():
    res, rlm = run([cmd("find", text="code"), cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT)
    ends = [e for e in res.events if e.type == "action_end"]
    skipped = ends[1]
    assert skipped.data["skipped"] is True and "skipped" not in ends[0].data
    assert {k: skipped.data[k] for k in ("iteration", "index", "level", "op")} == {
        "iteration": 2, "index": 0, "level": "l1", "op": "find"}
    assert skipped.data["output"] in fed_back(rlm)[1] and "already ran this exact action" in skipped.data["output"]
    assert skipped.data["error"] is True


@pytest.mark.parametrize("limit", [0, 5])
def test_clip_says_how_much_was_cut(limit):
    text = "x" * 1234
    assert engine.clip(text, limit) == "x" * limit + f"… [{1234 - limit:,} more characters]"
    assert engine.clip("abc", 3) == "abc" and engine.clip("abcd", 3) == "abc… [1 more characters]"
    assert engine.clip("abc", -2) == "… [3 more characters]"
