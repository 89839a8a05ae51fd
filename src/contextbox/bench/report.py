"""The report: a Markdown table per suite and method, per-length scores, and PNG plots.

Rebuilt from ``results.jsonl`` (and ``meta.json``) alone, so ``rlm bench report DIR`` gives
the same report as the run that wrote them.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .runner import RESULTS

log = logging.getLogger("contextbox")
REPORT = "report.md"


def load_records(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / RESULTS
    if not path.is_file():
        raise UsageError(f"no {RESULTS} in {out}: run 'rlm bench SUITE --out {out}' first")
    recs = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("bench report: %s line %d is not JSON; skipped", path, i)
    return recs


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def _fmt_len(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2g}M"
    return f"{n / 1000:.0f}k" if n >= 1000 else str(n)


def _cell(s: Any, width: int = 60) -> str:
    t = " ".join(str(s).split()) if s is not None else "—"
    t = t if len(t) <= width else t[: width - 1] + "…"
    return t.replace("|", "\\|")


def _inside(evidence: list[int], span: list[int]) -> bool:
    return span[0] <= evidence[0] and evidence[1] <= span[1]


def explain(group: list[dict[str, Any]]) -> str:
    """Why a method scored what it did: statuses, context cuts, wrong answers."""
    notes = []
    st = Counter(r.get("status") for r in group if r.get("status") != "answered")
    if st:
        reasons = Counter(_cell(r.get("reason"), 50) for r in group if r.get("status") != "answered")
        notes.append(", ".join(f"{n} {s}" for s, n in st.items()) + f" ({'; '.join(reasons)})")
    cut = [r for r in group if r.get("cut")]
    if cut:
        kept = _median([r["kept_chars"] / max(1, r["context_chars"]) for r in cut])
        msg = f"context cut to the window in {len(cut)}/{len(group)} (median {kept:.1%} kept)"
        where = sorted({r.get("window", "start") for r in cut})
        msg += f", window at the {'/'.join(where)}" if where != ["start"] else ""
        ev = [r for r in cut if r.get("evidence")]
        if ev:
            out = sum(1 for r in ev if not _inside(r["evidence"], r.get("kept_span") or [0, r["kept_chars"]]))
            msg += f"; the needle lay outside the kept part in {out}/{len(ev)}"
        elif any(not r.get("evidence") for r in cut):
            msg += "; the answer needs evidence from the whole context"
        notes.append(msg)
    mean = statistics.fmean(r["score"] for r in group)
    wrong = [r for r in group if r.get("status") == "answered" and r["score"] < 1]
    if mean == 0 and wrong:
        r = wrong[0]
        notes.append(f"wrong answers, e.g. {_cell(r.get('answer'), 40)!s} for gold {_cell(r.get('gold'), 30)!s}")
    return "; ".join(notes)


def summary_rows(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        groups[(r["suite"], r["method"], r["model"])].append(r)
    rows = []
    for (suite, method, model), g in groups.items():
        rows.append({
            "suite": suite, "method": method, "model": model, "n": len(g),
            "accuracy": sum(r["correct"] for r in g) / len(g), "score": statistics.fmean(r["score"] for r in g),
            "median_tokens": _median([r.get("tokens", 0) for r in g]),
            "median_time": _median([r.get("elapsed_s", 0.0) for r in g]),
            "cost": None if any("cost_usd" in r and r["cost_usd"] is None for r in g)  # unknown price
            else sum(r.get("cost_usd", 0.0) or 0.0 for r in g),
            "median_iterations": _median([r.get("iterations", 0) for r in g]),
            "notes": explain(g),
        })
    return rows


def plot(recs: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per suite: score vs context length and median tokens vs context length, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    suites = sorted({r["suite"] for r in recs})
    for suite in suites:
        rs = [r for r in recs if r["suite"] == suite]
        for what, ylabel, key in (("accuracy", "mean score", "score"), ("tokens", "median tokens", "tokens")):
            fig, ax = plt.subplots(figsize=(6, 4))
            for method in sorted({r["method"] for r in rs}):
                by_len: dict[int, list[float]] = defaultdict(list)
                for r in rs:
                    if r["method"] == method:
                        by_len[r["context_chars"] if r["length"] == 0 else r["length"]].append(r.get(key, 0) or 0)
                xs = sorted(by_len)
                ys = [statistics.fmean(by_len[x]) if key == "score" else _median(by_len[x]) for x in xs]
                ax.plot(xs, ys, marker="o", label=method)
            ax.set_xscale("log")
            ax.set_xlabel("context length (characters)")
            ax.set_ylabel(ylabel)
            if key == "score":
                ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{suite}: {ylabel} vs context length")
            ax.grid(True, alpha=0.3)
            ax.legend()
            fig.tight_layout()
            path = out / f"{what}_{suite}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            files.append(path)
    return files


def render(recs: list[dict[str, Any]], meta: dict[str, Any], plots: list[Path]) -> str:
    lines = ["# Benchmark report", ""]
    if any(r.get("dry_run") for r in recs):
        lines += ["> **Dry run**: the model was replaced by scripted replies computed from the gold answers. "
                  "These figures test the harness; they are not model results.", ""]
    for inv in meta.get("invocations", []):
        lines.append(f"- {inv['date']} · {inv['machine']} · model `{inv['model']}` · methods "
                     f"{', '.join(inv['methods'])} · `{inv['command']}`")
        if inv.get("direct_window") and any(m.startswith("direct") for m in inv.get("methods", [])):
            lines.append(f"  - direct baseline: one call, the context cut to the window "
                         f"{'at the head' if inv['direct_window'] == 'start' else 'at a random offset per task'} "
                         f"(`--direct-window {inv['direct_window']}`)")
        ep = inv.get("rlms_endpoint")
        if ep:
            lines.append(f"  - `rlms` ran on a server started for this run: model `{ep.get('model')}` at "
                         f"{ep.get('base_url')} (ready in {ep.get('started_s')}s)")
        for m, why in (inv.get("skipped") or {}).items():
            lines.append(f"  - baseline `{m}` skipped: {why}")
    lines += ["", "## Summary", "",
              "| suite | method | model | tasks | accuracy | mean score | median tokens | median time (s) | "
              "cost (USD) | median iterations | notes |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary_rows(recs):
        lines.append(f"| {r['suite']} | {r['method']} | `{r['model']}` | {r['n']} | {r['accuracy']:.0%} | "
                     f"{r['score']:.2f} | {r['median_tokens']:,.0f} | {r['median_time']:.1f} | "
                     f"{'unknown' if r['cost'] is None else format(r['cost'], '.4f')} | {r['median_iterations']:g} | {_cell(r['notes'], 300)} |")
    lines += ["", "## Score by context length", "", "| suite | method | length | tasks | mean score |",
              "|---|---|---|---|---|"]
    cells: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in recs:
        cells[(r["suite"], r["method"], r["context_chars"] if r["length"] == 0 else r["length"])].append(r["score"])
    for (suite, method, length), sc in sorted(cells.items()):
        lines.append(f"| {suite} | {method} | {_fmt_len(length)} | {len(sc)} | {statistics.fmean(sc):.2f} |")
    seed = [r for r in recs if r["suite"] == "seed-cases"]
    if seed:
        lines += ["", "## Seed cases", "", "| case | file | method | queries | passed | match types |",
                  "|---|---|---|---|---|---|"]
        by_case: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in seed:
            m = r.get("meta") or {}
            by_case[(str(m.get("case")), str(m.get("file")), r["method"])].append(r)
        for (case, file, method), g in sorted(by_case.items()):
            kinds = ", ".join(sorted({str((r.get("meta") or {}).get("match_type")) for r in g}))
            lines.append(f"| {_cell(case)} | {file} | {method} | {len(g)} | {sum(r['correct'] for r in g)} | "
                         f"{kinds} |")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Tasks", "", "| suite | task | method | depth | gold | answer | score | status | iterations | "
              "tokens (root/sub) | time (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        depth = f"{r['depth']:.0%}" if r.get("depth") is not None else ""
        lines.append(f"| {r['suite']} | {r['task_id']} | {r['method']} | {depth} | {_cell(r['gold'], 40)} | "
                     f"{_cell(r.get('answer'), 50)} | {r['score']:.2f} | {r.get('status')} | "
                     f"{r.get('iterations', 0)} | {r.get('tokens_root', 0):,}/{r.get('tokens_sub', 0):,} | "
                     f"{r.get('elapsed_s', 0):.1f} |")
    return "\n".join(lines) + "\n"


def write_report(out: str | Path) -> Path:
    """Rebuild ``report.md`` and the plots in ``out`` from its JSONL; returns the report path."""
    out = Path(out)
    recs = load_records(out)
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    plots = plot(recs, out) if recs else []
    path = out / REPORT
    path.write_text(render(recs, meta, plots), encoding="utf-8")
    log.info("bench: report written to %s", path)
    return path
