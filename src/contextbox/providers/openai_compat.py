"""Kind ``openai``: any OpenAI-compatible chat-completions endpoint, via the official SDK.

Works for OpenAI itself and for DeepSeek, OpenRouter, vLLM, Ollama, LM Studio, llama.cpp
and friends. The SDK's own retries are off (``max_retries=0``); contextbox retries with
:func:`~contextbox.providers.retry.call_with_retries` so that every retry is visible to the
engine through ``on_retry``. The body is parsed here rather than by the SDK so that a
malformed reply becomes a clear, retryable :class:`~contextbox.errors.ProviderUnavailable`.

``response_schema`` goes out as ``response_format`` (``json_schema``, ``strict``) when the
provider config's ``structured_output`` is on (the built-in ``openai`` only, by default); a
schema whose root is not an object is wrapped as ``{"items": ...}`` and the reply unwrapped.
An endpoint that answers 400 to it is asked again without it, and never sent it again.

The helpers here (key lookup, SDK error mapping, body reading) are shared with the
``anthropic`` kind, whose SDK raises the same shapes of exceptions.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import AuthError, ContextWindowError, ProviderError, ProviderUnavailable
from ..types import Completion
from .base import ProviderConfig, estimate_tokens, object_root, register_kind, unwrap_reply
from .deadline import deadline_http_client
from .retry import call_with_retries, error_for_status, parse_retry_after

log = logging.getLogger("contextbox")

#: sent when the endpoint needs no key (local servers); the SDK refuses an empty one
PLACEHOLDER_KEY = "not-needed"


def auth_hint(config: ProviderConfig) -> str:
    """What to do about a missing or refused key, naming the env var and config key (a
    ``[[providers]]`` table only when there is one: built-in providers have none)."""
    from .base import BUILTIN_PROVIDERS

    if BUILTIN_PROVIDERS.get(config.name) is config:
        if config.api_key_env:
            return (f"set {config.api_key_env} (or add a [[providers]] table named {config.name!r} with api_key_env "
                    "naming another variable)")
        return f"add a [[providers]] table named {config.name!r} with api_key_env naming the key's variable"
    table = f"the [[providers]] table {config.name!r} of contextbox.toml"
    if config.api_key_env:
        return f"set {config.api_key_env} or change api_key_env in {table}"
    return f"set api_key_env in {table} to the name of the environment variable holding the key"


def missing_key(provider: Any) -> str | None:
    """A one-line message when ``provider`` (or every endpoint of a pool) needs an API key
    whose environment variable is not set; None when a call could be sent."""
    endpoints = getattr(provider, "endpoints", None)
    configs = [e.config for e in endpoints] if endpoints else [getattr(provider, "config", None)]
    configs = [c for c in configs if isinstance(c, ProviderConfig)]
    if not configs or any(not c.api_key_env or c.api_key() for c in configs):
        return None
    c = configs[0]
    return f"no API key for {getattr(provider, 'name', c.name)}: {auth_hint(c)}"


def require_key(config: ProviderConfig) -> str:
    """The API key to send: the env var's value, or a placeholder when none is configured."""
    if not config.api_key_env:
        return PLACEHOLDER_KEY
    key = config.api_key()
    if not key:
        raise AuthError(f"{config.name}: no API key: {auth_hint(config)}")
    return key


def text_of(content: Any) -> str:
    """The text of a message content: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def map_sdk_error(exc: Exception, config: ProviderConfig, name: str) -> ProviderError | None:
    """Translate an ``openai``/``anthropic`` SDK exception; ``None`` if it is not one.

    Both SDKs share the same shapes (``APIStatusError.status_code/.response/.body``,
    ``APITimeoutError``, ``APIConnectionError``), so this works for either by duck typing.
    ``name`` (the model spec) prefixes the message.
    """
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if isinstance(status, int) and response is not None:
        return error_for_status(
            status,
            server_message(exc),
            retry_after=parse_retry_after(getattr(response, "headers", None)),
            auth_hint=auth_hint(config),
            provider=name,
        )
    kind = type(exc).__name__
    if kind == "APITimeoutError":
        return ProviderUnavailable(f"{name}: request timed out ({config.base_url})")
    if kind == "APIConnectionError":
        cause = exc.__cause__ or exc.__context__
        detail = f": {cause}" if cause else ""
        return ProviderUnavailable(f"{name}: connection error talking to {config.base_url}{detail}")
    return None


def server_message(exc: Exception) -> str:
    """The server's own error message from an SDK status error's body, else the SDK's."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return str(getattr(exc, "message", None) or exc)


def read_json_body(raw: Any, name: str) -> dict[str, Any]:
    """Read and decode a raw SDK response; anything unusable is a ProviderUnavailable."""
    try:
        resp = raw.http_response
        resp.read()
        text = resp.text
    except Exception as e:  # noqa: BLE001 - a broken body of any kind is retryable
        raise ProviderUnavailable(f"{name}: failed to read the response body: {e}") from e
    try:
        data = json.loads(text)
    except ValueError:
        raise ProviderUnavailable(f"{name}: malformed response (not JSON): {text[:200]!r}") from None
    if not isinstance(data, dict):
        raise ProviderUnavailable(f"{name}: malformed response (not a JSON object): {text[:200]!r}")
    return data


#: the header the SDK's ``with_raw_response`` sets: the call returns the raw response, unparsed
RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class SDKProvider:
    """What the SDK-backed providers share: identity, retry settings, one client per API key."""

    def __init__(self, config: ProviderConfig, model: str) -> None:
        self.config = config
        self.model = model
        self.name = f"{config.name}/{model}"
        self.context_window = config.context_window
        #: backoff of this provider's retries (tests and benchmarks make it tiny)
        self.retry_base_delay = 0.5
        self.retry_max_delay = 8.0
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _make_client(self, key: str) -> Any:
        raise NotImplementedError

    def _client(self, key: str) -> Any:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._make_client(key)
                self._clients = {key: client}  # a changed key replaces the old client
            return client

    def _send(self, create: Callable[[], Any], parse: Callable[[dict[str, Any]], Completion],
              opts: dict[str, Any]) -> Completion:
        """One request through ``create`` (an SDK raw-response call), SDK errors mapped, retried."""

        def attempt() -> Completion:
            try:
                raw = create()
            except Exception as e:
                mapped = map_sdk_error(e, self.config, self.name)
                if mapped is None:
                    raise
                raise mapped from e
            return parse(read_json_body(raw, self.name))

        return call_with_retries(
            attempt,
            max_retries=self.config.max_retries,
            base_delay=self.retry_base_delay,
            max_delay=self.retry_max_delay,
            on_retry=opts.get("on_retry"),
        )


class OpenAIProvider(SDKProvider):
    """One model on one OpenAI-compatible endpoint."""

    def __init__(self, config: ProviderConfig, model: str) -> None:
        import openai  # noqa: F401 - imported here (≈0.7 s) so the first call, often in a batch, doesn't pay it

        super().__init__(config, model)
        #: the endpoint answered 400 to a request with ``response_format`` and 200 without it
        self.format_refused = False

    def _make_client(self, key: str) -> Any:
        import openai

        return openai.OpenAI(base_url=self.config.base_url, api_key=key, max_retries=0, timeout=self.config.timeout_s,
                             http_client=deadline_http_client(openai))

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        """Send ``messages``; retries retryable failures up to ``config.max_retries`` times."""
        client = self._client(require_key(self.config))
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if opts.get("max_tokens") is not None:
            kwargs["max_tokens"] = int(opts["max_tokens"])
        if opts.get("temperature") is not None:
            kwargs["temperature"] = float(opts["temperature"])
        if opts.get("stop"):
            kwargs["stop"] = list(opts["stop"])
        if opts.get("timeout") is not None:
            kwargs["timeout"] = float(opts["timeout"])
        schema = opts.get("response_schema")
        wrapped = False
        if schema is not None and self.config.structured_output and not self.format_refused:
            sent, wrapped = object_root(schema)
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": str(opts.get("schema_name") or "response"), "schema": sent, "strict": True},
            }

        def send() -> Completion:
            # the request as ``chat.completions.with_raw_response.create`` sends it, through the
            # client's ``post`` (same headers, retries off, errors, raw response): the params are
            # plain JSON already, and ``create``'s params transform (a walk of the TypedDicts of
            # all ~40 params and of every message) was the largest part of the client's CPU a call
            body = {k: v for k, v in kwargs.items() if k != "timeout"}
            options: dict[str, Any] = {"headers": {RAW_RESPONSE_HEADER: "true"}}
            if "timeout" in kwargs:
                options["timeout"] = kwargs["timeout"]
            return self._send(lambda: client.post("/chat/completions", cast_to=object, body=body, options=options),
                              lambda data: self._parse(data, messages), opts)

        try:
            c = send()
        except ProviderError as e:
            if "response_format" not in kwargs or e.status != 400 or isinstance(e, ContextWindowError):
                raise
            log.warning("%s refused response_format (%s); sending without it, and so from now on", self.name, e)
            del kwargs["response_format"]
            c = send()
            self.format_refused = True  # the endpoint works without it: remember
            return c
        if wrapped:
            c.text = unwrap_reply(c.text)
        return c

    def _parse(self, data: dict[str, Any], messages: list[dict[str, Any]]) -> Completion:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            err = data.get("error")
            detail = f": {err}" if err else ""
            raise ProviderUnavailable(f"{self.name}: malformed response (no choices){detail}")
        choice = choices[0]
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if content is None and isinstance(message, dict) and message.get("refusal"):
            content = message["refusal"]
        if not isinstance(content, (str, list)):
            raise ProviderUnavailable(f"{self.name}: malformed response (message content missing)")
        text = text_of(content)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        inp, out = int_or_none(usage.get("prompt_tokens")), int_or_none(usage.get("completion_tokens"))
        estimated = inp is None or out is None
        if inp is None:
            inp = estimate_tokens("".join(text_of(m.get("content")) for m in messages))
        if out is None:
            out = estimate_tokens(text)
        return Completion(
            text,
            inp,
            out,
            estimated=estimated,
            model=self.name,
            finish_reason=choice.get("finish_reason"),
            endpoint=f"{self.config.name}@{self.config.base_url}" if self.config.base_url else self.config.name,
        )


register_kind("openai", OpenAIProvider)
