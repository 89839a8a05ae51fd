"""A real HTTP server that speaks just enough OpenAI and Anthropic for tests and benchmarks.

    with FakeLLMServer(replies=["hi", "there"], faults=["429", "malformed"]) as srv:
        provider = OpenAIProvider(ProviderConfig("fake", base_url=srv.base_url), "m")
        ...
        assert srv.request_count == 4

Endpoints: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``POST /v1/messages``
(and ``/messages``), ``GET /v1/models``. Replies come from ``replies``: ``None`` (always
:data:`DEFAULT_REPLY`), a string (always that), a list (in order; the last one repeats) or
a callable ``(request_json) -> str`` (which may raise :class:`HTTPFault` to answer with an
error status instead, e.g. to refuse a ``response_format``). Every request body is kept in
``requests``, in arrival order. Token counts are the server's own: whitespace-split
words of every message's text (prompt) and of the reply (completion).

``in_flight``/``max_in_flight`` count the completion requests being answered at once (a test
checks a concurrency limit with them); ``arrivals`` holds each one's arrival time (an rpm limit).
``latency`` delays every reply.

Faults are consumed one per completion request, in order: ``"429"`` (``Retry-After: 0``),
``"429:2.5"`` (that Retry-After), ``"500"`` or any other status code (``"400:MESSAGE"``
sets the error message), ``"401"``, ``"hang"``
(stall ``hang_s`` seconds, longer than a client timeout), ``"malformed"`` (200, invalid
JSON), ``"reset"`` (close the connection with no response), ``"no_usage"`` (a valid reply
without ``usage``), ``"drip"`` (the whole response, status line and headers included, sent one
byte every ``drip_s`` seconds — each read is quick, the reply never ends in time) and
``"drip_body"`` (headers at once, then the body one byte every ``drip_s``); ``"drip:0.1"`` sets
the interval. ``fail_status=503`` (or :meth:`fail_all`) makes *every* request fail.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = "FINAL(fake answer)"


class HTTPFault(Exception):
    """Raised by a reply callable: answer this request with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
Replies = None | str | list[str] | Callable[[dict[str, Any]], str]


def count_words(value: Any) -> int:
    """Whitespace-split words in a message content (a string or a list of text parts)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(p.get("text", "") if isinstance(p, dict) else p) for p in value)
    return 0


class FakeLLMServer:
    """A threaded HTTP server on 127.0.0.1 (a random port unless ``port`` is given), started as a context manager."""

    def __init__(
        self,
        replies: Replies = None,
        *,
        latency: float = 0.0,
        faults: Iterable[str] = (),
        fail_status: int | None = None,
        hang_s: float = 10.0,
        drip_s: float = 0.05,
        model: str = "fake-model",
        port: int = 0,
    ) -> None:
        self.replies = replies
        self.latency = latency
        self.hang_s = hang_s
        self.drip_s = drip_s
        self.model = model
        self._port = port
        self.fail_status = fail_status
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.prompt_tokens_total = 0
        self.completion_tokens_total = 0
        #: completion requests being answered now, the most ever at once, and each one's arrival (monotonic)
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []
        self._faults: list[str] = [str(f) for f in faults]
        self._reply_index = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeLLMServer:
        self._stop.clear()
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """Server root, the Anthropic SDK's ``base_url`` (it appends ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ control
    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def add_faults(self, *faults: str) -> None:
        with self._lock:
            self._faults.extend(str(f) for f in faults)

    def fail_all(self, status: int | None) -> None:
        """Make every request fail with ``status`` (``None`` to heal)."""
        self.fail_status = status

    def reset(self) -> None:
        """Forget logged requests, counters, pending faults and the reply position."""
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()
            self.paths.clear()
            self._faults.clear()
            self.prompt_tokens_total = self.completion_tokens_total = 0
            self.max_in_flight = 0
            self.arrivals.clear()
            self._reply_index = 0

    # ------------------------------------------------------------------ internals
    def _record(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            self.paths.append(path)
            self.arrivals.append(time.monotonic())
            return self._faults.pop(0) if self._faults else None

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _reply_for(self, body: dict[str, Any]) -> str:
        if callable(self.replies):
            return str(self.replies(body))
        if isinstance(self.replies, list):
            with self._lock:
                i = min(self._reply_index, len(self.replies) - 1)
                self._reply_index += 1
            return self.replies[i] if self.replies else DEFAULT_REPLY
        return DEFAULT_REPLY if self.replies is None else self.replies

    def _count(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens_total += prompt
            self.completion_tokens_total += completion


class _Server(ThreadingHTTPServer):
    #: room for a whole batch of new connections (the default backlog of 5 drops SYNs: 1 s stalls)
    request_queue_size = 256


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: headers and body leave at once (else Nagle + delayed ACK stall every reply ~40 ms)
    disable_nagle_algorithm = True
    fake: FakeLLMServer

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self._uncount()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (e.g. after a "hang")
            self.close_connection = True

    def _error(self, status: int, anthropic: bool, message: str, headers: dict[str, str] | None = None) -> None:
        if status == 429 and headers is None:
            headers = {"Retry-After": "0"}
        if anthropic:
            body: dict[str, Any] = {"type": "error", "error": {"type": f"http_{status}", "message": message}}
        else:
            body = {"error": {"message": message, "type": f"http_{status}", "code": status}}
        self._send(status, body, headers)

    def do_GET(self) -> None:
        if self.fake.fail_status:
            return self._error(self.fake.fail_status, False, "forced failure")
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            return self._send(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]})
        self._error(404, False, f"no route {self.path}")

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        anthropic = path in ("/v1/messages", "/messages")
        if not anthropic and path not in ("/v1/chat/completions", "/chat/completions"):
            return self._error(404, False, f"no route {self.path}")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return self._error(400, anthropic, "request body is not JSON")
        self.fake._enter()
        self._counted = True
        try:
            self._complete(path, body, anthropic)
        finally:
            self._uncount()

    def _uncount(self) -> None:
        """The request stops counting as in flight: before its reply leaves (the client may send the next one
        as soon as it has read it)."""
        if getattr(self, "_counted", False):
            self._counted = False
            self.fake._leave()

    def _complete(self, path: str, body: dict[str, Any], anthropic: bool) -> None:
        fault = self.fake._record(path, body, {k.lower(): v for k, v in self.headers.items()})
        if self.fake.latency:
            self.fake._stop.wait(self.fake.latency)
        if self.fake.fail_status:
            return self._error(self.fake.fail_status, anthropic, "forced failure")
        if fault and self._fault(fault, anthropic):
            return
        drip = fault.partition(":")[0] in ("drip", "drip_body") if fault else False
        try:
            text = self.fake._reply_for(body)
        except HTTPFault as e:
            return self._error(e.status, anthropic, e.message)
        except Exception as e:  # a broken reply callable: tell the client, keep serving
            return self._error(500, anthropic, f"reply callable failed: {e!r}")
        prompt = sum(count_words(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
        prompt += count_words(body.get("system"))
        completion = len(text.split())
        self.fake._count(prompt, completion)
        payload = self._success(body, anthropic, text, prompt, completion, fault != "no_usage")
        if drip:
            return self._drip(payload, fault or "drip")
        self._send(200, payload)

    def _drip(self, payload: dict[str, Any], fault: str) -> None:
        """Send the reply byte by byte (``drip``: all of it; ``drip_body``: the body only)."""
        kind, _, arg = fault.partition(":")
        pause = float(arg or self.fake.drip_s)
        data = json.dumps(payload).encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n").encode()
        self.close_connection = True
        try:
            if kind == "drip_body":
                self.wfile.write(head)
                self.wfile.flush()
                head = b""
            out = head + data
            for i in range(len(out)):
                if self.fake._stop.wait(pause):
                    return
                self.wfile.write(out[i : i + 1])
                self.wfile.flush()
        except OSError:  # the client gave up
            pass

    def _fault(self, fault: str, anthropic: bool) -> bool:
        """Act out ``fault``; return True when the request is fully handled."""
        kind, _, arg = fault.partition(":")
        if kind == "hang":
            self.fake._stop.wait(float(arg or self.fake.hang_s))
            self.close_connection = True
            return True
        if kind == "malformed":
            self._send(200, b'{"id": "broken", "choices": [ {not json')
            return True
        if kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return True
        if kind.isdigit():
            status = int(kind)
            headers = {"Retry-After": arg or "0"} if status == 429 else {}
            message = arg if arg and status != 429 else f"injected fault {fault}"
            self._error(status, anthropic, message, headers)
            return True
        return False  # e.g. "no_usage", "drip": handled by the caller

    def _success(
        self, body: dict[str, Any], anthropic: bool, text: str, prompt: int, completion: int, usage: bool
    ) -> dict[str, Any]:
        model = body.get("model") or self.fake.model
        if anthropic:
            out: dict[str, Any] = {"id": f"msg_{time.time_ns()}", "type": "message", "role": "assistant"}
            out |= {"model": model, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
            counts = {"input_tokens": prompt, "output_tokens": completion}
        else:
            out = {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time())}
            msg = {"role": "assistant", "content": text}
            out |= {"model": model, "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}
            counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if usage:
            out["usage"] = counts
        return out
