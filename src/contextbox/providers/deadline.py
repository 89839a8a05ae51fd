"""A total deadline per HTTP request for the SDK-based providers.

An HTTP client's timeout is per read: a server that drips one byte every second keeps a
request alive forever. :func:`deadline_http_client` builds the SDK's own ``httpx`` client
with a transport that ends every request within its timeout *in total*:

* each read and write of the connection waits at most until the request's deadline (the
  network backend of the connection pool is wrapped; the deadline travels in a context
  variable, so one client serves many threads, each with its own deadline);
* every chunk of the response body is checked against the deadline too (a watchdog that
  holds even if the backend could not be wrapped).

The deadline is the request's timeout (``timeout=`` of the call, else the client's), so
``timeout_s`` of a provider bounds a whole request: connecting, sending, the headers and the
body. Past it the request fails with the library's ``ReadTimeout``, which the SDK reports as
``APITimeoutError`` and contextbox as a retryable "request timed out".
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("contextbox")

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("contextbox_http_deadline", default=None)
_MESSAGE = "the reply took longer than the request's total timeout"


def _left(timeout: float | None) -> float | None:
    """``timeout`` shortened to what is left before the current deadline; raises when none is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(_MESSAGE)
    return left if timeout is None else min(timeout, left)


class _Stream:
    """A connection whose reads and writes end at the deadline of the request using it."""

    def __init__(self, inner: Any, core: Any):
        self._inner, self._core = inner, core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            timeout = _left(timeout)
        except TimeoutError as e:
            raise self._core.ReadTimeout(str(e)) from None
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            timeout = _left(timeout)
        except TimeoutError as e:
            raise self._core.WriteTimeout(str(e)) from None
        return self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        try:
            timeout = _left(timeout)
        except TimeoutError as e:
            raise self._core.ConnectTimeout(str(e)) from None
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._core)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend:
    """The connection pool's network backend, handing out deadline-bound connections."""

    def __init__(self, inner: Any, core: Any):
        self._inner, self._core = inner, core

    def _connect_timeout(self, timeout: float | None) -> float | None:
        try:
            return _left(timeout)
        except TimeoutError as e:
            raise self._core.ConnectTimeout(str(e)) from None

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> Any:
        stream = self._inner.connect_tcp(host, port, self._connect_timeout(timeout), local_address, socket_options)
        return _Stream(stream, self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        return _Stream(self._inner.connect_unix_socket(path, self._connect_timeout(timeout), socket_options),
                       self._core)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _total(request: Any) -> float | None:
    """The request's timeout (the largest of its connect/read/write/pool parts), or None."""
    t = request.extensions.get("timeout") or {}
    values = [float(v) for v in t.values() if isinstance(v, (int, float)) and v > 0] if isinstance(t, dict) else []
    return max(values) if values else None


def deadline_http_client(sdk: Any, **kwargs: Any) -> Any:
    """The ``DefaultHttpxClient`` of ``sdk`` (the ``openai`` or ``anthropic`` module) with a
    transport that bounds every request by its timeout in total. ``kwargs`` go to the client."""
    client_cls = sdk.DefaultHttpxClient
    httpx_base = next(c for c in client_cls.__mro__ if c.__name__ == "Client" and c is not client_cls)
    hx = importlib.import_module(httpx_base.__module__.split(".")[0])

    class BodyStream(hx.SyncByteStream):  # type: ignore[misc, name-defined]
        def __init__(self, inner: Any, deadline: float, request: Any):
            self._inner, self._deadline, self._request = inner, deadline, request

        def __iter__(self) -> Iterator[bytes]:
            it = iter(self._inner)
            while True:
                if time.monotonic() > self._deadline:
                    raise hx.ReadTimeout(_MESSAGE, request=self._request)
                token = _DEADLINE.set(self._deadline)
                try:
                    chunk = next(it)
                except StopIteration:
                    return
                finally:
                    _DEADLINE.reset(token)
                yield chunk

        def close(self) -> None:
            self._inner.close()

    class DeadlineTransport(hx.HTTPTransport):  # type: ignore[misc, name-defined]
        def __init__(self, **kw: Any):
            super().__init__(**kw)
            pool = getattr(self, "_pool", None)
            backend = getattr(pool, "_network_backend", None)
            if backend is not None:
                core = importlib.import_module(type(pool).__module__.split(".")[0])
                pool._network_backend = _Backend(backend, core)  # type: ignore[union-attr]
            else:  # pragma: no cover - depends on the library version
                log.debug("HTTP deadline: the connection pool has no network backend to wrap; "
                          "only the response body is bounded")

        def handle_request(self, request: Any) -> Any:
            total = _total(request)
            if total is None:
                return super().handle_request(request)
            deadline = time.monotonic() + total
            token = _DEADLINE.set(deadline)
            try:
                response = super().handle_request(request)
            finally:
                _DEADLINE.reset(token)
            response.stream = BodyStream(response.stream, deadline, request)
            return response

    limits = kwargs.pop("limits", None) or hx.Limits(max_connections=1000, max_keepalive_connections=100)
    return client_cls(transport=DeadlineTransport(limits=limits), **kwargs)
