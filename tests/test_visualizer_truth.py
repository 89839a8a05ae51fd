"""The visualizer tells the truth (real headless Chromium, as tests/test_server_browser.py):
the context map counts the chunks llm_map sent to sub-calls and code that reads the context;
a run without an answer is never shown in the "Final answer" box."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import LiveServer, cmd
from test_server_browser import browser, open_page  # noqa: F401 - the browser fixture

from contextbox.config import Config
from contextbox.server import create_app

LINES = "".join(f"line {i}: the value is {i * 7}\n" for i in range(40))


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, Any]:
    cfg = Config()
    cfg.runs_dir = tmp_path / "runs"
    (tmp_path / "root").mkdir()
    cfg.server.roots = [str(tmp_path / "root")]  # scripted model files must lie inside a root
    return {"config": cfg, "tmp": tmp_path / "root"}


def start(live: LiveServer, script: Path, replies: list[str], **extra: Any) -> str:
    script.write_text(json.dumps(replies))
    body = {"question": "sum of values?", "context": LINES, "model": f"scripted:{script}", **extra}
    r = httpx.post(live.url + "/v1/runs", json=body, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def show(browser: Any, live: LiveServer, rid: str) -> Any:  # noqa: F811
    page = open_page(browser, live.url)
    page.goto(live.url + "/visualize#run=" + rid)
    page.reload()
    page.wait_for_function("!document.getElementById('answerbox').hidden", timeout=20000)
    return page


def test_map_counts_llm_map_chunks_and_a_partial_answer_is_not_final(browser, server_env):  # noqa: F811
    app = create_app(server_env["config"])
    size = len(LINES) // 3 + 1
    n = -(-len(LINES) // size)
    with LiveServer(app) as live:
        # llm_map over the whole context: every chunk goes to a sub-call, nothing is read by L1
        rid = start(live, server_env["tmp"] / "map.json",
                    [cmd("llm_map", prompt="values?", chunk_size=size)] + [f"part {i}" for i in range(n)]
                    + [cmd("final", answer="5460")], levels="l1,l4")
        page = show(browser, live, rid)
        assert page.text_content("#answerhead") == "Final answer"
        assert "read 100.00%" in page.text_content("#mapinfo"), page.text_content("#mapinfo")
        # each sub-call is shown under the llm_map that made it, with what it was sent and what it said
        subs_shown = page.locator("#timeline .ev.action .ev.sub")
        assert subs_shown.count() == n
        assert all("prompt: values?" in t and "answer: part " in t for t in subs_shown.all_text_contents())
        assert f"llm_map: {n}/{n} sub-calls" in page.text_content("#timeline .ev.progress")
        end = [e for e in app.state.store.events(rid) if e.type == "action_end"][0]
        assert end.data["op"] == "llm_map" and end.data["read"] == [[0, len(LINES)]]
        subs = [e for e in app.state.store.events(rid) if e.type == "sub_call"]
        assert len(subs) == n and all(s.data["prompt"].startswith("values?") and s.data["answer"] for s in subs)

        # a run that stops at max_iterations with prose: labelled partial, never "Final answer"
        rid2 = start(live, server_env["tmp"] / "prose.json",
                     [cmd("lines", start=0, end=2), "I think the answer is 5460"], limits={"max_iterations": 2})
        page2 = show(browser, live, rid2)
        head = page2.text_content("#answerhead")
        assert head.startswith("Partial answer") and "max_iterations" in head and "Final" not in head
        assert "partial" in page2.get_attribute("#answerbox", "class")
        assert 0 < float(page2.text_content("#mapinfo").split("read ")[1].split("%")[0]) < 100

        # a run that fails with no answer at all
        rid3 = start(live, server_env["tmp"] / "fail.json", [cmd("lines", start=0, end=2)])
        page3 = show(browser, live, rid3)
        assert page3.text_content("#answerhead") == "No answer (run failed)"
        assert page3.text_content("#answer") == "the run ended without an answer"
        assert page.errors == [] and page2.errors == [] and page3.errors == []
    app.state.manager.shutdown(5)
    app.state.store.close()


def test_action_reads_count_code_and_child_ranges():
    from helpers import ScriptedProvider

    from contextbox.engine import RLM

    replies = ["```repl\nprint(1 + 1)\n```", "```repl\nprint(context.count('value'))\n```",
               cmd("rlm_query", prompt="what is here?", start=100, end=-50),
               cmd("find", text="x"), cmd("final", answer="child says hi"),  # the child run's two turns
               cmd("final", answer="40")]
    res = RLM(model=ScriptedProvider(replies), levels="l1,l2,l4", config=Config()).run("q", LINES)
    reads = [(e.data["op"], e.data["read"]) for e in res.events if e.type == "action_end" and e.path == "0"]
    assert reads[0] == ("code", [])  # names no context: reads nothing
    assert reads[1] == ("code", [[0, len(LINES)]])  # code that uses `context` may read all of it
    assert reads[2] == ("rlm_query", [[100, len(LINES) - 50]])  # the child's whole context


def test_every_model_call_records_the_endpoint_that_served_it():
    from fakeserver import FakeLLMServer

    from contextbox.engine import RLM
    from contextbox.providers.base import ProviderConfig

    replies = [cmd("llm_query", prompt="say hi"), "hi there", cmd("lines", start=0, end=1), cmd("final", answer="hi")]
    with FakeLLMServer(replies) as srv:
        cfg = Config()
        cfg.providers = [ProviderConfig("fake", "openai", srv.base_url, None, max_retries=0)]
        res = RLM(model="fake/m", levels="l1,l4", config=cfg).run("q", LINES)
    assert res.status == "answered", res.reason
    calls = [e.data for e in res.events if e.type in ("lm_response", "sub_call")]
    assert len(calls) == 4 and [c["endpoint"] for c in calls] == [f"fake@{srv.base_url}"] * 4, calls
    sub = [e.data for e in res.events if e.type == "sub_call"][0]
    assert sub["prompt"] == "say hi" and sub["answer"] == "hi there" and sub["latency_s"] >= 0


@pytest.mark.parametrize("last,partial", [
    ('{"op": "final", "answer": "5460"', None),  # a command cut off: malformed, not an answer
    ('```json\n{"op": "final" "answer": 1}\n```', None),
    ("I believe the sum is 5460.", "I believe the sum is 5460."),  # prose: a partial answer
])
def test_a_malformed_command_is_never_a_partial_answer(last, partial):
    from helpers import ScriptedProvider

    from contextbox.engine import RLM

    res = RLM(model=ScriptedProvider([cmd("lines", start=0, end=2), last]), config=Config(),
              limits={"max_iterations": 2}).run("q", LINES)
    assert res.status == "max_iterations" and res.answer == partial
    assert res.to_dict()["partial"] is (partial is not None)
