"""``rlm demo logs``: the seed's log-analytics demo on a generated log with known answers.

The queries of the seed's ``demo_large_logs.json`` and ``log_counting.json`` — the error types ranked
with counts, the number of unique IPs, the 10 most active IPs, the ERROR lines — plus p50/p95/p99
response times, on a 5,000-line log made by :func:`contextbox.bench.logs.make_log`. The ground truth is
recomputed from the log text alone (:func:`ground_truth`), never from the generator's intentions.
Each question is one run. With the embedded model the runs use L1 (the engine's table ops: the model
picks ``extract`` → ``count_by``/``unique``/``stats`` → ``final``); with an API model L1 + L2 code.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..bench.logs import LINE_RE, Lines, log_facts, logs_question, make_log
from ..bench.scoring import first_int, score_percentiles, score_ranking, score_topk
from .common import Check, Outcome, is_local, make_rlm, report, run_share

DEFAULT_LINES = 5000
_IP_COUNT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3})\D{0,40}?(\d[\d,]*)")


def ground_truth(text: str) -> dict[str, Any]:
    """Everything the questions ask, computed from the text: :func:`log_facts` plus IP and level counts."""
    facts = log_facts(text)
    ips: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    for line in text.splitlines():
        m = LINE_RE.match(line)
        if m:
            ips[m.group(3)] += 1
            levels[m.group(2)] += 1
    facts["ip_counts"] = dict(ips)
    facts["top_ips"] = ips.most_common(10)
    facts["error_lines"] = levels["ERROR"]
    return facts


def score_top_ips(answer: str, ip_counts: dict[str, int], k: int = 10) -> float:
    """Each of the first ``k`` (IP, count) pairs of the answer is right when the count is the IP's exact
    count and the IP is among the ``k`` most active (ties at the ``k``-th count accepted either way)."""
    cut = sorted(ip_counts.values(), reverse=True)[k - 1] if len(ip_counts) >= k else 0
    seen: set[str] = set()
    right = 0
    for m in _IP_COUNT.finditer(answer):
        ip, n = m.group(1), int(m.group(2).replace(",", ""))
        if ip in seen:
            continue
        seen.add(ip)
        if ip_counts.get(ip) == n and n >= cut:
            right += 1
        if len(seen) == k:
            break
    return right / k


def exact_int(answer: str, gold: int) -> float:
    return 1.0 if first_int(answer) == gold else 0.0


Question = tuple[str, str, str, Callable[[str], float]]  # (what, question, expected, scorer)


def questions(facts: dict[str, Any], words: bool = False) -> list[Question]:
    """The demo's questions with their exact answers and scorers."""
    q_rank, gold_rank, _, meta = logs_question(0, facts)
    q_ips = "How many unique IP addresses appear in these logs? Answer with the number only."
    q_top = ("List the 10 most active IP addresses (the third field of each line) with the number of lines of "
             "each, most active first. Answer as 'IP: count' items.")
    q_pct = logs_question(2, facts)[0]
    q_err = "How many ERROR lines are in this log? Answer with the number only."
    pct = {"p50": facts["p50"], "p95": facts["p95"], "p99": facts["p99"]}
    out: list[Question] = [
        ("error ranking", q_rank, ", ".join(f"{e}: {facts['error_counts'][e]}" for e in gold_rank),
         lambda a: score_ranking(a, gold_rank, meta)),
        ("unique IPs", q_ips, str(facts["unique_ips"]), lambda a: exact_int(a, facts["unique_ips"])),
        ("top 10 IPs", q_top, ", ".join(f"{ip}: {n}" for ip, n in facts["top_ips"]),
         lambda a: score_top_ips(a, facts["ip_counts"])),
        ("p50/p95/p99", q_pct, ", ".join(f"{k}={v}" for k, v in pct.items()),
         lambda a: score_percentiles(a, pct, {})),
        ("ERROR lines", q_err, str(facts["error_lines"]), lambda a: exact_int(a, facts["error_lines"])),
    ]
    if words:
        q_words, gold_words, _, wmeta = logs_question(3, facts)
        out.append(("top 5 words", q_words, ", ".join(gold_words), lambda a: score_topk(a, gold_words, wmeta)))
    return out


def generate(lines: int, seed: int) -> str:
    text, _ = make_log(Lines(lines), random.Random(f"demo-logs:{seed}:{lines}"))
    return text


def ask_all(args: argparse.Namespace, demo: str, text: str, qs: list[Question], levels: str | None,
            plan: str) -> Outcome:
    """One run per question on ``text``; each answer scored by its question's scorer."""
    from ..context import Context

    limits = {"max_iterations": args.max_iterations} if args.max_iterations else None
    rlm = make_rlm(args, levels=levels, limits=limits)
    print(f"{demo}: {text.count(chr(10)):,} log lines ({len(text):,} characters); model {rlm.root.name}, "
          f"levels {','.join(rlm.levels)}", file=sys.stderr)
    ctx = Context.from_documents([("service.log", text)])
    t0 = time.monotonic()
    checks, results = [], []
    for what, q, expected, scorer in qs:
        res = rlm.run(q, ctx)
        answer = (res.answer or "").strip() if res.status == "answered" else ""  # a partial answer scores 0
        got = " ".join(answer.split())[:200] or f"(no answer: {res.status})"
        checks.append(Check(what, expected, got, scorer(answer) if answer else 0.0))
        results.append(res)
        print(f"  {what}: {res.status} in {res.iterations} iteration(s), run {res.run_id}", file=sys.stderr)
    return Outcome(demo, checks, results, len(ctx.text), plan,
                   f"root {rlm.root.name}, sub {rlm.sub.name}; levels {','.join(rlm.levels)}",
                   run_share(results, len(ctx.text)), time.monotonic() - t0)


def levels_for(args: argparse.Namespace, code_level: str) -> tuple[str | None, str]:
    """The local model drives L1 table ops (it cannot write code reliably); API models write code."""
    if is_local(args.model):
        return "l1", "the root model picks L1 table ops; the engine computes them exactly"
    return f"l1,{code_level}", f"the root model writes {code_level.upper()} code"


def run_demo(args: argparse.Namespace) -> int:
    lines = args.lines or DEFAULT_LINES
    text = generate(lines, args.seed)
    levels, plan = levels_for(args, "l2")
    out = ask_all(args, "logs", text, questions(ground_truth(text)), levels, plan)
    return report(out, args.json)

