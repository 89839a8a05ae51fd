"""Scorers: an answer and the gold answer → a score in [0, 1]; ``correct`` means score 1.

``needle``      the gold string appears in the answer as a whole token (RULER's string match)
``numeric``     OOLONG: ``0.75 ** |answer - gold|`` with the first integer of the answer
``label``       OOLONG exact match: the first label named in the answer is the gold label
``ranking``     the share of positions where the answer's order of names matches the gold order
``percentiles`` the share of p50/p95/p99 given exactly
``topk``        the share of the gold words among the first k log-vocabulary words of the answer
``pairs``       F1 of the answer's pairs against the gold pairs (order within a pair ignored)
``name``        the gold person is named and no other suspect is (surname or full name)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger("contextbox")

_INT = re.compile(r"-?\d[\d,]*")
_WORDS = re.compile(r"[a-z]+")


def norm(s: Any) -> str:
    """Lower case, single spaces, no surrounding punctuation or quotes."""
    return " ".join(str(s).casefold().split()).strip(" .,;:!?\"'`()[]*")


def first_int(answer: str) -> int | None:
    for m in _INT.finditer(answer):
        digits = m.group(0).replace(",", "")
        if digits not in ("", "-"):
            try:
                return int(digits)
            except ValueError:
                continue
    return None


def score_needle(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    g = norm(gold)
    return 1.0 if g and re.search(rf"(?<![\w-]){re.escape(g)}(?![\w-])", norm(answer)) else 0.0


def score_numeric(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    v = first_int(answer)
    return 0.0 if v is None else 0.75 ** abs(v - int(gold))


def _mentions(answer: str, names: list[str]) -> list[str]:
    """``names`` found in ``answer`` (whole words, case-insensitive), in order of first appearance."""
    a = answer.casefold()
    found = []
    for n in names:
        m = re.search(rf"(?<![a-z]){re.escape(n.casefold())}(?![a-z])", a)
        if m:
            found.append((m.start(), n))
    return [n for _, n in sorted(found)]


def score_label(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    from .oolong import LABEL_NAMES

    found = _mentions(answer, LABEL_NAMES)
    return 1.0 if found and found[0] == gold else 0.0


def score_ranking(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    got = _mentions(answer, list(gold))
    return sum(1 for a, b in zip(got, gold, strict=False) if a == b) / len(gold) if gold else 1.0


def score_percentiles(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    got: dict[str, int] = {}
    for m in re.finditer(r"p\s*(50|95|99)\D{0,15}?(\d+)", answer, re.I):
        got.setdefault(f"p{m.group(1)}", int(m.group(2)))
    return sum(1 for k, v in gold.items() if got.get(k) == int(v)) / len(gold)


def score_topk(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    """Only words of the log vocabulary count (so "The top words are: ..." costs nothing)."""
    from .logs import CONTENT, STOP_WORDS

    vocab = set(CONTENT) | set(STOP_WORDS) | set(gold)
    words: list[str] = []
    for w in _WORDS.findall(answer.casefold()):
        if w in vocab and w not in words and w not in ("the", "a"):
            words.append(w)
    return len(set(words[: len(gold)]) & set(gold)) / len(gold) if gold else 1.0


def parse_pairs(answer: str) -> set[tuple[int, int]]:
    """Pairs of integers: per line, consecutive numbers two by two; order within a pair ignored."""
    pairs: set[tuple[int, int]] = set()
    for line in answer.splitlines():
        nums = [int(x) for x in re.findall(r"\d+", line)]
        for a, b in zip(nums[::2], nums[1::2], strict=False):
            if a != b:
                pairs.add((min(a, b), max(a, b)))
    return pairs


def f1(pred: set[Any], gold: set[Any]) -> float:
    if not pred and not gold:
        return 1.0
    tp = len(pred & gold)
    if tp == 0:
        return 0.0
    p, r = tp / len(pred), tp / len(gold)
    return 2 * p * r / (p + r)


def score_pairs(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    return f1(parse_pairs(answer), {(min(a, b), max(a, b)) for a, b in gold})


def score_name(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    suspects = list(meta.get("suspects") or [gold])
    named = set()
    for s in suspects:
        if _mentions(answer, [s]) or _mentions(answer, [s.split()[-1]]):
            named.add(s)
    return 1.0 if named == {gold} else 0.0


SCORERS: dict[str, Callable[[str, Any, dict[str, Any]], float]] = {
    "needle": score_needle, "numeric": score_numeric, "label": score_label, "ranking": score_ranking,
    "percentiles": score_percentiles, "topk": score_topk, "pairs": score_pairs, "name": score_name,
}


def score(kind: str, answer: str | None, gold: Any, meta: dict[str, Any] | None = None) -> float:
    """The score of ``answer`` for a task of scorer ``kind`` (no answer scores 0)."""
    if answer is None or not str(answer).strip():
        return 0.0
    try:
        fn = SCORERS[kind]
    except KeyError:
        raise ValueError(f"unknown scorer {kind!r}") from None
    return round(float(fn(str(answer), gold, meta or {})), 6)


def format_gold(kind: str, gold: Any) -> str:
    """The gold answer written the way a good answer would be (dry runs reply with it)."""
    if kind == "ranking":
        return ", ".join(gold)
    if kind == "percentiles":
        return ", ".join(f"{k}={v}" for k, v in gold.items())
    if kind == "topk":
        return ", ".join(gold)
    if kind == "pairs":
        return "\n".join(f"({a}, {b})" for a, b in gold)
    return str(gold)
