"""/v1/chat/completions is safe for its clients: the official ``openai`` client (which retries
5xx twice by default) never re-runs a run that already ran; runs that end without an answer
say so; streams show progress and end with [DONE] also on failure; request fields a run
cannot honour are refused, and system messages are applied."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakeserver import FakeLLMServer
from server_helpers import CONTEXT, LiveServer, close_apps, cmd, fake_config, make_app, server_env, slow_finds

from contextbox.server import chat


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    e = server_env(tmp_path)
    yield e
    close_apps(e)


def scripted(env: dict[str, Any], name: str, replies: list[str]) -> str:
    p = env["root"] / name
    p.write_text(json.dumps(replies))
    return f"rlm:scripted:{p}"


def n_runs(app: Any) -> int:
    return app.state.store.count_runs()


def test_limit_without_answer_is_200_length_and_one_run(env):
    app = make_app(env)
    finds = [cmd("find", text=f"w{i}") for i in range(5)]
    with LiveServer(app) as live:
        oc = openai.OpenAI(base_url=live.url + "/v1", api_key="x")  # default max_retries=2
        r = oc.chat.completions.create(model=scripted(env, "loop.json", finds), messages=[
            {"role": "user", "content": "key?"}], extra_body={"context": CONTEXT, "limits": {"max_iterations": 2}})
        assert n_runs(app) == 1
        ext = r.model_extra["contextbox"]
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == ""
        assert ext["status"] == "max_iterations" and ext["partial"] is False and ext["iterations"] == 2
        assert app.state.store.get_run(ext["run_id"])["status"] == "max_iterations"


def test_failed_run_is_not_retried_by_the_openai_client(env):
    app = make_app(env)
    with LiveServer(app) as live:
        oc = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=2)
        with pytest.raises(openai.InternalServerError) as ei:
            oc.chat.completions.create(model=scripted(env, "short.json", [cmd("find", text="key")]),
                                       messages=[{"role": "user", "content": "key?"}], extra_body={"context": CONTEXT})
        assert n_runs(app) == 1, "the client re-ran a run it already paid for"
        assert ei.value.response.headers["x-should-retry"] == "false"
        body = ei.value.response.json()
        assert body["contextbox"]["status"] == "failed" and body["contextbox"]["run_id"]
        assert "failed" in body["error"]["message"] and body["contextbox"]["reason"]


def test_stream_of_a_failed_run_ends_with_done(env):
    app = make_app(env)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        model = scripted(env, "short.json", [cmd("find", text="key")])
        r = c.post("/v1/chat/completions", json={"model": model, "stream": True, "context": CONTEXT,
                                                 "messages": [{"role": "user", "content": "key?"}]})
        assert r.status_code == 200
        datas = [ln[6:] for ln in r.text.split("\n") if ln.startswith("data: ")]
        assert datas[-1] == "[DONE]"
        err = json.loads(datas[-2])
        assert err["contextbox"]["status"] == "failed" and "without an answer" in err["error"]["message"]
        assert n_runs(app) == 1


def test_stream_sends_progress_comments_while_the_run_works(env, monkeypatch):
    monkeypatch.setattr(chat, "KEEPALIVE_S", 0.2)
    with FakeLLMServer(slow_finds(6, answer="done"), latency=0.15) as srv:
        fake_config(env, srv)
        app = make_app(env)
        with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as c:
            r = c.post("/v1/chat/completions", json={"model": "rlm:fake/m", "stream": True, "context": CONTEXT,
                                                     "messages": [{"role": "user", "content": "q"}]})
            lines = r.text.split("\n")
            comments = [ln for ln in lines if ln.startswith(": ")]
            assert len(comments) >= 2 and any("iteration" in c for c in comments), comments
            datas = [ln[6:] for ln in lines if ln.startswith("data: ")]
            assert datas[-1] == "[DONE]"
            last = json.loads(datas[-2])
            assert last["choices"][0]["finish_reason"] == "stop" and last["contextbox"]["status"] == "answered"
            assert "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in datas[:-1]) == "done"


@pytest.mark.parametrize("field,value", [("temperature", 0.2), ("max_tokens", 50), ("max_completion_tokens", 9),
                                         ("n", 2), ("response_format", {"type": "json_object"}),
                                         ("tools", [{"type": "function", "function": {"name": "f"}}])])
def test_parameters_a_run_cannot_honour_are_refused(env, field, value):
    env["config"].model = env["model"]
    app = make_app(env)
    with LiveServer(app) as live:
        oc = openai.OpenAI(base_url=live.url + "/v1", api_key="x")
        with pytest.raises(openai.BadRequestError) as ei:
            oc.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"context": CONTEXT, field: value})
        assert field in ei.value.message and ei.value.body["param"] == field
        assert n_runs(app) == 0


def test_neutral_values_are_accepted(env):
    env["config"].model = env["model"]
    app = make_app(env)
    with LiveServer(app) as live:
        oc = openai.OpenAI(base_url=live.url + "/v1", api_key="x")
        r = oc.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "key?"}], n=1,
                                       temperature=None, top_p=1, presence_penalty=0, extra_body={"context": CONTEXT})
        assert r.choices[0].message.content == "42"


def test_system_messages_become_instructions_and_history_is_refused(env):
    with FakeLLMServer([cmd("find", text="key"), cmd("final", answer="42")]) as srv:
        fake_config(env, srv)
        app = make_app(env)
        with LiveServer(app) as live:
            oc = openai.OpenAI(base_url=live.url + "/v1", api_key="x")
            oc.chat.completions.create(model="rlm:fake/m", messages=[
                {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "key?"}],
                extra_body={"context": CONTEXT})
            first = srv.requests[0]["messages"][1]["content"]
            assert "Answer in French." in first and "key?" in first
            with pytest.raises(openai.BadRequestError) as ei:
                oc.chat.completions.create(model="rlm:fake/m", messages=[
                    {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": "key?"}], extra_body={"context": CONTEXT})
            assert "would be ignored" in ei.value.message
            assert n_runs(app) == 1


def test_internal_error_after_the_run_started_is_not_retried(env, monkeypatch):
    import threading

    env["config"].model = env["model"]
    app = make_app(env)
    store = app.state.store
    real = store.get_run

    def broken(run_id: str) -> Any:  # the endpoint's reads fail; the run's own thread works on
        if not threading.current_thread().name.startswith(("run-", "rlm-")):
            raise RuntimeError("disk on fire")
        return real(run_id)

    with LiveServer(app) as live:
        monkeypatch.setattr(store, "get_run", broken)
        oc = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=2)
        with pytest.raises(openai.InternalServerError) as ei:
            oc.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "key?"}],
                                       extra_body={"context": CONTEXT})
        monkeypatch.setattr(store, "get_run", real)
        assert ei.value.response.headers["x-should-retry"] == "false"
        assert n_runs(app) == 1
