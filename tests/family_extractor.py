"""Stand-ins for the sub-model of ``rlm demo family-trees``, deterministic, so a test can check the whole
pipeline (pairs, map, merging, vote, trees, scoring) without a language model. Each record is a cloze,
``"<sentence with [A] and [B]>" — B is A's ___?``, answered with a family word or "none":

* :func:`reply` (for the fake OpenAI server) answers each numbered record of a typed-map prompt with
  :func:`rule_label`: the family word of a few possessive patterns around the two bracketed names;
* :func:`oracle` answers from the hand-checked relations (a perfect labeller: what the selection lets
  a good model reach)."""

from __future__ import annotations

import json
import re

KIN = r"(father|mother|son|daughter|wife|husband|brother|sister|cousin|niece|nephew|uncle|aunt)"
_CLOZE = re.compile(r'^"(?P<s>.*)" — (?P<b>.+) is (?P<a>.+?)(?:\'s|\') ___\?$')
FEMALE = {"Mary Bolkonskaya", "Lise Bolkonskaya", "Countess Rostova", "Natasha Rostova", "Vera Rostova", "Sonya",
          "Helene Kuragina"}


def records(prompt: str) -> list[str]:
    return re.findall(r"^\[\d+\] (.*)$", prompt, re.M)


def parse(record: str) -> tuple[str, str, str]:
    """(marked sentence, a, b) of one cloze."""
    m = _CLOZE.match(record)
    assert m, record
    return m["s"], m["a"], m["b"]


def rule_label(record: str) -> str:
    s, a, b = parse(record)
    qa, qb = re.escape(f"[{a}]"), re.escape(f"[{b}]")
    for pat in (rf"{qa}'s? {KIN},? (?:the (?:beautiful |little )?)?{qb}",  # [Prince Vasili]'s son, [Hippolyte]
                rf"{qb}, {qa}'s? {KIN}\b",  # [Helene], [Prince Vasili]'s daughter
                rf"{qb},? the {KIN} of {qa}"):  # [X], the son of [Y]
        m = re.search(pat, s)
        if m:
            return m.group(1)
    return "none"


def reply(body: dict) -> str:
    """The fake server's answer to one chat request: one label per record."""
    return json.dumps([rule_label(r) for r in records(body["messages"][-1]["content"])])


def oracle(pair, gold: dict) -> str:  # noqa: ANN001 - a family_pairs.Pair
    """The word for what ``pair.b`` is to ``pair.a`` by the hand-checked list (sex from FEMALE), or none."""
    from contextbox.demos import family_trees as ft

    idx = ft._alias_index(gold)

    def who(name: str) -> str | None:
        return idx.get(" ".join(re.findall(r"[a-z]+", ft.fold(name).lower())))

    a, b = who(pair.a), who(pair.b)
    f = b in FEMALE
    for kind, x, y, *_ in gold["relations"]:
        if {x, y} != {a, b} or a == b:
            continue
        if kind == "parent":
            return ("daughter" if f else "son") if x == a else ("mother" if f else "father")
        if kind == "avuncular":
            return ("niece" if f else "nephew") if x == a else ("aunt" if f else "uncle")
        return {"spouse": "wife" if f else "husband", "sibling": "sister" if f else "brother", "cousin": "cousin"}[kind]
    return "none"
