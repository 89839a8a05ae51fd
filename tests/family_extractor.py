"""A rule-based stand-in for the sub-model of ``rlm demo family-trees``: it reads each numbered sentence
of a typed-map prompt and answers the triples that a few possessive patterns state. Deterministic, so a
test can check the whole pipeline (selection, map, merging, trees, scoring) without a language model."""

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


def reply(body: dict) -> str:
    """The fake server's answer to one chat request: one triples array per record."""
    prompt = body["messages"][-1]["content"]
    return json.dumps([extract(s) for s in records(prompt)])
