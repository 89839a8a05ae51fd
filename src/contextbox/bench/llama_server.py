"""An OpenAI-compatible llama.cpp server for the ``rlms`` baseline on the embedded model.

``rlms`` drives its model over HTTP, while ``--model local`` runs in-process. So for a local
model the bench starts ``python -m llama_cpp.server`` (llama-cpp-python's ``server`` extra,
``pip install 'contextbox[bench]'``) on 127.0.0.1 at a free port, serving the same GGUF with
the same window, threads and chat format as the in-process provider; waits until
``GET /v1/models`` answers; hands ``rlms`` that URL and the model name the server reports; and
stops it at the end — on errors and Ctrl-C too — by killing its whole process group.

:class:`ServerProcess` takes any command (``{port}`` is filled in), so tests run it on a
stand-in OpenAI server; :func:`llama_server` builds the real one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("contextbox")

#: modules of llama-cpp-python's ``server`` extra (checked without importing llama_cpp)
SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
SERVER_HINT = "pip install 'contextbox[bench]' (llama-cpp-python[server] and rlms)"


class ServerError(RuntimeError):
    """The server did not start (the message says why: exit code and the tail of its log)."""


@dataclass
class Endpoint:
    """Where a started server answers: what ``rlms`` needs."""

    base_url: str
    model: str
    api_key: str = "sk-local-no-key"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_deps_missing() -> list[str]:
    """Modules of the llama.cpp server extra that are not installed (empty: all there)."""
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


def _get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
        return json.loads(r.read().decode("utf-8"))


class ServerProcess:
    """A server subprocess in its own process group; a context manager yielding its :class:`Endpoint`.

    ``command(port)`` gives the argv. ``ready_timeout_s`` bounds the wait for ``/v1/models``;
    the server's output goes to ``log_path`` (else it is discarded).
    """

    def __init__(self, command: Callable[[int], Sequence[str]], *, host: str = "127.0.0.1",
                 ready_timeout_s: float = 300.0, log_path: str | Path | None = None,
                 env: dict[str, str] | None = None):
        self.command = command
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint: Endpoint | None = None
        self.started_s: float | None = None
        #: the pid of the last process started (kept after :meth:`stop`, for checks)
        self.last_pid: int | None = None

    def start(self) -> Endpoint:
        port = free_port(self.host)
        argv = [str(a) for a in self.command(port)]
        out: Any = subprocess.DEVNULL
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        t = time.monotonic()
        log.info("bench: starting %s", " ".join(argv))
        try:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=self.env)
        except OSError as e:
            raise ServerError(f"cannot start {argv[0]}: {e}") from None
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self.last_pid = self.proc.pid
        try:
            model = self._wait(f"http://{self.host}:{port}/v1/models")
        except BaseException:
            self.stop()
            raise
        self.started_s = round(time.monotonic() - t, 3)
        self.endpoint = Endpoint(f"http://{self.host}:{port}/v1", model)
        log.info("bench: server ready in %.1fs at %s (model %r)", self.started_s, self.endpoint.base_url, model)
        return self.endpoint

    def _wait(self, url: str) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(f"the server exited with code {code} before it was ready{self._tail()}")
            try:
                data = _get_json(url, timeout=2.0)
                models = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
                if models:
                    return str(models[0])
            except (OSError, ValueError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"the server did not answer {url} within {self.ready_timeout_s:.0f}s{self._tail()}")
            time.sleep(0.25)

    def _tail(self) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        return f" (log {self.log_path}: {lines[-1][:200]})" if lines else ""

    def stop(self) -> None:
        """Kill the server's process group: SIGTERM, then SIGKILL after 10 s. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.info("bench: server (pid %d) stopped", proc.pid)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def llama_server(model_path: str | Path, *, n_ctx: int = 16384, n_threads: int | None = None,
                 python: str | None = None, log_path: str | Path | None = None,
                 ready_timeout_s: float = 300.0) -> ServerProcess:
    """``python -m llama_cpp.server`` on the GGUF at ``model_path``, set up like the in-process provider."""
    from ..providers.local import default_threads

    threads = n_threads or default_threads()

    def command(port: int) -> list[str]:
        return [python or sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
                "--model_alias", Path(model_path).stem, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
                "--n_threads_batch", str(threads), "--chat_format", "chatml", "--verbose", "False"]

    return ServerProcess(command, ready_timeout_s=ready_timeout_s, log_path=log_path)
