"""The RLM's configuration and what a run hands its code levels and sessions, by what a run does.

Written against the mutants of `RLM.__init__`, `_Run.__init__`, `stream`, `_role_view`, `_install_delegation`
and `_sub_query` that the engine tests left alive (docs/mutation.md, sixth session). Each test drives a run
through the scripted model or reads the RLM it built; none starts a sandbox or a worker.
"""

from __future__ import annotations

import sys
import time

import pytest
from helpers import cmd, run
from test_engine_loop import TEXT, events, rlm_of

import contextbox.engine as engine
from contextbox import RLM, Config, Context
from contextbox.errors import UsageError
from contextbox.executors import ActionOutput
from contextbox.providers import ScriptedProvider
from contextbox.types import Completion, Limits, Usage


# ------------------------------------------------------------------ the RLM's configuration
def test_without_a_config_the_config_file_is_loaded(tmp_path, monkeypatch):
    f = tmp_path / "contextbox.toml"
    f.write_text('system = "Be brief."\nlevels = ["l1", "l4"]\n\n[limits]\nmax_iterations = 7\n')
    monkeypatch.setenv("CONTEXTBOX_CONFIG", str(f))
    rlm = RLM(model=ScriptedProvider([]), store=None)
    assert rlm.config.system == "Be brief." and rlm.limits.max_iterations == 7 and rlm.levels == ("l1", "l4")


@pytest.mark.parametrize("bad", [{"model": "x"}, "contextbox.toml"])
def test_a_config_that_is_not_a_config_is_a_usage_error(bad):
    with pytest.raises(UsageError) as info:
        RLM(model=ScriptedProvider([]), config=bad, store=None)
    assert str(info.value) == f"config must be a contextbox.Config, not {type(bad).__name__}"


def test_limits_are_a_limits_a_dict_over_the_config_s_or_the_config_s():
    cfg = Config()
    cfg.limits = Limits(max_iterations=9, max_consecutive_errors=4)
    assert RLM(model=ScriptedProvider([]), config=cfg, store=None).limits.max_iterations == 9
    rlm = RLM(model=ScriptedProvider([]), config=cfg, store=None, limits={"max_consecutive_errors": 2})
    assert (rlm.limits.max_iterations, rlm.limits.max_consecutive_errors) == (9, 2)  # the rest from the config
    rlm = RLM(model=ScriptedProvider([]), config=cfg, store=None, limits={})
    assert (rlm.limits.max_iterations, rlm.limits.max_consecutive_errors) == (9, 4)
    rlm = RLM(model=ScriptedProvider([]), config=cfg, store=None, limits=Limits(max_iterations=3))
    assert (rlm.limits.max_iterations, rlm.limits.max_consecutive_errors) == (3, Limits().max_consecutive_errors)
    with pytest.raises(UsageError) as info:
        RLM(model=ScriptedProvider([]), config=cfg, store=None, limits=[("max_iterations", 3)])
    assert str(info.value) == "limits must be a Limits or a dict of limit names, not list"


def test_the_sub_model_is_the_given_one_the_configured_one_or_the_root(tmp_path):
    import json

    script = tmp_path / "sub.json"
    script.write_text(json.dumps(["sub reply"]))
    cfg = Config()
    cfg.sub_model = f"scripted:{script}"
    rlm = RLM(model=ScriptedProvider([]), config=cfg, store=None)
    assert rlm.sub.name == f"scripted:{script}"
    given = ScriptedProvider([], name="given")
    assert RLM(model=ScriptedProvider([]), sub_model=given, config=cfg, store=None).sub is given
    rlm = RLM(model=ScriptedProvider([]), config=Config(), store=None)
    assert rlm.sub is rlm.root


def test_a_pool_serves_each_role_with_its_own_endpoints():
    class Pooled(ScriptedProvider):
        def for_role(self, role):
            return ScriptedProvider([cmd("find", text="secret"), cmd("final", answer=role)], name=f"{self.name}-{role}")

    rlm = RLM(model=Pooled([], name="pool"), config=Config(), store=None)
    assert (rlm.root.name, rlm.sub.name) == ("pool-root", "pool-sub")
    rlm = RLM(model=Pooled([], name="a"), sub_model=Pooled([], name="b"), config=Config(), store=None)
    assert (rlm.root.name, rlm.sub.name) == ("a-root", "b-sub")
    assert rlm.run("q?", TEXT).answer == "root"  # the root role's endpoints answer the root calls


def test_levels_are_the_given_ones_the_configured_ones_or_the_model_s_defaults():
    cfg = Config()
    assert RLM(model=ScriptedProvider([]), config=cfg, store=None).levels == ("l1",)
    assert RLM(model=ScriptedProvider([], name="local"), config=cfg, store=None).levels == ("l1", "l4")
    assert RLM(model=ScriptedProvider([]), config=cfg, store=None, levels="l1,l4").levels == ("l1", "l4")
    cfg.levels = ("l1", "l4")
    assert RLM(model=ScriptedProvider([]), config=cfg, store=None).levels == ("l1", "l4")
    assert RLM(model=ScriptedProvider([]), config=cfg, store=None, levels=["l1"]).levels == ("l1",)


@pytest.mark.parametrize(("name", "local"), [("local", True), ("local:/models/q.gguf", True), ("localai/m", False),
                                             ("scripted", False), ("openai/local", False)])
def test_only_the_embedded_model_is_local(name, local):
    assert RLM(model=ScriptedProvider([], name=name), config=Config(), store=None).is_local is local


def test_a_cost_limit_needs_the_sub_model_s_price_only_when_sub_calls_are_allowed():
    cfg = Config()
    cfg.prices["scripted"] = (1.0, 1.0)
    sub = ScriptedProvider([], name="unpriced/sub")
    RLM(model=ScriptedProvider([]), sub_model=sub, config=cfg, store=None, levels="l1", limits={"max_cost_usd": 1})
    with pytest.raises(UsageError) as info:
        RLM(model=ScriptedProvider([]), sub_model=sub, config=cfg, store=None, levels="l1,l4",
            limits={"max_cost_usd": 1})
    assert "unpriced/sub" in str(info.value)
    from contextbox.budget import DEFAULT_MAX_COST_USD

    rlm = RLM(model=ScriptedProvider([]), config=cfg, store=None)  # a priced model gets the default cost limit
    assert rlm.limits.max_cost_usd == DEFAULT_MAX_COST_USD


def test_a_child_run_spends_from_its_parent_s_ledger():
    from contextbox.budget import Budget

    ledger = Budget(max_total_tokens=50_000, max_cost_usd=0.5)
    cfg = Config()
    cfg.prices["scripted"] = (0.0, 0.0)
    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")]), config=cfg,
              store=None, budget=ledger, limits={"max_total_tokens": 10**9, "max_cost_usd": 9})
    assert (rlm.limits.max_total_tokens, rlm.limits.max_cost_usd) == (50_000, 0.5)
    res = rlm.run("q?", TEXT)
    t = res.usage.total
    assert ledger.spent_tokens == t.input_tokens + t.output_tokens > 0


def test_runs_are_recorded_in_the_configured_run_store_by_default(tmp_path):
    cfg = Config()
    cfg.runs_dir = tmp_path / "runs"
    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")]), config=cfg)
    res = rlm.run("q?", TEXT)
    store = rlm.store
    assert store is not None and store is rlm.store  # opened once
    assert [e.type for e in store.events(res.run_id)] == [e.type for e in res.events]
    rlm.store = None
    assert rlm.store is None


def test_a_run_without_an_id_gets_a_new_one_each_time():
    import re

    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")] * 2), config=Config(),
              store=None)
    ids = [rlm.run("q?", TEXT).run_id for _ in range(2)]
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", i) for i in ids) and ids[0] != ids[1]


def test_a_context_object_is_used_as_given():
    ctx = Context.from_value({"a.txt": "alpha secret", "b.txt": "beta"})
    res, _ = run([cmd("find", text="secret"), cmd("final", answer="x")], ctx)
    assert res.events[0].data["context"]["documents"] == 2
    assert "a.txt" in events(res, "action_end")[0]["output"]


# ------------------------------------------------------------------ what a run gives its code levels
def test_without_delegation_installed_a_run_still_answers(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "contextbox.levels.delegation", None)  # `import` raises ImportError
    with caplog.at_level("DEBUG", logger="contextbox"):
        res, _ = run([cmd("find", text="secret"), cmd("final", answer="x")], TEXT)
    assert (res.status, res.answer) == ("answered", "x")
    assert any(r.getMessage().startswith("delegation unavailable: ") for r in caplog.records)


def test_a_code_level_gets_the_run_s_services(monkeypatch):
    from contextbox.errors import RunCancelled

    sessions = []

    class Watch:
        def __init__(self, session):
            sessions.append(session)
            self.session = session

        def run(self, action):
            sv = self.session.services
            sv["record_usage"](Usage("sub", "fn/x", 11, 4, 0.0, None, False, 0))
            sv["check"]()
            return ActionOutput("ran " + self.session.sub_query("ping"))

        def close(self):
            pass

    class Sub:
        name, context_window = "fn/x", None

        def complete(self, messages, **opts):
            return Completion("pong", 1, 1, model=self.name)

    monkeypatch.setattr(engine, "executor_factory", lambda level: Watch)
    cfg = Config()
    cfg.code.l3_memory_mb = None
    rlm = RLM(model=ScriptedProvider(["```repl\nx\n```", cmd("final", answer="x")]), sub_model=Sub(), config=cfg,
              levels="l1,l2,l4", store=None, limits={"timeout_s": float("inf")})
    res = rlm.run("q?", TEXT)
    (s,) = sessions
    sv = s.services
    assert "l3_memory_mb" not in sv and sv["l2_memory_mb"] == cfg.code.l2_memory_mb  # unset settings are not sent
    assert sv["deadline"] is None  # no time limit
    assert sv["delegation"] is not None and sv["llm_query_batched"] and sv["llm_map"]  # L4 set up the sub-calls
    assert events(res, "action_end")[0]["output"] == "ran pong"
    assert sv["usage"] is res.usage and ("fn/x", 11, 4) in [(u.model, u.input_tokens, u.output_tokens)
                                                             for u in res.usage.calls]
    assert sv["budget"].spent_tokens >= 2  # the run's ledger: the sub-call was settled on it
    s.services["check"]()  # the run is over, not cancelled
    rlm.budget = None
    cancelled = __import__("threading").Event()
    cancelled.set()
    with pytest.raises(RunCancelled):
        engine._Run(rlm, "q?", Context.from_value(TEXT), "r", cancelled).session.services["check"]()


def test_a_run_s_aids_know_its_turns_and_the_preview_the_model_saw():
    cfg = Config()
    cfg.preview_chars = 0  # the model was shown none of the text: an answer found nowhere else is not "seen"
    cfg.aids.grounding = True
    rlm = RLM(model=ScriptedProvider([cmd("count", pattern="The"), cmd("final", answer="ZEBRA-42"),
                                      cmd("final", answer="ZEBRA-42")]), config=cfg, store=None)
    res = rlm.run("q?", TEXT)
    assert res.iterations == 3 and "grounding" in [a["aid"] for a in events(res, "aid")]
    cfg.preview_chars = 300  # shown in the first message: grounded
    rlm = RLM(model=ScriptedProvider([cmd("count", pattern="The"), cmd("final", answer="ZEBRA-42")]), config=cfg,
              store=None)
    assert rlm.run("q?", TEXT).iterations == 2



def test_a_follow_up_question_may_answer_from_what_earlier_questions_kept():
    rlm = rlm_of([cmd("find", text="secret"), cmd("set", name="code", value="ZEBRA-42"), cmd("final", answer="x"),
                  cmd("final", answer="ZEBRA-42")])
    with rlm.session(TEXT) as s:
        s.ask("Which code?")
        second = s.ask("And again?")
    assert (second.status, second.answer, second.iterations) == ("answered", "ZEBRA-42", 1)
    first = rlm.root.requests[-1][1]["content"]
    assert first.startswith("Question: And again?\n\nThe context box:\n")
    assert first.endswith("the earlier answers may be out of date for this question.")  # the session's note
    rlm = rlm_of([cmd("find", text="secret"), cmd("final", answer="x"), cmd("final", answer="ZEBRA-42"),
                  cmd("find", text="secret"), cmd("final", answer="ZEBRA-42")])
    with rlm.session(TEXT) as s:
        s.ask("Which code?")
        second = s.ask("And again?")  # nothing kept: it must look first
    assert (second.status, second.iterations) == ("answered", 3)
    assert [a["aid"] for a in events(second, "aid")][:1] == ["first_turn"]


def test_a_sub_call_holds_the_reply_tokens_it_asks_for_before_it_is_sent(monkeypatch):
    asked: list[dict] = []

    class Sub:
        name, context_window = "fn/x", None

        def complete(self, messages, **opts):
            asked.append(opts)
            return Completion("pong", 1, 1, model=self.name)

    class Caller:
        def __init__(self, session):
            self.session = session

        def run(self, action):
            n = int(action.args["code"])
            return ActionOutput(self.session.sub_query("ping", max_tokens=n))

        def close(self):
            pass

    monkeypatch.setattr(engine, "executor_factory", lambda level: Caller)

    def go(n):
        asked.clear()
        rlm = RLM(model=ScriptedProvider([f"```repl\n{n}\n```", cmd("final", answer="x")]), sub_model=Sub(),
                  config=Config(), levels="l1,l2,l4", store=None, limits={"max_total_tokens": 20_000})
        return rlm.run("q?", TEXT)

    res = go(500)
    assert res.status == "answered" and [o["max_tokens"] for o in asked] == [500]
    res = go(50_000)  # its worst case cannot be covered: refused before it is sent
    assert res.status == "budget_exceeded" and asked == []
    assert res.reason.startswith("max_total_tokens=20,000: a sub-call (fn/x) needs up to 50,")


def test_the_price_of_a_configured_provider_s_model_sets_the_default_cost_limit():
    from contextbox.budget import DEFAULT_MAX_COST_USD
    from contextbox.providers.base import ProviderConfig

    cfg = Config()
    cfg.providers.append(ProviderConfig("mine", "openai", base_url="https://api.openai.com/v1"))
    rlm = RLM(model=ScriptedProvider([], name="mine/gpt-4o-mini"), config=cfg, store=None)
    assert rlm.limits.max_cost_usd == DEFAULT_MAX_COST_USD  # priced through the provider's endpoint
    assert RLM(model=ScriptedProvider([], name="mine/gpt-4o-mini"), config=Config(), store=None
               ).limits.max_cost_usd is None  # an unknown provider: an unknown price, no default limit


def test_without_a_model_the_configured_one_answers(tmp_path):
    import json

    script = tmp_path / "root.json"
    script.write_text(json.dumps([cmd("find", text="secret"), cmd("final", answer="from the config")]))
    cfg = Config()
    cfg.model = f"scripted:{script}"
    rlm = RLM(config=cfg, store=None)
    assert rlm.root.name == f"scripted:{script}" and rlm.run("q?", TEXT).answer == "from the config"


def test_the_ray_engine_keeps_a_scripted_sub_model_in_this_process(tmp_path, caplog):
    import json

    script = tmp_path / "s.json"
    script.write_text(json.dumps([cmd("find", text="secret"), cmd("final", answer="x")]))
    spec = f"scripted:{script}"
    cfg = Config()
    cfg.delegation.engine = "ray"
    said = 'engine = "ray": the sub-model {} runs in this process'
    for kw, named in (({"model": spec}, spec), ({"model": ScriptedProvider([]), "sub_model": spec}, spec)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="contextbox"):
            rlm = RLM(config=cfg, store=None, **kw)
        assert rlm.sub.name == named
        assert [r.getMessage() for r in caplog.records if "ray" in r.getMessage()] == [
            "[delegation] " + said.format(named) + " (only API models fan out to Ray)"]
    cfg.model = spec
    caplog.clear()
    with caplog.at_level("WARNING", logger="contextbox"):
        RLM(config=cfg, store=None)
    assert [r.getMessage() for r in caplog.records if "ray" in r.getMessage()] == [
        "[delegation] " + said.format(spec) + " (only API models fan out to Ray)"]
    for kw in ({"config": cfg, "sub_model": ScriptedProvider([])}, {"config": Config(), "model": spec}):
        caplog.clear()
        with caplog.at_level("WARNING", logger="contextbox"):
            RLM(store=None, **kw)  # a sub-model object, or the local engine: no Ray
        assert not [r for r in caplog.records if "ray" in r.getMessage()]


def test_a_session_s_next_question_makes_its_sub_calls_in_its_own_run():
    class Sub:
        name, context_window = "fn/x", None

        def complete(self, messages, **opts):
            return Completion("sub says " + messages[-1]["content"], 3, 2, model=self.name)

    rlm = RLM(model=ScriptedProvider([cmd("find", text="secret"), cmd("llm_query", prompt="one"),
                                      cmd("final", answer="a"), cmd("llm_query", prompt="two"),
                                      cmd("final", answer="b")]),
              sub_model=Sub(), config=Config(), levels="l1,l4", store=None)
    with rlm.session(TEXT) as s:
        first, second = s.ask("q1?"), s.ask("q2?")
    for res, prompt in ((first, "one"), (second, "two")):
        assert [(d["prompt"], d["answer"]) for d in events(res, "sub_call")] == [(prompt, "sub says " + prompt)]
        assert [u.model for u in res.usage.calls if u.role == "sub"] == ["fn/x"]
        assert [d["output"] for d in events(res, "action_end") if d["op"] == "llm_query"][0].endswith(
            "sub says " + prompt)


def test_a_call_to_a_model_priced_through_its_provider_is_costed():
    from contextbox.providers.base import ProviderConfig

    cfg = Config()
    cfg.providers.append(ProviderConfig("mine", "openai", base_url="https://api.openai.com/v1"))
    script = [{"text": cmd("find", text="secret"), "input_tokens": 1000, "output_tokens": 10},
              {"text": cmd("final", answer="x"), "input_tokens": 1000, "output_tokens": 10}]
    res = RLM(model=ScriptedProvider(script, name="mine/gpt-4o-mini"), config=cfg, store=None).run("q?", TEXT)
    costs = [d["cost_usd"] for d in events(res, "lm_response")]
    assert len(costs) == 2 and all(c is not None and c > 0 for c in costs)


def test_a_session_s_kept_code_level_works_for_the_next_question_s_run(monkeypatch):
    import threading

    seen: list[tuple] = []

    class Cell:
        def __init__(self, session):
            self.session = session

        def run(self, action):
            s = self.session
            seen.append((s.run_id, s.levels, s.config, s.cancel, s.limits.max_output_chars))
            s.emit("warning", {"message": "from " + s.run_id})
            return ActionOutput("ran")

        def close(self):
            pass

    monkeypatch.setattr(engine, "executor_factory", lambda level: Cell)
    rlm = rlm_of(["```repl\nx\n```", cmd("final", answer="a"), "```repl\ny\n```", cmd("final", answer="b")],
                 levels="l1,l2")
    stops = [threading.Event(), threading.Event()]
    with rlm.session(TEXT) as s:
        r1 = s.ask("q1?", run_id="run-1", cancel=stops[0])
        rlm.config, rlm.levels = Config(), ("l1", "l2", "l4")  # the next question runs with other settings
        rlm.limits = rlm.limits.replace(max_output_chars=777)
        r2 = s.ask("q2?", run_id="run-2", cancel=stops[1])
    assert seen[1] == ("run-2", ("l1", "l2", "l4"), rlm.config, stops[1], 777)
    assert seen[0][0] == "run-1" and seen[0][3] is stops[0]
    assert [d["message"] for d in events(r1, "warning")] == ["from run-1"]
    assert [d["message"] for d in events(r2, "warning")] == ["from run-2"]  # its events reach its own stream


def test_a_sub_call_s_latency_is_recorded_in_seconds():
    class Slow:
        name, context_window = "fn/slow", None

        def complete(self, messages, **opts):
            time.sleep(0.02)
            return Completion("done", 1, 1, model=self.name)

    rlm = RLM(model=ScriptedProvider([cmd("llm_query", prompt="p"), cmd("final", answer="x")]), sub_model=Slow(),
              config=Config(), levels="l1,l4", store=None)
    (call,) = events(rlm.run("q?", TEXT), "sub_call")
    assert 0.02 <= call["latency_s"] < 4 and round(call["latency_s"], 4) == call["latency_s"]


def test_a_child_run_s_code_level_knows_its_depth_and_path_and_a_sub_call_its_endpoint(monkeypatch):
    depths: list[tuple[int, str]] = []

    class Watch:
        def __init__(self, session):
            depths.append((session.depth, session.path))

        def run(self, action):
            return ActionOutput("ran")

        def close(self):
            pass

    class Sub:
        name, context_window = "fn/x", None

        def complete(self, messages, **opts):
            return Completion("pong", 1, 1, model=self.name, endpoint="fn/x#2@http://127.0.0.1:9/v1")

    real = engine.executor_factory
    monkeypatch.setattr(engine, "executor_factory", lambda level: Watch if level == "l2" else real(level))
    rlm = RLM(model=ScriptedProvider(["```repl\nx\n```", cmd("llm_query", prompt="p"), cmd("final", answer="x")]),
              sub_model=Sub(), config=Config(), levels="l1,l2,l4", store=None, depth=2, path="0.3")
    res = rlm.run("q?", TEXT)
    assert depths == [(2, "0.3")]  # its children's paths start from it
    assert [d["endpoint"] for d in events(res, "sub_call")] == ["fn/x#2@http://127.0.0.1:9/v1"]


def test_a_small_model_with_sub_calls_is_offered_them():
    p = ScriptedProvider([cmd("find", text="secret"), cmd("final", answer="x")], constrained=True)
    RLM(model=p, sub_model=ScriptedProvider([], name="sub"), config=Config(), levels="l1,l4", store=None).run(
        "What is the code?", TEXT)
    ops = [b["properties"]["op"]["const"] for b in p.options[1]["response_schema"]["anyOf"]]
    assert "llm_query" in ops
