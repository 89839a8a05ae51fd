"""``rlm demo war-and-peace``: hide a password in War and Peace and ask for it.

The text comes from ``--text``, else ``$CONTEXTBOX_DATA/war_and_peace.txt``, else
``../shared/data/war_and_peace.txt`` (beside the current directory or the source tree),
else a one-time download of Project Gutenberg #2600 into the cache directory
(:func:`contextbox.demos.common.find_text`).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from typing import Any

from ..errors import ContextError
from .common import find_text, read_share

log = logging.getLogger("contextbox")

WORDS = ["AMBER", "COBALT", "FALCON", "GRANITE", "HARBOR", "JUNIPER", "LANTERN", "MARBLE", "ORCHID", "SAFFRON"]
QUESTION = "What is the secret password to the old library? Answer with the password only."


def make_needle(seed: int) -> tuple[str, str]:
    rng = random.Random(seed)
    code = f"{rng.choice(WORDS)}-{rng.randint(1000, 9999)}"
    return f"The secret password to the old library is {code}.", code


def insert_needle(text: str, sentence: str, depth: float) -> tuple[str, int]:
    """Put ``sentence`` in its own paragraph at the first paragraph break after ``depth``."""
    if not 0.0 <= depth <= 1.0:
        raise ContextError(f"--depth must be between 0 and 1, got {depth}")
    pos = int(len(text) * depth)
    brk = text.find("\n\n", pos)
    pos = len(text) if brk < 0 else brk
    insert = f"\n\n{sentence}"
    return text[:pos] + insert + text[pos:], pos + 2


def run_needle(rlm: Any, text: str, seed: int, depth: float, keep_result: bool = False) -> dict[str, Any]:
    from ..context import Context

    sentence, code = make_needle(seed)
    hay, at = insert_needle(text, sentence, depth)
    t = time.monotonic()
    res = rlm.run(QUESTION, Context.from_value(hay))
    elapsed = time.monotonic() - t
    roles = res.usage.to_dict()["by_role"]
    return {
        "depth": depth, "seed": seed, "code": code, "answer": res.answer, "status": res.status,
        "correct": (res.answer or "").strip().strip(".").upper() == code,
        "contains": code in (res.answer or "").upper(), "iterations": res.iterations,
        "tokens_root": roles.get("root", {}).get("total_tokens", 0),
        "tokens_sub": roles.get("sub", {}).get("total_tokens", 0),
        "read_share": read_share(res.events, len(hay)), "seconds": round(elapsed, 2), "run_id": res.run_id,
        "needle_offset": at, "context_chars": len(hay), **({"result": res} if keep_result else {}),
    }


def run_demo(args: argparse.Namespace) -> int:
    from .common import Check, Outcome, make_rlm, report

    path = find_text(args.text)
    text = path.read_text(encoding="utf-8", errors="replace")
    t0 = time.monotonic()
    rlm = make_rlm(args, limits={"max_iterations": args.max_iterations} if args.max_iterations else None)
    load_s = time.monotonic() - t0
    print(f"War and Peace: {path} ({len(text):,} characters); model {rlm.root.name} "
          f"(ready in {load_s:.1f}s)", file=sys.stderr)
    r = run_needle(rlm, text, args.seed, args.depth, keep_result=True)
    res = r.pop("result")
    out = Outcome("war-and-peace", [Check("password", r["code"], str(r["answer"]), 1.0 if r["correct"] else 0.0)],
                  [res], r["context_chars"], "the root model designs the steps",
                  f"root {rlm.root.name}, sub {rlm.sub.name}", r["read_share"], r["seconds"],
                  [f"hidden at {args.depth:.0%} (character {r['needle_offset']:,}): \"...library is {r['code']}.\""],
                  data=r)
    return report(out, args.json)
