#!/usr/bin/env python3
"""The README's `rlm ask` examples, run as a user would with the embedded model, answers checked.

    .venv/bin/python bench/bench_readme_examples.py              # every default-model example
    .venv/bin/python bench/bench_readme_examples.py --only toml  # the examples whose key contains "toml"

Each example of the README that uses the default (embedded) model is listed in ``EXAMPLES`` with the data
it needs — generated here (a 20,000-line service log, an OOLONG-style record file from the TREC files in
``../shared/data``) or the project's own ``src/`` — and a check of the answer against ground truth computed
from that data. ``tests/test_readme_examples.py`` fails when the README gains a default-model example that
is not listed here. Examples that name an API model (``--model openai/...``) are not run.

Each example runs ``rlm ask ... --model local --json`` in a subprocess (a fresh process: model load
included in the time). Prints a Markdown table; writes ``bench/out/bench_readme_examples.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from contextbox.bench import scoring  # noqa: E402
from contextbox.bench.logs import ERROR_TYPES, log_facts, make_log  # noqa: E402
from contextbox.bench.tasks import Lines  # noqa: E402


@dataclass
class Example:
    key: str
    #: the README line, exactly (``tests/test_readme_examples.py`` matches it)
    line: str
    #: (argv after ``rlm``, stdin text or None) built from the prepared data directory
    argv: Callable[[Path], tuple[list[str], str | None]]
    #: answer -> score in [0, 1] against the data's ground truth
    check: Callable[[str, dict[str, Any]], float]


def _top_error(answer: str, facts: dict[str, Any]) -> float:
    """The first error type the answer names is the most frequent one."""
    named = scoring._mentions(answer, ERROR_TYPES)
    return 1.0 if named and named[0] == facts["error_ranking"][0] else 0.0


def _code_check(answer: str, facts: dict[str, Any]) -> float:
    a = answer.casefold()
    return 1.0 if "load" in a and ("config.load" in a or "config.py" in a or "class config" in a) else 0.0


def _ask(question: str, *ctx: str, extra: tuple[str, ...] = ()) -> Callable[[Path], tuple[list[str], str | None]]:
    def build(work: Path) -> tuple[list[str], str | None]:
        argv = ["ask", question]
        for c in ctx:
            argv += ["-c", c if c.startswith("/") or c == "-" else str(work / c)]
        return argv + list(extra), None
    return build


def _stdin_log(question: str) -> Callable[[Path], tuple[list[str], str | None]]:
    def build(work: Path) -> tuple[list[str], str | None]:
        return ["ask", question, "-c", "-"], (work / "service.log").read_text()
    return build


def _oolong(work: Path) -> tuple[list[str], str | None]:
    task = json.loads((work / "oolong_task.json").read_text())
    return ["ask", task["question"], "-c", str(work / "records.txt")], None


EXAMPLES: list[Example] = [
    Example("toml", "rlm ask \"Which function in this code base loads the TOML configuration file?\" -c src/ "
            "--include '*.py'",
            _ask("Which function in this code base loads the TOML configuration file?", str(ROOT / "src"),
                 extra=("--include", "*.py")), _code_check),
    Example("stdin-error", 'cat big.log | rlm ask "What is the most frequent error?" -c - --json',
            _stdin_log("What is the most frequent error?"),
            _top_error),
    Example("error-type", 'rlm ask "Which error type occurs most often?" -c service.log --model local',
            _ask("Which error type occurs most often?", "service.log"),
            _top_error),
    Example("rate-limited", 'rlm ask "How many times does RateLimited occur?" -c service.log --model local',
            _ask("How many times does RateLimited occur?", "service.log"),
            lambda a, f: 1.0 if scoring.first_int(a) == f["error_counts"]["RateLimited"] else 0.0),
    Example("p95", 'rlm ask "What is the p95 response time?" -c service.log --model local',
            _ask("What is the p95 response time?", "service.log"),
            lambda a, f: 1.0 if scoring.first_int(re.sub(r"\bp\d\d\b", "", a)) == f["p95"] else 0.0),
    Example("label", 'rlm ask "Which label is the most frequent among all instances? ..." -c records.txt '
            "--model local", _oolong, lambda a, f: scoring.score("label", a, f["oolong_gold"])),
]


def prepare(work: Path, data: Path | None) -> dict[str, Any]:
    """The examples' data in ``work`` and the ground truth."""
    work.mkdir(parents=True, exist_ok=True)
    text, _ = make_log(Lines(20_000), random.Random("readme-examples"))
    (work / "service.log").write_text(text)
    facts = log_facts(text)
    from contextbox.bench.oolong import oolong

    # the README's question: "Which label is the most frequent among all instances?"
    task = next(t for t in oolong(6, 1, [32_000], data) if t.meta.get("qtype") == "most")
    (work / "records.txt").write_text(task.context)
    (work / "oolong_task.json").write_text(json.dumps({"question": task.question, "gold": task.gold}))
    facts["oolong_gold"] = task.gold
    return facts


def run(ex: Example, work: Path, facts: dict[str, Any], timeout: float) -> dict[str, Any]:
    argv, stdin = ex.argv(work)
    cmd = [str(Path(sys.executable).with_name("rlm")), *argv, "--model", "local", "--json"]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                           env={**os.environ})
        out = json.loads(p.stdout) if p.stdout.strip() else {}
    except subprocess.TimeoutExpired:
        out = {"status": "timeout"}
    except json.JSONDecodeError:
        out = {"status": "no json"}
    answer = out.get("answer") or ""
    return {"key": ex.key, "command": " ".join(shlex.quote(a) for a in argv[:2]) + " …",
            "answer": answer, "score": ex.check(answer, facts) if answer else 0.0,
            "status": out.get("status"), "iterations": out.get("iterations"),
            "ops": [s.get("op") for s in out.get("steps", [])], "seconds": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the examples whose key contains this text")
    ap.add_argument("--work", default=str(HERE / "out" / "readme_examples"))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=str(HERE / "out" / "bench_readme_examples.json"))
    args = ap.parse_args()
    data = Path(os.environ["CONTEXTBOX_DATA"]) if os.environ.get("CONTEXTBOX_DATA") else ROOT.parent / "shared" / "data"
    facts = prepare(Path(args.work), data if data.exists() else None)
    rows = [run(ex, Path(args.work), facts, args.timeout) for ex in EXAMPLES if args.only in ex.key]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print("| example | right | iterations | ops | seconds | answer |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['key']} | {'yes' if r['score'] >= 1 else 'no'} | {r['iterations']} | {' → '.join(map(str, r['ops']))} "
              f"| {r['seconds']} | {r['answer'][:60]!r} |")
    right = sum(r["score"] >= 1 for r in rows)
    print(f"\n{right}/{len(rows)} right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
