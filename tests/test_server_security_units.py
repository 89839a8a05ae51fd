"""server/security.py piece by piece: each middleware driven directly as ASGI (no server), the
Host parser, body limits, path checks under roots, JSON bodies and the self-calling model check.

Written against the survivors of `make mutation MODULES=server/security.py` (docs/mutation.md):
each test states the rule (who gets in, with which status and message), not how it is coded.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import HTTPException

from contextbox.errors import ConfigError, UsageError
from contextbox.providers.base import ProviderConfig
from contextbox.server.security import (
    COOKIE,
    LOGIN_PAGE,
    AuthMiddleware,
    BodyLimitMiddleware,
    BodyTooLarge,
    HostMiddleware,
    check_bind,
    check_model_spec,
    check_roots,
    is_loopback,
    read_json,
    resolve_path,
    self_loop,
    split_host,
)


class App:
    """The wrapped app: reads the whole body and answers 200."""

    def __init__(self) -> None:
        self.calls = 0
        self.body = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["type"] == "http":
            while True:
                msg = await receive()
                self.body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def scope(path: str = "/runs", method: str = "GET", headers: dict[str, str] | None = None, type: str = "http",
          query: str = "", server: tuple[str, int] | None = ("127.0.0.1", 8765)) -> dict[str, Any]:
    hs = [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return {"type": type, "path": path, "method": method, "headers": hs, "query_string": query.encode(),
            "server": server}


def call(mw: Any, sc: dict[str, Any], chunks: list[bytes] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    msgs = [{"type": "http.request", "body": c, "more_body": i < len(chunks or [b""]) - 1}
            for i, c in enumerate(chunks or [b""])]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return msgs.pop(0) if msgs else {"type": "http.disconnect"}

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    asyncio.run(mw(sc, receive, send))
    # an ASGI response: one start message, then body messages
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * (len(sent) - 1)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start.get("headers") or []), body


# ----------------------------------------------------------------------------- tokens
def test_without_a_token_everything_same_origin_passes():
    app = App()
    mw = AuthMiddleware(app, None)
    assert call(mw, scope())[0] == 200
    assert call(mw, scope(method="POST"))[0] == 200  # no Origin: not a browser page elsewhere
    same = {"origin": "http://127.0.0.1:8765", "host": "127.0.0.1:8765"}
    assert call(mw, scope(method="POST", headers=same))[0] == 200
    assert app.calls == 3


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_a_cross_origin_write_is_refused_with_or_without_a_token(method):
    for token in (None, "tok"):
        app = App()
        mw = AuthMiddleware(app, token)
        hs = {"origin": "http://evil.example", "host": "127.0.0.1:8765", "authorization": "Bearer tok"}
        status, headers, body = call(mw, scope(method=method, headers=hs))
        assert status == 403 and app.calls == 0
        assert json.loads(body) == {"detail": "cross-origin request from http://evil.example refused"}
        assert headers[b"content-type"] == b"application/json" and headers[b"content-length"] == str(len(body)).encode()


def test_cross_origin_reads_pass_and_a_missing_host_does_not_match_an_origin():
    app = App()
    mw = AuthMiddleware(app, None)
    for m in ("GET", "HEAD", "OPTIONS"):
        assert call(mw, scope(method=m, headers={"origin": "http://evil.example"}))[0] == 200
    assert call(mw, scope(method="POST", headers={"origin": "http://x"}))[0] == 403  # no Host header
    # under the OpenAI-compatible paths the error is shaped like OpenAI's
    _, _, body = call(mw, scope("/v1/chat/completions", "POST", {"origin": "http://evil", "host": "h"}))
    assert json.loads(body) == {"error": {"message": "cross-origin request from http://evil refused",
                                          "type": "invalid_request_error", "param": None, "code": "cross_origin"}}


def test_with_a_token_only_health_is_open():
    app = App()
    mw = AuthMiddleware(app, "s3cret")
    status, headers, body = call(mw, scope("/runs"))
    assert status == 401 and app.calls == 0 and headers[b"www-authenticate"] == b"Bearer"
    assert json.loads(body)["detail"] == ("authentication required: send 'Authorization: Bearer TOKEN' (the token "
                                          "given to 'rlm serve --token'); in a browser, open /visualize?token=TOKEN once")
    _, _, body = call(mw, scope("/v1/models"))
    assert json.loads(body)["error"]["code"] == "unauthorized"
    assert call(mw, scope("/health"))[0] == 200
    assert call(mw, scope("/health/x"))[0] == 401
    assert app.calls == 1


@pytest.mark.parametrize("auth,ok", [
    ("Bearer s3cret", True), ("bearer s3cret", True), ("BEARER   s3cret  ", True),
    ("Bearer wrong", False), ("Bearer ", False), ("Basic s3cret", False), ("s3cret", False),
    ("Bearer s3cret2", False), ("Bearer s3cre", False), ("", False),
])
def test_bearer_header(auth, ok):
    app = App()
    status = call(AuthMiddleware(app, "s3cret"), scope(headers={"authorization": auth}))[0]
    assert (status == 200) is ok and app.calls == int(ok)


@pytest.mark.parametrize("cookie,ok", [
    (f"{COOKIE}=s%3Bc%20t", True), (f"a=1; {COOKIE}=s%3Bc%20t; b=2", True), (f"{COOKIE}=s;c t", False),
    (f"{COOKIE}=", False), (f"x{COOKIE}=s%3Bc%20t", False), ("", False), (f"{COOKIE}=wrong", False),
])
def test_token_cookie(cookie, ok):
    app = App()
    status = call(AuthMiddleware(app, "s;c t"), scope("/runs/1", headers={"cookie": cookie}))[0]
    assert (status == 200) is ok


def test_visualize_with_the_token_sets_a_strict_cookie_and_redirects():
    app = App()
    mw = AuthMiddleware(app, "a b&c")
    status, headers, body = call(mw, scope("/visualize", query="token=" + quote("a b&c", safe="")))
    assert status == 303 and app.calls == 0 and body == b""
    assert headers[b"location"] == b"/visualize" and headers[b"content-length"] == b"0"
    cookie = headers[b"set-cookie"].decode()
    assert cookie == f"{COOKIE}=a%20b%26c; Path=/; HttpOnly; SameSite=Strict"
    # the cookie it set lets the browser in
    assert call(mw, scope("/visualize", headers={"cookie": cookie.split(";")[0]}))[0] == 200


def test_visualize_without_the_token_shows_the_login_page():
    mw = AuthMiddleware(App(), "tok")
    for q in ("", "token=nope", "token="):
        status, headers, body = call(mw, scope("/visualize", query=q))
        assert status == 401 and body == LOGIN_PAGE
        assert headers[b"content-type"] == b"text/html; charset=utf-8"
        assert headers[b"content-length"] == str(len(LOGIN_PAGE)).encode()
    status, headers, body = call(mw, scope("/visualize", method="POST", query="token=tok"))
    assert status == 401 and json.loads(body)["detail"].startswith("authentication required")
    assert call(mw, scope("/runs", query="token=tok"))[0] == 401  # the query token opens the visualizer only


def test_non_http_scopes_pass_the_token_check():
    app = App()
    mw = AuthMiddleware(app, "tok")
    assert call(mw, scope(type="websocket"))[0] == 200 and app.calls == 1


# ----------------------------------------------------------------------------- binding and Host
def test_loopback_names():
    assert is_loopback(" LOCALHOST ") and is_loopback("[::1]") and is_loopback("127.9.9.9")
    assert not is_loopback("localhost.example") and not is_loopback("10.0.0.1") and not is_loopback("[::]")
    with pytest.raises(UsageError, match=r"^serving on 0\.0\.0\.0 \(not a loopback address\) needs a token: "):
        check_bind("", None)
    with pytest.raises(UsageError, match=r"^serving on 10\.1\.1\.1 \(not"):
        check_bind("10.1.1.1", "")


@pytest.mark.parametrize("value,want", [
    ("", None), ("   ", None), ("Host.Example", ("host.example", None)), (" h:80 ", ("h", 80)),
    ("[::1]:8080", ("::1", 8080)), ("[::1]", ("::1", None)), ("[::1", None), ("[::1]x", None), ("[::1]:", None),
    ("[z:z]:80", None), ("::1", ("::1", None)), ("a:b:c", None), ("bad name", None), ("a_b.c-d9", ("a_b.c-d9", None)),
    (":80", None), ("h:0", None), ("h:1", ("h", 1)), ("h:65535", ("h", 65535)), ("h:65536", None), ("h:x", None),
    ("h:-1", None), ("[]", None), ("ex/ample", None),
])
def test_split_host(value, want):
    assert split_host(value) == want


def test_host_middleware_answers_403_naming_the_way_in():
    app = App()
    mw = HostMiddleware(app, bind_host="127.0.0.1", port=8765, allowed_hosts=[], token=None)
    status, _, body = call(mw, scope(headers={"host": "evil.example"}, server=("127.0.0.1", 9999)))
    assert status == 403 and app.calls == 0
    assert json.loads(body) == {"detail": "Host 'evil.example' is not this server: use http://127.0.0.1:9999, or add "
                                          "the name to [server] allowed_hosts"}
    # the port the request came in on counts, else the configured one
    assert call(mw, scope(headers={"host": "localhost:9999"}, server=("127.0.0.1", 9999)))[0] == 200
    assert call(mw, scope(headers={"host": "localhost:8765"}, server=None))[0] == 200
    assert call(mw, scope(headers={"host": "localhost:8765"}, server=("127.0.0.1", 0)))[0] == 200
    assert call(mw, scope(headers={"host": "localhost:8765"}, server=("127.0.0.1", 9999)))[0] == 403
    _, _, body = call(mw, scope("/v1/models", headers={"host": "x" * 300}))
    err = json.loads(body)["error"]
    assert err["code"] == "host_not_allowed" and f"Host '{'x' * 100}' is" in err["message"]
    assert "x" * 101 not in err["message"]
    assert call(mw, scope(type="websocket", headers={"host": "evil"}))[0] == 403
    assert call(mw, scope(type="websocket", headers={"host": "127.0.0.1"}))[0] == 200
    status, _, body = call(mw, scope(headers={}))
    assert status == 403 and "Host '' is not this server" in json.loads(body)["detail"]
    assert call(mw, scope(type="lifespan"))[0] == 200  # not a request: passed on


def test_host_names_from_the_bind_address_and_allowed_hosts():
    mw = HostMiddleware(None, bind_host=" [FD00::7] ", port=80, allowed_hosts=["Proxy.Example", "[::2]:443"],
                        token="t")
    assert mw.allowed("[fd00::7]:80", 80) and mw.allowed("proxy.example:80", 80) and mw.allowed("[::2]:443", 80)
    assert not mw.allowed("[::2]:80", 80) and not mw.allowed("proxy.example:81", 80)
    assert mw.allowed("localhost", 80) and mw.allowed("[::1]:80", 80) and mw.allowed("127.0.0.1", 80)
    for bind in ("::", "[::]", "0.0.0.0", ""):
        tokenless = HostMiddleware(None, bind_host=bind, port=80, allowed_hosts=[], token=None)
        assert not tokenless.allowed("10.0.0.1", 80) and tokenless.allowed("localhost", 80)
        assert HostMiddleware(None, bind_host=bind, port=80, allowed_hosts=[], token="t").allowed("10.0.0.1", 80)
    with pytest.raises(ConfigError, match=r"^\[server\] allowed_hosts: 'bad host' is not a host name"):
        HostMiddleware(None, bind_host="127.0.0.1", port=80, allowed_hosts=["bad host"], token=None)


# ----------------------------------------------------------------------------- body size
def test_an_announced_body_over_the_limit_gets_413():
    app = App()
    mw = BodyLimitMiddleware(app, 1000)
    status, _, body = call(mw, scope(method="POST", headers={"content-length": "1001"}))
    assert status == 413 and app.calls == 0
    assert json.loads(body) == {"detail": "request body too large: the limit is 0.001 MB "
                                          "(server.max_upload_mb in the config)"}
    _, _, body = call(mw, scope("/v1/chat/completions", "POST", {"content-length": "5000"}))
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert call(mw, scope(method="POST", headers={"content-length": "1000"}), [b"x" * 1000])[0] == 200
    assert app.body == b"x" * 1000


def test_a_streamed_body_is_counted_as_it_is_read():
    app = App()
    mw = BodyLimitMiddleware(app, 10)
    assert call(mw, scope(method="POST"), [b"12345", b"12345"])[0] == 200  # exactly the limit
    with pytest.raises(BodyTooLarge, match="request body too large: the limit is 1e-05 MB"):
        call(mw, scope(method="POST", headers={"content-length": "abc"}), [b"12345", b"123456"])
    app2 = App()
    assert call(BodyLimitMiddleware(app2, 10), scope(type="websocket"))[0] == 200 and app2.calls == 1


# ----------------------------------------------------------------------------- paths
def test_check_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    assert check_roots(["~/d", tmp_path / "d" / ".." / "d"]) == [tmp_path / "d", tmp_path / "d"]
    assert check_roots([]) == []
    for bad in ("~/d", ["~/d", 3], None):
        with pytest.raises(ConfigError, match=r"^\[server\] roots must be a list of folder paths$"):
            check_roots(bad)
    with pytest.raises(ConfigError, match=r"^\[server\] roots: ~/f is not a folder$"):
        check_roots(["~/f"])
    with pytest.raises(ConfigError, match="is not a folder"):
        check_roots([str(tmp_path / "missing")])


def http_error(fn: Any, *a: Any, **k: Any) -> tuple[int, str]:
    with pytest.raises(HTTPException) as info:
        fn(*a, **k)
    return info.value.status_code, info.value.detail


def test_resolve_path_inside_the_roots(tmp_path):
    r1, r2, out = tmp_path / "r1", tmp_path / "r2", tmp_path / "out"
    for d in (r1, r2, out):
        d.mkdir()
    (r2 / "doc.txt").write_text("x")
    (out / "secret.txt").write_text("s")
    (r1 / "sub").mkdir()
    (r1 / "sub" / "a.txt").write_text("a")
    roots = [r1, r2]
    assert resolve_path("doc.txt", roots) == r2 / "doc.txt"  # relative: tried under each root
    assert resolve_path(str(r2 / "doc.txt"), roots) == r2 / "doc.txt"
    assert resolve_path("sub", roots) == r1 / "sub" and resolve_path(str(r1), roots) == r1
    assert http_error(resolve_path, "../out/secret.txt", roots) == (
        403, "context_path '../out/secret.txt' is outside the server's allowed roots")
    assert http_error(resolve_path, str(out / "secret.txt"), roots)[0] == 403
    assert http_error(resolve_path, "nope.txt", roots) == (404, "context_path 'nope.txt' not found under the "
                                                                 "server's roots")
    assert http_error(resolve_path, "doc.txt/x", roots)[0] == 404  # a file is not a folder
    assert http_error(resolve_path, "doc.txt", [], what="the file") == (
        403, "the file is disabled: the server has no roots configured (rlm serve --root DIR, or roots = [...] "
             "under [server] in the config)")
    assert http_error(resolve_path, "  ", roots) == (400, "context_path must be a non-empty string")
    assert http_error(resolve_path, 5, roots)[0] == 400
    assert http_error(resolve_path, "a\x00b", roots) == (400, "context_path contains a NUL character")
    code, msg = http_error(resolve_path, "x" * 5000, roots)
    assert code == 400 and msg.startswith(f"context_path '{'x' * 80}…' cannot be used: ")


def test_resolve_path_refuses_links_out_and_special_files(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    (out / "secret.txt").write_text("s")
    (root / "d").mkdir()
    (root / "d" / "deep").mkdir()
    (root / "d" / "deep" / "leak").symlink_to(out / "secret.txt")
    (root / "ok").mkdir()
    (root / "ok" / "inner").symlink_to(root / "d")  # a link that stays inside is fine
    (root / "link-out").symlink_to(out / "secret.txt")
    os.mkfifo(root / "fifo")
    (root / "loop").symlink_to(root / "loop")
    code, msg = http_error(resolve_path, "d", [root])
    assert code == 403 and msg == ("context_path 'd' holds a link that leads outside the allowed roots: "
                                   "deep/leak")
    assert resolve_path("ok", [root]) == root / "ok"
    assert http_error(resolve_path, "link-out", [root])[0] == 403
    assert http_error(resolve_path, "fifo", [root]) == (400, "context_path 'fifo' is not a regular file or a "
                                                             "folder (a FIFO)")
    assert http_error(resolve_path, "loop", [root])[0] in (400, 404)


def test_model_specs_naming_files_obey_the_roots(tmp_path):
    (tmp_path / "s.json").write_text("[]")
    assert check_model_spec("scripted:s.json", [tmp_path]) == f"scripted:{tmp_path / 's.json'}"
    assert check_model_spec("local:s.json", [tmp_path]) == f"local:{tmp_path / 's.json'}"
    assert check_model_spec("openai/gpt-4o", [tmp_path]) == "openai/gpt-4o"
    assert check_model_spec(None, []) is None and check_model_spec("", []) == ""
    code, msg = http_error(check_model_spec, "scripted:/etc/passwd", [tmp_path])
    assert code == 403 and msg.startswith("the scripted model file '/etc/passwd' is outside")
    assert http_error(check_model_spec, "local:nope.gguf", [tmp_path])[1].startswith("the local model file ")


class Req:
    def __init__(self, body: bytes):
        self._b = body

    async def body(self) -> bytes:
        return self._b


def test_read_json_bodies():
    assert asyncio.run(read_json(Req(b'{"a": [1, "\xc3\xa9"]}'))) == {"a": [1, "é"]}
    for bad in (b"{", b"\xff\xfe{}", b""):
        with pytest.raises(HTTPException) as info:
            asyncio.run(read_json(Req(bad)))
        assert info.value.status_code == 400 and info.value.detail.startswith("the body must be JSON")
    with pytest.raises(HTTPException) as info:
        asyncio.run(read_json(Req(b"[" * 200_000 + b"]" * 200_000)))
    assert (info.value.status_code, info.value.detail) == (400, "the JSON body is nested too deeply")


# ----------------------------------------------------------------------------- a model that is this server
def test_self_loop_rules():
    https_local = [ProviderConfig("me", base_url="https://LOCALHOST/v1")]
    assert self_loop("me/m", https_local, "127.0.0.1", 443) == "https://LOCALHOST/v1"  # https's default port
    assert self_loop("me/m", https_local, "127.0.0.1", 80) is None
    plain = [ProviderConfig("me", base_url="http://127.0.0.1/v1")]
    assert self_loop("me/m", plain, "127.0.0.1", 80) == "http://127.0.0.1/v1"
    odd = [ProviderConfig("me", base_url="ftp://127.0.0.1/v1")]
    assert self_loop("me/m", odd, "127.0.0.1", 0) == "ftp://127.0.0.1/v1"
    skipped = [ProviderConfig("me", base_url=""), ProviderConfig("me", base_url="http://localhost:99999/v1"),
               ProviderConfig("me", base_url="http://localhost:7000/v1")]
    assert self_loop("me/m", skipped, "127.0.0.1", 7000) == "http://localhost:7000/v1"
    # the bound address counts as this server, brackets and case aside
    bound = [ProviderConfig("me", base_url="http://[fd00::5]:7000/v1")]
    assert self_loop("me/m", bound, "[FD00::5]", 7000) == "http://[fd00::5]:7000/v1"
    assert self_loop("me/m", bound, "127.0.0.1", 7000) is None
    # a configured provider replaces the built-in one of the same name
    mine = [ProviderConfig("llamacpp", base_url="http://10.0.0.9:8080/v1")]
    assert self_loop("llamacpp/q", mine, "127.0.0.1", 8080) is None
    assert self_loop("llamacpp/q", [], "127.0.0.1", 8080) == "http://127.0.0.1:8080/v1"
    assert self_loop("unknown/q", [], "127.0.0.1", 8080) is None
    assert self_loop("llamacpp", [], "127.0.0.1", 8080) is None  # no provider/model form
    assert self_loop("local/x", [], "127.0.0.1", 8080) is None and self_loop("", [], "h", 1) is None


def test_paths_given_as_pathlike_roots(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    assert resolve_path("a.txt", check_roots([Path(tmp_path)])) == tmp_path / "a.txt"


# ----------------------------------------------------------------------------- what the first run of
# `tests/mutation.py --modules server/security.py` (fourth session) found untested
def test_a_cookie_token_may_hold_equals_signs():
    app = App()
    mw = AuthMiddleware(app, "YWJj==")  # a base64 token, sent in the cookie as it is
    assert call(mw, scope(headers={"cookie": f"other=1; {COOKIE}=YWJj=="}))[0] == 200 and app.calls == 1
    assert call(mw, scope(headers={"cookie": f"{COOKIE}=YWJj="}))[0] == 401


def test_names_that_only_contain_a_loopback_name_are_not_loopback():
    assert not is_loopback("Xlocalhost") and not is_loopback("127.0.0.1X") and not is_loopback("X[::1]X")


def test_a_bound_name_is_taken_as_it_is(tmp_path):
    mw = HostMiddleware(App(), bind_host="Xbox", port=8765, allowed_hosts=[], token=None)
    assert mw.allowed("xbox", 8765) and not mw.allowed("box", 8765)


def test_the_bind_refusal_says_how_to_give_a_token():
    with pytest.raises(UsageError) as info:
        check_bind("10.1.1.1", None)
    assert str(info.value) == ("serving on 10.1.1.1 (not a loopback address) needs a token: pass --token T, "
                               "set $CONTEXTBOX_TOKEN or [server] token (or bind 127.0.0.1)")


@pytest.mark.parametrize("mw_of", [
    lambda app: HostMiddleware(app, bind_host="127.0.0.1", port=8765, allowed_hosts=[], token=None),
    lambda app: BodyLimitMiddleware(app, 10),
])
def test_lifespan_messages_reach_the_app(mw_of):
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())
        await send({"type": "lifespan.startup.complete"})

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(m: Any) -> None:
        sent.append(m)

    asyncio.run(mw_of(app)({"type": "lifespan"}, receive, send))
    assert got == [{"type": "lifespan.startup"}] and sent == [{"type": "lifespan.startup.complete"}]


def test_a_path_of_exactly_eighty_characters_is_shown_whole(tmp_path):
    raw = "n" * 80
    assert http_error(resolve_path, raw, [tmp_path]) == (404, f"context_path {raw!r} not found under the server's roots")
    raw = "n" * 81
    assert http_error(resolve_path, raw, [tmp_path])[1] == (f"context_path {'n' * 80 + '…'!r} not found under the "
                                                            "server's roots")


def test_a_symlink_loop_cannot_be_resolved(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, msg = http_error(resolve_path, "a/x.txt", [tmp_path])
    assert code in (400, 404)
    if code == 400:  # Python 3.11-3.12: Path.resolve raises on a loop; 3.13 returns the path unresolved
        assert msg == "context_path 'a/x.txt' cannot be resolved"


def test_a_relative_path_outside_one_root_is_looked_for_under_the_next(tmp_path):
    deep, top = tmp_path / "x" / "deep", tmp_path / "top"
    deep.mkdir(parents=True)
    top.mkdir()
    (top / "doc.txt").write_text("d")
    # under deep, "../top/doc.txt" is x/top/doc.txt, outside both roots; under top it is top/doc.txt
    assert resolve_path("../top/doc.txt", [deep, top]) == top / "doc.txt"


def test_a_provider_whose_name_starts_with_local_can_loop_back():
    mine = [ProviderConfig("localai", base_url="http://127.0.0.1:8765/v1")]
    assert self_loop("localai/m", mine, "127.0.0.1", 8765) == "http://127.0.0.1:8765/v1"


def test_a_model_name_may_hold_slashes():
    assert self_loop("llamacpp/org/model.gguf", [], "127.0.0.1", 8080) == "http://127.0.0.1:8080/v1"


def test_a_scope_without_a_query_string_gets_the_login_page():
    sc = scope("/visualize")
    del sc["query_string"]
    status, _, body = call(AuthMiddleware(App(), "tok"), sc)
    assert status == 401 and body == LOGIN_PAGE


def test_the_bound_name_of_a_self_loop_is_taken_as_it_is():
    mine = [ProviderConfig("me", base_url="http://xbox:8080/v1")]
    assert self_loop("me/m", mine, "Xbox", 8080) == "http://xbox:8080/v1"
    assert self_loop("me/m", [ProviderConfig("me", base_url="http://box:8080/v1")], "Xbox", 8080) is None
