"""``rlm bench SUITE ...`` and ``rlm bench report DIR``: argument parsing and the handler."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError

BASELINES = ("direct", "rlms")


def add_parser(sub: Any, positive_int: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``rlm`` subparsers."""
    from .tasks import suite_names

    names = ", ".join(suite_names())
    b = sub.add_parser("bench", help="run benchmark suites with baselines; 'rlm bench report DIR' rebuilds a report",
                       description=f"rlm bench SUITE[,SUITE...|all] [options]  or  rlm bench report DIR. "
                                   f"Suites: {names}.")
    b.add_argument("suite", metavar="SUITE", help=f"{names}, a comma-separated list, 'all', or 'report'")
    b.add_argument("dir", nargs="?", metavar="DIR", help="with 'report': the results folder")
    b.add_argument("-m", "--model", metavar="MODEL", help="model spec (default from config; 'local' for the embedded model)")
    b.add_argument("--sub-model", metavar="MODEL", help="sub-model spec for delegation")
    b.add_argument("--levels", help="levels for the RLM, e.g. l1 or l1,l4")
    b.add_argument("--n", type=positive_int, default=3, help="tasks per context length (default 3)")
    b.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    b.add_argument("--lengths", help="context lengths in characters, e.g. 8k,32k,1M, or in lines for logs, "
                                     "e.g. 20000l (default per suite: logs 20000l, oolong 32k,128k, "
                                     "oolong-pairs 32k, detective 100k)")
    b.add_argument("--baseline", action="append", metavar="NAME",
                   help="direct, rlms or none (repeatable or comma-separated; default: direct,rlms — rlms "
                        "needs 'contextbox[bench]'; with --model local it runs on a llama.cpp server of the "
                        "same model that the bench starts and stops)")
    b.add_argument("--direct-window", choices=("start", "random"), default="start",
                   help="where the direct baseline's window sits in a context too long for it: the head "
                        "(start, default) or a seeded random offset per task (random)")
    b.add_argument("--no-rlm", action="store_true", help="run the baselines only")
    b.add_argument("--out", metavar="DIR", help="results folder (default bench-results); results.jsonl is appended to")
    b.add_argument("--dry-run", action="store_true",
                   help="scripted replies computed from the gold answers instead of a model (tests the harness); "
                        "for seed-cases: validate the case files and print what would run")
    b.add_argument("--peer-python", metavar="PYTHON", help="python of a venv where the rlms package is installed")
    b.add_argument("--window-tokens", type=positive_int, metavar="N",
                   help="the direct baseline's window (default: the model's window, else 32768)")
    b.add_argument("--max-iterations", type=positive_int, metavar="N", help="stop each run after N model turns")
    b.add_argument("--timeout", type=float, dest="timeout_s", default=600.0, metavar="SECONDS",
                   help="per task (default 600)")
    b.add_argument("--data", metavar="DIR", help="the shared data folder (war_and_peace.txt, trec/)")
    return b


def _baselines(values: list[str] | None) -> list[str]:
    if not values:
        return list(BASELINES)
    out: list[str] = []
    for v in values:
        for name in (x.strip() for x in v.split(",")):
            if name == "none":
                continue
            if name not in BASELINES:
                raise UsageError(f"unknown baseline {name!r}; use direct, rlms or none")
            out.append(name)
    return out


def print_seed_plan(data: Path | None) -> bool:
    """``rlm bench seed-cases --dry-run``: validate every case file and print what would run (no model).
    Returns False (after one line per bad file on stderr) when a file is invalid."""
    from .seed import plan

    lines, errors = plan(data)
    for line in lines:
        print(line)
    n_queries = sum(1 for x in lines if x.startswith("  ["))
    n_cases = len(lines) - n_queries
    print(f"seed-cases: {n_cases} case file(s), {n_queries} quer{'y' if n_queries == 1 else 'ies'} would run"
          + (f"; {len(errors)} invalid file(s)" if errors else ""))
    for e in errors:
        sys.stderr.write(f"rlm: error: {e}\n")
    return not errors


def cmd_bench(args: argparse.Namespace) -> int:
    """The handler: run suites (printing one line per task) or rebuild a report."""
    from .report import load_records, summary_rows, write_report
    from .runner import BenchOptions, run_bench
    from .tasks import parse_length, suite_names

    if args.suite == "report":
        if not args.dir:
            raise UsageError("rlm bench report DIR: name the results folder")
        path = write_report(args.dir)
        print(path)
        return 0
    if args.dir:
        raise UsageError(f"unexpected argument {args.dir!r}; use --out DIR for the results folder")
    known = suite_names()
    suites = known if args.suite == "all" else [s.strip() for s in args.suite.split(",") if s.strip()]
    for s in suites:
        if s not in known:
            raise UsageError(f"unknown bench suite {s!r}; use one of: {', '.join(known)}, all, report")
    lengths = [parse_length(x) for x in args.lengths.split(",")] if args.lengths else None
    data = Path(args.data) if args.data else None
    if args.dry_run and "seed-cases" in suites:
        if not print_seed_plan(data):
            return 2
        suites = [s for s in suites if s != "seed-cases"]
        if not suites:
            return 0
    out = Path(args.out or "bench-results")
    opts = BenchOptions(
        suites=suites, model=args.model, sub_model=args.sub_model, levels=args.levels, n=args.n, seed=args.seed,
        lengths=lengths, baselines=_baselines(args.baseline), rlm=not args.no_rlm, out=out,
        dry_run=args.dry_run, peer_python=args.peer_python, window_tokens=args.window_tokens,
        max_iterations=args.max_iterations, timeout_s=args.timeout_s, data=data, config=args.config,
        command="rlm " + " ".join(shlex.quote(a) for a in sys.argv[1:]), direct_window=args.direct_window,
    )

    def on_record(r: dict[str, Any]) -> None:
        mark = "ok " if r["correct"] else f"{r['score']:.2f}"
        ans = " ".join(str(r.get("answer") or "").split())[:50]
        sys.stderr.write(f"[{r['suite']}] {r['method']:<6} {r['task_id']:<28} {mark} {r.get('status')} "
                         f"it={r.get('iterations')} tok={r.get('tokens', 0):,} {r.get('elapsed_s', 0):.1f}s "
                         f"answer={ans!r}\n")
        sys.stderr.flush()

    run_bench(opts, on_record)
    for row in summary_rows(load_records(out)):
        print(f"{row['suite']:<13} {row['method']:<7} {row['model']:<18} n={row['n']:<3} "
              f"accuracy={row['accuracy']:.0%} score={row['score']:.2f} "
              f"median_tokens={row['median_tokens']:,.0f} median_time={row['median_time']:.1f}s")
    print(out / "report.md")
    return 0
