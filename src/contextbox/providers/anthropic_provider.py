"""Kind ``anthropic``: the Anthropic Messages API, via the official ``anthropic`` SDK.

Chat messages are adapted to the Messages API: ``system`` messages (wherever they appear)
move to the ``system`` parameter, other roles become ``user``/``assistant``, and
consecutive messages of one role are merged. Error mapping and retries are the same as
for the ``openai`` kind. ``response_schema`` is sent (as ``output_config``) only when the
provider config's ``structured_output`` is on; by default the caller's prompt asks for JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ProviderUnavailable
from ..types import Completion
from .base import estimate_tokens, register_kind
from .deadline import deadline_http_client
from .openai_compat import SDKProvider, int_or_none, require_key, text_of

log = logging.getLogger("contextbox")

DEFAULT_MAX_TOKENS = 4096


def to_anthropic(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, str]]]:
    """Split chat ``messages`` into the Messages API's ``system`` and ``messages``."""
    system: list[str] = []
    out: list[dict[str, str]] = []
    for m in messages:
        role = m.get("role")
        text = text_of(m.get("content"))
        if role == "system":
            system.append(text)
            continue
        role = "assistant" if role == "assistant" else "user"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})
    sys_text = "\n\n".join(s for s in system if s) or None
    if not out:  # a system-only prompt: the API needs at least one user turn
        return None, [{"role": "user", "content": sys_text or ""}]
    if out[-1]["role"] == "assistant":  # a prefill may not end with whitespace
        out[-1]["content"] = out[-1]["content"].rstrip()
    return sys_text, out


class AnthropicProvider(SDKProvider):
    """One Claude model behind the Anthropic Messages API (or a compatible endpoint)."""

    def _make_client(self, key: str) -> Any:
        import anthropic

        base_url = self.config.base_url
        if base_url and base_url.rstrip("/").endswith("/v1"):  # the SDK appends /v1/messages itself
            base_url = base_url.rstrip("/")[: -len("/v1")]
        return anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=self.config.timeout_s,
                                   http_client=deadline_http_client(anthropic))

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        """Send ``messages``; retries retryable failures up to ``config.max_retries`` times."""
        client = self._client(require_key(self.config))
        system, msgs = to_anthropic(messages)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": msgs,
            "max_tokens": int(opts.get("max_tokens") or DEFAULT_MAX_TOKENS),
        }
        if system:
            kwargs["system"] = system
        if opts.get("temperature") is not None:  # not a typed argument of this SDK version
            kwargs["extra_body"] = {"temperature": float(opts["temperature"])}
        if opts.get("stop"):
            kwargs["stop_sequences"] = list(opts["stop"])
        if opts.get("timeout") is not None:
            kwargs["timeout"] = float(opts["timeout"])
        if opts.get("response_schema") is not None and self.config.structured_output:
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": opts["response_schema"]}}

        # the messages go as they are (plain JSON) in extra_body, past the SDK's params transform
        # (it walks every message of the history: a large share of the client's CPU a call)
        kwargs["extra_body"] = {**kwargs.get("extra_body", {}), "messages": msgs}
        kwargs["messages"] = []
        return self._send(lambda: client.messages.with_raw_response.create(**kwargs),
                          lambda data: self._parse(data, system, msgs), opts)

    def _parse(self, data: dict[str, Any], system: str | None, msgs: list[dict[str, str]]) -> Completion:
        blocks = data.get("content")
        if not isinstance(blocks, list):
            err = data.get("error")
            detail = f": {err}" if err else ""
            raise ProviderUnavailable(f"{self.name}: malformed response (content missing){detail}")
        text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        inp, out = int_or_none(usage.get("input_tokens")), int_or_none(usage.get("output_tokens"))
        estimated = inp is None or out is None
        if inp is not None:  # cached prompt tokens are reported apart; they were still read
            inp += sum(
                int_or_none(usage.get(k)) or 0 for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
            )
        if inp is None:
            inp = estimate_tokens((system or "") + "".join(m["content"] for m in msgs))
        if out is None:
            out = estimate_tokens(text)
        where = f"{self.config.name}@{self.config.base_url}" if self.config.base_url else self.config.name
        return Completion(text, inp, out, estimated=estimated, model=self.name, finish_reason=data.get("stop_reason"),
                          endpoint=where)


register_kind("anthropic", AnthropicProvider)
