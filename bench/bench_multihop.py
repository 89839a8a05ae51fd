#!/usr/bin/env python3
"""Multi-document and two-hop questions over a folder of letters: ranked search across documents.

    .venv/bin/python bench/bench_multihop.py                 # retrieval check only (no model)
    .venv/bin/python bench/bench_multihop.py --model local   # each question through the RLM

The haystack is a folder of 40 "letters" (``letter_01.txt`` …), each a different stretch of
War and Peace (~9 KB, 360 KB in all: far over the embedded model's window), with facts
planted as paragraphs of their own. Three kinds of question, none sharing a 4-word phrase
with the facts it needs (checked here):

* **one document** — a paraphrased question whose fact sits in one letter of forty; some ask
  *which letter* (the answer must name the file);
* **several documents** — the fact's name is in three letters: all three must be named;
* **two hops** — the question names neither the answer nor the thing that leads to it: the
  first fact gives a name ("the brig Halcyon carried the sealed letters …"), which must be
  searched for next to find the answer in another letter ("Captain Thalberg commanded the
  Halcyon …").

The retrieval check: for each question, ``search`` over the folder (unit ``paragraph``) ranks
the first fact it needs in its top 5 — the second hop is by design not findable from the
question. With ``--model`` each question runs through the RLM (default levels for that
model) and the answer is checked against its keys (every key, any spelling; the question's
own words never pass, tested in ``tests/test_bench_multihop.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

N_LETTERS = 40
LETTER_CHARS = 9000

#: facts: (letter number, sentence)
FACTS: list[tuple[int, str]] = [
    # one document
    (7, "After the roof leaked in March, the oldest ledgers of the archive were carried down to the cellar "
        "under the chapel."),
    (23, "Dr. Lindqvist wrote in his report that the mill burned because a lantern had been left burning in "
         "the hayloft."),
    (31, "The dowager Princess Tarkhanova bequeathed her emerald brooch to the foundling hospital in Tver."),
    # several documents: the horse dealer Pakhomov
    (4, "The horse dealer Pakhomov came by again and offered two bay geldings at a price nobody would pay."),
    (18, "We bought our new carriage horses from Pakhomov, the dealer, who swore they had never been lame."),
    (36, "Pakhomov, the horse trader from Serpukhov, was arrested at the fair for selling a stolen stallion."),
    # two hops: ship → captain
    (12, "The sealed letters of the Emperor were taken from Kronstadt to Memel aboard the brig Halcyon."),
    (29, "Captain Oskar Thalberg commanded the Halcyon for nine years before he retired to Riga."),
    # two hops: tutor → birthplace
    (9, "The Strelbitsky twins were taught by a tutor from Geneva whose name was Armand Pictet."),
    (33, "Armand Pictet was born in Nyon, a small town on the shore of the lake."),
    # two hops: seamstress → street
    (15, "The new colours of the regiment were embroidered by the widow Glafira Tikhonova."),
    (38, "Glafira Tikhonova keeps a little shop for lace and ribbons on Pokrovka Street."),
    # two hops: password → dog
    (2, "This winter the watchword at the east gate is the name of the cook's dog."),
    (26, "The cook's dog, a shaggy white creature, answers only to the name Bulka."),
    # two hops: buyer → coins
    (20, "The stolen icon was sold at night to a Yaroslavl merchant named Sidor Kozhin."),
    (11, "Sidor Kozhin settled every debt he had with Dutch ducats and never with paper money."),
]

#: (kind, question, keys, first fact's index in FACTS) — keys: each a tuple of alternatives
QUESTIONS: list[tuple[str, str, list[tuple[str, ...]], int]] = [
    ("one", "Which letter says where the archive's old ledgers went, and where were they put?",
     [("letter_07",), ("cellar",)], 0),
    ("one", "According to Lindqvist, what started the fire at the mill?", [("lantern",)], 1),
    ("one", "What did Tarkhanova leave to the orphanage in her will?", [("brooch",)], 2),
    ("several", "Which letters mention Pakhomov? Name every one.",
     [("letter_04",), ("letter_18",), ("letter_36",)], 3),
    ("one", "In which letter was the horse trader arrested, and for what?", [("letter_36",), ("stallion",)], 5),
    ("two-hop", "Who was the captain of the vessel that brought the Emperor's sealed letters to Memel?",
     [("thalberg",)], 6),
    ("two-hop", "In what town was the teacher of the Strelbitsky twins born?", [("nyon",)], 8),
    ("two-hop", "On which street does the woman who embroidered the regiment's colours keep her shop?",
     [("pokrovka",)], 10),
    ("two-hop", "What is the east gate's watchword for this winter?", [("bulka",)], 12),
    ("two-hop", "In what coin did the man who bought the stolen icon pay his debts?", [("ducat",)], 14),
]


def right(answer: str, k: int) -> bool:
    """Whether ``answer`` holds every key of question ``k`` (any spelling of each)."""
    a = answer.casefold().replace("letter 0", "letter_0").replace("letter 1", "letter_1") \
        .replace("letter 2", "letter_2").replace("letter 3", "letter_3")
    return all(any(alt in a for alt in alts) for alts in QUESTIONS[k][2])


_W = re.compile(r"[^\W_]+")


def four_grams(s: str) -> set[tuple[str, ...]]:
    w = [x.lower() for x in _W.findall(s)]
    return {tuple(w[i: i + 4]) for i in range(len(w) - 3)}


def check_paraphrase() -> None:
    """No question shares a 4-word phrase with any fact (a literal ``find`` of the question finds nothing)."""
    for q in QUESTIONS:
        for _, fact in FACTS:
            if four_grams(q[1]) & four_grams(fact):
                raise ValueError(f"question {q[1]!r} shares a 4-word phrase with {fact!r}")


def make_letters(novel: str, seed: int = 7) -> dict[str, str]:
    """``{"letter_01.txt": text, …}``: stretches of the novel with the facts planted as paragraphs."""
    check_paraphrase()
    rng = random.Random(seed)
    body = novel[len(novel) // 20:]  # past the front matter
    step = (len(body) - LETTER_CHARS) // N_LETTERS
    letters: dict[str, str] = {}
    for i in range(1, N_LETTERS + 1):
        start = body.find("\n\n", (i - 1) * step) + 2
        paras = [p for p in body[start: start + LETTER_CHARS].split("\n\n")[:-1] if p.strip()]
        for n, fact in FACTS:
            if n == i:
                paras.insert(rng.randrange(1, max(2, len(paras))), fact)
        letters[f"letter_{i:02d}.txt"] = "\n\n".join(paras) + "\n"
    return letters


def find_novel(arg: str | None) -> Path | None:
    env = os.environ.get("CONTEXTBOX_DATA")
    for p in (arg, env and Path(env) / "war_and_peace.txt", ROOT.parent / "shared" / "data" / "war_and_peace.txt"):
        if p and Path(p).is_file():
            return Path(p)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", help="War and Peace (default: $CONTEXTBOX_DATA or ../shared/data)")
    ap.add_argument("--model", help="also ask each question with this model through the RLM (e.g. local)")
    ap.add_argument("--only", type=int, nargs="*", help="question numbers to ask (default: all)")
    ap.add_argument("--max-iterations", type=int, default=10)
    ap.add_argument("--keep", help="write the letters to this folder (default: a temporary one)")
    args = ap.parse_args()
    path = find_novel(args.text)
    if path is None:
        print("War and Peace not found: pass --text PATH or set CONTEXTBOX_DATA", file=sys.stderr)
        return 2
    letters = make_letters(path.read_text(encoding="utf-8"))
    folder = Path(args.keep or tempfile.mkdtemp(prefix="cb-letters-"))
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in letters.items():
        (folder / name).write_text(text, encoding="utf-8")

    from contextbox import Context
    from contextbox.search import search

    ctx = Context.load(str(folder))
    print(f"{len(letters)} letters, {len(ctx.text):,} characters in {folder}")
    found = 0
    print("| # | kind | question | first fact's rank in search top 5 |\n|---|---|---|---|")
    for i, (kind, q, _, f) in enumerate(QUESTIONS):
        hits = search(ctx, q, k=5, unit="paragraph")
        rank = next((r + 1 for r, h in enumerate(hits) if FACTS[f][1][:40] in h["text"]), None)
        found += rank is not None
        print(f"| {i} | {kind} | {q} | {rank or 'not in top 5'} |")
    print(f"\n{found}/{len(QUESTIONS)} first facts ranked in the top 5 by search (pure retrieval, no model)")
    if not args.model:
        return 0 if found == len(QUESTIONS) else 1
    return ask_all(args.model, ctx, args.only, args.max_iterations)


def ask_all(model: str, ctx, only: list[int] | None, max_iterations: int) -> int:
    from contextbox import RLM

    rlm = RLM(model=model, limits={"max_iterations": max_iterations})
    rows = []
    print("\n| # | kind | right | iterations | ops | seconds | answer |\n|---|---|---|---|---|---|---|")
    for i, (kind, q, _, _) in enumerate(QUESTIONS):
        if only and i not in only:
            continue
        t0 = time.monotonic()
        res = rlm.run(q, ctx)
        ok = bool(res.answer) and right(res.answer or "", i)
        rows.append({"i": i, "kind": kind, "right": ok, "iterations": res.iterations, "status": res.status,
                     "ops": [s.op for s in res.steps], "seconds": round(time.monotonic() - t0, 1),
                     "answer": res.answer, "run_id": res.run_id})
        r = rows[-1]
        print(f"| {i} | {kind} | {'yes' if ok else 'no'} | {r['iterations']} | {' → '.join(r['ops'])} | "
              f"{r['seconds']} | {(res.answer or res.status)[:80]!r} |", flush=True)
    by_kind = {k: f"{sum(r['right'] for r in rows if r['kind'] == k)}/{sum(r['kind'] == k for r in rows)}"
               for k in dict.fromkeys(r["kind"] for r in rows)}
    n_right = sum(r["right"] for r in rows)
    print(f"\n{n_right}/{len(rows)} right with {model} ({', '.join(f'{k} {v}' for k, v in by_kind.items())}); "
          f"median iterations {statistics.median(r['iterations'] for r in rows)}; "
          f"median {statistics.median(r['seconds'] for r in rows)} s")
    out = HERE / "out" / "bench_multihop.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model, "right": n_right, "by_kind": by_kind, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
