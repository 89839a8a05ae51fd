"""The HTTP API in detail: the fields a client reads (run view, health, list), the messages of refused
requests, and the SSE stream's options. Through the real app and an ASGI client, as tests/test_server.py.

Written against the survivors of `tests/mutation.py --modules server/app.py` (docs/mutation.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import CONTEXT, client, close_apps, make_app, parse_sse, server_env, wait_done

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
