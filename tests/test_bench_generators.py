"""Bench generators: determinism by seed, ground truth recomputed independently, no ties."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from contextbox.bench.tasks import generate, spread

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "trec").is_dir(), reason="shared data not present")
COARSE = {"DESC": "description", "ENTY": "entity", "HUM": "human", "NUM": "numeric", "LOC": "location",
          "ABBR": "abbreviation"}


def _key(tasks):
    return [(t.id, t.question, t.gold, t.context) for t in tasks]


@needs_data
@pytest.mark.parametrize("suite,lengths", [("sniah", [8000, 20000]), ("needle-novel", [50000]),
                                           ("oolong", [8000]), ("oolong-pairs", [8000]), ("logs", [16000]),
                                           ("detective", None)])
def test_deterministic_by_seed(suite, lengths):
    a = generate(suite, 3, 5, lengths, DATA)
    b = generate(suite, 3, 5, lengths, DATA)
    c = generate(suite, 3, 6, lengths, DATA)
    assert _key(a) == _key(b)
    assert _key(a) != _key(c)


def test_spread_depths():
    assert spread(1) == [0.5]
    assert spread(3) == [0.05, 0.5, 0.95]


@needs_data
def test_sniah_needle_once_at_evidence():
    for t in generate("sniah", 4, 1, [8000, 64000], DATA):
        a, b = t.evidence
        sentence = t.context[a:b]
        assert sentence == f"One of the special magic numbers for {t.meta['key']} is: {t.gold}."
        assert t.context.count(t.gold) == 1
        assert t.meta["key"] in t.question
        assert abs(a / len(t.context) - t.depth) < 0.05
        assert 0.9 * t.length <= len(t.context) <= t.length + 200


@needs_data
def test_needle_novel_fact_in_war_and_peace():
    novel = (DATA / "war_and_peace.txt").read_text(encoding="utf-8")
    for t in generate("needle-novel", 3, 0, None, DATA):
        a, b = t.evidence
        assert str(t.gold) in t.context[a:b]
        assert t.context.lower().count(str(t.gold).lower()) == 1
        assert len(t.context) > len(novel)
        assert abs(a / len(t.context) - t.depth) < 0.01
    assert [t.depth for t in generate("needle-novel", 3, 0, None, DATA)] == [0.05, 0.5, 0.95]


def _trec_labels() -> dict[str, str]:
    """question text -> label, read straight from the TREC files (not through the generator)."""
    out = {}
    for f in ("train_5500.label", "TREC_10.label"):
        for line in (DATA / "trec" / f).read_text(encoding="utf-8").splitlines():
            m = re.match(r"^([A-Z]+):\S+ (.*)$", line)
            out[" ".join(m.group(2).split())] = COARSE[m.group(1)]
    return out


def _records(context: str) -> list[tuple[datetime, int, str]]:
    labels = _trec_labels()
    rows = []
    for line in context.splitlines():
        m = re.match(r"^Date: (\w{3} \d\d, \d{4}) \|\| User: (\d+) \|\| Instance: (.*)$", line)
        assert m, line
        rows.append((datetime.strptime(m.group(1), "%b %d, %Y"), int(m.group(2)), labels[m.group(3)]))
    return rows


@needs_data
def test_oolong_gold_recomputed_independently():
    tasks = generate("oolong", 12, 3, [8000, 32000], DATA)
    assert {t.meta["qtype"] for t in tasks} >= {"count", "most", "least", "user_count", "compare_before",
                                                "count_after"}
    for t in tasks:
        rows = _records(t.context)
        counts = Counter(lab for _, _, lab in rows)
        q, m = t.meta["qtype"], t.meta
        if q == "count":
            assert t.gold == counts[m["label"]]
            assert f"'{m['label']}'" in t.question
        elif q in ("most", "least"):
            ranked = counts.most_common() if q == "most" else sorted(
                ((lab, counts[lab]) for lab in COARSE.values()), key=lambda x: x[1])
            assert ranked[0][1] != ranked[1][1], "tie where a unique answer is asked"
            assert t.gold == ranked[0][0]
        elif q == "user_count":
            assert t.gold == sum(1 for _, u, lab in rows if u == m["user"] and lab == m["label"])
            assert str(m["user"]) in t.question
        elif q == "compare_before":
            cut = datetime.fromisoformat(m["date"])
            c = Counter(lab for d, _, lab in rows if d < cut)
            a, b = m["labels"]
            assert c[a] != c[b]
            assert t.gold == (a if c[a] > c[b] else b)
            assert cut.strftime("%b %d, %Y") in t.question
        else:
            cut = datetime.fromisoformat(m["date"])
            assert t.gold == sum(1 for d, _, lab in rows if d > cut and lab == m["label"])


@needs_data
def test_oolong_pairs_gold_recomputed_independently():
    for t in generate("oolong-pairs", 3, 2, [8000, 32000], DATA):
        rows = _records(t.context)
        cond = t.meta["condition"]
        per = Counter(u for _, u, lab in rows if lab in cond["labels"])
        users = sorted({u for _, u, _ in rows if per[u] >= cond["at_least"]})
        assert [list(p) for p in itertools.combinations(users, 2)] == t.gold
        assert 1 <= len(t.gold) < len(list(itertools.combinations({u for _, u, _ in rows}, 2)))


@needs_data
def test_logs_gold_recomputed_independently_and_no_ties():
    for t in generate("logs", 4, 0, [16000, 64000], DATA):
        errs, ips, rts, words = Counter(), set(), [], Counter()
        for line in t.context.splitlines():
            parts = line.split('"')
            head, msg = parts[0].split(), parts[1]
            ips.add(head[3])
            rts.append(int(head[7].removesuffix("ms")))
            if head[2] == "ERROR":
                errs[head[8]] += 1
            words.update(w for w in msg.split() if w not in {"the", "a", "to", "of", "and", "in", "for", "on",
                                                            "is", "was", "with", "by", "from"})
        q = t.meta["qtype"]
        if q == "error_ranking":
            assert len(set(errs.values())) == len(errs), "tied error counts"
            assert t.gold == [e for e, _ in sorted(errs.items(), key=lambda x: -x[1])]
        elif q == "unique_ips":
            assert t.gold == len(ips)
        elif q == "percentiles":
            s = sorted(rts)
            assert t.gold == {f"p{p}": s[math.ceil(p * len(s) / 100) - 1] for p in (50, 95, 99)}
        else:
            top = words.most_common(6)
            assert len({c for _, c in top}) == 6, "tie among the top words"
            assert t.gold == [w for w, _ in top[:5]]


def _solve(context: str) -> str:
    """An independent solver: matches the clue ∩ alibi broken by a witness alone in the claimed room."""
    forensic = re.search(r"FORENSIC NOTE\.[^\n]*", context).group(0)
    value = re.search(r"size (\d+) boots|thread of (\w+) wool|from a ([\w ]+?) cigar", forensic)
    v = next(g for g in value.groups() if g)
    attrs = re.findall(r"([A-Z][a-z]+ [A-Z][a-z]+) (?:wears size|wore a|smokes only) ([\w ]+?)(?: boots| wool| cigars)",
                       context)
    matching = {name for name, a in attrs if a == v}
    claims = dict(re.findall(r"STATEMENT OF ([A-Z]+ [A-Z]+)\. \"From nine until ten I was in the ([a-z ]+)\.",
                             context))
    alone = set(re.findall(r"I was in the ([a-z ]+) the whole time from nine until ten, and I was alone", context))
    broken = {n.title() for n, room in claims.items() if room in alone}
    (culprit,) = matching & broken
    assert len(matching) == 2 and len(broken) == 2
    return culprit


@needs_data
def test_detective_culprit_follows_from_evidence():
    tasks = generate("detective", 12, 0, None, DATA) + generate("detective", 2, 1, [40000], DATA)
    for t in tasks:
        assert _solve(t.context) == t.gold
        assert t.context.count("STATEMENT OF") == 10
