"""Host safety outside the code levels: safe server defaults, contexts that are not regular
files, the run store's permissions and paths, the CLI's one-line refusals (issue #17)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import LiveServer, write_script

from contextbox.config import Config
from contextbox.context import Context, read_text_file
from contextbox.errors import ContextError, UsageError
from contextbox.providers.base import ProviderConfig
from contextbox.server import create_app
from contextbox.server.security import HostMiddleware, check_bind, is_loopback, self_loop
from contextbox.stores.jsonl import JsonlRunStore
from contextbox.stores.sqlite import SqliteRunStore
from contextbox.types import Event

RLM = str(Path(sys.executable).with_name("rlm"))


def rlm(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTEXTBOX_RUNS_DIR": "", **kw.pop("env", {})}
    env.pop("CONTEXTBOX_MODEL", None)
    env.pop("CONTEXTBOX_TOKEN", None)
    return subprocess.run([RLM, *args], capture_output=True, text=True, env=env, timeout=timeout, **kw)


def no_hang(fn: Callable[[], Any], fifo: Path, seconds: float = 10) -> Any:
    """Run ``fn``; if it is still blocked on ``fifo`` after ``seconds``, unblock it and fail."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer that closes: the reader gets EOF
        t.join(5)
        pytest.fail(f"blocked on the FIFO {fifo} for {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------------- contexts that are not regular files
def test_context_load_refuses_a_fifo_and_a_device_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ContextError, match="is a FIFO, not a regular file"):
        no_hang(lambda: Context.load(fifo), fifo)
    with pytest.raises(ContextError, match="is a FIFO, not a regular file"):
        no_hang(lambda: read_text_file(fifo), fifo)
    with pytest.raises(ContextError, match="is a character device"):
        Context.load("/dev/zero")


def test_directory_walk_skips_fifos_without_opening_them(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\n")
    os.mkfifo(tmp_path / "b.fifo")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "c")
    (tmp_path / "link").symlink_to(tmp_path / "b.fifo")  # a link to a FIFO too
    ctx = no_hang(lambda: Context.load(tmp_path), tmp_path / "b.fifo")
    assert [d.path for d in ctx.documents] == ["a.txt"] and ctx.text == "alpha\n"


def test_cli_refuses_fifo_and_dev_zero_with_exit_2_and_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((str(fifo), "a FIFO"), ("/dev/zero", "a character device")):
        p = rlm("ask", "q", "-c", path, "--model", "scripted:/nonexistent", "--runs-dir", str(tmp_path / "r"),
                timeout=20)
        assert p.returncode == 2, (path, p.stderr)
        assert p.stderr.count("\n") == 1 and kind in p.stderr and "Traceback" not in p.stderr, p.stderr


# ---------------------------------------------------------------------- the run store
def test_runs_dir_naming_a_file_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    ctx = tmp_path / "c.txt"
    ctx.write_text("hello\n")
    for args in (["ask", "q", "-c", str(ctx), "--model", "scripted:/x", "--runs-dir", str(f)],
                 ["runs", "--runs-dir", str(f), "list"]):
        p = rlm(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and "not a directory" in p.stderr and "Traceback" not in p.stderr
    with pytest.raises(UsageError, match="not a directory"):
        SqliteRunStore(f / "runs.sqlite")


def test_run_store_files_are_private(tmp_path: Path) -> None:
    os.umask(0o022)
    runs = tmp_path / "new" / "runs"
    store = SqliteRunStore(runs / "runs.sqlite")
    ev = Event("run_start", {"question": "secret question"}, run_id="r1", seq=0, path="0", ts=time.time())
    store.append(ev)
    jl = JsonlRunStore(tmp_path / "jsonl")
    jl.append(ev)
    jl.close()
    assert stat.S_IMODE(runs.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "jsonl").stat().st_mode) == 0o700
    for f in [runs / "runs.sqlite", runs / "runs.sqlite-wal", runs / "runs.sqlite-shm", tmp_path / "jsonl" / "r1.jsonl"]:
        assert f.exists(), f
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
    store.close()


def test_cli_run_files_are_private(tmp_path: Path) -> None:
    ctx = tmp_path / "c.txt"
    ctx.write_text("the key is 99\n")
    model = tmp_path / "s.json"
    model.write_text(json.dumps([json.dumps({"op": "find", "text": "key"}), json.dumps({"op": "final", "answer": "99"})]))
    runs = tmp_path / "runs"
    p = rlm("ask", "key?", "-c", str(ctx), "--model", f"scripted:{model}", "--runs-dir", str(runs))
    assert p.returncode == 0, p.stderr
    files = list(runs.iterdir())
    assert {f.suffix for f in files} >= {".jsonl", ".sqlite"}
    assert stat.S_IMODE(runs.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [(f.name, oct(f.stat().st_mode)) for f in files]


# ---------------------------------------------------------------------- server: binding and Host
def test_loopback_and_bind_rules() -> None:
    for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"):
        assert is_loopback(h), h
        check_bind(h, None)
    for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", ""):
        assert not is_loopback(h), h
        with pytest.raises(UsageError, match="needs a token"):
            check_bind(h, None)
        check_bind(h, "tok")


def test_cli_serve_on_a_public_address_without_token_exits_2(tmp_path: Path) -> None:
    p = rlm("serve", "--host", "0.0.0.0", "--port", "1", "--runs-dir", str(tmp_path / "r"), timeout=30)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "needs a token" in p.stderr, p.stderr


def test_default_port_is_not_llamacpp_and_readme_says_so() -> None:
    assert Config().server.port == 8765
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "--port 8765" in readme and "port = 8765" in readme and "--port 8080" not in readme


@pytest.mark.parametrize("host,ok", [
    ("127.0.0.1:8765", True), ("127.0.0.1", True), ("localhost:8765", True), ("LOCALHOST", True),
    ("[::1]:8765", True), ("[::1]", True), ("rlm.internal", True), ("rlm.internal:8765", True),
    ("proxy.example:443", True),
    ("127.0.0.1:9999", False), ("evil.example:8765", False), ("evil.example", False), ("", False),
    ("127.0.0.1:x", False), ("[::1", False), ("localhost.evil.example", False), ("proxy.example", False),
])
def test_host_rules(host: str, ok: bool) -> None:
    mw = HostMiddleware(None, bind_host="127.0.0.1", port=8765, allowed_hosts=["rlm.internal", "proxy.example:443"],
                        token=None)
    assert mw.allowed(host, 8765) is ok


def test_host_rules_for_wildcard_binds() -> None:
    open_any = HostMiddleware(None, bind_host="0.0.0.0", port=8765, allowed_hosts=[], token="t")
    assert open_any.allowed("10.1.2.3:8765", 8765) and open_any.allowed("whatever", 8765)
    listed = HostMiddleware(None, bind_host="0.0.0.0", port=8765, allowed_hosts=["rlm.example"], token="t")
    assert listed.allowed("rlm.example", 8765) and not listed.allowed("other.example", 8765)
    bound = HostMiddleware(None, bind_host="10.0.0.7", port=8765, allowed_hosts=[], token="t")
    assert bound.allowed("10.0.0.7:8765", 8765) and not bound.allowed("10.0.0.8:8765", 8765)
    with pytest.raises(UsageError, match="allowed_hosts"):
        HostMiddleware(None, bind_host="127.0.0.1", port=1, allowed_hosts=["a:b:c:"], token=None)


def _live_config(tmp_path: Path, **server: Any) -> Config:
    cfg = Config()
    cfg.runs_dir = tmp_path / "runs"
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    cfg.server.roots = [str(root)]
    for k, v in server.items():
        setattr(cfg.server, k, v)
    return cfg


def _raw_post(port: int, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """A POST with exactly these headers (a browser after DNS rebinding sends its own Host)."""
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


def test_dns_rebinding_is_refused_on_a_tokenless_live_server(tmp_path: Path) -> None:
    cfg = _live_config(tmp_path)
    script = write_script(tmp_path / "root" / "s.json")
    app = create_app(cfg)
    try:
        with LiveServer(app) as live:
            port = live.port
            body = json.dumps({"question": "q", "context": "the key is 42", "model": f"scripted:{script}"}).encode()
            evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}",
                    "Content-Type": "application/json"}
            status, text = _raw_post(port, "/v1/runs", evil, body)
            assert status == 403 and "evil.example" in text and "allowed_hosts" in text
            with httpx.Client(timeout=10) as c:  # reading runs is refused the same way
                r = c.get(f"http://127.0.0.1:{port}/v1/runs", headers={"Host": f"evil.example:{port}"})
                assert r.status_code == 403
            assert app.state.store.count_runs() == 0
            ok = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"}
            status, text = _raw_post(port, "/v1/runs", ok, body)
            assert status == 202, text
            ok["Host"], ok["Origin"] = f"localhost:{port}", f"http://localhost:{port}"
            assert _raw_post(port, "/v1/runs", ok, body)[0] == 202
            wrong_port = {"Host": f"127.0.0.1:{port + 1}", "Content-Type": "application/json"}
            assert _raw_post(port, "/v1/runs", wrong_port, body)[0] == 403
    finally:
        app.state.manager.shutdown(5)
        app.state.store.close()


def test_allowed_hosts_config_key_is_served(tmp_path: Path) -> None:
    cfg = _live_config(tmp_path, allowed_hosts=["rlm.lan"])
    app = create_app(cfg)
    try:
        with LiveServer(app) as live, httpx.Client(timeout=10) as c:
            assert c.get(f"{live.url}/v1/runs", headers={"Host": f"rlm.lan:{live.port}"}).status_code == 200
            assert c.get(f"{live.url}/v1/runs", headers={"Host": f"rlm2.lan:{live.port}"}).status_code == 403
    finally:
        app.state.manager.shutdown(5)
        app.state.store.close()


# ---------------------------------------------------------------------- server: bad paths and bodies
def _asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=30)


def test_context_path_fifo_device_and_long_names_get_400(tmp_path: Path) -> None:
    cfg = _live_config(tmp_path)
    root = tmp_path / "root"
    os.mkfifo(root / "pipe")
    (root / "zero").symlink_to("/dev/zero")
    cfg.server.roots.append("/dev")
    app = create_app(cfg)

    async def go() -> None:
        async with _asgi(app) as c:
            for path, needle in (("pipe", "FIFO"), (str(root / "pipe"), "FIFO"), ("/dev/zero", "character device"),
                                 ("a" * 4096, "too long"), ("a" * 300 + "/b", "too long")):
                for url, body in (("/v1/runs", {"question": "q", "context_path": path, "model": "x/y"}),
                                  ("/v1/chat/completions", {"model": "rlm", "context_path": path,
                                                           "messages": [{"role": "user", "content": "q"}]})):
                    r = await asyncio.wait_for(c.post(url, json=body), 10)
                    assert r.status_code == 400, (url, path[:20], r.text[:200])
                    assert needle in r.text and len(r.text) < 600, r.text[:300]

    try:
        no_hang(lambda: asyncio.run(go()), root / "pipe", 30)
    finally:
        app.state.manager.shutdown(5)
        app.state.store.close()


def test_deeply_nested_json_bodies_get_400(tmp_path: Path) -> None:
    app = create_app(_live_config(tmp_path))
    deep = "[" * 200_000 + "]" * 200_000
    bodies = [deep, '{"question": "q", "context": ' + deep + "}",
              '{"question": "q", "context": "x", "limits": ' + '{"a": ' * 5000 + "1" + "}" * 5001]

    async def go() -> None:
        async with _asgi(app) as c:
            for url in ("/v1/runs", "/v1/chat/completions"):
                for body in bodies:
                    r = await c.post(url, content=body, headers={"Content-Type": "application/json"})
                    assert r.status_code == 400, (url, r.status_code, r.text[:200])
                    assert "nested too deeply" in r.text or "invalid" in r.text
            files = {"file": ("c.txt", b"ctx")}
            r = await c.post("/v1/runs", files=files, data={"question": "q", "limits": '{"a":' * 5000 + "1" + "}" * 5000})
            assert r.status_code == 400

    try:
        asyncio.run(go())
    finally:
        app.state.manager.shutdown(5)
        app.state.store.close()


# ---------------------------------------------------------------------- server: a provider that is the server itself
def test_self_loop_detection() -> None:
    llamacpp = "llamacpp/qwen"
    assert self_loop(llamacpp, [], "127.0.0.1", 8080) == "http://127.0.0.1:8080/v1"
    assert self_loop(llamacpp, [], "127.0.0.1", 8765) is None
    mine = [ProviderConfig("me", base_url="http://localhost:9000/v1"), ProviderConfig("me", base_url="http://h:1")]
    assert self_loop("me/m", mine, "0.0.0.0", 9000) == "http://localhost:9000/v1"
    assert self_loop("me/m", mine, "127.0.0.1", 9001) is None
    assert self_loop("ollama/x", [], "127.0.0.1", 11434) is not None
    assert self_loop("openai/gpt", [], "127.0.0.1", 443) is None  # api.openai.com is not this server
    assert self_loop("scripted:/x", [], "127.0.0.1", 8080) is None and self_loop(None, [], "h", 1) is None


def test_server_refuses_runs_and_start_with_a_model_calling_itself(tmp_path: Path) -> None:
    cfg = _live_config(tmp_path, port=8080)
    cfg.model = "llamacpp/qwen"
    with pytest.raises(UsageError, match="would call this server itself"):
        create_app(cfg)
    cfg.model = None
    app = create_app(cfg)

    async def go() -> None:
        async with _asgi(app) as c:
            for body in ({"question": "q", "context": "x", "model": "llamacpp/qwen"},
                         {"question": "q", "context": "x", "model": "openai/gpt-4o-mini", "sub_model": "llamacpp/q"}):
                r = await c.post("/v1/runs", json=body, headers={"Host": "127.0.0.1:8080"})
                assert r.status_code == 400 and "would call this server itself" in r.json()["detail"], r.text
            r = await c.post("/v1/chat/completions", headers={"Host": "127.0.0.1:8080"},
                             json={"model": "rlm:llamacpp/q", "messages": [{"role": "user", "content": "q"}],
                                   "context": "x"})
            assert r.status_code == 400 and "would call this server itself" in r.text
            assert app.state.store.count_runs() == 0

    try:
        asyncio.run(go())
    finally:
        app.state.manager.shutdown(5)
        app.state.store.close()


def test_cli_serve_refuses_a_default_model_calling_itself(tmp_path: Path) -> None:
    p = rlm("serve", "--port", "8080", "--model", "llamacpp/qwen", "--runs-dir", str(tmp_path / "r"), timeout=30)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "would call this server itself" in p.stderr, p.stderr
