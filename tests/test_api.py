"""The Python API beside ``run``: ``completion`` (the rlms shape), ``arun``/``astream``, typed answers,
the default run store, and configuration mistakes as ``UsageError``s with the CLI's messages."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import jsonschema
import pytest
from helpers import cmd, fed_back
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from test_cli import rlm as rlm_cli

from contextbox import RLM, Config, ConfigError, Context, RLMCompletion, UsageError
from contextbox.engine import DEFAULT_ROOT_PROMPT
from contextbox.providers import ScriptedProvider
from contextbox.stores.sqlite import SqliteRunStore, default_db_path
from contextbox.typed_answer import AnswerRejected, AnswerSpec

TEXT = "alpha\nthe vault code is ZEBRA-42\nPierre is 31 years old and lives in Moscow\nomega\n"


def make(replies: list[Any], *, store: Any = None, levels: str = "l1", provider: Any = None, **limits: Any) -> RLM:
    return RLM(model=provider or ScriptedProvider(replies), config=Config(), levels=levels, store=store,
               limits=limits or None)


class SlowScripted(ScriptedProvider):
    """A scripted model that takes ``delay`` seconds per reply (a real model's latency)."""

    def __init__(self, replies: list[Any], delay: float):
        super().__init__(replies)
        self.delay = delay

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Any:
        time.sleep(self.delay)
        return super().complete(messages, **opts)


# ---------------------------------------------------------------------- completion (the rlms shape)
def test_completion_returns_response_like_rlms():
    r = make([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")])
    c = r.completion(TEXT, root_prompt="What is the vault code?")
    assert isinstance(c, RLMCompletion)
    assert c.response == "ZEBRA-42" and c.status == "answered" and c.error is None
    assert c.root_model == r.root.name and c.prompt == TEXT
    assert c.usage_summary.total.calls == 2 and c.execution_time > 0
    assert c.run_id == c.result.run_id and c.metadata["run_id"] == c.run_id
    assert r.root.requests[0][1]["content"].startswith("Question: What is the vault code?")
    assert c.to_dict()["response"] == "ZEBRA-42"


def test_completion_without_root_prompt_asks_the_context():
    r = make([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")])
    c = r.completion(TEXT)
    assert c.response == "ZEBRA-42"
    assert r.root.requests[0][1]["content"].startswith(f"Question: {DEFAULT_ROOT_PROMPT}")


def test_completion_of_a_run_without_answer_has_error_and_empty_response():
    r = make([cmd("find", text="vault")] * 3, max_iterations=2)
    c = r.completion(TEXT, root_prompt="code?")
    assert c.status == "max_iterations" and c.response == "" and "no final answer" in c.error


# ---------------------------------------------------------------------- async
def test_arun_answers():
    r = make([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")])
    res = asyncio.run(r.arun("What is the vault code?", TEXT))
    assert res.answer == "ZEBRA-42" and res.status == "answered" and res.iterations == 2
    assert [e.type for e in res.events][0] == "run_start" and res.events[-1].type == "run_end"


def test_arun_does_not_block_the_event_loop():
    provider = SlowScripted([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")], delay=0.3)
    r = make([], provider=provider)
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.02)

    async def main() -> Any:
        stop = asyncio.Event()
        t = asyncio.create_task(ticker(stop))
        res = await r.arun("code?", TEXT)
        stop.set()
        await t
        return res

    res = asyncio.run(main())
    assert res.answer == "ZEBRA-42"
    assert ticks >= 10, ticks  # two 0.3 s model calls: the loop kept ticking meanwhile


def test_astream_yields_the_same_events_as_stream():
    replies = [cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")]
    sync_types = [e.type for e in make(replies).run("code?", TEXT).events]

    async def main() -> tuple[list[str], Any]:
        s = make(replies).astream("code?", TEXT)
        types = [ev.type async for ev in s]
        return types, s.result

    types, result = asyncio.run(main())
    assert types == sync_types and result.answer == "ZEBRA-42"


def test_cancelling_the_task_cancels_the_run(tmp_path):
    store = SqliteRunStore(tmp_path / "runs.sqlite")
    provider = SlowScripted([cmd("find", text="vault")] * 50, delay=0.2)
    r = make([], provider=provider, store=store, max_iterations=50)
    holder: dict[str, Any] = {}

    async def consume() -> None:
        s = holder["s"] = r.astream("code?", TEXT)
        async for ev in s:
            holder.setdefault("run_id", ev.run_id)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while "run_id" not in holder:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    s = holder["s"]
    assert s.cancel.is_set()
    s.thread.join(10)
    assert not s.thread.is_alive()
    row = store.get_run(holder["run_id"])
    assert row["status"] == "cancelled"
    assert row["iterations"] < 10  # it stopped soon, not after 50 model calls
    assert len(provider.requests) < 10


def test_leaving_async_for_early_cancels_the_run():
    provider = SlowScripted([cmd("find", text="vault")] * 50, delay=0.05)
    r = make([], provider=provider, max_iterations=50)

    async def main() -> Any:
        s = r.astream("code?", TEXT)
        async for ev in s:
            if ev.type == "action_end":
                break
        await asyncio.sleep(0)
        return s

    s = asyncio.run(main())
    s.thread.join(10)
    assert s.cancel.is_set() and not s.thread.is_alive() and len(provider.requests) < 10


def test_async_configuration_mistake_raises_at_the_call():
    r = make([cmd("final", answer="x")])
    with pytest.raises(UsageError, match="the question is empty"):
        asyncio.run(r.arun("  ", TEXT))


# ---------------------------------------------------------------------- typed answers
class Person(BaseModel):
    name: str
    age: int


class Place(BaseModel):
    city: str
    people: list[Person]


def test_typed_answer_parsed_into_the_model():
    r = make([cmd("find", text="Pierre"), cmd("final", answer={"name": "Pierre", "age": 31})])
    res = r.run("Who is in Moscow?", TEXT, answer_type=Person)
    assert res.status == "answered"
    assert isinstance(res.parsed, Person) and res.parsed == Person(name="Pierre", age=31)
    assert json.loads(res.answer) == {"name": "Pierre", "age": 31}
    first = r.root.requests[0][1]["content"]
    assert "Answer format" in first and '"age"' in first  # the model is told the schema
    start = res.events[0].data
    assert start["answer_type"] == "Person" and start["answer_schema"]["required"] == ["name", "age"]


def test_invalid_typed_answer_is_refused_and_retried():
    replies = [cmd("find", text="Pierre"), cmd("final", answer={"name": "Pierre"}),
               cmd("final", answer={"name": "Pierre", "age": "thirty-one"}),
               cmd("final", answer={"name": "Pierre", "age": 31})]
    r = make(replies)
    res = r.run("Who?", TEXT, answer_type=Person)
    assert res.status == "answered" and res.iterations == 4 and res.parsed.age == 31
    fb = fed_back(r)
    assert "final answer refused" in fb[1] and "age: Field required" in fb[1]
    assert "final answer refused" in fb[2] and "age: Input should be a valid integer" in fb[2]
    errors = [e for e in res.events if e.type == "error"]
    assert len(errors) == 2 and not any(e.data["fatal"] for e in errors)
    assert [e.type for e in res.events].count("final") == 1


def test_typed_answer_never_valid_leaves_parsed_none():
    r = make([cmd("find", text="Pierre")] + [cmd("final", answer="Pierre, 31")] * 3, max_iterations=3)
    res = r.run("Who?", TEXT, answer_type=Person)
    assert res.status == "max_iterations" and res.parsed is None
    assert "it is not JSON" in fed_back(r)[1]


def test_typed_answer_from_a_code_cell_final_dict():
    code = "```repl\nFINAL({'name': 'Pierre', 'age': 31})\n```"
    r = make([cmd("find", text="Pierre"), code], levels="l1,l2")
    res = r.run("Who?", TEXT, answer_type=Person)
    assert res.status == "answered" and res.parsed == Person(name="Pierre", age=31)


def test_typed_answer_with_a_plain_type():
    r = make([cmd("find", text="Pierre"), cmd("final", answer="[31, 42]")])
    res = r.run("Ages?", TEXT, answer_type=list[int])
    assert res.parsed == [31, 42] and res.answer == "[31,42]"


def test_constrained_final_turn_schema_carries_the_answer_schema():
    """For constrained models (the local model, constrained scripted models) the final branch of every turn's
    schema is the answer type's schema, $defs hoisted to the root so #/$defs/... references resolve."""
    provider = ScriptedProvider([cmd("find", text="Pierre"),
                                 json.dumps({"thought": "t", "op": "final", "answer": {
                                     "city": "Moscow", "people": [{"name": "Pierre", "age": 31}]}})],
                                constrained=True)
    r = make([], provider=provider, max_iterations=2)
    res = r.run("Who lives where?", TEXT, answer_type=Place)
    assert res.status == "answered" and res.parsed.people[0].name == "Pierre"
    last = provider.options[-1]["response_schema"]  # the last turn: final only
    assert "Person" in last["$defs"]
    final = [b for b in last["anyOf"] if b["properties"]["op"] == {"const": "final"}][0]
    assert final["properties"]["answer"]["properties"]["people"]["items"] == {"$ref": "#/$defs/Person"}
    good = {"thought": "t", "op": "final", "answer": {"city": "M", "people": [{"name": "P", "age": 1}]}}
    jsonschema.validate(good, last)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"thought": "t", "op": "final", "answer": {"city": "M", "people": [{"name": "P"}]}},
                            last)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"thought": "t", "op": "final", "answer": "Moscow"}, last)


def test_untyped_constrained_final_stays_a_string():
    provider = ScriptedProvider([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")], constrained=True)
    make([], provider=provider, max_iterations=2).run("code?", TEXT)
    last = provider.options[-1]["response_schema"]
    final = [b for b in last["anyOf"] if b["properties"]["op"] == {"const": "final"}][0]
    assert final["properties"]["answer"]["type"] == "string" and "$defs" not in last


def test_answer_type_that_is_not_a_type_is_a_usage_error():
    with pytest.raises(UsageError, match="answer_type must be a type"):
        make([]).run("q", TEXT, answer_type={"name": "str"})


# ---------------------------------------------------------------------- the run store
def test_api_runs_are_recorded_in_the_cli_store_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    r = RLM(model=ScriptedProvider([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")]), config=Config())
    res = r.run("What is the vault code?", TEXT)
    runs_dir = tmp_path / "data" / "contextbox" / "runs"
    store = SqliteRunStore(default_db_path(runs_dir))
    row = store.get_run(res.run_id)
    assert row["status"] == "answered" and row["answer"] == "ZEBRA-42" and row["question"].startswith("What is")
    assert (runs_dir / f"{res.run_id}.jsonl").exists()
    # and the CLI lists it and shows it
    p = rlm_cli("runs", "list", env={"XDG_DATA_HOME": str(tmp_path / "data")})
    assert p.returncode == 0 and res.run_id in p.stdout and "ZEBRA-42" in p.stdout
    p = rlm_cli("runs", "show", res.run_id, env={"XDG_DATA_HOME": str(tmp_path / "data")})
    assert p.returncode == 0 and "FINAL: ZEBRA-42" in p.stdout


def test_store_none_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    r = RLM(model=ScriptedProvider([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")]), config=Config(),
            store=None)
    assert r.run("code?", TEXT).answer == "ZEBRA-42"
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------- configuration mistakes
@pytest.mark.parametrize("kwargs,cli_args", [
    ({"model": "nope/x"}, ["--model", "nope/x"]),
    ({"model": "nosuchmodel"}, ["--model", "nosuchmodel"]),
    ({"model": "scripted:/no/such.json"}, ["--model", "scripted:/no/such.json"]),
    ({"model": "scripted:{script}", "levels": "l7"}, ["--model", "scripted:{script}", "--levels", "l7"]),
])
def test_configuration_mistakes_raise_usage_errors_with_the_cli_message(tmp_path, kwargs, cli_args):
    script = tmp_path / "s.json"
    script.write_text("[]")
    ctx = tmp_path / "c.txt"
    ctx.write_text(TEXT)
    kwargs = {k: v.replace("{script}", str(script)) for k, v in kwargs.items()}
    with pytest.raises(UsageError) as e:
        RLM(config=Config(), store=None, **kwargs)
    p = rlm_cli("ask", "q", "-c", str(ctx), *[a.replace("{script}", str(script)) for a in cli_args])
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    # the same one line (the CLI names the flag first where a flag carried the value: "--levels: ...")
    assert p.stderr.startswith("rlm: error: ") and p.stderr.endswith(f"{e.value}\n")


@pytest.mark.parametrize("limits,message", [
    ({"max_iterations": 0}, "[limits] max_iterations must be at least 1, got 0"),
    ({"timeout_s": -1}, "[limits] timeout_s must be greater than 0, got -1.0"),
    ({"max_iteration": 5}, "unknown limit 'max_iteration'; known limits: max_iterations,"),
    ({"max_iterations": "many"}, "limits: bad value for max_iterations"),
])
def test_bad_limits_are_config_errors(limits, message):
    with pytest.raises(ConfigError) as e:
        RLM(model=ScriptedProvider([]), config=Config(), store=None, limits=limits)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_limits_dict_still_sets_limits():
    r = RLM(model=ScriptedProvider([]), config=Config(), store=None, limits={"max_iterations": 3, "timeout_s": None})
    assert r.limits.max_iterations == 3 and r.limits.timeout_s == Config().limits.timeout_s


def test_empty_question_and_bad_context_are_usage_errors():
    r = make([])
    with pytest.raises(UsageError, match="^the question is empty$"):
        r.run("", TEXT)
    with pytest.raises(UsageError):
        r.run("q", Context.load(["/no/such/file.txt"]))


def test_arun_calls_the_model_off_the_event_loop_thread():
    """astream runs the generator in one worker thread per run, never in the loop's thread."""
    seen: set[int] = set()
    provider = ScriptedProvider([cmd("find", text="vault"), cmd("final", answer="ZEBRA-42")])
    orig = provider.complete

    def spy(messages: list[dict[str, Any]], **opts: Any) -> Any:
        seen.add(threading.get_ident())
        return orig(messages, **opts)

    provider.complete = spy  # type: ignore[method-assign]
    loop_thread: dict[str, int] = {}

    async def main() -> Any:
        loop_thread["id"] = threading.get_ident()
        return await make([], provider=provider).arun("code?", TEXT)

    assert asyncio.run(main()).answer == "ZEBRA-42"
    assert seen and loop_thread["id"] not in seen


def test_acompletion_and_typed_completion():
    r = make([cmd("find", text="Pierre"), cmd("final", answer={"name": "Pierre", "age": 31})])
    c = asyncio.run(r.acompletion(TEXT, root_prompt="Who?", answer_type=Person))
    assert c.status == "answered" and c.parsed == Person(name="Pierre", age=31)
    assert json.loads(c.response) == {"name": "Pierre", "age": 31}


@given(name=st.text(max_size=30), age=st.integers(min_value=-10**12, max_value=10**12))
@settings(max_examples=60, deadline=None)
def test_answer_check_agrees_with_pydantic(name, age):
    """A JSON answer and a code cell's Python repr of the same dict parse to what pydantic itself makes; the
    canonical answer is the model's own JSON."""
    spec = AnswerSpec(Person)
    d = {"name": name, "age": age}
    want = Person.model_validate(d)
    for text in (json.dumps(d), json.dumps(d, ensure_ascii=False), repr(d)):
        parsed, canonical = spec.check(text)
        assert parsed == want and canonical == want.model_dump_json()
    with pytest.raises(AnswerRejected):
        spec.check(json.dumps({"name": name}))


def test_typed_final_schema_compiles_to_the_local_models_grammar():
    """The local model decodes under llama.cpp's grammar made from the turn's schema: the typed final branch
    (with the hoisted $defs) compiles, and the grammar spells out the nested model (no model is loaded)."""
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    from contextbox.schema import FINAL_OPS, command_schema

    schema = command_schema(("l1",), only=FINAL_OPS, answer_schema=AnswerSpec(Place).schema)
    gbnf = json_schema_to_gbnf(json.dumps(schema))
    assert 'Person-age-kv ::= "\\"age\\"" space ":" space integer' in gbnf
    assert "answer-people-item ::= Person" in gbnf
    LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
