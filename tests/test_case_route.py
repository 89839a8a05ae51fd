"""The case route: a who-did-it question over a case file, carried by the engine.

The text analysis (people, hours, dossiers) against inline text and generated cases whose solution the
test knows; the route through the engine with a constrained scripted root and sub-models that read the
prompts they get (in process, and over the loopback OpenAI server); the ranking against plain Python."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from helpers import cmd
from hypothesis import given, settings
from hypothesis import strategies as st

from contextbox import RLM, Config, Context
from contextbox.bench.detective import CLUES, detective
from contextbox.case_file import hours, passages, people
from contextbox.case_route import FACT_QUESTIONS, FACTS_SCHEMA, build, rank
from contextbox.demos import detective as det
from contextbox.demos.common import data_file
from contextbox.providers import ScriptedProvider
from contextbox.providers.base import ProviderConfig
from contextbox.providers.choice_scores import pick
from contextbox.providers.openai_compat import OpenAIProvider
from contextbox.table import Table
from contextbox.types import Completion

CASE = """=== CASE FILE ===

VICTIM: Lord Edward Ashford, found dead in the study of Ashford Manor. Time of death: between 10:00 PM
and 11:00 PM. Cause of death: poison in his brandy.

----------
[WITNESS 1: Colonel Arthur Pemberton - family friend]
----------

I went to the study at 10:05 PM and left at 10:20 PM. Edward was alive. I admit the money troubled us.
The manor was quiet. Colonel Pemberton is my name and I have my honour.

----------
[WITNESS 2: Eleanor Ashford - daughter]
----------

From 10:00 PM I sat in the drawing room with Aunt Victoria. Father shouted at Pemberton last week.
Victoria Ashford was with me. Lord Ashford was my father; Eleanor is how they call me.

Mrs. Patterson, the cook, served dinner. Mrs. Patterson went to bed early.
"""


def _sub(fn):
    """A sub-model ``fn(prompt) -> reply`` that keeps its prompts."""

    class Sub:
        name = "fn/sub"
        context_window = None
        prompts: list[str] = []

        def complete(self, messages, **opts):
            self.prompts.append(messages[-1]["content"])
            self.opts = opts
            return Completion(fn(messages[-1]["content"]), 1, 1, model=self.name)

    return Sub()


def _ops(schema: dict[str, Any]) -> list[str]:
    return [b["properties"]["op"]["const"] for b in schema["anyOf"]]


def _branch(schema: dict[str, Any], op: str) -> dict[str, Any]:
    return next(b for b in schema["anyOf"] if b["properties"]["op"]["const"] == op)


def _record(prompt: str) -> str:
    return prompt.split("Records (1):", 1)[1]


def reader(prompt: str) -> str:
    """A fake sub-model that reads a generated case's dossier the way the generator states the facts: an
    account "alone there" in the place the suspect names breaks the alibi, "with NAME ... never left"
    confirms it, the inspector's motive note is a motive, the suspect's attribute equal to the forensic
    note's value matches the evidence. It sees only its prompt."""
    rec = _record(prompt)
    name = re.search(r"Suspect: (.+)", rec).group(1).strip()
    shared = prompt.split("The crime and the physical evidence:", 1)[1].split("Records (1):", 1)[0]
    value = None
    for fmt, attr, _ in CLUES.values():
        m = re.search(re.escape(fmt).replace(r"\{v\}", "(.+?)"), shared)
        if m:
            value = attr.format(name=name, v=m.group(1))
    facts = {"where_they_were": "as stated", "alibi_confirmed": f"with {name}, and {name} never left" in rec,
             "alibi_broken": "alone there" in rec and "STATEMENT OF " + name.upper() in rec,
             "at_scene": False, "motive": f"inspector notes that {name}" in rec,
             "matches_evidence": value is not None and value in rec, "evidence": "none"}
    return json.dumps([facts])


def _run(replies, question, context, sub, *, levels="l1,l4", config=None):
    p = ScriptedProvider(replies, constrained=True)
    rlm = RLM(model=p, sub_model=sub, levels=levels, config=config or Config())
    return rlm.run(question, Context.from_value(context)), p


ROUTE = [cmd("suspects", thought="t"), cmd("examine", thought="t"), cmd("weigh", thought="t")]


# ---------------------------------------------------------------------- reading the file
def test_people_merges_titles_first_names_and_surnames():
    everyone = {p.name: p for p in people(CASE)}
    assert "Colonel Arthur Pemberton" in everyone and "Lord Edward Ashford" in everyone
    col = everyone["Colonel Arthur Pemberton"]
    assert {"Pemberton", "Arthur", "Arthur Pemberton"} <= col.forms and "Colonel Pemberton" in col.titled
    assert col.mentions == 3  # the header, "Colonel Pemberton", "at Pemberton": each once
    assert "Lord Ashford" in everyone["Lord Edward Ashford"].titled  # the one Ashford called Lord
    eleanor = everyone["Eleanor Ashford"]
    assert "Ashford" not in eleanor.forms and "Eleanor" in eleanor.forms  # three Ashfords: the surname is no one's
    assert "Aunt Victoria" in everyone["Victoria Ashford"].titled and "Mrs. Patterson" in everyone
    assert not any("Manor" in n or "Case" in n for n in everyone)  # "the manor" is written in lower case


def test_passages_carry_the_header_they_stand_under():
    ps = passages(CASE)
    money = next(p for p in ps if "money troubled" in p.text)
    assert money.header == "WITNESS 1: Colonel Arthur Pemberton - family friend"
    assert all("-----" not in p.text for p in ps)


def test_hours_reads_clock_times_and_spoken_hours_not_durations():
    assert hours("between nine and ten o'clock") == {"9", "10"}
    assert hours("I arrived around 10:05 PM and left at 23:15") == {"10", "11"}
    assert hours("from nine until ten I was in the chapel") == {"9", "10"}
    assert hours("about ten minutes later, two weeks ago, one of them, at 7 pm") == {"7"}


def _cases(n: int, seed: int, length: int | None = None):
    return detective(n, seed, [length] if length is not None else None, None)


def test_dossiers_hold_what_decides_each_suspect_and_no_distractors():
    for t in _cases(3, 11):
        roles = t.meta["roles"]
        rows, evidence, victims = build(t.context, t.question)
        assert victims and victims[0] in t.question and "FORENSIC NOTE" in evidence
        by_name = {r["name"]: r["text"] for r in rows}
        assert set(roles) <= set(by_name)  # every suspect is examined (staff may be too)
        for name, role in roles.items():
            text = by_name[name]
            assert f"STATEMENT OF {name.upper()}" in text
            assert ("alone there" in text) == (role in ("culprit", "broken")), (name, role)
            assert (f"with {name}, and {name} never left" in text) == (role in ("match", "clear"))
            assert re.search(rf"{name} (wears|wore|smokes)", text), name
            other = [s for s in roles if s != name]
            assert not any(re.search(rf"{s} (wears|wore|smokes)", text) for s in other)  # its own line only
            assert not re.search(r"AFTERNOON ACCOUNT|LETTER FOUND|HOUSEHOLD LEDGER|GAZETTE|VALET", text)


# ---------------------------------------------------------------------- the route through the engine
def test_each_step_is_offered_in_turn_then_only_an_answer_from_the_ranking():
    t = _cases(1, 3)[0]
    res, p = _run(ROUTE + [cmd("final", answer=t.gold, thought="t")], t.question, t.context, _sub(reader))
    assert res.status == "answered" and res.answer == t.gold
    schemas = [o["response_schema"] for o in p.options]
    assert [_ops(s) for s in schemas] == [["suspects"], ["examine"], ["weigh"], ["final"]]
    answer = _branch(schemas[3], "final")["properties"]["answer"]
    assert answer["enum"][0] == t.gold and set(t.meta["suspects"]) <= set(answer["enum"])
    aids = [e.data["aid"] for e in res.events if e.type == "aid"]
    assert aids[0] == "case_route" and "case_verdict" not in aids
    ends = [e.data for e in res.events if e.type == "action_end"]
    assert ends[2]["output"].splitlines()[1].startswith(f"1. {t.gold}: +5")


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_right_facts_from_the_dossiers_give_the_culprit(seed):
    """Over case files past the window: the sub-model reads only its prompt; the engine finds the culprit."""
    t = _cases(1, seed)[0]
    sub = _sub(reader)
    sub.prompts = []
    res, _ = _run(ROUTE + [cmd("final", answer=t.gold, thought="t")], t.question, t.context, sub)
    assert res.answer == t.gold and len(t.context) > 90_000
    ranking = next(e.data["output"] for e in res.events if e.type == "action_end" and
                   e.data["output"].startswith("weigh:"))
    assert ranking.splitlines()[1].startswith(f"1. {t.gold}:")
    roles = t.meta["roles"]
    assert len(sub.prompts) == len(res.events and [ln for ln in ranking.splitlines() if re.match(r"\d+\. ", ln)])
    for prompt in sub.prompts:  # the crime and the evidence come first, the one suspect last
        head, rec = prompt.split("Records (1):", 1)
        assert "FORENSIC NOTE" in head and "POLICE REPORT" in head and "Suspect:" not in head
        name = re.search(r"Suspect: (.+)", rec).group(1).strip()
        if name in roles:
            facts = json.loads(reader(prompt))[0]
            assert facts["alibi_broken"] == (roles[name] in ("culprit", "broken"))
            assert facts["matches_evidence"] == (roles[name] in ("culprit", "match"))
    head = {p.split("Records (1):", 1)[0] for p in sub.prompts}
    assert len(head) == 1  # one shared prefix for every call (a local model evaluates it once)


def test_a_sub_model_that_finds_nothing_names_no_culprit_by_luck():
    t = _cases(1, 4)[0]
    nothing = {"where_they_were": "?", "alibi_confirmed": False, "alibi_broken": False, "at_scene": False,
               "motive": False, "matches_evidence": False, "evidence": "none"}
    res, p = _run(ROUTE + [cmd("final", answer=t.gold, thought="t")], t.question, t.context,
                  _sub(lambda prompt: json.dumps([nothing])))
    ranking = next(e.data["output"] for e in res.events if e.type == "action_end" and
                   e.data["output"].startswith("weigh:"))
    lines = [ln for ln in ranking.splitlines()[1:-2] if re.match(r"\d+\.", ln)]
    # no fact from the sub-model: only the engine's reading of the physical evidence counts, and it points at
    # the suspects the clue fits (the culprit and the one red herring it also fits), never at one alone by luck
    fits = {n for n, role in t.meta["roles"].items() if role in ("culprit", "match")}
    assert {re.match(r"\d+\. (.+?):", ln).group(1) for ln in lines if "+2 (matches the physical evidence)" in ln} == fits
    assert all("+0 (nothing against them)" in ln for ln in lines if not any(f"{n}:" in ln for n in fits))


def test_an_answer_that_is_not_the_leader_goes_back_once_with_the_ranking():
    t = _cases(1, 6)[0]
    wrong = next(s for s in t.meta["suspects"] if s != t.gold)
    replies = ROUTE + [cmd("final", answer=wrong, thought="t"), cmd("final", answer=t.gold, thought="t")]
    res, p = _run(replies, t.question, t.context, _sub(reader))
    assert res.answer == t.gold
    verdict = [e.data for e in res.events if e.type == "aid" and e.data["aid"] == "case_verdict"]
    assert len(verdict) == 1 and f"puts {t.gold} first" in verdict[0]["message"]
    # the model may insist: the check fires once
    res2, _ = _run(ROUTE + [cmd("final", answer=wrong, thought="t")] * 2, t.question, t.context, _sub(reader))
    assert res2.answer == wrong
    # the leader's surname alone names the leader
    res3, _ = _run(ROUTE + [cmd("final", answer=f"It was {t.gold.split()[-1]}.", thought="t")], t.question,
                   t.context, _sub(reader))
    assert res3.status == "answered" and not [e for e in res3.events if e.type == "aid" and
                                              e.data["aid"] == "case_verdict"]


def test_a_question_that_wants_the_evidence_is_answered_with_the_verdict():
    t = _cases(1, 8)[0]
    victim = re.search(r"Who killed (.+?)\?", t.question).group(1)
    question = f"Who killed {victim}? Name the murderer, then the motive and the key evidence."
    res, p = _run(ROUTE + [cmd("final_var", name="verdict", thought="t")], question, t.context, _sub(reader))
    schema = p.options[3]["response_schema"]
    assert _ops(schema) == ["final_var"] and _branch(schema, "final_var")["properties"]["name"] == {
        "enum": ["verdict"]}
    assert res.answer.startswith(f"{t.gold}. Against them: alibi broken, matches the physical evidence, motive")


def test_no_case_route_without_sub_calls_a_case_question_or_when_off():
    t = _cases(1, 9)[0]
    _, p = _run([cmd("search", query="library", thought="t"), cmd("final", answer="x", thought="t")],
                t.question, t.context, None, levels="l1")
    assert "suspects" not in _ops(p.options[0]["response_schema"])
    _, p = _run([cmd("search", query="library", thought="t"), cmd("final", answer="x", thought="t")],
                "Which room has a harp?", t.context, _sub(reader))
    assert "suspects" not in _ops(p.options[0]["response_schema"])
    cfg = Config()
    cfg.aids.case_route = False
    _, p = _run([cmd("search", query="library", thought="t"), cmd("final", answer="x", thought="t")],
                t.question, t.context, _sub(reader), config=cfg)
    assert "search" in _ops(p.options[0]["response_schema"])


def test_bad_input_gets_a_one_line_error():
    res, _ = _run([cmd("suspects", thought="t"), cmd("final", answer="x", thought="t")],
                  "Who killed the cat?", "The weather was fine.\nNothing happened at all.\n", _sub(reader))
    out = next(e.data for e in res.events if e.type == "action_end")
    assert out["error"] and out["output"].startswith("error: suspects: no passage of the context states a crime")
    res, _ = _run([cmd("weigh", thought="t"), cmd("final", answer="x", thought="t")], "Who killed Ann Lee?",
                  CASE, _sub(reader))
    out = next(e.data for e in res.events if e.type == "action_end")
    assert out["error"] and "run {\"op\": \"suspects\"}, then {\"op\": \"examine\"}" in out["output"]


# ---------------------------------------------------------------------- the ranking
W = {"alibi_broken": 2, "matches_evidence": 2, "at_scene": 1, "motive": 1, "alibi_confirmed": -2}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.fixed_dictionaries({k: st.booleans() for k in W}), st.integers(0, 3)),
                min_size=1, max_size=9))
def test_rank_orders_by_the_documented_weights_then_the_trace_then_the_order(rows):
    facts = Table.from_rows([{"name": f"p{i}", **r, "trace": float(t), "evidence": "none", "map_error": None}
                             for i, (r, t) in enumerate(rows)])
    got = rank(facts)
    traces = [t for _, t in rows]
    lead = max(traces) if max(traces) > min(traces) else None

    def points(r, t):  # a broken alibi is not confirmed too; the top trace counts as matching the evidence
        r = {**r, "alibi_confirmed": r["alibi_confirmed"] and not r["alibi_broken"],
             "matches_evidence": r["matches_evidence"] or (lead is not None and t >= lead - 0.5)}
        return sum(W[k] for k in W if r[k])

    want = sorted((-points(r, t), -t, i) for i, (r, t) in enumerate(rows))
    assert [(r["name"], r["score"]) for r in got] == [(f"p{i}", -s) for s, _, i in want]


def test_the_trace_points_at_the_suspects_the_physical_evidence_fits():
    cases = _cases(4, 3)
    assert {t.meta["clue"] for t in cases} == set(CLUES)  # a size, a colour and a brand
    for t in cases:
        roles = t.meta["roles"]
        rows, _, _ = build(t.context, t.question)
        tr = {r["name"]: r["trace"] for r in rows}
        fits = [tr[n] for n, role in roles.items() if role in ("culprit", "match")]
        rest = [tr[n] for n, role in roles.items() if role not in ("culprit", "match")]
        assert min(fits) > max(rest), (t.meta["clue"], tr)


def test_facts_schema_is_what_the_sub_model_is_held_to():
    assert list(FACTS_SCHEMA["properties"])[0] == "where_they_were"  # it looks before it judges
    assert set(W) <= set(FACTS_SCHEMA["required"])


# ---------------------------------------------------------------------- the seed case over HTTP
SEED_FACTS = {  # what a careful reader states about each person of the Ashford Manor file
    "Pemberton": dict(alibi_broken=True, matches_evidence=True, at_scene=True, motive=True, alibi_confirmed=False,
                      evidence="The gardener saw a limping figure return from the study at 10:30, after he "
                               "said he left; the muddy footprints show a limping gait."),
    "Eleanor": dict(alibi_broken=False, matches_evidence=False, at_scene=True, motive=True, alibi_confirmed=False,
                    evidence="She found the body."),
    "Victoria": dict(alibi_broken=False, matches_evidence=False, at_scene=False, motive=True, alibi_confirmed=False,
                     evidence="none"),
}


def seed_reader(body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    name = re.search(r"Suspect: (.+)", _record(prompt)).group(1)
    key = next((k for k in SEED_FACTS if k in name), None)
    facts = SEED_FACTS.get(key, dict(alibi_broken=False, matches_evidence=False, at_scene=False, motive=False,
                                      alibi_confirmed=True, evidence="none"))
    items = [{"where_they_were": "as they say", **facts}]
    return json.dumps({"items": items} if "response_format" in body else items)


def test_seed_case_over_the_loopback_server_names_pemberton_and_the_evidence(fake_llm):
    case, answer = data_file(det.CASE), data_file(det.ANSWER)
    assert case is not None and answer is not None, "the seed case files are part of the shared data"
    text = case.read_text(encoding="utf-8")
    fake_llm.replies = seed_reader
    sub = OpenAIProvider(ProviderConfig("fake", "openai", base_url=fake_llm.base_url, max_retries=0,
                                        structured_output=True), "m")
    res, _ = _run(ROUTE + [cmd("final_var", name="verdict", thought="t")], det.QUESTION, text, sub)
    right, share, found = det.score(res.answer, det.load_solution(answer)["culprit"], det.suspects(text))
    assert right == 1.0 and "the limping footprints" in found
    prompts = [b["messages"][-1]["content"] for b in fake_llm.requests]
    names = [re.search(r"Suspect: (.+)", _record(p)).group(1) for p in prompts]
    assert "Colonel Arthur Pemberton" in names and not any("Edward" in n for n in names)  # not the victim
    col = _record(prompts[names.index("Colonel Arthur Pemberton")])
    assert "slight limp on the left side" in col and "I left around 10:20 PM" in col
    assert all("Belladonna extract" in p.split("Records (1):")[0] for p in prompts)
    assert not any("HUMAN REFERENCE" in p or "KEY CONTRADICTIONS" in p for p in prompts)
    rows, evidence, _ = build(text, det.QUESTION)  # the physical evidence (size 10, a limp) points at him
    assert max(rows, key=lambda r: r["trace"])["name"] == "Colonel Arthur Pemberton" and "size 10" in evidence
    for b in fake_llm.requests:  # each sub-call is held to the facts schema
        rf = b["response_format"]["json_schema"]["schema"]["properties"]["items"]
        assert rf["items"] == FACTS_SCHEMA and rf["minItems"] == rf["maxItems"] == 1


def test_the_first_message_tells_any_model_the_route():
    t = _cases(1, 12)[0]
    res, p = _run(ROUTE + [cmd("final", answer=t.gold, thought="t")], t.question, t.context, _sub(reader))
    first = [m["content"] for m in p.requests[0] if m["role"] == "user"][0]
    assert '{"op": "suspects"}' in first and '{"op": "examine"}' in first and '{"op": "weigh"}' in first
    _, p = _run([cmd("search", query="harp", thought="t"), cmd("final", answer="x", thought="t")],
                "Which room has a harp?", t.context, _sub(reader))
    assert '{"op": "suspects"}' not in [m["content"] for m in p.requests[0] if m["role"] == "user"][0]


def test_a_title_and_surname_two_people_share_names_neither():
    text = ("Mrs. Jane Hale and Mrs. Ruth Hale came at nine. Mrs. Hale laughed. Dr. Omar Quist came later; "
            "Dr. Quist left early and Quist was tired.\n")
    everyone = {p.name: p for p in people(text)}
    assert "Mrs. Hale" not in everyone["Mrs. Jane Hale"].titled | everyone["Mrs. Ruth Hale"].titled
    assert everyone["Mrs. Jane Hale"].mentions == 1 and everyone["Dr. Omar Quist"].mentions == 3


def test_detective_demo_with_a_constrained_root_takes_the_route(tmp_path):
    """``rlm demo detective`` (default plan) with a constrained scripted root: the route's four turns, one
    sub-call per suspect (facts by name, in the order the engine lists them), Pemberton named, verified."""
    from test_demos import rlm, script

    text = data_file(det.CASE).read_text(encoding="utf-8")
    rows, _, _ = build(text, det.QUESTION)
    replies = []
    for r in rows:
        key = next((k for k in SEED_FACTS if k in r["name"]), None)
        facts = SEED_FACTS.get(key, dict(alibi_broken=False, matches_evidence=False, at_scene=False, motive=False,
                                         alibi_confirmed=True, evidence="none"))
        replies.append(json.dumps([{"where_they_were": "as they say", **facts}]))
    (tmp_path / "contextbox.toml").write_text("[delegation]\nmax_concurrency = 1\n")  # replies in order
    root = script(tmp_path, [{"op": "suspects", "thought": "t"}, {"op": "examine", "thought": "t"},
                             {"op": "weigh", "thought": "t"}, {"op": "final_var", "name": "verdict", "thought": "t"}],
                  constrained=True)
    p = rlm("detective", "--model", root, "--sub-model", script(tmp_path, replies), "--json", tmp=tmp_path)
    out = json.loads(p.stdout)
    assert out["plan"].startswith("the engine's case route") and out["sub_calls"] == len(rows)
    assert out["answer"].startswith("Colonel Arthur Pemberton.") and out["checks"][0]["score"] == 1.0, p.stdout


def test_suspects_named_by_the_model_are_matched_to_the_people_of_the_file():
    p = ScriptedProvider([cmd("suspects", names=["Colonel Pemberton", "Eleanor"]), cmd("final", answer="x")])
    rlm = RLM(model=p, sub_model=_sub(reader), levels="l1,l4", config=Config())
    res = rlm.run("Who poisoned Lord Ashford?", Context.from_value(CASE))
    out = next(e.data["output"] for e in res.events if e.type == "action_end")
    listed = re.findall(r"^- (.+?): ", out, re.M)
    assert listed == ["Colonel Arthur Pemberton", "Eleanor Ashford"] and "victim Lord Edward Ashford" in out


class _ScoringReader:
    """A sub-model that can score labels: decoded, it states nothing useful (everyone's alibi confirmed,
    nothing else); scored, it answers each yes/no question the way :func:`reader` reads the dossier, and
    leans to "no" by the same amount for every question (the calibration records show it)."""

    name = "scoring/reader"
    context_window = None
    supports_choice_scores = True

    def __init__(self) -> None:
        self.scored: list[str] = []

    def can_score(self, choices: list[str]) -> bool:
        return choices == ["yes", "no"]

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        spec = opts.get("choice_scores")
        if spec is None:
            facts = {"where_they_were": "?", "alibi_confirmed": True, "alibi_broken": False, "at_scene": False,
                     "motive": False, "matches_evidence": False, "evidence": "none"}
            return Completion(json.dumps([facts]), 1, 1, model=self.name)
        out = []
        for one in spec["prompts"]:
            self.scored.append(one)
            rec, question = _record(one).split("Question about this suspect:", 1)
            if "Suspect:" not in rec:  # a calibration record: no passages
                p_yes = 0.2
            else:
                facts = json.loads(reader(one.split("Question about this suspect:", 1)[0]))[0]
                key = next(k for k, q in FACT_QUESTIONS.items() if q == question.split("\n", 1)[0].strip())
                p_yes = 0.3 if facts[key] else 0.1  # below 0.5 either way: only calibration tells them apart
            scores = {"yes": math.log(p_yes), "no": math.log(1 - p_yes)}
            out.append(scores if spec.get("raw") else pick(scores, spec.get("prior")))
        return Completion(json.dumps(out), 1, len(out), model=self.name)


def test_a_sub_model_that_scores_answers_each_fact_as_a_calibrated_yes_or_no():
    t = _cases(1, 3)[0]
    sub = _ScoringReader()
    res, _ = _run(ROUTE + [cmd("final", answer=t.gold, thought="t")], t.question, t.context, sub)
    ranking = next(e.data["output"] for e in res.events if e.type == "action_end" and
                   e.data["output"].startswith("weigh:"))
    assert ranking.splitlines()[1].startswith(f"1. {t.gold}:") and res.answer == t.gold
    n = len([ln for ln in ranking.splitlines() if re.match(r"\d+\. ", ln)])
    assert len(sub.scored) == len(FACT_QUESTIONS) * (3 + n)  # per fact: three calibration calls, one per suspect
    assert "alibi confirmed" not in ranking.split("\n", 2)[1]  # the decoded "confirmed for everyone" is overruled
    calibration = [p for p in sub.scored if "Suspect:" not in _record(p)]
    assert {_record(p).split("Question about this suspect:")[1].strip().split("\n")[0] for p in calibration} == \
        set(FACT_QUESTIONS.values())
