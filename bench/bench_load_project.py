#!/usr/bin/env python3
"""Loading a project folder with ``-c DIR``: what a virtualenv and ignored build output cost.

    .venv/bin/python bench/bench_load_project.py                  # 10,000-file venv, 300 sources
    .venv/bin/python bench/bench_load_project.py --venv-files 30000

A synthetic project is written to a temp dir: ``src/`` with ``--sources`` Python files, a
``.venv`` (``pyvenv.cfg`` + ``--venv-files`` files of ~10 KB, like site-packages), a ``build/``
folder of the same size that ``.gitignore`` names, and ``*.log`` files it ignores. Each case
runs in a fresh process (``Context.load`` of the folder), reporting wall time, the peak RSS
and how many documents were loaded; ``--no-ignore`` shows the cost without the ignore rules
(``.gitignore`` removed, venv and build renamed so nothing marks them). Results go to
stdout as a Markdown table and to ``bench/out/bench_load_project.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, logging
logging.disable(logging.WARNING)
from contextbox import Context
t = time.perf_counter()
ctx = Context.load(sys.argv[1], max_files=None, max_bytes=None)
dt = time.perf_counter() - t
print(json.dumps({"seconds": round(dt, 3), "documents": len(ctx.documents), "chars": len(ctx.text),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def make_project(root: Path, sources: int, venv_files: int) -> None:
    body = "def f(x):\n    return x + 1\n" * 350  # ~10 KB
    for i in range(sources):
        p = root / "src" / f"pkg{i % 20}" / f"mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"# module {i}\n" + body[:3000])
    (root / ".gitignore").write_text("build/\n*.log\n")
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for base in (root / ".venv" / "lib" / "site-packages", root / "build"):
        for i in range(venv_files):
            p = base / f"dist{i % 200}" / f"file{i}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(body)
    for i in range(20):
        (root / f"run{i}.log").write_text("log line\n" * 1000)


def run_case(root: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=300)
    ap.add_argument("--venv-files", type=int, default=10_000)
    ap.add_argument("--no-ignore", action="store_true", help="also measure the load with no ignore rules")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cbx-proj-"))
    try:
        make_project(tmp, args.sources, args.venv_files)
        rows = {"with ignore rules": run_case(tmp)}
        if args.no_ignore:
            (tmp / ".gitignore").unlink()
            (tmp / ".venv" / "pyvenv.cfg").unlink()
            (tmp / ".venv").rename(tmp / "deps")
            rows["no ignore rules"] = run_case(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"project: {args.sources} sources, a .venv and an ignored build/ of {args.venv_files:,} files each\n")
    print("| case | seconds | documents | characters | peak RSS MB |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']} | {r['documents']:,} | {r['chars']:,} | {r['peak_rss_mb']} |")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_load_project.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
