"""Bench generators: determinism by seed, ground truth recomputed independently, no ties."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from datetime import datetime

import pytest
from conftest import shared_data_dir

from contextbox.bench.tasks import DEFAULT_LENGTHS, Lines, generate, parse_length, spread
from contextbox.errors import UsageError

COARSE = {"DESC": "description", "ENTY": "entity", "HUM": "human", "NUM": "numeric", "LOC": "location",
          "ABBR": "abbreviation"}


def _key(tasks):
    return [(t.id, t.question, t.gold, t.context) for t in tasks]


@pytest.mark.parametrize("suite,lengths", [("sniah", [8000, 20000]), ("needle-novel", [50000]),
                                           ("oolong", [8000]), ("oolong-pairs", [8000]), ("logs", [16000]),
                                           ("logs", [Lines(500)]), ("detective", None)])
def test_deterministic_by_seed(suite, lengths, bench_data):
    a = generate(suite, 3, 5, lengths, bench_data)
    b = generate(suite, 3, 5, lengths, bench_data)
    c = generate(suite, 3, 6, lengths, bench_data)
    assert _key(a) == _key(b)
    assert _key(a) != _key(c)


def test_spread_depths():
    assert spread(1) == [0.5]
    assert spread(3) == [0.05, 0.5, 0.95]


def test_sniah_needle_once_at_evidence(bench_data):
    for t in generate("sniah", 4, 1, [8000, 64000], bench_data):
        a, b = t.evidence
        sentence = t.context[a:b]
        assert sentence == f"One of the special magic numbers for {t.meta['key']} is: {t.gold}."
        assert t.context.count(t.gold) == 1
        assert t.meta["key"] in t.question
        assert abs(a / len(t.context) - t.depth) < 0.05
        assert 0.9 * t.length <= len(t.context) <= t.length + 200


def test_needle_novel_fact_in_war_and_peace(bench_data):
    novel = (bench_data / "war_and_peace.txt").read_text(encoding="utf-8")
    for t in generate("needle-novel", 3, 0, None, bench_data):
        a, b = t.evidence
        assert str(t.gold) in t.context[a:b]
        assert t.context.lower().count(str(t.gold).lower()) == 1
        assert len(t.context) > len(novel)
        assert abs(a / len(t.context) - t.depth) < 0.01
    assert [t.depth for t in generate("needle-novel", 3, 0, None, bench_data)] == [0.05, 0.5, 0.95]


def _trec_labels() -> dict[str, str]:
    """question text -> label, read straight from the TREC files (not through the generator)."""
    out = {}
    for f in ("train_5500.label", "TREC_10.label"):
        for line in (shared_data_dir() / "trec" / f).read_text(encoding="utf-8").splitlines():
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


def test_oolong_gold_recomputed_independently(bench_data):
    tasks = generate("oolong", 12, 3, [8000, 32000], bench_data)
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


def test_oolong_pairs_gold_recomputed_independently(bench_data):
    for t in generate("oolong-pairs", 3, 2, [8000, 32000], bench_data):
        rows = _records(t.context)
        cond = t.meta["condition"]
        per = Counter(u for _, u, lab in rows if lab in cond["labels"])
        users = sorted({u for _, u, _ in rows if per[u] >= cond["at_least"]})
        assert [list(p) for p in itertools.combinations(users, 2)] == t.gold
        assert 1 <= len(t.gold) < len(list(itertools.combinations({u for _, u, _ in rows}, 2)))


def test_logs_gold_recomputed_independently_and_no_ties(bench_data):
    for t in generate("logs", 4, 0, [16000, Lines(3000)], bench_data):
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
            assert t.meta["counts"] == dict(errs) and "count of each" in t.question
        elif q == "unique_ips":
            assert t.gold == len(ips)
        elif q == "percentiles":
            s = sorted(rts)
            assert t.gold == {f"p{p}": s[math.ceil(p * len(s) / 100) - 1] for p in (50, 95, 99)}
            assert "whole milliseconds" in t.question and "no interpolation or rounding" in t.question
        else:
            top = words.most_common(6)
            assert len({c for _, c in top}) == 6, "tie among the top words"
            assert t.gold == [w for w, _ in top[:5]]
            assert t.meta["ordered"] and "most frequent first" in t.question


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


def test_detective_culprit_follows_from_evidence(bench_data):
    tasks = generate("detective", 6, 0, None, bench_data) + generate("detective", 6, 1, [0, 40000], bench_data)
    for t in tasks:
        assert _solve(t.context) == t.gold
        assert t.context.count("STATEMENT OF") == 10


def test_detective_default_case_file_is_past_the_window_and_spread(bench_data):
    """The default case file is > 80k characters (> 16k tokens), mostly distractors, with the evidence
    spread from start to end; the distractors never speak of the hour of the death or of anyone alone."""
    evidence = re.compile(r"^(POLICE REPORT|FORENSIC NOTE|INSPECTOR'S NOTES|STATEMENT OF)")
    for t in generate("detective", 3, 4, None, bench_data):
        assert len(t.context) > 80_000 and t.length == 100_000
        docs = t.context.split("\n\n")
        core = [i for i, d in enumerate(docs) if evidence.match(d)]
        assert len(core) == 13 and len(docs) - len(core) > 100 and t.meta["documents"] == len(docs)
        assert core[0] == 0 and core[1] < 0.1 * len(docs) and core[-1] > 0.9 * len(docs)
        for i, d in enumerate(docs):
            if i not in core:
                assert not re.search(r"\b(nine|ten)\b|alone|STATEMENT OF|wears size|wore a|smokes only", d), d
        assert sum(t.context.count(s) for s in t.meta["suspects"]) > 100  # the names are everywhere


def test_default_lengths_are_past_the_local_window():
    assert DEFAULT_LENGTHS["oolong"] == [32_000, 128_000]
    assert DEFAULT_LENGTHS["oolong-pairs"] == [32_000]
    assert DEFAULT_LENGTHS["logs"] == [Lines(20_000)]
    assert DEFAULT_LENGTHS["detective"] == [100_000]


def test_logs_default_is_20000_lines(bench_data):
    (t,) = generate("logs", 1, 0, None, bench_data)
    assert t.context.count("\n") == 20_000 == t.meta["lines"]
    assert 1_600_000 < len(t.context) < 2_400_000 and t.length == len(t.context)
    assert t.id == "logs-20000l-0"


def test_length_specs():
    assert parse_length("20000l") == 20_000 and isinstance(parse_length("20000l"), Lines)
    assert repr(parse_length("20000L")) == "20000l"
    assert parse_length("512k") == 512_000 and not isinstance(parse_length("512k"), Lines)
    for bad in ("20x00l", "50l", "12q"):
        with pytest.raises(UsageError):
            parse_length(bad)
    with pytest.raises(UsageError, match="in lines"):
        generate("oolong", 1, 0, [Lines(1000)])


def test_oolong_512k(bench_data):
    (t,) = generate("oolong", 1, 0, [parse_length("512k")], bench_data)
    assert 512_000 <= len(t.context) < 512_300 and t.meta["records"] > 5000
