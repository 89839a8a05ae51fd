"""``rlm demo NAME``: the six demos of the system, one module each, and ``rlm demo list``.

Every demo prints a result verified against exact ground truth, the run id(s), iterations,
tokens root/sub, cost, the share of the context read, and the time; ``--json`` prints the same
as one object. Exit code 0 when every check is exact, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DemoInfo:
    name: str
    module: str
    summary: str


DEMOS: dict[str, DemoInfo] = {d.name: d for d in (
    DemoInfo("explain", "explain", "the paper in one command: the model reading War and Peace directly (cut to "
             "its window) vs the RLM, side by side"),
    DemoInfo("war-and-peace", "war_and_peace", "a password hidden in War and Peace (3.2 MB), found by the RLM"),
    DemoInfo("logs", "logs", "log analytics on a generated 5,000-line log: error ranking, unique IPs and the "
             "top 10, p50/p95/p99, ERROR lines (L1 tables with the local model, L2 code with API models)"),
    DemoInfo("native", "native", "the same analyses plus word frequency on a 1,000,000-line log through L3 "
             "native code (L1 tables with the local model)"),
    DemoInfo("detective", "detective", "the Ashford Manor murder, solved with L4 sub-calls; scored against "
             "the answer file the model never sees"),
    DemoInfo("family-trees", "family_trees", "War and Peace → the Bolkonski, Rostov, Bezukhov and Kuragin "
             "trees: relation sentences, a typed llm_map to triples, name merging, text + SVG"),
)}


def add_parser(sub: Any) -> None:
    """``rlm demo NAME [options]`` on the CLI's sub-parsers."""
    demo = sub.add_parser("demo", help="run a demo (rlm demo list)")
    demo.add_argument("name", choices=["list", *DEMOS], help="the demo to run, or list")
    demo.add_argument("-m", "--model", metavar="MODEL", help="root model spec (default: the embedded model, 'local')")
    demo.add_argument("--sub-model", metavar="MODEL", help="sub-model spec (default: the root model)")
    demo.add_argument("--levels", metavar="LEVELS", help="override the demo's levels")
    demo.add_argument("--runs-dir", metavar="DIR", help="the runs folder (default from config)")
    demo.add_argument("--json", action="store_true", help="one JSON object instead of text")
    demo.add_argument("--text", metavar="FILE", help="war-and-peace, explain, family-trees: path of War and Peace")
    demo.add_argument("--depth", type=float, default=0.5, help="war-and-peace, explain: where to hide the "
                      "sentence, 0..1")
    demo.add_argument("--seed", type=int, default=7, help="the seed of generated data")
    demo.add_argument("--lines", type=int, help="logs (default 5000), native (default 1000000): log lines")
    demo.add_argument("--limit", type=int, help="family-trees: most pairs of people asked about (default 1000; the "
                      "novel gives about 160)")
    demo.add_argument("--per-call", type=int, metavar="N", help="family-trees: pairs per sub-call (default 1: a "
                      "small model labels one at a time far better)")
    demo.add_argument("--out", metavar="DIR", help="family-trees: folder for the tree image (default: the runs folder)")
    demo.add_argument("--plan", choices=["model", "fixed"], help="detective: who designs the steps (default: "
                      "model — the root model, which a constrained model does through the engine's case route "
                      "suspects/examine/weigh; fixed: one sub-call per witness, then one that decides)")
    demo.add_argument("--max-iterations", type=int, metavar="N", help="root iterations per run")


def list_demos() -> int:
    width = max(len(n) for n in DEMOS)
    for d in DEMOS.values():
        print(f"{d.name:<{width}}  {d.summary}")
    print("\nrun one: rlm demo NAME [--model SPEC] [--json]   (default model: the embedded one, 'local')")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    if args.name == "list":
        return list_demos()
    mod = importlib.import_module(f"{__name__}.{DEMOS[args.name].module}")
    return int(mod.run_demo(args))
