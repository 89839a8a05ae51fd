"""``logs``: the seed's log analytics over generated access logs.

A line: ``2024-03-01 08:00:01 LEVEL IP METHOD PATH STATUS RTms [ErrorType] "message words"``.
Questions: rank the error types with their counts, count unique IPs, p50/p95/p99 response time
(nearest rank, whole milliseconds), the top words of the messages in order, without stop words.
Counts are built so that no ranking ties. The default log is 20,000 lines (about 1.8 MB, ~450k tokens:
about 27 times the 16k-token window of the local model); ``--lengths`` takes characters (``256k``)
or lines (``20000l``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from .tasks import Lines, Task, format_length, register

ERROR_TYPES = ["AuthenticationFailed", "DatabaseError", "NetworkTimeout", "DiskFull", "RateLimited"]
STOP_WORDS = ["the", "a", "to", "of", "and", "in", "for", "on", "is", "was", "with", "by", "from"]
CONTENT = ["cache", "order", "session", "payment", "user", "request", "token", "invoice", "profile", "queue",
           "report", "upload", "search", "cart", "stock", "email", "refund", "shipment", "review", "coupon",
           "account", "export", "import", "ticket", "backup", "quota", "webhook", "channel", "metric", "batch"]
PATHS = ["/api/orders", "/api/users", "/api/login", "/api/cart", "/api/search", "/api/reports", "/health"]
LEVELS = ["INFO", "DEBUG", "WARN"]
LOG_LENGTHS: list[int] = [Lines(20_000)]
LINE_RE = re.compile(r'^(\S+ \S+) (\w+) (\S+) (\w+) (\S+) (\d+) (\d+)ms (?:(\w+) )?"([^"]*)"$')


def _distinct_counts(total: int, k: int, rng: random.Random) -> list[int]:
    """``k`` distinct positive counts in falling order that sum to about ``total``."""
    weights = sorted((rng.uniform(0.5, 3.0) for _ in range(k)), reverse=True)
    s = sum(weights)
    counts = [max(1, round(total * w / s)) for w in weights]
    for i in range(1, k):  # strictly falling: no ties
        if counts[i] >= counts[i - 1]:
            counts[i] = counts[i - 1] - 1
    base = max(0, 1 - counts[-1])
    return [c + base for c in counts]


def _messages(n_lines: int, rng: random.Random) -> tuple[list[str], dict[str, int]]:
    """One message per line; the top content-word counts are distinct by construction."""
    words = CONTENT[:]
    rng.shuffle(words)
    top = _distinct_counts(int(n_lines * 1.2), 6, rng)
    top = [c + 6 - i for i, c in enumerate(top)]  # keep gaps
    counts = dict(zip(words[:6], top, strict=True))
    cap = max(1, top[-1] - 2)
    for w in words[6:]:
        counts[w] = rng.randint(1, cap)
    tokens = [w for w, c in counts.items() for _ in range(c)]
    tokens += [rng.choice(STOP_WORDS) for _ in range(n_lines * 2)]
    rng.shuffle(tokens)
    msgs: list[list[str]] = [[] for _ in range(n_lines)]
    for i, t in enumerate(tokens):
        msgs[i % n_lines if i < n_lines else rng.randrange(n_lines)].append(t)
    return [" ".join(m) for m in msgs], counts


def make_log(length: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A log of about ``length`` characters (exactly ``length`` lines for :class:`Lines`) and its facts."""
    n = int(length) if isinstance(length, Lines) else max(50, length // 90)
    n_err = max(len(ERROR_TYPES) * 3, n // 12)
    err_counts = _distinct_counts(n_err, len(ERROR_TYPES), rng)
    etypes = ERROR_TYPES[:]
    rng.shuffle(etypes)
    errors = [e for e, c in zip(etypes, err_counts, strict=True) for _ in range(c)]
    n = max(n, len(errors) + 10)
    kinds = errors + [None] * (n - len(errors))
    rng.shuffle(kinds)
    n_ips = max(5, n // 6)
    ip_pool = [f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(n_ips)]
    # cumulative once: ``choices(pool, weights)`` re-sums all the weights on every call (1M lines x 166k IPs
    # took the native demo's generator hours); the same draws, the same log
    ip_cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.8 for i in range(n_ips)))
    msgs, _ = _messages(n, rng)
    t = dt.datetime(2024, 3, 1, 8, 0, 0)
    lines = []
    for kind, msg in zip(kinds, msgs, strict=True):
        t += dt.timedelta(seconds=rng.randint(0, 9))
        ip = rng.choices(ip_pool, cum_weights=ip_cum)[0]
        rt = min(9000, max(2, int(rng.lognormvariate(4.6, 0.8))))
        if kind:
            status = {"AuthenticationFailed": 401, "RateLimited": 429}.get(kind, 500)
            head = f"ERROR {ip} {rng.choice(['GET', 'POST'])} {rng.choice(PATHS)} {status} {rt}ms {kind}"
        else:
            head = f"{rng.choice(LEVELS)} {ip} {rng.choice(['GET', 'POST'])} {rng.choice(PATHS)} 200 {rt}ms"
        lines.append(f'{t:%Y-%m-%d %H:%M:%S} {head} "{msg}"')
    text = "\n".join(lines) + "\n"
    return text, log_facts(text)


def log_facts(text: str) -> dict[str, Any]:
    """The ground truth, recomputed from the log text alone."""
    errs: Counter[str] = Counter()
    ips: set[str] = set()
    rts: list[int] = []
    words: Counter[str] = Counter()
    stop = set(STOP_WORDS)
    for line in text.splitlines():
        m = LINE_RE.match(line)
        if not m:
            continue
        ips.add(m.group(3))
        rts.append(int(m.group(7)))
        if m.group(8):
            errs[m.group(8)] += 1
        words.update(w for w in m.group(9).lower().split() if w not in stop)
    rts.sort()

    def pct(p: int) -> int:
        return rts[max(0, math.ceil(p / 100 * len(rts)) - 1)]

    return {"error_ranking": [e for e, _ in errs.most_common()], "error_counts": dict(errs),
            "unique_ips": len(ips), "p50": pct(50), "p95": pct(95), "p99": pct(99),
            "top_words": [w for w, _ in words.most_common(5)], "word_counts": dict(words.most_common(8))}


def logs_question(qtype: int, facts: dict[str, Any]) -> tuple[str, Any, str, dict[str, Any]]:
    """(question, gold, scorer kind, scorer meta): the meta says what the question asks for (counts, order)."""
    if qtype == 0:
        return ("Rank the error types (the word after the response time on ERROR lines) from most to least "
                "frequent, with the count of each. Answer as 'Type: count' items, most frequent first.",
                facts["error_ranking"], "ranking", {"counts": facts["error_counts"]})
    if qtype == 1:
        return ("How many unique IP addresses appear in these logs? Answer with the number only.",
                facts["unique_ips"], "numeric", {})
    if qtype == 2:
        return ("What are the p50, p95 and p99 response times in milliseconds over all lines? Use nearest-rank "
                "percentiles of the 'NNNms' field: sort all N values, pN is the value at position ceil(N × p/100) "
                "(1-based), in whole milliseconds as written in the log, with no interpolation or rounding. "
                "Answer as 'p50=N, p95=N, p99=N'.",
                {"p50": facts["p50"], "p95": facts["p95"], "p99": facts["p99"]}, "percentiles", {})
    stop = ", ".join(STOP_WORDS)
    return ("What are the 5 most frequent words in the quoted messages at the end of the lines, ignoring these "
            f"stop words: {stop}? Answer with the 5 words, most frequent first, separated by commas.",
            facts["top_words"], "topk", {"ordered": True})


@register("logs", LOG_LENGTHS, lines=True)
def logs(n: int, seed: int, lengths: list[int] | None, data: Path | None) -> list[Task]:
    """``n`` questions per length over one generated log per length (characters, or :class:`Lines`)."""
    tasks: list[Task] = []
    for length in lengths or LOG_LENGTHS:
        rng = random.Random(f"logs:{seed}:{format_length(length)}")
        text, facts = make_log(length, rng)
        lines = text.count("\n")
        for i in range(n):
            qtype = (seed + i) % 4
            q, gold, kind, extra = logs_question(qtype, facts)
            tasks.append(Task("logs", f"logs-{format_length(length)}-{i}", q, text, gold, kind,
                              len(text) if isinstance(length, Lines) else length,
                              meta={"qtype": ["error_ranking", "unique_ips", "percentiles", "top_words"][qtype],
                                    "lines": lines, **extra}))
    return tasks
