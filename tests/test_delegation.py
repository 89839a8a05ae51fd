"""L4 delegation: sub-calls, batches, llm_map, child RLMs, budgets and the usage identity."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from fakeserver import FakeLLMServer
from helpers import cmd

from contextbox import RLM, Config, Context
from contextbox.budget import estimate_prompt_tokens
from contextbox.errors import BudgetExceeded, CommandError, ProviderUnavailable
from contextbox.levels.delegation import SubCallCounter, preflight, run_batch
from contextbox.providers import ScriptedProvider
from contextbox.providers.base import ProviderConfig
from contextbox.providers.openai_compat import OpenAIProvider
from contextbox.stores.jsonl import JsonlRunStore
from contextbox.types import Completion

TEXT = "The weather was fine.\nThe secret code is ZEBRA-42.\nNothing else happened.\n"


class FnSub:
    """A thread-safe sub-model: ``fn(prompt) -> str``, optional delay, fixed token counts."""

    def __init__(self, fn=lambda p: "ok", *, delay: float = 0.0, window: int | None = None,
                 tokens: tuple[int, int] | None = None, name: str = "fn/sub"):
        self.fn, self.delay, self.context_window, self.tokens, self.name = fn, delay, window, tokens, name
        self.prompts: list[str] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def complete(self, messages, **opts):
        prompt = messages[-1]["content"]
        with self._lock:
            self.prompts.append(prompt)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                time.sleep(self.delay() if callable(self.delay) else self.delay)
            text = self.fn(prompt)
        finally:
            with self._lock:
                self.active -= 1
        inp, out = self.tokens or (len(prompt.split()), len(text.split()))
        return Completion(text, inp, out, model=self.name)


def config(**delegation) -> Config:
    cfg = Config()
    cfg.aids.first_turn = False
    for k, v in delegation.items():
        setattr(cfg.delegation, k, v)
    return cfg


def l4_run(replies, sub, context=TEXT, cfg=None, store=None, **limits):
    rlm = RLM(model=ScriptedProvider(replies), sub_model=sub, levels="l1,l4", config=cfg or config(),
              limits=limits or None, store=store)
    return rlm.run("q?", context), rlm


def action_outputs(res, op=None):
    return [e.data["output"] for e in res.events
            if e.type == "action_end" and e.path == "0" and (op is None or e.data["op"] == op)]


# ---------------------------------------------------------------------- llm_query
def test_llm_query_on_variable_appends_text_and_stores():
    sub = FnSub(lambda p: "ANSWER:" + p.split("\n\n")[-1])
    res, rlm = l4_run([cmd("set", name="part", value="the part"),
                       cmd("llm_query", prompt="Summarise", on="part", store="s"),
                       cmd("final_var", name="s")], sub)
    assert sub.prompts == ["Summarise\n\nthe part"]
    assert res.status == "answered" and res.answer == "ANSWER:the part"
    sub_calls = [e for e in res.events if e.type == "sub_call"]
    assert len(sub_calls) == 1 and sub_calls[0].data["role"] == "sub"


def test_llm_query_provider_failure_is_error_output_not_crash():
    def boom(p):
        raise ProviderUnavailable("sub down")

    res, _ = l4_run([cmd("llm_query", prompt="x"), cmd("final", answer="done")], FnSub(boom))
    assert res.status == "answered"
    assert "the sub-model call failed: sub down" in action_outputs(res, "llm_query")[0]


def test_unknown_l4_argument_is_an_error_for_the_model():
    res, _ = l4_run([cmd("llm_map", prompt="x", size=3), cmd("final", answer="done")], FnSub())
    out = [e for e in res.events if e.type == "action_end"][0].data["output"]
    assert "llm_map has no argument 'size'" in out


# ---------------------------------------------------------------------- batches
def test_batched_results_keep_input_order_and_run_concurrently():
    sub = FnSub(lambda p: p.upper(), delay=lambda: random.uniform(0.01, 0.08))
    prompts = [f"p{i}" for i in range(24)]
    t = time.monotonic()
    res, _ = l4_run([cmd("llm_query_batched", prompts=prompts, store="out"), cmd("final", answer="done")], sub,
                    cfg=config(max_concurrency=8))
    elapsed = time.monotonic() - t
    stored = _variables(res)
    assert stored == [p.upper() for p in prompts]
    assert 2 <= sub.max_active <= 8
    assert elapsed < 24 * 0.045  # far below sequential


def _variables(res):
    """The 'out'/'answers' list as shown in the batch output (indexes in order)."""
    out = next(e.data["output"] for e in res.events if e.type == "action_end" and e.data["op"].endswith(
        ("batched", "map")))
    lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    return [ln.split("] ", 1)[1] for ln in lines]


def test_failed_prompt_gives_error_string_in_its_slot():
    def fn(p):
        if "bad" in p:
            raise ProviderUnavailable("HTTP 500 for this one")
        return "fine " + p

    res, _ = l4_run([cmd("llm_query_batched", prompts=["a", "bad", "c"]), cmd("final", answer="done")], FnSub(fn))
    assert _variables(res) == ["fine a", "error: HTTP 500 for this one", "fine c"]
    assert res.status == "answered"


def test_run_batch_unit_order_errors_and_stop():
    def fn(i):
        if i == 3:
            raise CommandError("nope")
        if i == 5:
            raise BudgetExceeded("out of tokens")
        time.sleep(0.01)
        return str(i)

    r = run_batch(12, fn, 1)
    assert r.answers[:3] == ["0", "1", "2"] and r.answers[3] == "error: nope" and r.answers[4] == "4"
    assert isinstance(r.stop, BudgetExceeded) and r.finished == 4
    assert all(a.startswith("error: not run: out of tokens") for a in r.answers[5:])


def test_code_levels_get_the_concurrent_batch_runner(monkeypatch):
    """A code cell's llm_query_batched goes through services["llm_query_batched"]."""
    import contextbox.engine as engine
    from contextbox.executors import ActionOutput

    class Cell:
        level = "l2"

        def __init__(self, session):
            self.s = session

        def run(self, action):
            answers = self.s.services["llm_query_batched"]([f"q{i}" for i in range(6)])
            single = self.s.sub_query("single")
            return ActionOutput(json.dumps(answers + [single]))

        def close(self):
            pass

    real = engine.executor_factory
    monkeypatch.setattr(engine, "executor_factory", lambda level: Cell if level == "l2" else real(level))
    sub = FnSub(lambda p: "A" + p, delay=0.05)
    rlm = RLM(model=ScriptedProvider(["```repl\nx\n```", cmd("final", answer="done")]), sub_model=sub,
              levels="l1,l2,l4", config=config())
    res = rlm.run("q", TEXT)
    out = next(e.data["output"] for e in res.events if e.type == "action_end")
    assert json.loads(out) == [f"Aq{i}" for i in range(6)] + ["Asingle"]
    assert sub.max_active > 1
    assert res.usage.to_dict()["by_role"]["sub"]["calls"] == 7


# ---------------------------------------------------------------------- llm_map
def test_llm_map_over_context_chunks_stores_answers():
    ctx = "".join(f"line {i:03d} " + "x" * 40 + "\n" for i in range(100))
    sub = FnSub(lambda p: p.split("]\n", 1)[1][:8])
    res, _ = l4_run([cmd("llm_map", prompt="First words?", chunk_size=1000), cmd("final_var", name="answers")],
                    sub, context=ctx)
    n = -(-len(ctx) // 1000)
    assert len(sub.prompts) == n
    assert all(p.startswith("First words?\n\n[chunk ") for p in sub.prompts)
    assert res.status == "answered" and res.answer.splitlines()[0] == "line 000"
    assert f"llm_map: {n} chunk(s)" in action_outputs(res, "llm_map")[0]


def test_llm_map_over_list_variable_uses_items():
    sub = FnSub(lambda p: str(len(p.split("]\n", 1)[1])))
    res, _ = l4_run([cmd("chunk", size=20, store="parts"), cmd("llm_map", prompt="len?", on="parts", store="lens"),
                     cmd("final_var", name="lens")], sub)
    sizes = [len(c) for c in [TEXT[i:i + 20] for i in range(0, len(TEXT), 20)]]
    assert res.answer.splitlines() == [str(s) for s in sizes]


def test_llm_map_default_chunk_size_fits_the_sub_window():
    sub = FnSub(window=1000)  # ≈ 4000 characters
    res, _ = l4_run([cmd("llm_map", prompt="x"), cmd("final", answer="done")], sub, context="w " * 20000)
    assert len(sub.prompts) > 10 and all(len(p) < 4000 for p in sub.prompts)


# ---------------------------------------------------------------------- pre-flight
def test_preflight_refuses_oversized_sub_prompt():
    sub = FnSub(window=100)
    res, _ = l4_run([cmd("set", name="big", value="word " * 1000), cmd("llm_query", prompt="x", on="big"),
                     cmd("llm_map", prompt="x", on="big", chunk_size=5000), cmd("final", answer="done")], sub)
    outs = action_outputs(res)
    assert "sub-prompt too large" in outs[1] and "100-token window" in outs[1] and "chunk_size" in outs[1]
    assert "sub-prompt too large" in outs[2]
    assert sub.prompts == []  # nothing was sent
    with pytest.raises(CommandError):
        preflight(sub, "y" * 1000)
    preflight(FnSub(), "y" * 10_000_000)  # no window known: no check


def test_preflight_in_batch_fails_only_that_slot():
    sub = FnSub(window=50)
    res, _ = l4_run([cmd("llm_query_batched", prompts=["short", "long " * 400]), cmd("final", answer="done")], sub)
    slots = _variables(res)
    assert slots[0] == "ok" and slots[1].startswith("error: sub-prompt too large")


# ---------------------------------------------------------------------- budgets
def test_budget_exhausted_mid_batch_keeps_finished_answers():
    # each sub-call reserves exactly what it uses (prompt "pNN": 5 tokens, reply: 95), so the ledger admits
    # exactly the calls that fit, whatever the concurrency
    def models():
        root = ScriptedProvider([{"text": cmd("llm_query_batched", prompts=[f"p{i}" for i in range(40)]),
                                  "input_tokens": 10, "output_tokens": 10}, cmd("final", answer="never")])
        return root, FnSub(lambda p: "ans " + p, delay=0.02, tokens=(100, 0))

    probe, _ = models()
    RLM(model=probe, sub_model=FnSub(), levels="l1,l4", config=config()).run("q", TEXT)
    budget = estimate_prompt_tokens(probe.requests[0]) + 95  # just what the first root call holds
    root, sub = models()
    rlm = RLM(model=root, sub_model=sub, levels="l1,l4", config=config(max_concurrency=4),
              limits={"max_total_tokens": budget, "reserve_output_tokens": 95})
    res = rlm.run("q", TEXT)
    assert res.status == "budget_exceeded" and "max_total_tokens" in res.reason
    fits = (budget - 20) // 100
    assert 0 < fits < 40
    slots = _variables(res)
    done = [i for i, s in enumerate(slots) if not s.startswith("error")]
    assert len(done) == fits == len(sub.prompts)
    assert all(slots[i] == f"ans p{i}" for i in done)  # each answer in its own slot
    assert all(s.startswith("error: not run") for i, s in enumerate(slots) if i not in done)
    assert res.answer == "\n".join(slots[i] for i in done)  # the partial answer is what finished
    assert res.usage.to_dict()["by_role"]["sub"]["calls"] == fits
    assert res.usage.total.total_tokens == 20 + 100 * fits <= budget


def test_max_sub_calls_refuses_a_batch_larger_than_what_is_left_then_stops():
    sub = FnSub()
    res, _ = l4_run([cmd("llm_query_batched", prompts=["a"] * 3), cmd("llm_query_batched", prompts=["b"] * 2),
                     cmd("llm_query", prompt="c"), cmd("llm_query", prompt="d"), cmd("final", answer="never")], sub,
                    cfg=config(max_sub_calls=4, max_concurrency=1))
    outs = action_outputs(res)
    assert "would make 2 sub-calls but only 1 of max_sub_calls=4 are left" in outs[1]
    assert sub.prompts == ["a", "a", "a", "c"]  # the refused batch sent nothing
    assert res.status == "budget_exceeded" and "max_sub_calls=4" in res.reason


def test_sub_call_counter_counts_up_the_tree():
    root = SubCallCounter(3)
    child = SubCallCounter(None, root)
    child.reserve()
    root.reserve()
    child.reserve()
    with pytest.raises(BudgetExceeded):
        child.reserve()
    assert child.used == 2 and root.used == 3


def test_timeout_mid_batch_stops_new_calls():
    sub = FnSub(delay=0.3)
    rlm = RLM(model=ScriptedProvider([cmd("llm_query_batched", prompts=["a"] * 20)]), sub_model=sub,
              levels="l1,l4", config=config(max_concurrency=2), limits={"timeout_s": 0.5})
    t = time.monotonic()
    res = rlm.run("q", TEXT)
    assert res.status == "timeout" and time.monotonic() - t < 1.5
    time.sleep(0.5)
    assert len(sub.prompts) <= 6


# ---------------------------------------------------------------------- recursion
def rlm_script_provider(flows: dict[str, list[str]], tokens: tuple[int, int] = (10, 5)):
    """A root model whose replies depend on the run's question (so children can interleave)."""
    lock = threading.Lock()
    pos: dict[str, int] = {}

    class Routed:
        name = "routed/root"
        context_window = None

        def complete(self, messages, **opts):
            q = messages[1]["content"].split("\n", 1)[0].removeprefix("Question: ")
            with lock:
                i = pos.get(q, 0)
                pos[q] = i + 1
            reply = flows[q][i]
            return Completion(reply, *tokens, model=self.name)

    return Routed()


def test_recursion_to_depth_3_with_paths_and_usage_by_depth():
    flows = {
        "top?": [cmd("rlm_query", prompt="d1?"), cmd("final", answer="top done")],
        "d1?": [cmd("rlm_query", prompt="d2?", start=0, end=40), cmd("final", answer="d1 done")],
        "d2?": [cmd("rlm_query", prompt="d3?", on="missing"), cmd("set", name="v", value="ctx"),
                cmd("rlm_query", prompt="d3?", on="v"), cmd("final", answer="d2 done")],
        "d3?": [cmd("rlm_query", prompt="too deep?"), cmd("final", answer="d3 done")],
    }
    sub = FnSub(lambda p: "plain answer")
    rlm = RLM(model=rlm_script_provider(flows), sub_model=sub, levels="l1,l4", config=config(max_depth=3))
    res = rlm.run("top?", TEXT)
    assert res.status == "answered" and res.answer == "top done"
    starts = [(e.path, e.data["depth"], e.data["question"]) for e in res.events if e.type == "run_start"]
    assert starts == [("0", 0, "top?"), ("0.0", 1, "d1?"), ("0.0.0", 2, "d2?"), ("0.0.0.0", 3, "d3?")]
    # at max_depth rlm_query is a plain sub-model call
    assert sub.prompts and sub.prompts[0].startswith("too deep?")
    degraded = [e for e in res.events if e.type == "sub_call"]
    assert len(degraded) == 1 and degraded[0].path == "0.0.0.0" and degraded[0].data["degraded"]
    by_depth = res.usage.to_dict()["by_depth"]
    assert {k: v["calls"] for k, v in by_depth.items()} == {"0": 2, "1": 2, "2": 4, "3": 3}
    ends = [e for e in res.events if e.type == "run_end"]
    assert [e.path for e in ends] == ["0.0.0.0", "0.0.0", "0.0", "0"]
    assert [e.seq for e in res.events] == list(range(len(res.events)))
    # the slice of the context reached the depth-2 child
    d2_first = next(e for e in res.events if e.type == "run_start" and e.path == "0.0.0")
    assert d2_first.data["context"]["chars"] == 40


def test_depth_2_rlm_query_nested_events_in_the_jsonl_run_log(tmp_path):
    flows = {
        "top?": [cmd("rlm_query", prompt="mid?"), cmd("final", answer="top")],
        "mid?": [cmd("find", text="code"), cmd("rlm_query", prompt="leaf?"), cmd("final", answer="mid")],
        "leaf?": [cmd("find", text="secret"), cmd("final", answer="ZEBRA-42")],
    }
    store = JsonlRunStore(tmp_path)
    rlm = RLM(model=rlm_script_provider(flows), sub_model=FnSub(), levels="l1,l4", config=Config(), store=store)
    res = rlm.run("top?", TEXT)
    assert res.status == "answered"
    lines = [json.loads(ln) for ln in (tmp_path / f"{res.run_id}.jsonl").read_text().splitlines()]
    paths = [d["path"] for d in lines]
    assert {"0", "0.0", "0.0.0"} <= set(paths)
    assert all(d["run_id"] == res.run_id for d in lines)
    leaf = [d for d in lines if d["path"] == "0.0.0"]
    assert leaf[0]["type"] == "run_start" and leaf[-1]["type"] == "run_end"
    assert leaf[-1]["data"]["answer"] == "ZEBRA-42"
    assert any(d["type"] == "action_end" and d["data"]["op"] == "find" for d in leaf)
    # the tree unfolds in order: leaf ends before mid's rlm_query ends, mid ends before top's
    idx = {(d["path"], d["type"], d["data"].get("op")): i for i, d in enumerate(lines)}
    assert idx[("0.0.0", "run_end", None)] < idx[("0.0", "action_end", "rlm_query")] < idx[("0.0", "run_end", None)]
    assert idx[("0.0", "run_end", None)] < idx[("0", "action_end", "rlm_query")]
    assert store.list_runs()[0]["answer"] == "top"
    # the CLI transcript indents the tree by path
    from contextbox.cli import format_events

    text = "\n".join(format_events(store.events(res.run_id)))
    assert "    [0.0.0] FINAL: ZEBRA-42" in text


def test_children_share_the_budget_and_get_what_is_left_of_the_time():
    flows = {"top?": [cmd("rlm_query", prompt="kid?"), cmd("final", answer="top")],
             "kid?": [cmd("final", answer="kid")]}
    rlm = RLM(model=rlm_script_provider(flows), sub_model=FnSub(), levels="l1,l4", config=config(),
              limits={"max_total_tokens": 100_000, "timeout_s": 30})
    res = rlm.run("top?", TEXT)
    kid = next(e for e in res.events if e.type == "run_start" and e.path == "0.0")
    assert kid.data["limits"]["max_total_tokens"] == 100_000  # the tree's one ledger, not a copy of the rest
    assert 25 < kid.data["limits"]["timeout_s"] < 30
    assert res.usage.total.total_tokens == 45  # root twice + kid once, each counted once


def test_child_budget_exhaustion_stops_the_parent():
    flows = {"top?": [cmd("rlm_query", prompt="kid?"), cmd("final", answer="top")],
             "kid?": [cmd("find", text=f"x{i}") for i in range(10)]}
    rlm = RLM(model=rlm_script_provider(flows, tokens=(3000, 5)), sub_model=FnSub(), levels="l1,l4",
              config=config(), limits={"max_total_tokens": 12_000, "reserve_output_tokens": 100})
    res = rlm.run("top?", TEXT)
    assert res.status == "budget_exceeded" and "child run 0.0" in res.reason
    kid_end = next(e for e in res.events if e.type == "run_end" and e.path == "0.0")
    assert kid_end.data["status"] == "budget_exceeded"
    calls = [e for e in res.events if e.type == "lm_response"]
    assert 1 < len(calls) < 11  # the kid stopped early
    assert res.usage.total.total_tokens == 3005 * len(calls)  # each call counted once


def test_rlm_query_batched_runs_children_concurrently_in_order():
    flows = {"top?": [cmd("split", delimiter="\n", store="parts"),
                      cmd("rlm_query_batched", prompt="kid?", on="parts", store="kids"),
                      cmd("final_var", name="kids")],
             "kid?": [cmd("final", answer="kid answer")] * 10}
    slow = rlm_script_provider(flows)
    inner = slow.complete
    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def complete(messages, **opts):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        time.sleep(0.1)
        with lock:
            active["now"] -= 1
        return inner(messages, **opts)

    slow.complete = complete
    rlm = RLM(model=slow, sub_model=FnSub(), levels="l1,l4", config=config())
    res = rlm.run("top?", TEXT)
    assert res.status == "answered" and res.answer.splitlines() == ["kid answer"] * 4
    assert active["max"] >= 3
    paths = sorted({e.path for e in res.events if e.type == "run_start"})
    assert paths == ["0", "0.0", "0.1", "0.2", "0.3"]
    for p in ("0.0", "0.1", "0.2", "0.3"):
        assert next(e for e in res.events if e.type == "run_start" and e.path == p).data["depth"] == 1


def test_rlm_query_default_max_depth_2_degrades_at_depth_2():
    flows = {"a?": [cmd("rlm_query", prompt="b?"), cmd("final", answer="a")],
             "b?": [cmd("rlm_query", prompt="c?"), cmd("final", answer="b")],
             "c?": [cmd("rlm_query", prompt="d?"), cmd("final", answer="c")]}
    sub = FnSub(lambda p: "plain")
    res = RLM(model=rlm_script_provider(flows), sub_model=sub, levels="l1,l4", config=config()).run("a?", "ctx")
    assert res.status == "answered"
    assert sorted({e.path for e in res.events}) == ["0", "0.0", "0.0.0"]
    assert len(sub.prompts) == 1 and sub.prompts[0] == "d?\n\nctx"


def test_child_timeout_is_the_parents_remaining_time():
    flows = {"top?": [cmd("rlm_query", prompt="kid?")], "kid?": [cmd("find", text=f"x{i}") for i in range(100)]}
    provider = rlm_script_provider(flows)
    inner = provider.complete

    def slow(messages, **opts):
        time.sleep(0.05)
        return inner(messages, **opts)

    provider.complete = slow
    t = time.monotonic()
    res = RLM(model=provider, sub_model=FnSub(), levels="l1,l4", config=config(),
              limits={"timeout_s": 0.6}).run("top?", TEXT)
    assert res.status == "timeout" and time.monotonic() - t < 1.5
    kid = next(e for e in res.events if e.type == "run_start" and e.path == "0.0")
    assert kid.data["limits"]["timeout_s"] < 0.6


# ---------------------------------------------------------------------- the usage identity over HTTP
def _http_models(srv: FakeLLMServer):
    root = OpenAIProvider(ProviderConfig("fake", base_url=srv.base_url, timeout_s=10), "root-model")
    sub = OpenAIProvider(ProviderConfig("fake", base_url=srv.base_url, timeout_s=10), "sub-model")
    root.retry_base_delay = sub.retry_base_delay = 0.01
    return root, sub


def _scripted_server_replies(flows):
    lock = threading.Lock()
    pos: dict[str, int] = {}

    def reply(body):
        msgs = body["messages"]
        if body["model"] == "sub-model":
            return "sub says " + str(len(msgs[-1]["content"]))
        q = msgs[1]["content"].split("\n", 1)[0].removeprefix("Question: ")
        with lock:
            i = pos.get(q, 0)
            pos[q] = i + 1
        return flows[q][i]

    return reply


@pytest.mark.parametrize("faults", [(), ("500", "429", "malformed")])
def test_usage_equals_the_servers_own_count(faults):
    flows = {"main?": [cmd("llm_map", prompt="what happens?", chunk_size=30),
                       cmd("rlm_query", prompt="child?", on="answers"),
                       cmd("llm_query_batched", prompts=["x", "y", "z"]),
                       cmd("final", answer="done")],
             "child?": [cmd("llm_query", prompt="hello"), cmd("final", answer="kid")]}
    with FakeLLMServer(replies=_scripted_server_replies(flows), faults=faults) as srv:
        root, sub = _http_models(srv)
        res = RLM(model=root, sub_model=sub, levels="l1,l4", config=config()).run("main?", TEXT)
        assert res.status == "answered" and res.answer == "done"
        t = res.usage.total
        assert t.input_tokens == srv.prompt_tokens_total
        assert t.output_tokens == srv.completion_tokens_total
        assert t.calls == srv.request_count - len(faults)  # failed attempts carry no tokens
        assert not t.estimated
        d = res.usage.to_dict()
        assert d["by_role"]["root"]["calls"] == 4 + 2 and d["by_role"]["sub"]["calls"] == 3 + 1 + 3
        assert d["by_depth"]["1"]["calls"] == 3 and d["by_model"]["fake/sub-model"]["calls"] == 7
        assert sum(v["calls"] for v in d["by_depth"].values()) == t.calls
        assert len([e for e in res.events if e.type == "retry"]) == len(faults)


# ---------------------------------------------------------------------- War and Peace over slow HTTP
def test_llm_map_over_war_and_peace_near_ideal_time(war_and_peace):
    text = war_and_peace.read_text(encoding="utf-8")
    latency, chunk = 0.3, 100_000
    n = -(-len(text) // chunk)
    flows = {"themes?": [cmd("llm_map", prompt="Name one character in this part.", chunk_size=chunk),
                         cmd("final", answer="done")]}
    with FakeLLMServer(replies=_scripted_server_replies(flows), latency=latency) as srv:
        root, sub = _http_models(srv)
        rlm = RLM(model=root, sub_model=sub, levels="l1,l4", config=config(max_concurrency=16))
        res = rlm.run("themes?", Context.from_value(text))
        assert res.status == "answered"
        start = next(e for e in res.events if e.type == "action_start" and e.data["op"] == "llm_map")
        end = next(e for e in res.events if e.type == "action_end" and e.data["op"] == "llm_map")
        ideal = -(-n // 16) * latency
        assert f"{n} answered, 0 failed" in end.data["output"]
        assert end.ts - start.ts < ideal + 0.6, (end.ts - start.ts, ideal)
        assert res.usage.total.calls == srv.request_count == n + 2
        assert res.usage.total.input_tokens == srv.prompt_tokens_total
        assert res.usage.total.output_tokens == srv.completion_tokens_total


@pytest.mark.parametrize("level", ["l2", "l3"])
def test_real_code_cell_batches_concurrently_in_a_run(level):
    from contextbox.executors import executor_factory

    if executor_factory(level) is None:
        pytest.skip(f"{level} is not available here")
    sub = FnSub(lambda p: "A" + p, delay=0.1)
    fence = "repl" if level == "l2" else "native"
    code = f"```{fence}\nr = llm_query_batched(['q' + str(i) for i in range(8)])\nprint(r)\n```"
    rlm = RLM(model=ScriptedProvider([code, cmd("final", answer="done")]), sub_model=sub,
              levels=f"l1,{level},l4", config=config(max_concurrency=8))
    t = time.monotonic()
    res = rlm.run("q", TEXT)
    out = next(e.data["output"] for e in res.events if e.type == "action_end")
    assert str([f"Aq{i}" for i in range(8)]) in out
    assert sub.max_active >= 4 and time.monotonic() - t < 8 * 0.1 + 3
    assert len([e for e in res.events if e.type == "sub_call"]) == 8


def test_sub_calls_from_code_need_l4():
    """Without l4 in the levels, code cells get no sub-model (a clear error instead)."""
    rlm = RLM(model=ScriptedProvider(["```repl\nprint(llm_query('hi'))\n```", cmd("final", answer="x")]),
              sub_model=FnSub(lambda p: "never"), levels="l1,l2", config=config())
    res = rlm.run("q", TEXT)
    out = next(e.data for e in res.events if e.type == "action_end")
    assert out["error"] and "not available in this run" in out["output"]
    assert res.usage.to_dict()["by_role"].get("sub") is None
