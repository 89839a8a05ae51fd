"""The HTTP providers, exercised through a real local HTTP server (no SDK mocks)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fakeserver import FakeLLMServer

from contextbox.errors import (
    AuthError,
    ContextWindowError,
    ProviderError,
    ProviderUnavailable,
    RateLimitError,
)
from contextbox.providers.anthropic_provider import AnthropicProvider, to_anthropic
from contextbox.providers.base import ProviderConfig, resolve
from contextbox.providers.openai_compat import OpenAIProvider
from contextbox.providers.retry import backoff_delay, call_with_retries, error_for_status, parse_retry_after

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is two plus two"}]


def openai_provider(server: FakeLLMServer, **kw: Any) -> OpenAIProvider:
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout_s", 5.0)
    p = OpenAIProvider(ProviderConfig("fake", "openai", base_url=server.base_url, **kw), "fake-model")
    p.retry_base_delay, p.retry_max_delay = 0.001, 0.01  # fast retries
    return p


# ---------------------------------------------------------------- retry helper (unit)


def test_call_with_retries_retries_retryable_then_reraises() -> None:
    calls: list[int] = []
    seen: list[tuple[int, float]] = []

    def fn() -> str:
        calls.append(1)
        raise ProviderUnavailable("down")

    with pytest.raises(ProviderUnavailable):
        call_with_retries(
            fn, max_retries=2, base_delay=0.0, on_retry=lambda a, d, e: seen.append((a, d)), sleep=lambda s: None
        )
    assert len(calls) == 3
    assert [a for a, _ in seen] == [1, 2]


def test_call_with_retries_does_not_retry_non_retryable() -> None:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        raise AuthError("nope")

    with pytest.raises(AuthError):
        call_with_retries(fn, max_retries=5, sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_after_is_honoured_and_capped() -> None:
    slept: list[float] = []
    errors = [RateLimitError("slow down", retry_after=3.0), RateLimitError("slow down", retry_after=1000.0)]

    def fn() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    assert call_with_retries(fn, max_retries=3, max_delay=2.0, sleep=slept.append) == "ok"
    assert slept == [3.0, 8.0]


def test_backoff_is_full_jitter_within_bounds() -> None:
    for attempt in range(1, 8):
        d = backoff_delay(attempt, 0.5, 8.0)
        assert 0.0 <= d <= min(8.0, 0.5 * 2 ** (attempt - 1))


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "garbage"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_error_for_status_mapping() -> None:
    assert isinstance(error_for_status(401, "bad key", auth_hint="set X"), AuthError)
    assert isinstance(error_for_status(429, "slow"), RateLimitError)
    assert isinstance(error_for_status(503, "down"), ProviderUnavailable)
    assert isinstance(error_for_status(400, "This model's maximum context length is 8192 tokens"), ContextWindowError)
    other = error_for_status(404, "model not found")
    assert type(other) is ProviderError and "model not found" in str(other)


# ---------------------------------------------------------------- openai kind


def test_openai_happy_path_uses_server_usage(fake_llm: FakeLLMServer) -> None:
    fake_llm.replies = ["four"]
    c = openai_provider(fake_llm).complete(MSGS, max_tokens=50, temperature=0.0, stop=["\n\n"])
    assert c.text == "four"
    assert (c.input_tokens, c.output_tokens, c.estimated) == (7, 1, False)
    assert c.finish_reason == "stop"
    body = fake_llm.requests[0]
    assert body["model"] == "fake-model" and body["messages"] == MSGS
    assert body["max_tokens"] == 50 and body["temperature"] == 0.0 and body["stop"] == ["\n\n"]
    assert fake_llm.prompt_tokens_total == 7 and fake_llm.completion_tokens_total == 1


def test_openai_messages_reach_the_server_as_given(fake_llm: FakeLLMServer) -> None:
    """The messages go untransformed (in the SDK's extra_body): content parts, names and a long history
    arrive exactly as given, and only once."""
    fake_llm.replies = ["ok"]
    msgs = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} é ✓"} for i in range(40)]
    msgs.append({"role": "user", "name": "alice", "content": [{"type": "text", "text": "part one"},
                                                                {"type": "text", "text": "part two"}]})
    assert openai_provider(fake_llm).complete(msgs).text == "ok"
    assert fake_llm.requests[0]["messages"] == msgs and fake_llm.requests[0]["model"] == "fake-model"


def test_openai_provider_attributes() -> None:
    p = OpenAIProvider(ProviderConfig("local", base_url="http://127.0.0.1:1/v1", context_window=8192), "llama3")
    assert p.name == "local/llama3" and p.context_window == 8192


def test_openai_missing_usage_is_estimated(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("no_usage")
    c = openai_provider(fake_llm).complete(MSGS)
    assert c.estimated is True
    assert c.input_tokens > 0 and c.output_tokens > 0


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "reset"])
def test_openai_retries_transient_faults(fake_llm: FakeLLMServer, fault: str) -> None:
    fake_llm.add_faults(fault)
    retries: list[tuple[int, float, Exception]] = []
    c = openai_provider(fake_llm).complete(MSGS, on_retry=lambda a, d, e: retries.append((a, d, e)))
    assert c.text == "FINAL(fake answer)"
    assert fake_llm.request_count == 2
    assert [a for a, _, _ in retries] == [1]
    assert isinstance(retries[0][2], (RateLimitError, ProviderUnavailable))


def test_openai_429_retry_after_zero_and_attempt_numbers(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("429", "429:0", "500")
    retries: list[tuple[int, float, Exception]] = []
    start = time.monotonic()
    openai_provider(fake_llm).complete(MSGS, on_retry=lambda a, d, e: retries.append((a, d, e)))
    assert time.monotonic() - start < 2.0
    assert [a for a, _, _ in retries] == [1, 2, 3]
    assert retries[0][1] == 0.0  # Retry-After: 0 honoured
    assert isinstance(retries[0][2], RateLimitError) and retries[0][2].retry_after == 0.0
    assert isinstance(retries[2][2], ProviderUnavailable)


def test_openai_exhausted_retries_reraise_last_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.fail_all(503)
    with pytest.raises(ProviderUnavailable) as ei:
        openai_provider(fake_llm, max_retries=2).complete(MSGS)
    assert ei.value.status == 503
    assert fake_llm.request_count == 3


def test_openai_malformed_error_message_is_clear(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("malformed")
    with pytest.raises(ProviderUnavailable, match="malformed response"):
        openai_provider(fake_llm, max_retries=0).complete(MSGS)


def test_openai_hang_times_out_quickly(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("hang")
    start = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        openai_provider(fake_llm, max_retries=0).complete(MSGS, timeout=0.5)
    assert time.monotonic() - start < 3.0


def test_openai_401_names_env_var(fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", "sk-wrong")
    fake_llm.add_faults("401")
    with pytest.raises(AuthError, match="FAKE_KEY") as ei:
        openai_provider(fake_llm, api_key_env="FAKE_KEY").complete(MSGS)
    assert ei.value.status == 401
    assert "[[providers]] table 'fake'" in str(ei.value)
    assert fake_llm.request_count == 1  # auth errors are not retried
    assert fake_llm.request_headers[0]["authorization"] == "Bearer sk-wrong"


def test_openai_missing_env_var_fails_before_any_request(
    fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = OpenAIProvider(ProviderConfig("openai", base_url=fake_llm.base_url, api_key_env="OPENAI_API_KEY"), "gpt-x")
    with pytest.raises(AuthError) as ei:
        p.complete(MSGS)
    assert "set OPENAI_API_KEY or change api_key_env in the [[providers]] table 'openai' of contextbox.toml" in str(
        ei.value
    )
    assert fake_llm.request_count == 0


def test_openai_no_key_needed_sends_placeholder(fake_llm: FakeLLMServer) -> None:
    openai_provider(fake_llm).complete(MSGS)
    assert fake_llm.request_headers[0]["authorization"] == "Bearer not-needed"


def test_openai_response_schema_sent_as_response_format(fake_llm: FakeLLMServer) -> None:
    schema = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
    openai_provider(fake_llm, structured_output=True).complete(MSGS, response_schema=schema, schema_name="command")
    assert fake_llm.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "command", "schema": schema, "strict": True},
    }
    openai_provider(fake_llm).complete(MSGS, response_schema=schema)  # structured_output off: not sent
    assert "response_format" not in fake_llm.requests[1]


def test_openai_other_4xx_is_provider_error_with_server_message(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("404")
    with pytest.raises(ProviderError, match="injected fault 404") as ei:
        openai_provider(fake_llm).complete(MSGS)
    assert type(ei.value) is ProviderError and fake_llm.request_count == 1


def test_openai_context_length_400_is_context_window_error(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("400:This model's maximum context length is 8192 tokens", "400:unknown parameter foo")
    with pytest.raises(ContextWindowError, match="maximum context length"):
        openai_provider(fake_llm).complete(MSGS)
    with pytest.raises(ProviderError, match="unknown parameter foo") as ei:
        openai_provider(fake_llm).complete(MSGS)
    assert not isinstance(ei.value, ContextWindowError) and fake_llm.request_count == 2


def test_openai_connection_refused_is_unavailable() -> None:
    with FakeLLMServer() as srv:
        url = srv.base_url
    p = OpenAIProvider(ProviderConfig("gone", base_url=url, max_retries=0, timeout_s=2), "m")
    with pytest.raises(ProviderUnavailable, match="connection error"):
        p.complete(MSGS)


def test_resolve_end_to_end(fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test")
    fake_llm.replies = lambda body: f"you said {len(body['messages'])} messages"
    p = resolve(
        "myname/some-model",
        [ProviderConfig(name="myname", kind="openai", base_url=fake_llm.base_url, api_key_env="MY_KEY")],
    )
    assert p.name == "myname/some-model"
    c = p.complete(MSGS)
    assert c.text == "you said 2 messages" and not c.estimated
    assert fake_llm.requests[0]["model"] == "some-model"
    assert fake_llm.request_headers[0]["authorization"] == "Bearer sk-test"


# ---------------------------------------------------------------- anthropic kind


def anthropic_provider(server: FakeLLMServer, **kw: Any) -> AnthropicProvider:
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout_s", 5.0)
    p = AnthropicProvider(ProviderConfig("claude", "anthropic", base_url=server.root_url, **kw), "claude-x")
    p.retry_base_delay, p.retry_max_delay = 0.001, 0.01
    return p


def test_to_anthropic_moves_system_and_merges_roles() -> None:
    system, msgs = to_anthropic(
        [
            {"role": "system", "content": "rule one"},
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "system", "content": "rule two"},
            {"role": "assistant", "content": "c  "},
        ]
    )
    assert system == "rule one\n\nrule two"
    assert msgs == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"}]
    assert to_anthropic([{"role": "system", "content": "only"}]) == (None, [{"role": "user", "content": "only"}])


def test_anthropic_happy_path_and_system(fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHRO_KEY", "sk-ant")
    fake_llm.replies = ["four"]
    msgs = [*MSGS, {"role": "user", "content": "answer now"}]
    c = anthropic_provider(fake_llm, api_key_env="ANTHRO_KEY").complete(msgs, stop=["END"], temperature=0.2)
    assert c.text == "four" and not c.estimated
    assert (c.input_tokens, c.output_tokens) == (2 + 5 + 2, 1)
    assert c.finish_reason == "end_turn" and c.model == "claude/claude-x"
    body = fake_llm.requests[0]
    assert fake_llm.paths == ["/v1/messages"]
    assert body["system"] == "be brief"
    assert body["messages"] == [{"role": "user", "content": "what is two plus two\n\nanswer now"}]
    assert body["max_tokens"] == 4096 and body["stop_sequences"] == ["END"] and body["temperature"] == 0.2
    headers = fake_llm.request_headers[0]
    assert "sk-ant" in (headers.get("x-api-key", ""), headers.get("authorization", "").removeprefix("Bearer "))


def test_anthropic_accepts_v1_base_url_and_retries(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("429", "malformed")
    p = AnthropicProvider(ProviderConfig("claude", "anthropic", base_url=fake_llm.base_url), "claude-x")
    p.retry_base_delay = 0.001
    retries: list[int] = []
    assert p.complete(MSGS, on_retry=lambda a, d, e: retries.append(a)).text == "FINAL(fake answer)"
    assert retries == [1, 2] and fake_llm.request_count == 3


def test_anthropic_errors_map_like_openai(fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHRO_KEY", "sk-bad")
    fake_llm.add_faults("401")
    with pytest.raises(AuthError, match="ANTHRO_KEY"):
        anthropic_provider(fake_llm, api_key_env="ANTHRO_KEY").complete(MSGS)
    monkeypatch.delenv("ANTHRO_KEY")
    with pytest.raises(AuthError, match="set ANTHRO_KEY"):
        anthropic_provider(fake_llm, api_key_env="ANTHRO_KEY").complete(MSGS)
    assert fake_llm.request_count == 1
    fake_llm.add_faults("no_usage")
    assert anthropic_provider(fake_llm).complete(MSGS).estimated is True


def test_anthropic_response_schema(fake_llm: FakeLLMServer) -> None:
    schema = {"type": "object", "properties": {"cmd": {"type": "string"}}}
    anthropic_provider(fake_llm, structured_output=True).complete(MSGS, response_schema=schema, max_tokens=10)
    body = fake_llm.requests[0]
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["max_tokens"] == 10
    anthropic_provider(fake_llm).complete(MSGS, response_schema=schema)  # default: instructions only
    assert "output_config" not in fake_llm.requests[1]


def test_anthropic_via_resolve(fake_llm: FakeLLMServer) -> None:
    p = resolve("claude/claude-x", [ProviderConfig("claude", "anthropic", base_url=fake_llm.root_url)])
    assert isinstance(p, AnthropicProvider)
    assert p.complete(MSGS).text == "FINAL(fake answer)"


# ---------------------------------------------------------------- the fake server itself


def test_fake_server_models_and_counters(fake_llm: FakeLLMServer) -> None:
    import httpx

    r = httpx.get(f"{fake_llm.base_url}/models")
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "fake-model"
    fake_llm.replies = ["one", "two"]
    p = openai_provider(fake_llm)
    assert [p.complete(MSGS).text for _ in range(3)] == ["one", "two", "two"]
    assert fake_llm.request_count == 3
    fake_llm.reset()
    assert fake_llm.request_count == 0 and fake_llm.prompt_tokens_total == 0


# ---------------------------------------------------------------- a total deadline per request
@pytest.mark.parametrize("fault", ["drip", "drip_body"])
def test_openai_dripping_reply_hits_the_total_deadline(fake_llm: FakeLLMServer, fault: str) -> None:
    """Each byte arrives well within the per-read timeout, yet the request ends at its total timeout."""
    fake_llm.drip_s = 0.05  # a ~300-byte reply would take ~15 s
    fake_llm.add_faults(fault)
    start = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        openai_provider(fake_llm, max_retries=0, timeout_s=1.0).complete(MSGS)
    assert 0.9 <= time.monotonic() - start < 2.5
    # the same provider (same pooled client) answers the next request normally
    assert openai_provider(fake_llm, max_retries=0, timeout_s=1.0).complete(MSGS).text


def test_openai_call_timeout_is_a_total_deadline_and_retried(fake_llm: FakeLLMServer) -> None:
    fake_llm.add_faults("drip")
    p = openai_provider(fake_llm, max_retries=1, timeout_s=30.0)
    start = time.monotonic()
    c = p.complete(MSGS, timeout=0.6)  # the first attempt drips and is cut at 0.6 s; the retry answers
    assert c.text and fake_llm.request_count == 2
    assert time.monotonic() - start < 2.0


def test_slow_but_finishing_reply_within_the_deadline_is_kept(fake_llm: FakeLLMServer) -> None:
    fake_llm.replies = "ok"
    fake_llm.drip_s = 0.002
    fake_llm.add_faults("drip_body")
    assert openai_provider(fake_llm, max_retries=0, timeout_s=5.0).complete(MSGS).text == "ok"


@pytest.mark.parametrize("fault", ["drip", "drip_body"])
def test_anthropic_dripping_reply_hits_the_total_deadline(fake_llm: FakeLLMServer, fault: str) -> None:
    fake_llm.add_faults(fault)
    p = AnthropicProvider(ProviderConfig("fake", "anthropic", base_url=fake_llm.root_url, max_retries=0,
                                         timeout_s=1.0), "claude-test")
    start = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        p.complete(MSGS)
    assert time.monotonic() - start < 2.5


def test_the_local_model_never_gets_a_string_longer_than_its_grammar_takes():
    from contextbox.providers.local import MAX_GRAMMAR_STRING, grammar_safe

    schema = {"anyOf": [{"properties": {"answer": {"type": "string", "minLength": 5000, "maxLength": 9000},
                                        "t": {"type": "string", "maxLength": 160}}}]}
    safe = grammar_safe(schema)
    answer = safe["anyOf"][0]["properties"]["answer"]
    assert answer["maxLength"] == MAX_GRAMMAR_STRING == answer["minLength"]
    assert safe["anyOf"][0]["properties"]["t"] == {"type": "string", "maxLength": 160}  # short ones unchanged
    assert schema["anyOf"][0]["properties"]["answer"]["maxLength"] == 9000  # the caller's schema is not changed
