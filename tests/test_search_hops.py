"""Ranked search for questions: the rarest word's passage comes first, and a question's second hop.

BM25 alone lets a short line holding two common words of a question outrank the line holding its
rare name; ``search`` weighs each candidate by the share of the query's IDF weight it matches.
``linked_passages`` (the ``[aids] linked_passages`` aid under a search's hits) shows the passages
that share hit 1's rare words — where a two-hop question's answer is.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import cmd, outputs, run

from contextbox import Config, Context
from contextbox import search as S
from contextbox.config import Aids


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    S.clear_cache()


FILLER = [f"the soldiers marched along road number {i} towards the river and the hills" for i in range(300)]


def _doc(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def test_the_rare_name_outranks_a_short_line_of_common_question_words() -> None:
    lines = FILLER[:200] + ["he started of his own accord."] + FILLER[200:] + [
        "Doctor Lindqvist wrote in a long report that the mill burned because a lantern was left in the barn"
        + " by the stable boy Fedka" * 5]  # a long line (an unwrapped paragraph)
    for i in range(0, 300, 30):  # 'started' and 'accord' are common enough, Lindqvist is in one line
        lines[i] += " started"
        lines[i + 1] += " according"
    text = _doc(lines)
    query = "According to Lindqvist, what started the fire at the mill?"
    idx = S.get_index(text, "line")
    bm25 = idx.bm25.get_scores_from_ids(idx.bm25.get_tokens_ids(S.query_tokens(query)))
    short, fact = 200, len(lines) - 1
    assert bm25[short] > bm25[fact]  # plain BM25: the short line first (length normalisation)
    hits = S.search(text, query, k=5)
    assert hits[0]["line"] == fact and "Lindqvist" in hits[0]["text"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert hits[0]["score"] < float(bm25[fact])  # weighed by the share it matches (mill, Lindqvist of 5 terms)


def test_a_unit_matching_every_query_word_keeps_its_bm25_score() -> None:
    text = _doc(["alpha beta gamma", "alpha", "beta beta", "nothing here"])
    idx = S.get_index(text, "line")
    bm25 = idx.bm25.get_scores_from_ids(idx.bm25.get_tokens_ids(["alpha", "beta"]))
    hits = S.search(text, "alpha beta")
    assert hits[0]["line"] == 0 and hits[0]["score"] == pytest.approx(float(bm25[0]), abs=1e-4)
    assert {h["line"] for h in hits} == {0, 1, 2}  # a partial match is kept, never dropped


def _letters() -> Context:
    docs = [(f"letter_{i:02d}.txt", _doc(FILLER[i * 10: i * 10 + 10])) for i in range(20)]
    docs[3] = ("letter_03.txt", _doc(FILLER[30:35] + [
        "The sealed letters of the Emperor went from Kronstadt to Memel aboard the brig Halcyon."] + FILLER[35:40]))
    docs[14] = ("letter_14.txt", _doc(FILLER[140:143] + [
        "Captain Oskar Thalberg commanded the Halcyon for nine years before he retired."] + FILLER[143:150]))
    docs[9] = ("letter_09.txt", _doc(FILLER[90:95] + ["Kronstadt harbour froze early that year."] + FILLER[95:99]))
    return Context.from_documents(docs)


QUESTION = "Who was the master of the vessel that brought the Emperor's sealed letters to Memel?"


def test_linked_passages_find_the_second_hop() -> None:
    ctx = _letters()
    hits = S.search(ctx, QUESTION, k=3)
    assert "brig Halcyon" in hits[0]["text"] and hits[0]["doc"] == "letter_03.txt"
    assert not any("Thalberg" in h["text"] for h in hits)  # the answer shares no word with the question
    links, linked = S.linked_passages(ctx, hits, QUESTION)
    # Kronstadt is in two units too: both passages are linked (equally rare words: the earlier unit first)
    assert [h["doc"] for h in linked] == ["letter_09.txt", "letter_14.txt"]
    thalberg = linked[1]
    assert "Thalberg" in thalberg["text"] and thalberg["links"] == ["Halcyon"]
    assert set(links) == {"Halcyon", "Kronstadt"}
    assert ctx.text[thalberg["offset"]: thalberg["end"]].rstrip("\n") == thalberg["text"]
    assert thalberg["line"] == ctx.line_of(thalberg["offset"])
    text = S.render_linked(links, linked, ctx)
    assert text.splitlines()[0].startswith("linked passages (they share rare words with hit 1: ")
    assert "- letter_14.txt: line " in text


def test_linked_passages_skip_shown_hits_common_words_and_words_of_hit_one_alone() -> None:
    ctx = _letters()
    hits = S.search(ctx, QUESTION, k=3)
    # a passage already among the hits is not shown again
    thalberg = S.search(ctx, "Thalberg", k=1)[0]
    _, linked = S.linked_passages(ctx, [hits[0], thalberg], QUESTION)
    assert all("Thalberg" not in h["text"] for h in linked)
    # words in many units (soldiers, river) link nothing: a hit of filler has no linked passages
    filler_hit = S.search(ctx, "soldiers river road", k=1)
    assert S.linked_passages(ctx, filler_hit, "soldiers river road") == ([], [])
    # a rare word that only hit 1 holds links nothing either
    alone = Context.from_documents([("a.txt", _doc(FILLER[:20] + ["the zeppelin Halcyon flew"])),
                                    ("b.txt", _doc(FILLER[20:40]))])
    got = S.search(alone, "zeppelin", k=1)
    assert S.linked_passages(alone, got, "zeppelin") == ([], [])
    assert S.linked_passages(ctx, [], QUESTION) == ([], [])


def test_two_moderately_rare_words_together_link_but_one_does_not() -> None:
    filler = [f"the soldiers marched along road number {i} towards the river" for i in range(3000)]
    for i in range(0, 3000, 400):  # 'cook' and 'dog' each in 8 lines of 3,002: rare, but not names
        filler[i + 1] += " cook"
        filler[i + 7] += " dog"
    lines = filler + ["the watchword at the east gate is the name of the cook's dog",
                      "the cook's white dog answers only to Bulka"]
    text = _doc(lines)
    q = "What is the watchword of the east gate?"
    hits = S.search(text, q, k=1)
    assert "watchword" in hits[0]["text"]
    links, linked = S.linked_passages(text, hits, q)
    assert [h["line"] for h in linked] == [len(lines) - 1]  # lines with 'cook' or 'dog' alone do not qualify
    assert set(links) == {"cook", "dog"}


def test_the_aid_shows_linked_passages_under_a_search_and_can_be_turned_off(tmp_path: Any) -> None:
    script = [cmd("search", query=QUESTION, k=3), cmd("final", answer="Thalberg")]
    on = Config()
    on.aids.linked_passages = True
    res, _ = run(script, context=_letters(), config=on)
    out = outputs(res)[0]
    assert "\nlinked passages (they share rare words with hit 1: Kronstadt, Halcyon):\n" in out
    assert "letter_14.txt" in out and "Thalberg" in out
    fired = [e for e in res.events if e.type == "aid" and e.data.get("aid") == "linked_passages"]
    assert len(fired) == 1
    res, _ = run(script, context=_letters())  # off by default
    assert "linked passages" not in outputs(res)[0] and "Thalberg" not in outputs(res)[0]
    assert Aids().linked_passages is False
    p = tmp_path / "c.toml"
    p.write_text("[aids]\nlinked_passages = true\n")
    assert Config.load(p).aids.linked_passages is True
