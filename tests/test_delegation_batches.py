"""L4 delegation's machinery on its own: the batch runner, the sub-call counter, the pre-flight window
check, the per-run services (query, batch, progress, child runs) and what a batch shows the model.

Written against the mutants of `tests/mutation.py --modules delegation.py` that earlier runs never reached
(docs/mutation.md): each test states a behaviour a deliberate bug in those functions would break. The
unit tests drive a real :class:`Session` with a plain function as its sub-model; the run tests go through
the engine with the scripted root model, as tests/test_delegation.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from types import SimpleNamespace

import pytest
from helpers import cmd
from test_delegation import TEXT, FnSub, action_outputs, config, l4_run

from contextbox.config import DelegationSettings
from contextbox.context import Context
from contextbox.errors import BudgetExceeded, CommandError, RunTimeout
from contextbox.executors import Session
from contextbox.levels.delegation import Delegation, DelegationExecutor, SubCallCounter, install, preflight, run_batch
from contextbox.types import Limits


def session(sub=None, *, emit=None, cfg=None, **kw) -> Session:
    events: list[tuple[str, dict]] = []
    s = Session(context=Context.from_value(TEXT), limits=Limits(), levels=("l1", "l4"), run_id="r", config=cfg,
                sub_query=sub, emit=emit or (lambda t, d: events.append((t, d))), **kw)
    s.services["events"] = events
    return s


# ---------------------------------------------------------------------- run_batch
def test_each_kind_of_failure_fills_only_its_own_slot():
    def fn(i: int) -> str:
        if i == 1:
            raise CommandError("bad prompt")
        if i == 2:
            raise ValueError("boom")
        return f"a{i}"

    for limit in (1, 4):
        r = run_batch(4, fn, limit)
        assert r.answers == ["a0", "error: bad prompt", "error: internal error: ValueError: boom", "a3"]
        assert r.ok == [True, False, False, True] and r.finished == 2 and r.stop is None
        assert 0 <= r.elapsed_s < 5


def test_a_batch_of_nothing_calls_nothing():
    r = run_batch(0, lambda i: 1 / 0, 4)
    assert (r.answers, r.ok, r.stop, r.finished) == ([], [], None, 0)


def test_a_cancelled_batch_runs_no_call():
    called = []
    cancel = threading.Event()
    cancel.set()
    for limit in (1, 3):
        r = run_batch(3, lambda i: called.append(i) or "x", limit, cancel=cancel)
        assert r.answers == ["error: not run: cancelled"] * 3 and r.ok == [False] * 3 and r.stop is None
    assert called == []


def test_a_stop_in_a_concurrent_batch_keeps_the_first_stop_and_skips_what_had_not_started():
    started = []
    lock = threading.Lock()

    def fn(i: int) -> str:
        with lock:
            started.append(i)
        if i == 0:
            raise RunTimeout("out of time")
        time.sleep(0.05)
        if i == 1:
            raise BudgetExceeded("out of tokens")
        return str(i)

    r = run_batch(40, fn, 2)
    assert isinstance(r.stop, RunTimeout) and str(r.stop) == "out of time"
    assert r.answers[0] == "error: not run: out of time"
    assert len(started) < 10  # calls not yet started when the stop came never run
    assert all(r.answers[i] == "error: not run: out of time" for i in range(40) if i not in started)


def test_progress_counts_done_and_failed_slots_and_a_failing_reporter_does_not_stop_the_batch():
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def report(done: int, failed: int) -> None:
        with lock:
            seen.append((done, failed))
        raise RuntimeError("the reporter broke")

    def fn(i: int) -> str:
        if i % 3 == 0:
            raise CommandError("no")
        return "ok"

    for limit in (1, 3):
        seen.clear()
        r = run_batch(6, fn, limit, on_progress=report)
        assert r.answers == ["error: no", "ok", "ok", "error: no", "ok", "ok"]
        assert sorted(seen) == sorted(set(seen)) and max(seen) == (6, 2) and len(seen) == 6
        assert [d for d, _ in sorted(seen)] == [1, 2, 3, 4, 5, 6]


def test_at_most_limit_calls_run_at_once_on_threads_named_for_the_batch():
    state = {"now": 0, "max": 0, "threads": set()}
    lock = threading.Lock()

    def fn(i: int) -> str:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            state["threads"].add(threading.current_thread().name)
        time.sleep(0.03)
        with lock:
            state["now"] -= 1
        return str(i)

    r = run_batch(12, fn, 3, name="sub-b7")
    assert r.answers == [str(i) for i in range(12)] and 0.1 <= r.elapsed_s < 10  # four rounds of 0.03 s
    assert 2 <= state["max"] <= 3 and all(t.startswith("sub-b7") for t in state["threads"])
    for limit in (0, 1):  # one at a time, on the caller's thread
        state.update(now=0, max=0, threads=set())
        assert run_batch(3, fn, limit).answers == ["0", "1", "2"]
        assert state["max"] == 1 and state["threads"] == {threading.current_thread().name}
    state.update(now=0, max=0, threads=set())
    run_batch(2, fn, 8)  # no more threads than calls
    assert len(state["threads"]) <= 2


# ---------------------------------------------------------------------- the sub-call counter
def test_the_counter_refuses_past_its_limit_with_what_was_used():
    c = SubCallCounter(2)
    c.reserve()
    c.reserve()
    with pytest.raises(BudgetExceeded) as e:
        c.reserve()
    assert str(e.value) == "max_sub_calls=2 reached (2 sub-calls made)" and c.used == 2
    free = SubCallCounter(None)
    for _ in range(50):
        free.reserve()
    assert free.used == 50 and free.remaining() is None


def test_remaining_is_the_tightest_counter_up_the_tree():
    root = SubCallCounter(10)
    assert root.remaining() == (10, 10)
    root.reserve()
    assert root.remaining() == (9, 10)
    kid = SubCallCounter(None, root)
    kid.reserve()
    assert kid.remaining() == (8, 10) and root.used == 2
    tight = SubCallCounter(3, root)
    assert tight.remaining() == (3, 3)
    loose = SubCallCounter(20, root)
    assert loose.remaining() == (8, 10)
    even = SubCallCounter(8, root)  # as many left here as above: the nearer counter is named
    assert even.remaining() == (8, 8)
    full = SubCallCounter(1)
    full.reserve()
    assert full.remaining() == (0, 1)


# ---------------------------------------------------------------------- pre-flight
def test_preflight_refuses_only_a_prompt_over_the_window_and_says_what_fits():
    sub = FnSub(window=1000, name="small/sub")
    preflight(sub, "x" * 4000)  # 1,000 tokens: fits exactly
    with pytest.raises(CommandError) as e:
        preflight(sub, "x" * 4001)
    assert str(e.value) == (
        "sub-prompt too large: about 1,001 tokens (4,001 characters) but the sub-model small/sub has a "
        '1,000-token window. Send less text: use llm_map with "chunk_size" of at most 3,200 characters, or a '
        "smaller variable/slice.")
    with pytest.raises(CommandError, match='"chunk_size" of at most 1,000 characters'):
        preflight(FnSub(window=10), "x" * 100)  # never advise less than 1,000
    class Nameless:
        context_window = 10

    with pytest.raises(CommandError, match="^sub-prompt too large: .* the sub-model \\? has a 10-token window"):
        preflight(Nameless(), "x" * 100)
    preflight(FnSub(window=0), "x" * 100_000)  # an unknown window: no check
    preflight(None, "x" * 100_000)


# ---------------------------------------------------------------------- the per-run services
def test_install_gives_the_session_the_services_and_wraps_its_sub_query():
    calls = []
    s = session(lambda p, **o: calls.append((p, o)) or f"A:{p}")
    d = install(s)
    assert s.services["delegation"] is d and s.sub_query == d.query
    assert s.services["llm_query_batched"](["a", 2]) == ["A:a", "A:2"]
    assert sorted(p for p, _ in calls) == ["2", "a"]
    assert s.sub_query("one") == "A:one" and d.counter.used == 3
    assert all(k in s.services for k in ("rlm_query", "rlm_query_batched", "llm_map"))
    assert install(session(None)) is None
    bare = session(None)
    with pytest.raises(CommandError, match="^sub-model calls are not available in this run$"):
        DelegationExecutor(bare).d.query("hi")  # the executor still has a Delegation, one that says why


def test_query_refuses_what_it_cannot_send():
    d = Delegation(session(None))
    with pytest.raises(CommandError, match="^sub-model calls are not available in this run$"):
        d.query("hi")
    d = Delegation(session(lambda p, **o: "x"))
    with pytest.raises(CommandError, match="^a sub-prompt must be a str, not int$"):
        d.query(5)  # type: ignore[arg-type]
    assert d.counter.used == 0


def test_a_spent_sub_call_budget_stops_the_run():
    s = session(lambda p, **o: "x", cfg=config(max_sub_calls=1))
    d = Delegation(s)
    assert d.query("one") == "x"
    with pytest.raises(BudgetExceeded):
        d.query("two")
    assert isinstance(s.services["stop"], BudgetExceeded)
    with pytest.raises(CommandError, match="would make 1 sub-calls but only 0 of max_sub_calls=1 are left"):
        d.query_batched(["three"])  # refused before any call


def test_a_batch_may_use_exactly_what_is_left_and_no_more():
    s = session(lambda p, **o: "x", cfg=config(max_sub_calls=3))
    d = Delegation(s)
    with pytest.raises(CommandError) as e:
        d.batch(["a"] * 4)
    assert str(e.value) == ("llm_query_batched would make 4 sub-calls but only 3 of max_sub_calls=3 are left; use "
                            "fewer, larger pieces (a bigger chunk_size) or fewer prompts (or raise [delegation] "
                            "max_sub_calls)")
    assert d.batch(["a"] * 3, op="llm_map").answers == ["x"] * 3
    unlimited = Delegation(session(lambda p, **o: "x", cfg=config(max_sub_calls=None)))
    assert unlimited.batch(["a"] * 30).finished == 30


def test_concurrency_is_at_least_one():
    assert Delegation(session(cfg=config(max_concurrency=0))).concurrency == 1
    assert Delegation(session(cfg=config(max_concurrency=5))).concurrency == 5
    assert Delegation(session(cfg=object())).concurrency == 16  # not a config: the defaults


def test_each_batch_tags_its_calls_and_reports_its_start_and_end():
    tags = []
    s = session(lambda p, **o: tags.append(o["tag"]) or "x")
    d = Delegation(s)
    d.batch(["a", "b"])
    d.batch(["c"], op="llm_map")
    assert sorted(map(str, tags)) == sorted(map(str, [{"batch": "b0", "index": 0}, {"batch": "b0", "index": 1},
                                                      {"batch": "b1", "index": 0}]))
    prog = [d_ for t, d_ in s.services["events"] if t == "batch_progress"]
    assert prog[0] == {"op": "llm_query_batched", "batch": "b0", "total": 2, "done": 0, "failed": 0}
    assert prog[-1] == {"op": "llm_map", "batch": "b1", "total": 1, "done": 1, "failed": 0}
    assert {"op": "llm_query_batched", "batch": "b0", "total": 2, "done": 2, "failed": 0} in prog


def test_progress_is_reported_a_few_times_a_second_not_per_call():
    s = session(lambda p, **o: time.sleep(0.06) or "x", cfg=config(max_concurrency=1))
    d = Delegation(s)
    t0 = time.monotonic()
    d.batch(["a"] * 12)  # ≥ 0.7 s
    elapsed = time.monotonic() - t0
    prog = [d_ for t, d_ in s.services["events"] if t == "batch_progress"]
    dones = [p["done"] for p in prog]
    assert dones[0] == 0 and dones[-1] == 12 and dones == sorted(dones)
    assert 3 <= len(prog) <= 2 + elapsed / 0.25 + 1 and len(prog) < 13  # start, one every 0.25 s, end
    s = session(lambda p, **o: "x")
    t0 = time.monotonic()
    Delegation(s).batch(["a"] * 50)  # fast: the start and the end (and one more a quarter second)
    elapsed = time.monotonic() - t0
    dones = [p["done"] for t, p in s.services["events"] if t == "batch_progress"]
    assert dones[0] == 0 and dones[-1] == 50 and len(dones) <= 2 + elapsed / 0.25 + 1 and len(dones) < 51


def test_a_child_needs_a_prompt_and_an_engine():
    d = Delegation(session(lambda p, **o: "x"))
    for bad in ("", "   ", None):
        with pytest.raises(CommandError, match="^rlm_query needs a non-empty 'prompt'$"):
            d.child(bad)  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="^rlm_query is not available in this run$"):
        d.child("who?")


def test_a_child_gets_no_time_when_the_run_has_none_left():
    s = session(lambda p, **o: "x")
    s.limits = Limits(timeout_s=5)
    s.services["deadline"] = time.monotonic() - 0.01
    with pytest.raises(RunTimeout, match="^the run took longer than timeout_s=5$"):
        Delegation(s)._remaining_limits()
    s.services["deadline"] = time.monotonic() + 0.5  # a little time is still time
    assert 0 < Delegation(s)._remaining_limits().timeout_s <= 0.5
    s.services["deadline"] = time.monotonic() + 100
    left = Delegation(s)._remaining_limits()
    assert 99 < left.timeout_s <= 100 and left.max_output_chars == s.limits.max_output_chars


# ---------------------------------------------------------------------- what a batch shows the model
def test_a_batch_s_output_shares_the_output_limit_between_its_answers():
    long = "word  \n " * 400  # 3,200 characters; whitespace runs collapse to one space
    sub = FnSub(lambda p: "short" if p == "b" else long)
    res, _ = l4_run([cmd("llm_query_batched", prompts=["a", "b", "c"]), cmd("final", answer="x")], sub,
                    max_output_chars=1000)
    lines = action_outputs(res, "llm_query_batched")[0].splitlines()
    head = lines[0]
    assert head.startswith("llm_query_batched: 3 prompt(s), 3 answered, 0 failed (") and head.endswith(
        "s, up to 16 at once)")
    per = (1000 - len(head)) // 3 - 8
    flat = " ".join(long.split())
    assert lines[1:4] == [f"[0] {flat[:per - 1]}…", "[1] short", f"[2] {flat[:per - 1]}…"]
    assert lines[4] == '(read one answer in full with {"op": "get", "name": "answers[i]"})'
    assert lines[5] == "(stored in 'answers')"
    res, _ = l4_run([cmd("llm_query_batched", prompts=["a"] * 40), cmd("final", answer="x")], FnSub(lambda p: long),
                    max_output_chars=1000)
    out = action_outputs(res, "llm_query_batched")[0]
    assert out.splitlines()[1] == f"[0] {flat[:59]}…"  # never less than 60 characters an answer
    assert out.endswith("more not shown. The full result is stored in 'answers'; read parts of it with slice/lines "
                        "and \"on\".]\n(stored in 'answers')") and "\n[output cut: showing 1,000 of " in out


def test_a_batch_whose_every_call_failed_is_an_error_and_its_store_is_named():
    def boom(p):
        raise CommandError("refused")

    res, _ = l4_run([cmd("llm_query_batched", prompts=["a", "b"], store="got"), cmd("get", name="got"),
                     cmd("final", answer="x")], FnSub(boom))
    ends = [e.data for e in res.events if e.type == "action_end" and e.path == "0"]
    assert ends[0]["error"] is True and ends[0]["output"].splitlines()[-2] == (
        '(read one answer in full with {"op": "get", "name": "got[i]"})')
    assert ends[0]["output"].endswith("(stored in 'got')")
    res, _ = l4_run([cmd("llm_query_batched", prompts=["a", "b"]), cmd("final", answer="x")],
                    FnSub(lambda p: "fine" if p == "a" else boom(p)))
    (end,) = [e.data for e in res.events if e.type == "action_end" and e.data["op"] == "llm_query_batched"]
    assert end["error"] is False and "2 prompt(s), 1 answered, 1 failed" in end["output"]


@pytest.mark.parametrize("prompts", [[], ["a", 1], "abc"])
def test_llm_query_batched_needs_a_list_of_strings(prompts):
    sub = FnSub()
    res, _ = l4_run([cmd("llm_query_batched", prompts=prompts), cmd("final", answer="x")], sub)
    out = action_outputs(res, "llm_query_batched")[0]
    assert out.startswith("error: ") and sub.prompts == []
    if isinstance(prompts, list):
        assert out == "error: llm_query_batched needs 'prompts', a non-empty list of strings"


def test_llm_query_batched_on_a_variable_appends_it_to_every_prompt():
    sub = FnSub(lambda p: "ok")
    l4_run([cmd("set", name="v", value=["x", 1]), cmd("llm_query_batched", prompts=["a", "b"], on="v"),
            cmd("final", answer="x")], sub)
    assert sorted(sub.prompts) == ['a\n\n["x", 1]', 'b\n\n["x", 1]']


def test_a_stopped_map_keeps_its_answers_and_counts_as_read_only_the_chunks_it_sent():
    from contextbox import RLM
    from contextbox.budget import estimate_prompt_tokens
    from contextbox.providers import ScriptedProvider

    ctx = "".join(f"line {i}\n" for i in range(10))  # 7 characters a line: a chunk a line

    def models(used: int = 1):  # each sub-call reserves far less than it reports: the ledger runs out mid-map
        root = ScriptedProvider([{"text": cmd("llm_map", prompt="x", chunk_size=7), "input_tokens": 10,
                                  "output_tokens": 10}, cmd("final", answer="never")])
        return root, FnSub(lambda p: "seen " + p.rsplit("\n", 2)[-2], tokens=(used, 0))

    probe, _ = models()
    RLM(model=probe, sub_model=FnSub(), levels="l1,l4", config=config()).run("q", ctx)
    budget = estimate_prompt_tokens(probe.requests[0]) + 50  # what the root's first call holds
    root, sub = models((budget - 20) // 4 + 1)  # the fourth sub-call goes over
    res = RLM(model=root, sub_model=sub, levels="l1,l4", config=config(max_concurrency=1),
              limits={"max_total_tokens": budget, "reserve_output_tokens": 50}).run("q", ctx)
    assert res.status == "budget_exceeded"
    end = next(e.data for e in res.events if e.type == "action_end" and e.data["op"] == "llm_map")
    answered = [ln for ln in end["output"].splitlines() if ln.startswith("[") and "seen" in ln]
    assert 0 < len(answered) < 10 and len(sub.prompts) == len(answered)
    assert "\nstopped: " in end["output"] and "the finished answers are kept" in end["output"]
    assert end["read"] == [[0, 7 * len(answered)]]  # the chunks never sent were not read
    assert res.answer == "\n".join(f"seen line {i}" for i in range(len(answered)))


# ---------------------------------------------------------------------- child runs
def test_a_child_that_ends_without_an_answer_is_an_error_with_its_partial_answer():
    from test_delegation import rlm_script_provider

    from contextbox import RLM

    flows = {"top?": [cmd("rlm_query", prompt="kid?"), cmd("rlm_query", prompt="kid2?"), cmd("final", answer="top")],
             "kid?": [cmd("find", text="x"), cmd("find", text="y"), cmd("find", text="z")],
             "kid2?": [cmd("final", answer="kid2")]}
    res = RLM(model=rlm_script_provider(flows), sub_model=FnSub(), levels="l1,l4", config=config(),
              limits={"max_iterations": 3}).run("top?", TEXT)
    assert res.status == "answered"
    outs = action_outputs(res, "rlm_query")
    assert outs[0].startswith("error: child run 0.0 ended with status max_iterations: ")
    assert outs[1] == "kid2"
    assert [e.path for e in res.events if e.type == "run_start"] == ["0", "0.0", "0.1"]


def test_a_cancel_reaches_the_child_run():
    from contextbox import RLM
    from contextbox.types import Completion

    cancel = threading.Event()

    class Root:
        name, context_window = "r/root", None
        kid_calls = 0

        def complete(self, messages, **opts):
            if "kid?" in messages[1]["content"].split("\n", 1)[0]:
                self.kid_calls += 1
                cancel.set()  # the user cancels while the child runs
                return Completion(cmd("find", text=f"x{self.kid_calls}"), 1, 1, model=self.name)
            return Completion(cmd("rlm_query", prompt="kid?"), 1, 1, model=self.name)

    root = Root()
    res = RLM(model=root, sub_model=FnSub(), levels="l1,l4", config=config(),
              limits={"max_iterations": 50}).run("top?", TEXT, cancel=cancel)
    assert res.status == "cancelled"
    time.sleep(0.5)  # a child that missed the cancel would go on searching
    assert root.kid_calls <= 2


def test_at_max_depth_a_child_on_an_empty_context_is_the_prompt_alone():
    sub = FnSub(lambda p: "plain")
    res, _ = l4_run([cmd("set", name="e", value=""), cmd("rlm_query", prompt="who?", on="e"),
                     cmd("final", answer="x")], sub, cfg=config(max_depth=0))
    assert sub.prompts == ["who?"] and action_outputs(res, "rlm_query") == ["plain"]


def test_the_executor_uses_the_run_s_delegation_or_installs_one():
    s = session(lambda p, **o: "x")
    d = install(s)
    ex = DelegationExecutor(s)
    assert ex.d is d
    bare = session(lambda p, **o: "x")
    ex = DelegationExecutor(bare)
    assert isinstance(ex.d, Delegation) and bare.services["delegation"] is ex.d


def test_a_child_spends_from_its_parent_s_ledger_with_its_models_and_levels():
    from contextbox import RLM
    from contextbox.types import Completion

    class Root:  # the root's calls are dear, the child's cheap; the child only searches
        name, context_window = "r/root", None
        finds = 0

        def complete(self, messages, **opts):
            if "kid?" in messages[1]["content"].split("\n", 1)[0]:
                self.finds += 1
                return Completion(cmd("find", text=f"x{self.finds}"), 990, 10, model=self.name)
            return Completion(cmd("rlm_query", prompt="kid?"), 19_990, 10, model=self.name)

    res = RLM(model=Root(), sub_model=FnSub(name="s/sub"), levels="l1,l4", config=config(),
              limits={"max_total_tokens": 30_000, "reserve_output_tokens": 100, "max_iterations": 100}).run("q", TEXT)
    assert res.status == "budget_exceeded" and res.reason.startswith("child run 0.0: ")
    (end,) = [e.data for e in res.events if e.type == "action_end" and e.path == "0"]
    assert end["error"] is True and end["output"] == f"error: the child run stopped: {res.reason}"
    total = res.usage.total.total_tokens
    assert 25_000 <= total <= 31_000  # one ledger: the child had what the root left (10,000), not 30,000
    kid = next(e.data for e in res.events if e.type == "run_start" and e.path == "0.0")
    assert (kid["model"], kid["sub_model"], kid["levels"], kid["depth"]) == ("r/root", "s/sub", ["l1", "l4"], 1)


# ---------------------------------------------------------------------- the code levels' services
def test_code_cells_get_child_runs_and_typed_maps_through_the_services(monkeypatch):
    """What ``rlm_query``, ``rlm_query_batched`` and ``llm_map`` do for a code cell (here a stand-in cell
    executor, so no sandbox starts; the services are the real ones the engine installs)."""
    import json

    from test_typed_map import RECORD

    import contextbox.engine as engine
    from contextbox import RLM
    from contextbox.executors import ActionOutput
    from contextbox.providers import ScriptedProvider

    class Cell:
        level = "l2"

        def __init__(self, s):
            self.s = s

        def run(self, action):
            sv = self.s.services
            out = {"one": sv["rlm_query"]("who?", "ctx one"),
                   "many": sv["rlm_query_batched"](["a?", 2], "ctx two"),
                   "labels": sv["llm_map"]("Label?", ["red apple", "green pear"], choices=["fruit", "veg"])}
            return ActionOutput(json.dumps(out))

        def close(self):
            pass

    real = engine.executor_factory
    monkeypatch.setattr(engine, "executor_factory", lambda level: Cell if level == "l2" else real(level))

    def answer(p):
        if "Label?" in p:
            return json.dumps(["fruit"] * len(RECORD.findall(p)))
        return "A:" + p

    sub = FnSub(answer)
    res = RLM(model=ScriptedProvider(["```repl\nx\n```", cmd("final", answer="done")]), sub_model=sub,
              levels="l1,l2,l4", config=config(max_depth=0)).run("q", TEXT)  # children degrade to sub-calls
    out = json.loads(next(e.data["output"] for e in res.events if e.type == "action_end"))
    assert out == {"one": "A:who?\n\nctx one", "many": ["A:a?\n\nctx two", "A:2\n\nctx two"],
                   "labels": ["fruit", "fruit"]}


def test_a_child_counts_its_sub_calls_in_its_parent_s_limit():
    from test_delegation import rlm_script_provider

    from contextbox import RLM

    flows = {"top?": [cmd("llm_query", prompt="p0"), cmd("rlm_query", prompt="kid?"), cmd("final", answer="top")],
             "kid?": [cmd("llm_query", prompt=f"k{i}") for i in range(1, 5)] + [cmd("final", answer="kid")]}
    sub = FnSub(lambda p: "ok")
    res = RLM(model=rlm_script_provider(flows), sub_model=sub, levels="l1,l4",
              config=config(max_sub_calls=3)).run("top?", TEXT)
    assert sub.prompts == ["p0", "k1", "k2"]  # the tree's three, not three more for the child
    assert res.status == "budget_exceeded" and "max_sub_calls=3" in res.reason


def test_a_typed_map_stopped_mid_way_keeps_its_summary_and_says_it_stopped():
    import json

    from contextbox import RLM
    from contextbox.budget import estimate_prompt_tokens
    from contextbox.providers import ScriptedProvider

    def models(used: int = 1):
        root = ScriptedProvider([
            {"text": cmd("set", name="rows", value=[f"row {i}" for i in range(10)]), "input_tokens": 10,
             "output_tokens": 10},
            {"text": cmd("llm_map", prompt="Label?", on="rows", choices=["a", "b"], per_call=1),
             "input_tokens": 10, "output_tokens": 10}, cmd("final", answer="never")])
        return root, FnSub(lambda p: json.dumps(["a"]), tokens=(used, 0))

    probe, _ = models()
    RLM(model=probe, sub_model=FnSub(), levels="l1,l4", config=config()).run("q", TEXT)
    budget = 20 + estimate_prompt_tokens(probe.requests[1]) + 50  # what the root's second call holds
    root, sub = models((budget - 40) // 4 + 1)  # the fourth sub-call goes over
    res = RLM(model=root, sub_model=sub, levels="l1,l4", config=config(max_concurrency=1, choice_scoring=False),
              limits={"max_total_tokens": budget, "reserve_output_tokens": 50}).run("q", TEXT)
    assert res.status == "budget_exceeded"
    out = action_outputs(res, "llm_map")[0]
    assert out.startswith("llm_map: 10 records in ") and "\nstopped: " in out
    assert out.count("\nstopped: ") == 1 and "the finished answers are kept" in out
    assert 0 < len(sub.prompts) < 10


def test_a_map_chunk_whose_call_failed_was_still_read():
    from contextbox.errors import ProviderUnavailable

    def fn(p):
        if "line 1" in p:
            raise ProviderUnavailable("HTTP 500")
        return "ok"

    ctx = "".join(f"line {i}\n" for i in range(3))
    res, _ = l4_run([cmd("llm_map", prompt="x", chunk_size=7), cmd("final", answer="x")], FnSub(fn), context=ctx)
    end = next(e.data for e in res.events if e.type == "action_end" and e.data["op"] == "llm_map")
    assert "3 chunk(s)" in end["output"] and "2 answered, 1 failed" in end["output"]
    assert end["read"] == [[0, len(ctx)]]  # the failed call was sent: its chunk was read


# ---------------------------------------------------------------------- what a batch logs
def test_a_failing_progress_reporter_is_logged_with_the_batch_name(caplog):
    def report(done: int, failed: int) -> None:
        raise RuntimeError("the reporter broke")

    with caplog.at_level(logging.ERROR, logger="contextbox"):
        run_batch(2, lambda i: "ok", 1, name="sub-b3", on_progress=report)
    msgs = [r.getMessage() for r in caplog.records if r.name == "contextbox"]
    assert msgs == ["sub-b3: progress report failed"] * 2


def test_a_batch_logs_its_size_and_concurrency_at_debug_level(caplog):
    s = session(lambda p, **kw: "ok", cfg=SimpleNamespace(delegation=DelegationSettings(max_concurrency=2)))
    s.path = "0.1"
    with caplog.at_level(logging.DEBUG, logger="contextbox"):
        Delegation(s).batch(["a", "b", "c"])
    assert "0.1 b0: 3 sub-calls at concurrency 2" in [r.getMessage() for r in caplog.records]


# ---------------------------------------------------------------------- a cancelled run's batch
def test_cancelling_the_run_stops_the_pending_sub_calls_of_its_batch():
    sent: list[str] = []

    def sub(prompt: str, **kw) -> str:
        sent.append(prompt)
        if prompt == "p1":
            s.cancel.set()  # the user cancels the run while the batch is going
        return "A" + prompt

    s = session(sub, cfg=SimpleNamespace(delegation=DelegationSettings(max_concurrency=1)))
    res = Delegation(s).batch([f"p{i}" for i in range(5)])
    assert sent == ["p0", "p1"]
    assert res.answers == ["Ap0", "Ap1"] + ["error: not run: cancelled"] * 3 and res.finished == 2


# ---------------------------------------------------------------------- the code levels' typed map
def test_the_code_levels_typed_map_honours_per_call_schema_and_field():
    from test_typed_map import RECORD, session_run
    from test_typed_map import FnSub as ChatSub

    sub = ChatSub(lambda p: json.dumps(["long" if len(t) > 3 else "short" for _, t in RECORD.findall(p)]))
    d = DelegationExecutor(session_run(sub).session).d
    words = ["a", "abcdef", "xy", "hello"]
    assert d.typed_map("Length?", words, choices=["short", "long"], per_call=2) == ["short", "long", "short", "long"]
    assert len(sub.prompts) == 2  # two records per sub-call, as asked
    sub.prompts.clear()
    assert d.typed_map("Length?", words, choices=["short", "long"]) == ["short", "long", "short", "long"]
    assert len(sub.prompts) == 1  # the default: 10 records a call

    counts = ChatSub(lambda p: json.dumps([len(t) for _, t in RECORD.findall(p)]))
    d = DelegationExecutor(session_run(counts).session).d
    assert d.typed_map("Length?", words, schema={"type": "integer"}) == [1, 6, 2, 5]
    with pytest.raises(CommandError, match=r"^llm_map 'field' must be a non-empty column name"):
        d.typed_map("Length?", words, schema={"type": "integer"}, field=" ")
    with pytest.raises(CommandError, match=r"^llm_map: 'field' does not apply to an object schema"):
        d.typed_map("Length?", words, schema={"type": "object", "properties": {"n": {"type": "integer"}}}, field="n")
    with pytest.raises(CommandError, match=r"^llm_map 'per_call' must be a whole number from 1 to 200"):
        d.typed_map("Length?", words, schema={"type": "integer"}, per_call=0)


# ---------------------------------------------------------------------- what an rlm_query reads
def test_an_rlm_query_on_the_whole_context_leaves_the_reading_to_its_child():
    from test_delegation import rlm_script_provider

    from contextbox import RLM

    flows = {"top?": [cmd("rlm_query", prompt="kid?"), cmd("rlm_query", prompt="kid?", start=2, end=9),
                      cmd("final", answer="done")],
             "kid?": [cmd("slice", start=0, end=10), cmd("final", answer="k1"), cmd("final", answer="k2")]}
    rlm = RLM(model=rlm_script_provider(flows), sub_model=FnSub(), levels="l1,l4", config=config(max_depth=1))
    res = rlm.run("top?", TEXT)
    assert res.status == "answered"
    reads = [(e.path, e.data["op"], e.data["read"]) for e in res.events if e.type == "action_end"]
    assert reads[:2] == [("0.0", "slice", [[0, 10]]), ("0.0", "final", [])]
    assert ("0", "rlm_query", []) == reads[2]  # the child's own actions say what it read
    assert ("0", "rlm_query", [[2, 9]]) in reads  # a slice handed to a child counts as read
