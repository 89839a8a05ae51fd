"""``rlm batch --engine ray`` and the cluster-wide limits, on a local Ray cluster started here (2 CPUs, loopback)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import contextbox
from contextbox.batch import BatchRunner, LocalExecutor, load_tasks
from contextbox.config import Config
from contextbox.errors import ProviderUnavailable
from contextbox.providers.limits import EndpointLimits, install_limiter

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'contextbox[ray]')")

from contextbox import ray_engine  # noqa: E402

SRC = str(Path(contextbox.__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, namespace=ray_engine.NAMESPACE, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": SRC}})
    yield ray
    ray.shutdown()


def turns(n: int):
    def reply(body: dict) -> str:
        done = sum(m.get("role") == "assistant" for m in body.get("messages", []))
        return json.dumps({"op": "final", "answer": f"n={done}"} if done >= n - 1 else {"op": "count", "pattern": "b"})
    return reply


def setup(tmp_path: Path, fake, n: int, **limits) -> tuple[Config, list]:
    extra = "".join(f"{k} = {v}\n" for k, v in limits.items())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'model = "fake/m"\n[[providers]]\nname = "fake"\nbase_url = "{fake.base_url}"\n'
                   f'max_retries = 0\n{extra}')
    with (tmp_path / "t.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"t{i}", "question": f"question t{i}?", "context": "shared context ab"}) + "\n")
    return Config.load(cfg, runs_dir=str(tmp_path / "runs")), load_tasks(tmp_path / "t.jsonl")


def test_ray_batch_gives_the_local_results_within_the_concurrency_limit(cluster, tmp_path, fake_llm):
    fake_llm.replies = turns(2)
    fake_llm.latency = 0.1
    config, tasks = setup(tmp_path, fake_llm, 16, max_concurrency=3)
    old = install_limiter(None)
    try:
        local = BatchRunner(tasks, tmp_path / "local.jsonl", LocalExecutor(config, None, 6)).run()
    finally:
        install_limiter(old)
    assert local.done == 16 and fake_llm.max_in_flight == 3
    fake_llm.reset()
    from contextbox.stores.sqlite import SqliteRunStore

    store = SqliteRunStore(tmp_path / "runs.sqlite")
    ex = ray_engine.RayExecutor(config, store, 8, actors=2)
    try:
        stats = BatchRunner(tasks, tmp_path / "ray.jsonl", ex).run()
        infos = ex.actor_info()
    finally:
        ex.close()
    assert stats.done == 16 and stats.failed == 0
    # 8 runs on two worker processes, yet the endpoint never saw more than 3 calls at once
    assert fake_llm.max_in_flight == 3
    assert len({i["pid"] for i in infos}) == 2 and all(i["pid"] != os.getpid() for i in infos)
    # the one inline context went to the object store once; each worker process fetched it once
    assert sum(i["context_fetches"] for i in infos) <= 2
    lines = {x["id"]: x for x in map(json.loads, (tmp_path / "ray.jsonl").read_text().splitlines())}
    ref = {x["id"]: x for x in map(json.loads, (tmp_path / "local.jsonl").read_text().splitlines())}
    assert {k: (v["answer"], v["status"], v["iterations"]) for k, v in lines.items()} == \
        {k: (v["answer"], v["status"], v["iterations"]) for k, v in ref.items()}
    # every Ray run's events are in the driver's run store
    assert all(store.get_run(x["run_id"])["status"] == "answered" for x in lines.values())
    store.close()


def test_permits_of_a_killed_worker_come_back(cluster):
    b = ray_engine.broker()
    lim = EndpointLimits(max_concurrency=1)

    @ray.remote(num_cpus=0)
    class Holder:
        def take(self):
            from contextbox.ray_engine import broker

            return ray.get(broker().acquire.remote("doomed", "ep-dead", (1, None, None), 0, None))

    h = Holder.remote()
    pid, err = ray.get(h.take.remote())
    assert pid is not None and err is None
    ray.kill(h)
    # a live process waits for the permit; the dead holder's lease (15 s by default) is cut short here
    ray.get(b.acquire.remote("probe", "ep-other", (None, None, None), 0, None))
    got, err = ray.get(b.acquire.remote("alive", "ep-dead", (lim.max_concurrency, None, None), 0, 0.3))
    assert got is None and "timed out" in err  # still held
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        got, err = ray.get(b.acquire.remote("alive", "ep-dead", (1, None, None), 0, 2.0))
        if got is not None:
            break
    assert got is not None and time.monotonic() - t0 < 30  # once the lease ran out


def test_llm_query_batched_fans_out_to_ray_in_order_with_the_same_usage(cluster, tmp_path, fake_llm):
    """``[delegation] engine = "ray"``: the sub-calls run on Ray actors; answers keep input order and the
    run's usage equals what the server counted."""
    from contextbox.engine import RLM
    from contextbox.providers.base import ProviderConfig

    def echo(body: dict) -> str:
        return "echo " + body["messages"][-1]["content"].split()[-1]

    fake_llm.replies = echo
    fake_llm.latency = 0.05
    prompts = [f"say w{i}" for i in range(12)]
    script = tmp_path / "root.json"
    script.write_text(json.dumps([json.dumps({"op": "llm_query_batched", "prompts": prompts}),
                                  json.dumps({"op": "final", "answer": "done"})]))
    cfg = Config()
    cfg.providers = [ProviderConfig("fake", base_url=fake_llm.base_url, max_retries=0, max_concurrency=4)]
    cfg.delegation.engine = "ray"
    calls_before = sum(i["calls"] for i in ray.get([a.info.remote() for a in ray_engine.sub_actors()]))
    rlm = RLM(model=f"scripted:{script}", sub_model="fake/m", levels="l1,l4", config=cfg)
    assert isinstance(rlm.sub, ray_engine.RaySubProvider)
    res = rlm.run("q", "some context")
    out = next(e.data["output"] for e in res.events if e.type == "action_end" and e.data["op"] == "llm_query_batched")
    answers = [ln.split("] ", 1)[1] for ln in out.splitlines() if ln.startswith("[")]
    assert answers == [f"echo w{i}" for i in range(12)]
    sub = res.usage.to_dict()["by_role"]["sub"]
    assert sub["calls"] == 12 == fake_llm.request_count
    assert sub["input_tokens"] == fake_llm.prompt_tokens_total
    assert sub["output_tokens"] == fake_llm.completion_tokens_total
    calls_after = sum(i["calls"] for i in ray.get([a.info.remote() for a in ray_engine.sub_actors()]))
    assert calls_after - calls_before == 12  # every sub-call ran on a Ray actor
    assert fake_llm.max_in_flight <= 4  # under the cluster-wide limit


def test_ray_batch_budget_is_one_ledger_across_workers(cluster, tmp_path, fake_llm):
    fake_llm.replies = turns(2)
    config, tasks = setup(tmp_path, fake_llm, 24, max_concurrency=8)
    ex = ray_engine.RayExecutor(config, None, 6, actors=2)
    try:
        ledger = ex.ledger(6000, None)
        stats = BatchRunner(tasks, tmp_path / "out.jsonl", ex, ledger=ledger).run()
        snap = ledger.snapshot()
    finally:
        ex.close()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    used = sum((x["usage"] or {}).get("total_tokens", 0) for x in lines)
    assert used == snap["spent_tokens"] <= 6000  # every call of every worker reserved from the one ledger
    assert stats.not_started > 0 and "batch budget" in (stats.stop_reason or "")
    assert snap["in_flight"] == 0 and snap["reserved_tokens"] == 0


def test_cli_batch_engine_ray_matches_local(cluster, tmp_path, fake_llm, capsys):
    """``rlm batch --engine ray`` (joining the cluster this test started) writes the lines the local engine writes."""
    from contextbox.cli import main

    fake_llm.replies = turns(3)
    setup(tmp_path, fake_llm, 10, max_concurrency=4)
    common = ["--config", str(tmp_path / "c.toml"), "batch", str(tmp_path / "t.jsonl"), "--workers", "4",
              "--runs-dir", str(tmp_path / "runs"), "-q"]
    old = install_limiter(None)
    try:
        assert main(common + ["--out", str(tmp_path / "local.jsonl")]) == 0
    finally:
        install_limiter(old)
    fake_llm.reset()
    assert main(common + ["--out", str(tmp_path / "ray.jsonl"), "--engine", "ray"]) == 0
    assert fake_llm.max_in_flight <= 4 and fake_llm.request_count == 30

    def key(name: str) -> dict:
        lines = map(json.loads, (tmp_path / name).read_text().splitlines())
        return {x["id"]: (x["answer"], x["status"], x["iterations"], x["usage"]["calls"]) for x in lines}

    assert key("ray.jsonl") == key("local.jsonl") and len(key("ray.jsonl")) == 10
    assert all(v == ("n=2", "answered", 3, 3) for v in key("ray.jsonl").values())


def test_idle_permits_are_reused_in_process_then_given_back(cluster):
    """A ``max_concurrency``-only permit stays with its process after the call for ``linger_s``:
    the next call there takes it with no broker round trip; the broker does not give it to
    anyone else meanwhile; after ``linger_s`` it goes back. An rpm endpoint's permit always goes back."""
    b = ray_engine.broker()
    lim = ray_engine.RayLimiter(b, linger_s=30.0)  # swept by hand below
    other = ray_engine.RayLimiter(b, linger_s=0)
    two = EndpointLimits(2, None, None)
    try:
        p1, p2 = lim.acquire("ep-linger", two), lim.acquire("ep-linger", two)
        lim.release(p1)
        lim.release(p2)
        with pytest.raises(ProviderUnavailable):
            other.acquire("ep-linger", two, deadline=time.monotonic() + 0.3)  # both still held by lim
        before = lim.stats()
        p3 = lim.acquire("ep-linger", two)
        assert p3 in (p1, p2) and lim.stats()["reused"] == before["reused"] + 1
        assert lim.stats()["acquired"] == before["acquired"]  # no broker call
        lim.release(p3)
        assert lim.sweep(now=time.monotonic() + 31) == 2
        q1 = other.acquire("ep-linger", two, deadline=time.monotonic() + 5)
        q2 = other.acquire("ep-linger", two, deadline=time.monotonic() + 5)  # both came back
        other.release(q1)
        other.release(q2)
        rpm = EndpointLimits(1, 1000, None)
        r = lim.acquire("ep-linger-rpm", rpm)
        lim.release(r)
        assert lim.stats()["idle"] == 0  # went straight back: the broker counts every call
        r2 = other.acquire("ep-linger-rpm", rpm, deadline=time.monotonic() + 5)
        other.release(r2)
    finally:
        lim.stop()
        other.stop()


def test_actors_prepare_each_model_once(cluster, tmp_path, fake_llm):
    config, tasks = setup(tmp_path, fake_llm, 4, max_concurrency=4)
    tasks[1].model = "nosuchprovider/x"
    ex = ray_engine.RayExecutor(config, None, 4, actors=2)
    try:
        ex.prepare(tasks)
        assert len(ex.actors) == 2 and fake_llm.request_count == 0
        keys = sorted(ex._warm, key=str)
        assert keys == sorted([(None, None, None), ("nosuchprovider/x", None, None)], key=str)
        assert ray.get([a.prepare.remote([(None, None, None)]) for a in ex.actors]) == [1, 1]
    finally:
        ex.close()


# ---------------------------------------------------------------------- rlm serve --engine ray
def test_server_runs_on_ray_actors_and_streams_every_event(cluster, tmp_path, fake_llm):
    """``rlm serve --engine ray``: runs go to the batch executor's actors; each event comes back as it
    happens, lands in the store and reaches SSE whole; a cancel reaches the actor; limits hold."""
    import asyncio

    import httpx

    from contextbox.server import create_app

    fake_llm.replies = turns(3)
    fake_llm.latency = 0.05
    config, _ = setup(tmp_path, fake_llm, 0, max_concurrency=3)
    config.server.allowed_hosts = ["test"]
    ex = ray_engine.RayExecutor(config, None, 4, actors=2)
    app = create_app(config, executor=ex, max_concurrent_runs=4)
    store = app.state.store

    def sse(text: str) -> list[dict]:
        return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]

    async def main() -> tuple[list, dict]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     timeout=60) as c:
            async def one(i: int) -> tuple[str, list[dict]]:
                body = {"question": f"q{i}: how many b?", "context": f"abc {i}\nbb"}
                r = await c.post("/v1/runs", json=body)
                assert r.status_code == 202, r.text
                rid = r.json()["id"]
                async with c.stream("GET", f"/v1/runs/{rid}/events") as s:
                    return rid, sse("".join([t async for t in s.aiter_text()]))

            done = await asyncio.gather(*(one(i) for i in range(8)))
            fake_llm.latency = 2.0  # a run stuck in its first call, then cancelled
            r = await c.post("/v1/runs", json={"question": "slow?", "context": "abc"})
            rid = r.json()["id"]
            while not fake_llm.in_flight:
                await asyncio.sleep(0.05)
            assert (await c.post(f"/v1/runs/{rid}/cancel")).status_code == 202
            t0 = time.monotonic()
            while (row := (await c.get(f"/v1/runs/{rid}")).json())["active"] and time.monotonic() - t0 < 20:
                await asyncio.sleep(0.05)
            return done, row

    try:
        done, cancelled = asyncio.run(main())
        streamed = sum(i["streamed"] for i in ex.actor_info())
    finally:
        app.state.manager.shutdown(5)
        ex.close()
    for rid, events in done:
        stored = store.events(rid)
        assert [e["seq"] for e in events] == [e.seq for e in stored] == list(range(len(stored))), rid
        assert {e["run_id"] for e in events} == {rid}
        assert events[0]["type"] == "run_start" and events[-1]["type"] == "run_end"
        assert events[-1]["data"]["status"] == "answered" and events[-1]["data"]["answer"] == "n=2"
        assert sum(e["type"] == "lm_response" for e in events) == 3
        assert store.get_run(rid)["status"] == "answered"
    assert streamed == 9  # every run ran on a Ray actor
    assert cancelled["status"] == "cancelled"
    assert fake_llm.max_in_flight <= 3
    store.close()
