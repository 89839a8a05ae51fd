"""What the batch path's CPU cuts keep exact (bench/profile_batch.py measures the CPU itself):
events copied as ``dataclasses.asdict`` copies them, the structure check of a context, a run's
row written once, and the OpenAI request sent through ``client.post`` as ``create`` sends it."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

import pytest
from fakeserver import FakeLLMServer
from hypothesis import given, settings
from hypothesis import strategies as st

from contextbox import aids_table, auto_fields
from contextbox.context import Context
from contextbox.providers.base import ProviderConfig
from contextbox.providers.openai_compat import OpenAIProvider, require_key
from contextbox.stores.sqlite import SqliteRunStore
from contextbox.types import Event


# ---------------------------------------------------------------------- Event.to_dict
@dataclasses.dataclass
class Point:
    x: int
    tags: list[str]


atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
values = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=4),
        st.builds(Point, st.integers(), st.lists(st.text(max_size=3), max_size=3)),
    ),
    max_leaves=25,
)


@settings(max_examples=120, deadline=None)
@given(data=st.dictionaries(st.text(max_size=6), values, max_size=6), seq=st.integers(0, 99))
def test_event_to_dict_is_asdict(data: dict[str, Any], seq: int) -> None:
    ev = Event("lm_response", data, run_id="r1", seq=seq, path="0.1")
    got = ev.to_dict()
    assert got == dataclasses.asdict(ev)
    assert list(got) == ["type", "data", "run_id", "seq", "ts", "path"]
    assert json.dumps(got, default=str) == json.dumps(dataclasses.asdict(ev), default=str)  # same types (tuples…)


def test_event_to_dict_copies_every_container() -> None:
    data = {"a": [1, {"b": [2]}], "p": Point(1, ["t"]), "t": ([3],)}
    ev = Event("x", data, run_id="r", seq=0)
    got = ev.to_dict()
    got["data"]["a"][1]["b"].append(9)
    got["data"]["t"][0].append(9)
    got["data"]["p"]["tags"].append("u")
    assert ev.data == {"a": [1, {"b": [2]}], "p": Point(1, ["t"]), "t": ([3],)}
    assert isinstance(got["data"]["p"], dict)


# ---------------------------------------------------------------------- aids_table.structured
def structured_plain(context: Context, sample: int = 60) -> bool:
    """The check as it was written first: every sampled line parsed."""
    text = context.text
    if not text:
        return False
    step = max(1, len(text) // sample)
    lines: list[str] = []
    for pos in range(0, len(text), step):
        a = text.rfind("\n", 0, pos) + 1
        b = text.find("\n", pos)
        line = text[a: b if b >= 0 else len(text)].strip()
        if line and not line.startswith("==> "):
            lines.append(line[:2000])
        if len(lines) >= sample:
            break
    if len(lines) < 5:
        return False
    typed = 0
    for line in lines:
        row = auto_fields.parse_line(line)
        cols = [k for k in row if not k.startswith(("word", "message", "number"))]
        typed += len(cols) >= 2
    return typed >= 0.7 * len(lines)


typed_line = st.builds(lambda h, m, lvl, ms: f"2024-01-0{h % 9 + 1} 10:{m:02d}:00 {lvl} took={ms}ms user=u{m}",
                       st.integers(0, 50), st.integers(0, 59), st.sampled_from(["INFO", "WARN", "ERROR"]),
                       st.integers(0, 5000))
prose_line = st.text(alphabet="abc de\t", min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.one_of(typed_line, prose_line, st.just("==> f.log <==")), min_size=0, max_size=40))
def test_structured_is_the_plain_check(lines: list[str]) -> None:
    ctx = Context.from_value("\n".join(lines))
    assert aids_table.structured(ctx) == structured_plain(ctx)


def test_structured_parses_each_distinct_line_once(monkeypatch) -> None:
    calls: list[str] = []
    real = auto_fields.parse_line

    def counting(line: str) -> dict[str, Any]:
        calls.append(line)
        return real(line)

    monkeypatch.setattr(auto_fields, "parse_line", counting)
    lines = [f"2024-01-01 10:00:0{i} INFO took={i}ms user=u{i}" for i in range(6)]
    ctx = Context.from_value("\n".join(lines))  # short: ~4 samples fall on each line
    assert aids_table.structured(ctx) is True
    assert sorted(calls) == sorted(lines)


# ---------------------------------------------------------------------- the run's row
def test_a_run_row_is_inserted_once_and_kept_up_to_date(tmp_path) -> None:
    store = SqliteRunStore(tmp_path / "runs.sqlite")
    sent: list[str] = []
    store._w.set_trace_callback(sent.append)
    rid = "run-a"
    store.append(Event("run_start", {"question": "q?", "model": "m"}, run_id=rid, seq=0))
    store.append(Event("iteration_start", {"iteration": 1}, run_id=rid, seq=1))
    store.append(Event("lm_response", {"model": "m", "input_tokens": 5, "output_tokens": 2}, run_id=rid, seq=2))
    store.append(Event("iteration_start", {"iteration": 2}, run_id=rid, seq=3))
    store.append(Event("run_end", {"status": "answered", "answer": "4", "iterations": 2,
                                   "usage": {"total": {"total_tokens": 7}}}, run_id=rid, seq=4))
    inserts = [s for s in sent if s.startswith("INSERT OR IGNORE INTO runs")]
    assert len(inserts) == 1
    row = store.get_run(rid)
    assert row["status"] == "answered" and row["iterations"] == 2 and row["answer"] == "4" and row["tokens"] == 7
    assert [e.seq for e in store.events(rid)] == [0, 1, 2, 3, 4]
    # a run ended here and then finished again from outside (its row is asked for again): still stored whole
    other = sqlite3.connect(tmp_path / "runs.sqlite")
    other.execute("DELETE FROM runs WHERE run_id=?", (rid,))
    other.commit()
    other.close()
    store.append(Event("error", {"message": "late"}, run_id=rid, seq=5))
    assert store.get_run(rid) is not None and len(store.events(rid)) == 6
    store.close()


# ---------------------------------------------------------------------- the OpenAI request
@pytest.fixture(scope="module")
def fake_llm_module():
    with FakeLLMServer(replies='{"a": "b"}') as srv:
        yield srv


@settings(max_examples=10, deadline=None)
@given(messages=st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                                 "content": st.text(max_size=30)}), min_size=1, max_size=5),
       max_tokens=st.one_of(st.none(), st.integers(1, 500)),
       temperature=st.one_of(st.none(), st.floats(0, 2)),
       stop=st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=2)),
       schema=st.booleans())
def test_openai_request_is_what_create_sends(fake_llm_module, messages, max_tokens, temperature, stop, schema) -> None:
    """The provider's request (body and headers at the server) equals the SDK's own
    ``chat.completions.with_raw_response.create`` with the same parameters."""
    srv = fake_llm_module
    srv.reset()
    p = OpenAIProvider(ProviderConfig("fake", "openai", base_url=srv.base_url, structured_output=True, max_retries=0),
                       "fake-model")
    opts: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop, "timeout": 9.0}
    if schema:
        opts["response_schema"] = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    p.complete(messages, **opts)
    kwargs: dict[str, Any] = {"model": "fake-model", "messages": messages, "timeout": 9.0}
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if temperature is not None:
        kwargs["temperature"] = float(temperature)
    if stop:
        kwargs["stop"] = stop
    if schema:
        kwargs["response_format"] = srv.requests[0]["response_format"]
    p._client(require_key(p.config)).chat.completions.with_raw_response.create(**kwargs)
    mine, sdk = srv.requests
    assert mine == sdk
    assert mine["messages"] == messages and mine["model"] == "fake-model"
    assert ("max_tokens" in mine) == (max_tokens is not None) and ("stop" in mine) == bool(stop)
    assert ("response_format" in mine) == schema
    h1, h2 = srv.request_headers
    varying = {"content-length", "x-stainless-retry-count", "x-stainless-read-timeout"}
    assert {k: v for k, v in h1.items() if k not in varying} == {k: v for k, v in h2.items() if k not in varying}
    assert h1["x-stainless-raw-response"] == "true"
