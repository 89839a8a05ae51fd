"""Defects found on a fresh clone, each by its reproduction: config show's TOML, range checks
of config and API limits, limit names, prompts stating the configured time limits and the
```native fence, code-cell regex() under regex_timeout_s."""

from __future__ import annotations

import math
import tomllib

import httpx
import pytest
from helpers import ScriptedProvider
from test_cli import rlm

from contextbox import prompts
from contextbox.config import Config
from contextbox.config_show import render
from contextbox.engine import RLM
from contextbox.errors import ConfigError, UsageError
from contextbox.server import create_app


# ---------------------------------------------------------------------- rlm config show
def test_config_show_is_valid_toml_with_origins_and_the_env_token(tmp_path):
    (tmp_path / "contextbox.toml").write_text(
        'model = "fake/m"\n[limits]\nmax_iterations = 7\ntimeout_s = inf\n[prices]\n"fake/m" = {input = 1.5, output = 3}\n'
        '[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "FAKE_KEY"\n')
    p = rlm("config", "show", env={"CONTEXTBOX_TOKEN": "tok-abcdefghijkl", "CONTEXTBOX_MAX_COST_USD": "3"},
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = tomllib.loads(p.stdout)  # valid TOML: no null, no bare source key
    assert "source" not in data and "null" not in p.stdout
    assert data["model"] == "fake/m" and data["limits"]["max_iterations"] == 7
    assert math.isinf(data["limits"]["timeout_s"]) and data["limits"]["max_cost_usd"] == 3.0
    assert data["server"]["token"] == "tok…ijkl" and "tok-abcdefghijkl" not in p.stdout
    assert data["prices"]["fake/m"] == {"input": 1.5, "output": 3.0}
    assert data["providers"][0]["api_key_env"] == "FAKE_KEY"
    lines = p.stdout.splitlines()
    assert any(ln.startswith("max_iterations = 7") and "contextbox.toml" in ln for ln in lines)
    assert any(ln.startswith("max_cost_usd = 3.0") and "env CONTEXTBOX_MAX_COST_USD" in ln for ln in lines)
    assert any(ln.startswith("token = ") and "env CONTEXTBOX_TOKEN" in ln for ln in lines)
    assert any(ln.startswith("max_output_chars = 4000") and "# default" in ln for ln in lines)


def test_config_show_loads_back_to_the_same_config(tmp_path):
    cfg = Config()
    cfg.limits.max_iterations = 3
    cfg.delegation.max_depth = 0
    cfg.server.roots = ['a "quoted" dir\\x']
    out = tmp_path / "shown.toml"
    out.write_text(render(cfg, env={}))
    back = Config.load(out, env={})
    assert back.limits == cfg.limits and back.delegation == cfg.delegation and back.server.roots == cfg.server.roots


# ---------------------------------------------------------------------- range checks
@pytest.mark.parametrize("toml,needle", [
    ("[delegation]\nmax_depth = -1", "[delegation] max_depth must be at least 0"),
    ("[delegation]\nmax_concurrency = 0", "[delegation] max_concurrency"),
    ("[code]\nl2_time_limit_s = 0", "[code] l2_time_limit_s must be greater than 0"),
    ("[code]\nl3_memory_mb = -5", "[code] l3_memory_mb"),
    ("[server]\nport = 70000", "[server] port must be at most 65535"),
    ("[server]\nmax_concurrent_runs = 0", "[server] max_concurrent_runs"),
    ("[limits]\ntimeout_s = nan", "[limits] timeout_s"),
])
def test_out_of_range_config_values_are_refused(tmp_path, toml, needle):
    f = tmp_path / "c.toml"
    f.write_text(toml + "\n")
    with pytest.raises(ConfigError) as ei:
        Config.load(f, env={})
    assert needle in str(ei.value)


def test_rlm_limits_with_a_wrong_name_or_value_are_usage_errors():
    with pytest.raises(UsageError, match="unknown limit 'max_iteration'; known limits: max_iterations"):
        RLM(model=ScriptedProvider([]), limits={"max_iteration": 3}, config=Config())
    with pytest.raises(UsageError, match="timeout_s must be greater than 0, got -5"):
        RLM(model=ScriptedProvider([]), limits={"timeout_s": -5}, config=Config())


@pytest.mark.anyio
@pytest.mark.parametrize("limits,needle", [({"max_iterations": 0}, "max_iterations must be at least 1, got 0"),
                                           ({"timeout_s": -5}, "timeout_s must be greater than 0, got -5.0"),
                                           ({"max_iteration": 3}, "unknown key 'max_iteration'")])
async def test_api_refuses_limits_that_cannot_work(tmp_path, limits, needle):
    cfg = Config()
    cfg.runs_dir = tmp_path / "runs"
    cfg.model = "scripted:" + str(tmp_path / "s.json")
    (tmp_path / "s.json").write_text("[]")
    app = create_app(cfg)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            r = await c.post("/v1/runs", json={"question": "q", "context": "x", "limits": limits})
            assert r.status_code == 400 and needle in r.json()["detail"]
            r = await c.post("/v1/chat/completions", json={"model": "rlm", "context": "x", "limits": limits,
                                                           "messages": [{"role": "user", "content": "q"}]})
            assert r.status_code == 400 and needle in r.json()["error"]["message"]
            assert (await c.get("/v1/runs")).json()["total"] == 0
    finally:
        app.state.manager.shutdown(5)
        app.state.store.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------------- prompts
def test_code_prompts_state_the_configured_time_limits():
    cfg = Config()
    cfg.code.l2_time_limit_s, cfg.code.l3_time_limit_s = 7.5, 123
    p = prompts.system_prompt(("l1", "l2", "l3"), cfg.code)
    assert "7.5 s at most" in p and "123 s per block" in p
    assert "30 s" not in p and "60 s" not in p and "<L2_TIME_S>" not in p
    default = prompts.system_prompt(("l1", "l3"))
    assert "60 s per block" in default


def test_prompt_names_the_native_fence_when_l2_and_l3_are_both_allowed():
    both = prompts.system_prompt(("l1", "l2", "l3"))
    assert "```native" in both and "code in ```repl blocks runs in a sandboxed" in both
    only3 = prompts.system_prompt(("l1", "l3"))
    assert "code in ```repl blocks runs in a full CPython" in only3


def test_the_engine_sends_the_configured_limits_in_its_prompt():
    cfg = Config()
    cfg.code.l2_time_limit_s = 9
    model = ScriptedProvider(['{"op": "final", "answer": "x"}'])
    RLM(model=model, levels="l1,l2", config=cfg).run("q", "some text")
    assert "9 s at most" in model.requests[0][0]["content"]


# ---------------------------------------------------------------------- code regex timeout
def test_code_cell_regex_uses_regex_timeout_s():
    cfg = Config()
    cfg.regex_timeout_s = 0.2
    cell = "```repl\ntry:\n    regex('(a+)+$', max=None)\nexcept Exception as e:\n    print('stopped:', e)\n```"
    model = ScriptedProvider([cell, '{"op": "final", "answer": "x"}'])
    res = RLM(model=model, levels="l1,l2", config=cfg).run("q", "a" * 40 + "b")
    out = [s.output for s in res.steps if s.level == "l2"][0]
    assert "stopped" in out and "0.2" in out, out
