"""Stand-ins for the sub-model of ``rlm demo family-trees``, deterministic, so a test can check the whole
pipeline (selection, map, grounding, merging, trees, scoring) without a language model:

* :func:`reply` (for the fake OpenAI server) reads each numbered sentence of a typed-map prompt and
  answers the first relation a few possessive patterns find, else "none";
* :func:`oracle` answers a hand-checked relation whose two people the sentence names (a near-perfect
  extractor: what the selection lets a good model reach)."""

from __future__ import annotations

import json
import re

NAME = r"(?:(?:Prince|Princess|Count|Countess|old|Old|the|little) )*[A-Z][a-z]+(?: [A-Z][a-z]+)?"
KIN = r"(father|mother|son|daughter|wife|husband|brother|sister|cousin|niece|nephew)"
PATTERNS = [
    # "Prince Vasili's son, Hippolyte" / "Prince Vasili's daughter, the beautiful Helene"
    (re.compile(rf"({NAME})'s? {KIN},? (?:the (?:beautiful |little )?)?({NAME})"), lambda m: (m[3], m[2], m[1])),
    # "Helene, Prince Vasili's daughter"
    (re.compile(rf"({NAME}), ({NAME})'s? {KIN}\b"), lambda m: (m[1], m[3], m[2])),
    # "the daughter of Prince Nicholas Bolkonski" with the subject before: "X, the son of Y"
    (re.compile(rf"({NAME}),? the {KIN} of ({NAME})"), lambda m: (m[1], m[2], m[3])),
]


def records(prompt: str) -> list[str]:
    return re.findall(r"^\[\d+\] (.*)$", prompt, re.M)


def extract(sentence: str) -> list[dict[str, str]]:
    out = []
    for pat, pick in PATTERNS:
        for m in pat.finditer(sentence):
            person, rel, of = pick(m)
            if person != of and len(out) < 4:
                out.append({"person": person, "relation": rel, "of": of})
    return out


NONE = {"person": "", "relation": "none", "of": ""}


def first(sentence: str) -> dict[str, str]:
    found = extract(sentence)
    return found[0] if found else NONE


def reply(body: dict) -> str:
    """The fake server's answer to one chat request: one relation object per record."""
    prompt = body["messages"][-1]["content"]
    return json.dumps([first(s) for s in records(prompt)])


def oracle(sentence: str, gold: dict) -> dict[str, str]:
    """A hand-checked relation both of whose people the sentence names (as the sentence writes them)."""
    def hit(alias: str) -> bool:
        return re.search(r"(?<![A-Za-z])" + re.escape(alias) + r"(?![a-z])", sentence) is not None

    words = {"parent": "father", "spouse": "husband", "sibling": "brother", "cousin": "cousin", "avuncular": "uncle"}
    for kind, a, b, *_ in gold["relations"]:
        fa = next((x for x in [a, *gold["people"][a]] if len(x) > 3 and hit(x)), None)
        fb = next((x for x in [b, *gold["people"][b]] if len(x) > 3 and hit(x)), None)
        if fa and fb and fa not in fb and fb not in fa:
            return {"person": fa, "relation": words[kind], "of": fb}
    return NONE
