"""The rlms baseline on the same model: the server launcher, and whole bench runs with rlm, direct and rlms.

The llama.cpp server is stood in for by the fake OpenAI server in a process of its own
(tests/fake_openai_server.py), started through the same :class:`ServerProcess`; ``rlms`` itself is
the real package (the ``bench`` extra) and runs its REPL on the real context.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from contextbox.bench.llama_server import ServerError, ServerProcess, free_port, llama_server
from contextbox.bench.runner import BenchOptions, Runner, dry_run_rlm_replies, run_bench
from contextbox.bench.tasks import Lines, generate

FAKE = Path(__file__).with_name("fake_openai_server.py")

#: what the stand-in server answers every rlms call with: code that counts the distinct IPs of a log
UNIQUE_IPS_REPLY = """I will count the distinct client IP addresses (the fourth field of each line).
```repl
ips = set()
for line in context.splitlines():
    parts = line.split()
    if len(parts) > 3:
        ips.add(parts[3])
answer["content"] = str(len(ips))
answer["ready"] = True
```"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def fake_server(tmp_path: Path, reply: str | None = None, child: bool = False) -> ServerProcess:
    args: list[str] = []
    if reply is not None:
        (tmp_path / "reply.txt").write_text(reply)
        args += ["--reply-file", str(tmp_path / "reply.txt")]
    if child:
        args += ["--child-pid-file", str(tmp_path / "child.pid")]
    return ServerProcess(lambda port: [sys.executable, str(FAKE), "--port", str(port), "--model", "fake-gguf", *args],
                         ready_timeout_s=30, log_path=tmp_path / "server.log")


def test_server_starts_reports_its_model_and_stop_kills_its_group(tmp_path):
    srv = fake_server(tmp_path, child=True)
    with srv as ep:
        assert ep.model == "fake-gguf" and ep.base_url.startswith("http://127.0.0.1:") and ep.base_url.endswith("/v1")
        with urllib.request.urlopen(ep.base_url + "/models", timeout=5) as r:
            assert json.load(r)["data"][0]["id"] == "fake-gguf"
        pid, child = srv.pid, int((tmp_path / "child.pid").read_text())
        assert alive(pid) and alive(child)
        assert os.getpgid(pid) == pid != os.getpgid(0)  # a group of its own, not ours
    assert srv.proc is None and gone(pid) and gone(child), "the server's process group outlived stop()"
    srv.stop()  # stopping twice is harmless


def test_server_that_exits_says_why(tmp_path):
    srv = ServerProcess(lambda port: [sys.executable, "-c", "print('cannot load model x.gguf'); raise SystemExit(3)"],
                        log_path=tmp_path / "s.log")
    with pytest.raises(ServerError, match=r"exited with code 3 .*cannot load model x\.gguf"):
        srv.start()


def test_server_that_never_answers_times_out_and_is_killed(tmp_path):
    srv = ServerProcess(lambda port: [sys.executable, "-c", "import time; time.sleep(120)"], ready_timeout_s=1.0)
    t = time.monotonic()
    with pytest.raises(ServerError, match="did not answer"):
        srv.start()
    assert time.monotonic() - t < 15 and gone(srv.last_pid)


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_llama_server_command_matches_the_in_process_model():
    argv = llama_server("/models/m.gguf", n_ctx=16384, n_threads=3).command(4321)
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags == {"--model": "/models/m.gguf", "--model_alias": "m", "--host": "127.0.0.1", "--port": "4321",
                     "--n_ctx": "16384", "--n_threads": "3", "--n_threads_batch": "3", "--chat_format": "chatml",
                     "--verbose": "False"}


def test_local_model_spec_gets_a_llama_server_for_rlms(tmp_path):
    """``--model local:PATH`` → rlms runs, through a llama.cpp server on that GGUF (nothing is loaded here)."""
    runner = Runner(BenchOptions(["logs"], model="local:/models/m.gguf", baselines=["rlms"], rlm=False, out=tmp_path))
    assert [m for m, _ in runner.methods()] == ["rlms"] and runner._server_wanted
    srv = runner._default_server()
    argv = srv.command(5555)
    assert "llama_cpp.server" in argv and argv[argv.index("--model") + 1] == "/models/m.gguf"
    assert srv.log_path == tmp_path / "rlms-server.log"


def _scripted(tmp_path: Path, suites: list[str], lengths: list[int], seed: int, data: Path) -> str:
    """A scripted model for the rlm runs (look, then the gold answer) and one direct reply per task."""
    replies: list[str] = []
    for s in suites:
        tasks = generate(s, 1, seed, lengths, data)
        for t in tasks:
            replies += dry_run_rlm_replies(t)
        replies += ["I cannot tell."] * len(tasks)
    path = tmp_path / "script.json"
    path.write_text(json.dumps(replies))
    return f"scripted:{path}"


def test_one_run_records_rlm_direct_and_rlms_and_stops_the_server(tmp_path, bench_data):
    """The harness end to end on four suites: rlm and direct on the scripted model, rlms (the real
    package) on a server the run starts and stops; the report has all three methods."""
    suites = ["logs", "oolong", "oolong-pairs", "detective"]
    servers: list[ServerProcess] = []

    def factory() -> ServerProcess:
        servers.append(fake_server(tmp_path, UNIQUE_IPS_REPLY))
        return servers[-1]

    out = tmp_path / "out"
    model = _scripted(tmp_path, suites, [8000], 1, bench_data)
    run_bench(BenchOptions(suites, model=model, n=1, seed=1, lengths=[8000], baselines=["direct", "rlms"], out=out,
                           data=bench_data, rlms_server=factory, window_tokens=1000, max_iterations=3,
                           timeout_s=120))
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["suite"], r["method"]) for r in recs] == [(s, m) for s in suites for m in ("rlm", "direct", "rlms")]
    assert all(r["correct"] for r in recs if r["method"] == "rlm")
    for r in (r for r in recs if r["method"] == "rlms"):
        assert r["status"] == "answered" and r["iterations"] == 1 and r["tokens"] > 300 and r["elapsed_s"] > 0
        assert r["endpoint_model"] == "fake-gguf" and r["wall_s"] >= r["elapsed_s"]
    logs_rlms = recs[2]
    assert logs_rlms["meta"]["qtype"] == "unique_ips"  # the reply's code computed the real answer in rlms' REPL
    assert logs_rlms["answer"].strip() == str(logs_rlms["gold"]) and logs_rlms["correct"]
    assert not any(r["correct"] for r in recs[3:] if r["method"] == "rlms")  # the same code is wrong elsewhere
    (srv,) = servers
    assert srv.proc is None and gone(srv.last_pid)
    inv = json.loads((out / "meta.json").read_text())["invocations"][0]
    assert inv["methods"] == ["rlm", "direct", "rlms"] and not inv["skipped"]
    assert inv["rlms_endpoint"]["model"] == "fake-gguf" and inv["lengths"]["logs"] == ["8000"]
    report = (out / "report.md").read_text()
    for s in suites:
        for m in ("rlm", "direct", "rlms"):
            assert f"| {s} | {m} |" in report
    assert "`rlms` ran on a server started for this run: model `fake-gguf`" in report


def test_server_is_stopped_when_the_run_is_interrupted(tmp_path, bench_data):
    servers: list[ServerProcess] = []

    def factory() -> ServerProcess:
        servers.append(fake_server(tmp_path, UNIQUE_IPS_REPLY))
        return servers[-1]

    def ctrl_c(rec: dict) -> None:
        raise KeyboardInterrupt

    model = _scripted(tmp_path, ["logs"], [Lines(200)], 1, bench_data)
    opts = BenchOptions(["logs"], model=model, n=1, seed=1, lengths=[Lines(200)], baselines=["rlms"],
                        out=tmp_path / "o", data=bench_data, rlms_server=factory)
    with pytest.raises(KeyboardInterrupt):
        Runner(opts, on_record=ctrl_c).run()
    assert servers and gone(servers[0].last_pid)


def test_server_that_fails_to_start_is_a_recorded_skip(tmp_path, bench_data):
    def factory() -> ServerProcess:
        return ServerProcess(lambda port: [sys.executable, "-c", "raise SystemExit(7)"])

    out = tmp_path / "o"
    model = _scripted(tmp_path, ["logs"], [Lines(200)], 1, bench_data)
    run_bench(BenchOptions(["logs"], model=model, n=1, seed=1, lengths=[Lines(200)], baselines=["direct", "rlms"],
                           out=out, data=bench_data, rlms_server=factory))
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in recs] == ["rlm", "direct"]
    inv = json.loads((out / "meta.json").read_text())["invocations"][0]
    assert "did not start" in inv["skipped"]["rlms"] and "code 7" in inv["skipped"]["rlms"]
    assert "baseline `rlms` skipped: the model server for rlms did not start" in (out / "report.md").read_text()


def test_rlms_not_installed_is_a_recorded_skip_with_the_fix(tmp_path, bench_data):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named rlm' >&2\nexit 1\n")
    python.chmod(0o755)
    out = tmp_path / "o"
    model = _scripted(tmp_path, ["logs"], [Lines(200)], 1, bench_data)
    run_bench(BenchOptions(["logs"], model=model, n=1, seed=1, lengths=[Lines(200)], baselines=["rlms"], out=out,
                           data=bench_data, peer_python=str(python), rlms_server=lambda: pytest.fail("started")))
    inv = json.loads((out / "meta.json").read_text())["invocations"][0]
    assert inv["methods"] == ["rlm"]
    assert "not importable" in inv["skipped"]["rlms"] and "contextbox[bench]" in inv["skipped"]["rlms"]
    assert "baseline `rlms` skipped" in (out / "report.md").read_text()


@pytest.mark.local_model
def test_real_llama_server_on_the_embedded_model(tmp_path):
    """The real thing, briefly: serve the embedded GGUF, one 5-token completion, stop."""
    if os.environ.get("CONTEXTBOX_SKIP_LOCAL") == "1":
        pytest.skip("CONTEXTBOX_SKIP_LOCAL=1")
    from contextbox.local_model import ensure_model

    srv = llama_server(ensure_model(), log_path=tmp_path / "llama.log", ready_timeout_s=240)
    with srv as ep:
        body = json.dumps({"model": ep.model, "messages": [{"role": "user", "content": "Say hi"}],
                           "max_tokens": 5, "temperature": 0}).encode()
        req = urllib.request.Request(ep.base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            reply = json.load(r)
    assert ep.model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert reply["usage"]["completion_tokens"] <= 5 and reply["choices"][0]["message"]["content"]
    assert gone(srv.last_pid)


def test_rlms_timeout_keeps_tokens_and_the_reason(tmp_path, bench_data):
    """A run rlms stops on its time limit is a failure with its reason and the tokens it spent, never a silent 0."""
    slow = "Thinking.\n```repl\nimport time\ntime.sleep(2.5)\nprint(len(context))\n```"
    (t,) = generate("logs", 1, 1, [Lines(200)], bench_data)
    runner = Runner(BenchOptions(["logs"], model="scripted:/dev/null", out=tmp_path, timeout_s=1.0,
                                 max_iterations=5))
    with fake_server(tmp_path, slow) as ep:
        rec = runner.run_rlms(t, {"model": ep.model, "base_url": ep.base_url, "api_key": ep.api_key})
    assert rec["status"] == "failed" and rec["reason"].startswith("TimeoutExceededError")
    assert rec["iterations"] == 1 and rec["tokens"] > 300 and rec["elapsed_s"] >= 2.5


def test_rlms_killed_mid_iteration_still_reports_the_tokens_spent(tmp_path, bench_data, monkeypatch):
    from contextbox.bench import peer

    monkeypatch.setattr(peer, "PEER_GRACE_S", 3.0)  # room for the peer's start on a loaded machine
    stuck = "Working.\n```repl\nimport time\ntime.sleep(60)\n```"
    (t,) = generate("logs", 1, 1, [Lines(200)], bench_data)
    runner = Runner(BenchOptions(["logs"], model="scripted:/dev/null", out=tmp_path, timeout_s=2.0))
    with fake_server(tmp_path, stuck) as ep:
        rec = runner.run_rlms(t, {"model": ep.model, "base_url": ep.base_url, "api_key": ep.api_key})
    assert rec["status"] == "failed" and rec["reason"].startswith("killed after 5.0s")
    assert rec["tokens"] > 300 and 5.0 <= rec["wall_s"] < 40 and rec["answer"] is None
