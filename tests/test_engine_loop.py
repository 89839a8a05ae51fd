"""The loop's first message, steering, compaction and events, by what a run does.

Written against the mutants of `_Run._loop` and `_compact` that the engine tests left alive (docs/mutation.md,
sixth session); the RLM's configuration and what a run hands its code levels are in test_engine_config.py.
Each test drives a run through the scripted model (tests/helpers.py) and reads what the model was sent or
what the event stream says. None starts a sandbox or a worker (they run inside mutmut's forked workers).
"""

from __future__ import annotations

import time

import pytest
from helpers import StubExecutor, cmd, fed_back, run

import contextbox.engine as engine
from contextbox import RLM, Config, prompts
from contextbox.errors import BudgetExceeded
from contextbox.executors import ActionOutput
from contextbox.providers import ScriptedProvider
from contextbox.schema import FIRST_TURN_OPS
from contextbox.typed_answer import AnswerSpec

TEXT = "The weather was fine.\nThe secret code is ZEBRA-42.\nNothing else happened.\n"
ASK = "Reply with your first command."


def events(res, kind):
    return [e.data for e in res.events if e.type == kind]


def rlm_of(replies, config=None, **kw):
    return RLM(model=ScriptedProvider(replies, **{k: kw.pop(k) for k in ("name", "constrained", "context_window")
                                                  if k in kw}),
               config=config or Config(), store=None, **kw)


def ops(schema):
    return [b["properties"]["op"]["const"] for b in schema["anyOf"]]


# ------------------------------------------------------------------ the first message and the system prompt
def test_the_first_message_states_the_question_and_the_context_then_asks_for_a_command():
    res, rlm = run([cmd("find", text="secret"), cmd("final", answer="x")], TEXT, question="Which code?")
    system, first = rlm.root.requests[0]
    assert system == {"role": "system", "content": prompts.system_prompt(("l1",), Config().code)}
    assert first["role"] == "user"
    assert first["content"].startswith("Question: Which code?\n\nThe context box:\n")
    assert "ZEBRA-42" in first["content"] and first["content"].endswith(ASK)  # a short context is shown whole
    assert events(res, "aid") == []  # nothing to steer
    assert [u.role for u in res.usage.calls] == ["root", "root"]


def test_a_one_turn_run_is_told_in_its_first_message_that_it_is_its_last():
    res, rlm = run([cmd("final", answer="x")], TEXT, max_iterations=1)
    assert rlm.root.requests[0][1]["content"].endswith(ASK + "\n\n" + prompts.LAST_TURN)
    assert events(res, "iteration_start") == [{"iteration": 1, "last": True}]
    res, rlm = run([cmd("find", text="secret"), cmd("final", answer="x")], TEXT, max_iterations=2)
    first, second = rlm.root.requests
    assert first[1]["content"].endswith(ASK)  # two turns: the first is not the last
    assert second[-1]["content"].endswith("\n\n" + prompts.LAST_TURN)
    assert events(res, "iteration_start") == [{"iteration": 1, "last": False}, {"iteration": 2, "last": True}]


def test_an_answer_type_is_stated_in_the_first_message_before_the_last_turn_note():
    rlm = rlm_of([cmd("final", answer="42")], limits={"max_iterations": 1})
    res = rlm.run("How many?", TEXT, answer_type=int)
    spec = AnswerSpec(int).prompt()
    assert '{"type":"integer"}' in spec
    assert rlm.root.requests[0][1]["content"].endswith(f"{ASK}\n\n{spec}\n\n{prompts.LAST_TURN}")
    assert res.parsed == 42


def test_extra_system_instructions_reach_the_root_run_only():
    cfg = Config()
    cfg.system = "  Answer in French.\n"
    base = prompts.system_prompt(("l1",), cfg.code)
    rlm = rlm_of([cmd("find", text="secret"), cmd("final", answer="x")], cfg)
    rlm.run("q?", TEXT)
    assert rlm.root.requests[0][0]["content"] == base + "\n\n## Extra instructions from the user\nAnswer in French."
    child = rlm_of([cmd("find", text="secret"), cmd("final", answer="x")], cfg, depth=1, path="0.1")
    child.run("q?", TEXT)
    assert child.root.requests[0][0]["content"] == base  # a child run follows its parent's instructions
    plain = rlm_of([cmd("find", text="secret"), cmd("final", answer="x")])
    plain.run("q?", TEXT)
    assert plain.root.requests[0][0]["content"] == base


def test_the_system_prompt_states_the_configured_code_time_limits(monkeypatch):
    monkeypatch.setattr(engine, "executor_factory", lambda level: StubExecutor)
    cfg = Config()
    cfg.code.l2_time_limit_s = 7.5
    rlm = rlm_of([cmd("final", answer="x")], cfg, levels="l1,l2")
    rlm.run("q?", TEXT)
    system = rlm.root.requests[0][0]["content"]
    assert system == prompts.system_prompt(("l1", "l2"), cfg.code) and "7.5" in system
    assert system != prompts.system_prompt(("l1", "l2"), Config().code)


CASE = """=== CASE FILE ===

VICTIM: Lord Edward Ashford, found dead in the study of Ashford Manor. Time of death: between 10:00 PM
and 11:00 PM. Cause of death: poison in his brandy.

[WITNESS 1: Colonel Arthur Pemberton - family friend]

I went to the study at 10:05 PM and left at 10:20 PM. Edward was alive. I admit the money troubled us.

[WITNESS 2: Eleanor Ashford - daughter]

From 10:00 PM I sat in the drawing room with Aunt Victoria. Father shouted at Pemberton last week.
"""


def test_a_who_did_it_question_with_sub_calls_is_told_of_the_case_route():
    from contextbox.case_route import HINT

    q = "Who poisoned Lord Ashford?"
    rlm = rlm_of([cmd("find", text="brandy"), cmd("final", answer="x")], levels="l1,l4")
    res = rlm.run(q, CASE)
    assert rlm.root.requests[0][1]["content"].endswith(ASK + "\n\n" + HINT)
    assert "case_route" not in [a["aid"] for a in events(res, "aid")]  # an API model is told, not steered
    rlm = rlm_of([cmd("find", text="brandy"), cmd("final", answer="x")], levels="l1")  # no L4: no route
    rlm.run(q, CASE)
    assert rlm.root.requests[0][1]["content"].endswith(ASK)
    p = ScriptedProvider([cmd("suspects"), cmd("final", answer="x")], constrained=True)  # a small model is steered
    res = RLM(model=p, config=Config(), store=None, levels="l1,l4").run(q, CASE)
    assert [a for a in events(res, "aid") if a["aid"] == "case_route"] == [
        {"aid": "case_route", "iteration": 1,
         "message": "a who-did-it question: suspects, examine, weigh, then answer"}]
    assert ops(p.options[0]["response_schema"]) == ["suspects"]


# ------------------------------------------------------------------ what each call records
def test_each_request_event_describes_what_the_model_was_sent():
    res, rlm = run([cmd("find", text="secret"), cmd("count", pattern="The"), cmd("final", answer="x")], TEXT)
    reqs = events(res, "lm_request")
    assert len(reqs) == len(rlm.root.requests) == 3
    for k, (d, sent) in enumerate(zip(reqs, rlm.root.requests, strict=True), 1):
        assert (d["iteration"], d["messages"]) == (k, len(sent)) and d["messages"] == 2 * k
        assert d["chars"] == sum(len(m["content"]) for m in sent)
        assert d["message"] == sent[-1]["content"]
        assert "allowed" not in d
    assert reqs[0]["system"] == rlm.root.requests[0][0]["content"]
    assert "system" not in reqs[1] and "system" not in reqs[2]  # said once


def test_each_response_event_states_the_reply_its_tokens_cost_and_endpoint():
    class Served(ScriptedProvider):
        def complete(self, messages, **opts):
            time.sleep(0.02)
            c = super().complete(messages, **opts)
            c.endpoint = "pool#1@http://127.0.0.1:9/v1" if len(self.requests) == 1 else None
            return c

    cfg = Config()
    cfg.prices["scripted"] = (1.0, 2.0)  # USD per million tokens
    replies = [{"text": cmd("find", text="secret"), "input_tokens": 1000, "output_tokens": 10},
               {"text": cmd("final", answer="x"), "input_tokens": 2000, "output_tokens": 20}]
    rlm = RLM(model=Served(replies), config=cfg, store=None)
    res = rlm.run("q?", TEXT)
    got = events(res, "lm_response")
    for d in got:
        latency = d.pop("latency_s")
        assert 0.02 <= latency < 4 and round(latency, 4) == latency  # seconds, to 0.1 ms
    assert got == [
        {"iteration": 1, "text": replies[0]["text"], "input_tokens": 1000, "output_tokens": 10,
         "cost_usd": pytest.approx(0.00102), "estimated": False, "model": "scripted",
         "endpoint": "pool#1@http://127.0.0.1:9/v1"},
        {"iteration": 2, "text": replies[1]["text"], "input_tokens": 2000, "output_tokens": 20,
         "cost_usd": pytest.approx(0.00204), "estimated": False, "model": "scripted", "endpoint": "scripted"}]
    assert [m["content"] for m in rlm.root.requests[1] if m["role"] == "assistant"] == [replies[0]["text"]]


def test_an_empty_reply_is_recorded_as_empty_text_and_answered_with_an_error():
    res, rlm = run(["", cmd("find", text="secret"), cmd("final", answer="x")], TEXT)
    assert events(res, "lm_response")[0]["text"] == ""
    assert rlm.root.requests[1][2] == {"role": "assistant", "content": ""}
    (err,) = [e for e in events(res, "error")]
    assert err["iteration"] == 1 and err["fatal"] is False
    assert fed_back(rlm)[0] == (f"error: {err['message']}. Reply with one JSON command, e.g. "
                                '{"op": "find", "text": "a distinctive word"}, or the final command.')
    assert res.status == "answered"


def test_a_local_root_model_is_asked_for_at_most_its_reply_tokens():
    cfg = Config()
    cfg.local.max_tokens = 321
    p = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="ZEBRA-42")], name="local")
    res = RLM(model=p, config=cfg, store=None, levels="l1").run("q?", TEXT)
    assert res.status == "answered"
    assert [(sorted(o), o["max_tokens"]) for o in p.options] == [(["max_tokens", "timeout"], 321)] * 2
    p = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")])
    RLM(model=p, config=cfg, store=None).run("q?", TEXT)
    assert all("max_tokens" not in o for o in p.options)  # an API model: its own default


# ------------------------------------------------------------------ steering
def test_the_verification_flag_is_an_aid_event_not_an_argument():
    res, _ = run([cmd("find", text="secret", answers_question=False),
                  cmd("final", answer="ZEBRA-42", answers_question=True)], TEXT)
    assert [a for a in events(res, "aid") if a["aid"] == "verify_answer"] == [
        {"aid": "verify_answer", "iteration": 1, "answers_question": False, "message": ""},
        {"aid": "verify_answer", "iteration": 2, "answers_question": True, "message": ""}]
    assert events(res, "action_start")[0]["args"] == {"op": "find", "text": "secret"}
    assert (res.status, res.answer) == ("answered", "ZEBRA-42")


def test_a_rejected_typed_answer_is_an_error_the_model_is_told_about():
    rlm = rlm_of([cmd("find", text="secret"), cmd("final", answer="many"), cmd("final", answer="42")])
    res = rlm.run("q?", TEXT, answer_type=int)
    (err,) = events(res, "error")
    assert set(err) == {"iteration", "message", "fatal", "answer_type"}
    assert (err["iteration"], err["fatal"], err["answer_type"]) == (2, False, "int")
    assert err["message"].startswith("final answer refused: it must be JSON matching the int schema")
    assert fed_back(rlm)[1] == "final →\nfinal answer: many\n\n" + err["message"]
    assert events(res, "final") == [{"answer": "42", "iteration": 3}]
    assert (res.status, res.answer, res.parsed) == ("answered", "42", 42)


def test_rejected_typed_answers_count_as_replies_without_a_valid_action():
    rlm = rlm_of([cmd("find", text="secret"), cmd("final", answer="abc"), cmd("final", answer="def"),
                  cmd("final", answer="7")], limits={"max_consecutive_errors": 2})
    res = rlm.run("q?", TEXT, answer_type=int)
    assert (res.status, res.reason) == ("failed", "2 consecutive replies without a valid action")
    assert res.iterations == 3


def test_a_valid_action_resets_the_count_of_errors_in_a_row():
    res, _ = run(["nothing", "nothing", cmd("find", text="secret"), "nothing", "nothing",
                  cmd("final", answer="ZEBRA-42")], TEXT, max_consecutive_errors=3)
    assert (res.status, res.answer, res.iterations) == ("answered", "ZEBRA-42", 6)


def test_a_run_out_of_turns_says_how_many_it_had():
    res, _ = run([cmd("find", text="secret"), cmd("find", text="weather"), cmd("count", pattern="The")], TEXT,
                 max_iterations=3)
    assert (res.status, res.reason, res.iterations) == ("max_iterations", "no final answer after 3 iterations", 3)
    assert res.answer is None  # its last reply was a command, not prose
    assert events(res, "final") == [] and events(res, "error") == []  # out of turns is not a failure


def test_a_repeated_action_is_told_to_change_then_to_answer():
    res, rlm = run([cmd("find", text="secret")] * 3 + [cmd("count", pattern="The"), cmd("final", answer="ZEBRA-42")],
                   TEXT)
    fb = fed_back(rlm)
    assert fb[1].endswith("\n\nDo something different: a different command (not find again), or the final command "
                          "if the answer is above.")
    must = "You must answer now (you repeated an action): reply with the final command, using what you found above."
    assert fb[2].endswith("\n\n" + must)
    (only,) = [a for a in events(res, "aid") if a["aid"] == "final_only" and a["message"] == must]
    assert (only["iteration"], only["repeats"]) == (3, 2)
    reqs = events(res, "lm_request")
    assert [r.get("allowed") for r in reqs] == [None, None, None, ["final", "final_var"], ["final", "final_var"]]
    types = [e.type for e in res.events]
    aid_at = next(i for i, e in enumerate(res.events) if e.type == "aid" and e.data.get("message") == must)
    assert types[aid_at + 1] == "iteration_start"  # told at the end of the turn, before the next one
    refused = [d for d in events(res, "action_end") if d["iteration"] == 4]
    assert refused[0]["output"].startswith("refused: you must answer now")
    assert res.answer == "ZEBRA-42"


def test_the_last_turn_note_replaces_a_steering_message():
    _, rlm = run([cmd("find", text="secret"), cmd("find", text="secret"), cmd("final", answer="x")], TEXT,
                 max_iterations=3)
    fb = fed_back(rlm)
    assert fb[1].endswith("\n\n" + prompts.LAST_TURN) and "Do something different" not in fb[1]
    assert prompts.LAST_TURN not in fb[0]


def test_a_failed_code_cell_stops_the_cells_after_it_but_a_failed_command_does_not(monkeypatch):
    seen: list[str] = []

    class Cell(StubExecutor):
        def run(self, action):
            src = action.args["code"].strip()
            seen.append(src)
            return ActionOutput("boom", error=True) if src == "bad" else ActionOutput("ran " + src)

    monkeypatch.setattr(engine, "executor_factory", lambda level: Cell)
    two_cells = "```repl\nbad\n```\n\n```repl\ngood\n```"
    two_cmds = "[" + cmd("get", name="nope") + ", " + cmd("find", text="secret") + "]"
    good_cells = "```repl\none\n```\n\n```repl\ntwo\n```"
    res, _ = run([two_cells, two_cmds, good_cells, cmd("final", answer="x")], TEXT, levels="l1,l2")
    assert seen == ["bad", "one", "two"]
    ends = [(d["iteration"], d["op"], d["error"]) for d in events(res, "action_end")]
    assert ends[:3] == [(1, "code", True), (2, "get", True), (2, "find", False)]


def test_a_stop_raised_by_an_action_ends_the_run_before_the_rest_of_its_reply(monkeypatch):
    class Spender:
        def __init__(self, session):
            self.session = session

        def run(self, action):
            self.session.services["stop"] = BudgetExceeded("max_total_tokens=10 exceeded (a batch)")
            return ActionOutput("partial batch")

        def close(self):
            pass

    monkeypatch.setattr(engine, "executor_factory", lambda level: Spender)
    res, _ = run(["```repl\nspend()\n```\n" + cmd("find", text="secret"), cmd("final", answer="x")], TEXT,
                 levels="l1,l2")
    assert (res.status, res.reason) == ("budget_exceeded", "max_total_tokens=10 exceeded (a batch)")
    assert [d["op"] for d in events(res, "action_end")] == ["code"]


def test_a_stop_carrying_the_finished_part_of_a_batch_makes_it_the_run_s_answer(monkeypatch):
    def spender(partial):
        class Spender:
            def __init__(self, session):
                self.session = session

            def run(self, action):
                stop = BudgetExceeded("max_total_tokens=10 exceeded (a batch)")
                if partial is not None:
                    stop.partial = partial  # what the batch finished before the budget ran out
                self.session.services["stop"] = stop
                return ActionOutput("partial batch")

            def close(self):
                pass

        return Spender

    replies = ["```repl\nspend()\n```", cmd("final", answer="x")]
    monkeypatch.setattr(engine, "executor_factory", lambda level: spender("ans 0\nans 2"))
    res, _ = run(replies, TEXT, levels="l1,l2")
    assert (res.status, res.answer) == ("budget_exceeded", "ans 0\nans 2")
    # without one, a stopped run offers no answer of its own making (its last reply was code)
    monkeypatch.setattr(engine, "executor_factory", lambda level: spender(None))
    res, _ = run(replies, TEXT, levels="l1,l2")
    assert (res.status, res.answer) == ("budget_exceeded", None)


# ------------------------------------------------------------------ the next turn's schema (constrained models)
def test_a_constrained_model_gets_each_turn_s_schema():
    p = ScriptedProvider([cmd("find", text="secret"), cmd("count", pattern="The"), cmd("final", answer="ZEBRA-42")],
                         constrained=True)
    res = RLM(model=p, config=Config(), store=None, limits={"max_iterations": 3}).run("q?", TEXT)
    assert res.status == "answered"
    schemas = [o["response_schema"] for o in p.options]
    assert ops(schemas[0]) == [op for op in FIRST_TURN_OPS if op in ops(schemas[1])]  # look first
    assert "final" not in ops(schemas[0]) and {"final", "lines", "count"} <= set(ops(schemas[1]))
    assert ops(schemas[2]) == ["final"]  # the last turn: answer (final_var needs a variable)
    p = ScriptedProvider([cmd("final", answer="x")], constrained=True)
    RLM(model=p, config=Config(), store=None, limits={"max_iterations": 1}).run("q?", TEXT)
    assert ops(p.options[0]["response_schema"]) == ["final"]
    cfg = Config()
    cfg.aids.first_turn = False
    p = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")], constrained=True)
    RLM(model=p, config=cfg, store=None).run("q?", TEXT)
    assert "final" in ops(p.options[0]["response_schema"])  # the first-turn aid off: any op at once


def test_a_constrained_model_s_final_answer_follows_the_answer_type():
    p = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer=42)], constrained=True)
    res = RLM(model=p, config=Config(), store=None).run("How many?", TEXT, answer_type=int)
    final = next(b for b in p.options[1]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "final")
    assert final["properties"]["answer"] == {"type": "integer"}
    assert res.parsed == 42


def test_a_constrained_model_must_answer_after_repeating_itself():
    p = ScriptedProvider([cmd("find", text="secret")] * 3 + [cmd("final", answer="ZEBRA-42")], constrained=True)
    res = RLM(model=p, config=Config(), store=None).run("q?", TEXT)
    assert ops(p.options[1]["response_schema"]) and "find" in ops(p.options[1]["response_schema"])
    assert "find" not in ops(p.options[2]["response_schema"])  # excluded after one repeat
    assert ops(p.options[3]["response_schema"]) == ["final"]
    must = [a["message"] for a in events(res, "aid") if a["aid"] == "final_only"]
    assert must and must[-1].endswith("Only final is allowed on your next turn.")
    assert res.answer == "ZEBRA-42"


# ------------------------------------------------------------------ compaction
ROWS = "\n".join(f"row {i:04d} " + "x" * 90 for i in range(400)) + "\n"


def _compacting(window, n_small=2, *, tokens=0, config=None, replies=None, name="scripted"):
    """A run whose first action reads 40 long rows, then ``n_small`` finds of one row each, then answers
    (or runs ``replies``); every reply reports ``tokens`` input tokens."""
    if replies is None:
        replies = [cmd("lines", start=0, end=40)] + [cmd("find", text=f"row {k:04d} ")
                                                     for k in range(100, 100 + n_small)]
    replies = [*replies, cmd("final", answer="row 0005")]
    script = [{"text": r, "input_tokens": tokens, "output_tokens": 5} for r in replies]
    p = ScriptedProvider(script, context_window=window, name=name)
    res = RLM(model=p, config=config or Config(), store=None, levels="l1").run("Which row?", ROWS)
    assert res.status == "answered", res.reason
    return res, p.requests


def _need(msgs):
    """The history's size as the compaction rule estimates it: 3 characters a token, plus the last turn's growth."""
    return sum(len(m["content"]) for m in msgs) // 3 + (len(msgs[-1]["content"]) + len(msgs[-2]["content"])) // 3


def _widest(need, reply_tokens=1024, slack=256):
    """The largest window whose 80 % (after the reply's room and the slack) ``need`` still reaches."""
    w = int(need / 0.8) + reply_tokens + slack
    while 0.8 * (w + 1 - reply_tokens - slack) <= need:
        w += 1
    while 0.8 * (w - reply_tokens - slack) > need:
        w -= 1
    return w


def test_history_is_compacted_once_it_reaches_80_percent_of_the_window():
    _, plain = _compacting(None)  # no window: nothing compacted
    assert len(plain) == 4 and all("[compacted" not in m["content"] for r in plain for m in r)
    w = _widest(_need(plain[3]))
    assert 0.8 * (w - 1280) > _need(plain[2])  # the third request still fits
    res, reqs = _compacting(w)
    (ev,) = events(res, "compacted")
    assert (ev["iteration"], ev["messages"]) == (4, 1)
    assert reqs[:3] == plain[:3]
    sent, before = reqs[3], plain[3]
    assert sent[3]["content"] == prompts.summarize_output(before[3]["content"]) != before[3]["content"]
    assert [m for i, m in enumerate(sent) if i != 3] == [m for i, m in enumerate(before) if i != 3]  # the last two
    assert ev["chars_before"] == sum(len(m["content"]) for m in before)  # turns stay whole when that is enough
    assert ev["chars_after"] == sum(len(m["content"]) for m in sent) < ev["chars_before"]
    res, reqs = _compacting(w + 1)  # a token more room: not yet
    assert events(res, "compacted") == [] and reqs == plain


def test_a_local_model_s_window_keeps_room_for_its_own_reply_length():
    cfg = Config()
    cfg.local.max_tokens = 500
    _, plain = _compacting(None, name="local", config=cfg)
    w = _widest(_need(plain[3]), reply_tokens=500)
    res, reqs = _compacting(w, name="local", config=cfg)
    assert [(e["iteration"], e["messages"]) for e in events(res, "compacted")] == [(4, 1)]
    res, reqs = _compacting(w + 1, name="local", config=cfg)
    assert events(res, "compacted") == [] and reqs == plain


def test_older_turns_go_first_and_the_one_before_the_newest_only_when_that_is_not_enough():
    replies = [cmd("find", text="row 000"), cmd("lines", start=100, end=140), cmd("lines", start=200, end=240)]
    _, plain = _compacting(None, replies=replies)
    before = plain[3]
    summary = prompts.summarize_output(before[3]["content"])
    assert len(summary) < len(before[3]["content"]) - 30  # the first turn's hits shrink to one line
    after_oldest = [*before[:3], {"role": "user", "content": summary}, *before[4:]]
    w = _widest(_need(after_oldest))  # compacting the oldest turn is not quite enough
    assert 0.8 * (w - 1280) > _need(plain[2])  # and the third request fitted
    res, reqs = _compacting(w, replies=replies)
    assert [(e["iteration"], e["messages"]) for e in events(res, "compacted")] == [(4, 2)]
    assert reqs[3][5]["content"] == prompts.summarize_output(before[5]["content"]) and reqs[3][7] == before[7]
    res, reqs = _compacting(w + 1, replies=replies)  # a token more room: the oldest turn is enough
    assert [(e["iteration"], e["messages"]) for e in events(res, "compacted")] == [(4, 1)]
    assert reqs[3] == after_oldest


def test_compaction_counts_the_tokens_the_model_reported():
    _, plain = _compacting(None, tokens=10**6)
    res, _ = _compacting(10**5)  # the characters alone fit a 100,000-token window
    assert events(res, "compacted") == []
    res, reqs = _compacting(10**5, tokens=10**6)  # but the model says each prompt took a million
    assert [(e["iteration"], e["messages"]) for e in events(res, "compacted")] == [(4, 1)]
    assert reqs[3][3]["content"] == prompts.summarize_output(plain[3][3]["content"])
    assert reqs[3][5:] == plain[3][5:]  # the last two turns stay whole: their characters fit


def test_a_small_window_compacts_every_turn_but_the_newest():
    _, plain = _compacting(None, n_small=4)
    res, reqs = _compacting(1400, n_small=4)
    got = events(res, "compacted")
    assert [(e["iteration"], e["messages"]) for e in got] == [(3, 1), (4, 1), (5, 1), (6, 1)]  # first at 6 messages
    for k in range(2, 6):  # the request of iteration k + 1
        sent, before = reqs[k], plain[k]
        assert sent[:3] == before[:3] and sent[-1] == before[-1]  # system, question, first reply; the newest output
        for i in range(3, len(sent) - 1):
            want = prompts.summarize_output(before[i]["content"]) if sent[i]["role"] == "user" else before[i]["content"]
            assert sent[i]["content"] == want
        assert got[k - 2]["chars_after"] == sum(len(m["content"]) for m in sent)
        prev = reqs[k - 1]
        assert got[k - 2]["chars_before"] == sum(len(m["content"]) for m in prev) + sum(
            len(m["content"]) for m in before[len(prev):])  # what was sent before, plus the new turn
    cfg = Config()
    cfg.aids.compact = False
    res, reqs = _compacting(1400, n_small=4, config=cfg)
    assert events(res, "compacted") == [] and reqs == plain


# ------------------------------------------------------------------ budgets, errors, what a model is offered
def test_a_root_call_that_cannot_be_covered_is_refused_before_it_is_sent():
    rlm = rlm_of([cmd("find", text="secret"), cmd("final", answer="x")], limits={"max_total_tokens": 500})
    res = rlm.run("q?", TEXT)
    assert res.status == "budget_exceeded" and rlm.root.requests == []
    assert res.reason.startswith("max_total_tokens=500: the root call (scripted) needs up to ")


def test_a_bug_in_an_action_fails_the_run_with_an_internal_error(monkeypatch, caplog):
    class Broken(StubExecutor):
        def run(self, action):
            raise RuntimeError("boom")

    monkeypatch.setattr(engine, "executor_factory", lambda level: Broken)
    with caplog.at_level("ERROR", logger="contextbox"):
        res, _ = run(["```repl\nx\n```"], TEXT, levels="l1,l2")
    assert (res.status, res.reason) == ("failed", "internal error: RuntimeError: boom")
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [f"run {res.run_id} failed"]  # with its trace
    assert events(res, "error")[-1] == {"message": res.reason, "fatal": True, "status": "failed"}


LOG = "".join(f"2024-03-01 08:00:{i % 60:02d} ERROR 10.0.0.{i % 9} GET /x 500 {i}ms "
              f"{'QuotaExceeded' if i % 3 else 'DiskFull'} \"m\"\n" for i in range(300))


def test_a_count_question_over_a_log_steers_a_small_model_through_tables():
    replies = [cmd("extract", store="t"), cmd("count_by", on="t", field="name"), cmd("final", answer="QuotaExceeded")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, config=Config(), store=None).run("Which error type occurs most often?", LOG)
    assert res.answer == "QuotaExceeded"
    kinds = [(e.type, e.data.get("iteration")) for e in res.events]
    route = {"aid": "table_route", "iteration": 1,
             "message": "a count/rank question over structured lines: tables first"}
    assert [a for a in events(res, "aid") if a["aid"] == "table_route"] == [route]
    assert kinds.index(("aid", 1)) == kinds.index(("lm_request", 1)) - 1  # said as the turn starts
    schemas = [o["response_schema"] for o in p.options]
    assert ops(schemas[0]) == ["extract"] and "find" not in ops(schemas[1])
    count_by = next(b for b in schemas[1]["anyOf"] if b["properties"]["op"]["const"] == "count_by")
    assert count_by["properties"]["field"] == {"enum": ["name"]}  # the column the question is about
    choice = [a for a in events(res, "aid") if a["aid"] == "column_choice"]
    assert choice == [{"aid": "column_choice", "iteration": 2, "message": "count_by on: name", "fields": ["name"],
                       "op": "count_by"}]
    at = next(i for i, e in enumerate(res.events) if e.type == "aid" and e.data["aid"] == "column_choice")
    assert res.events[at - 1].type == "lm_request" and res.events[at + 1].type == "lm_response"
    rlm = rlm_of(replies)  # an API model is not steered
    res = rlm.run("Which error type occurs most often?", LOG)
    assert res.answer == "QuotaExceeded" and "table_route" not in [a["aid"] for a in events(res, "aid")]
    assert all("response_schema" not in o for o in rlm.root.options)


def test_a_run_cancelled_before_its_first_turn_has_no_turns_and_no_answer():
    import threading

    cancel = threading.Event()
    cancel.set()
    rlm = rlm_of([cmd("final", answer="x")])
    res = rlm.run("q?", TEXT, cancel=cancel)
    assert (res.status, res.iterations, res.answer) == ("cancelled", 0, None)
    assert rlm.root.requests == []


def test_a_local_root_call_holds_its_whole_reply_length_in_the_budget():
    cfg = Config()
    cfg.local.max_tokens = 50_000
    p = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="ZEBRA-42")], name="local")
    res = RLM(model=p, config=cfg, store=None, levels="l1", limits={"max_total_tokens": 20_000}).run("q?", TEXT)
    assert res.status == "budget_exceeded" and p.requests == []
    assert res.reason.startswith("max_total_tokens=20,000: the root call (local) needs up to 5")


def test_a_model_that_does_not_say_it_can_follow_a_schema_gets_none():
    class Plain:
        name, context_window = "fn/plain", None

        def __init__(self):
            self.inner = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")])

        def complete(self, messages, **opts):
            return self.inner.complete(messages, **opts)

    rlm = RLM(model=Plain(), config=Config(), store=None)
    assert rlm.run("q?", TEXT).answer == "x"
    assert all("response_schema" not in o for o in rlm.root.inner.options)


def test_a_small_model_s_first_search_uses_the_whole_question():
    p = ScriptedProvider([cmd("search", query="Which code?"), cmd("final", answer="ZEBRA-42")], constrained=True)
    RLM(model=p, config=Config(), store=None).run("Which code?", TEXT)
    search = next(b for b in p.options[0]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "search")
    assert search["properties"]["query"] == {"const": "Which code?"}


SHIP = ("Manifest notes.\ncrate 705 was stowed aboard the Marigold in March.\nfiller line\n"
        "The Marigold was bound for Lisbon with wool.\n")


def test_a_restated_sentence_gets_one_turn_that_must_say_whether_it_answers():
    import json

    verify = json.dumps({"answers_question": False, "op": "find", "text": "Marigold was bound"})
    p = ScriptedProvider([cmd("find", text="crate 705"), cmd("final", answer="crate 705 was stowed aboard the Marigold"),
                          verify, cmd("final", answer="Lisbon")], constrained=True)
    res = RLM(model=p, config=Config(), store=None).run("For which port was crate 705 bound?", SHIP)
    assert res.answer == "Lisbon"
    schemas = [o["response_schema"] for o in p.options]
    assert all(b["required"][:2] == ["thought", "answers_question"] for b in schemas[2]["anyOf"])
    assert "answers_question" not in json.dumps(schemas[3]) and "answers_question" not in json.dumps(schemas[1])


def test_model_calls_run_in_a_thread_named_for_the_run():
    names: list[str] = []

    class Named(ScriptedProvider):
        def complete(self, messages, **opts):
            import threading

            names.append(threading.current_thread().name)
            return super().complete(messages, **opts)

    rlm = RLM(model=Named([cmd("find", text="secret"), cmd("final", answer="x")]), config=Config(), store=None)
    rlm.run("q?", TEXT, run_id="r-named")
    assert names == ["rlm-r-named"] * 2


def test_a_call_late_in_the_run_is_given_only_the_time_left():
    class Slow(ScriptedProvider):
        def complete(self, messages, **opts):
            if not self.requests:
                time.sleep(3.3)
            return super().complete(messages, **opts)

    rlm = RLM(model=Slow([cmd("find", text="secret"), cmd("final", answer="x")]), config=Config(), store=None,
              limits={"timeout_s": 4})
    res = rlm.run("q?", TEXT)
    if len(rlm.root.options) == 2:  # a starved machine may reach the deadline first: then it timed out
        assert 0 < rlm.root.options[1]["timeout"] < 1.1
    else:
        assert res.status == "timeout"


def test_a_contextbox_error_in_an_action_fails_the_run_with_its_message(monkeypatch):
    from contextbox.errors import ConfigError

    class Misconfigured(StubExecutor):
        def run(self, action):
            raise ConfigError("[code] l2_memory_mb must be at least 16")

    monkeypatch.setattr(engine, "executor_factory", lambda level: Misconfigured)
    res, _ = run(["```repl\nx\n```"], TEXT, levels="l1,l2")
    assert (res.status, res.reason) == ("failed", "[code] l2_memory_mb must be at least 16")


def test_an_executor_that_fails_to_close_does_not_change_the_answer(monkeypatch, caplog):
    class Sticky(StubExecutor):
        def close(self):
            raise OSError("worker already gone")

    monkeypatch.setattr(engine, "executor_factory", lambda level: Sticky)
    with caplog.at_level("ERROR", logger="contextbox"):
        res, _ = run(["```repl\nx\n```", cmd("final", answer="x")], TEXT, levels="l1,l2")
    assert (res.status, res.answer) == ("answered", "x")
    (rec,) = [r for r in caplog.records if r.exc_info]
    assert rec.getMessage() == "closing executor failed" and "worker already gone" in str(rec.exc_info[1])


def test_a_repl_cell_goes_to_l3_when_l3_is_the_only_code_level(monkeypatch):
    class Cell(StubExecutor):
        def run(self, action):
            return ActionOutput("ran at " + action.level)

    monkeypatch.setattr(engine, "executor_factory", lambda level: Cell)
    res, _ = run(["```repl\nx = 1\n```", cmd("final", answer="x")], TEXT, levels="l1,l3")
    (start,) = [d for d in events(res, "action_start") if d["op"] == "code"]
    assert start["level"] == "l3" and events(res, "action_end")[0]["output"] == "ran at l3"
    assert events(res, "refused") == []
