"""The real ``rlm`` entry point, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RLM = str(Path(sys.executable).with_name("rlm"))


def rlm(*args: str, env: dict | None = None, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    e = {**os.environ, "CONTEXTBOX_RUNS_DIR": "", **(env or {})}
    e.pop("CONTEXTBOX_MODEL", None)
    return subprocess.run([RLM, *args], capture_output=True, text=True, env=e, input=stdin, cwd=cwd, timeout=120)


def script(tmp_path: Path, *replies) -> str:
    p = tmp_path / f"script{len(list(tmp_path.glob('script*')))}.json"
    p.write_text(json.dumps([r if isinstance(r, str) else json.dumps(r) for r in replies]))
    return f"scripted:{p}"


def test_regex_then_final_over_war_and_peace(tmp_path, war_and_peace):
    runs = tmp_path / "runs"
    model = script(tmp_path, {"op": "regex", "pattern": r"Prince (\w+) Bolk\w+", "max": 5},
                   {"op": "final", "answer": "Andrew"})
    p = rlm("ask", "Which Prince Bolkonski?", "-c", str(war_and_peace), "--model", model, "--json",
            "--runs-dir", str(runs))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["answer"] == "Andrew" and out["status"] == "answered" and out["iterations"] == 2
    assert out["usage"]["total"]["calls"] == 2 and out["run_id"]
    regex_step = out["steps"][0]
    assert regex_step["op"] == "regex" and "Prince Andrew Bolkónski" in regex_step["output"]
    # the run log holds the regex output, and the next model request carried it
    log = [json.loads(x) for x in (runs / f"{out['run_id']}.jsonl").read_text().splitlines()]
    ends = [e for e in log if e["type"] == "action_end" and e["data"]["op"] == "regex"]
    assert "Prince Andrew Bolkónski" in ends[0]["data"]["output"]
    req2 = [e for e in log if e["type"] == "lm_request" and e["data"]["iteration"] == 2][0]
    assert "Prince Andrew Bolkónski" in req2["data"]["message"]
    assert log[-1]["type"] == "run_end"


def test_answer_alone_on_stdout(tmp_path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("the key is 99\n")
    model = script(tmp_path, {"op": "find", "text": "key"}, {"op": "final", "answer": "99"})
    p = rlm("ask", "key?", "-c", str(ctx), "--model", model, "--runs-dir", str(tmp_path / "r"))
    assert p.returncode == 0 and p.stdout == "99\n"
    assert "answered" in p.stderr


def test_malformed_command_is_answered_and_run_continues(tmp_path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("the key is 99\n")
    model = script(tmp_path, '{"op": "find", "txt": "key"}', "{not json", {"op": "find", "text": "key"},
                   {"op": "final", "answer": "99"})
    p = rlm("ask", "key?", "-c", str(ctx), "--model", model, "--json", "--runs-dir", str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["iterations"] == 4 and out["answer"] == "99"
    assert "find has no argument 'txt'" in out["steps"][0]["output"]


def test_missing_context_file_exits_2_one_line(tmp_path):
    p = rlm("ask", "q", "-c", str(tmp_path / "nope.txt"), "--model", script(tmp_path, "x"))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "not found" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["ask", "q", "--bogus"], "unrecognized arguments"),
    (["ask", "q", "-c", "x", "--max-iterations", "zero"], "whole number"),
    (["ask", "q", "-c", "{ctx}", "--model", "nosuchmodel"], "unknown model"),
    (["ask", "q", "-c", "{ctx}", "--model", "nope/x"], "unknown provider 'nope'"),
    (["ask", "q", "-c", "{ctx}", "--model", "scripted:/no/such.json"], "scripted model file not found"),
    (["ask", "q", "-c", "{ctx}", "--levels", "l7", "--model", "scripted:x"], "unknown level"),
    (["ask", "q"], "no context given"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, needle):
    ctx = tmp_path / "c.txt"
    ctx.write_text("x")
    p = rlm(*[a.replace("{ctx}", str(ctx)) for a in args])
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_no_answer_exits_1_with_partial(tmp_path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("abc\n")
    model = script(tmp_path, {"op": "find", "text": "a"}, "probably abc")
    p = rlm("ask", "q", "-c", str(ctx), "--model", model, "--max-iterations", "2", "--runs-dir", str(tmp_path))
    assert p.returncode == 1
    assert p.stdout == ""  # stdout holds a final answer only
    assert "partial answer (not final): probably abc" in p.stderr and "max_iterations" in p.stderr
    p = rlm("ask", "q", "-c", str(ctx), "--model", model, "--max-iterations", "2", "--runs-dir", str(tmp_path),
            "--json")
    out = json.loads(p.stdout)
    assert out["answer"] == "probably abc" and out["partial"] is True and out["status"] == "max_iterations"


def test_failed_run_is_recorded(tmp_path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("abc\n")
    runs = tmp_path / "runs"
    p = rlm("ask", "q", "-c", str(ctx), "--model", script(tmp_path, {"op": "find", "text": "a"}),
            "--runs-dir", str(runs), "--json")
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["status"] == "failed" and "exhausted" in out["reason"]
    listing = rlm("runs", "--runs-dir", str(runs), "list")
    assert out["run_id"] in listing.stdout and "failed" in listing.stdout


def test_stdin_context_and_runs_show(tmp_path):
    runs = tmp_path / "runs"
    model = script(tmp_path, {"op": "count", "what": "lines"}, {"op": "final", "answer": "3"})
    p = rlm("ask", "how many lines?", "-c", "-", "--model", model, "--runs-dir", str(runs), "--json",
            stdin="a\nb\nc\n")
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    show = rlm("runs", "show", run_id, "--runs-dir", str(runs))
    assert show.returncode == 0
    assert "count of lines: 3" in show.stdout and "FINAL: 3" in show.stdout
    raw = rlm("runs", "show", run_id, "--json", "--runs-dir", str(runs))
    assert [json.loads(x)["type"] for x in raw.stdout.splitlines()][-1] == "run_end"
    missing = rlm("runs", "show", "nope", "--runs-dir", str(runs))
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_directory_context_with_globs(tmp_path):
    d = tmp_path / "proj"
    (d / "sub").mkdir(parents=True)
    (d / "a.py").write_text("def alpha(): pass\n")
    (d / "sub" / "b.py").write_text("def beta(): pass\n")
    (d / "notes.md").write_text("beta notes\n")
    model = script(tmp_path, {"op": "find", "text": "beta"}, {"op": "final", "answer": "sub/b.py"})
    p = rlm("ask", "where is beta?", "-c", str(d), "--include", "*.py", "--model", model, "--json",
            "--runs-dir", str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)["steps"][0]["output"]
    assert "sub/b.py: line" in out and "notes.md" not in out


def test_config_show_masks_secrets(tmp_path):
    (tmp_path / "contextbox.toml").write_text(
        '[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "FAKE_KEY"\n')
    p = rlm("config", "show", env={"FAKE_KEY": "sk-supersecret-abcd"}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "supersecret" not in p.stdout and "sk-…abcd" in p.stdout and "FAKE_KEY" in p.stdout


def test_openai_compatible_provider_through_cli(tmp_path, fake_llm):
    fake_llm.replies = [json.dumps({"op": "find", "text": "key"}), json.dumps({"op": "final", "answer": "99"})]
    (tmp_path / "contextbox.toml").write_text(
        f'[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "{fake_llm.base_url}"\n'
        'api_key_env = "FAKE_KEY"\n')
    ctx = tmp_path / "c.txt"
    ctx.write_text("the key is 99\n")
    p = rlm("ask", "key?", "-c", str(ctx), "--model", "fake/m", "--json", "--runs-dir", str(tmp_path / "r"),
            env={"FAKE_KEY": "k"}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["answer"] == "99"
    assert out["usage"]["total"]["input_tokens"] == fake_llm.prompt_tokens_total
    assert out["usage"]["total"]["output_tokens"] == fake_llm.completion_tokens_total
    assert not out["usage"]["total"]["estimated"]


def test_auth_error_names_the_variable(tmp_path, fake_llm):
    (tmp_path / "contextbox.toml").write_text(
        f'[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "{fake_llm.base_url}"\napi_key_env = "FAKE_KEY"\n')
    ctx = tmp_path / "c.txt"
    ctx.write_text("x\n")
    e = {k: v for k, v in os.environ.items() if k != "FAKE_KEY"}
    p = subprocess.run([RLM, "ask", "q", "-c", str(ctx), "--model", "fake/m", "--runs-dir", str(tmp_path / "r")],
                       capture_output=True, text=True, env=e, cwd=tmp_path, timeout=60)
    assert p.returncode == 2  # a usage error, found before anything is sent
    assert "FAKE_KEY" in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
