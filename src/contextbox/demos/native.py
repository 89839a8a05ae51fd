"""``rlm demo native``: the seed's L3 demo — four analyses of a log large enough that it matters.

Error ranking with counts, unique IPs, p50/p95/p99 response times and the top words of the messages
(stop words left out) on a generated log of 1,000,000 lines by default (about 90 MB), written once into
the cache (``$XDG_CACHE_HOME/contextbox/demos/``) with its ground truth computed from the text. With an
API model the runs use L3 native code (a CPython worker with the context memory-mapped); with the
embedded model, L1 table ops (the same computations, run by the engine). The output sets the time spent
in the worker (or the engine) next to the time spent waiting for the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .common import cache_dir, report
from .logs import ask_all, generate, ground_truth, levels_for, questions

DEFAULT_LINES = 1_000_000


def cached_log(lines: int, seed: int, folder: Path | None = None) -> tuple[str, dict[str, Any]]:
    """The log of ``lines`` lines for ``seed`` and its ground truth, generated once into ``folder``."""
    folder = folder or cache_dir() / "demos"
    path = folder / f"native-{lines}-{seed}.log"
    facts_path = path.with_suffix(".truth.json")
    if path.is_file() and facts_path.is_file():
        text = path.read_text(encoding="utf-8")
        facts = json.loads(facts_path.read_text(encoding="utf-8"))
        if facts.get("chars") == len(text):
            return text, facts
    print(f"native: generating {lines:,} log lines into {path} (once)", file=sys.stderr)
    text = generate(lines, seed)
    facts = ground_truth(text)
    facts["top_ips"] = [list(p) for p in facts["top_ips"]]
    facts["chars"] = len(text)
    folder.mkdir(parents=True, exist_ok=True)
    for p, data in ((path, text), (facts_path, json.dumps(facts))):
        tmp = p.with_suffix(".part")
        tmp.write_text(data, encoding="utf-8")
        tmp.replace(p)
    return text, facts


def split_times(results: list[Any]) -> dict[str, float]:
    """Seconds spent waiting for models vs running actions (code workers, table ops), over all runs."""
    model = work = code = 0.0
    for r in results:
        for e in r.events:
            if e.type == "lm_response":
                model += float(e.data.get("latency_s") or 0)
            elif e.type == "sub_call":
                model += float(e.data.get("latency_s") or 0)
            elif e.type == "action_end":
                work += float(e.data.get("elapsed_s") or 0)
                if e.data.get("level") in ("l2", "l3"):
                    code += float(e.data.get("elapsed_s") or 0)
    return {"model_s": round(model, 3), "actions_s": round(work, 3), "code_s": round(code, 3)}


def run_demo(args: argparse.Namespace) -> int:
    lines = args.lines or DEFAULT_LINES
    t0 = time.monotonic()
    text, facts = cached_log(lines, args.seed)
    prep = time.monotonic() - t0
    levels, plan = levels_for(args, "l3")
    qs = [q for q in questions(facts, words=True) if q[0] in ("error ranking", "unique IPs", "p50/p95/p99",
                                                              "top 5 words")]
    out = ask_all(args, "native", text, qs, levels, plan)
    times = split_times(out.results)
    out.data.update(times, prepare_s=round(prep, 2))
    worker = "L3 worker" if "l3" in (levels or args.levels or "") else "engine (table ops)"
    out.lines.append(f"time: {worker} {times['actions_s']:.2f}s vs model {times['model_s']:.2f}s "
                     f"(log ready in {prep:.1f}s)")
    return report(out, args.json)
