"""The HTTP server: the real app through an ASGI client, and through a real uvicorn on 127.0.0.1.

Also: SSE resume with Last-Event-ID, the official ``openai`` client against
/v1/chat/completions, 50 concurrent runs, and a server killed mid-run and started again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakeserver import FakeLLMServer
from server_helpers import (
    CONTEXT,
    RLM_BIN,
    LiveServer,
    RlmServe,
    client,
    close_apps,
    cmd,
    fake_config,
    make_app,
    parse_sse,
    server_env,
    slow_finds,
    wait_done,
    write_script,
)

from contextbox.config import Config
from contextbox.stores.sqlite import SqliteRunStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    e = server_env(tmp_path)
    yield e
    close_apps(e)


# ---------------------------------------------------------------------- the API through ASGI
async def test_run_lifecycle_status_usage_timings(env):
    app = make_app(env)
    async with client(app) as c:
        assert (await c.get("/health")).json()["status"] == "ok"
        r = await c.post("/v1/runs", json={"question": "what is the key?", "context": CONTEXT, "model": env["model"],
                                           "limits": {"max_iterations": 5}})
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        run = await wait_done(c, rid)
        assert run["status"] == "answered" and run["answer"] == "42" and run["iterations"] == 2
        assert run["usage"]["total"]["total_tokens"] > 0 and "root" in run["usage"]["by_role"]
        t = run["timings"]
        assert t["created"] <= t["started"] <= t["finished"] and t["elapsed_s"] >= 0
        ev = parse_sse((await c.get(f"/v1/runs/{rid}/events")).text)
        assert [e["seq"] for e in ev] == list(range(len(ev))) == [int(e["_id"]) for e in ev]
        assert ev[0]["type"] == "run_start" and ev[-1]["type"] == "run_end"
        assert run["events"] == len(ev)
        lines = (await c.get(f"/v1/runs/{rid}/export")).text.splitlines()
        assert [json.loads(x)["seq"] for x in lines] == list(range(len(ev)))


async def test_sse_resume_with_last_event_id_and_after(env):
    app = make_app(env)
    async with client(app) as c:
        rid = (await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": env["model"]})).json()["id"]
        await wait_done(c, rid)
        full = parse_sse((await c.get(f"/v1/runs/{rid}/events")).text)
        part = parse_sse((await c.get(f"/v1/runs/{rid}/events", headers={"Last-Event-ID": "4"})).text)
        assert [e["seq"] for e in part] == [e["seq"] for e in full][5:]
        assert parse_sse((await c.get(f"/v1/runs/{rid}/events?after=2")).text) == full[3:]
        assert (await c.get(f"/v1/runs/{rid}/events", headers={"Last-Event-ID": "x"})).status_code == 400
        assert (await c.get("/v1/runs/nope/events")).status_code == 404


async def test_sse_of_a_delegated_run_goes_past_the_child_run_end(env):
    """A child run's ``run_end`` (path 0.0) is not the end of the stream: only the root's is."""
    script = env["root"] / "delegate.json"
    script.write_text(json.dumps([cmd("rlm_query", prompt="what is the key?"),  # the root delegates
                                  cmd("find", text="key"), cmd("final", answer="key 42"),  # the child
                                  cmd("final", answer="42")]))  # the root again
    app = make_app(env)
    async with client(app) as c:
        r = await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": f"scripted:{script}",
                                           "levels": "l1,l4"})
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        live = asyncio.create_task(c.get(f"/v1/runs/{rid}/events"))  # subscribed while the run goes on
        run = await wait_done(c, rid)
        assert run["status"] == "answered" and run["answer"] == "42"
        for ev in (parse_sse((await live).text), parse_sse((await c.get(f"/v1/runs/{rid}/events")).text)):
            ends = [(e["path"], e["data"]["status"]) for e in ev if e["type"] == "run_end"]
            assert ends == [("0.0", "answered"), ("0", "answered")]
            assert ev[-1]["type"] == "run_end" and ev[-1]["path"] == "0"
            assert [e["seq"] for e in ev] == list(range(run["events"]))
            assert any(e["type"] == "final" and e["path"] == "0" for e in ev)


async def test_list_paging_and_unknown_run(env):
    app = make_app(env)
    async with client(app) as c:
        ids = []
        for i in range(3):
            r = await c.post("/v1/runs", json={"question": f"q{i}", "context": CONTEXT, "model": env["model"]})
            ids.append(r.json()["id"])
            await wait_done(c, ids[-1])
        p1 = (await c.get("/v1/runs?limit=2")).json()
        assert p1["total"] == 3 and len(p1["runs"]) == 2 and p1["next_offset"] == 2
        p2 = (await c.get("/v1/runs?limit=2&offset=2")).json()
        assert len(p2["runs"]) == 1 and p2["next_offset"] is None
        assert {r["id"] for r in p1["runs"] + p2["runs"]} == set(ids)
        assert (await c.get("/v1/runs/unknown")).status_code == 404


async def test_multipart_upload_and_size_limit(env):
    app = make_app(env, max_upload_mb=0.01)  # 10 kB
    async with client(app) as c:
        r = await c.post("/v1/runs", data={"question": "key?", "model": env["model"], "limits": '{"max_iterations": 4}'},
                         files={"file": ("notes.txt", CONTEXT.encode(), "text/plain")})
        assert r.status_code == 202, r.text
        run = await wait_done(c, r.json()["id"])
        assert run["answer"] == "42" and run["meta"]["filename"] == "notes.txt"
        big = b"x" * 20_000
        r = await c.post("/v1/runs", data={"question": "q", "model": env["model"]}, files={"file": ("big.txt", big)})
        assert r.status_code == 413 and "too large" in r.json()["detail"]
        r = await c.post("/v1/runs", json={"question": "q", "context": "y" * 20_000, "model": env["model"]})
        assert r.status_code == 413

        async def chunks():  # no Content-Length: the limit is found while reading
            for _ in range(5):
                yield b"z" * 5000

        r = await c.post("/v1/runs", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413


async def test_bad_requests(env):
    app = make_app(env)
    async with client(app) as c:
        async def post(body):
            return await c.post("/v1/runs", json=body)

        assert (await post({"question": "q", "model": env["model"]})).status_code == 400  # no context
        r = await post({"question": "q", "context": "a", "sample": "detective", "model": env["model"]})
        assert r.status_code == 400 and "exactly one" in r.json()["detail"]
        assert (await post({"question": "", "context": "a", "model": env["model"]})).status_code == 400
        r = await post({"question": "q", "context": "a", "model": env["model"], "levels": "l9"})
        assert r.status_code == 400 and "level" in r.json()["detail"]
        r = await post({"question": "q", "context": "a", "model": env["model"], "limits": {"max_iterashuns": 3}})
        assert r.status_code == 400 and "max_iterashuns" in r.json()["detail"]
        assert (await post({"question": "q", "context": "a", "model": "nosuch"})).status_code == 400
        assert (await post({"question": "q", "sample": "../etc/passwd", "model": env["model"]})).status_code == 404
        assert (await c.post("/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"})
                ).status_code == 400


async def test_context_paths_stay_inside_roots(env, tmp_path):
    root, secret = env["root"], env["secret"]
    (root / "link.txt").symlink_to(secret)
    (root / "dirlink").symlink_to(tmp_path)
    sub = root / "sub"
    sub.mkdir()
    (sub / "ok.txt").write_text("fine\n")
    leaky = root / "leaky"
    leaky.mkdir()
    (leaky / "a.txt").write_text("a\n")
    (leaky / "out.txt").symlink_to(secret)
    app = make_app(env)
    async with client(app) as c:
        async def run_path(p: str) -> httpx.Response:
            return await c.post("/v1/runs", json={"question": "q", "context_path": p, "model": env["model"]})

        for bad in ("../secret.txt", "sub/../../secret.txt", str(secret), "/etc/passwd", "link.txt",
                    "dirlink/secret.txt", "leaky", str(root) + "/../secret.txt"):
            r = await run_path(bad)
            assert r.status_code == 403, (bad, r.text)
        assert (await run_path("a\x00b")).status_code == 400
        assert (await run_path("")).status_code == 400
        assert (await run_path("missing.txt")).status_code == 404
        for good in ("doc.txt", str(root / "doc.txt"), "sub", "sub/./ok.txt"):
            r = await run_path(good)
            assert r.status_code == 202, (good, r.text)
            await wait_done(c, r.json()["id"])
        # a scripted model file obeys the roots too
        outside = write_script(tmp_path / "outside.json")
        r = await c.post("/v1/runs", json={"question": "q", "context": "a", "model": f"scripted:{outside}"})
        assert r.status_code == 403
    env2 = dict(env)
    env2["config"] = Config()
    env2["config"].runs_dir = tmp_path / "runs2"
    env2["config"].server.allowed_hosts = ["test"]
    app2 = make_app(env2)
    async with client(app2) as c:
        r = await c.post("/v1/runs", json={"question": "q", "context_path": str(root / "doc.txt"), "model": "x/y"})
        assert r.status_code == 403 and "no roots" in r.json()["detail"]


async def test_token_required_everywhere_but_health(env):
    app = make_app(env, token="s3cret-token")
    async with client(app) as c:
        page = await c.get("/visualize")
        assert page.status_code == 401 and "<form" in page.text  # a browser gets a form asking for the token
    async with client(app) as c:
        assert (await c.get("/health")).status_code == 200
        for method, path in [("GET", "/v1/runs"), ("GET", "/v1/runs/x"), ("POST", "/v1/runs"),
                             ("GET", "/v1/runs/x/events"), ("POST", "/v1/runs/x/cancel"), ("GET", "/samples"),
                             ("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/visualize"),
                             ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/static/app.js")]:
            r = await c.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            r = await c.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401, (method, path)
        assert "error" in (await c.post("/v1/chat/completions")).json()  # OpenAI-shaped there
    async with client(app, token="s3cret-token") as c:
        assert (await c.get("/v1/runs")).status_code == 200
        assert (await c.get("/docs")).status_code == 200
        r = await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": env["model"]})
        assert r.status_code == 202
        assert (await wait_done(c, r.json()["id"]))["answer"] == "42"
    async with client(app, token="s3cret-token") as c:  # another site's page posting here
        r = await c.post("/v1/runs", json={"question": "q", "context": "a", "model": env["model"]},
                         headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        r = await c.post("/v1/runs", json={"question": "q", "context": "a", "model": env["model"]},
                         headers={"Origin": "http://test"})
        assert r.status_code == 202
    async with client(app) as c:  # the browser way: ?token= once, then a SameSite cookie
        r = await c.get("/visualize?token=s3cret-token")
        assert r.status_code == 303 and "SameSite=Strict" in r.headers["set-cookie"]
        assert (await c.get("/visualize")).status_code == 200
        assert (await c.get("/v1/runs")).status_code == 200


async def test_concurrent_run_limit_queue_429_and_cancel(env):
    with FakeLLMServer(slow_finds(200), latency=0.2) as srv:
        fake_config(env, srv)
        app = make_app(env, max_concurrent_runs=1, max_queued_runs=1)
        async with client(app) as c:
            body = {"question": "q", "context": CONTEXT, "model": "fake/m", "limits": {"max_iterations": 100}}
            r1 = await c.post("/v1/runs", json=body)
            assert r1.status_code == 202 and r1.json()["position"] is None  # started at once
            r2 = await c.post("/v1/runs", json=body)  # waits in the queue
            assert r2.status_code == 202 and r2.json()["position"] == 1
            queued = (await c.get(f"/v1/runs/{r2.json()['id']}")).json()
            assert queued["status"] == "queued" and queued["position"] == 1 and queued["active"]
            r3 = await c.post("/v1/runs", json=body)  # the queue is full
            assert r3.status_code == 429 and "too many runs" in r3.json()["detail"]
            assert "max_queued_runs = 1" in r3.json()["detail"] and r3.headers["retry-after"]
            # a queued run cancelled never starts
            q = r2.json()["id"]
            assert (await c.post(f"/v1/runs/{q}/cancel")).status_code == 202
            run = await wait_done(c, q)
            assert run["status"] == "cancelled" and run["timings"]["started"] is None
            assert (await c.get("/health")).json()["queued_runs"] == 0
            rid = r1.json()["id"]
            assert (await c.post(f"/v1/runs/{rid}/cancel")).status_code == 202
            run = await wait_done(c, rid)
            assert run["status"] == "cancelled"
            assert (await c.post(f"/v1/runs/{rid}/cancel")).status_code == 409
            assert (await c.post("/v1/runs/nope/cancel")).status_code == 404
            assert (await c.post("/v1/runs", json=body | {"limits": {"max_iterations": 1}})).status_code == 202


async def test_samples_and_docs(env):
    app = make_app(env)
    async with client(app) as c:
        names = {s["name"]: s for s in (await c.get("/samples")).json()["samples"]}
        assert {"war-and-peace", "large-logs", "response-times", "detective"} <= set(names)
        logs = (await c.get("/samples/large-logs")).text
        assert logs == (await c.get("/samples/large-logs")).text and logs.count("\n") == 5000
        assert "AuthenticationFailed" in logs
        assert "time_ms=" in (await c.get("/samples/response-times")).text
        assert names["detective"]["available"] and "ASHFORD" in (await c.get("/samples/detective")).text
        assert (await c.get("/samples/nope")).status_code == 404
        r = await c.post("/v1/runs", json={"question": "q", "sample": "large-logs", "model": env["model"]})
        run = await wait_done(c, r.json()["id"])
        assert run["status"] == "answered" and run["meta"]["sample"] == "large-logs"
        spec = (await c.get("/openapi.json")).json()
        assert {"/v1/runs", "/v1/runs/{run_id}/events", "/v1/chat/completions", "/health"} <= set(spec["paths"])
        assert (await c.get("/docs")).status_code == 200
        page = await c.get("/visualize")
        assert page.status_code == 200 and "/static/app.js" in page.text and "cdn" not in page.text.lower()
        assert (await c.get("/static/app.js")).status_code == 200


async def test_chat_completions_shapes_through_asgi(env):
    env["config"].model = env["model"]
    app = make_app(env)
    async with client(app) as c:
        r = await c.post("/v1/chat/completions", json={
            "model": "rlm", "messages": [{"role": "system", "content": CONTEXT}, {"role": "user", "content": "key?"}]})
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["object"] == "chat.completion" and j["choices"][0]["message"]["content"] == "42"
        assert j["choices"][0]["finish_reason"] == "stop" and j["usage"]["total_tokens"] > 0
        run = (await c.get(f"/v1/runs/{j['contextbox']['run_id']}")).json()
        assert run["source"] == "chat" and run["meta"]["context_source"] == "messages"
        r = await c.post("/v1/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await c.post("/v1/chat/completions", json={"model": "rlm", "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 400 and "no context" in r.json()["error"]["message"]
        bad = write_script(env["root"] / "bad.json", finds=0)
        bad.write_text(json.dumps([cmd("find", text="key")]))  # runs out of replies: the run fails
        r = await c.post("/v1/chat/completions", json={"model": f"rlm:scripted:{bad}", "context": CONTEXT,
                                                       "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 502 and "failed" in r.json()["error"]["message"]


# ---------------------------------------------------------------------- a real uvicorn
def test_live_sse_resume_slow_reader_loses_nothing(env):
    """Follow a live run, drop the connection part-way, resume with Last-Event-ID: every event
    once, in order, equal to the store. The reader is slow on purpose."""
    with FakeLLMServer(slow_finds(12), latency=0.05) as srv:
        fake_config(env, srv)
        app = make_app(env)
        with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as c:
            rid = c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": "fake/m",
                                           "limits": {"max_iterations": 20}}).json()["id"]
            got: list[dict[str, Any]] = []
            with c.stream("GET", f"/v1/runs/{rid}/events") as s:
                buf = ""
                for chunk in s.iter_text():
                    buf += chunk
                    *blocks, buf = buf.split("\n\n")
                    got += parse_sse("\n\n".join(blocks))
                    if len(got) >= 7:
                        break  # drop the connection mid-run
            assert c.get(f"/v1/runs/{rid}").json()["status"] == "running", "the run ended too soon to test resume"
            last = got[-1]["_id"]
            with c.stream("GET", f"/v1/runs/{rid}/events", headers={"Last-Event-ID": last}) as s:
                buf = ""
                for chunk in s.iter_text():
                    time.sleep(0.05)  # a slow client
                    buf += chunk
                got += parse_sse(buf)
                buf = ""
            stored = app.state.store.events(rid)
            assert [e["seq"] for e in got] == [e.seq for e in stored] == list(range(len(stored)))
            assert got[-1]["type"] == "run_end" and got[-1]["data"]["status"] == "answered"
            assert [e["type"] for e in got] == [e.type for e in stored]


def test_openai_client_against_chat_completions(env):
    openai = pytest.importorskip("openai", reason="the openai SDK is a dependency of contextbox")
    env["config"].model = env["model"]
    app = make_app(env, token="tok-123")
    with LiveServer(app) as live:
        oc = openai.OpenAI(base_url=live.url + "/v1", api_key="tok-123", max_retries=0)
        r = oc.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "What is the key?"}],
                                       extra_body={"context": CONTEXT})
        assert r.choices[0].message.content == "42" and r.choices[0].finish_reason == "stop"
        assert r.usage.total_tokens > 0 and r.model == "rlm"
        r = oc.chat.completions.create(model=f"rlm:{env['model']}", messages=[
            {"role": "user", "content": CONTEXT}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "What is the key?"}])
        assert r.choices[0].message.content == "42"
        stream = oc.chat.completions.create(model="rlm", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "key?"}],
                                            extra_body={"context_path": "doc.txt"})
        chunks = list(stream)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "42"
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        assert [m.id for m in oc.models.list().data][0] == "rlm"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
                model="rlm", messages=[{"role": "user", "content": "q"}], extra_body={"context": "x"})
        with pytest.raises(openai.NotFoundError):
            oc.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
        with pytest.raises(openai.PermissionDeniedError):
            oc.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"context_path": "../secret.txt"})


def test_load_50_concurrent_runs_lose_nothing(env):
    """50 scripted runs at once, each followed over SSE from its start: all complete, the stream
    of each has every event of the store once, in order."""
    script = write_script(env["root"] / "long.json", answer="done", finds=8)
    app = make_app(env, max_concurrent_runs=50)
    n = 50

    async def main(url: str) -> list[tuple[str, list[dict[str, Any]]]]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
            async def one(i: int) -> tuple[str, list[dict[str, Any]]]:
                r = await c.post("/v1/runs", json={"question": f"q{i}", "context": CONTEXT * (i + 1),
                                                   "model": f"scripted:{script}"})
                assert r.status_code == 202, r.text
                rid = r.json()["id"]
                async with c.stream("GET", f"/v1/runs/{rid}/events") as s:
                    text = "".join([t async for t in s.aiter_text()])
                return rid, parse_sse(text)

            return await asyncio.gather(*(one(i) for i in range(n)))

    with LiveServer(app) as live:
        results = asyncio.run(main(live.url))
        store = app.state.store
        assert len({rid for rid, _ in results}) == n
        for rid, events in results:
            stored = store.events(rid)
            assert [e["seq"] for e in events] == [e.seq for e in stored] == list(range(len(stored))), rid
            assert events[-1]["type"] == "run_end" and events[-1]["data"]["status"] == "answered"
            assert events[-1]["data"]["iterations"] == 9
            run = store.get_run(rid)
            assert run["status"] == "answered" and run["answer"] == "done"
        assert store.count_runs() == n and store.count_runs("answered") == n
        spans = [(store.get_run(rid)["started"], store.get_run(rid)["finished"]) for rid, _ in results]
        edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
        at_once = max(__import__("itertools").accumulate(d for _, d in edges))
        assert at_once >= 10, f"only {at_once} runs overlapped"


def test_restart_marks_interrupted_and_keeps_events(env, tmp_path):
    """Kill the server (SIGKILL) mid-run, start it again: the run is interrupted, its events kept."""
    with FakeLLMServer(slow_finds(1000), latency=0.1) as srv:
        serve = RlmServe(tmp_path, srv, env["root"])
        with serve.running(kill=True) as c:
            rid = c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": "fake/m",
                                           "limits": {"max_iterations": 500}}).json()["id"]
            deadline = time.monotonic() + 20
            while (c.get(f"/v1/runs/{rid}").json()["iterations"] or 0) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            seen = parse_sse(c.get(f"/v1/runs/{rid}/events", params={"follow": "false"}).text)
        assert len(seen) >= 10
        with serve.running() as c:
            run = c.get(f"/v1/runs/{rid}").json()
            assert run["status"] == "interrupted" and "server stopped" in run["reason"]
            events = parse_sse(c.get(f"/v1/runs/{rid}/events").text)
            assert events[:len(seen)] == seen  # everything stored before the kill is there
            assert events[-1]["type"] == "run_end" and events[-1]["data"]["status"] == "interrupted"
            assert [e["seq"] for e in events] == list(range(len(events)))
        store = SqliteRunStore(serve.db)  # `rlm runs` reads the same store
        assert store.get_run(rid)["status"] == "interrupted"
        store.close()
        out = subprocess.run([RLM_BIN, "--config", str(serve.conf), "runs", "--runs-dir", str(serve.db.parent),
                              "list"], capture_output=True, text=True, env=serve.env)
        assert rid in out.stdout and "interrupted" in out.stdout


# ---------------------------------------------------------------------- the job queue
def test_50_concurrent_submissions_with_defaults_all_answered(env):
    """Defaults (4 runs at once): 50 submissions at once are all accepted, queued, run and streamed whole."""
    script = write_script(env["root"] / "q.json", answer="done", finds=3)
    app = make_app(env)
    assert app.state.manager.max_concurrent == 4
    n = 50

    async def main(url: str) -> list[tuple[str, int | None, list[dict[str, Any]]]]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
            async def one(i: int) -> tuple[str, int | None, list[dict[str, Any]]]:
                r = await c.post("/v1/runs", json={"question": f"q{i}", "context": CONTEXT,
                                                   "model": f"scripted:{script}"})
                assert r.status_code == 202, r.text
                rid = r.json()["id"]
                async with c.stream("GET", f"/v1/runs/{rid}/events") as s:
                    text = "".join([t async for t in s.aiter_text()])
                return rid, r.json()["position"], parse_sse(text)

            return await asyncio.gather(*(one(i) for i in range(n)))

    with LiveServer(app) as live:
        results = asyncio.run(main(live.url))
        store = app.state.store
        assert any(pos for _, pos, _ in results)  # some had to wait
        for rid, _, events in results:
            stored = store.events(rid)
            assert [e["seq"] for e in events] == [e.seq for e in stored] == list(range(len(stored))), rid
            assert events[-1]["type"] == "run_end" and events[-1]["data"]["status"] == "answered"
        assert store.count_runs("answered") == n
        spans = [(store.get_run(rid)["started"], store.get_run(rid)["finished"]) for rid, _, _ in results]
        edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
        assert max(__import__("itertools").accumulate(d for _, d in edges)) <= 4  # never more than the cap


async def test_queued_runs_start_in_order_with_positions(env):
    with FakeLLMServer(slow_finds(1000), latency=0.05) as srv:
        fake_config(env, srv)
        app = make_app(env, max_concurrent_runs=1)
        async with client(app) as c:
            body = {"question": "q", "context": CONTEXT, "model": "fake/m", "limits": {"max_iterations": 3}}
            ids, positions = [], []
            for _ in range(4):
                r = (await c.post("/v1/runs", json=body)).json()
                ids.append(r["id"])
                positions.append(r["position"])
            assert positions == [None, 1, 2, 3]
            assert [(await c.get(f"/v1/runs/{i}")).json()["position"] for i in ids[1:]] == [1, 2, 3]
            runs = [await wait_done(c, i, timeout=60) for i in ids]
            starts = [r["timings"]["started"] for r in runs]
            ends = [r["timings"]["finished"] for r in runs]
            assert starts == sorted(starts)
            assert all(ends[i] <= starts[i + 1] for i in range(3))  # one at a time, in order


def test_queued_runs_survive_a_restart(env, tmp_path):
    """SIGKILL with one run in flight and two queued: after the restart the queued ones run and answer."""
    with FakeLLMServer(slow_finds(1000), latency=0.1) as srv:
        serve = RlmServe(tmp_path, srv, env["root"], "max_concurrent_runs = 1\n")
        with serve.running(kill=True) as c:
            first = c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": "fake/m",
                                             "limits": {"max_iterations": 500}}).json()["id"]
            queued = [c.post("/v1/runs", json={"question": f"q{i}", "context_path": "doc.txt",
                                               "model": "fake/m", "limits": {"max_iterations": 2}}).json()
                      for i in range(2)]
            assert [q["position"] for q in queued] == [1, 2]
        with serve.running() as c:
            assert c.get(f"/v1/runs/{first}").json()["status"] == "interrupted"
            for q in queued:
                events = parse_sse(c.get(f"/v1/runs/{q['id']}/events").text)
                assert events[-1]["type"] == "run_end", events[-1]
                assert events[-1]["data"]["status"] == "max_iterations"  # it ran its 2 turns
                assert events[0]["type"] == "run_start" and events[0]["data"]["question"].startswith("q")
        store = SqliteRunStore(serve.db)
        assert store.queued_requests() == []
        store.close()


async def test_every_demo_is_a_sample_and_starts_a_run(env, monkeypatch):
    from contextbox.demos import DEMOS
    from contextbox.demos.logs import generate

    monkeypatch.setenv("XDG_CACHE_HOME", str(env["tmp"] / "cache"))
    app = make_app(env)
    async with client(app) as c:
        samples = (await c.get("/samples")).json()["samples"]
        by_demo = {s["demo"]: s for s in samples if s["demo"]}
        assert set(by_demo) == set(DEMOS)
        assert all(s["command"] == f"rlm demo {d}" and s["question"] for d, s in by_demo.items())
        assert by_demo["native"]["available"] and by_demo["native"]["chars"] is None  # listing generates nothing
        assert not (env["tmp"] / "cache").exists()
        assert (await c.get("/samples/logs")).text == generate(5000, 7)
        for name, word in (("logs", "ERROR"), ("family-trees", "Bolkonski")):
            model = env["root"] / f"{name}.json"
            model.write_text(json.dumps([cmd("count", pattern=word), cmd("final", answer="seen")]))
            r = await c.post("/v1/runs", json={"question": by_demo[name]["question"], "sample": name,
                                               "model": f"scripted:{model}", "levels": "l1"})
            assert r.status_code == 202, r.text
            run = await wait_done(c, r.json()["id"])
            assert run["status"] == "answered", run
            assert run["meta"]["sample"] == name
