"""Safe with real money: reservations, one ledger per run tree, known and unknown prices, defaults,
the honest live counter."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fakeserver import FakeLLMServer
from helpers import cmd
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import rlm as rlm_cli
from test_delegation import FnSub, _variables, config, rlm_script_provider

from contextbox import RLM, Config
from contextbox.budget import Budget, effective_limits, estimate_prompt_tokens
from contextbox.cli import Progress, _row_cost
from contextbox.errors import BudgetExceeded, ProviderUnavailable, UsageError
from contextbox.pricing import cost, format_cost, has_price
from contextbox.providers import ScriptedProvider
from contextbox.providers.base import ProviderConfig
from contextbox.stores.sqlite import SqliteRunStore
from contextbox.types import DEFAULT_MAX_COST_USD, DEFAULT_TIMEOUT_S, Event, Limits, Usage, UsageReport

TEXT = "The weather was fine.\nThe secret code is ZEBRA-42.\nNothing else happened.\n"
SUB_REPLY_WORDS = 2000  # the fake server counts words: each sub-call "writes" 2,000 tokens
SUB_PRICE = (10.0, 100.0)  # USD per million tokens: a sub-call costs ≈ $0.20
ROOT_PRICE = (1.0, 1.0)


class Stop(Exception):
    """Raised by a ``check`` to see that a reservation would wait."""


def _raise_stop() -> None:
    raise Stop


# ---------------------------------------------------------------------- the ledger
def test_a_reservation_the_remaining_budget_cannot_cover_is_refused():
    b = Budget(max_total_tokens=1000)
    r = b.hold_amount("m", 600, None)
    with pytest.raises(Stop):  # 500 > 400 left: it waits, since the call in flight may give back room
        b.hold_amount("m", 500, None, check=_raise_stop)
    with pytest.raises(BudgetExceeded, match="needs up to 1,001 tokens but only 400 are left"):
        b.hold_amount("m", 1001, None)  # could never fit: refused at once
    b.settle(r, 650, None)  # used more than it held: recorded as used
    assert (b.spent_tokens, b.reserved_tokens, b.in_flight) == (650, 0, 0)
    with pytest.raises(BudgetExceeded, match="needs up to 351 tokens but only 350 are left"):
        b.hold_amount("m", 351, None)
    b.hold_amount("m", 350, None)  # exactly what is left fits


def test_a_waiting_call_starts_when_a_call_in_flight_gives_back_room():
    b = Budget(max_total_tokens=1000)
    first = b.hold_amount("m", 600, None)
    got: dict = {}

    def second():
        try:
            got["r"] = b.hold_amount("m", 500, None)
        except BudgetExceeded as e:
            got["e"] = e

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and not got  # it waits: the call in flight may give back room
    b.settle(first, 300, None)  # used 300 of the 600 it held
    t.join(2)
    assert "r" in got and b.reserved_tokens == 500 and b.spent_tokens == 300


def test_a_waiting_call_that_can_never_fit_is_refused_when_room_runs_out():
    b = Budget(max_total_tokens=1000)
    first = b.hold_amount("m", 600, None)
    got: dict = {}
    t = threading.Thread(target=lambda: got.setdefault("e", _catch(lambda: b.hold_amount("m", 500, None))))
    t.start()
    time.sleep(0.2)
    b.settle(first, 600, None)  # all used: 400 left, the waiting 500 can never fit
    t.join(2)
    assert isinstance(got.get("e"), BudgetExceeded) and b.in_flight == 0 and b.spent_tokens == 600


def _catch(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return e


def test_held_releases_the_reservation_when_the_call_fails():
    b = Budget(max_total_tokens=10_000, max_cost_usd=1.0, price=lambda spec, i, o: (i + o) / 10_000)
    with pytest.raises(ProviderUnavailable):
        with b.held("m", [{"role": "user", "content": "x" * 300}], max_tokens=100):
            assert b.in_flight == 1 and b.reserved_tokens == 104 + 100
            assert b.reserved_cost_usd == pytest.approx(0.0204)
            raise ProviderUnavailable("down")
    assert (b.in_flight, b.reserved_tokens, b.reserved_cost_usd, b.spent_tokens, b.calls) == (0, 0, 0.0, 0, 0)
    with b.held("m", [{"role": "user", "content": "hi"}], max_tokens=10) as r:
        b.settle(r, 7, 0.0007)
    assert (b.in_flight, b.spent_tokens, b.calls) == (0, 7, 1)
    assert b.spent_cost_usd == pytest.approx(0.0007)


def test_cost_reservations_use_the_price():
    b = Budget(max_cost_usd=1.0, price=lambda spec, i, o: (i * 1.0 + o * 2.0) / 1_000_000)
    msgs = [{"role": "user", "content": "y" * 3000}]  # 1000 + 4 tokens
    r = b.reserve("m", msgs, max_tokens=200_000)
    assert r.cost_usd == pytest.approx((1004 + 400_000) / 1_000_000)
    with pytest.raises(Stop):  # $0.60 > the $0.60 left: waits for the call in flight
        b.reserve("m", msgs, max_tokens=300_000, check=_raise_stop)
    with pytest.raises(BudgetExceeded, match=r"max_cost_usd=1: the next call \(m\) could cost up to \$1\.2010"):
        b.reserve("m", msgs, max_tokens=600_000)  # more than the whole limit: refused at once
    b.settle(r, 0, 0.9)
    with pytest.raises(BudgetExceeded):
        b.reserve("m", msgs, max_tokens=100_000)  # $0.2 > the $0.1 left, nothing in flight


def test_estimate_is_generous_for_prose():
    prose = TEXT * 50
    words = len(prose.split())
    assert estimate_prompt_tokens([{"role": "user", "content": prose}]) >= words * 1.5


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 2000),
       ops=st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release"]), st.integers(0, 800),
                              st.integers(0, 800)), max_size=40))
def test_ledger_matches_a_plain_model(limit, ops):
    """Sequential ops against the ledger vs plain arithmetic: admitted iff it fits; waits iff it could
    fit once calls in flight give back room; refused otherwise."""
    b = Budget(max_total_tokens=limit)
    held: list = []
    spent = reserved = 0
    for op, amount, used in ops:
        if op == "reserve":
            try:
                r = b.hold_amount("m", amount, None, check=_raise_stop)
                outcome = "ok"
            except Stop:
                outcome = "wait"
            except BudgetExceeded:
                outcome = "refused"
            if amount <= limit - spent - reserved:
                expected = "ok"
            elif amount <= limit - spent and held:
                expected = "wait"
            else:
                expected = "refused"
            assert outcome == expected
            if outcome == "ok":
                held.append(r)
                reserved += amount
        elif held:
            r = held.pop(used % len(held))
            reserved -= r.tokens
            if op == "settle":
                b.settle(r, used, None)
                spent += used
            else:
                b.release(r)
        assert (b.spent_tokens, b.reserved_tokens, b.in_flight) == (spent, reserved, len(held))


def test_ledger_is_thread_safe():
    b = Budget(max_total_tokens=50_000)
    settled: list[int] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(200):
            need = rnd.randint(1, 400)
            try:
                r = b.hold_amount("m", need, None)
            except BudgetExceeded:
                continue
            if rnd.random() < 0.3:
                b.release(r)
                continue
            used = rnd.randint(0, need)  # never more than it held
            b.settle(r, used, None)
            with lock:
                settled.append(used)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.spent_tokens == sum(settled) <= 50_000
    assert (b.reserved_tokens, b.in_flight, b.calls) == (0, 0, len(settled))


# ---------------------------------------------------------------------- prices
def test_prices_come_from_genai_prices_and_config_wins():
    assert cost("openai/gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    # DeepSeek halves its price off-peak (16:30-00:30 UTC); genai-prices prices the call at the current time
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    minute = now.hour * 60 + now.minute
    off_peak = minute >= 16 * 60 + 30 or minute < 30
    assert cost("deepseek/deepseek-chat", 1_000_000, 0) == pytest.approx(0.135 if off_peak else 0.27)
    assert cost("anthropic/claude-3-5-haiku-latest", 1_000_000, 0) == pytest.approx(0.80)
    assert cost("openai/gpt-4o-mini", 1_000_000, 0, {"openai/gpt-4o-mini": (9.0, 0.0)}) == pytest.approx(9.0)
    assert cost("openai/gpt-4o-mini", 0, 2_000_000, {"gpt-4o-mini": (0.0, 3.0)}) == pytest.approx(6.0)


def test_unknown_price_is_none_never_zero():
    srv = [ProviderConfig("fake", base_url="http://127.0.0.1:9/v1")]
    assert cost("fake/fake-model", 10, 10, None, srv) is None  # an endpoint no provider claims
    assert cost("openai/no-such-model-xyz", 10, 10) is None  # a provider without this model
    assert cost("ollama/llama3", 10, 10) is None
    assert cost("fn/sub", 10, 10) is None  # no provider of that name at all
    assert cost("fake/fake-model", 10, 10, {"fake/fake-model": (1.0, 2.0)}, srv) == pytest.approx(30 / 1e6)
    assert not has_price("fake/fake-model", None, srv)
    assert format_cost(None) == "unknown" and format_cost(0.5) == "$0.5000"


def test_a_configured_endpoint_of_a_known_provider_is_priced_a_pool_with_an_unknown_one_is_not():
    openai_ep = ProviderConfig("work", base_url="https://api.openai.com/v1")
    assert cost("work/gpt-4o-mini", 1_000_000, 0, None, [openai_ep]) == pytest.approx(0.15)
    pool = [openai_ep, ProviderConfig("work", base_url="http://10.0.0.7:8000/v1")]
    assert cost("work/gpt-4o-mini", 1_000_000, 0, None, pool) is None


def test_local_and_scripted_models_are_free():
    assert cost("local", 10**6, 10**6) == 0.0 and cost("local:/m.gguf", 5, 5) == 0.0
    assert cost("scripted:/x.json", 10**6, 10**6) == 0.0 and cost("scripted", 1, 1) == 0.0


def test_usage_totals_report_unknown_cost():
    rep = UsageReport()
    rep.add(Usage("root", "openai/gpt-4o-mini", 10, 5, 0.1, 0.25))
    rep.add(Usage("sub", "fake/x", 10, 5, 0.1, None))
    d = rep.to_dict()
    assert d["total"]["cost_usd"] is None and d["total"]["cost_unknown_calls"] == 1
    assert rep.total.known_cost_usd == pytest.approx(0.25)
    assert d["by_role"]["root"]["cost_usd"] == 0.25 and d["by_role"]["root"]["cost_unknown_calls"] == 0
    assert d["by_model"]["fake/x"]["cost_usd"] is None


# ---------------------------------------------------------------------- limits and defaults
def test_default_limits():
    lim = Limits()
    assert lim.timeout_s == DEFAULT_TIMEOUT_S == 1800 and lim.max_cost_usd is None
    assert Config().delegation.max_sub_calls == 1000
    priced = effective_limits(lim, ["openai/gpt-4o-mini"])
    assert priced.max_cost_usd == DEFAULT_MAX_COST_USD == 5.0 and priced.timeout_s == 1800
    assert effective_limits(lim, ["openai/gpt-4o-mini", "fn/sub"]).max_cost_usd is None  # unknown: no cap
    assert effective_limits(lim, ["local", "scripted"]).max_cost_usd is None  # free
    unlimited = effective_limits(lim.replace(max_cost_usd=float("inf"), timeout_s=float("inf")),
                                 ["openai/gpt-4o-mini"])
    assert unlimited.max_cost_usd is None and unlimited.timeout_s is None
    assert effective_limits(lim.replace(max_cost_usd=0.5), ["openai/gpt-4o-mini"]).max_cost_usd == 0.5


def test_a_cost_limit_with_an_unpriced_model_is_a_usage_error():
    with pytest.raises(UsageError, match=r'fn/sub, which is unknown.*\[prices\] "fn/sub"'):
        effective_limits(Limits(max_cost_usd=1.0), ["openai/gpt-4o-mini", "fn/sub"])
    cfg = config()
    with pytest.raises(UsageError, match="fn/sub"):
        RLM(model=ScriptedProvider([]), sub_model=FnSub(), levels="l1,l4", config=cfg, limits={"max_cost_usd": 1})
    # without l4 the sub-model is never called: its price does not matter
    RLM(model=ScriptedProvider([]), sub_model=FnSub(), levels="l1", config=cfg, limits={"max_cost_usd": 1})
    cfg.prices["fn/sub"] = (1.0, 1.0)
    rlm = RLM(model=ScriptedProvider([]), sub_model=FnSub(), levels="l1,l4", config=cfg,
              limits={"max_cost_usd": 1})
    assert rlm.limits.max_cost_usd == 1


def test_the_default_cost_limit_applies_to_a_priced_run():
    cfg = config()
    cfg.prices["scripted"] = (0.0, 500.0)  # a reply's worst case (4,096 tokens) ≈ $2.05
    replies = [{"text": cmd("find", text=f"w{i}"), "input_tokens": 10, "output_tokens": 2000} for i in range(9)]
    rlm = RLM(model=ScriptedProvider(replies), config=cfg, levels="l1")
    res = rlm.run("q", TEXT)
    start = res.events[0].data["limits"]
    assert start["max_cost_usd"] == 5.0 and start["timeout_s"] == 1800
    assert res.status == "budget_exceeded" and "max_cost_usd=5" in res.reason
    # $1 a call: after three, $3 + a $2.05 worst case no longer fits under $5
    assert res.usage.total.cost_usd == pytest.approx(3.0) and len(rlm.root.requests) == 3


def test_llm_map_larger_than_the_remaining_sub_calls_is_refused_before_any_call():
    sub = FnSub()
    ctx = "word " * 2000
    rlm = RLM(model=ScriptedProvider([cmd("llm_query", prompt="first"), cmd("llm_map", prompt="x", chunk_size=100),
                                      cmd("final", answer="done")]),
              sub_model=sub, levels="l1,l4", config=config(max_sub_calls=50))
    res = rlm.run("q", ctx)
    out = [e.data["output"] for e in res.events if e.type == "action_end"][1]
    assert "llm_map would make 100 sub-calls but only 49 of max_sub_calls=50 are left" in out
    assert "chunk_size" in out
    assert sub.prompts == ["first"] and res.status == "answered"


# ---------------------------------------------------------------------- over HTTP, through the CLI
def _reply(body: dict) -> str:
    if body["model"] == "sub-model":
        return "word " * SUB_REPLY_WORDS
    if any('"op": "llm_map"' in m["content"] for m in body["messages"] if m["role"] == "assistant"):
        return json.dumps({"op": "final", "answer": "done"})
    return json.dumps({"op": "llm_map", "prompt": "Summarise this part.", "chunk_size": 1000})


def _config_file(tmp_path: Path, srv: FakeLLMServer, prices: dict[str, tuple[float, float]], extra: str = "") -> str:
    lines = [f'[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "{srv.base_url}"\nmax_concurrency = 16\n'
             "max_retries = 0\n", "[delegation]\nmax_concurrency = 16\n", "[prices]"]
    lines += [f'"{k}" = {{ input = {a}, output = {b} }}' for k, (a, b) in prices.items()]
    p = tmp_path / "contextbox.toml"
    p.write_text("\n".join(lines) + "\n" + extra)
    return str(p)


def _context(tmp_path: Path) -> str:
    p = tmp_path / "ctx.txt"
    line = lambda i: (f"line {i:05d} " + "lorem ipsum dolor sit amet " * 4)[:99] + "\n"  # noqa: E731
    p.write_text("".join(line(i) for i in range(640)))  # 64,000 characters: 64 line-bounded chunks of 1,000
    return str(p)


def test_max_cost_caps_a_concurrent_llm_map_of_a_priced_http_sub_model(tmp_path):
    """--max-cost 2, 64 chunks at concurrency 16, each sub-call ≈ $0.20: the run stops within the limit."""
    with FakeLLMServer(replies=_reply, latency=0.05) as srv:
        cfg = _config_file(tmp_path, srv, {"fake/root-model": ROOT_PRICE, "fake/sub-model": SUB_PRICE})
        p = rlm_cli("--config", cfg, "ask", "What happens?", "-c", _context(tmp_path), "--model", "fake/root-model",
                    "--sub-model", "fake/sub-model", "--levels", "l1,l4", "--max-cost", "2", "--json",
                    "--runs-dir", str(tmp_path / "runs"))
        assert p.returncode == 1, p.stderr
        out = json.loads(p.stdout)
        assert out["status"] == "budget_exceeded" and "max_cost_usd=2" in out["reason"]
        assert "llm_map: 64 chunk(s)" in p.stderr
        sub_bodies = [b for b in srv.requests if b["model"] == "sub-model"]
        usage = out["usage"]
        assert usage["by_model"]["fake/sub-model"]["calls"] == len(sub_bodies) < 64
        # the recorded cost is the server's own token counts at the configured prices
        words = [sum(len(m["content"].split()) for m in b["messages"]) for b in sub_bodies]
        sub_cost = sum(w * SUB_PRICE[0] + SUB_REPLY_WORDS * SUB_PRICE[1] for w in words) / 1e6
        assert usage["by_model"]["fake/sub-model"]["cost_usd"] == pytest.approx(sub_cost)
        total = usage["total"]["cost_usd"]
        prompt_tokens = estimate_prompt_tokens([{"role": "user", "content": sub_bodies[0]["messages"][0]["content"]}])
        worst = (prompt_tokens * SUB_PRICE[0] + 4096 * SUB_PRICE[1]) / 1e6
        assert total <= 2.0 + worst  # at most one call's worst case over (here: not over at all)
        assert total <= 2.0
        assert total >= 2.0 - 2 * worst  # and the budget was used, not abandoned at the first busy moment
        assert "cost unknown" not in p.stderr and f"${total:.4f}" in p.stderr


def test_max_tokens_caps_a_concurrent_llm_map_over_http(tmp_path):
    with FakeLLMServer(replies=_reply, latency=0.02) as srv:
        root = _http("root-model", srv)
        sub = _http("sub-model", srv)
        limit = 40_000
        rlm = RLM(model=root, sub_model=sub, levels="l1,l4", config=config(max_concurrency=16),
                  limits={"max_total_tokens": limit})
        res = rlm.run("What happens?", Path(_context(tmp_path)).read_text())
        assert res.status == "budget_exceeded"
        t = res.usage.total
        assert t.total_tokens == srv.prompt_tokens_total + srv.completion_tokens_total <= limit
        assert 0 < sum(1 for b in srv.requests if b["model"] == "sub-model") < 64


def _http(model: str, srv: FakeLLMServer):
    from contextbox.providers.openai_compat import OpenAIProvider

    p = OpenAIProvider(ProviderConfig("fake", base_url=srv.base_url, timeout_s=10, max_concurrency=16), model)
    p.retry_base_delay = 0.01
    return p


def test_unpriced_model_with_max_cost_exits_2_naming_the_model(tmp_path, fake_llm):
    cfg = _config_file(tmp_path, fake_llm, {})
    ctx = _context(tmp_path)
    p = rlm_cli("--config", cfg, "ask", "q?", "-c", ctx, "--model", "fake/fake-model", "--max-cost", "1",
                "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 2
    err = p.stderr.strip()
    assert "\n" not in err and "fake/fake-model" in err and '[prices] "fake/fake-model"' in err
    assert fake_llm.request_count == 0  # nothing was sent
    # the same limit from the config file
    cfg2 = _config_file(tmp_path, fake_llm, {}, "[limits]\nmax_cost_usd = 1.0\n")
    p = rlm_cli("--config", cfg2, "ask", "q?", "-c", ctx, "--model", "fake/fake-model", "--runs-dir",
                str(tmp_path / "runs"))
    assert p.returncode == 2 and "fake/fake-model" in p.stderr


def test_unpriced_model_runs_with_cost_unknown_everywhere(tmp_path, fake_llm):
    fake_llm.replies = [json.dumps({"op": "find", "text": "lorem"}), json.dumps({"op": "final", "answer": "ok"})]
    cfg = _config_file(tmp_path, fake_llm, {})
    runs = tmp_path / "runs"
    p = rlm_cli("--config", cfg, "ask", "q?", "-c", _context(tmp_path), "--model", "fake/fake-model", "--json",
                "--runs-dir", str(runs))
    assert p.returncode == 0, p.stderr
    total = json.loads(p.stdout)["usage"]["total"]
    assert total["cost_usd"] is None and total["cost_unknown_calls"] == total["calls"] == 2
    assert "cost unknown (2 call(s)" in p.stderr and "$0.0000" not in p.stderr
    listed = rlm_cli("--config", cfg, "runs", "list", "--runs-dir", str(runs))
    assert "cost=unknown" in listed.stdout
    shown = rlm_cli("--config", cfg, "runs", "show", json.loads(p.stdout)["run_id"], "--runs-dir", str(runs))
    assert "end: answered" in shown.stdout and "· unknown ·" in shown.stdout


def test_row_cost_display():
    assert _row_cost({"status": "answered", "cost_usd": None}) == "unknown"
    assert _row_cost({"status": "answered", "cost_usd": 0.0123}) == "$0.0123"
    assert _row_cost({"status": "running", "cost_usd": None}) == "-"


# ---------------------------------------------------------------------- the run tree
class BigRoot:
    """A root model whose replies depend on the question, reporting ``tokens`` per call."""

    context_window = None

    def __init__(self, flows, tokens, name="routed/root"):
        self.inner = rlm_script_provider(flows, tokens=tokens)
        self.name = name
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def complete(self, messages, **opts):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.01)
            return self.inner.complete(messages, **opts)
        finally:
            with self._lock:
                self.active -= 1


def _capture_budgets(monkeypatch) -> list[Budget]:
    made: list[Budget] = []
    real = Budget.for_run.__func__

    def for_run(cls, *a, **kw):
        b = real(cls, *a, **kw)
        made.append(b)
        return b

    monkeypatch.setattr(Budget, "for_run", classmethod(for_run))
    return made


def test_concurrent_children_share_one_budget(monkeypatch):
    budgets = _capture_budgets(monkeypatch)
    flows = {"top?": [cmd("split", delimiter="\n", store="parts"),
                      cmd("rlm_query_batched", prompt="kid?", on="parts"), cmd("final", answer="top")],
             "kid?": [cmd("find", text=f"w{i}") for i in range(400)]}
    root = BigRoot(flows, tokens=(400, 5))
    limit = 20_000
    rlm = RLM(model=root, sub_model=FnSub(), levels="l1,l4", config=config(), limits={"max_total_tokens": limit})
    res = rlm.run("top?", TEXT)
    assert res.status == "budget_exceeded"
    kids = {e.path for e in res.events if e.type == "run_start" and e.path != "0"}
    assert len(kids) == 4 and root.max_active >= 2  # four children, concurrently
    starts = [e.data["limits"]["max_total_tokens"] for e in res.events if e.type == "run_start"]
    assert starts == [limit] * 5
    # a copy of the remainder for each child would have let them spend ~4× the limit; one ledger holds it
    calls = [e for e in res.events if e.type == "lm_response"]
    assert res.usage.total.total_tokens == 405 * len(calls) <= limit
    assert len(budgets) == 1  # only the root run made a ledger
    b = budgets[0]
    assert b.spent_tokens == res.usage.total.total_tokens and (b.in_flight, b.reserved_tokens) == (0, 0)


def test_failed_sub_calls_give_their_reservation_back(monkeypatch):
    budgets = _capture_budgets(monkeypatch)

    def fn(p):
        if int(p[1:]) < 30:
            raise ProviderUnavailable("HTTP 500")
        return "fine"

    def models():
        root = ScriptedProvider([{"text": cmd("llm_query_batched", prompts=[f"p{i}" for i in range(40)]),
                                  "input_tokens": 10, "output_tokens": 10}, cmd("final", answer="done")])
        return root, FnSub(fn, tokens=(100, 0))

    probe, probe_sub = models()
    RLM(model=probe, sub_model=probe_sub, levels="l1,l4", config=config()).run("q", TEXT)
    hold = [estimate_prompt_tokens(m) + 95 for m in probe.requests]
    # room for the root calls and the 10 sub-calls that succeed; none for 30 leaked reservations of 100
    limit = max(hold[0], 20 + 10 * 100 + hold[1])
    assert limit < 20 + 10 * 100 + hold[1] + 30 * 100
    root, sub = models()
    rlm = RLM(model=root, sub_model=sub, levels="l1,l4", config=config(max_concurrency=4),
              limits={"max_total_tokens": limit, "reserve_output_tokens": 95})
    res = rlm.run("q", TEXT)
    assert res.status == "answered", res.reason
    slots = _variables(res)
    assert slots.count("fine") == 10 and sum(s.startswith("error: HTTP 500") for s in slots) == 30
    b = budgets[-1]
    assert (b.in_flight, b.reserved_tokens) == (0, 0) and b.spent_tokens == res.usage.total.total_tokens


def test_a_failed_root_call_gives_its_reservation_back(monkeypatch):
    budgets = _capture_budgets(monkeypatch)
    res = RLM(model=ScriptedProvider([]), config=config(), limits={"max_total_tokens": 100_000}).run("q", TEXT)
    assert res.status == "failed" and "exhausted" in res.reason
    assert (budgets[0].in_flight, budgets[0].reserved_tokens, budgets[0].spent_tokens) == (0, 0, 0)


# ---------------------------------------------------------------------- the live counter
def test_live_counter_includes_sub_calls_and_their_cost():
    sub = FnSub(lambda p: "an answer of five words", delay=0.01)
    cfg = config(max_concurrency=4)
    cfg.prices["fn/sub"] = (1000.0, 1000.0)
    rlm = RLM(model=ScriptedProvider([cmd("llm_map", prompt="x", chunk_size=10), cmd("final", answer="ok")]),
              sub_model=sub, levels="l1,l4", config=cfg)
    res = rlm.run("q", TEXT)
    assert res.status == "answered"
    prog = Progress(quiet=True)
    for ev in res.events:
        prog.on_event(ev)
    n = len(sub.prompts)
    assert n > 5 and prog.sub_calls == n
    assert prog.tokens == res.usage.total.total_tokens  # root and sub-calls
    line = prog.line()
    assert f"{n} sub-calls" in line and f"{res.usage.total.total_tokens:,} tokens" in line
    assert format_cost(res.usage.total.cost_usd) in line and res.usage.total.cost_usd > 0
    # the map reported its progress: a start, an end, and not one event per call
    prog_events = [e.data for e in res.events if e.type == "batch_progress"]
    assert prog_events[0] == {"op": "llm_map", "batch": "b0", "total": n, "done": 0, "failed": 0}
    assert prog_events[-1]["done"] == n and len(prog_events) < n
    assert not prog.batches  # the batch ended


def test_live_counter_shows_a_running_batch_and_unknown_cost():
    prog = Progress(quiet=True)
    prog.on_event(Event("lm_response", {"input_tokens": 1000, "output_tokens": 49, "cost_usd": 0.01}))
    prog.on_event(Event("batch_progress", {"op": "llm_map", "batch": "b0", "done": 37, "total": 1116}))
    prog.on_event(Event("sub_call", {"input_tokens": 100, "output_tokens": 5, "cost_usd": None}))
    line = prog.line()
    assert "llm_map 37/1,116 sub-calls" in line and "1,154 tokens" in line and "cost unknown" in line
    prog.on_event(Event("batch_progress", {"op": "llm_map", "batch": "b0", "done": 1116, "total": 1116}))
    assert "1,116 sub-calls" not in prog.line()


def test_priced_live_counter_shows_dollars():
    prog = Progress(quiet=True)
    prog.on_event(Event("lm_response", {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25}))
    prog.on_event(Event("sub_call", {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.5}, path="0.1"))
    assert "$0.7500" in prog.line() and "1 sub-call ·" in prog.line()


# ---------------------------------------------------------------------- the run store
def test_store_keeps_unknown_cost_and_migrates_an_old_database(tmp_path):
    db = tmp_path / "runs.sqlite"
    old = sqlite3.connect(db)
    old.executescript("""CREATE TABLE usage (run_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL,
        role TEXT NOT NULL, model TEXT, input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, latency_s REAL,
        PRIMARY KEY (run_id, seq));
        INSERT INTO usage VALUES ('old', 0, '0', 'root', 'm', 3, 4, 0.5, 0.1);""")
    old.commit()
    old.close()
    store = SqliteRunStore(db)
    assert store.usage_totals("old")["total"]["cost_usd"] == 0.5  # kept
    store.append(Event("run_start", {"question": "q", "model": "fake/x", "levels": ["l1"]}, run_id="r", seq=0))
    store.append(Event("lm_response", {"input_tokens": 5, "output_tokens": 1, "cost_usd": None, "model": "fake/x"},
                       run_id="r", seq=1))
    store.append(Event("sub_call", {"input_tokens": 5, "output_tokens": 1, "cost_usd": 0.25, "model": "o/m"},
                       run_id="r", seq=2))
    live = store.usage_totals("r")
    assert live["total"]["cost_usd"] is None and live["total"]["cost_unknown_calls"] == 1
    assert live["by_role"]["sub"]["cost_usd"] == 0.25
    usage = UsageReport([Usage("root", "fake/x", 5, 1, 0.1, None), Usage("sub", "o/m", 5, 1, 0.1, 0.25)])
    store.append(Event("run_end", {"status": "answered", "answer": "a", "iterations": 1, "elapsed_s": 1.0,
                                   "usage": usage.to_dict()}, run_id="r", seq=3))
    row = store.get_run("r")
    assert row["cost_usd"] is None and row["usage"]["total"]["cost_unknown_calls"] == 1
    assert _row_cost(store.list_runs()[0]) == "unknown"
    store.close()
