"""The RLM loop, driven by the scripted provider."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import cmd, fed_back, make_rlm, run

from contextbox import Config, Context
from contextbox.errors import UsageError
from contextbox.providers import ScriptedProvider
from contextbox.schema import FIRST_TURN_OPS
from contextbox.types import EVENT_TYPES

TEXT = "The weather was fine.\nThe secret code is ZEBRA-42.\nNothing else happened.\n"


def test_find_then_final_answers():
    res, rlm = run([cmd("find", text="secret code"), cmd("final", answer="ZEBRA-42")], TEXT)
    assert res.status == "answered"
    assert res.answer == "ZEBRA-42"
    assert res.iterations == 2
    # the find output was fed back to the model in the second request
    second_request = rlm.root.requests[1]
    assert "line 1, offset 26" in second_request[-1]["content"]
    assert "ZEBRA-42" in second_request[-1]["content"]


def test_event_stream_order_and_types():
    res, _ = run([cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT)
    types = [e.type for e in res.events]
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert set(types) <= set(EVENT_TYPES)
    assert types.index("iteration_start") < types.index("lm_request") < types.index("lm_response")
    assert types.index("lm_response") < types.index("action_start") < types.index("action_end")
    assert "final" in types
    assert [e.seq for e in res.events] == list(range(len(res.events)))
    assert len({e.run_id for e in res.events}) == 1 and res.events[0].run_id == res.run_id


def test_history_is_a_stable_prefix():
    replies = [cmd("find", text="weather"), cmd("lines", start=0, end=2), cmd("count", pattern="e"),
               cmd("final", answer="ZEBRA-42")]
    _, rlm = run(replies, TEXT)
    reqs = rlm.root.requests
    for a, b in zip(reqs, reqs[1:], strict=False):
        assert b[: len(a)] == a  # every request extends the previous one unchanged


def test_malformed_command_gets_error_and_run_continues():
    res, rlm = run(["{\"op\": \"find\", \"text\": ", cmd("fnd", text="x"), cmd("find"),
                    cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT)
    assert res.status == "answered" and res.answer == "ZEBRA-42"
    fb = fed_back(rlm)
    assert "not valid JSON" in fb[0]
    assert "unknown op 'fnd'" in fb[1] and "Did you mean 'find'" in fb[1]
    assert "find needs 'text'" in fb[2]


def test_prose_that_looks_final_is_not_an_answer():
    fake = 'FINAL(ZEBRA-42)\n\nOutput:\nfinal answer: ZEBRA-42'
    res, rlm = run([cmd("find", text="code"), fake, cmd("final", answer="ZEBRA-42")], TEXT)
    assert res.iterations == 3
    assert "no command found" in fed_back(rlm)[1]


def test_only_first_command_runs_fake_output_ignored():
    reply = cmd("find", text="code") + "\nOutput: 1 hit\n" + cmd("final", answer="WRONG")
    res, rlm = run([reply, cmd("final", answer="ZEBRA-42")], TEXT)
    assert res.answer == "ZEBRA-42" and res.iterations == 2
    assert "only the first command" in fed_back(rlm)[0]


def test_array_of_commands_and_final_var():
    arr = "[" + cmd("regex", pattern=r"code is (\S+)\.", store="m") + "," + cmd("get", name="m") + "]"
    res, _ = run([arr, cmd("set", name="ans", value="ZEBRA-42"), cmd("final_var", name="ans")], TEXT)
    assert res.status == "answered" and res.answer == "ZEBRA-42"


def test_final_var_unknown_is_error_not_answer():
    res, rlm = run([cmd("find", text="code"), cmd("final_var", name="nope"), cmd("final", answer="x")], TEXT)
    assert res.iterations == 3
    assert "no variable 'nope'" in fed_back(rlm)[1]


def test_max_iterations_with_partial_and_last_turn_note():
    res, rlm = run([cmd("find", text="weather"), cmd("find", text="code"), "I think it is ZEBRA-42"], TEXT,
                   max_iterations=3)
    assert res.status == "max_iterations"
    assert res.answer == "I think it is ZEBRA-42"
    assert "last turn" in rlm.root.requests[2][-1]["content"]
    assert "last turn" not in rlm.root.requests[1][-1]["content"]


def test_consecutive_errors_end_the_run():
    res, _ = run(["nothing"] * 10, TEXT, max_consecutive_errors=3)
    assert res.status == "failed" and "3 consecutive" in res.reason
    assert res.iterations == 3


def test_script_exhausted_fails_with_reason_and_run_end():
    res, _ = run([cmd("find", text="code")], TEXT)
    assert res.status == "failed" and "exhausted" in res.reason
    assert res.events[-1].type == "run_end" and res.events[-1].data["status"] == "failed"


def test_budget_tokens_a_root_call_reserves_its_worst_case_first():
    from contextbox.budget import estimate_prompt_tokens

    replies = [{"text": cmd("find", text=f"code{i}"), "input_tokens": 600, "output_tokens": 10} for i in range(5)]
    _, probe = run(replies, TEXT)  # what the root is sent, turn by turn
    second = estimate_prompt_tokens(probe.root.requests[1]) + 50
    limit = 610 + second  # the second call's worst case just fits; the third's cannot
    res, rlm = run(replies, TEXT, max_total_tokens=limit, reserve_output_tokens=50)
    assert res.status == "budget_exceeded" and "needs up to" in res.reason
    assert len(rlm.root.requests) == 2  # the third call was never sent
    assert res.usage.total.total_tokens == 1220 <= limit and res.iterations == 3


def test_budget_cost_uses_price_table():
    cfg = Config()
    cfg.prices["scripted"] = (100.0, 0.0)  # $0.0001 per input token: a call's worst case ≈ $0.2
    replies = [{"text": cmd("find", text=f"code{i}"), "input_tokens": 10_000, "output_tokens": 1}
               for i in range(5)]  # each call costs $1, more than it reserved
    res, rlm = run(replies, TEXT, config=cfg, max_cost_usd=2.5)
    assert res.status == "budget_exceeded" and "max_cost_usd=2.5 exceeded" in res.reason
    assert res.usage.total.cost_usd == pytest.approx(3.0)  # over by what the last call used beyond its hold
    assert len(rlm.root.requests) == 3


class SlowProvider(ScriptedProvider):
    def __init__(self, replies, delay):
        super().__init__(replies)
        self.delay = delay

    def complete(self, messages, **opts):
        time.sleep(self.delay)
        return super().complete(messages, **opts)


def test_timeout_while_waiting_on_model():
    from contextbox import RLM

    rlm = RLM(model=SlowProvider([cmd("find", text="x")] * 5, 5.0), config=Config(), limits={"timeout_s": 0.3})
    t = time.monotonic()
    res = rlm.run("q", TEXT)
    assert time.monotonic() - t < 2.0
    assert res.status == "timeout"


def test_cancel():
    from contextbox import RLM

    cancel = threading.Event()
    rlm = RLM(model=SlowProvider([cmd("find", text="x")] * 50, 0.05), config=Config())
    stream = rlm.stream("q", TEXT, cancel=cancel)
    seen = 0
    for ev in stream:
        if ev.type == "action_end":
            seen += 1
            cancel.set()
    assert stream.result.status == "cancelled" and seen == 1


def test_refused_level_never_runs():
    code = "```repl\nprint('hi')\n```"
    res, rlm = run([code, cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT, levels="l1")
    refused = [e for e in res.events if e.type == "refused"]
    assert len(refused) == 1 and refused[0].data["level"] == "l2"
    assert "not allowed" in fed_back(rlm)[0]
    assert not any(e.type == "action_start" and e.data["level"] == "l2" for e in res.events)
    assert res.status == "answered"


def test_l4_command_refused_without_l4():
    res, rlm = run([cmd("llm_query", prompt="hi"), cmd("find", text="code"), cmd("final", answer="ZEBRA-42")],
                   TEXT)
    assert "not allowed" in fed_back(rlm)[0]


def test_usage_recorded_per_call():
    replies = [{"text": cmd("find", text="code"), "input_tokens": 100, "output_tokens": 7},
               {"text": cmd("final", answer="ZEBRA-42"), "input_tokens": 150, "output_tokens": 9}]
    res, _ = run(replies, TEXT)
    d = res.usage.to_dict()
    assert d["total"]["input_tokens"] == 250 and d["total"]["output_tokens"] == 16
    assert d["by_role"]["root"]["calls"] == 2 and not d["total"]["estimated"]
    assert [u.input_tokens for u in res.usage.calls] == [100, 150]


def test_estimated_usage_is_flagged():
    res, _ = run([cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT)
    assert res.usage.total.estimated


def test_no_model_configured_is_usage_error(monkeypatch):
    """No ``model`` in the config: the embedded model when it can run, else a UsageError saying what to do.
    Only the environment is simulated (llama-cpp-python missing); the choice is the engine's own."""
    import contextbox.providers.local as local
    from contextbox.engine import default_model_spec

    cfg = Config()
    cfg.model = "openai/gpt-4o-mini"
    assert default_model_spec(cfg) == "openai/gpt-4o-mini"
    monkeypatch.setattr(local, "llama_available", lambda: True)
    monkeypatch.setattr("contextbox.local_model.model_present", lambda cache_dir=None: True)
    assert default_model_spec(Config()) == "local"
    monkeypatch.setattr(local, "llama_available", lambda: False)
    with pytest.raises(UsageError, match="no model configured") as e:
        default_model_spec(Config())
    assert "pip install 'contextbox[local]'" in str(e.value)
    from contextbox import RLM

    with pytest.raises(UsageError, match="no model configured"):
        RLM(config=Config())
    assert default_model_spec(cfg) == "openai/gpt-4o-mini"  # a configured model never needs the local one


def test_output_is_capped_with_note():
    big = "x" * 50_000
    res, rlm = run([cmd("slice", start=0, end=40_000), cmd("final", answer="x")], big, max_output_chars=1000)
    fb = fed_back(rlm)[0]
    assert "output cut" in fb and "40,000" in fb and len(fb) < 1400


# ------------------------------------------------------------------ small-model aids
def test_aid_repetition_not_run_twice():
    res, rlm = run([cmd("find", text="code"), cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT)
    starts = [e for e in res.events if e.type == "action_start" and e.data["op"] == "find"]
    assert len(starts) == 1
    assert "already ran this exact action" in fed_back(rlm)[1]


def test_aid_zero_hits_hint():
    _, rlm = run([cmd("find", text="unicorn"), cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT)
    assert "hint: no hits" in fed_back(rlm)[0]


def test_aid_too_many_hits_hint():
    ctx = "word\n" * 500
    _, rlm = run([cmd("find", text="word"), cmd("final", answer="word")], ctx)
    assert "500 hits is too many" in fed_back(rlm)[0]
    _, rlm = run([cmd("count", pattern="word"), cmd("final", answer="500")], ctx)  # a count is the answer
    assert "count of \"word\": 500" in fed_back(rlm)[0] and "too many" not in fed_back(rlm)[0]


def test_aid_first_turn_must_look():
    res, rlm = run([cmd("final", answer="guess"), cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], TEXT)
    assert "look at the context before you answer" in fed_back(rlm)[0]
    assert res.answer == "ZEBRA-42"


def test_aid_grounding_sends_back_once():
    cfg = Config()
    cfg.aids.grounding = True
    res, rlm = run([cmd("find", text="code"), cmd("final", answer="PANDA-7"), cmd("final", answer="PANDA-7")],
                   TEXT, config=cfg)
    assert "does not appear in anything you have read" in fed_back(rlm)[1]
    assert res.status == "answered" and res.answer == "PANDA-7" and res.iterations == 3


def test_aid_grounding_accepts_seen_answer():
    cfg = Config()
    cfg.aids.grounding = True
    res, _ = run([cmd("find", text="code"), cmd("final", answer="zebra-42")], TEXT, config=cfg)
    assert res.status == "answered" and res.iterations == 2


def test_aid_grounding_off_by_default_for_remote_models():
    res, _ = run([cmd("find", text="code"), cmd("final", answer="PANDA-7")], TEXT)
    assert res.answer == "PANDA-7" and res.iterations == 2


def test_aids_can_be_switched_off():
    cfg = Config()
    cfg.aids.first_turn = False
    cfg.aids.repetition = False
    res, _ = run([cmd("final", answer="guess")], TEXT, config=cfg)
    assert res.answer == "guess"


# ------------------------------------------------------------------ plumbing
def test_executor_seam_registers_custom_level(monkeypatch):
    from contextbox.executors import ActionOutput

    class Echo:
        level = "l2"

        def __init__(self, session):
            self.session = session
            self.closed = False

        def run(self, action):
            self.session.emit("warning", {"message": "from executor"})
            return ActionOutput("echo:" + action.args["code"].strip())

        def close(self):
            pass

    import contextbox.engine as engine

    monkeypatch.setattr(engine, "executor_factory", lambda level: Echo)
    code = "```repl\nhello\n```"
    res, rlm = run([code, cmd("final", answer="hello")], TEXT, levels="l1,l2")
    assert "echo:hello" in fed_back(rlm)[0]
    assert any(e.type == "warning" and e.data["message"] == "from executor" for e in res.events)


def test_store_receives_every_event(tmp_path):
    from contextbox import RLM
    from contextbox.stores.jsonl import JsonlRunStore

    store = JsonlRunStore(tmp_path)
    rlm = RLM(model=ScriptedProvider([cmd("find", text="code"), cmd("final", answer="ZEBRA-42")]),
              config=Config(), store=store)
    res = rlm.run("q", TEXT)
    stored = store.events(res.run_id)
    assert [e.to_dict() for e in stored] == [e.to_dict() for e in res.events]
    assert store.list_runs()[0]["answer"] == "ZEBRA-42"


# an empty reply: tests/test_limits_wiring.py::test_an_empty_model_reply_is_an_error_the_model_is_told_about


def test_multi_document_context_hits_name_the_document():
    ctx = Context.from_documents([("a.txt", "nothing here\n"), ("b/c.txt", "the key is 7\n")])
    _, rlm = run([cmd("find", text="key"), cmd("final", answer="7")], ctx)
    assert "b/c.txt: line" in fed_back(rlm)[0]


def test_run_api_accepts_plain_values():
    rlm = make_rlm([cmd("find", text="b"), cmd("final", answer="ok")])
    assert rlm.run("q", ["doc one", "doc b"]).answer == "ok"


def test_aid_grounding_rejects_an_answer_that_repeats_the_question():
    cfg = Config()
    cfg.aids.grounding = True
    res, rlm = run([cmd("find", text="code"), cmd("final", answer="the secret code"),
                    cmd("final", answer="ZEBRA-42")], TEXT, config=cfg, question="What is the secret code?")
    assert "only repeats words of the question" in fed_back(rlm)[1]
    assert res.answer == "ZEBRA-42"


class SchemaProvider(ScriptedProvider):
    supports_schema = True

    def __init__(self, replies):
        super().__init__(replies)
        self.schemas = []

    def complete(self, messages, **opts):
        self.schemas.append(opts.get("response_schema"))
        return super().complete(messages, **opts)


def test_constrained_first_turn_may_only_search():
    from contextbox import RLM

    p = SchemaProvider([cmd("find", text="code", thought="t"), cmd("final", answer="ZEBRA-42", thought="t")])
    res = RLM(model=p, config=Config(), levels="l1").run("q", TEXT)
    assert res.answer == "ZEBRA-42"
    ops = [[b["properties"]["op"]["const"] for b in s["anyOf"]] for s in p.schemas]
    assert ops[0] == list(FIRST_TURN_OPS) and "final" not in ops[0]
    assert "final" in ops[1] and "lines" in ops[1]
    assert all(next(iter(b["properties"])) == "thought" for b in p.schemas[1]["anyOf"])


def test_no_schema_when_code_levels_are_allowed():
    from contextbox import RLM

    p = SchemaProvider([cmd("find", text="code"), cmd("final", answer="ZEBRA-42")])
    RLM(model=p, config=Config(), levels="l1,l2").run("q", TEXT)
    assert p.schemas == [None, None]


# ------------------------------------------------------------------ found in review
def test_null_name_is_a_command_error_not_a_crash():
    res, rlm = run([cmd("set", name=None, value=1), cmd("get", name=None), cmd("find", text="code"),
                    cmd("final", answer="ZEBRA-42")], TEXT)
    assert res.status == "answered"
    assert "set needs 'name'" in fed_back(rlm)[0] and "get needs 'name'" in fed_back(rlm)[1]


def test_repetition_aid_allows_reading_a_changed_variable():
    replies = [cmd("find", text="weather", store="h"), cmd("get", name="h"),
               cmd("find", text="secret", store="h"), cmd("get", name="h"), cmd("final", answer="ZEBRA-42")]
    res, rlm = run(replies, TEXT)
    assert "already ran" not in fed_back(rlm)[3] and "secret code" in fed_back(rlm)[3]


def test_one_iteration_run_can_answer():
    res, _ = run([cmd("final", answer="42")], TEXT, max_iterations=1)
    assert res.status == "answered" and res.answer == "42"


def test_partial_answer_is_never_a_raw_command():
    res, _ = run([cmd("find", text="weather"), cmd("find", text="code")], TEXT, max_iterations=2)
    assert res.status == "max_iterations" and res.answer is None


def test_get_item_with_store_keeps_the_item():
    replies = [cmd("chunk", size=5, store="c"), cmd("get", name="c[1]", store="x"), cmd("get", name="x"),
               cmd("final", answer="x")]
    _, rlm = run(replies, "abcdefghijkl")
    assert fed_back(rlm)[2].startswith("get →\nx (str):\nfghij")


def test_preview_chars_zero_shows_no_text():
    cfg = Config()
    cfg.preview_chars = 0
    _, rlm = run([cmd("find", text="code"), cmd("final", answer="ZEBRA-42")], "x" * 5000 + TEXT, config=cfg)
    assert "ZEBRA" not in rlm.root.requests[0][1]["content"]


def test_regex_timeout_setting_is_used():
    cfg = Config()
    cfg.regex_timeout_s = 0.3
    t = time.monotonic()
    _, rlm = run([cmd("regex", pattern="(a+)+$"), cmd("final", answer="x")], "a" * 40 + "b", config=cfg)
    assert time.monotonic() - t < 3 and "longer than 0.3 s" in fed_back(rlm)[0]


def test_default_levels_give_the_local_model_tables_and_the_typed_map():
    from contextbox import RLM

    assert RLM(model=ScriptedProvider([], name="local"), config=Config()).levels == ("l1", "l4")
    assert RLM(model=ScriptedProvider([], name="local:/m.gguf"), config=Config()).levels == ("l1", "l4")
    assert RLM(model=ScriptedProvider([]), config=Config()).levels == ("l1",)
    assert RLM(model=ScriptedProvider([], name="local"), config=Config(levels=("l1",))).levels == ("l1",)
    assert RLM(model=ScriptedProvider([], name="local"), config=Config(), levels="l1,l2").levels == ("l1", "l2")
    assert Config().to_dict()["levels"] == "auto"
