"""Authentication, Host checks, request-size limits and server-side path checks.

* Only ``Host`` values naming this server are served: ``localhost``, ``127.0.0.1`` and
  ``[::1]`` (with the server's port or none), the address it is bound to, and the names in
  ``[server] allowed_hosts``; anything else gets 403. A web page whose name an attacker
  points at 127.0.0.1 (DNS rebinding) sends its own name as ``Host`` and is refused. A server
  bound to a wildcard address (``0.0.0.0``, ``::``) needs a token; it accepts any ``Host``
  unless ``allowed_hosts`` is set.
* A server bound to anything but a loopback address needs a token (:func:`check_bind`).
* With a token set, every request but ``GET /health`` needs ``Authorization: Bearer TOKEN``.
  A browser cannot add that header to a page load, so ``/visualize?token=TOKEN`` answers with
  a ``SameSite=Strict`` HttpOnly cookie holding the token, which is then accepted in its place.
* A POST (or other unsafe method) whose ``Origin`` is not this server's own gets 403, so a web
  page elsewhere cannot start runs on a local server through the visitor's browser.
* Request bodies larger than ``max_upload_mb`` get 413, whether the size is announced in
  ``Content-Length`` or only found while reading a chunked body.
* ``context_path`` (and the file of a ``scripted:`` / ``local:`` model spec) is resolved,
  symlinks and ``..`` included, and must stay inside one of the configured roots.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fastapi import HTTPException

from ..context import file_kind

COOKIE = "contextbox_token"
OPEN_PATHS = {"/health"}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": raw})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or []:
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


def _error_body(path: str, message: str, code: str) -> dict[str, Any]:
    """OpenAI-shaped errors under /v1/chat and /v1/models (its clients read them), FastAPI's elsewhere."""
    if path.startswith(("/v1/chat", "/v1/models")):
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return {"detail": message}


LOGIN_PAGE = (b"<!doctype html><meta charset=utf-8><title>contextbox: token needed</title>"
              b"<body style='font:15px system-ui;margin:3em'><h1>contextbox</h1><p>This server needs its token.</p>"
              b"<form method=get action=/visualize><input type=password name=token placeholder=token autofocus> "
              b"<button>Open the visualizer</button></form>")


class AuthMiddleware:
    """Bearer-token check for every path but the open ones (a pure ASGI middleware, so it
    wraps streaming responses without buffering them)."""

    def __init__(self, app: Any, token: str | None):
        self.app = app
        self.token = token

    def _ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())  # type: ignore[union-attr]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            origin = _header(scope, b"origin")
            if origin is not None and urlsplit(origin).netloc != (_header(scope, b"host") or ""):
                # a page of another site posting to this server (e.g. a localhost one without a token)
                await _send_json(send, 403, _error_body(scope["path"], f"cross-origin request from {origin} refused",
                                                        "cross_origin"))
                return
        if scope["type"] != "http" or not self.token or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and self._ok(value.strip()):
            await self.app(scope, receive, send)
            return
        if self._ok(unquote(_cookie(scope, COOKIE) or "")):
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/visualize" and scope.get("method") == "GET":
            q = parse_qs(scope.get("query_string", b"").decode())
            if self._ok((q.get("token") or [""])[0]):
                cookie = f"{COOKIE}={quote(self.token, safe='')}; Path=/; HttpOnly; SameSite=Strict"
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", b"/visualize"), (b"set-cookie", cookie.encode()),
                                        (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                    (b"content-length", str(len(LOGIN_PAGE)).encode())]})
            await send({"type": "http.response.body", "body": LOGIN_PAGE})
            return
        msg = ("authentication required: send 'Authorization: Bearer TOKEN' (the token given to 'rlm serve --token'); "
               "in a browser, open /visualize?token=TOKEN once")
        await _send_json(send, 401, _error_body(scope["path"], msg, "unauthorized"),
                         [(b"www-authenticate", b"Bearer")])


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token (UsageError, one line)."""
    from ..errors import UsageError

    if not token and not is_loopback(host):
        raise UsageError(f"serving on {host or '0.0.0.0'} (not a loopback address) needs a token: pass --token T, "
                         "set $CONTEXTBOX_TOKEN or [server] token (or bind 127.0.0.1)")


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6]:port`` → (lower-case name without brackets, port or None); None if malformed."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_s = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port_s = value.split(":")
    else:  # a name, or a bare IPv6 address
        name, port_s = value, None
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    elif not name or not all(c.isalnum() or c in "-._" for c in name):
        return None
    if port_s is not None:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            return None
        return name, int(port_s)
    return name, None


class HostMiddleware:
    """403 for a ``Host`` header that does not name this server (DNS rebinding)."""

    def __init__(self, app: Any, *, bind_host: str, port: int, allowed_hosts: list[str], token: str | None):
        self.app = app
        self.port = port
        self.names = set(LOOPBACK_NAMES)
        self.exact: set[tuple[str, int]] = set()
        bound = bind_host.strip().strip("[]").lower()
        self.any_host = bound in WILDCARD_BINDS and bool(token) and not allowed_hosts
        if bound not in WILDCARD_BINDS:
            self.names.add(bound)
        for entry in allowed_hosts:
            parsed = split_host(str(entry))
            if parsed is None:
                from ..errors import ConfigError

                raise ConfigError(f"[server] allowed_hosts: {entry!r} is not a host name (name or name:port)")
            name, p = parsed
            if p is None:
                self.names.add(name)
            else:
                self.exact.add((name, p))

    def allowed(self, host: str | None, port: int) -> bool:
        if self.any_host:
            return True
        parsed = split_host(host or "")
        if parsed is None:
            return False
        name, p = parsed
        return (name in self.names and p in (None, port)) or (name, p) in self.exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        port = server[1] if server and server[1] else self.port
        host = _header(scope, b"host")
        if not self.allowed(host, port):
            shown = (host or "")[:100]
            msg = (f"Host {shown!r} is not this server: use http://127.0.0.1:{port}, or add the name to "
                   "[server] allowed_hosts")
            await _send_json(send, 403, _error_body(scope.get("path", ""), msg, "host_not_allowed"))
            return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for request bodies over ``limit`` bytes."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    def message(self) -> str:
        return (f"request body too large: the limit is {self.limit / 1e6:g} MB "
                "(server.max_upload_mb in the config)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length and length.isdigit() and int(length) > self.limit:
            await _send_json(send, 413, _error_body(scope["path"], self.message(), "request_too_large"))
            return
        seen = 0

        async def counted() -> MutableMapping[str, Any]:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.message())
            return msg

        await self.app(scope, counted, send)


# ---------------------------------------------------------------------- paths
def check_roots(roots: list[Any]) -> list[Path]:
    """The configured roots, resolved; a bad entry is a configuration error."""
    from ..errors import ConfigError

    if not isinstance(roots, list) or not all(isinstance(r, (str, os.PathLike)) for r in roots):
        raise ConfigError("[server] roots must be a list of folder paths")
    out = []
    for r in roots:
        p = Path(r).expanduser().resolve()
        if not p.is_dir():
            raise ConfigError(f"[server] roots: {r} is not a folder")
        out.append(p)
    return out


def _inside(p: Path, roots: list[Path]) -> bool:
    return any(p == r or p.is_relative_to(r) for r in roots)


def _show(raw: str, n: int = 80) -> str:
    return repr(raw if len(raw) <= n else raw[:n] + "…")


def resolve_path(raw: Any, roots: list[Path], what: str = "context_path") -> Path:
    """Resolve a client-given server-side path; 400 if malformed or not a regular file or a
    folder, 403 if outside the roots, 404 if missing. Relative paths are taken relative to each
    root in turn. Nothing is opened: the type is checked with ``stat`` (a FIFO or a device
    would block or never end)."""
    if not isinstance(raw, str) or not raw.strip():
        raise HTTPException(400, f"{what} must be a non-empty string")
    if "\x00" in raw:
        raise HTTPException(400, f"{what} contains a NUL character")
    try:
        return _resolve_path(raw, roots, what)
    except OSError as e:  # a name too long, too many links, ...
        raise HTTPException(400, f"{what} {_show(raw)} cannot be used: {e.strerror or e}") from None


def _resolve_path(raw: str, roots: list[Path], what: str) -> Path:
    if not roots:
        raise HTTPException(403, f"{what} is disabled: the server has no roots configured "
                                 "(rlm serve --root DIR, or roots = [...] under [server] in the config)")
    given = Path(raw).expanduser()
    candidates = [given] if given.is_absolute() else [r / given for r in roots]
    outside = False
    for c in candidates:
        try:
            p = c.resolve(strict=False)
        except (OSError, RuntimeError):  # symlink loops
            raise HTTPException(400, f"{what} {_show(raw)} cannot be resolved") from None
        if not _inside(p, roots):
            outside = True
            continue
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISDIR(st.st_mode):
            _check_tree(p, roots, raw, what)
        elif not stat.S_ISREG(st.st_mode):
            raise HTTPException(400, f"{what} {_show(raw)} is not a regular file or a folder "
                                     f"({file_kind(st.st_mode)})")
        return p
    if outside:
        raise HTTPException(403, f"{what} {_show(raw)} is outside the server's allowed roots")
    raise HTTPException(404, f"{what} {_show(raw)} not found under the server's roots")


async def read_json(request: Any) -> Any:
    """The request body as JSON; 400 for invalid JSON and for nesting too deep to parse."""
    body = await request.body()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"the body must be JSON (or a multipart form): {e}") from None
    except RecursionError:
        raise HTTPException(400, "the JSON body is nested too deeply") from None


def _check_tree(d: Path, roots: list[Path], raw: str, what: str) -> None:
    """A folder may hold symlinks that lead out of the roots: refuse those too."""
    for dirpath, dirnames, filenames in os.walk(d):
        for name in dirnames + filenames:
            f = Path(dirpath) / name
            if f.is_symlink() and not _inside(f.resolve(), roots):
                raise HTTPException(403, f"{what} {_show(raw)} holds a link that leads outside the allowed roots: "
                                         f"{f.relative_to(d)}")


def self_loop(spec: str | None, providers: list[Any], host: str, port: int) -> str | None:
    """The base URL of ``spec``'s provider when it is this server's own address, else None.

    ``llamacpp/...`` (``http://127.0.0.1:8080/v1``) on a server listening on 8080 would send
    every model call back to the server itself."""
    from ..providers.base import BUILTIN_PROVIDERS

    if not spec or "/" not in spec or spec.startswith(("scripted:", "local:")):  # a file, not a provider
        return None
    name = spec.split("/", 1)[0]
    configured = [p for p in providers if p.name == name] or (
        [BUILTIN_PROVIDERS[name]] if name in BUILTIN_PROVIDERS else [])
    own = set(LOOPBACK_NAMES) | {host.strip().strip("[]").lower()}
    for pc in configured:
        if not pc.base_url:
            continue
        try:
            u = urlsplit(pc.base_url)
            p = u.port or {"http": 80, "https": 443}.get(u.scheme, 0)
        except ValueError:
            continue
        if p == port and (u.hostname or "").lower() in own:
            return pc.base_url
    return None


def check_model_spec(spec: str | None, roots: list[Path]) -> str | None:
    """Model specs that name a server-side file (``scripted:PATH``, ``local:PATH``) obey the
    roots too. Returns the spec with that path resolved."""
    if not spec:
        return spec
    for prefix in ("scripted:", "local:"):
        if spec.startswith(prefix):
            return prefix + str(resolve_path(spec[len(prefix):], roots, what=f"the {prefix[:-1]} model file"))
    return spec
