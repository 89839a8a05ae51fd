"""Typed llm_map (choices / schema, per_call), line-bounded chunks, sub_call records, constrained sub-calls."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from fakeserver import FakeLLMServer, HTTPFault
from helpers import cmd
from hypothesis import given, settings
from hypothesis import strategies as st

from contextbox import RLM, Config, Context, ops
from contextbox.engine import _Run
from contextbox.errors import CommandError
from contextbox.executors import Action
from contextbox.levels.delegation import MAX_MAP_ITEMS, DelegationExecutor
from contextbox.providers import ScriptedProvider
from contextbox.providers.base import BUILTIN_PROVIDERS, ProviderConfig, object_root, unwrap_reply
from contextbox.providers.openai_compat import OpenAIProvider
from contextbox.table import Table
from contextbox.typed_map import AnswerSpec, check_answer, instruction, parse_array
from contextbox.types import Completion

WORDS = {"cat": "animal", "car": "vehicle", "rose": "plant"}
CHOICES = ["animal", "vehicle", "plant"]
RECORD = re.compile(r"^\[(\d+)\] (.*)$", re.M)


def corpus(n: int, seed: int = 7) -> tuple[str, list[str]]:
    """``n`` lines ``r<i> ... <word> ...`` and each line's right label."""
    rnd = random.Random(seed)
    words = [rnd.choice(list(WORDS)) for _ in range(n)]
    text = "".join(f"r{i} a small {w} seen on day {rnd.randint(1, 30)}\n" for i, w in enumerate(words))
    return text, [WORDS[w] for w in words]


def records_in(body: dict[str, Any]) -> list[str]:
    return RECORD.findall(body["messages"][-1]["content"])


def labeller(body: dict[str, Any]) -> str:
    """The fake sub-model: labels every record of the prompt by its word."""
    recs = [t for _, t in records_in(body)]
    labels = [next(v for k, v in WORDS.items() if f" {k} " in t) for t in recs]
    return json.dumps(labels)


def cfg(**delegation: Any) -> Config:
    c = Config()
    c.aids.first_turn = False
    for k, v in delegation.items():
        setattr(c.delegation, k, v)
    return c


def sub_provider(server: FakeLLMServer, **kw: Any) -> OpenAIProvider:
    p = OpenAIProvider(ProviderConfig("fake", "openai", base_url=server.base_url, max_retries=0, **kw), "m")
    p.retry_base_delay, p.retry_max_delay = 0.001, 0.01
    return p


def session_run(sub: Any, context: str | Context = "", config: Config | None = None, **limits: Any) -> _Run:
    """A run's state with the engine's real sub-call path, to call the L4 executor directly."""
    rlm = RLM(model=ScriptedProvider([]), sub_model=sub, levels="l1,l4", config=config or cfg(),
              limits=limits or None)
    return _Run(rlm, "q?", context if isinstance(context, Context) else Context.from_value(context), "t", None)


def do(run: _Run, **args: Any):
    return DelegationExecutor(run.session).run(Action("command", "l4", args["op"], args))


def events(run: _Run, type_: str) -> list[dict[str, Any]]:
    return [e.data for e in run._drain() if e.type == type_]


class FnSub:
    """A plain sub-model ``fn(prompt) -> str`` that keeps the prompts and options it got."""

    name = "fn/sub"
    context_window = None

    def __init__(self, fn=lambda p: "ok"):
        self.fn, self.prompts, self.opts = fn, [], []

    def complete(self, messages, **opts):
        self.prompts.append(messages[-1]["content"])
        self.opts.append(opts)
        text = self.fn(messages[-1]["content"])
        return Completion(text, 1, 1, model=self.name)


# ---------------------------------------------------------------------- the map over the fake server
def test_choices_1000_records_per_call_25_make_40_calls_and_a_label_column(fake_llm: FakeLLMServer) -> None:
    text, truth = corpus(1000)
    fake_llm.replies = labeller
    run = session_run(sub_provider(fake_llm), text)
    out = do(run, op="llm_map", prompt="What is named?", choices=CHOICES, per_call=25)
    assert fake_llm.request_count == 40
    table = run.session.variables["answers"]
    assert isinstance(table, Table) and len(table) == 1000
    assert table.column("label") == truth
    assert table.column("map_error") == [None] * 1000
    assert table.column("line") == list(range(1000))
    assert table.column("text") == text.splitlines()
    head = out.text.splitlines()[0]
    assert head.startswith("llm_map: 1,000 records in 40 sub-calls (25 per call), 1,000 labelled, 0 failed")
    counts = {c: truth.count(c) for c in CHOICES}
    listed = dict(re.findall(r"(\w+) ([\d,]+)", out.text.splitlines()[1].removeprefix("labels: ")))
    assert {k: int(v.replace(",", "")) for k, v in listed.items()} == counts
    # every call saw 25 records numbered 1..25, each record exactly once
    calls = [records_in(body) for body in fake_llm.requests]
    assert all([int(k) for k, _ in c] == list(range(1, 26)) for c in calls)
    seen = sorted((t for c in calls for _, t in c), key=lambda t: int(t.split()[0][1:]))
    assert seen == text.splitlines()
    assert not out.error


def test_a_short_answer_is_retried_once_then_its_records_fail(fake_llm: FakeLLMServer) -> None:
    text, truth = corpus(1000)

    def reply(body: dict[str, Any]) -> str:
        labels = json.loads(labeller(body))
        return json.dumps(labels[:24]) if records_in(body)[0][1].startswith("r100 ") else json.dumps(labels)

    fake_llm.replies = reply
    run = session_run(sub_provider(fake_llm), text)
    out = do(run, op="llm_map", prompt="What is named?", choices=CHOICES, per_call=25, store="lab")
    assert fake_llm.request_count == 41  # 40 calls + one retry
    table = run.session.variables["lab"]
    labels, errors = table.column("label"), table.column("map_error")
    assert labels[100:125] == [None] * 25
    assert all(e == "answered 24 items for 25 records" for e in errors[100:125])
    assert labels[:100] + labels[125:] == truth[:100] + truth[125:]
    assert errors[:100] + errors[125:] == [None] * 975
    bad = [b["messages"][-1]["content"] for b in fake_llm.requests if records_in(b)[0][1].startswith("r100 ")]
    assert len(bad) == 2 and bad[1].startswith(bad[0]) and "previous answer was not accepted" in bad[1]
    assert "975 labelled, 25 failed" in out.text and "1 retried" in out.text
    assert "records 100-124: answered 24 items for 25 records" in out.text


def test_a_retry_that_succeeds_keeps_every_record(fake_llm: FakeLLMServer) -> None:
    text, truth = corpus(60)
    seen: set[str] = set()

    def reply(body: dict[str, Any]) -> str:
        first = records_in(body)[0][1]
        if first not in seen:  # the first attempt of every call answers prose
            seen.add(first)
            return "Sure! Here are the labels."
        return labeller(body)

    fake_llm.replies = reply
    run = session_run(sub_provider(fake_llm), text)
    do(run, op="llm_map", prompt="x", choices=CHOICES, per_call=20)
    assert fake_llm.request_count == 6
    assert run.session.variables["answers"].column("label") == truth


def test_invalid_items_fail_alone_when_the_length_is_right(fake_llm: FakeLLMServer) -> None:
    text, truth = corpus(10)

    def reply(body: dict[str, Any]) -> str:
        labels = json.loads(labeller(body))
        labels[3] = "mineral"
        return "```json\n" + json.dumps([x.upper() for x in labels]) + "\n```"  # fenced, upper case

    fake_llm.replies = reply
    run = session_run(sub_provider(fake_llm), text)
    do(run, op="llm_map", prompt="x", choices=CHOICES, per_call=10)
    t = run.session.variables["answers"]
    assert fake_llm.request_count == 2
    assert t.column("label") == truth[:3] + [None] + truth[4:]
    assert t.column("map_error")[3] == '"MINERAL" is not one of the labels'


def test_response_format_sent_when_supported_and_unwrapped(fake_llm: FakeLLMServer) -> None:
    text, truth = corpus(30)

    def reply(body: dict[str, Any]) -> str:
        assert "response_format" in body
        return json.dumps({"items": json.loads(labeller(body))})

    fake_llm.replies = reply
    run = session_run(sub_provider(fake_llm, structured_output=True), text)
    do(run, op="llm_map", prompt="x", choices=CHOICES, per_call=25)
    assert run.session.variables["answers"].column("label") == truth
    sizes = []
    for body in fake_llm.requests:
        rf = body["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
        arr = rf["json_schema"]["schema"]["properties"]["items"]
        assert arr["items"] == {"type": "string", "enum": CHOICES}
        assert arr["minItems"] == arr["maxItems"]
        sizes.append(arr["minItems"])
        assert body["temperature"] == 0.0 and body["max_tokens"] >= 8 * arr["minItems"]  # room for every label
    assert sorted(sizes) == [5, 25]


def test_response_format_off_by_default_for_other_endpoints(fake_llm: FakeLLMServer) -> None:
    text, truth = corpus(5)
    fake_llm.replies = labeller
    run = session_run(sub_provider(fake_llm), text)
    do(run, op="llm_map", prompt="x", choices=CHOICES)
    assert "response_format" not in fake_llm.requests[0]
    assert "JSON array" in fake_llm.requests[0]["messages"][-1]["content"]  # asked in the prompt instead
    assert BUILTIN_PROVIDERS["openai"].structured_output is True
    assert not any(p.structured_output for name, p in BUILTIN_PROVIDERS.items() if name != "openai")


def test_a_400_for_response_format_is_retried_without_it_and_remembered(fake_llm: FakeLLMServer) -> None:
    text, truth = corpus(100)

    def reply(body: dict[str, Any]) -> str:
        if "response_format" in body:
            raise HTTPFault(400, "response_format json_schema is not supported by this model")
        return labeller(body)

    fake_llm.replies = reply
    sub = sub_provider(fake_llm, structured_output=True)
    run = session_run(sub, text, config=cfg(max_concurrency=1))
    do(run, op="llm_map", prompt="x", choices=CHOICES, per_call=25)
    assert run.session.variables["answers"].column("label") == truth
    with_rf = ["response_format" in b for b in fake_llm.requests]
    assert with_rf == [True] + [False] * 4 and sub.format_refused


def test_object_schema_properties_become_columns(fake_llm: FakeLLMServer) -> None:
    schema = {"type": "object", "properties": {"word": {"type": "string"}, "day": {"type": "integer"}},
              "required": ["word", "day"]}

    def reply(body: dict[str, Any]) -> str:
        items = []
        for _, t in records_in(body):
            w, d = re.search(r"a small (\w+) seen on day (\d+)", t).groups()
            items.append({"word": w, "day": d if w == "cat" else int(d)})  # a cat's day as a string
        return json.dumps(items)

    fake_llm.replies = reply
    text, _ = corpus(12)
    run = session_run(sub_provider(fake_llm), Context.from_value({"a.txt": text, "b.txt": text}))
    out = do(run, op="llm_map", prompt="Extract", schema=schema, per_call=6, store="facts")
    t = run.session.variables["facts"]
    assert t.columns == ["text", "doc", "line", "word", "day", "map_error"]
    expected = [re.search(r"a small (\w+) seen on day (\d+)", ln).groups() for ln in text.splitlines()] * 2
    assert list(zip(t.column("word"), t.column("day"), strict=True)) == [(w, int(d)) for w, d in expected]
    assert t.column("doc") == ["a.txt"] * 12 + ["b.txt"] * 12
    assert "24 valid, 0 failed" in out.text
    ctx_lines = run.session.context.text.split("\n")
    assert [ctx_lines[i] for i in t.column("line")] == t.column("text")  # line numbers point into the context


def test_on_a_table_or_a_list_maps_rows_and_keeps_their_columns() -> None:
    sub = FnSub(lambda p: json.dumps(["big" if "elephant" in t else "small" for _, t in RECORD.findall(p)]))
    run = session_run(sub)
    run.session.variables["rows"] = Table({"name": ["ant", "elephant", "mouse"], "n": [1, 2, 3]})
    run.session.variables["items"] = ["an elephant", "a fly"]
    do(run, op="llm_map", prompt="Size?", on="rows", choices=["big", "small"], field="size", store="t1")
    do(run, op="llm_map", prompt="Size?", on="items", choices=["big", "small"], store="t2")
    t1, t2 = run.session.variables["t1"], run.session.variables["t2"]
    assert t1.columns == ["name", "n", "size", "map_error"] and t1.column("size") == ["small", "big", "small"]
    assert "[2] name: elephant; n: 2" in sub.prompts[0]  # a row without a text column, rendered
    assert t2.column("text") == ["an elephant", "a fly"] and t2.column("label") == ["big", "small"]


def test_instruction_first_and_identical_records_last() -> None:
    sub = FnSub(lambda p: json.dumps(["a"] * len(RECORD.findall(p))))
    run = session_run(sub, "".join(f"line {i}\n" for i in range(55)))
    do(run, op="llm_map", prompt="Classify each line.", choices=["a", "b"], per_call=25)
    head = instruction("Classify each line.", AnswerSpec(choices=["a", "b"]))
    assert len(sub.prompts) == 3 and all(p.startswith(head) for p in sub.prompts)
    assert all("line" not in p[: len(head)].replace("each line", "") for p in sub.prompts)
    assert [len(RECORD.findall(p)) for p in sub.prompts] == [25, 25, 5]
    assert sub.prompts[2].endswith("exactly 5 items.")


def test_sub_call_events_record_prompt_and_answer_capped() -> None:
    long_answer = "y" * 500
    sub = FnSub(lambda p: long_answer if p.startswith("long") else "short answer")
    run = session_run(sub, record_chars=50)
    do(run, op="llm_query", prompt="long " + "x" * 300)
    do(run, op="llm_query", prompt="hi")
    evs = events(run, "sub_call")
    assert evs[0]["prompt"] == ("long " + "x" * 300)[:50] + "… [255 more characters]"
    assert evs[0]["answer"] == "y" * 50 + "… [450 more characters]"
    assert evs[1]["prompt"] == "hi" and evs[1]["answer"] == "short answer"


def test_typed_map_sub_call_events_carry_prompt_answer_and_attempt(fake_llm: FakeLLMServer) -> None:
    text, _ = corpus(4)
    fake_llm.replies = labeller
    run = session_run(sub_provider(fake_llm), text)
    do(run, op="llm_map", prompt="x", choices=CHOICES)
    (ev,) = events(run, "sub_call")
    assert ev["prompt"] == fake_llm.requests[0]["messages"][-1]["content"]
    assert ev["answer"] == labeller(fake_llm.requests[0])
    assert ev["op"] == "llm_map" and ev["attempt"] == 1 and ev["records"] == [0, 4]


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize("args, message", [
    ({"choices": ["a", 3]}, "'choices' must be strings; 3 is a int"),
    ({"choices": []}, "'choices' must be a non-empty list"),
    ({"choices": ["a", "A"]}, "repeats the label"),
    ({"choices": ["a"], "per_call": 0}, "'per_call' must be a whole number from 1 to 200"),
    ({"choices": ["a"], "per_call": 201}, "'per_call' must be a whole number from 1 to 200"),
    ({"schema": "integer"}, "'schema' must be a JSON Schema object"),
    ({"schema": {"type": "nope"}}, "'schema' is not a valid JSON Schema"),
    ({"schema": {"type": "integer"}, "choices": ["a"]}, "not both"),
    ({"per_call": 5}, "'per_call' is for a typed map"),
    ({"choices": ["a"], "chunk_size": 100}, "'chunk_size' is for an untyped map"),
])
def test_bad_typed_map_arguments_are_one_line_errors(args: dict[str, Any], message: str) -> None:
    sub = FnSub()
    run = session_run(sub, "one\ntwo\n")
    with pytest.raises(CommandError) as ei:
        do(run, op="llm_map", prompt="x", **args)
    assert message in str(ei.value) and "\n" not in str(ei.value)
    assert sub.prompts == []


def test_a_map_wider_than_the_limit_is_refused_before_any_call() -> None:
    sub = FnSub(lambda p: json.dumps(["a"] * len(RECORD.findall(p))))
    n = MAX_MAP_ITEMS * 2 + 2
    config = cfg()
    config.delegation.max_sub_calls = None  # this test is about MAX_MAP_ITEMS, not the sub-call budget
    run = session_run(sub, "".join(f"l{i}\n" for i in range(n)), config=config)
    with pytest.raises(CommandError, match=f"{n:,} records at per_call 2 would make {MAX_MAP_ITEMS + 1:,} sub-calls"):
        do(run, op="llm_map", prompt="x", choices=["a"], per_call=2)
    assert sub.prompts == []
    do(run, op="llm_map", prompt="x", choices=["a"], per_call=3)  # 1,334 calls: allowed
    assert len(sub.prompts) == -(-n // 3)


def test_typed_map_through_a_whole_run_with_a_constrained_root_shape() -> None:
    from contextbox.schema import command_schema

    branch = next(b for b in command_schema(("l1", "l4"))["anyOf"] if b["properties"]["op"] == {"const": "llm_map"})
    assert branch["properties"]["choices"]["items"]["type"] == "string"
    assert branch["properties"]["per_call"]["type"] == "integer" and "field" in branch["properties"]
    sub = FnSub(lambda p: json.dumps(["yes" if "ZEBRA" in t else "no" for _, t in RECORD.findall(p)]))
    rlm = RLM(model=ScriptedProvider([cmd("llm_map", prompt="Secret?", choices=["yes", "no"]),
                                      cmd("final", answer="done")]), sub_model=sub, levels="l1,l4", config=cfg())
    res = rlm.run("q", "The weather.\nThe secret code is ZEBRA-42.\n\nNothing else.\n")
    out = next(e.data["output"] for e in res.events if e.type == "action_end")
    assert out.startswith("llm_map: 3 records in 1 sub-calls (10 per call), 3 labelled, 0 failed")
    assert "labels: no 2, yes 1" in out and "(stored in 'answers')" in out


# ---------------------------------------------------------------------- code cells
@pytest.mark.parametrize("level", ["l2", "l3"])
def test_llm_map_in_a_code_cell_returns_values_with_none_for_failures(level: str) -> None:
    def fn(p: str) -> str:
        recs = RECORD.findall(p)
        if any("boom" in t for _, t in recs):
            return "[]"
        return json.dumps(["long" if len(t) > 3 else "short" for _, t in recs])

    sub = FnSub(fn)
    code = ("vals = llm_map('Length?', ['a', 'abcdef', 'boom', 'xy'], choices=['short', 'long'], per_call=2)\n"
            "print(vals)")
    rlm = RLM(model=ScriptedProvider([f"```repl\n{code}\n```", cmd("final", answer="done")]), sub_model=sub,
              levels=f"l1,{level},l4", config=cfg())
    res = rlm.run("q", "ctx")
    out = next(e.data["output"] for e in res.events if e.type == "action_end")
    assert out.strip() == "['short', 'long', None, None]"
    assert len(sub.prompts) == 3  # the failing pair was retried once


# ---------------------------------------------------------------------- answers (unit)
def test_parse_array_accepts_harmless_variants() -> None:
    assert parse_array('["a", "b"]') == (["a", "b"], None)
    assert parse_array('```json\n["a"]\n```') == (["a"], None)
    assert parse_array('Here you go: ["a", "b"] hope it helps') == (["a", "b"], None)
    assert parse_array('{"labels": ["a"]}') == (["a"], None)
    assert parse_array('{"a": 1}')[1] == "the answer is a JSON dict, not an array"
    assert parse_array("no json")[0] is None


def test_check_answer_labels_and_schema() -> None:
    spec = AnswerSpec(choices=["Yes", "No"])
    c = check_answer('[" yes ", "NO", "maybe"]', 3, spec)
    assert c.values == ["Yes", "No", None] and c.errors[2] == '"maybe" is not one of the labels'
    assert c.reason == 'item 3: "maybe" is not one of the labels'
    assert check_answer('["Yes"]', 2, spec).reason == "answered 1 item for 2 records"
    num = AnswerSpec.parse(schema={"type": "integer", "minimum": 0})
    c = check_answer('[1, "2", -3, 4.5]', 4, num)
    assert c.values == [1, 2, None, None] and "minimum" in c.errors[2]
    assert num.field == "value" and num.columns == ["value"]
    colour = AnswerSpec.parse(schema={"enum": ["Red", "Blue"]}, field="colour")
    assert check_answer('["red", " BLUE", "green"]', 3, colour).values == ["Red", "Blue", None]
    assert colour.row("Red") == {"colour": "Red"}


def test_wrap_for_object_root_apis() -> None:
    arr = {"type": "array", "items": {"type": "integer"}}
    wrapped, did = object_root(arr)
    assert did and wrapped["properties"]["items"] == arr and wrapped["required"] == ["items"]
    assert object_root({"type": "object"}) == ({"type": "object"}, False)
    assert json.loads(unwrap_reply('{"items": [1, 2]}')) == [1, 2]
    assert unwrap_reply("[1, 2]") == "[1, 2]" and unwrap_reply('{"items": 1, "x": 2}') == '{"items": 1, "x": 2}'


def test_local_grammar_takes_an_array_root() -> None:
    pytest.importorskip("llama_cpp", reason="the local extra is not installed")
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(AnswerSpec(choices=["x", "y"]).array_schema(3)))
    assert 'item ::= "\\"x\\"" | "\\"y\\""' in gbnf.splitlines()
    root = next(ln for ln in gbnf.splitlines() if ln.startswith("root ::="))
    assert root == 'root ::= "[" space item "," space item "," space item "]" space'


# ---------------------------------------------------------------------- chunks end on lines
def test_untyped_llm_map_chunks_end_on_line_boundaries(war_and_peace) -> None:
    text = war_and_peace.read_text(encoding="utf-8")
    old = ops.chunk(text, 200_000)
    assert sum(not c.endswith("\n") for c in old[:-1]) > len(old) // 2  # the fixed-size cut of `chunk`
    sub = FnSub()
    run = session_run(sub, text)
    out = do(run, op="llm_map", prompt="Who?", chunk_size=200_000)
    chunks = [p.split("]\n", 1)[1] for p in sub.prompts]
    chunks.sort(key=text.index)  # the sub-calls run concurrently: their prompts arrive in any order
    assert "".join(chunks) == text
    assert all(c.endswith("\n") for c in chunks[:-1]) and all(len(c) <= 200_000 for c in chunks)
    assert "ending on line boundaries" in out.text and "cut(s) inside lines" not in out.text


def test_a_line_longer_than_the_chunk_is_cut_and_said_so() -> None:
    sub = FnSub()
    run = session_run(sub, "short\n" + "x" * 250 + "\nend\n")
    out = do(run, op="llm_map", prompt="x", chunk_size=100)
    chunks = [p.split("]\n", 1)[1] for p in sub.prompts]
    assert chunks == ["short\n", "x" * 100, "x" * 100, "x" * 50 + "\nend\n"]
    assert "2 cut(s) inside lines longer than the chunk size" in out.text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab\n", max_size=300), st.integers(min_value=1, max_value=40))
def test_chunk_lines_property(text: str, size: int) -> None:
    chunks, cuts = ops.chunk_lines(text, size)
    assert "".join(chunks) == text
    assert all(0 < len(c) <= size for c in chunks)
    made = 0
    pos = 0
    for c in chunks[:-1]:
        pos += len(c)
        rest = text[pos:]
        if c.endswith("\n"):  # greedy: the next whole line would not have fitted
            nxt = rest[: rest.find("\n") + 1] if "\n" in rest else rest
            assert len(c) + len(nxt) > size
        else:  # only a line longer than size is cut, at exactly size characters
            assert "\n" not in c and len(c) == size
            made += 1
    assert cuts == made


def test_config_keys_structured_output_and_record_chars(tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[limits]\nrecord_chars = 10\n\n[[providers]]\nname = "work"\nbase_url = "http://x/v1"\n'
                 "structured_output = true\n")
    c = Config.load(f, env={})
    assert c.limits.record_chars == 10 and c.providers[0].structured_output is True
    f.write_text("[limits]\nrecord_chars = -1\n")
    with pytest.raises(Exception, match=r"\[limits\] record_chars must be at least 0"):
        Config.load(f, env={})


def test_the_question_s_label_definitions_reach_every_sub_call_and_bookkeeping_does_not() -> None:
    from contextbox.typed_map import AnswerSpec, record_texts, with_definitions

    question = ("Each ticket is about billing (money, invoices, refunds), delivery (parcels, couriers) or login "
                "(passwords, accounts). Are most tickets about billing, delivery or login?")
    sub = FnSub(lambda p: json.dumps(["billing" if "refund" in t else "login" for _, t in RECORD.findall(p)]))
    rlm = RLM(model=ScriptedProvider([cmd("extract", store="t"),
                                      cmd("llm_map", on="t", prompt="Which label is most common?",
                                          choices=["billing", "delivery", "login"], store="m"),
                                      cmd("final", answer="billing")]),
              sub_model=sub, levels="l1,l4", config=cfg())
    ctx = "".join(f"ticket: {i} || text: {'my refund is late' if i % 3 else 'password reset fails'}\n"
                  for i in range(12))
    res = rlm.run(question, ctx)
    assert res.status == "answered"
    assert sub.prompts and all("billing (money, invoices, refunds), delivery (parcels" in p for p in sub.prompts)
    assert all("give each record its own label" in p for p in sub.prompts)
    assert not any("doc:" in p or "line:" in p for p in sub.prompts)  # where a record is: not sent
    assert "] my refund is late" in sub.prompts[0]
    assert all("Which label is most common?" not in p for p in sub.prompts)  # an aggregate: a neutral task
    assert all(p.startswith("Give each record the one label that fits it best.") for p in sub.prompts)
    spec = AnswerSpec.parse(["a", "b"])
    assert with_definitions("How many records are labelled 'a'?", spec, None).startswith("Give each record")
    assert with_definitions("Is the review positive?", spec, None) == "Is the review positive?"
    # a task that tells the labels apart keeps that; only its aggregate question goes
    told = "Label each review: a (praise, thanks), b (a complaint)."
    assert with_definitions(told + " How many reviews are labelled 'a'?", spec, None) == told
    assert with_definitions(told + "\n- a: counts of praise words\n- b: the rest", spec, None) == \
        told + "\n- a: counts of praise words\n- b: the rest"  # "counts" in a definition is no question
    assert with_definitions("T", spec, "No labels named here.") == "T"
    assert with_definitions("T", spec, None) == "T"
    t = Table({"text2": ["x"], "doc": ["f.txt"], "line": [3]})
    assert record_texts(t) == ["text2: x"]


def test_a_typed_map_over_a_table_sends_what_the_rows_say_not_their_ids() -> None:
    from contextbox.typed_map import prose_columns, record_texts

    rows = [{"Date": f"Mar {i + 1:02d}, 2023", "User": str(1000 + i), "Instance": f"What is the capital of land {i} ?",
             "doc": "f", "line": i} for i in range(5)]
    t = Table.from_rows(rows)
    assert prose_columns(t) == ["Instance"]
    assert record_texts(t, prose_only=True) == [r["Instance"] for r in rows]
    assert record_texts(t)[0] == "Date: Mar 01, 2023; User: 1000; Instance: What is the capital of land 0 ?"
    ids = Table.from_rows([{"a": "x1", "b": 2}])  # no free text: the whole row
    assert record_texts(ids, prose_only=True) == ["a: x1; b: 2"]
    sub = FnSub(lambda p: json.dumps(["yes" for _ in RECORD.findall(p)]))
    rlm = RLM(model=ScriptedProvider([cmd("extract", store="t"),
                                      cmd("llm_map", on="t", prompt="Capital?", choices=["yes", "no"], store="m"),
                                      cmd("final", answer="yes")]), sub_model=sub, levels="l1,l4", config=cfg())
    ctx = "".join(f"Date: Mar {i + 1:02d}, 2023 || User: {1000 + i} || Instance: What is the capital of land {i} ?\n"
                  for i in range(5))
    assert rlm.run("q", ctx).status == "answered"
    assert "] What is the capital of land 3 ?" in sub.prompts[0] and "User" not in sub.prompts[0]
