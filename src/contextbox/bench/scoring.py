"""Scorers: an answer and the gold answer → a score in [0, 1]; ``correct`` means score 1.

``needle``      the gold string appears in the answer as a whole token (RULER's string match)
``numeric``     OOLONG: ``0.75 ** |answer - gold|`` with the first integer of the answer
``label``       OOLONG exact match: the first label named in the answer is the gold label
``ranking``     the share of gold positions the answer gets right: the right name at that place in
                the order and, when the question asks for counts (``meta["counts"]``), the right count
                written after it
``percentiles`` the share of p50/p95/p99 given exactly (whole numbers: ``83.4`` is not ``83``)
``topk``        ordered (``meta["ordered"]``): the share of positions holding the gold word; else the
                share of the gold words among the first k log-vocabulary words of the answer
``pairs``       F1 of the answer's pairs against the gold pairs (order within a pair ignored)
``name``        the gold person's full name is given and no other suspect is named (by full name or
                surname); a surname alone is not an answer
``seed``        the seed case files' own rules (``meta["match_type"]``): ``contains`` (a whole-token,
                case-insensitive match), ``contains_all``, ``regex`` (``meta["regex_pattern"]`` or the
                expected string, ``re.search``) and ``exact`` (after :func:`norm`)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger("contextbox")

_INT = re.compile(r"-?\d[\d,]*")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
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


def _number(text: str) -> float | None:
    """The first number in ``text`` (thousands commas allowed, decimals kept), else None."""
    m = _NUMBER.search(text)
    if not m:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def _mention_spans(answer: str, names: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, name) of each name's first whole-word mention, in order of appearance."""
    a = answer.casefold()
    found = []
    for n in names:
        m = re.search(rf"(?<![a-z]){re.escape(n.casefold())}(?![a-z])", a)
        if m:
            found.append((m.start(), m.end(), n))
    return sorted(found)


def score_ranking(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    """Order always; counts too when ``meta["counts"]`` holds them (the question asked for them)."""
    if not gold:
        return 1.0
    spans = _mention_spans(answer, list(gold))
    counts = meta.get("counts")
    right = 0
    for i, (g, (_, end, name)) in enumerate(zip(gold, spans, strict=False)):
        if name != g:
            continue
        if counts:
            nxt = spans[i + 1][0] if i + 1 < len(spans) else len(answer)
            if _number(answer[end:nxt]) != float(counts[g]):
                continue
        right += 1
    return right / len(gold)


_PCT = re.compile(r"(?<![a-z0-9])(?:p\s*(50|95|99)|(50|95|99)(?:th|%)(?:\s*percentile)?)(?![0-9])"
                  r"[^0-9]{0,20}?(\d[\d,]*(?:\.\d+)?)", re.I)


def score_percentiles(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    """Each of p50/p95/p99 counts when its first stated value equals the gold exactly (83.4 ≠ 83)."""
    got: dict[str, float] = {}
    for m in _PCT.finditer(answer):
        key = f"p{m.group(1) or m.group(2)}"
        got.setdefault(key, float(m.group(3).replace(",", "")))
    return sum(1 for k, v in gold.items() if got.get(k) == float(v)) / len(gold)


def score_topk(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    """Only words of the log vocabulary count (so "The top words are: ..." costs nothing); with
    ``meta["ordered"]`` each word must also stand at its gold position."""
    from .logs import CONTENT, STOP_WORDS

    if not gold:
        return 1.0
    vocab = set(CONTENT) | set(STOP_WORDS) | set(gold)
    words: list[str] = []
    for w in _WORDS.findall(answer.casefold()):
        if w in vocab and w not in words and w not in ("the", "a"):
            words.append(w)
    if meta.get("ordered"):
        return sum(1 for a, b in zip(words, gold, strict=False) if a == b) / len(gold)
    return len(set(words[: len(gold)]) & set(gold)) / len(gold)


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
    """1 when the gold full name is given and no other suspect is named (full name or surname)."""
    flat = " ".join(answer.split())
    if not _mentions(flat, [gold]):
        return 0.0
    for s in meta.get("suspects") or []:
        if s != gold and (_mentions(flat, [s]) or _mentions(flat, [s.split()[-1]])):
            return 0.0
    return 1.0


def score_seed(answer: str, gold: Any, meta: dict[str, Any]) -> float:
    """The seed case files' match rules."""
    mt = meta.get("match_type", "contains")

    def contains(x: str) -> bool:
        return re.search(rf"(?<![0-9a-z]){re.escape(x.casefold())}(?![0-9a-z])", answer.casefold()) is not None

    if mt == "contains":
        return 1.0 if contains(str(gold)) else 0.0
    if mt == "contains_all":
        return 1.0 if all(contains(str(g)) for g in gold) else 0.0
    if mt == "regex":
        return 1.0 if re.search(str(meta.get("regex_pattern", gold)), answer) else 0.0
    if mt == "exact":
        return 1.0 if norm(answer) == norm(gold) else 0.0
    raise ValueError(f"unknown match_type {mt!r}")


SCORERS: dict[str, Callable[[str, Any, dict[str, Any]], float]] = {
    "needle": score_needle, "numeric": score_numeric, "label": score_label, "ranking": score_ranking,
    "percentiles": score_percentiles, "topk": score_topk, "pairs": score_pairs, "name": score_name,
    "seed": score_seed,
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


def format_gold(kind: str, gold: Any, meta: dict[str, Any] | None = None) -> str:
    """The gold answer written the way a good answer would be (dry runs reply with it)."""
    counts = (meta or {}).get("counts")
    if kind == "ranking":
        return ", ".join(f"{g}: {counts[g]}" for g in gold) if counts else ", ".join(gold)
    if kind == "seed" and isinstance(gold, list):
        return ", ".join(gold)
    if kind == "percentiles":
        return ", ".join(f"{k}={v}" for k, v in gold.items())
    if kind == "topk":
        return ", ".join(gold)
    if kind == "pairs":
        return "\n".join(f"({a}, {b})" for a, b in gold)
    return str(gold)
