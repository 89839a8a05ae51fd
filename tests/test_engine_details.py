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
    assert fed_back(rlm)[0].endswith(msg)
    assert res.reason == "3 consecutive replies without a valid action"  # each refusal is an error


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


# ------------------------------------------------------------------ what an action records
class Cell:
    """A code level without a sandbox: ``out`` says what each run of a cell returns."""

    out: object = None
    seen: list = []

    def __init__(self, session):
        pass

    def run(self, action):
        from contextbox.executors import ActionOutput

        Cell.seen.append(action.args.get("code"))
        out = Cell.out(action) if callable(Cell.out) else Cell.out
        if isinstance(out, Exception):
            raise out
        return out or ActionOutput("ran")

    def close(self):
        pass


@pytest.fixture
def cell(monkeypatch):
    monkeypatch.setattr(engine, "executor_factory", lambda level: Cell)
    Cell.out, Cell.seen = None, []
    return Cell


def code(src: str) -> str:
    return f"```repl\n{src}\n```"


def test_action_start_and_end_carry_the_action_and_its_outcome(cell):
    res, _ = run(["[" + cmd("find", text="secret") + ", " + cmd("count", text="The") + "]", code("x = 1"),
                  cmd("final", answer="ZEBRA-42")], TEXT, levels="l1,l2")
    starts = [e.data for e in res.events if e.type == "action_start"]
    assert starts[0] == {"iteration": 1, "index": 0, "level": "l1", "op": "find",
                         "args": {"op": "find", "text": "secret"}}
    assert starts[1]["index"] == 1 and starts[1]["args"] == {"op": "count", "text": "The"}
    assert starts[2] == {"iteration": 2, "index": 0, "level": "l2", "op": "code", "code": "x = 1\n"}
    ends = [e.data for e in res.events if e.type == "action_end"]
    assert {k: ends[0][k] for k in ("iteration", "index", "level", "op", "error", "hits")} == {
        "iteration": 1, "index": 0, "level": "l1", "op": "find", "error": False, "hits": 1}
    assert ends[0]["read"] and "final" not in ends[0] and 0 <= ends[0]["elapsed_s"] < 60
    assert ends[2]["output"] == "ran" and ends[2]["read"] == []
    assert ends[3]["final"] == "ZEBRA-42"


def test_code_that_names_the_context_is_taken_to_read_all_of_it(cell):
    from contextbox.executors import ActionOutput

    Cell.out = lambda a: ActionOutput("ok", meta={"read": [[3, 9]]} if "mine" in a.args["code"] else {})
    res, _ = run([code("print(len(context))"), code("context_x = 1\nprint(x.context)"), code("mine(context)"),
                  cmd("final", answer="x")], TEXT, levels="l1,l2")
    reads = [e.data["read"] for e in res.events if e.type == "action_end"]
    assert reads[:3] == [[[0, len(TEXT)]], [], [[3, 9]]]  # its own ranges win


def test_several_actions_of_one_reply_are_numbered_in_the_feedback(cell):
    _, rlm = run([cmd("find", text="secret") + "\n" + code("x = 1"), cmd("find", text="weather"),
                  cmd("final", answer="x")], TEXT, levels="l1,l2")
    first, second = fed_back(rlm)[:2]
    assert first.startswith("[1] find →\n") and "\n\n[2] l2 code →\nran" in first
    assert second.startswith("find →\n")


def test_a_command_error_from_a_code_level_is_an_error_output(cell):
    from contextbox.errors import CommandError

    Cell.out = CommandError("no such thing")
    res, rlm = run([code("a"), code("b"), code("c")], TEXT, levels="l1,l2", max_consecutive_errors=3)
    ends = [e.data for e in res.events if e.type == "action_end"]
    assert [(d["output"], d["error"]) for d in ends] == [("error: no such thing", True)] * 3
    assert res.status == "failed"


def test_an_answer_from_any_level_is_bounded_by_max_answer_chars(cell):
    from contextbox.executors import ActionOutput

    Cell.out = lambda a: ActionOutput("done", final="y" * int(a.args["code"]))
    res, _ = run([code("11"), code("10")], TEXT, levels="l1,l2", max_answer_chars=10)
    ends = [e.data for e in res.events if e.type == "action_end"]
    assert ends[0]["error"] is True and "final" not in ends[0]
    assert ends[0]["output"] == ("error: the answer holds 11 characters, over the limit of 10 ([limits] "
                                 "max_answer_chars); answer with the result itself, not the data it came from")
    assert res.status == "answered" and res.answer == "y" * 10  # at the limit: accepted


# ------------------------------------------------------------------ the run's entry points
def test_run_ids_are_a_timestamp_and_six_hex_digits():
    import re

    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", engine.new_run_id())


@pytest.mark.parametrize("question", ["", "   \n", 5, None])
def test_an_empty_or_non_text_question_is_a_usage_error(question):
    from contextbox import RLM, Config
    from contextbox.errors import UsageError
    from contextbox.providers import ScriptedProvider

    rlm = RLM(model=ScriptedProvider([]), config=Config(), store=None)
    with pytest.raises(UsageError) as info:
        rlm.stream(question, TEXT)
    assert str(info.value) == "the question is empty"


def test_run_takes_plain_text_an_answer_type_and_a_run_id():
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    p = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="42")])
    rlm = RLM(model=p, config=Config(), store=None)
    stream = rlm.stream("q?", TEXT, run_id="my-run", answer_type=int)
    assert stream.result is None  # nothing yet: the run has not been read
    events = list(stream)
    assert stream.result.parsed == 42 and stream.result.run_id == "my-run"
    assert "ZEBRA-42" in next(e for e in events if e.type == "action_end").data["output"]  # the text was the context
    res = RLM(model=ScriptedProvider([cmd("final", answer="1")]), config=Config(), store=None).run(
        "q?", TEXT, run_id="other")
    assert res.run_id == "other"


def test_each_call_s_usage_names_its_model_and_depth():
    res, rlm = run([cmd("find", text="secret"), cmd("final", answer="x")], TEXT)
    assert [(u.model, u.depth) for u in res.usage.calls] == [(rlm.root.name, 0)] * 2


def test_a_run_out_of_turns_offers_its_last_prose_cut_to_2000_characters():
    res, _ = run([cmd("find", text="secret"), "prose " * 1000], TEXT, max_iterations=2)
    assert res.status == "max_iterations" and res.answer == ("prose " * 1000).strip()[:2000]


# ------------------------------------------------------------------ what an executor is given
def test_a_code_executor_gets_the_run_s_session_limits_and_services(monkeypatch):
    import time

    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    sessions = []

    class Watch(Cell):
        def __init__(self, session):
            sessions.append(session)

    monkeypatch.setattr(engine, "executor_factory", lambda level: Watch)
    Cell.out = None
    cfg = Config()
    cfg.code.max_output_chars, cfg.code.l2_memory_mb, cfg.code.l2_time_limit_s = 1234, 77, 3.5
    cfg.code.l3_memory_mb, cfg.code.l3_time_limit_s = 88, 4.5
    rlm = RLM(model=ScriptedProvider([code("x"), cmd("final", answer="x")]), config=cfg, levels="l1,l2",
              limits={"timeout_s": 100, "max_output_chars": 999}, store=None)
    res = rlm.run("the question?", TEXT, run_id="rid")
    (s,) = sessions
    assert (s.run_id, s.levels, s.path, s.depth, s.limits.max_output_chars) == ("rid", ("l1", "l2"), "0", 0, 999)
    assert s.context.text == TEXT and s.sub_query is None  # no L4: code cells get a clear refusal instead
    sv = s.services
    assert {k: sv[k] for k in ("max_code_output_chars", "l2_memory_mb", "l2_time_limit_s", "l3_memory_mb",
                               "l3_time_limit_s", "question")} == {
        "max_code_output_chars": 1234, "l2_memory_mb": 77, "l2_time_limit_s": 3.5, "l3_memory_mb": 88,
        "l3_time_limit_s": 4.5, "question": "the question?"}
    assert sv["rlm"] is rlm and callable(sv["forward_event"]) and callable(sv["record_usage"])
    assert 90 < sv["deadline"] - time.monotonic() <= 100
    assert res.status == "answered"


def test_a_local_root_model_gets_the_local_output_cap():
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    cfg = Config()
    cfg.local.max_output_chars = 321
    rlm = RLM(model=ScriptedProvider([cmd("final", answer="x")], name="local"), config=cfg, store=None)
    assert engine._Run(rlm, "q?", engine.Context.from_value(TEXT), "r", None).limits.max_output_chars == 321
    rlm = RLM(model=ScriptedProvider([cmd("final", answer="x")], name="local"), config=cfg, store=None,
              limits={"max_output_chars": 5000})  # an explicit limit stays
    assert engine._Run(rlm, "q?", engine.Context.from_value(TEXT), "r", None).limits.max_output_chars == 5000
    rlm = RLM(model=ScriptedProvider([cmd("final", answer="x")]), config=cfg, store=None)  # not local
    assert engine._Run(rlm, "q?", engine.Context.from_value(TEXT), "r", None).limits.max_output_chars != 321
