"""Pairs questions: what "every pair of user IDs where both users have at least K instances labelled
'X' (or 'Y')" asks, read from the question by the engine (no model), for the table route.

:func:`pairs_question` reads the question into a :class:`PairsAsk` (what the pairs are of, the values
a row must have, how many such rows each side needs). With the run's tables the engine then fixes
each step through the next turn's schema: the column the condition is about (the typed map's label
column, or a column that already holds those values) becomes a ``filter`` step (``where`` and
``store`` fixed), then ``pairs`` on those rows with the subject's column and ``at_least`` fixed, then
the answer (``final_var`` of the pairs). :func:`answer_pairs` reads an answer's pairs for the check
that sends back a pair list that differs from the engine's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .column_hints import _SKIP, _names, _stem
from .table import Table

_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "a": 1, "an": 1, "any": 1}
#: "every pair of user IDs", "all pairs of distinct customers", "pairs of users"
_PAIRS_OF = re.compile(r"\bpairs?\s+of\s+(?:(?:distinct|different|unique|two)\s+)?([a-z][\w-]*)", re.I)
#: "at least 3 instances labelled", "at least one record tagged", "an instance labelled"
_COUNT = re.compile(r"\b(?:at least|no fewer than|(?=an?\s|any\s))\s*(\d+|one|two|three|four|five|six|seven|eight|"
                    r"nine|ten|an?|any)\s+(?:[\w-]+\s+){0,3}?(?:label(?:l)?ed|tagged|classified(?: as)?|marked(?: as)?|"
                    r"of (?:the )?(?:label|type|kind|category)|with (?:the )?(?:label|type|kind|category))\s+([^.?;\n]+)",
                    re.I)
#: "at least 2 ERROR lines", "at least three 500 responses": the value before a row word
_ROWS = re.compile(r"\b(?:at least|no fewer than)\s+(\d+|one|two|three|four|five|six|seven|eight|nine|ten)\s+"
                   r"['\"]?([\w./-]+?)['\"]?\s+(?:lines?|requests?|responses?|entries|entry|records?|events?|"
                   r"messages?|rows?|calls?|hits?)\b", re.I)
_QUOTED = re.compile(r"['\"‘“`]([^'\"’”`]{1,40})['\"’”`]")


@dataclass(frozen=True)
class PairsAsk:
    """A pairs question: pairs of ``subject`` values, each in ≥ ``at_least`` rows having one of ``values``."""

    subject: str
    values: tuple[str, ...]
    at_least: int


def pairs_question(question: str) -> PairsAsk | None:
    """The pairs a question asks for, or None when it asks for no pairs (or names no condition)."""
    m = _PAIRS_OF.search(question)
    if not m:
        return None
    cond = _COUNT.search(question, m.end())
    if not cond:
        rows = _ROWS.search(question, m.end())
        if not rows:
            return None
        raw = rows.group(1).lower()
        k = int(raw) if raw.isdigit() else _NUMBER_WORDS[raw]
        return PairsAsk(_stem(m.group(1).strip("-")), (rows.group(2),), k)
    raw = cond.group(1).lower()
    k = int(raw) if raw.isdigit() else _NUMBER_WORDS[raw]
    body = cond.group(2)
    values = [v.strip() for v in _QUOTED.findall(body)]
    if not values:  # unquoted: "labelled spam or ham" → the words joined by or/and/commas, up to the clause's end
        for part in re.split(r"\s*(?:,|\bor\b|\band\b)\s*", body.strip()):
            word = part.strip().split(" ")[0] if part.strip() else ""
            if not word or (values and len(part.split()) > 1):
                break
            values.append(word)
    values = [v for v in values if v]
    if not values or k < 1:
        return None
    return PairsAsk(_stem(m.group(1).strip("-")), tuple(dict.fromkeys(values)), k)


def subject_column(ask: PairsAsk, tables: dict[str, Table]) -> str | None:
    """The column the pairs are of: one whose name means the question's subject ("user IDs" → ``User``)."""
    for t in reversed(list(tables.values())):
        for c in t.columns:
            if c not in _SKIP and ask.subject in _names(c):
                return c
    return None


def condition(ask: PairsAsk, tables: dict[str, Table], label_column: str | None = None,
              scan: int = 20_000) -> dict[str, Any] | None:
    """The ``filter`` ``where`` for the rows the condition counts: ``{column: value}`` or ``{column: {"in":
    [values]}}``, values as the table holds them. The column is one that holds the question's values
    (case-insensitive), else ``label_column`` (the typed map's answers) with the values as written.
    None when no column qualifies yet (the rows are not labelled)."""
    want = {v.casefold() for v in ask.values}
    for t in reversed(list(tables.values())):
        for c in t.columns:
            if c in _SKIP:
                continue
            held: dict[str, Any] = {}
            for v in t.column(c)[:scan]:
                key = str(v).casefold() if isinstance(v, (str, int)) and not isinstance(v, bool) else None
                if key in want:
                    held.setdefault(key, v)
            if held:
                vals = [held.get(v.casefold(), v) for v in ask.values]
                return {c: vals[0] if len(vals) == 1 else {"in": vals}}
    if label_column is not None:
        vals = list(ask.values)
        return {label_column: vals[0] if len(vals) == 1 else {"in": vals}}
    return None


def label_column(tables: dict[str, Table]) -> str | None:
    """The typed map's answer column of the newest labelled table (``label``, or the column before
    ``map_error``), or None when no table is labelled."""
    for t in reversed(list(tables.values())):
        if "map_error" in t.cols:
            cols = t.columns
            if "label" in cols:
                return "label"
            i = cols.index("map_error")
            return cols[i - 1] if i else None
    return None


_PAREN = re.compile(r"\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*\)")
_NUM = re.compile(r"\d+(?:\.\d+)?")


def answer_pairs(answer: str) -> set[frozenset[str]]:
    """The pairs an answer gives, order within a pair ignored: ``(a, b)`` groups, else per line the
    numbers two by two (how the pairs scorer reads an answer). A pair of one value twice is no pair."""
    found = _PAREN.findall(answer)
    if not found:
        for line in answer.splitlines():
            nums = _NUM.findall(line)
            found += list(zip(nums[::2], nums[1::2], strict=False))
    return {frozenset((a.strip(" '\""), b.strip(" '\""))) for a, b in found if a.strip(" '\"") != b.strip(" '\"")}
