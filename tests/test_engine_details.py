"""The RLM loop in detail: what each refused, skipped or run action records in the event stream and
tells the model.

Written against the survivors of `tests/mutation.py --modules engine.py` (docs/mutation.md): the
visualizer, the run store and the CLI read these event fields, so each test states them exactly.
No test here starts a sandbox (they run inside mutmut's forked workers).
"""

from __future__ import annotations

import pytest
from helpers import StubExecutor, cmd, fed_back, run

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

    def factory(level):
        asked.append(level)
        return StubExecutor

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
    assert skipped.data["output"] in fed_back(rlm)[1]
    assert skipped.data["output"] == ("note: you already ran this exact action at iteration 1; its output is above "
                                      "and it was not run again.")
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


# ------------------------------------------------------------------ sub-model calls and provider callbacks
class Sub:
    """A sub-model with fixed token counts that reports a retry and a failover through the engine's callbacks,
    as the real providers do (``on_retry(attempt, delay, err)``, ``on_failover(src, dst, err)``)."""

    name = "fn/sub"
    context_window = None

    def __init__(self, answer="the sub answer", callbacks=False):
        self.answer, self.callbacks, self.calls = answer, callbacks, []

    def complete(self, messages, **opts):
        self.calls.append((messages, opts))
        if self.callbacks:
            opts["on_retry"](2, 0.12345, RuntimeError("busy"))
            opts["on_failover"]("a/x", "b/y", RuntimeError("down"))
        from contextbox.types import Completion

        return Completion(self.answer, 7, 3, model=self.name)


def l4(replies, sub, **limits):
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    cfg = Config()
    cfg.aids.first_turn = False
    cfg.prices["fn/sub"] = (100.0, 200.0)  # USD per million tokens
    cfg.prices["scripted"] = (0.0, 0.0)
    rlm = RLM(model=ScriptedProvider(replies), sub_model=sub, levels="l1,l4", config=cfg,
              limits=limits or None, store=None)
    return rlm.run("q?", TEXT), rlm


def test_a_sub_call_is_recorded_as_an_event_and_in_the_usage():
    sub = Sub()
    res, _ = l4([cmd("llm_query", prompt="Summarise the weather"), cmd("final", answer="x")], sub,
                timeout_s=100)
    (messages, opts), = sub.calls
    assert messages == [{"role": "user", "content": "Summarise the weather"}]
    assert 0 < opts["timeout"] <= 100  # what is left of the run's time
    (ev,) = [e for e in res.events if e.type == "sub_call"]
    d = dict(ev.data)
    assert 0 <= d.pop("latency_s") < 3.5
    assert d == {"model": "fn/sub", "input_tokens": 7, "output_tokens": 3, "cost_usd": pytest.approx(0.0013),
                 "endpoint": "fn/sub", "prompt": "Summarise the weather", "answer": "the sub answer",
                 "role": "sub", "op": "llm_query"}
    subs = [u for u in res.usage.calls if u.role == "sub"]
    assert [(u.model, u.input_tokens, u.output_tokens, u.depth) for u in subs] == [("fn/sub", 7, 3, 0)]
    assert subs[0].cost_usd == pytest.approx(0.0013)
    assert "the sub answer" in [e.data["output"] for e in res.events if e.type == "action_end"][0]


def test_a_sub_call_event_clips_prompt_and_answer_to_record_chars():
    res, _ = l4([cmd("llm_query", prompt="P" * 30), cmd("final", answer="x")], Sub("A" * 25), record_chars=10)
    (ev,) = [e for e in res.events if e.type == "sub_call"]
    assert ev.data["prompt"] == "P" * 10 + "… [20 more characters]"
    assert ev.data["answer"] == "A" * 10 + "… [15 more characters]"


def test_retries_and_failovers_of_a_sub_call_are_events_with_its_tag():
    res, _ = l4([cmd("llm_query", prompt="hello"), cmd("final", answer="x")], Sub(callbacks=True))
    retry = [e.data for e in res.events if e.type == "retry"]
    failover = [e.data for e in res.events if e.type == "failover"]
    assert retry == [{"attempt": 2, "delay_s": 0.123, "error": "busy", "role": "sub", "op": "llm_query"}]
    assert failover == [{"from": "a/x", "to": "b/y", "error": "down", "message": "failover a/x -> b/y after: down",
                         "role": "sub", "op": "llm_query"}]


def test_retries_and_failovers_of_the_root_model_are_events_of_role_root():
    from contextbox.providers import ScriptedProvider

    class Flaky(ScriptedProvider):
        def complete(self, messages, **opts):
            opts["on_retry"](1, 2.5, RuntimeError("rate limited"))
            opts["on_failover"]("p/one", "p/two", RuntimeError("gone"))
            return super().complete(messages, **opts)

    from contextbox import RLM, Config

    cfg = Config()
    cfg.aids.first_turn = False  # one call: the final answer
    rlm = RLM(model=Flaky([cmd("final", answer="x")]), config=cfg, store=None)
    res = rlm.run("q?", TEXT)
    assert [e.data for e in res.events if e.type == "retry"] == [
        {"attempt": 1, "delay_s": 2.5, "error": "rate limited", "role": "root"}]
    assert [e.data for e in res.events if e.type == "failover"] == [
        {"from": "p/one", "to": "p/two", "error": "gone", "message": "failover p/one -> p/two after: gone",
         "role": "root"}]
    types = [e.type for e in res.events]
    assert types.index("retry") < types.index("lm_response")  # recorded while the call runs


# ------------------------------------------------------------------ a run's identity, its log and its stops
def test_a_session_keeps_the_id_it_was_given_and_its_runs_say_so():
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")]), config=Config(),
              store=None)
    s = rlm.session(TEXT, session_id="s-mine")
    assert s.session_id == "s-mine"
    res = s.ask("q?")
    assert res.events[0].data["session_id"] == "s-mine" and res.events[0].data["turn"] == 1


def test_a_child_run_s_events_carry_its_path_and_its_calls_its_depth():
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")]), config=Config(),
              store=None, depth=2, path="0.1.3")
    sunk = []
    rlm.usage_sink = sunk.append  # a child run reports each call to its parent
    res = rlm.run("q?", TEXT)
    assert {e.path for e in res.events} == {"0.1.3"}
    assert [u.depth for u in res.usage.calls] == [2, 2]
    assert sunk == res.usage.calls and all(u is not None for u in sunk)


def test_a_run_log_that_cannot_be_written_does_not_stop_the_run(caplog):
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    class Full:
        def append(self, ev):
            raise OSError("No space left on device")

    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")]), config=Config(),
              store=Full())
    with caplog.at_level("ERROR", logger="contextbox"):
        res = rlm.run("q?", TEXT)
    assert res.status == "answered" and res.answer == "x"
    assert "run log write failed: No space left on device" in [r.getMessage() for r in caplog.records]


def test_a_cancelled_or_timed_out_run_says_why():
    import threading

    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    cancel = threading.Event()
    cancel.set()
    res = RLM(model=ScriptedProvider([cmd("final", answer="x")]), config=Config(), store=None).run(
        "q?", TEXT, cancel=cancel)
    assert (res.status, res.reason) == ("cancelled", "cancelled")
    rlm = RLM(model=ScriptedProvider([cmd("final", answer="x")]), config=Config(), store=None,
              limits={"timeout_s": 0.25})
    rlm.root.complete = lambda *a, **k: __import__("time").sleep(3)  # a model that does not answer in time
    res = rlm.run("q?", TEXT)
    assert (res.status, res.reason) == ("timeout", "the run took longer than timeout_s=0.25")


def test_a_code_cell_runs_beside_the_loop_so_the_run_s_time_limit_still_holds(cell):
    import time

    Cell.out = lambda a: time.sleep(3)
    t = time.monotonic()
    res, _ = run([code("slow()"), cmd("final", answer="x")], TEXT, levels="l1,l2", timeout_s=0.3)
    assert res.status == "timeout" and time.monotonic() - t < 2.5


def test_an_action_s_elapsed_time_is_measured_in_seconds(cell):
    import time

    from contextbox.executors import ActionOutput

    Cell.out = lambda a: time.sleep(0.2) or ActionOutput("ok")
    res, _ = run([code("nap()"), cmd("final", answer="x")], TEXT, levels="l1,l2")
    (first, _final) = [e.data for e in res.events if e.type == "action_end"]
    assert 0.2 <= first["elapsed_s"] < 3.5


def test_a_run_without_a_time_limit_waits_on_its_model_without_a_deadline():
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")]), config=Config(),
              store=None, limits={"timeout_s": float("inf")})
    res = rlm.run("q?", TEXT)
    assert (res.status, res.answer) == ("answered", "x")
    assert [o["timeout"] for o in rlm.root.options] == [None, None]
    rlm = RLM(model=ScriptedProvider([cmd("final", answer="x")]), config=Config(), store=None,
              limits={"timeout_s": 50})
    rlm.run("q?", TEXT)
    assert 40 < rlm.root.options[0]["timeout"] <= 50


def test_a_model_call_left_hanging_by_a_timeout_cannot_hold_the_process_open():
    """The run ends at its time limit while the model call still runs: the thread left with the call is a
    daemon, so a script whose run timed out exits instead of waiting for the call."""
    import threading
    import time

    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    release, started = threading.Event(), threading.Event()

    class Hung(ScriptedProvider):
        def complete(self, messages, **opts):
            started.set()
            release.wait(30)
            return super().complete(messages, **opts)

    before = set(threading.enumerate())
    rlm = RLM(model=Hung([cmd("final", answer="x")]), config=Config(), store=None, limits={"timeout_s": 2})
    t = time.monotonic()
    res = rlm.run("q?", TEXT)
    try:
        assert res.status == "timeout" and started.is_set() and time.monotonic() - t < 15
        left = [th for th in set(threading.enumerate()) - before if th.is_alive()]
        assert left and all(th.daemon for th in left)
    finally:
        release.set()


# ------------------------------------------------------------------ model specs, the rlms shape, forwarded events
def test_model_specs_given_as_text_are_resolved_with_the_config(tmp_path, monkeypatch):
    import json

    import contextbox.providers.local as local
    from contextbox import RLM, Config
    from contextbox.providers.base import ProviderConfig

    script = tmp_path / "s.json"
    script.write_text(json.dumps([cmd("find", text="secret"), cmd("final", answer="ZEBRA-42")]))
    rlm = RLM(model=f"scripted:{script}", config=Config(), store=None)
    assert rlm.root.name == f"scripted:{script}" and rlm.run("q?", TEXT).answer == "ZEBRA-42"
    cfg = Config()
    cfg.providers.append(ProviderConfig("mine", "openai", base_url="http://127.0.0.1:9/v1"))
    rlm = RLM(model="mine/m1", config=cfg, store=None)  # only a configured provider knows the name "mine"
    assert rlm.root.name == "mine/m1" and rlm.sub.name == "mine/m1"
    monkeypatch.setattr(local, "_import_llama", lambda: None)  # built lazily: no model is loaded here
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    cfg = Config()
    cfg.local.model_path, cfg.local.context_tokens, cfg.local.threads = str(gguf), 1234, 3
    root = RLM(model="local", config=cfg, store=None).root
    assert (root.name, root.model_path, root.context_window, root.n_threads) == (f"local:{gguf}", gguf, 1234, 3)


def test_completion_runs_the_prompt_over_the_given_context_with_the_run_options():
    import asyncio

    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    def rlm():
        return RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="ZEBRA-42")]),
                   config=Config(), store=None)

    for c in (rlm().completion(TEXT, root_prompt="Which code?", run_id="r-1"),
              asyncio.run(rlm().acompletion(TEXT, root_prompt="Which code?", run_id="r-1"))):
        assert (c.response, c.root_model, c.prompt, c.run_id) == ("ZEBRA-42", "scripted", TEXT, "r-1")
        start = c.result.events[0].data
        assert start["question"] == "Which code?" and start["context"]["chars"] == len(TEXT)
        assert "ZEBRA-42" in next(e for e in c.result.events if e.type == "action_end").data["output"]
    c = asyncio.run(rlm().acompletion(TEXT))
    assert c.result.events[0].data["question"] == engine.DEFAULT_ROOT_PROMPT


def test_events_a_code_level_forwards_or_emits_while_closing_are_in_the_stream(monkeypatch):
    from contextbox.types import Event

    class Forwarding(Cell):
        def __init__(self, session):
            self.session = session

        def run(self, action):
            from contextbox.executors import ActionOutput

            self.session.services["forward_event"](Event("sub_call", {"model": "child"}, path="0.4"))
            return ActionOutput("ran")

        def close(self):
            self.session.emit("warning", {"message": "worker gone", "level": "l2"})

    monkeypatch.setattr(engine, "executor_factory", lambda level: Forwarding)
    res, _ = run([code("x"), cmd("final", answer="x")], TEXT, levels="l1,l2")
    (fwd,) = [e for e in res.events if e.type == "sub_call"]
    assert (fwd.data, fwd.path) == ({"model": "child"}, "0.4")
    types = [e.type for e in res.events]
    assert types.index("sub_call") < types.index("final")
    warn = [e for e in res.events if e.type == "warning"]
    assert [e.data for e in warn] == [{"message": "worker gone", "level": "l2"}] and types[-1] == "run_end"


def test_what_a_sub_call_really_used_counts_against_the_run_s_token_limit():
    class Big(Sub):
        def complete(self, messages, **opts):
            from contextbox.types import Completion

            self.calls.append((messages, opts))
            return Completion("a long read", 19_000, 10, model=self.name)

    res, _ = l4([cmd("llm_query", prompt="read it all"), cmd("find", text="secret"), cmd("final", answer="x")],
                Big(), max_total_tokens=20_000)
    assert res.status == "budget_exceeded" and res.reason.startswith("max_total_tokens=20000 exceeded (")
    assert int(res.reason.split("(")[1].split()[0].replace(",", "")) > 20_000  # the sub-call's 19,010 counted



def test_run_start_states_the_run_and_a_failed_run_ends_with_a_fatal_error_event():
    from contextbox import RLM, Config
    from contextbox.providers import ScriptedProvider

    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret")]), sub_model=ScriptedProvider([], name="other"),
              config=Config(), store=None, levels="l1,l4", limits={"max_iterations": 3})
    res = rlm.run("Which code?", TEXT, answer_type=int)
    start = res.events[0]
    assert start.type == "run_start" and start.seq == 0 and start.path == "0"
    d = start.data
    assert (d["question"], d["model"], d["sub_model"], d["levels"], d["depth"]) == (
        "Which code?", "scripted", "other", ["l1", "l4"], 0)
    assert d["limits"]["max_iterations"] == 3 and d["context"]["chars"] == len(TEXT)
    assert "head" not in d["context"] and "tail" not in d["context"]  # the text itself is not repeated
    assert d["answer_type"] == "int" and d["answer_schema"] == {"type": "integer"}
    assert "session_id" not in d
    assert res.status == "failed" and res.reason.startswith("ScriptExhausted: ")
    err, end = res.events[-2], res.events[-1]
    assert (err.type, err.data) == ("error", {"message": res.reason, "fatal": True, "status": "failed"})
    assert end.type == "run_end" and end.data["status"] == "failed" and end.data["answer"] is None
    assert [e.seq for e in res.events] == list(range(len(res.events)))
