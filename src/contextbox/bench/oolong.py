"""OOLONG-style aggregation over TREC questions: ``oolong`` and ``oolong-pairs``.

The context is one record a line, ``Date: Mon DD, YYYY || User: NNNNN || Instance: <question>``,
built from the TREC question-classification files. The labels (TREC coarse classes) are not in
the context: the model has to infer each instance's label from its question, then aggregate.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .tasks import Task, data_dir, register

LABELS = {"DESC": "description", "ENTY": "entity", "HUM": "human", "NUM": "numeric", "LOC": "location",
          "ABBR": "abbreviation"}
LABEL_NAMES = list(LABELS.values())
TREC_FILES = ["train_5500.label", "TREC_10.label"]
START, DAYS = dt.date(2022, 1, 1), 3 * 365
#: 32k characters (~8k tokens) fits the local model's 16k-token window; 128k (~32k tokens) does not
OOLONG_LENGTHS = [32_000, 128_000]
PAIRS_LENGTHS = [32_000]
DATE_FMT = "%b %d, %Y"

PREAMBLE = (
    "The context lists records, one per line: 'Date: ... || User: ... || Instance: <a question>'. "
    "Each instance is a general-knowledge question that belongs to exactly one of six labels, by the kind "
    "of answer it asks for: description (a description, definition, reason or manner), entity (a thing, "
    "object, animal, substance, event, ...), human (a person or a group of people), numeric (a number, date, "
    "amount, distance, ...), location (a place), abbreviation (an abbreviation or its expansion). "
    "The labels are not written in the context; infer them from the questions. "
)


def load_trec(data: Path | None = None) -> list[tuple[str, str]]:
    """(question, label name) pairs from the TREC files, each question once."""
    root = data_dir(data) / "trec"
    seen: dict[str, str] = {}
    for name in TREC_FILES:
        path = root / name
        if not path.is_file():
            raise UsageError(f"TREC file not found: {path}")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            head, _, text = line.partition(" ")
            coarse = head.split(":", 1)[0]
            text = " ".join(text.split()).replace("||", "|")
            if coarse in LABELS and text and text not in seen:
                seen[text] = LABELS[coarse]
    return sorted(seen.items())


def make_records(length: int, rng: random.Random, pool: list[tuple[str, str]], n_users: int | None = None,
                 users_per_record: int = 10) -> list[dict[str, Any]]:
    """Records until their lines reach ``length`` characters."""
    order = list(range(len(pool)))
    rng.shuffle(order)
    est = max(10, length // 75)
    n_users = n_users or max(5, min(50, est // users_per_record))
    users = sorted(rng.sample(range(10_000, 99_999), n_users))
    recs: list[dict[str, Any]] = []
    total = 0
    k = 0
    while total < length:
        q, label = pool[order[k % len(order)]]
        k += 1
        date = START + dt.timedelta(days=rng.randrange(DAYS))
        rec = {"date": date, "user": rng.choice(users), "question": q, "label": label}
        total += len(format_record(rec)) + 1
        recs.append(rec)
    return recs


def format_record(r: dict[str, Any]) -> str:
    return f"Date: {r['date'].strftime(DATE_FMT)} || User: {r['user']} || Instance: {r['question']}"


def _unique_extreme(counts: Counter[str], most: bool) -> str | None:
    ranked = sorted(LABEL_NAMES, key=lambda lab: counts[lab], reverse=most)
    return ranked[0] if counts[ranked[0]] != counts[ranked[1]] else None


def oolong_question(qtype: int, recs: list[dict[str, Any]], rng: random.Random) -> tuple[str, Any, str, dict] | None:
    """(question, gold, scorer kind, params) for question type ``qtype``, or None when it would tie."""
    counts = Counter(r["label"] for r in recs)
    users = sorted({r["user"] for r in recs})
    label = rng.choice(LABEL_NAMES[:5])  # abbreviation is too rare to count well
    if qtype == 0:
        return (f"How many instances should be labelled '{label}'? Answer with the number only.",
                counts[label], "numeric", {"qtype": "count", "label": label})
    if qtype in (1, 3):
        most = qtype == 1
        gold = _unique_extreme(counts, most)
        if gold is None:
            return None
        word = "most" if most else "least"
        return (f"Which label is the {word} frequent among all instances? Answer with the label only.",
                gold, "label", {"qtype": "most" if most else "least"})
    if qtype == 2:
        user = rng.choice(users)
        gold = sum(1 for r in recs if r["user"] == user and r["label"] == label)
        return (f"How many instances from user {user} should be labelled '{label}'? Answer with the number only.",
                gold, "numeric", {"qtype": "user_count", "label": label, "user": user})
    dates = sorted(r["date"] for r in recs)
    cut = dates[len(dates) // 2]
    before = qtype == 4
    sel = [r for r in recs if (r["date"] < cut if before else r["date"] > cut)]
    c = Counter(r["label"] for r in sel)
    if qtype == 4:
        a, b = rng.sample(LABEL_NAMES[:5], 2)
        if c[a] == c[b]:
            return None
        gold = a if c[a] > c[b] else b
        return (f"Among the instances dated before {cut.strftime(DATE_FMT)}, which label is more common: "
                f"'{a}' or '{b}'? Answer with the label only.", gold, "label",
                {"qtype": "compare_before", "labels": [a, b], "date": cut.isoformat()})
    return (f"How many instances dated after {cut.strftime(DATE_FMT)} should be labelled '{label}'? "
            "Answer with the number only.", c[label], "numeric",
            {"qtype": "count_after", "label": label, "date": cut.isoformat()})


@register("oolong", OOLONG_LENGTHS)
def oolong(n: int, seed: int, lengths: list[int] | None, data: Path | None) -> list[Task]:
    """``n`` questions per length over one record set per length (count, most/least, per user, by date)."""
    pool = load_trec(data)
    tasks: list[Task] = []
    for length in lengths or OOLONG_LENGTHS:
        rng = random.Random(f"oolong:{seed}:{length}")
        recs = make_records(length, rng, pool)
        context = "\n".join(format_record(r) for r in recs) + "\n"
        for i in range(n):
            made = None
            for t in range(6):
                made = oolong_question((i + t) % 6, recs, rng)
                if made is not None:
                    break
            assert made is not None  # type 0 never ties
            q, gold, kind, params = made
            tasks.append(Task("oolong", f"oolong-{length}-{i}", PREAMBLE + q, context, gold, kind, length,
                              meta={**params, "records": len(recs)}))
    return tasks


def qualifying_users(recs: list[dict[str, Any]], cond: dict[str, Any]) -> list[int]:
    """Users meeting ``cond`` (``labels``: any of them, ``at_least``: this many such instances)."""
    per: Counter[int] = Counter()
    for r in recs:
        if r["label"] in cond["labels"]:
            per[r["user"]] += 1
    return sorted(u for u in {r["user"] for r in recs} if per[u] >= cond["at_least"])


def _pairs_condition(recs: list[dict[str, Any]], rng: random.Random, max_q: int,
                     used: list[dict[str, Any]]) -> dict[str, Any]:
    """A condition that 2..max_q users meet: "at least one" conditions first, then count thresholds
    that split the users strictly; an unused one while any remains."""
    users = {r["user"] for r in recs}
    ones: list[dict[str, Any]] = [{"labels": [lab], "at_least": 1} for lab in LABEL_NAMES]
    ones += [{"labels": sorted(p), "at_least": 1} for p in itertools.combinations(LABEL_NAMES, 2)]
    rng.shuffle(ones)
    thresholds: list[dict[str, Any]] = []
    for lab in LABEL_NAMES[:5]:
        per = Counter(r["user"] for r in recs if r["label"] == lab)
        vals = sorted((per[u] for u in users), reverse=True)
        for q in range(2, min(max_q, len(vals) - 1) + 1):
            if vals[q - 1] > vals[q] and vals[q - 1] > 1:
                thresholds.append({"labels": [lab], "at_least": vals[q - 1]})
    rng.shuffle(thresholds)
    valid = [c for c in ones + thresholds if 2 <= len(qualifying_users(recs, c)) <= min(len(users) - 1, max_q)]
    if not valid:
        raise AssertionError("no splitting condition")  # pragma: no cover - needs all users alike
    return next((c for c in valid if c not in used), valid[0])


def describe_condition(cond: dict[str, Any]) -> str:
    labs = " or ".join(f"'{lab}'" for lab in cond["labels"])
    k = cond["at_least"]
    return f"at least {k} instance{'s' if k > 1 else ''} labelled {labs}"


@register("oolong-pairs", PAIRS_LENGTHS)
def oolong_pairs(n: int, seed: int, lengths: list[int] | None, data: Path | None) -> list[Task]:
    """List the user pairs where both users meet a label condition; gold is the sorted pair list."""
    pool = load_trec(data)
    tasks: list[Task] = []
    for length in lengths or PAIRS_LENGTHS:
        rng = random.Random(f"oolong-pairs:{seed}:{length}")
        recs = make_records(length, rng, pool, n_users=max(6, min(24, length // 75 // 8)))
        context = "\n".join(format_record(r) for r in recs) + "\n"
        used: list[dict[str, Any]] = []
        for i in range(n):
            cond = _pairs_condition(recs, rng, 10, used)
            used.append(cond)
            qual = qualifying_users(recs, cond)
            gold = [list(p) for p in itertools.combinations(qual, 2)]
            q = (PREAMBLE + f"List every pair of user IDs where both users have {describe_condition(cond)}. "
                 "Write each pair once as (smaller ID, larger ID), one pair per line, and nothing else.")
            tasks.append(Task("oolong-pairs", f"oolong-pairs-{length}-{i}", q, context, gold, "pairs", length,
                              meta={"qtype": "pairs", "condition": cond, "records": len(recs)}))
    return tasks
