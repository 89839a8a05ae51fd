"""The issue #17 probe: scripted runs that ask the host for far too much, in one host process.

    PYTHONPATH=src .venv/bin/python bench/bench_host_limits.py [--set probe|bypass] [--json]

Each probe is one run (run timeout 10 s, block limits 5 s): the hostile reply, then a
``find`` and a ``final``. Printed: each run's status and elapsed time, and the host's peak
RSS (``VmHWM``, what ``/usr/bin/time -f %M`` reports) over all of them. Targets: every run
answered within its timeout + 2 s; the host under 200 MiB for ``probe`` (under 700 MiB for
``bypass``: code calling the host functions by their ``_cb_`` names, past the sandbox-side
checks, costs one copy of what the sandbox may hold). ``tests/test_host_limits.py`` runs it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from contextbox import RLM, Config, Context
from contextbox.providers import ScriptedProvider


def _cmd(op: str, **args: Any) -> str:
    return json.dumps({"op": op, **args})


#: (level, the model's reply, context: "big" = 5,000,000 × "a", "small" = one line)
PROBES: list[tuple[str, str, str]] = [
    ("l1", _cmd("find", text="a", max=10_000_000), "big"),
    ("l1", _cmd("split", delimiter="a"), "big"),
    ("l1", _cmd("chunk", size=1000, overlap=999), "big"),
    ("l2", "```repl\nx = split('a', text='a' * 100_000_000)\n```", "small"),
    ("l2", "```repl\nx = find('a', max=None)\n```", "big"),
    ("l2", "```repl\nx = chunk(1000, overlap=999)\n```", "big"),
    ("l2", "```repl\nFINAL('x' * 200_000_000)\n```", "small"),
    ("l2", "```repl\nwhile True:\n    x = regex('(a*)*b', text='a' * 40)\n```", "small"),
    ("l3", "```native\nw = find.__closure__[0].cell_contents\nx = w._call_host('split', 'a', text='a' * 3_000_000)\n```",
     "small"),
    ("l3", "```native\nw = find.__closure__[0].cell_contents\nx = w._call_host('find', 'a', max=None)\n```", "big"),
    ("l3", "```native\nFINAL('x' * 200_000_000)\n```", "small"),
]
BYPASS: list[tuple[str, str, str]] = [
    ("l2", "```repl\n_cb_FINAL('x' * 200_000_000)\n```", "small"),
    ("l2", "```repl\nx = _cb_split('a', text='a' * 100_000_000)\n```", "small"),
]
SETS = {"probe": PROBES, "bypass": BYPASS}
TIMEOUT_S = 10


def peak_rss_mib() -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) // 1024


def run_probes(probes: list[tuple[str, str, str]]) -> dict[str, Any]:
    big = Context.from_value("a" * 5_000_000)
    runs = []
    for level, reply, ctx in probes:
        cfg = Config()
        cfg.code.l2_time_limit_s = cfg.code.l3_time_limit_s = 5
        replies = [reply, _cmd("find", text="the"), _cmd("final", answer="done")]
        rlm = RLM(model=ScriptedProvider(replies), config=cfg, levels="l1" if level == "l1" else "l1," + level,
                  limits={"timeout_s": TIMEOUT_S})
        t = time.monotonic()
        r = rlm.run("q?", big if ctx == "big" else Context.from_value("the context\n"))
        runs.append({"level": level, "reply": reply, "elapsed": time.monotonic() - t, "status": r.status})
    return {"runs": runs, "hwm_mib": peak_rss_mib()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=sorted(SETS), default="probe")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    got = run_probes(SETS[args.set])
    if args.json:
        print(json.dumps(got))
        return
    for r in got["runs"]:
        first = r["reply"].replace("```repl\n", "").replace("```native\n", "").split("\n")[0]
        print(f"{r['level']}  {r['status']:<9} {r['elapsed']:6.2f} s  {first[:90]}")
    print(f"host peak RSS (VmHWM): {got['hwm_mib']} MiB")


if __name__ == "__main__":
    main()
