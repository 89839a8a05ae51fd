#!/usr/bin/env python3
"""Paraphrased needles in War and Peace: can ranked search find a fact asked in other words?

    .venv/bin/python bench/bench_paraphrase_needles.py            # the retrieval check
    .venv/bin/python bench/bench_paraphrase_needles.py --show     # also print the questions

Ten sentences are hidden in the novel (each on a line of its own, at depths 5 %, 15 %, …,
95 %), and each is asked about with a question that shares no 4-word phrase with it (checked
here), so a literal ``find`` of the question, or of any 4 consecutive words of it, finds
nothing. Most questions name the needle's rare proper noun (as a reader's question would);
two ask only in common words. The check: ``search(question, k=3)`` must rank the needle's
line in its top 3.

:func:`make_haystack` is the generator (text, needles with their line numbers, questions and
answers) for a run with a model; this script runs only the pure retrieval check.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

#: (hidden sentence, question in other words, answer)
NEEDLES = [
    ("The lighthouse keeper Arvid Lunde hid the spare key of the powder store inside a copper kettle.",
     "Where did the keeper of the lighthouse, Lunde, conceal the extra key to the gunpowder store?",
     "inside a copper kettle"),
    ("Colonel Brannigan's regiment wintered at the village of Zelenets, where the well water tasted of iron.",
     "In which village did Brannigan's regiment spend the winter?", "Zelenets"),
    ("Madame Orlinskaya kept forty-three canaries in her drawing room, each named after a saint.",
     "How many canaries did Orlinskaya keep, and whom were they named for?", "forty-three, after saints"),
    ("The courier Ferapontov rode from Tula to Kaluga in nineteen hours on a borrowed grey mare.",
     "How long did Ferapontov, the courier, need to ride between Tula and Kaluga?", "nineteen hours"),
    ("Every Thursday the bishop Malakhov played chess against his cook and lost on purpose.",
     "Who lost at chess on purpose every week?", "the bishop Malakhov"),
    ("Young Count Vyazemtsev owed the moneylender Shishkin eleven thousand roubles by Easter.",
     "What sum did Vyazemtsev have to pay back to Shishkin, the money lender?", "eleven thousand roubles"),
    ("The frigate Saint Evdokia sank off Reval with a cargo of Dutch tulip bulbs and brandy.",
     "What was the Saint Evdokia carrying when the frigate went down near Reval?", "Dutch tulip bulbs and brandy"),
    ("Doctor Helmreich cured the princess's fever with willow bark boiled in goat's milk.",
     "Which remedy did Helmreich, the doctor, use against the fever of the princess?",
     "willow bark boiled in goat's milk"),
    ("The Pavlograd quartermaster Yevstigneev sold the regiment's oats to a Jewish innkeeper in Brody.",
     "Who sold the oats of the regiment to an innkeeper?", "the quartermaster Yevstigneev"),
    ("On her name day Countess Zarubina received a music box that played the Marseillaise backwards.",
     "What gift did Zarubina get for her name day, and what tune did it play?",
     "a music box playing the Marseillaise backwards"),
]
#: what a right answer must contain (each item: alternatives, any one of them), case-insensitive
KEYS = [
    [("copper kettle", "kettle")], [("zelenets",)], [("forty-three", "forty three", "43"), ("saint",)],
    [("nineteen", "19")], [("malakhov",)], [("eleven thousand", "11,000", "11000", "11 000")],
    [("tulip",), ("brandy",)], [("willow",)], [("yevstigneev",)], [("music box",), ("marseillaise",)],
]
DEPTHS = [0.05 + 0.1 * i for i in range(10)]


def right(answer: str, k: int) -> bool:
    """Whether ``answer`` states needle ``k``'s fact (every key, in any of its spellings)."""
    a = answer.casefold()
    return all(any(alt in a for alt in alts) for alts in KEYS[k])
_W = re.compile(r"[^\W_]+")


def four_grams(s: str) -> set[tuple[str, ...]]:
    w = [x.lower() for x in _W.findall(s)]
    return {tuple(w[i : i + 4]) for i in range(len(w) - 3)}


def make_haystack(novel: str) -> tuple[str, list[dict[str, object]]]:
    """The novel with the needles inserted on lines of their own; each needle's line number (0-based)."""
    lines = novel.split("\n")
    placed = []
    for k, (needle, question, answer) in enumerate(NEEDLES):
        if four_grams(needle) & four_grams(question):
            raise ValueError(f"question {k} shares a 4-word phrase with its needle")
        placed.append((int(DEPTHS[k] * len(lines)), needle, question, answer))
    out: list[str] = []
    needles: list[dict[str, object]] = []
    prev = 0
    for at, needle, question, answer in placed:
        out += lines[prev:at]
        needles.append({"line": len(out), "needle": needle, "question": question, "answer": answer})
        out.append(needle)
        prev = at
    out += lines[prev:]
    return "\n".join(out), needles


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", help="War and Peace (default: $CONTEXTBOX_DATA or ../shared/data)")
    ap.add_argument("--show", action="store_true", help="print each question and the top hit")
    ap.add_argument("--model", help="also ask each question with this model through the RLM (e.g. local)")
    ap.add_argument("--max-iterations", type=int, default=8)
    args = ap.parse_args()
    from contextbox import ops
    from contextbox.search import search

    path = next((Path(p) for p in (args.text, os.environ.get("CONTEXTBOX_DATA") and
                                   Path(os.environ["CONTEXTBOX_DATA"]) / "war_and_peace.txt",
                                   ROOT.parent / "shared" / "data" / "war_and_peace.txt") if p and Path(p).is_file()),
                None)
    if path is None:
        print("War and Peace not found: pass --text PATH or set CONTEXTBOX_DATA", file=sys.stderr)
        return 2
    text, needles = make_haystack(path.read_text(encoding="utf-8"))
    found = 0
    print("| # | question | literal find of the question | needle's rank in search top 3 |\n|---|---|---|---|")
    for i, n in enumerate(needles):
        q = str(n["question"])
        literal = len(ops.find(text, q, max=1))
        hits = search(text, q, k=3)
        rank = next((r + 1 for r, h in enumerate(hits) if h["line"] == n["line"]), None)
        found += rank is not None
        print(f"| {i} | {q} | {literal} hits | {rank if rank else 'not in top 3'} |")
        if args.show and hits:
            print(f"|   | top hit: line {hits[0]['line']}: {hits[0]['text'][:100]} | | |")
    print(f"\n{found}/{len(needles)} needles ranked in the top 3 by search (pure retrieval, no model)")
    if args.model:
        return ask_all(args.model, text, needles, args.max_iterations)
    return 0 if found == len(needles) else 1


def ask_all(model: str, text: str, needles: list[dict[str, object]], max_iterations: int) -> int:
    """Each question through the RLM with ``model`` (default levels for it); answers checked by ``KEYS``."""
    import json
    import statistics
    import time

    from contextbox import RLM, Context

    rlm = RLM(model=model, limits={"max_iterations": max_iterations})
    ctx = Context.from_value(text)
    rows = []
    print("\n| # | right | iterations | ops | seconds | answer |\n|---|---|---|---|---|---|")
    for i, n in enumerate(needles):
        t0 = time.monotonic()
        res = rlm.run(str(n["question"]), ctx)
        ok = bool(res.answer) and right(res.answer or "", i)
        rows.append({"i": i, "right": ok, "iterations": res.iterations, "status": res.status,
                     "ops": [s.op for s in res.steps], "seconds": round(time.monotonic() - t0, 1),
                     "answer": res.answer})
        r = rows[-1]
        print(f"| {i} | {'yes' if ok else 'no'} | {r['iterations']} | {' → '.join(r['ops'])} | {r['seconds']} "
              f"| {(res.answer or res.status)[:70]!r} |", flush=True)
    n_right = sum(r["right"] for r in rows)
    print(f"\n{n_right}/{len(rows)} right with {model}; median iterations "
          f"{statistics.median(r['iterations'] for r in rows)}; median {statistics.median(r['seconds'] for r in rows)} s")
    out = HERE / "out" / "bench_paraphrase_needles.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model, "right": n_right, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
