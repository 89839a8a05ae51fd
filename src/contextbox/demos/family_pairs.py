"""The family-trees demo's questions to the sub-model: one per pair of people a sentence names.

A small model asked to *extract* ``{person, relation, of}`` triples from a sentence mostly answers
"none" or copies names it was not asked about (measured: 20 triples from 300 sentences, recall
0.09). Asked a *cloze* about two people the engine has already found — ``"…" — Helene is Prince
Vasili's ___?`` with the family words (or ``none``) as its only choices — it fills the word the
sentence states. So the engine finds the people and the pairs (plain Python over the whole
novel), the typed ``llm_map`` (``choices``) labels each pair, and the engine votes: a pair of people
keeps the relation most of its sentences give.

* **mentions**: the families' surnames, the first names the novel writes before them (the
  roster), titled names ("Prince Vasili", "Countess Mary"), the untitled names the novel uses for
  speakers ("said Sonya", "Berg replied"), and the heads of houses named by title alone ("the
  countess", "the old prince");
* **pairs**: in each sentence with a family word, every two mentions (the first six) that are not
  the same name, one of them of the four families;
* **orientation**: ``"B is A's ___"`` where A is the mention the sentence writes as the owner — the
  one before ``'s`` or after ``of``; else the earlier one — so the blank is usually the very word
  the sentence uses ("Prince Vasili's daughter Helene" → "Helene is Prince Vasili's daughter").
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

KIN_WORDS = ["father", "mother", "son", "daughter", "husband", "wife", "brother", "sister", "cousin", "uncle",
             "aunt", "nephew", "niece"]
CHOICES = [*KIN_WORDS, "none"]
PROMPT = ("Each record is a sentence from the novel War and Peace with two people in [brackets], then a question "
          "about them: \"B is A's ___?\". Answer with the family word the sentence states for B: what B is to A (father, "
          "mother, son, daughter, husband, wife, brother, sister, cousin, uncle, aunt, nephew or niece). "
          "Example: \"[Prince Vasili]'s daughter [Helene] came in.\" — Helene is Prince Vasili's ___? → daughter. "
          "Answer none when the sentence does not say how these two people are related (a family word about "
          "someone else, or about a person not named, is none).")
#: a family's surname, masculine or feminine, never the plural ("the Rostovs'" is a household)
SURNAMES = r"(?:Bolkonsk(?:i|y|aya)|Rostova?|Bezukhova?|Kuragina?)\b"
_TITLED = r"(?:old |young |little )?(?:Prince|Princess|Count|Countess)(?: (?!The\b)[A-Z][a-z]+){1,2}"
_BY_TITLE = r"the (?:old |little |young )?(?:count|countess|prince|princess)"
_SAID = r"(?:said|asked|replied|cried|exclaimed|whispered|answered)"
_SPEAKS = r"(?:said|asked|replied|cried|exclaimed|whispered|answered|smiled|thought|looked)"
#: at most this many mentions of one sentence are paired (6 → at most 15 pairs, most dropped by NEAR)
MAX_MENTIONS = 6
#: a family word counts for a pair when it is between the two mentions or at most this many
#: characters after the second ("Nicholas and Sonya, the niece"; "Prince Andrew, the little princess' husband")
NEAR = 40


@dataclass(frozen=True)
class Pair:
    """One question: in ``sentence``, what is ``b`` to ``a``? (``a_at``/``b_at``: where they are written)"""

    sentence: str
    a: str
    b: str
    a_at: int = -1
    b_at: int = -1

    def marked(self) -> str:
        """The sentence with both people in brackets: "[Prince Vasili]'s son, [Hippolyte], had come"."""
        s = self.sentence
        spans = sorted((at, at + len(n)) for at, n in ((self.a_at, self.a), (self.b_at, self.b)) if at >= 0)
        for lo, hi in reversed(spans):
            s = s[:lo] + "[" + s[lo:hi] + "]" + s[hi:]
        return s

    def record(self, reverse: bool = False) -> str:
        """The cloze: what is ``b`` to ``a`` — or, ``reverse``, what ``a`` is to ``b`` (a second opinion
        that must agree with the first)."""
        who, of = (self.a, self.b) if reverse else (self.b, self.a)
        return f'"{self.marked()}" — {who} is {possessive(of)} ___?'


def possessive(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def speaker_names(folded: str, lowered: Counter[str]) -> set[str]:
    """Capitalised words the novel writes as speakers ("said Sonya", "Berg replied") at least three
    times and almost never in lower case: people's names, not places."""
    said: Counter[str] = Counter()
    for m in re.finditer(rf"\b{_SAID}(?: (?:Prince|Princess|Count|Countess|the))? ([A-Z][a-z]{{2,}})\b"
                         rf"|\b([A-Z][a-z]{{2,}}) {_SPEAKS}\b", folded):
        said[m.group(1) or m.group(2)] += 1
    return {w for w, n in said.items() if n >= 3 and lowered[w.lower()] < 3}


@functools.lru_cache(maxsize=4)
def _patterns(folded: str, roster_items: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    lowered = Counter(re.findall(r"\b[a-z]+\b", folded))
    roster = dict(roster_items)
    names = sorted(speaker_names(folded, lowered) | set(roster), key=lambda n: (-len(n), n))
    # a name with the capitalised word after it is one mention: "Anna Pavlovna", "Marya Dmitrievna"
    mention = re.compile(rf"\b(?:{_TITLED}|[A-Z][a-z]+ {SURNAMES}"
                         + ("|(?:" + "|".join(map(re.escape, names)) + r")(?: [A-Z][a-z]+)?" if names else "")
                         + rf"|{SURNAMES}|{_BY_TITLE})\b")
    family = re.compile(r"\b(?:" + "|".join([*map(re.escape, sorted(roster)), SURNAMES, _BY_TITLE]) + r")\b")
    return mention, family


def _words(name: str) -> set[str]:
    from .family_trees import TITLES

    return {w for w in re.findall(r"[a-z]+", name.lower()) if w not in TITLES}


def orient(sentence: str, first: re.Match[str], second: re.Match[str]) -> tuple[re.Match[str], re.Match[str]]:
    """``(a, b)``: ``a`` the mention the sentence writes as the owner of the family word."""
    def owns(m: re.Match[str]) -> bool:
        after = sentence[m.end(): m.end() + 2]
        before = sentence[max(0, m.start() - 8): m.start()]
        return after.startswith("'") or bool(re.search(r"\bof (?:the )?$", before))

    if owns(second) and not owns(first):
        return second, first
    return first, second


_OWNED = re.compile(r"\b(?:his|her|their|my|your|our|its)\s+(?:\w+\s+)?$", re.I)


def names_kin(sentence: str, x: re.Match[str], y: re.Match[str], kin_re: re.Pattern[str],
              mention: re.Pattern[str]) -> bool:
    """A family word between the two mentions, or just after the second ("Nicholas and Sonya, the niece"),
    that is not someone else's: "his mother" is the mother of whoever "his" is — unless a name follows
    it ("his son, Hippolyte")."""
    for k in kin_re.finditer(sentence, x.start(), min(len(sentence), y.end() + NEAR)):
        if k.start() < x.end():
            continue
        if _OWNED.search(sentence, max(0, k.start() - 24), k.start()):
            named = mention.match(sentence, k.end() + (2 if sentence[k.end():k.end() + 2] == ", " else 1))
            if named is None:
                continue
        return True
    return False


def candidate_pairs(sentences: list[str], folded: str, roster: dict[str, str], kin_re: re.Pattern[str],
                    limit: int | None = None) -> list[Pair]:
    """The pairs to ask about, in the novel's order (at most ``limit``)."""
    mention, family = _patterns(folded, tuple(sorted(roster.items())))
    out: list[Pair] = []
    for s in sentences:
        if len(s) > 400 or not kin_re.search(s):
            continue
        found: list[re.Match[str]] = []
        for m in mention.finditer(s):
            if all(m.group(0) != f.group(0) for f in found):
                found.append(m)
        found = found[:MAX_MENTIONS]
        for i, x in enumerate(found):
            for y in found[i + 1:]:
                wx, wy = _words(x.group(0)), _words(y.group(0))
                if wx & wy or not (wx or wy):
                    continue  # one name written twice ("Prince Andrew" … "Andrew"), or two bare titles
                if not (family.search(x.group(0)) or family.search(y.group(0))):
                    continue
                if not names_kin(s, x, y, kin_re, mention):
                    continue  # no family word that can be about these two
                a, b = orient(s, x, y)
                out.append(Pair(s, a.group(0), b.group(0), a.start(), b.start()))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def vote(labelled: list[tuple[str, str, str]], min_support: int = 2) -> tuple[set[tuple[str, str, str]],
                                                                           Counter[tuple[str, str, str]]]:
    """Edges from ``(kind, a, b)`` votes, one per labelled pair: for each two people, the edge most of
    their sentences give, kept when at least ``min_support`` sentences give it."""
    support: Counter[tuple[str, str, str]] = Counter(labelled)
    by_people: dict[frozenset[str], list[tuple[str, str, str]]] = defaultdict(list)
    for e in support:
        by_people[frozenset(e[1:])].append(e)
    kept = set()
    for edges in by_people.values():
        best = max(edges, key=lambda e: (support[e], e))
        if support[best] >= min_support and sum(support[e] == support[best] for e in edges) == 1:
            kept.add(best)
    return kept, support
