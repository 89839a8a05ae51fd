"""``[aids] hit_turns``: once a search's hit 1 holds the question, the answer must come within that many turns.

The embedded model, shown "The secret password to the old library is AMBER-2500." as hit 1, read the
lines around it, then paged on through the novel for 18 more turns (needle benchmark, 2026-12-05)."""

from __future__ import annotations

from helpers import cmd, fed_back

from contextbox import RLM, Config, Context
from contextbox.providers import ScriptedProvider
from contextbox.search import hit_holds_question, question_share, search

FILLER = [f"{w} walked along the road to the village and spoke of the harvest and the weather {i}."
          for i, w in enumerate(["Anna", "Boris", "Vera", "Pierre", "Denisov", "Sonya", "Petya", "Dolokhov"] * 40)]
NEEDLE = "The secret password to the old library is AMBER-2500."
LINES = FILLER[:150] + [NEEDLE] + FILLER[150:] + ["An old man kept the library of the monastery."]
TEXT = "\n".join(LINES) + "\n"
Q = "What is the secret password to the old library? Answer with the password only."
AT = 150


def _run(replies, question=Q, text=TEXT, config=None):
    p = ScriptedProvider(replies, constrained=True)
    rlm = RLM(model=p, config=config or Config(), levels="l1")
    return rlm.run(question, Context.from_value(text)), rlm, p


def _ops(schema):
    return [b["properties"]["op"]["const"] for b in schema["anyOf"]]


def _page(i):
    return cmd("lines", start=AT - 5 + 20 * i, end=AT + 15 + 20 * i, thought="t")


def test_hit_one_holding_the_question_is_recognised_and_a_near_miss_is_not():
    hits = search(TEXT, Q)
    assert hits[0]["line"] == AT
    assert question_share(TEXT, hits[0]["text"], Q) > 0.6
    assert hit_holds_question(TEXT, hits, Q)
    # the library line holds "old" and "library" but not the rare "secret password": not the passage
    assert question_share(TEXT, LINES[-1], Q) < 0.6
    assert not hit_holds_question(TEXT, [hits[1], hits[0]], Q)  # hit 1 far below hit 2
    # a paraphrase sharing no rare word with the needle: hit 1 does not hold it
    para = "Which code opens the archive of books? Reply with the code alone."
    assert not hit_holds_question(TEXT, search(TEXT, para), para)


def test_after_two_turns_only_final_is_allowed():
    search_q = cmd("search", query=Q, thought="t")
    res, rlm, p = _run([search_q, _page(0), _page(1), cmd("final", answer="AMBER-2500", thought="t")])
    assert res.status == "answered" and res.answer == "AMBER-2500" and res.iterations == 4
    schemas = [o["response_schema"] for o in p.options]
    assert "lines" in _ops(schemas[1])  # the turn after the search is free (read around the hit)
    assert set(_ops(schemas[2])) <= {"final", "final_var"}  # the next must answer
    assert "refused: you must answer now" in fed_back(rlm)[2]  # the third page was not read
    assert [e.data["aid"] for e in res.events if e.type == "aid"].count("hit_turns") == 1
    ran = [e.data["op"] for e in res.events if e.type == "action_start"]
    assert ran.count("lines") == 1


def test_hit_turns_one_wants_the_answer_right_after_the_search():
    cfg = Config()
    cfg.aids.hit_turns = 1
    res, _, p = _run([cmd("search", query=Q, thought="t"), cmd("final", answer="AMBER-2500", thought="t")],
                     config=cfg)
    assert res.iterations == 2
    assert set(_ops(p.options[1]["response_schema"])) <= {"final", "final_var"}


def test_hit_turns_zero_and_an_unheld_question_leave_the_turns_free():
    cfg = Config()
    cfg.aids.hit_turns = 0
    replies = [cmd("search", query=Q, thought="t"), _page(0), _page(1), cmd("final", answer="AMBER-2500",
                                                                              thought="t")]
    res, _, p = _run(replies, config=cfg)
    assert "lines" in _ops(p.options[2]["response_schema"]) and res.iterations == 4
    # the same search, asked a question its hit 1 does not hold: no deadline
    other = "Who walked along the road to the village? Answer with a name."
    res, _, p = _run([cmd("search", query=Q, thought="t"), _page(0), _page(1), cmd("final", answer="Anna",
                                                                                     thought="t")], question=other)
    assert "lines" in _ops(p.options[2]["response_schema"])
    assert "hit_turns" not in [e.data["aid"] for e in res.events if e.type == "aid"]


def test_a_search_of_a_piece_does_not_set_the_deadline():
    piece = cmd("lines", start=140, end=160, store="piece", thought="t")
    replies = [piece, cmd("search", query=Q, on="piece", thought="t"), _page(0), _page(1),
               cmd("final", answer="AMBER-2500", thought="t")]
    res, _, p = _run(replies)
    assert "lines" in _ops(p.options[3]["response_schema"])
