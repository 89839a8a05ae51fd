"""L4 delegation in detail: rlm_query_batched's two forms and their errors, what each batch records in
its events, llm_map's chunk_size rule and the ranges of the context its sub-calls read.

Written against the survivors of `tests/mutation.py --modules delegation.py` (docs/mutation.md): each
test states what the model or the event stream must see. Children at max_depth=0 degrade to plain
sub-calls, so these runs need no child engine and start no sandbox.
"""

from __future__ import annotations

import pytest
from helpers import cmd
from hypothesis import given
from hypothesis import strategies as st
from test_delegation import TEXT, FnSub, action_outputs, config, l4_run

from contextbox.errors import ProviderUnavailable
from contextbox.levels.delegation import sent_ranges

flat = config(max_depth=0)  # an rlm_query is a plain sub-call here (degraded), tagged like the child


def events(res, type):
    return [e for e in res.events if e.type == type and e.path == "0"]


# ---------------------------------------------------------------------- rlm_query_batched
def test_rlm_query_batched_with_prompts_gives_each_the_same_context_and_tags_the_batch():
    sub = FnSub(lambda p: "A:" + p.split("\n\n", 1)[0])
    res, _ = l4_run([cmd("rlm_query_batched", prompts=["one?", "two?"]), cmd("final_var", name="answers")],
                    sub, cfg=flat)
    assert res.status == "answered" and res.answer.splitlines() == ["A:one?", "A:two?"]
    assert sorted(sub.prompts) == [f"one?\n\n{TEXT}", f"two?\n\n{TEXT}"]  # the run's context, whole
    calls = sorted(events(res, "sub_call"), key=lambda e: e.data["index"])
    assert [(e.data["batch"], e.data["index"], e.data["degraded"]) for e in calls] == [("b0", 0, True),
                                                                                      ("b0", 1, True)]
    out = action_outputs(res, "rlm_query_batched")[0]
    assert out.startswith("rlm_query_batched: 2 child run(s), 2 answered, 0 failed (")
    progress = events(res, "batch_progress")
    assert progress[0].data == {"op": "rlm_query_batched", "batch": "b0", "total": 2, "done": 0, "failed": 0}
    assert progress[-1].data == {"op": "rlm_query_batched", "batch": "b0", "total": 2, "done": 2, "failed": 0}


def test_rlm_query_batched_with_prompt_and_on_runs_one_child_per_item():
    sub = FnSub(lambda p: p.split("\n\n", 1)[1])
    res, _ = l4_run([cmd("set", name="parts", value=["alpha", {"k": 1}, 7]),
                     cmd("rlm_query_batched", prompt="kid?", on="parts", store="kids"),
                     cmd("final_var", name="kids")], sub, cfg=flat)
    assert res.status == "answered"
    assert sorted(sub.prompts) == sorted(["kid?\n\nalpha", 'kid?\n\n{"k": 1}', "kid?\n\n7"])
    assert res.answer.splitlines() == ["alpha", '{"k": 1}', "7"]  # in the items' order


def test_rlm_query_batched_with_prompts_and_on_gives_each_the_variable():
    sub = FnSub(lambda p: "ok")
    l4_run([cmd("set", name="part", value="just this"), cmd("rlm_query_batched", prompts=["a?", "b?"], on="part"),
            cmd("final", answer="x")], sub, cfg=flat)
    assert sorted(sub.prompts) == ["a?\n\njust this", "b?\n\njust this"]


FORMS = "rlm_query_batched takes 'prompts' (a list of strings) or one 'prompt' with 'on' naming a list variable"
NEEDS = ("rlm_query_batched needs 'prompts' (a list), or 'prompt' and 'on' naming a non-empty list variable "
         "(one child per item)")


@pytest.mark.parametrize("args,message", [
    ({"prompts": []}, FORMS),
    ({"prompts": ["a?", 5]}, FORMS),
    ({"prompts": ["a?"], "prompt": "b?"}, FORMS),
    ({"prompt": "kid?"}, NEEDS),
    ({"prompt": "kid?", "on": "text"}, NEEDS),
    ({"prompt": "kid?", "on": "empty"}, NEEDS),
    ({"on": "parts"}, NEEDS),
])
def test_rlm_query_batched_refuses_the_wrong_shapes_before_any_call(args, message):
    sub = FnSub()
    res, _ = l4_run([cmd("set", name="text", value="a string"), cmd("set", name="empty", value=[]),
                     cmd("set", name="parts", value=["x", "y"]), cmd("rlm_query_batched", **args),
                     cmd("final", answer="x")], sub, cfg=flat)
    ends = [e for e in events(res, "action_end") if e.data["op"] == "rlm_query_batched"]
    assert len(ends) == 1
    assert ends[0].data["error"] is True and ends[0].data["output"] == f"error: {message}"
    assert sub.prompts == []


# ---------------------------------------------------------------------- llm_query
def test_llm_query_tags_its_sub_call_and_a_failure_is_an_error():
    res, _ = l4_run([cmd("llm_query", prompt="hi"), cmd("final", answer="done")], FnSub(lambda p: "yo"))
    (call,) = events(res, "sub_call")
    assert call.data["op"] == "llm_query" and call.data["answer"] == "yo"

    def boom(p):
        raise ProviderUnavailable("sub down")

    res, _ = l4_run([cmd("llm_query", prompt="x"), cmd("final", answer="done")], FnSub(boom))
    (end,) = [e for e in events(res, "action_end") if e.data["op"] == "llm_query"]
    assert end.data["error"] is True and end.data["output"] == "error: the sub-model call failed: sub down"


# ---------------------------------------------------------------------- llm_map
def test_llm_map_chunk_size_must_be_positive_and_one_is_allowed():
    sub = FnSub(lambda p: "ok")
    res, _ = l4_run([cmd("llm_map", prompt="x", chunk_size=0), cmd("final", answer="done")], sub)
    assert action_outputs(res, "llm_map")[0] == "error: llm_map 'chunk_size' must be a positive number of characters"
    assert sub.prompts == []
    res, _ = l4_run([cmd("llm_map", prompt="x", chunk_size=1), cmd("final", answer="done")], sub, context="ab\n")
    assert len(sub.prompts) == 3 and action_outputs(res, "llm_map")[0].startswith("llm_map: 3 chunk(s)")


def test_llm_map_on_a_text_variable_maps_its_chunks_not_its_characters():
    sub = FnSub(lambda p: "ok")
    l4_run([cmd("set", name="t", value="first line\nsecond line\n"), cmd("llm_map", prompt="x", on="t"),
            cmd("final", answer="done")], sub)
    assert sub.prompts == ["x\n\n[chunk 1 of 1]\nfirst line\nsecond line\n"]


# ---------------------------------------------------------------------- the ranges a map read
def reference_ranges(chunks: list[str], sent: list[bool]) -> list[list[int]]:
    spans, pos = [], 0
    for c, s in zip(chunks, sent, strict=True):
        if s:
            spans.append([pos, pos + len(c)])
        pos += len(c)
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return merged


@given(st.lists(st.tuples(st.text(min_size=1, max_size=5), st.booleans()), max_size=12))
def test_sent_ranges_are_the_merged_spans_of_the_sent_chunks(pairs):
    chunks, sent = [c for c, _ in pairs], [s for _, s in pairs]
    assert sent_ranges(chunks, sent) == reference_ranges(chunks, sent)


def test_sent_ranges_examples_and_mismatched_lists():
    assert sent_ranges(["ab", "cde", "f", "gh"], [True, True, False, True]) == [[0, 5], [6, 8]]
    assert sent_ranges(["ab", "cd"], [False, True]) == [[2, 4]]
    with pytest.raises(ValueError):
        sent_ranges(["ab", "cd"], [True])


# ---------------------------------------------------------------------- rlm_query's context
def end_of(res, op):
    return next(e.data for e in events(res, "action_end") if e.data["op"] == op)


@pytest.mark.parametrize("args,given", [
    ({"start": 4, "end": 11}, TEXT[4:11]), ({"end": 11}, TEXT[:11]), ({"start": 30}, TEXT[30:]),
])
def test_rlm_query_with_start_or_end_gives_the_child_that_slice(args, given):
    sub = FnSub(lambda p: "ok")
    res, _ = l4_run([cmd("rlm_query", prompt="p?", **args), cmd("final", answer="x")], sub, cfg=flat)
    assert sub.prompts == [f"p?\n\n{given}"]
    a = args.get("start", 0)
    assert end_of(res, "rlm_query")["read"] == [[a, a + len(given)]]
    (call,) = events(res, "sub_call")
    assert call.data["op"] == "rlm_query" and call.data["degraded"] is True


@pytest.mark.parametrize("bound", [{"start": 1}, {"end": 5}])
def test_rlm_query_takes_on_or_a_slice_not_both(bound):
    sub = FnSub()
    res, _ = l4_run([cmd("set", name="v", value="x"), cmd("rlm_query", prompt="p?", on="v", **bound),
                     cmd("final", answer="x")], sub, cfg=flat)
    end = end_of(res, "rlm_query")
    assert end["error"] is True and end["output"] == "error: rlm_query takes either 'on' or 'start'/'end', not both"
    assert sub.prompts == []


def test_rlm_query_on_a_variable_gives_the_child_its_text():
    sub = FnSub(lambda p: "ok")
    l4_run([cmd("set", name="d", value={"k": [1, 2]}), cmd("set", name="s", value="plain words"),
            cmd("set", name="parts", value=["a", "bb", "ccc"]),
            cmd("rlm_query", prompt="p?", on="d"), cmd("rlm_query", prompt="p?", on="s"),
            cmd("rlm_query", prompt="p?", on="parts[1]"), cmd("final", answer="x")], sub, cfg=flat)
    assert sub.prompts == ['p?\n\n{"k": [1, 2]}', "p?\n\nplain words", "p?\n\nbb"]


def test_rlm_query_whose_sub_call_fails_is_an_error_output():
    def boom(p):
        raise ProviderUnavailable("sub down")

    res, _ = l4_run([cmd("rlm_query", prompt="p?"), cmd("final", answer="x")], FnSub(boom), cfg=flat)
    end = end_of(res, "rlm_query")
    assert end["error"] is True and end["output"] == "error: the sub-model call failed: sub down"
    assert res.status == "answered"


def test_llm_query_on_an_item_of_a_list_variable():
    sub = FnSub(lambda p: "ok")
    l4_run([cmd("set", name="parts", value=["a", "bb[x]", "ccc"]), cmd("llm_query", prompt="x", on="parts[1]"),
            cmd("final", answer="x")], sub)
    assert sub.prompts == ["x\n\nbb[x]"]


# ---------------------------------------------------------------------- llm_map's chunk size
def test_llm_map_over_a_list_variable_cuts_nothing():
    sub = FnSub(lambda p: "ok")
    res, _ = l4_run([cmd("set", name="parts", value=["a" * 50, "b"]), cmd("llm_map", prompt="x", on="parts"),
                     cmd("final", answer="x")], sub)
    assert "cut(s)" not in action_outputs(res, "llm_map")[0] and len(sub.prompts) == 2


def test_llm_map_default_chunks_fill_three_quarters_of_the_sub_window_less_the_prompt():
    sub = FnSub(lambda p: "ok", window=1000)  # 1000 tokens ≈ 4000 characters; three quarters: 3000
    prompt = "p" * 100
    l4_run([cmd("llm_map", prompt=prompt), cmd("final", answer="x")], sub, context="abcdefghi\n" * 2000)
    sizes = [len(p.split("]\n", 1)[1]) for p in sub.prompts]
    assert max(sizes) <= 3000 - len(prompt) and max(sizes) > 3000 - len(prompt) - 10


# ---------------------------------------------------------------------- a typed map's reads
def test_a_typed_map_over_the_context_reads_all_of_it_when_any_record_is_labelled():
    import json

    from test_typed_map import RECORD

    good = FnSub(lambda p: json.dumps(["a"] * len(RECORD.findall(p))))
    ctx = "line one\nline two\nline three\n"
    res, _ = l4_run([cmd("llm_map", prompt="Label?", choices=["a", "b"]), cmd("set", name="v", value=["x", "y"]),
                     cmd("llm_map", prompt="Label?", on="v", choices=["a", "b"]), cmd("final", answer="x")],
                    good, context=ctx)
    ends = [e.data for e in events(res, "action_end") if e.data["op"] == "llm_map"]
    assert [(d["error"], d["read"]) for d in ends] == [(False, [[0, len(ctx)]]), (False, [])]
    bad = FnSub(lambda p: "no labels here")
    res, _ = l4_run([cmd("llm_map", prompt="Label?", choices=["a", "b"]), cmd("final", answer="x")], bad,
                    context=ctx)
    (end,) = [e.data for e in events(res, "action_end") if e.data["op"] == "llm_map"]
    assert end["error"] is True and end["read"] == []  # nothing labelled: nothing counts as read


def test_a_typed_map_refuses_chunk_size():
    res, _ = l4_run([cmd("llm_map", prompt="Label?", choices=["a", "b"], chunk_size=10), cmd("final", answer="x")],
                    FnSub())
    assert action_outputs(res, "llm_map")[0] == ("error: llm_map 'chunk_size' is for an untyped map; a typed map "
                                                 "takes 'per_call' (records per sub-call)")


def test_rlm_query_stores_its_answer_when_asked():
    sub = FnSub(lambda p: "the kid's answer")
    res, _ = l4_run([cmd("rlm_query", prompt="p?", store="kid"), cmd("final_var", name="kid")], sub, cfg=flat)
    assert res.answer == "the kid's answer"
    assert action_outputs(res, "rlm_query")[0] == "the kid's answer\n(stored in 'kid')"


# ---------------------------------------------------------------------- llm_map's chunks and reads
def test_llm_map_numbers_its_chunks_and_records_the_ranges_it_sent():
    sub = FnSub(lambda p: "ok")
    ctx = "aaaa\nbbbb\ncccc\n"
    res, _ = l4_run([cmd("llm_map", prompt="x", chunk_size=5), cmd("set", name="v", value="dddd\neeee\n"),
                     cmd("llm_map", prompt="y", on="v", chunk_size=5), cmd("final", answer="x")], sub, context=ctx)
    assert sorted(p for p in sub.prompts if p.startswith("x")) == [
        "x\n\n[chunk 1 of 3]\naaaa\n", "x\n\n[chunk 2 of 3]\nbbbb\n", "x\n\n[chunk 3 of 3]\ncccc\n"]
    ends = [e.data for e in events(res, "action_end") if e.data["op"] == "llm_map"]
    assert ends[0]["read"] == [[0, len(ctx)]] and ends[1]["read"] == []  # a variable is not the context
    progress = [e.data for e in events(res, "batch_progress")]
    assert {d["op"] for d in progress} == {"llm_map"}


def test_llm_map_says_how_many_lines_it_cut():
    sub = FnSub(lambda p: "ok")
    res, _ = l4_run([cmd("llm_map", prompt="x", chunk_size=4), cmd("final", answer="x")], sub,
                    context="abcdefghij\nxy\n")
    out = action_outputs(res, "llm_map")[0]
    assert out.startswith("llm_map: ") and "chunk(s) of ≤ 4 characters, ending on line boundaries (2 cut(s) inside " \
                                               "lines longer than the chunk size)" in out


@pytest.mark.parametrize("args,context,message", [
    ({"field": "f"}, TEXT, "llm_map 'field' is for a typed map: give 'choices' (labels) or 'schema' too"),
    ({}, "", "llm_map: nothing to map over (the text is empty)"),
    ({"chunk_size": 1}, "x" * 2001, "llm_map: 2,001 chunks would make 2,001 sub-calls (at most 2,000); "
                                    "raise chunk_size"),
])
def test_llm_map_refusals(args, context, message):
    sub = FnSub()
    res, _ = l4_run([cmd("llm_map", prompt="x", **args), cmd("final", answer="x")], sub, context=context)
    assert action_outputs(res, "llm_map")[0] == f"error: {message}" and sub.prompts == []
