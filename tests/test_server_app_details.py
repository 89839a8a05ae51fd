"""The HTTP API in detail: the fields a client reads (run view, health, list), the messages of refused
requests, and the SSE stream's options. Through the real app and an ASGI client, as tests/test_server.py.

Written against the survivors of `tests/mutation.py --modules server/app.py` (docs/mutation.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import CONTEXT, client, close_apps, make_app, parse_sse, server_env, wait_done, write_script

from contextbox.server import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    e = server_env(tmp_path)
    yield e
    close_apps(e)


async def test_health_says_the_server_s_limits_and_whether_it_needs_a_token(env):
    async with client(make_app(env, max_concurrent_runs=3, max_queued_runs=7)) as c:
        h = (await c.get("/health")).json()
        assert {k: h[k] for k in ("status", "active_runs", "queued_runs", "max_concurrent_runs", "max_queued_runs",
                                  "auth")} == {"status": "ok", "active_runs": 0, "queued_runs": 0,
                                               "max_concurrent_runs": 3, "max_queued_runs": 7, "auth": False}
        assert isinstance(h["version"], str) and h["version"]
    async with client(make_app(env, token="tok"), token="tok") as c:
        assert (await c.get("/health")).json()["auth"] is True
        r = await c.get("/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/visualize"


async def test_a_finished_run_s_view_holds_what_the_store_recorded(env):
    async with client(make_app(env)) as c:
        r = await c.post("/v1/runs", json={"question": "what is the key?", "context": CONTEXT, "model": env["model"],
                                           "levels": "l1", "limits": {"max_iterations": 5}})
        assert r.status_code == 202 and r.json() == {"id": r.json()["id"], "status": "queued", "position": None}
        rid = r.json()["id"]
        run = await wait_done(c, rid)
        assert {k: run[k] for k in ("id", "status", "question", "model", "levels", "answer", "reason", "iterations",
                                    "source", "active", "position")} == {
            "id": rid, "status": "answered", "question": "what is the key?", "model": env["model"], "levels": ["l1"],
            "answer": "42", "reason": None, "iterations": 2, "source": "api", "active": False, "position": None}
        assert run["sub_model"] == env["model"] and run["meta"]["context_source"] == "context"
        t = run["timings"]
        assert t["queued_s"] == round(t["started"] - t["created"], 4) and 0 <= t["queued_s"] < 30
        assert t["elapsed_s"] is not None and t["elapsed_s"] >= 0
        listed = (await c.get("/v1/runs?status=answered")).json()
        assert [x["id"] for x in listed["runs"]] == [rid] and listed["total"] == 1
        assert listed["limit"] == 50 and listed["offset"] == 0 and listed["next_offset"] is None
        assert (await c.get("/v1/runs?status=failed")).json()["total"] == 0
        exp = await c.get(f"/v1/runs/{rid}/export")
        assert exp.headers["content-disposition"] == f'attachment; filename="{rid}.jsonl"'
        assert exp.headers["content-type"].startswith("application/x-ndjson")


async def test_refused_requests_say_what_to_change(env):
    async with client(make_app(env)) as c:
        r = await c.post("/v1/runs", json={"question": "q", "context": "a", "sample": "detective",
                                           "model": env["model"]})
        assert r.json()["detail"] == ("give exactly one of context, context_path, sample or an uploaded file "
                                      "(got context, sample)")
        r = await c.post("/v1/runs", json={"question": "q", "model": env["model"]})
        assert r.json()["detail"] == "give exactly one of context, context_path, sample or an uploaded file"
        r = await c.post("/v1/runs", json=["a list"])
        assert (r.status_code, r.json()["detail"]) == (400, "the body must be a JSON object")
        r = await c.post("/v1/runs", json={"context": "a"})  # no question
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["question"]
        r = await c.post("/v1/runs", data={"question": "q", "model": env["model"]},
                         files={"notes": ("n.txt", b"not the context field")})
        assert (r.status_code, r.json()["detail"]) == (400, "a multipart run needs the context file in the 'file' field")
        r = await c.post("/v1/runs", data={"question": "q", "model": env["model"], "limits": "{nope"},
                         files={"file": ("a.txt", b"text")})
        assert r.status_code == 400 and r.json()["detail"].startswith("limits must be a JSON object: ")
        r = await c.post("/v1/runs/nope/cancel")
        assert (r.status_code, r.json()["detail"]) == (404, "no run 'nope'")
        r = await c.get("/v1/runs/nope/events", headers={"Last-Event-ID": "x"})
        assert r.status_code == 404  # the run is looked up first
        deep = '{"question": "q", "context": "a", "limits": ' + '{"x": ' * 100_000 + "1" + "}" * 100_001
        r = await c.post("/v1/runs", content=deep, headers={"Content-Type": "application/json"})
        assert r.status_code == 400


async def test_a_multipart_run_takes_empty_fields_as_absent_and_blank_limits_as_none(env):
    async with client(make_app(env)) as c:
        r = await c.post("/v1/runs", data={"question": "key?", "model": env["model"], "levels": "", "limits": " "},
                         files={"file": ("n.txt", CONTEXT.encode())})
        assert r.status_code == 202, r.text
        run = await wait_done(c, r.json()["id"])
        assert run["status"] == "answered" and run["meta"]["context_source"] == "file"
        assert run["meta"]["filename"] == "n.txt" and run["levels"] == ["l1"]  # "" is no levels: the default


async def test_events_without_follow_stop_at_the_stored_ones_and_say_how_to_reconnect(env):
    async with client(make_app(env)) as c:
        rid = (await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": env["model"]})).json()["id"]
        await wait_done(c, rid)
        r = await c.get(f"/v1/runs/{rid}/events?follow=false&after=-1")
        assert r.text.startswith("retry: 2000\n\n")
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
        assert r.headers["content-type"].startswith("text/event-stream")
        ev = parse_sse(r.text)
        assert ev[0]["type"] == "run_start" and ev[-1]["type"] == "run_end"
        assert [e["seq"] for e in ev] == list(range(len(ev))) and len(ev) == (await c.get(f"/v1/runs/{rid}")).json()[
            "events"]
        r = await c.get(f"/v1/runs/{rid}/events", headers={"Last-Event-ID": ""})  # empty: from the start
        assert parse_sse(r.text) == ev


# ---------------------------------------------------------------------- queued runs across a restart
async def run_start_context(c, rid: str) -> dict[str, Any]:
    ev = parse_sse((await c.get(f"/v1/runs/{rid}/events?follow=false")).text)
    assert ev[0]["type"] == "run_start"
    return ev[0]["data"]["context"]


REQUESTS: dict[str, dict[str, Any]] = {  # a run's context, each way a client can give it
    "context": {"json": {"context": CONTEXT}},
    "context_path": {"json": {"context_path": "doc.txt"}},
    "sample": {"json": {"sample": "large-logs"}},
    "file": {"files": {"file": ("notes.txt", (CONTEXT + "more\n").encode())}},
}


async def post_run(c, env, how: dict[str, Any], **extra: Any):
    if "json" in how:
        return await c.post("/v1/runs", json={"question": "what is the key?", "model": env["model"], **how["json"],
                                              **extra})
    return await c.post("/v1/runs", data={"question": "what is the key?", "model": env["model"], **extra},
                        files=how["files"])


async def test_queued_runs_of_every_context_kind_start_again_after_a_restart_with_the_same_context(env):
    """A run queued behind a busy server survives the server's end: the next app on the same store
    starts it on the context the client gave, rebuilt the way it was given."""
    from fakeserver import FakeLLMServer
    from server_helpers import fake_config, slow_finds

    with FakeLLMServer(slow_finds(1000), latency=0.1) as srv:
        fake_config(env, srv)
        direct: dict[str, Any] = {}
        async with client(make_app(env)) as c:  # each at once: the context its run sees
            for kind, how in REQUESTS.items():
                r = await post_run(c, env, how)
                assert r.status_code == 202, (kind, r.text)
                assert (await wait_done(c, r.json()["id"]))["status"] == "answered"
                direct[kind] = await run_start_context(c, r.json()["id"])
        assert direct["file"]["document_sizes"][0]["path"] == "notes.txt"
        busy = make_app(env, max_concurrent_runs=1)
        queued: dict[str, str] = {}
        async with client(busy) as c:
            r = await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": "fake/m",
                                               "limits": {"max_iterations": 500}})
            blocker = r.json()["id"]
            for i, (kind, how) in enumerate(REQUESTS.items(), start=1):
                r = await post_run(c, env, how)
                assert r.status_code == 202 and r.json()["position"] == i, (kind, r.text)
                queued[kind] = r.json()["id"]
            view = (await c.get(f"/v1/runs/{queued['sample']}")).json()
            assert (view["status"], view["position"], view["active"]) == ("queued", 3, True)
            assert view["timings"]["started"] is None and view["timings"]["queued_s"] is None
            h = (await c.get("/health")).json()
            assert (h["active_runs"], h["queued_runs"], h["max_concurrent_runs"]) == (1, len(REQUESTS), 1)
        busy.state.manager.shutdown(10)  # the blocker is cancelled; the queued runs stay in the store
        async with client(make_app(env)) as c:
            assert (await wait_done(c, blocker))["status"] == "cancelled"
            for kind, rid in queued.items():
                run = await wait_done(c, rid)
                assert (run["status"], run["answer"]) == ("answered", "42"), (kind, run)
                assert run["meta"]["context_source"] == kind
                assert await run_start_context(c, rid) == direct[kind], kind


# ---------------------------------------------------------------------- bounds and messages
async def test_query_bounds_and_the_messages_of_refusals(env):
    (env["root"] / "empty").mkdir()
    async with client(make_app(env, max_upload_mb=0.01)) as c:
        for q in ("limit=0", "limit=501", "offset=-1"):
            assert (await c.get(f"/v1/runs?{q}")).status_code == 422, q
        page = (await c.get("/v1/runs?limit=500&offset=0")).json()
        assert (page["limit"], page["total"], page["runs"], page["next_offset"]) == (500, 0, [], None)
        r = await c.post("/v1/runs", json={"question": "q", "context_path": "doc.txt", "model": env["model"]})
        rid = r.json()["id"]
        run = await wait_done(c, rid)
        assert run["meta"] == {"context_source": "context_path", "context_path": str(env["root"] / "doc.txt")}
        (row,) = (await c.get("/v1/runs")).json()["runs"]
        assert row["id"] == row["run_id"] == rid
        assert (await c.get(f"/v1/runs/{rid}/events?after=-2")).status_code == 422
        r = await c.get(f"/v1/runs/{rid}/events", headers={"Last-Event-ID": "x"})
        assert r.json()["detail"] == "Last-Event-ID must be an event seq (an integer), got 'x'"
        r = await c.post(f"/v1/runs/{rid}/cancel")
        assert (r.status_code, r.json()["detail"]) == (409, f"run {rid} is not in progress (status: answered)")
        r = await c.post("/v1/runs", json={"question": "q", "context_path": "empty", "model": env["model"]})
        assert (r.status_code, r.json()["detail"]) == (  # the context's own error, as the model's CLI says it
            400, f"directory {env['root'] / 'empty'} holds no files matching the include/exclude globs, .gitignore "
                 "and .rlmignore")

        async def chunks():  # no Content-Length: the limit is found while the app reads
            for _ in range(5):
                yield b"z" * 5000

        r = await c.post("/v1/runs", content=chunks(), headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()["detail"]) == (
            413, "request body too large: the limit is 0.01 MB (server.max_upload_mb in the config)")
        r = await c.post("/v1/runs", content=b"{" + b" " * 9_980 + b"}", headers={"Content-Type": "application/json"})
        assert r.status_code == 422  # under the limit: read, and refused for what it says (no question)
        page = await c.get("/visualize")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


async def test_a_multipart_form_takes_one_file_twenty_fields_and_its_limits(env):
    async with client(make_app(env)) as c:
        r = await c.post("/v1/runs", data={"question": "key?", "model": env["model"], "limits": '{"max_iterations": 1}'},
                         files={"file": ("a.txt", CONTEXT.encode())})
        run = await wait_done(c, r.json()["id"])
        assert (run["status"], run["iterations"]) == ("max_iterations", 1)  # the form's limits hold
        r = await c.post("/v1/runs", data={"question": "key?", "model": env["model"]},
                         files=[("file", ("a.txt", b"one")), ("file", ("b.txt", b"two"))])
        assert r.status_code == 400 and "files" in r.json()["detail"].lower()
        extra = {f"x{i}": "v" for i in range(18)}  # with question and model: 20 fields
        r = await c.post("/v1/runs", data={"question": "key?", "model": env["model"], **extra},
                         files={"file": ("a.txt", CONTEXT.encode())})
        assert r.status_code == 202, r.text
        await wait_done(c, r.json()["id"])
        r = await c.post("/v1/runs", data={"question": "key?", "model": env["model"], **extra, "x18": "v"},
                         files={"file": ("a.txt", CONTEXT.encode())})
        assert r.status_code == 400 and "fields" in r.json()["detail"].lower()


async def test_the_server_section_of_the_config_applies_when_no_argument_overrides_it(env):
    env["config"].server.token = "from-config"
    env["config"].server.max_concurrent_runs = 3
    async with client(make_app(env), token="from-config") as c:
        h = (await c.get("/health")).json()
        assert (h["auth"], h["max_concurrent_runs"]) == (True, 3)
    async with client(make_app(env)) as c:
        assert (await c.get("/v1/runs")).status_code == 401
    async with client(make_app(env, token="", max_concurrent_runs=2)) as c:  # an argument wins
        h = (await c.get("/health")).json()
        assert (h["auth"], h["max_concurrent_runs"]) == (False, 2)


def test_a_bad_server_config_is_refused_when_the_app_is_built(env):
    from contextbox.errors import ConfigError, UsageError

    env["config"].server.allowed_hosts = ["not a host/"]
    with pytest.raises(ConfigError, match="allowed_hosts"):
        make_app(env)
    env["config"].server.allowed_hosts = ["test"]
    from contextbox.providers.base import ProviderConfig

    port = env["config"].server.port
    env["config"].providers = [ProviderConfig("me", "openai", f"http://127.0.0.1:{port}/v1", None)]
    env["config"].sub_model = "me/m"
    with pytest.raises(UsageError, match="sub_model 'me/m' would call this server itself"):
        make_app(env)
    env["config"].sub_model, env["config"].model = None, "me/m"
    with pytest.raises(UsageError, match="model 'me/m' would call this server itself"):
        make_app(env)


# ---------------------------------------------------------------------- how the app is built and ended
async def test_without_a_config_the_app_loads_the_one_the_environment_names(env, monkeypatch, tmp_path):
    conf = tmp_path / "served.toml"
    conf.write_text(f'[server]\ntoken = "from-file"\nroots = ["{env["root"]}"]\nallowed_hosts = ["test"]\n'
                    f'db = "{tmp_path / "served.sqlite"}"\n')
    monkeypatch.setenv("CONTEXTBOX_CONFIG", str(conf))
    app = create_app()
    env.setdefault("apps", []).append(app)
    async with client(app, token="from-file") as c:
        assert (await c.get("/health")).json()["auth"] is True
        r = await c.post("/v1/runs", json={"question": "q", "context_path": "doc.txt", "model": env["model"]})
        assert r.status_code == 202, r.text
        assert (await wait_done(c, r.json()["id"]))["answer"] == "42"
    assert (tmp_path / "served.sqlite").is_file()


async def test_the_roots_argument_replaces_the_configured_roots(env, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.txt").write_text(CONTEXT)
    async with client(make_app(env, roots=[str(other)])) as c:
        post = {"question": "q", "model": f"scripted:{write_script(other / 's.json')}"}
        assert (await c.post("/v1/runs", json=post | {"context_path": str(env["root"] / "doc.txt")})).status_code == 403
        r = await c.post("/v1/runs", json=post | {"context_path": "o.txt"})
        assert r.status_code == 202, r.text
        await wait_done(c, r.json()["id"])


async def test_the_upload_limit_is_max_upload_mb_million_bytes(env):
    async with client(make_app(env, max_upload_mb=1)) as c:
        for size, status in ((1_000_001, 413), (1_000_000, 202)):
            body = b'{"question": "q", "model": "' + env["model"].encode() + b'", "context": "'
            body += b"x" * (size - len(body) - 2) + b'"}'
            assert len(body) == size
            r = await c.post("/v1/runs", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == status, (size, r.text[:200])
            if status == 202:
                await wait_done(c, r.json()["id"])


async def test_the_app_s_end_cancels_its_runs_and_closes_only_a_store_it_opened(env):
    from fakeserver import FakeLLMServer
    from server_helpers import fake_config, slow_finds

    from contextbox.stores.sqlite import SqliteRunStore

    with FakeLLMServer(slow_finds(1000), latency=0.05) as srv:
        fake_config(env, srv)
        app = create_app(env["config"])
        async with app.router.lifespan_context(app), client(app) as c:
            rid = (await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": "fake/m",
                                                  "limits": {"max_iterations": 500}})).json()["id"]
            assert (await c.get(f"/v1/runs/{rid}")).json()["status"] in ("queued", "running")
            r = await c.post(f"/v1/runs/{rid}/cancel")
            assert (r.status_code, r.json()) == (202, {"id": rid, "status": "cancelling"})
        with pytest.raises(RuntimeError, match="closed"):
            app.state.store.get_run(rid)
        given = SqliteRunStore(env["tmp"] / "given.sqlite")
        app = create_app(env["config"], store=given)
        async with app.router.lifespan_context(app), client(app) as c:
            rid = (await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": "fake/m",
                                                  "limits": {"max_iterations": 500}})).json()["id"]
        assert given.get_run(rid)["status"] == "cancelled"  # still open: the caller closes it
        given.close()


async def test_the_openapi_document_names_the_api_its_version_and_how_to_authenticate(env):
    from contextbox import __version__

    async with client(make_app(env)) as c:
        info = (await c.get("/openapi.json")).json()["info"]
    assert (info["title"], info["version"]) == ("contextbox", __version__)
    assert info["description"] == ("Recursive Language Models over contexts far larger than a model's window. With a "
                                   "token set, send `Authorization: Bearer TOKEN` on every request but /health.")


async def test_the_sub_model_is_checked_and_used_like_the_model_and_a_blank_form_question_is_missing(env, tmp_path):
    sub = write_script(env["root"] / "sub.json")
    outside = write_script(tmp_path / "outside.json")
    async with client(make_app(env)) as c:
        body = {"question": "café?", "context": CONTEXT, "model": env["model"]}
        r = await c.post("/v1/runs", json=body | {"sub_model": f"scripted:{outside}"})
        assert r.status_code == 403, r.text  # a scripted file outside the roots, as for the model
        r = await c.post("/v1/runs", json=body | {"sub_model": f"scripted:{sub}"})
        run = await wait_done(c, r.json()["id"])
        assert (run["model"], run["sub_model"]) == (env["model"], f"scripted:{sub}")
        sse = (await c.get(f"/v1/runs/{run['id']}/events?follow=false")).text
        assert '"question": "café?"' in sse  # UTF-8 on the wire, not \\u escapes
        r = await c.post("/v1/runs", data={"question": "", "model": env["model"]}, files={"file": ("a.txt", b"x")})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["question"]  # an empty field is absent


# ---------------------------------------------------------------------- following a run's events
async def test_following_a_finished_run_from_its_last_event_ends_at_once(env):
    import asyncio

    async with client(make_app(env)) as c:
        rid = (await c.post("/v1/runs", json={"question": "q", "context": CONTEXT, "model": env["model"]})).json()["id"]
        n = (await wait_done(c, rid))["events"]
        r = await asyncio.wait_for(c.get(f"/v1/runs/{rid}/events", headers={"Last-Event-ID": str(n - 1)}), 10)
        assert r.text == "retry: 2000\n\n"  # nothing after the run_end, and nothing more will come


async def test_a_run_another_process_writes_is_followed_until_its_end(env):
    """A run in the server's store that this server does not run (an ``rlm run`` with the same store):
    the stream polls the store, as no notifier wakes it, and ends with the run's end."""
    import asyncio

    from contextbox.stores.sqlite import SqliteRunStore, default_db_path
    from contextbox.types import Event

    app = make_app(env)
    other = SqliteRunStore(default_db_path(env["config"].runs_dir))  # another writer of the same file
    try:
        other.create_run("cli-run", question="q", status="running")
        async with client(app) as c:
            follower = asyncio.create_task(c.get("/v1/runs/cli-run/events"))
            await asyncio.sleep(1.5)
            assert not follower.done()  # the run is not over: the stream waits for it
            other.append(Event("status", {"note": "still going"}, run_id="cli-run", seq=other.next_seq("cli-run")))
            await asyncio.sleep(1.5)  # read, then waited for more
            assert not follower.done()
            other.finish_run("cli-run", "failed", "the CLI run crashed")
            r = await asyncio.wait_for(follower, 15)
        ev = parse_sse(r.text)
        assert [e["type"] for e in ev] == ["status", "error", "run_end"] and ev[-1]["data"]["status"] == "failed"
    finally:
        other.close()


async def test_the_stream_reads_the_store_in_pages_and_loses_nothing_across_them(env, monkeypatch):
    """However long the run, the stream holds at most SSE_PAGE events at once (here 3): each query of the
    store is one page, and the pages join into the whole stream, in order."""
    from contextbox.server import app as app_module
    from contextbox.stores.sqlite import SqliteRunStore, default_db_path
    from contextbox.types import Event

    monkeypatch.setattr(app_module, "SSE_PAGE", 3)
    app = make_app(env)
    other = SqliteRunStore(default_db_path(env["config"].runs_dir))
    try:
        other.create_run("long-run", question="q", status="running")
        for i in range(8):
            other.append(Event("status", {"i": i}, run_id="long-run", seq=other.next_seq("long-run")))
        other.finish_run("long-run", "failed", "done")
    finally:
        other.close()
    pages: list[int] = []
    read = app.state.store.events

    def paged(*a: Any, **kw: Any) -> Any:
        out = read(*a, **kw)
        pages.append(len(out))
        return out

    monkeypatch.setattr(app.state.store, "events", paged)
    async with client(app) as c:
        ev = parse_sse((await c.get("/v1/runs/long-run/events")).text)
    assert [e["data"].get("i") for e in ev[:8]] == list(range(8)) and [e["type"] for e in ev[8:]] == ["error", "run_end"]
    assert [e["seq"] for e in ev] == list(range(10))
    assert max(pages) == 3 and sum(pages) == 10


async def test_an_uploaded_file_without_a_name_is_upload_txt(env):
    body = (b'--X\r\nContent-Disposition: form-data; name="question"\r\n\r\nwhat is the key?\r\n'
            b'--X\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + env["model"].encode() + b'\r\n'
            b'--X\r\nContent-Disposition: form-data; name="file"; filename=""\r\n\r\n' + CONTEXT.encode() +
            b'\r\n--X--\r\n')
    async with client(make_app(env)) as c:
        r = await c.post("/v1/runs", content=body, headers={"content-type": "multipart/form-data; boundary=X"})
        assert r.status_code == 202, r.text
        run = await wait_done(c, r.json()["id"])
        assert run["status"] == "answered" and run["meta"]["filename"] == "upload.txt"
        ctx = await run_start_context(c, run["id"])
        assert [d["path"] for d in ctx["document_sizes"]] == ["upload.txt"], ctx
