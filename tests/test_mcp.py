"""``rlm mcp`` end to end: the official MCP SDK's own stdio client against the real ``rlm mcp`` process,
with a scripted model."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import cmd

# the [mcp] extra (make install-local installs it): a missing SDK fails here, it is not skipped
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from test_cli import RLM
from test_cli import rlm as rlm_cli

NOTES = "alpha\nthe secret code is 4711\nomega\n"


def _structured(res: Any) -> Any:
    return getattr(res, "structured_content", None) or getattr(res, "structuredContent", None)


def _is_error(res: Any) -> bool:
    return bool(getattr(res, "is_error", None) or getattr(res, "isError", None))


def _text(res: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in res.content)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "allowed"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "notes.txt").write_text(NOTES)
    (tmp_path / "outside.txt").write_text("the secret code is 9999\n")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    default = tmp_path / "default.json"
    default.write_text(json.dumps([cmd("find", text="secret"), cmd("final", answer="4711")]))
    other = root / "other.json"  # a model file the client names: it must lie inside the roots too
    other.write_text(json.dumps([cmd("find", text="alpha"), cmd("final", answer="alpha it is")]))
    return {"root": root, "default": default, "other": other, "runs": tmp_path / "runs"}


def _params(s: dict[str, Any]) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "XDG_DATA_HOME", "HOME", "PATH")}
    return StdioServerParameters(command=RLM, args=["mcp", "--root", str(s["root"]), "--model",
                                                    f"scripted:{s['default']}", "--runs-dir", str(s["runs"])],
                                 env=env)


async def _session(s: dict[str, Any], body: Any) -> Any:
    async with stdio_client(_params(s), errlog=sys.stderr) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await body(session)


def test_mcp_client_lists_tools_and_asks(setup):
    progress: list[tuple[float, str | None]] = []

    async def body(session: ClientSession) -> Any:
        tools = {t.name: t for t in (await session.list_tools()).tools}

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append((p, message))

        res = await session.call_tool("ask", {"question": "What is the secret code?", "paths": ["docs/notes.txt"]},
                                      progress_callback=on_progress)
        runs = await session.call_tool("list_runs", {"limit": 5})
        return tools, res, runs

    tools, res, runs = asyncio.run(_session(setup, body))
    assert set(tools) >= {"ask", "list_runs", "get_run"}
    schema = tools["ask"].input_schema if hasattr(tools["ask"], "input_schema") else tools["ask"].inputSchema
    assert set(schema["required"]) == {"question", "paths"} and {"levels", "model"} <= set(schema["properties"])
    assert not _is_error(res), _text(res)
    out = _structured(res)
    assert out["answer"] == "4711" and out["status"] == "answered" and out["iterations"] == 2
    assert out["run_id"] and out["usage"]["calls"] == 2 and out["usage"]["total_tokens"] > 0
    # progress notifications: increasing, one per step, ending with the answer
    assert [p for p, _ in progress] == sorted(p for p, _ in progress) and len(progress) >= 5
    messages = [m for _, m in progress]
    assert messages[0].startswith(f"run {out['run_id']}") and any("l1 find" in m for m in messages)
    assert messages[-1] == "answered"
    # the run is in the store, listed by the list_runs tool and by the CLI
    listed = _structured(runs)["result"]
    assert listed[0]["run_id"] == out["run_id"] and listed[0]["answer"] == "4711"
    p = rlm_cli("runs", "list", "--runs-dir", str(setup["runs"]))
    assert out["run_id"] in p.stdout


def test_mcp_paths_are_confined_to_the_roots(setup):
    async def body(session: ClientSession) -> list[Any]:
        out = []
        for paths in (["../outside.txt"], [str(setup["root"].parent / "outside.txt")], ["escape.txt"],
                      ["docs/missing.txt"], []):
            out.append(await session.call_tool("ask", {"question": "code?", "paths": paths}))
        return out

    outside, absolute, link, missing, empty = asyncio.run(_session(setup, body))
    for res in (outside, absolute, link):
        assert _is_error(res) and "outside the server's allowed roots" in _text(res), _text(res)
        assert "9999" not in _text(res)
    assert _is_error(missing) and "not found under the server's roots" in _text(missing)
    assert _is_error(empty) and "paths is empty" in _text(empty)
    assert not list(setup["runs"].glob("*.jsonl"))  # nothing ran


def test_mcp_model_and_levels_arguments_and_get_run(setup):
    resources: dict[str, Any] = {}

    async def body(session: ClientSession) -> tuple[Any, Any, Any, Any]:
        res = await session.call_tool("ask", {"question": "first word?", "paths": ["docs"],
                                              "model": f"scripted:{setup['other']}", "levels": "l1"})
        rid = _structured(res)["run_id"]
        run = await session.call_tool("get_run", {"run_id": rid[:-2], "events": True})  # a prefix is enough
        resources["list"] = (await session.read_resource("rlm://runs")).contents[0].text
        resources["run"] = (await session.read_resource(f"rlm://runs/{rid}")).contents[0].text
        bad_model = await session.call_tool("ask", {"question": "q", "paths": ["docs"],
                                                    "model": f"scripted:{setup['default']}"})
        bad_levels = await session.call_tool("ask", {"question": "q", "paths": ["docs"], "levels": "l9"})
        return res, run, bad_model, bad_levels

    res, run, bad_model, bad_levels = asyncio.run(_session(setup, body))
    assert _structured(res)["answer"] == "alpha it is"
    got = _structured(run)
    assert got["run_id"] == _structured(res)["run_id"] and got["status"] == "answered"
    assert got["question"] == "first word?" and "FINAL: alpha it is" in got["transcript"]
    assert got["usage"]["total"]["calls"] == 2
    assert json.loads(resources["list"])[0]["run_id"] == got["run_id"]
    assert "FINAL: alpha it is" in resources["run"] and "first word?" in resources["run"]
    # a model file outside the roots is refused like a context path
    assert _is_error(bad_model) and "outside the server's allowed roots" in _text(bad_model)
    assert _is_error(bad_levels) and "unknown level 'l9'" in _text(bad_levels)


def test_rlm_mcp_without_roots_is_a_usage_error(tmp_path):
    p = rlm_cli("mcp", "--runs-dir", str(tmp_path / "runs"), stdin="")
    assert p.returncode == 2 and "rlm mcp needs at least one folder" in p.stderr and p.stderr.count("\n") == 1
