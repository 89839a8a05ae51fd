"""Needle suites: ``sniah`` (RULER-style single needle) and ``needle-novel`` (a fact in War and Peace)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ..demos.war_and_peace import WORDS, insert_needle
from .tasks import Task, cut_at_boundary, read_novel, register, spread

log = logging.getLogger("contextbox")

#: RULER's "noise" haystack
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
ADJECTIVES = ["amber", "brisk", "cloudy", "dusty", "eager", "frosty", "gentle", "hollow", "icy", "jolly",
              "lucky", "misty", "noisy", "quiet", "rusty", "silent", "tidy", "vivid", "windy", "young"]
NOUNS = ["wren", "otter", "falcon", "maple", "harbor", "lantern", "meadow", "pebble", "quartz", "raven",
         "saddle", "thistle", "violet", "walnut", "badger", "cobalt", "ember", "glacier", "hazel", "juniper"]
NOVELS = ["war_and_peace.txt", "moby-dick.txt", "ulysses.txt", "pride_and_prejudice.txt"]
SNIAH_LENGTHS = [8_000, 32_000, 128_000, 512_000, 1_000_000, 4_000_000]


def ruler_needle(rng: random.Random) -> tuple[str, str, str]:
    """(key, value, sentence) in RULER's single-needle wording."""
    key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    value = str(rng.randint(1_000_000, 9_999_999))
    return key, value, f"One of the special magic numbers for {key} is: {value}."


def filler_haystack(length: int) -> str:
    return (FILLER * (length // len(FILLER) + 1))[:length].rstrip() + "\n"


def novel_haystack(length: int, data: Path | None) -> str:
    """The novels one after another, as much as ``length`` needs (4M uses all four)."""
    parts: list[str] = []
    total = 0
    while total < length:
        for name in NOVELS:
            try:
                t = read_novel(name, data)
            except Exception as e:  # noqa: BLE001 - a missing extra novel only shortens the pool
                log.debug("novel %s unavailable: %s", name, e)
                continue
            parts.append(t)
            total += len(t)
            if total >= length:
                break
        if not parts:
            break
    return cut_at_boundary("\n\n".join(parts), length)


def insert_sentence(text: str, sentence: str, depth: float) -> tuple[str, int]:
    """Insert ``sentence`` after the first sentence end at or after ``depth``; returns (text, offset)."""
    pos = int(len(text) * depth)
    brk = text.find(". ", pos)
    if brk < 0:
        return text + " " + sentence, len(text) + 1
    at = brk + 2
    return text[:at] + sentence + " " + text[at:], at


@register("sniah", SNIAH_LENGTHS)
def sniah(n: int, seed: int, lengths: list[int] | None, data: Path | None) -> list[Task]:
    """``n`` needles per length at spread depths; haystacks alternate filler sentences and novel text."""
    rng = random.Random(f"sniah:{seed}")
    tasks: list[Task] = []
    novel_cache: dict[int, str] = {}
    for length in lengths or SNIAH_LENGTHS:
        for i, depth in enumerate(spread(n)):
            kind = "filler" if i % 2 == 0 else "novel"
            if kind == "novel":
                if length not in novel_cache:
                    novel_cache[length] = novel_haystack(length, data)
                hay = novel_cache[length]
            else:
                hay = filler_haystack(length)
            key, value, sentence = ruler_needle(rng)
            while value in hay:
                key, value, sentence = ruler_needle(rng)
            if kind == "novel":
                text, at = insert_needle(hay, sentence, depth)
            else:
                text, at = insert_sentence(hay, sentence, depth)
            q = (f"What is the special magic number for {key} mentioned in the provided text? "
                 "Answer with the number only.")
            tasks.append(Task("sniah", f"sniah-{length}-{i}", q, text, value, "needle", length, depth,
                              (at, at + len(sentence)), {"haystack": kind, "key": key}))
    return tasks


#: (sentence, question, value kind) — the value is drawn per task
FACTS = [
    ("The secret password to the old library is {v}.",
     "What is the secret password to the old library? Answer with the password only.", "code"),
    ("The name of Countess Rostova's grey parrot was {v}.",
     "What was the name of Countess Rostova's grey parrot? Answer with the name only.", "name"),
    ("The courier from Vienna carried exactly {v} gold ducats in his saddlebag.",
     "How many gold ducats did the courier from Vienna carry in his saddlebag? Answer with the number only.", "num"),
    ("Colonel Vreshin buried the regiment's silver under the mill at {v}.",
     "Where did Colonel Vreshin bury the regiment's silver? Answer with the place name only.", "place"),
]
SYLLABLES = ["bor", "vek", "zan", "tru", "mil", "ska", "dor", "pel", "yat", "gri", "lon", "shev"]


def _value(kind: str, rng: random.Random) -> str:
    if kind == "code":
        return f"{rng.choice(WORDS)}-{rng.randint(1000, 9999)}"
    if kind == "num":
        return str(rng.randint(1000, 9999))
    word = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
    return word + ("ovka" if kind == "place" else "")


@register("needle-novel", [0])
def needle_novel(n: int, seed: int, lengths: list[int] | None, data: Path | None) -> list[Task]:
    """A stated fact in War and Peace at depths 5%…95% (length 0 = the whole novel)."""
    rng = random.Random(f"needle-novel:{seed}")
    novel = read_novel("war_and_peace.txt", data)
    tasks: list[Task] = []
    for length in lengths or [0]:
        hay = cut_at_boundary(novel, length) if length else novel
        hay_lower = hay.lower()
        for i, depth in enumerate(spread(n)):
            sentence_t, question, kind = FACTS[(seed + i) % len(FACTS)]
            value = _value(kind, rng)
            while value.lower() in hay_lower:
                value = _value(kind, rng)
            sentence = sentence_t.format(v=value)
            text, at = insert_needle(hay, sentence, depth)
            tasks.append(Task("needle-novel", f"needle-novel-{len(hay)}-{i}", question, text, value, "needle",
                              len(hay), depth, (at, at + len(sentence)), {"fact": kind}))
    return tasks
