#!/usr/bin/env python3
"""Table benchmark: ``extract`` + ``count_by`` over a big log vs ``grep -oE … | sort | uniq -c``.

    .venv/bin/python bench/bench_tables.py                 # 1 GiB log (default)
    .venv/bin/python bench/bench_tables.py --size-mb 128   # quicker
    .venv/bin/python bench/bench_tables.py --no-auto       # skip the automatic-fields run

The log has the ``logs`` suite's line format (``2024-03-01 08:00:01 LEVEL IP METHOD PATH STATUS
RTms [ErrorType] "message"``): distinct generated blocks repeated to the size asked for.
Each measurement runs in a fresh process (its peak RSS is VmHWM):

* **pattern**: ``Context.load`` (read from the page cache), then ``extract`` with a named group for
  the error type and ``count_by`` on it — the cold figure is load + ops; then the same ops again on
  the loaded context (in memory), and once more through the L1 commands;
* **auto**: ``Context.load`` + ``extract`` without a pattern (automatic fields) + ``count_by name``;
* **grep**: ``grep -oE 'ms [A-Z][A-Za-z0-9_]* "' FILE | sort | uniq -c`` (best of two runs).

Every count is checked against the generator's own tally. Target: pattern extract + count_by from
a cold read within 3× the grep pipeline. Results go to ``bench/out/bench_tables.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from scratch import scratch_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
MiB = 1 << 20
MB = 1_000_000
PATTERN = r'ms (?P<type>[A-Z][A-Za-z0-9_]*) "'
GREP = r'ms [A-Z][A-Za-z0-9_]* "'
TARGET = 3.0


def generate(path: Path, size: int, seed: int = 11) -> dict[str, int]:
    """About ``size`` bytes of log lines; returns the error-type counts of what was written."""
    from contextbox.bench.logs import make_log

    rng = random.Random(seed)
    blocks = []
    for i in range(8):
        text, _ = make_log(4 * MB, random.Random(seed * 100 + i))
        blocks.append((text.encode("ascii"), Counter(re.findall(r"ms ([A-Z]\w*) \"", text))))
    total: Counter[str] = Counter()
    written = 0
    with open(path, "wb") as f:
        while written < size:
            data, counts = blocks[rng.randrange(len(blocks))]
            f.write(data)
            written += len(data)
            total.update(counts)
    return dict(total)


def vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child(mode: str, path: str) -> None:
    from contextbox import table_ops
    from contextbox.context import Context

    out: dict[str, object] = {"base_hwm": vm_hwm()}
    t0 = time.perf_counter()
    ctx = Context.load(path)
    out["load_s"] = time.perf_counter() - t0
    field = "type" if mode == "pattern" else "name"
    pattern = PATTERN if mode == "pattern" else None
    t = time.perf_counter()
    rows = table_ops.extract(ctx, pattern)
    out["extract_s"] = time.perf_counter() - t
    t = time.perf_counter()
    counts = table_ops.count_by(rows, field)
    out["count_by_s"] = time.perf_counter() - t
    out["rows"] = rows.n
    out["columns"] = rows.columns
    out["counts"] = {k: v for k, v in zip(counts.column(field), counts.column("count"), strict=True) if k is not None}
    out["hwm_cold"] = vm_hwm()
    if mode == "pattern":
        del rows, counts
        t = time.perf_counter()
        counts = table_ops.count_by(table_ops.extract(ctx, pattern), field)
        out["warm_s"] = time.perf_counter() - t
        from contextbox.executors import Action, Session
        from contextbox.levels.commands import CommandExecutor
        from contextbox.types import Limits

        ex = CommandExecutor(Session(ctx, Limits(), ("l1",), "bench"))
        t = time.perf_counter()
        for c in ({"op": "extract", "pattern": pattern, "store": "t"}, {"op": "count_by", "field": field}):
            ex.run(Action("command", "l1", c["op"], c))
        out["l1_s"] = time.perf_counter() - t
    out["hwm"] = vm_hwm()
    print(json.dumps(out))


def run_child(mode: str, path: Path) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True,
                       check=False)
    if p.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def grep_pipeline(path: Path) -> tuple[dict[str, int], float]:
    cmd = f"grep -oE '{GREP}' {path} | sort | uniq -c"
    best, counts = float("inf"), {}
    for _ in range(2):
        t = time.perf_counter()
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True,
                           env={**os.environ, "LC_ALL": "C"})
        best = min(best, time.perf_counter() - t)
        counts = {m.group(2): int(m.group(1)) for m in re.finditer(r"(\d+) ms (\w+) \"", p.stdout)}
    return counts, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the generated log in MiB (default 1024)")
    ap.add_argument("--no-auto", action="store_true", help="skip the automatic-fields run")
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--dir", default=None, help="where to write the file (default: a new temp dir)")
    ap.add_argument("--out", default=str(HERE / "out" / "bench_tables.json"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--generate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if args.generate:
        print(json.dumps(generate(Path(args.generate), args.size_mb * MiB)))
        return 0

    cmdline = f"{Path(sys.executable).name} bench/bench_tables.py --size-mb {args.size_mb}"
    with scratch_file(f"tables_{args.size_mb}mb.log", args.dir, args.keep) as path:
        print(f"generating {args.size_mb} MiB in {path} …", file=sys.stderr, flush=True)
        g = subprocess.run([sys.executable, __file__, "--generate", str(path), "--size-mb", str(args.size_mb)],
                           capture_output=True, text=True, check=True)
        known = json.loads(g.stdout.strip().splitlines()[-1])
        fsize = path.stat().st_size
        print("  grep pipeline …", file=sys.stderr, flush=True)
        grep_counts, grep_s = grep_pipeline(path)
        print("  extract with a pattern + count_by …", file=sys.stderr, flush=True)
        pat = run_child("pattern", path)
        auto = None
        if not args.no_auto:
            print("  extract automatic fields + count_by …", file=sys.stderr, flush=True)
            auto = run_child("auto", path)

    cold = pat["load_s"] + pat["extract_s"] + pat["count_by_s"]
    ratio = cold / grep_s
    checks = {"pattern_counts": pat["counts"] == known, "grep_counts": grep_counts == known}
    rows = [
        ("file", f"{fsize / MiB:,.0f} MiB, {pat['rows']:,} error lines", "", ""),
        ("grep -oE … \\| sort \\| uniq -c", f"{grep_s:.2f} s", "", ""),
        ("Context.load", f"{pat['load_s']:.2f} s", "", ""),
        ("extract (named group) + count_by, in memory",
         f"{pat['extract_s']:.2f} s + {pat['count_by_s']:.3f} s; again: {pat['warm_s']:.2f} s; "
         f"as L1 commands: {pat['l1_s']:.2f} s", "", ""),
        ("cold: load + extract + count_by", f"{cold:.2f} s = {ratio:.2f}× grep", f"≤ {TARGET:g}×",
         "pass" if ratio <= TARGET else "MISS"),
        ("peak RSS, pattern run", f"{pat['hwm'] / MiB:,.0f} MiB = {pat['hwm'] / fsize:.2f}× file", "", ""),
    ]
    if auto is not None:
        checks["auto_counts"] = auto["counts"] == known
        a_ops = auto["extract_s"] + auto["count_by_s"]
        rows += [
            ("automatic fields: extract + count_by name, in memory",
             f"{a_ops:.1f} s ({fsize / MB / auto['extract_s']:.0f} MB/s; {auto['rows']:,} rows × "
             f"{len(auto['columns'])} columns) = {a_ops / grep_s:.1f}× grep", "", ""),
            ("automatic fields, cold (load + ops)", f"{auto['load_s'] + a_ops:.1f} s", "", ""),
            ("peak RSS, automatic fields", f"{auto['hwm'] / MiB:,.0f} MiB = {auto['hwm'] / fsize:.2f}× file", "", ""),
        ]
    table = "\n".join(["| measure | result | target | |", "|---|---|---|---|"]
                      + [f"| {a} | {b} | {t} | {s} |" for a, b, t, s in rows])
    print(table)
    print("\nchecks: " + ", ".join(f"{k}: {'ok' if v else 'WRONG'}" for k, v in checks.items()))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; reproduce with: {cmdline}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"file_bytes": fsize, "known": known, "grep": {"s": grep_s, "counts": grep_counts},
                               "pattern": pat, "auto": auto, "cold_vs_grep": ratio, "checks": checks,
                               "markdown": table, "command": cmdline}, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
