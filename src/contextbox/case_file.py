"""Reading a case file the way a detective does: who is in it, what the crime was, what concerns whom.

The engine's part of a "who did it?" question (the case route, :mod:`case_route`) — plain text
analysis, no model:

* :func:`passages` — the paragraphs of the file, each knowing the section header above it (a
  witness statement under ``[WITNESS 5: Colonel Arthur Pemberton - ...]`` belongs to him even
  where a paragraph says only "I");
* :func:`people` — the persons named in it: runs of capitalised words that the text never writes
  in lower case ("Manor", "Gardener" are cut off: the text also says "the manor"), merged by
  first name, surname and title ("Colonel Pemberton", "Arthur Pemberton", "Colonel Arthur
  Pemberton" are one person; "Lord Ashford" is the one Ashford called Lord), with mention counts;
* :func:`crime_passage` / :func:`crime_terms` — the passage stating the crime (the victim of the
  question with a death word) and what identifies it: its hours ("between nine and ten",
  "10:00 PM"), its place and its other content words, weighted by how rare they are in the file;
* :func:`evidence_block` — the crime and the physical evidence, shared by every suspect's call;
* :func:`dossier` — the passages about one person that bear on the crime: those naming them (or
  under their header), ranked by the crime's terms, plus the accounts of the places their own
  account puts them in at the crime's hours (another witness in the same room "alone" breaks an
  alibi without naming anyone).

Nothing here knows a particular case: names, hours and places all come from the file and the question.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

#: words that stand before a name and are not part of it
TITLES = frozenset(
    "mr mrs miss ms mx dr doctor lord lady sir dame colonel col captain capt major general sergeant sgt "
    "inspector detective constable professor prof reverend rev father sister brother count countess duke "
    "duchess prince princess baron baroness earl aunt uncle cousin madame monsieur herr frau signor master "
    "judge nurse chief superintendent lieutenant lt admiral".split())
_CAP = r"[A-Z][a-z]+(?:['’-][A-Za-z]+)*"
#: a run of capitalised words (titles with or without a period), on one line
_RUN = re.compile(rf"\b{_CAP}\.?(?:[ \t]+{_CAP}\.?)*")
_RULE = re.compile(r"^\s*[=\-_*#~]{3,}\s*$")
_HEADER = re.compile(r"^\s*(?:\[[^\]\n]{3,120}\]|[A-Z0-9][A-Z0-9 .,:;'’&()/-]{4,119})\s*$")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d{1,2}(?::\d\d)?")
#: words that say a person died or a crime was done
DEATH = re.compile(r"\b(dead|death|died|killed|murder\w*|body|corpse|poison\w*|stabbed|shot|strangled|"
                   r"slain|victim|stolen|theft|robbed|missing)\b", re.I)
#: words of physical evidence
EVIDENCE = re.compile(r"\b(evidence|forensic\w*|trace\w*|footprints?|prints?|fingerprints?|thread|fibres?|fibers?|"
                      r"ash|mud\w*|blood\w*|stain\w*|weapon|candlestick|knife|revolver|pistol|rope|residue|"
                      r"clue\w*|found)\b", re.I)
_HOURS = {w: i + 1 for i, w in enumerate("one two three four five six seven eight nine ten eleven twelve".split())}
#: an hour: "10:05 PM", "9 pm", "ten o'clock", "from nine", "until ten", "past ten" (not "ten minutes")
_HOUR = re.compile(
    r"\b(\d{1,2}):\d\d\b|\b(\d{1,2})\s*(?:[ap]\.?m\b|o['’]clock)|"
    r"\b(?:at|until|till|to|from|between|and|past|about|around|after|before|by|since|towards?)\s+("
    + "|".join(_HOURS) + r")\b(?!\s+(?:minutes?|hours?|days?|weeks?|months?|years?|times?|of|pounds?|shillings?|"
    r"yards?|pairs?|people|men|women|guests?|miles?|feet|steps?|paces?|percent)\b)|"
    r"\b(" + "|".join(_HOURS) + r")\s+o['’]clock\b", re.I)
#: words that say why someone would do it, and words that test an alibi
MOTIVE = re.compile(r"\b(inherit\w*|will|estate|debts?|owed|money|fraud|embezzl\w*|blackmail\w*|jealous\w*|"
                    r"quarrel\w*|argu\w*|threat\w*|revenge|dismiss\w*|grudge|affair|insurance)\b", re.I)
ALIBI = re.compile(r"\b(alone|nobody|no one|unaccounted|never left|left the|saw|seen|returning|came back|"
                   r"contradict\w*|confirm\w*)\b", re.I)
_STOP = frozenset(
    "a an the and or but of in on at to for from by with as is are was were be been being it its this that these "
    "those there here he she they them his her their him i me my we our you your who whom whose which what when "
    "where why how not no nor so than then too very can could would should will shall may might must do does did "
    "done have has had having into onto upon over under about after before between during until till while "
    "also only just any all each every some such other same own one two again once out up down off more most "
    "less least few many much said says say told tell no yes mr mrs miss dr lord lady sir o'clock clock pm am "
    "p.m a.m time hour hours minutes later earlier around approximately about nothing anything something "
    "whole evening night".split())
#: "in the billiard room", "at the stables": a place an account puts someone in
_PLACE = re.compile(r"\b(?:in|at|inside|into|to|near|from)\s+the\s+([a-z]+(?:\s+[a-z]+)?)", re.I)
#: capitalised words that end a name: places, organisations, calendar words
NOT_NAMES = frozenset(
    "manor hall house farm brothers sons institute gazette street road lane church abbey court park castle "
    "station company society club hotel inn college school university hospital office bank museum show fair "
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday christmas easter god english british french german italian "
    "american russian chinese turkish egyptian greek dutch cuban".split())
_PLACE_HEAD = frozenset(
    "room library study hall kitchen garden gardens conservatory chapel stables stable greenhouse terrace "
    "cellar pantry attic gallery parlour parlor lounge office bedroom bathroom nursery orangery lodge cottage "
    "garage shed boathouse summerhouse drive yard courtyard lawn orchard woods wood lake shore beach station "
    "platform carriage cabin deck bar restaurant dining lobby corridor landing staircase stairs tower wing "
    "vestry church tavern inn shop house barn mill path".split())


#: a passage about a person below this relevance to the crime is background (letters, ledgers, gossip)
MIN_RELEVANCE = 2.5


@dataclass
class Passage:
    """One paragraph of the file: where it is, its text and the section header above it."""

    start: int
    end: int
    text: str
    header: str = ""

    @property
    def full(self) -> str:
        return f"{self.header}\n{self.text}" if self.header and self.header not in self.text else self.text


@dataclass
class Person:
    """One person: the name to show, the words that name them, how often the file names them."""

    name: str  # the longest form, with its title: "Colonel Arthur Pemberton"
    key: str  # the name without titles: "Arthur Pemberton"
    forms: set[str] = field(default_factory=set)  # every way the file names them (without titles)
    titled: set[str] = field(default_factory=set)  # "Colonel Pemberton", "Lord Ashford"
    mentions: int = 0

    def pattern(self) -> re.Pattern[str]:
        """Any of their forms, as written or in capitals (headers often are)."""
        alts = sorted(self.forms | self.titled, key=len, reverse=True)
        body = "|".join(re.escape(a).replace(r"\ ", r"\.?\s+") for a in alts)
        upper = "|".join(re.escape(a.upper()).replace(r"\ ", r"\.?\s+") for a in alts)
        return re.compile(rf"(?<![\w-])(?:{body}|{upper})(?![\w-])")


# ---------------------------------------------------------------------- passages
def passages(text: str) -> list[Passage]:
    """The paragraphs of ``text`` (blank-line separated; rule lines dropped), each with the header above it.

    A header is a paragraph that is a single bracketed or capitalised line; it applies until the next one."""
    out: list[Passage] = []
    header = ""
    for m in re.finditer(r"(?:[^\n]|\n(?![ \t]*\n))+", text):
        lines = [ln for ln in m.group(0).split("\n") if ln.strip() and not _RULE.match(ln)]
        if not lines:
            continue
        if len(lines) == 1 and _HEADER.match(lines[0]):
            header = lines[0].strip().strip("[]").strip()
            continue
        body = "\n".join(lines).strip()
        out.append(Passage(m.start(), m.end(), body, header))
    return out


# ---------------------------------------------------------------------- people
def _lowercase_words(text: str) -> set[str]:
    return {w for w in re.findall(r"\b[a-z][a-z'’-]*\b", text)}


def _segments(run: str) -> list[list[str]]:
    """A run of capitalised words cut at sentence ends (a period after a word that is not a title)."""
    out: list[list[str]] = [[]]
    for tok in run.split():
        word = re.sub(r"['’]s$", "", tok.rstrip("."))
        out[-1].append(word)
        if tok.endswith(".") and word.casefold() not in TITLES:
            out.append([])
    return [seg for seg in out if seg]


def people(text: str) -> list[Person]:
    """The persons ``text`` names, most mentioned first (see the module doc)."""
    lower = _lowercase_words(text)

    def common(w: str) -> bool:  # a word the text also writes in lower case, or not a name at all
        f = w.casefold()
        return f in lower or f in _STOP or f in NOT_NAMES

    fulls: dict[str, Person] = {}
    singles: list[tuple[str, str]] = []  # (title, word) of "Colonel Pemberton", "Aunt Victoria"
    for m in _RUN.finditer(text):
        for words in _segments(m.group(0)):
            while words and common(words[0]) and words[0].casefold() not in TITLES:
                words.pop(0)  # "When Eleanor ...", "After Colonel Pemberton ..."
            titles: list[str] = []
            while words and words[0].casefold() in TITLES:
                titles.append(words.pop(0))
            name: list[str] = []
            for w in words:  # a name ends where a common word begins ("Ashford Manor")
                if common(w):
                    break
                name.append(w)
            if 2 <= len(name) <= 3:
                key = " ".join(name)
                p = fulls.setdefault(key, Person(key, key, {key}))
                kin = titles and titles[-1].casefold() in ("father", "sister", "brother", "aunt", "uncle", "cousin")
                if titles and not kin:
                    shown = f"{_title(titles)} {key}"
                    p.titled.add(f"{_title(titles[-1:])} {name[-1]}")
                    if len(shown) > len(p.name):
                        p.name = shown
            elif len(name) == 1 and titles:
                singles.append((titles[-1], name[0]))
    # a first name or a surname alone names a person when it is theirs alone
    by_first = Counter(k.split()[0] for k in fulls)
    by_last = Counter(k.split()[-1] for k in fulls)
    for p in fulls.values():
        first, last = p.key.split()[0], p.key.split()[-1]
        if by_first[first] == 1 and by_last[first] == 0:
            p.forms.add(first)
        if by_last[last] == 1 and by_first[last] == 0:
            p.forms.add(last)
    for title, word in singles:
        titled = f"{_title([title])} {word}"
        owners = [p for p in fulls.values() if titled in p.titled]
        if not owners:
            owners = [p for p in fulls.values() if word in p.forms]
        if len(owners) == 1:
            owners[0].titled.add(titled)
        elif not owners and not any(word in k.split() for k in fulls):
            fulls.setdefault(titled, Person(titled, titled, set(), {titled}))
    shared = Counter(t for p in fulls.values() for t in p.titled)  # "Mrs. Ashford" of two Ashfords is no one's
    for p in fulls.values():
        p.titled = {t for t in p.titled if shared[t] == 1}
    for p in fulls.values():
        p.mentions = len(p.pattern().findall(text))
    return sorted((p for p in fulls.values() if p.mentions), key=lambda p: (-p.mentions, p.key))


def _title(titles: list[str]) -> str:
    short = {"mr", "mrs", "ms", "mx", "dr", "st"}
    return " ".join(t + "." if t.casefold() in short else t for t in titles)


def named_in(question: str, everyone: list[Person]) -> list[Person]:
    """The persons a question names."""
    return [p for p in everyone if p.pattern().search(question)]


# ---------------------------------------------------------------------- the crime
def crime_passage(ps: list[Passage], victims: list[Person]) -> Passage | None:
    """The passage that states the crime: it names the victim and says what happened, with the most
    hours and death words; without a victim, the first passage with death words and an hour."""
    best: tuple[int, int] | None = None
    found: Passage | None = None
    for i, p in enumerate(ps):
        full = p.full
        named = any(v.pattern().search(full) for v in victims) if victims else True
        deaths = len(DEATH.findall(full))
        if not named or not deaths:
            continue
        score = (deaths + 2 * len(hours(full)), -i)
        if best is None or score > best:
            best, found = score, p
    return found


@lru_cache(maxsize=4096)
def hours(text: str) -> frozenset[str]:
    """The hours a text names: "nine", "10:00 pm" -> "10", ..."""
    out: set[str] = set()
    for m in _HOUR.finditer(text):
        h = next(g for g in m.groups() if g).casefold()
        n = _HOURS.get(h) or int(h)
        out.add(str(n - 12 if n > 12 else n))
    return frozenset(out)


def _stem(w: str) -> str:
    w = w.casefold().strip("'’")
    return w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w


@lru_cache(maxsize=4096)
def _terms(text: str, proper: bool = True) -> tuple[str, ...]:
    """Content words (stemmed); ``proper=False`` leaves out capitalised words not at a sentence start."""
    out = []
    for m in _WORD.finditer(text):
        w = m.group(0)
        if w[0].isdigit() or w.casefold() in _STOP or len(w) < 3:
            continue
        if not proper and w[0].isupper() and not re.search(r"(^|[.!?:\n\"]\s*)$", text[max(0, m.start() - 3):m.start()]):
            continue
        out.append(_stem(w))
    return tuple(out)


def crime_terms(crime: Passage, evidence: list[Passage], ps: list[Passage], exclude: set[str]) -> dict[str, float]:
    """The content words of the crime and its evidence, each weighted by its rarity in the file (idf).
    Names (``exclude``) and the crime passage's proper nouns are left out: they say who and where, not
    what; the evidence's are kept ("a Havana cigar")."""
    df: Counter[str] = Counter()
    for p in ps:
        df.update(set(_terms(p.full)))
    n = len(ps)
    words = set(_terms(crime.text, proper=False))
    for p in evidence:
        if p is not crime:
            words |= set(_terms(p.text))
    return {t: math.log((n + 1) / (df[t] + 0.5)) for t in words if t not in exclude}


def relevance(text: str, terms: dict[str, float], crime_hours: frozenset[str]) -> float:
    """How much ``text`` bears on the crime: the weight of the crime's words it shares, its hours,
    and words of motive and of alibi."""
    words = set(_terms(text))
    score = sum(w for t, w in terms.items() if t in words and w > 0)
    score += 3.0 * len(hours(text) & crime_hours)
    score += min(3, len({m.casefold() for m in MOTIVE.findall(text)}))
    score += 0.5 * min(4, len({m.casefold() for m in ALIBI.findall(text)}))
    return score


def evidence_block(ps: list[Passage], crime: Passage, terms: dict[str, float], crime_hours: frozenset[str],
                   cap: int = 3000) -> list[Passage]:
    """The crime passage and the physical evidence: passages with evidence words, ranked by the crime's words."""
    scored = []
    for i, p in enumerate(ps):
        if p is crime:
            continue
        ev = len({m.casefold() for m in EVIDENCE.findall(p.full)})
        # a passage filed as evidence ("PHYSICAL EVIDENCE", "FORENSIC NOTE") is evidence; others need its words
        filed = re.search(r"\b(evidence|forensic)\b", p.header + " " + p.text[:40], re.I) is not None
        rel = relevance(p.full, terms, crime_hours)
        if not filed and (ev < 2 or rel < MIN_RELEVANCE):
            continue
        scored.append((rel + ev + 5 * filed, -i, p))
    scored.sort(key=lambda x: (x[0], x[1]), reverse=True)
    out, used = [crime], len(crime.full)
    for _, _, p in scored:
        if used + len(p.full) > cap:
            continue
        out.append(p)
        used += len(p.full)
    return sorted(out, key=lambda p: p.start)


def places(text: str) -> set[str]:
    """The places an account puts someone in: "in the billiard room" -> "billiard room"."""
    out: set[str] = set()
    for m in _PLACE.finditer(text):
        words = m.group(1).casefold().split()
        while words and words[-1] not in _PLACE_HEAD:
            words.pop()
        if words:
            out.add(" ".join(words))
    return out


def _only_about(p: Passage, pat: re.Pattern[str], everyone: list[Person]) -> str:
    """A passage that lists several people ("X smokes Havana cigars. Y smokes Manila cigars. ..."), cut to
    its first sentence and the sentences naming this person; other passages whole."""
    if p.header and pat.search(p.header):
        return p.full
    if sum(1 for o in everyone if o.pattern().search(p.text)) < 3:
        return p.full
    sents = re.split(r"(?<=[.!?])\s+", p.text)
    keep = [s for i, s in enumerate(sents) if i == 0 or pat.search(s)]
    body = " ".join(keep)
    return f"{p.header}\n{body}" if p.header else body


def dossier(person: Person, ps: list[Passage], terms: dict[str, float], crime_hours: frozenset[str],
            shared: list[Passage], cap: int = 4000, everyone: list[Person] | None = None) -> tuple[str, int]:
    """The passages about ``person`` that bear on the crime, as one text (labelled), and how many there were.

    Their own passages (naming them or under their header) come first by relevance to the crime; then
    the accounts, at the crime's hours, of the places their accounts put them in at those hours. A passage
    about several people keeps only its sentences about this one (``everyone``: the people of the file)."""
    pat = person.pattern()
    skip = {id(p) for p in shared}
    own: list[tuple[float, int, Passage]] = []
    for i, p in enumerate(ps):
        if id(p) in skip or not pat.search(p.full):
            continue
        own.append((relevance(p.full, terms, crime_hours), i, p))
    own.sort(key=lambda x: (-x[0], x[1]))
    floor = max(MIN_RELEVANCE, 0.35 * own[0][0]) if own else 0.0
    picked: list[tuple[str, Passage]] = []
    used = 0
    for score, _, p in own:
        if score < floor or used + len(p.full) > cap:
            continue
        picked.append(("about them", p))
        used += len(p.full)
    # where their accounts put them at the crime's hours, and what others say of those places then
    where: set[str] = set()
    for _, p in picked:
        for sent in re.split(r"(?<=[.!?\n])\s+", p.text):
            if hours(sent) & crime_hours and (pat.search(sent) or p.header and pat.search(p.header)
                                              or re.search(r"\bI\b", sent)):
                where |= places(sent)
    mine = {id(p) for _, p in picked}
    linked: list[tuple[float, int, Passage, str]] = []
    for i, p in enumerate(ps):
        if id(p) in mine or id(p) in skip or not where:
            continue
        if not (hours(p.text) & crime_hours):
            continue
        low = p.text.casefold()
        hit = [w for w in where if re.search(rf"\b{re.escape(w)}\b", low)]
        if hit:
            linked.append((relevance(p.full, terms, crime_hours) + 2 * len(hit), i, p, max(hit, key=len)))
    linked.sort(key=lambda x: (-x[0], x[1]))
    for _, _, p, place in linked[:3]:
        if used + len(p.full) > cap + 1000:
            break
        picked.append((f"what someone else says of the {place}, where they say they were", p))
        used += len(p.full)
    picked.sort(key=lambda x: x[1].start)
    text = "\n\n".join(f"({label}) {_only_about(p, pat, everyone or [])}" for label, p in picked)
    return text, len(picked)


_NUMBER = re.compile(r"(?<![\d:.,£$])\b\d{1,4}\b(?![:.,]\d)")


def trace(person: Person, ps: list[Passage], crime: Passage, evidence: list[Passage], idf: dict[str, float]
          ) -> tuple[float, list[str]]:
    """How much the physical evidence points at ``person``: the rarity-weighted words and numbers of the
    evidence passages (not the crime's own) that the file's sentences naming them also use ("wears size 9
    boots" against "made by size 9 boots"; "smokes only Havana cigars" against "ash from a Havana cigar").
    The engine's tie-breaker between suspects whose facts weigh the same. Returns (score, the shared words and
    numbers, rarest first)."""
    words = {t for p in evidence if p is not crime for t in _terms(p.text)}
    numbers = {n for p in evidence if p is not crime for n in _NUMBER.findall(p.text)}
    pat = person.pattern()
    said: set[str] = set()
    said_n: set[str] = set()
    for p in ps:
        if not pat.search(p.text):
            continue
        for sent in re.split(r"(?<=[.!?])\s+|\n", p.text):
            if pat.search(sent):
                said.update(_terms(sent))
                said_n.update(_NUMBER.findall(sent))
    weights = {t: idf.get(t, 0.0) for t in words & said}
    n = len(ps)
    for num in numbers & said_n:  # a number's rarity, like a word's
        df = sum(1 for p in ps if num in _NUMBER.findall(p.text))
        weights[num] = math.log((n + 1) / (df + 0.5))
    shared = sorted((t for t, w in weights.items() if w > 0), key=lambda t: (-weights[t], t))
    return round(sum(w for w in weights.values() if w > 0), 3), shared
