"""The pairs route (aids.py + pairs_hints.py): a pairs question's condition read from the question, each
step fixed through the next turn's schema (label → filter → pairs → final_var), and the answer check
that sends back a pair list differing from the engine's."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from conftest import shared_data_dir
from helpers import cmd

from contextbox import RLM, Config, Context
from contextbox.bench.scoring import format_gold, score
from contextbox.bench.tasks import generate
from contextbox.pairs_hints import PairsAsk, answer_pairs, pairs_question
from contextbox.providers import ScriptedProvider
from contextbox.providers.base import Completion

COARSE = {"DESC": "description", "ENTY": "entity", "HUM": "human", "NUM": "numeric", "LOC": "location",
          "ABBR": "abbreviation"}


def _truth() -> dict[str, str]:
    """question text -> label, read straight from the TREC files."""
    out: dict[str, str] = {}
    for f in ("train_5500.label", "TREC_10.label"):
        text = (shared_data_dir() / "trec" / f).read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            m = re.match(r"^([A-Z]+):\S+ (.*)$", line)
            if m:
                out.setdefault(" ".join(m.group(2).split()).replace("||", "|"), COARSE[m.group(1)])
    return out


class TruthSub:
    """A sub-model that labels each record with its TREC label (``wrong``: these labels replaced)."""

    name, context_window = "fn/sub", None

    def __init__(self, wrong: dict[str, str] | None = None):
        self.truth = _truth()
        self.wrong = wrong or {}
        self.records = 0

    def complete(self, messages, **opts):
        items = re.findall(r"^\[\d+\] (.*)$", messages[-1]["content"], re.M)
        self.records += len(items)
        labels = [self.truth[t.split("Instance: ")[-1].strip()] for t in items]
        return Completion(json.dumps([self.wrong.get(x, x) for x in labels]), 1, 1, model=self.name)


def _fill(s: dict):
    if "const" in s:
        return s["const"]
    if "enum" in s:
        return s["enum"][0]
    t = s.get("type")
    if t == "string":
        return "Which label?"
    if t == "integer":
        return s.get("minimum", 10)
    if t == "array":
        return [_fill(s["items"])] * s.get("minItems", 1)
    return {}


class SchemaFollower(ScriptedProvider):
    """A root that decides nothing: the first op its schema offers, consts and first enum values."""

    def __init__(self):
        super().__init__([], constrained=True)

    def complete(self, messages, **opts):
        self.requests.append(messages)
        self.options.append(opts)
        branch = opts["response_schema"]["anyOf"][0]
        reply = {k: _fill(branch["properties"][k]) for k in branch["required"]}
        if "store" in reply and "const" not in branch["properties"]["store"]:
            reply["store"] = reply["op"].replace("_", "")  # a name of its own for each step's table
        reply["thought"] = "t"
        return Completion(json.dumps(reply), 1, 1, model="follower")


def _ops(schema):
    return [b["properties"]["op"]["const"] for b in schema["anyOf"]]


def _branch(schema, op):
    return next(b for b in schema["anyOf"] if b["properties"]["op"]["const"] == op)


def _tasks(seed=0, n=3, length=8000):
    return generate("oolong-pairs", n, seed, [length], shared_data_dir())


def test_every_generated_pairs_question_is_read_into_its_condition():
    seen_two = False
    for seed, length in [(0, 8000), (1, 8000), (0, 32000), (1, 32000), (2, 32000)]:
        for t in _tasks(seed, 4, length):
            cond = t.meta["condition"]
            assert pairs_question(t.question) == PairsAsk("user", tuple(cond["labels"]), cond["at_least"]), t.question
            seen_two |= len(cond["labels"]) == 2
    assert seen_two  # "labelled 'human' or 'location'" is among them


@pytest.mark.parametrize("question,want", [
    ("List all pairs of customers who both have at least two orders labelled \"refund\".",
     PairsAsk("custom", ("refund",), 2)),
    ("Which pairs of users both have an instance labelled spam or ham?", PairsAsk("user", ("spam", "ham"), 1)),
    ("Give every pair of distinct IPs with at least 3 requests tagged 'bot'.", PairsAsk("ip", ("bot",), 3)),
    ("List all pairs of IPs that both have at least two ERROR lines.", PairsAsk("ip", ("ERROR",), 2)),
    ("List every pair of users with at least 2 lines.", None),  # no value to select the rows
    ("How many users have at least 2 instances labelled 'human'?", None),  # no pairs asked
    ("List every pair of users.", None),  # no condition
])
def test_pairs_questions(question, want):
    assert pairs_question(question) == want


def test_answer_pairs_reads_pairs_like_the_scorer():
    assert answer_pairs("(3, 7)\n(12, 7)") == {frozenset(("3", "7")), frozenset(("7", "12"))}
    assert answer_pairs("3 7\n9 9\n12 7") == {frozenset(("3", "7")), frozenset(("7", "12"))}  # (9, 9) no pair
    assert answer_pairs("none") == set()


def test_a_model_that_only_follows_the_schema_answers_exactly_the_gold_pairs():
    """Label → filter the condition's rows → pairs → final_var, every argument fixed by the engine:
    with right labels the answer is the gold pair list, in the question's format."""
    tasks = _tasks(0, 3)
    assert any(len(t.meta["condition"]["labels"]) == 2 for t in tasks)
    for t in tasks:
        root, sub = SchemaFollower(), TruthSub()
        res = RLM(model=root, sub_model=sub, config=Config(), levels="l1,l4").run(t.question,
                                                                                  Context.from_value(t.context))
        assert res.status == "answered", res.reason
        assert res.answer == format_gold("pairs", t.gold) and score("pairs", res.answer, t.gold) == 1.0
        schemas = [o["response_schema"] for o in root.options]
        assert [_ops(s) for s in schemas] == [["extract"], ["llm_map"], ["filter"], ["pairs"],
                                              ["final_var", "final"]]
        assert sub.records == t.meta["records"]  # every record labelled once
        mapping = _branch(schemas[1], "llm_map")["properties"]
        assert mapping["choices"] == {"const": list(COARSE.values())}  # the six labels the preamble defines
        assert "per_call" not in mapping  # the default (10 a call): short arrays label best
        labels = t.meta["condition"]["labels"]
        where = _branch(schemas[2], "filter")["properties"]["where"]["const"]
        assert where == {"label": labels[0] if len(labels) == 1 else {"in": labels}}
        args = _branch(schemas[3], "pairs")["properties"]
        assert args["on"] == {"const": "sel"} and args["field"] == {"const": "User"}
        assert args["at_least"] == {"const": t.meta["condition"]["at_least"]}
        aids = [e.data["aid"] for e in res.events if e.type == "aid"]
        assert "pairs_route" in aids and "pairs_complete" not in aids


def _scripted_run(t, finals, sub=None):
    cond = t.meta["condition"]
    labels = cond["labels"]
    where = {"label": labels[0] if len(labels) == 1 else {"in": labels}}
    replies = [cmd("extract", store="t", thought="t"),
               cmd("llm_map", on="t", prompt="Which label?", choices=list(COARSE.values()), store="m", thought="t"),
               cmd("filter", on="m", where=where, store="sel", thought="t"),
               cmd("pairs", on="sel", field="User", at_least=cond["at_least"], store="pairs", thought="t"),
               *finals]
    root = ScriptedProvider(replies, constrained=True)
    res = RLM(model=root, sub_model=sub or TruthSub(), config=Config(), levels="l1,l4").run(
        t.question, Context.from_value(t.context))
    for reply, opts in zip(replies, root.options, strict=False):
        jsonschema.validate(json.loads(reply), opts["response_schema"])  # each step was allowed
    return res, root


def test_a_wrong_pair_list_goes_back_once_with_the_exact_lines():
    t = next(t for t in _tasks(0, 3) if len(t.gold) >= 3)
    gold = [tuple(p) for p in t.gold]
    wrong = "\n".join(f"({b}, {a})" for a, b in gold[1:])  # one pair left out (the others reversed: fine)
    res, root = _scripted_run(t, [cmd("final", answer=wrong, thought="t"), cmd("final_var", name="pairs", thought="t")])
    sent = [e.data for e in res.events if e.type == "aid" and e.data["aid"] == "pairs_complete"]
    assert len(sent) == 1 and sent[0]["expected"] == len(gold)
    fb = [m["content"] for m in root.requests[-1] if m["role"] == "user"][-1]
    assert fb.endswith("exactly these lines:\n" + format_gold("pairs", t.gold))
    assert f"{len(gold) - 1} ({len(gold) - 1} of them right)" in fb and '"name": "pairs"' in fb
    assert _ops(root.options[-1]["response_schema"]) == ["final_var"]  # sent back: the engine's list now
    assert res.status == "answered" and res.answer == format_gold("pairs", t.gold)


def test_a_wrong_pair_list_is_sent_back_only_once():
    t = next(t for t in _tasks(0, 3) if len(t.gold) >= 3)
    wrong = format_gold("pairs", t.gold[1:])
    root = ScriptedProvider([cmd("extract", store="t"), cmd("llm_map", on="t", prompt="?", store="m",
                                                              choices=list(COARSE.values())),
                             cmd("filter", on="m", where={"label": {"in": t.meta["condition"]["labels"]}},
                                 store="sel"),
                             cmd("pairs", on="sel", field="User", at_least=t.meta["condition"]["at_least"]),
                             cmd("final", answer=wrong), cmd("final", answer=wrong)])  # an API model: not constrained
    res = RLM(model=root, sub_model=TruthSub(), config=Config(), levels="l1,l4").run(
        t.question, Context.from_value(t.context))
    assert [e.data["aid"] for e in res.events if e.type == "aid"].count("pairs_complete") == 1
    assert res.status == "answered" and res.answer == wrong


def test_a_right_list_written_by_hand_is_accepted_at_once():
    t = _tasks(0, 3)[0]
    by_hand = "\n".join(f"{b} and {a}" for a, b in reversed(t.gold))  # any order, any separator
    res, _ = _scripted_run(t, [cmd("final", answer=by_hand, thought="t")])
    assert res.answer == by_hand and score("pairs", res.answer, t.gold) == 1.0
    assert "pairs_complete" not in [e.data["aid"] for e in res.events if e.type == "aid"]


def test_the_check_follows_the_engine_s_pairs_not_the_gold():
    """With wrong labels the engine's pairs differ from the gold; the check holds the model to the engine's
    list (it cannot know the gold), and an answer of the gold is sent back."""
    t = next(t for t in _tasks(0, 3) if t.meta["condition"]["labels"] == ["abbreviation", "location"])
    res, root = _scripted_run(t, [cmd("final", answer=format_gold("pairs", t.gold), thought="t"),
                                  cmd("final_var", name="pairs", thought="t")],
                              sub=TruthSub(wrong={"entity": "location"}))  # more users qualify
    assert "pairs_complete" in [e.data["aid"] for e in res.events if e.type == "aid"]
    assert res.answer != format_gold("pairs", t.gold) and score("pairs", res.answer, t.gold) < 1.0


def test_no_qualifying_pair_leaves_only_final_and_accepts_none():
    t = next(t for t in _tasks(0, 3) if len(t.meta["condition"]["labels"]) == 1)
    lab = t.meta["condition"]["labels"][0]
    res, root = _scripted_run(t, [cmd("final", answer="none", thought="t")], sub=TruthSub(wrong={lab: "entity"}
                                                                                            if lab != "entity" else
                                                                                            {lab: "human"}))
    assert "no pair" in next(s for s in res.steps if s.op == "pairs").output
    assert _ops(root.options[-1]["response_schema"]) == ["final"]
    assert res.answer == "none" and "pairs_complete" not in [e.data["aid"] for e in res.events if e.type == "aid"]


def test_the_pairs_route_can_be_turned_off():
    t = _tasks(0, 1)[0]
    replies = [cmd("extract", store="t", thought="t"),
               cmd("llm_map", on="t", prompt="?", choices=list(COARSE.values()), store="m", thought="t"),
               cmd("final", answer="x", thought="t")]
    schemas = {}
    for on in (True, False):
        cfg = Config()
        cfg.aids.pairs_route = on
        root = ScriptedProvider(replies, constrained=True)
        res = RLM(model=root, sub_model=TruthSub(), config=cfg, levels="l1,l4").run(
            t.question, Context.from_value(t.context))
        schemas[on] = [_ops(o["response_schema"]) for o in root.options]
        assert ("pairs_route" in [e.data["aid"] for e in res.events if e.type == "aid"]) is on
    assert schemas[True][2] == ["filter"]
    assert "count_by" in schemas[False][2] and "pairs" not in schemas[False][2]  # the label route as before


@pytest.mark.parametrize("mutant", [__import__("itertools").combinations_with_replacement,
                                    __import__("itertools").permutations])
def test_a_bug_in_the_engine_s_pairs_shows_in_the_answer(monkeypatch, mutant):
    """Pairs of a value with itself, or each pair in both orders: the answer is no longer the gold text."""
    from contextbox import table_pairs

    t = _tasks(0, 1)[0]
    monkeypatch.setattr(table_pairs.itertools, "combinations", mutant)
    res = RLM(model=SchemaFollower(), sub_model=TruthSub(), config=Config(), levels="l1,l4").run(
        t.question, Context.from_value(t.context))
    assert res.status == "answered" and res.answer != format_gold("pairs", t.gold)


def test_a_pairs_question_over_a_log_filters_an_existing_column_then_pairs():
    """No labels to infer: the condition's value is in a column already ("ERROR" in ``level``), so the route
    filters at once (L1 only, no sub-model) and pairs the subject's column."""
    import itertools
    import random
    from collections import Counter

    from contextbox.bench.logs import LINE_RE, make_log

    text, _ = make_log(40_000, random.Random(11))
    per = Counter(m.group(3) for m in map(LINE_RE.match, text.splitlines()) if m and m.group(2) == "ERROR")
    k = sorted(per.values(), reverse=True)[4]  # about five IPs qualify
    qual = sorted((ip for ip, c in per.items() if c >= k), key=lambda ip: [int(x) for x in ip.split(".")])
    question = f"List every pair of IP addresses that both have at least {k} ERROR lines, one pair per line."
    root = SchemaFollower()
    res = RLM(model=root, config=Config(), levels="l1").run(question, Context.from_value(text))
    assert [_ops(o["response_schema"]) for o in root.options] == [["extract"], ["filter"], ["pairs"],
                                                                  ["final_var", "final"]]
    got = answer_pairs(res.answer)
    assert got == {frozenset(p) for p in itertools.combinations(qual, 2)} and len(qual) >= 5


def test_a_pair_list_too_long_to_type_under_a_grammar_is_answered_from_the_variable():
    """llama.cpp refuses a grammar for a ~1,500-character string (the process aborted on a 45-pair list):
    a long list is answered with ``final_var`` only, and ``final`` is never offered longer than 1,000."""
    import random
    from collections import Counter

    from contextbox.aids_table import FINAL_MAX_CHARS
    from contextbox.bench.logs import LINE_RE, make_log

    text, _ = make_log(40_000, random.Random(11))
    per = Counter(m.group(3) for m in map(LINE_RE.match, text.splitlines()) if m and m.group(2) == "ERROR")
    assert len(per) >= 15  # every IP with an ERROR line: a hundred pairs and more
    question = "List every pair of IP addresses that both have at least 1 ERROR line, one pair per line."
    root = SchemaFollower()
    res = RLM(model=root, config=Config(), levels="l1").run(question, Context.from_value(text))
    assert _ops(root.options[-1]["response_schema"]) == ["final_var"]
    assert len(answer_pairs(res.answer)) == len(per) * (len(per) - 1) // 2
    for o in root.options:
        for b in o["response_schema"]["anyOf"]:
            if b["properties"]["op"]["const"] == "final":
                assert b["properties"]["answer"]["maxLength"] <= FINAL_MAX_CHARS


def test_the_embedded_model_gets_room_to_write_a_long_pair_list():
    """28 pairs of 5-digit ids are ~450 tokens for a model that reads digits one by one: once the engine
    holds them, a local root's reply may be that long (it hit its 384-token limit three times in a row)."""
    from contextbox.aids_table import REPLY_OVERHEAD_TOKENS, answer_tokens

    users = [11626, 31345, 32931, 66322, 76225, 85353, 88487, 94834]
    lines = [f"user: {u} || level: ERROR || msg: x" for u in users] + ["user: 10000 || level: INFO || msg: y"] * 3
    question = "List every pair of user ids that both have at least 1 ERROR line, one pair per line."
    for name, local in (("local:follower", True), ("follower", False)):
        root = SchemaFollower()
        root.name = name
        res = RLM(model=root, config=Config(), levels="l1").run(question, Context.from_value("\n".join(lines)))
        assert len(answer_pairs(res.answer)) == 28, res.answer
        tokens = [o.get("max_tokens") for o in root.options]
        if local:
            assert tokens[0] == Config().local.max_tokens == 384  # before the pairs: the default
            assert tokens[-1] == answer_tokens(res.answer) + REPLY_OVERHEAD_TOKENS > 384 + 60
        else:
            assert set(tokens) == {None}  # an API model's reply length is its own
    assert answer_tokens("(11626, 31345)") == 10 + 2  # digits one by one, the rest two characters a token
