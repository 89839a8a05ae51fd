#!/usr/bin/env python3
"""Scored labels on the embedded model: raw, content-free calibration, batch-mean calibration.

    .venv/bin/python bench/bench_calibration.py --set trec           # 120 TREC test questions
    .venv/bin/python bench/bench_calibration.py --set oolong-pairs   # the 330 instances of oolong-pairs task 2
    .venv/bin/python bench/bench_calibration.py --from bench/out/bench_calibration.json  # re-analyse saved scores

Each record is scored once (``providers/choice_scores.py``: the log-probability of each label's first
token at the answer's start, the typed map's own prompt); the three ways of picking a label are then
compared on the same scores: the raw argmax, the default (divided by the mean probability for the
content-free records "N/A", "", "?"), and the mean over the records themselves, each also damped
(the prior times alpha < 1). Prints accuracy, the count error and the label counts against the truth:
counts are what aggregation questions score. The scores are saved, so ``--from`` re-analyses them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from contextbox.bench import oolong as oo  # noqa: E402
from contextbox.providers.base import resolve  # noqa: E402
from contextbox.providers.choice_scores import CONTENT_FREE, label_logprobs, mean_prior, pick  # noqa: E402
from contextbox.typed_map import AnswerSpec, instruction, records_block, with_definitions  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def trec_set(n: int) -> tuple[list[str], list[str], list[str], str]:
    import bench_typed_map as b

    data = b.read_trec(DATA / "trec" / "TREC_10.label")
    random.Random(0).shuffle(data)
    data = data[:n]
    return [q for q, _ in data], [t for _, t in data], list(b.MEANING), b.task_prompt(0, 0)


def oolong_pairs_set(task: int) -> tuple[list[str], list[str], list[str], str]:
    gold = dict(oo.load_trec(DATA))
    t = oo.oolong_pairs(3, 0, [32000], DATA)[task]
    recs = [ln.split("|| Instance: ", 1)[1] for ln in t.context.splitlines() if "|| Instance: " in ln]
    labels = list(oo.LABEL_NAMES)
    # the prompt the embedded root gave its map in that run, with the question's label definitions
    return recs, [gold[r] for r in recs], labels, with_definitions("What are the labels for the instances?",
                                                                   AnswerSpec(choices=labels), t.question)


def report(out: dict, labels: list[str], scores: list[dict[str, float]], blank: list[dict[str, float]],
           truth: list[str]) -> None:
    """Accuracy, count error (half the summed |count - true count| over the records: the share of
    records that would have to change label for every count to be right) and counts, per prior."""
    true_counts = Counter(truth)
    print("| prior | accuracy | count error | label counts |\n|---|---|---|---|")
    rows = [("none (raw argmax)", None)]
    for alpha in (0.5, 0.75, 1.0):
        rows.append((f"content-free^{alpha:g}" + (" (default: [delegation] calibration)" if alpha == 0.5 else ""),
                     mean_prior(blank, alpha)))
    for alpha in (0.5, 1.0):
        rows.append((f"batch mean^{alpha:g}", mean_prior(scores, alpha)))
    for name, prior in rows:
        got = [pick(s, prior) for s in scores]
        acc = sum(g == t for g, t in zip(got, truth, strict=True)) / len(truth)
        counts = Counter(got)
        err = sum(abs(counts[lab] - true_counts[lab]) for lab in labels) / (2 * len(truth))
        out[name] = {"accuracy": round(acc, 4), "count_error": round(err, 4), "counts": dict(counts)}
        print(f"| {name} | {acc:.1%} | {err:.1%} | {', '.join(f'{lab} {counts[lab]}' for lab in labels)} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=["trec", "oolong-pairs"], default="trec")
    ap.add_argument("--records", type=int, default=120, help="trec: how many test questions")
    ap.add_argument("--task", type=int, default=2, help="oolong-pairs: which task's instances (seed 0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "out" / "bench_calibration.json"))
    ap.add_argument("--from", dest="saved", help="re-analyse the scores saved by an earlier run (no model)")
    args = ap.parse_args()
    if args.saved:
        old = json.loads(Path(args.saved).read_text())
        labels = list(old["scores"][0])
        print(f"{old['set']}: {old['records']} records (saved scores); truth {old['truth']}")
        report(old, labels, old["scores"], old["blank"], old["truth_labels"])
        return 0
    recs, truth, labels, task = trec_set(args.records) if args.set == "trec" else oolong_pairs_set(args.task)
    p = resolve("local", local={"n_threads": args.threads}).load()  # type: ignore[attr-defined]
    llama = p._loaded.llama
    head = instruction(task, AnswerSpec(choices=labels))

    def score(record: str) -> dict[str, float]:
        return label_logprobs(llama, [{"role": "user", "content": head + records_block([record])}], labels)[0]

    t0 = time.monotonic()
    blank = [score(b) for b in CONTENT_FREE]
    scores = [score(r) for r in recs]
    elapsed = time.monotonic() - t0
    out = {"set": args.set, "records": len(recs), "truth": dict(Counter(truth)), "seconds": round(elapsed, 1)}
    print(f"{args.set}: {len(recs)} records scored in {elapsed:.0f}s; truth {dict(Counter(truth).most_common())}")
    out["scores"], out["blank"], out["truth_labels"] = scores, blank, truth
    report(out, labels, scores, blank, truth)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
