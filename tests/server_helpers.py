"""What the server tests share: a scripted model, the app with its clean-up, ASGI and live clients,
SSE parsing, a fake provider, and ``rlm serve`` as a real process that can be killed and started again.

Used by test_server.py, test_chat_safety.py, test_host_safety.py and the browser tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fakeserver import FakeLLMServer

from contextbox.config import Config
from contextbox.providers.base import ProviderConfig
from contextbox.server import create_app

RLM_BIN = str(Path(sys.executable).with_name("rlm"))
CONTEXT = "alpha beta\ngamma delta\nthe key is 42\n" * 3


def cmd(op: str, **args: Any) -> str:
    return json.dumps({"op": op, **args})


def write_script(path: Path, answer: str = "42", finds: int = 1) -> Path:
    replies = [cmd("find", text=f"key{i}" if i else "key") for i in range(finds)] + [cmd("final", answer=answer)]
    path.write_text(json.dumps(replies))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app under a real uvicorn, in a thread, on 127.0.0.1."""

    def __init__(self, app: Any):
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def server_env(tmp_path: Path) -> dict[str, Any]:
    """A root folder with the context and a scripted model, a secret outside it, a config serving the root."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "doc.txt").write_text(CONTEXT)
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret is 7\n")
    script = write_script(root / "script.json")
    cfg = Config()
    cfg.runs_dir = tmp_path / "runs"
    cfg.server.roots = [str(root)]
    cfg.server.allowed_hosts = ["test"]  # the ASGI test client's Host
    return {"tmp": tmp_path, "root": root, "secret": secret, "script": script, "config": cfg,
            "model": f"scripted:{script}"}


def make_app(env: dict[str, Any], **kw: Any) -> Any:
    app = create_app(env["config"], **kw)
    env.setdefault("apps", []).append(app)
    return app


def close_apps(env: dict[str, Any]) -> None:
    """Shut down every app :func:`make_app` made for ``env`` (its runs, its store)."""
    for app in env.get("apps", []):
        app.state.manager.shutdown(5)
        app.state.store.close()


def client(app: Any, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers,
                             timeout=30)


def parse_sse(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k] = v[1:] if v.startswith(" ") else v
        if "data" in fields:
            ev = json.loads(fields["data"])
            ev["_id"] = fields.get("id")
            out.append(ev)
    return out


async def wait_done(c: httpx.AsyncClient, rid: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = (await c.get(f"/v1/runs/{rid}")).json()
        if r["status"] not in ("queued", "running") and not r["active"]:
            return r
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {rid} did not finish")


def fake_config(env: dict[str, Any], srv: FakeLLMServer) -> Config:
    cfg = env["config"]
    cfg.providers = [ProviderConfig("fake", "openai", srv.base_url, None, max_retries=0)]
    return cfg


def slow_finds(n: int, answer: str = "done"):
    """Fake-LLM replies: n different finds, then the answer."""
    count = {"n": 0}
    lock = threading.Lock()

    def reply(_req: dict[str, Any]) -> str:
        with lock:
            count["n"] += 1
            k = count["n"]
        return cmd("find", text=f"w{k}") if k <= n else cmd("final", answer=answer)

    return reply


def wait_health(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rlm serve exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("rlm serve did not come up")


class RlmServe:
    """``rlm serve`` as a real process on a free port, its provider ``fake`` the fake LLM server
    ``srv``, its store ``db``; start it, kill it, start it again as a test needs."""

    def __init__(self, tmp_path: Path, srv: FakeLLMServer, root: Path, server_extra: str = ""):
        self.db = tmp_path / "runs" / "runs.sqlite"
        self.conf = tmp_path / "contextbox.toml"
        self.conf.write_text(f'[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "{srv.base_url}"\n'
                             f'max_retries = 0\n\n[server]\ndb = "{self.db}"\nroots = ["{root}"]\n' + server_extra)
        port = free_port()
        self.argv = [RLM_BIN, "--config", str(self.conf), "serve", "--port", str(port)]
        self.env = {k: v for k, v in os.environ.items() if k != "CONTEXTBOX_TOKEN"}
        self.url = f"http://127.0.0.1:{port}"

    @contextmanager
    def running(self, kill: bool = False) -> Iterator[httpx.Client]:
        """The server up (its /health answers), with a client; at the end SIGKILL (``kill``) or SIGTERM."""
        proc = subprocess.Popen(self.argv, env=self.env, stderr=subprocess.PIPE)
        try:
            wait_health(self.url, proc)
            with httpx.Client(base_url=self.url, timeout=30) as c:
                yield c
        finally:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            proc.wait(10 if kill else 20)
