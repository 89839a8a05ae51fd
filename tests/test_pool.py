"""The provider pool: routing, limits, retries, failover, cool-down and probe."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fakeserver import FakeLLMServer

from contextbox.errors import AuthError, ProviderError, ProviderUnavailable, UsageError
from contextbox.providers.base import ProviderConfig, resolve
from contextbox.providers.openai_compat import OpenAIProvider
from contextbox.providers.pool import Pool
from contextbox.types import Completion

MSGS = [{"role": "user", "content": "hello there"}]


def http_pool(*servers: FakeLLMServer, timeout_s: float = 5.0, **cfg) -> Pool:
    """A pool ``fake/m`` over ``servers`` (tiny backoff, short cool-down)."""
    configs = [ProviderConfig("fake", "openai", s.base_url, timeout_s=timeout_s, **cfg) for s in servers]
    pool = Pool("fake/m", [OpenAIProvider(c, "m") for c in configs], configs)
    pool.retry_base_delay = 0.01
    pool.cooldown_s = 0.3
    return pool


class Member:
    """An in-process member that records concurrency and can be told to fail."""

    def __init__(self, name: str, delay: float = 0.0, fail: Exception | None = None, window: int | None = None):
        self.name, self.delay, self.fail, self.context_window = name, delay, fail, window
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def complete(self, messages, **opts):
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            return Completion(f"from {self.name}", 3, 2, model=self.name)
        finally:
            with self._lock:
                self.active -= 1


def member_pool(*members: Member, **cfg) -> Pool:
    configs = [ProviderConfig("p", "openai", f"http://{m.name}", **cfg) for m in members]
    pool = Pool("p/m", list(members), configs)
    pool.retry_base_delay = 0.001
    pool.cooldown_s = 0.2
    return pool


def parallel(fn, n: int, workers: int = 16) -> list:
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda _: fn(), range(n)))


# ---------------------------------------------------------------------- routing and limits
def test_routes_to_least_loaded_endpoint():
    a, b = Member("a", 0.05), Member("b", 0.05)
    pool = member_pool(a, b, max_concurrency=8)
    out = parallel(lambda: pool.complete(MSGS).text, 16)
    assert len(out) == 16 and a.calls + b.calls == 16
    assert 6 <= a.calls <= 10  # spread, not piled on one endpoint


def test_weight_shifts_load():
    a, b = Member("a", 0.03), Member("b", 0.03)
    configs = [ProviderConfig("p", base_url="http://a", weight=3.0, max_concurrency=16),
               ProviderConfig("p", base_url="http://b", weight=1.0, max_concurrency=16)]
    pool = Pool("p/m", [a, b], configs)
    parallel(lambda: pool.complete(MSGS), 40, workers=8)
    assert a.calls > b.calls


def test_per_endpoint_max_concurrency_is_enforced():
    a, b = Member("a", 0.05), Member("b", 0.05)
    pool = member_pool(a, b, max_concurrency=2)
    parallel(lambda: pool.complete(MSGS), 12)
    assert a.max_active <= 2 and b.max_active <= 2
    assert a.calls + b.calls == 12


def test_rpm_limit_routes_elsewhere():
    a, b = Member("a"), Member("b")
    configs = [ProviderConfig("p", base_url="http://a", rpm=1, weight=100.0),
               ProviderConfig("p", base_url="http://b")]
    pool = Pool("p/m", [a, b], configs)
    for _ in range(4):
        pool.complete(MSGS)
    assert a.calls == 1 and b.calls == 3


def test_rpm_limit_waits_when_nothing_else(monkeypatch):
    a = Member("a")
    pool = member_pool(a, rpm=1)
    pool.complete(MSGS)
    with pytest.raises(ProviderUnavailable, match="timed out waiting"):
        pool.complete(MSGS, timeout=0.2)  # the next rpm slot is a minute away
    assert a.calls == 1


def test_context_window_is_the_smallest():
    pool = member_pool(Member("a", window=8000), Member("b", window=4000), Member("c"))
    assert pool.context_window == 4000 and pool.name == "p/m"


# ---------------------------------------------------------------------- faults over real HTTP
@pytest.mark.parametrize("fault", ["500", "502", "malformed", "reset", "429"])
def test_transient_faults_are_retried(fault):
    with FakeLLMServer(replies="ok") as srv:
        srv.add_faults(fault)
        retries = []
        pool = http_pool(srv)
        c = pool.complete(MSGS, on_retry=lambda *a: retries.append(a))
        assert c.text == "ok" and srv.request_count == 2
        assert len(retries) == 1 and retries[0][0] == 1


def test_429_retry_after_is_honoured():
    with FakeLLMServer(replies="ok") as srv:
        srv.add_faults("429:0.3")
        retries = []
        t = time.monotonic()
        c = http_pool(srv).complete(MSGS, on_retry=lambda *a: retries.append(a))
        assert c.text == "ok"
        assert retries[0][1] == pytest.approx(0.3) and time.monotonic() - t >= 0.3
        assert "rate limited" in str(retries[0][2]) and "[fake#0@" in str(retries[0][2])


def test_hang_times_out_then_retries():
    with FakeLLMServer(replies="ok", hang_s=5) as srv:
        srv.add_faults("hang")
        t = time.monotonic()
        c = http_pool(srv, timeout_s=0.4).complete(MSGS)
        assert c.text == "ok" and time.monotonic() - t < 3.0


def test_failover_when_one_endpoint_always_500():
    with FakeLLMServer(replies="bad") as bad, FakeLLMServer(replies="good") as good:
        bad.fail_all(500)
        events = []
        pool = http_pool(bad, good, max_retries=1, max_concurrency=8)
        out = parallel(lambda: pool.complete(MSGS, on_failover=lambda *a: events.append(a)).text, 24, workers=8)
        assert out == ["good"] * 24
        assert events and all(e[0].startswith("fake#0") and e[1].startswith("fake#1") for e in events)
        # the broken endpoint was taken out: it saw far fewer requests than the batch
        assert bad.request_count < 12
        assert pool.stats()[0]["cooling"] or pool.stats()[0]["failures_in_row"] >= 3


def test_cooldown_then_probe_brings_endpoint_back():
    a, b = Member("a", fail=ProviderUnavailable("down")), Member("b")
    pool = member_pool(a, b, max_retries=0)
    for _ in range(6):
        assert pool.complete(MSGS).text == "from b"
    assert pool.stats()[0]["cooling"]
    calls_when_cooled = a.calls
    for _ in range(5):
        pool.complete(MSGS)
    assert a.calls == calls_when_cooled  # not touched while cooling
    a.fail = None
    time.sleep(0.25)
    texts = [pool.complete(MSGS).text for _ in range(6)]
    assert "from a" in texts  # probed and back in rotation
    assert pool.stats()[0]["failures_in_row"] == 0


def test_failed_probe_doubles_cooldown():
    a, b = Member("a", fail=ProviderUnavailable("down")), Member("b")
    pool = member_pool(a, b, max_retries=0)
    for _ in range(5):
        pool.complete(MSGS)
    ep = pool.endpoints[0]
    first = ep.cooldown
    time.sleep(0.25)
    for _ in range(3):
        pool.complete(MSGS)
    assert ep.cooldown == pytest.approx(first * 2)


def test_all_endpoints_failing_raises_last_error_after_bounded_attempts():
    a, b = Member("a", fail=ProviderUnavailable("a down")), Member("b", fail=ProviderUnavailable("b down"))
    pool = member_pool(a, b, max_retries=2)
    with pytest.raises(ProviderUnavailable, match="down"):
        pool.complete(MSGS)
    assert a.calls + b.calls <= 6


def test_non_retryable_error_is_not_retried_or_failed_over():
    a, b = Member("a", fail=ProviderError("bad request", status=400)), Member("b", fail=ProviderError("x"))
    pool = member_pool(a, b)
    with pytest.raises(ProviderError, match="bad request|x"):
        pool.complete(MSGS)
    assert a.calls + b.calls == 1


def test_auth_error_fails_over_to_another_key():
    a, b = Member("a", fail=AuthError("bad key")), Member("b")
    configs = [ProviderConfig("p", base_url="http://a", weight=10.0), ProviderConfig("p", base_url="http://b")]
    pool = Pool("p/m", [a, b], configs)
    assert pool.complete(MSGS).text == "from b" and a.calls == 1


def test_member_retries_are_switched_off_the_pool_retries():
    with FakeLLMServer(replies="ok") as srv:
        srv.add_faults("500", "500")
        pool = http_pool(srv, max_retries=3)
        assert pool.endpoints[0].provider.config.max_retries == 0
        assert pool.complete(MSGS).text == "ok" and srv.request_count == 3


# ---------------------------------------------------------------------- roles and resolve
def test_roles_make_views_that_share_state():
    cfgs = [ProviderConfig("p", base_url="http://r", role="root"), ProviderConfig("p", base_url="http://s", role="sub"),
            ProviderConfig("p", base_url="http://b", role="both")]
    members = [Member("r"), Member("s"), Member("b")]
    pool = Pool("p/m", members, cfgs)
    root, sub = pool.for_role("root"), pool.for_role("sub")
    assert [e.config.base_url for e in root.endpoints] == ["http://r", "http://b"]
    assert [e.config.base_url for e in sub.endpoints] == ["http://s", "http://b"]
    assert root.endpoints[1] is sub.endpoints[1]  # one endpoint, one load counter
    only_sub = Pool("p/m", [Member("s")], [ProviderConfig("p", role="sub")])
    with pytest.raises(UsageError, match="no endpoint with role 'root'"):
        only_sub.for_role("root")


def test_resolve_makes_a_pool_and_rlm_splits_roles():
    from contextbox import RLM, Config

    cfg = Config()
    cfg.providers = [ProviderConfig("fleet", base_url="http://127.0.0.1:9/v1", role="root"),
                     ProviderConfig("fleet", base_url="http://127.0.0.1:8/v1", role="sub"),
                     ProviderConfig("fleet", base_url="http://127.0.0.1:7/v1", role="sub")]
    p = resolve("fleet/model-x", cfg.providers)
    assert isinstance(p, Pool) and len(p.endpoints) == 3 and p.name == "fleet/model-x"
    rlm = RLM(model="fleet/model-x", config=cfg)
    assert len(rlm.root.endpoints) == 1 and len(rlm.sub.endpoints) == 2


def test_root_pool_failover_is_an_event_in_the_run():
    from helpers import cmd

    from contextbox import RLM, Config

    with FakeLLMServer(replies=[cmd("find", text="x"), cmd("final", answer="done")]) as good, \
            FakeLLMServer() as bad:
        bad.fail_all(503)
        configs = [ProviderConfig("fleet", base_url=bad.base_url, weight=100.0, max_retries=1),
                   ProviderConfig("fleet", base_url=good.base_url)]
        pool = Pool("fleet/m", [OpenAIProvider(c, "m") for c in configs], configs)
        pool.retry_base_delay = 0.01
        res = RLM(model=pool, config=Config()).run("q", "x marks the spot")
        assert res.status == "answered" and res.answer == "done"
        types = [e.type for e in res.events]
        assert "retry" in types and "failover" in types
        fo = next(e for e in res.events if e.type == "failover")
        assert fo.data["role"] == "root" and fo.data["from"].startswith("fleet#0") and "HTTP 503" in fo.data["error"]
