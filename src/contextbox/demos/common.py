"""What the demos share: where their data is, and what a run read.

War and Peace comes from ``--text``, else ``$CONTEXTBOX_DATA/war_and_peace.txt``, else
``../shared/data/war_and_peace.txt`` (beside the current directory or the source tree),
else a one-time download of Project Gutenberg #2600 into the cache directory.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ContextError

log = logging.getLogger("contextbox")

GUTENBERG_URL = "https://www.gutenberg.org/cache/epub/2600/pg2600.txt"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "contextbox"


def find_text(explicit: str | None = None) -> Path:
    """Where War and Peace is, downloading it once if it is nowhere on disk."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ContextError(f"--text file not found: {p}")
        return p
    here = Path(__file__).resolve().parents[4]  # the source tree's parent, for a checkout
    for base in (os.environ.get("CONTEXTBOX_DATA"), Path.cwd().parent / "shared" / "data",
                 Path.cwd() / "shared" / "data", here / "shared" / "data"):
        if base and (Path(base) / "war_and_peace.txt").is_file():
            return Path(base) / "war_and_peace.txt"
    cached = cache_dir() / "data" / "war_and_peace.txt"
    if cached.is_file():
        return cached
    return download_war_and_peace(cached)


def download_war_and_peace(dest: Path) -> Path:
    """Fetch Project Gutenberg #2600 and keep the body text (between the START/END markers)."""
    log.warning("downloading War and Peace from %s", GUTENBERG_URL)
    try:
        with urllib.request.urlopen(GUTENBERG_URL, timeout=60) as r:  # noqa: S310 - fixed https URL
            raw = r.read().decode("utf-8", "replace")
    except OSError as e:
        raise ContextError(
            f"War and Peace is not on disk and the download failed ({e}); pass --text PATH "
            "or set CONTEXTBOX_DATA to a folder holding war_and_peace.txt"
        ) from None
    start = raw.find("*** START OF")
    end = raw.find("*** END OF")
    body = raw[raw.find("\n", start) + 1 : end] if start >= 0 and end > start else raw
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    tmp.write_text(body.strip() + "\n", encoding="utf-8")
    tmp.replace(dest)
    return dest


def read_share(events: list[Any], total: int) -> float:
    """Share of the context the root saw, from the ``read`` ranges of its actions."""
    spans = sorted((max(0, a), min(total, b)) for e in events if e.type == "action_end" and e.path == "0"
                   for a, b in e.data.get("read") or [])
    covered, end = 0, 0
    for a, b in spans:
        if b > end:
            covered += b - max(a, end)
            end = b
    return covered / total if total else 0.0


# ---------------------------------------------------------------------- data files
def data_dirs() -> list[Path]:
    """Where the shared data folder may be: ``$CONTEXTBOX_DATA``, then ``../shared/data``."""
    here = Path(__file__).resolve().parents[4]
    out = []
    for base in (os.environ.get("CONTEXTBOX_DATA"), Path.cwd().parent / "shared" / "data",
                 Path.cwd() / "shared" / "data", here / "shared" / "data"):
        if base:
            out.append(Path(base))
    return out


def data_file(name: str) -> Path | None:
    """A file of the shared data folder (``seed/detective-mystery.txt``), or None."""
    for base in data_dirs():
        if (base / name).is_file():
            return base / name
    return None


def need_data_file(name: str) -> Path:
    p = data_file(name)
    if p is None:
        raise ContextError(f"{name} is not on disk: set CONTEXTBOX_DATA to the folder holding it "
                           "(the project's ../shared/data)")
    return p


# ---------------------------------------------------------------------- building and reporting runs
def make_rlm(args: Any, *, levels: str | None = None, root: Any = None, sub_model: Any = None,
             limits: dict[str, Any] | None = None, aids: bool = True) -> Any:
    """An RLM for a demo: ``--model`` (default: the embedded model), ``--sub-model``, ``--levels``
    (else ``levels``), recorded in the runs store ``rlm runs`` and ``rlm serve`` read. ``aids=False``
    (a fixed pipeline) turns the small-model aids off: no model reads their hints."""
    from ..cli import _store
    from ..config import Aids, Config
    from ..engine import RLM

    config = Config.load(getattr(args, "config", None), model=getattr(args, "model", None),
                         sub_model=getattr(args, "sub_model", None), runs_dir=getattr(args, "runs_dir", None))
    if not config.model:
        config.model = "local"
    if not aids:
        config.aids = Aids(repetition=False, zero_hits=False, too_many_hits=0, grounding=False, first_turn=False,
                           stall_turns=0, cut_answer=False, capped_count=False, verify_restated=False,
                           table_route=False, compact=False, ranked_fallback=False, case_route=False,
                           linked_passages=False)
    lv = getattr(args, "levels", None) or levels
    return RLM(model=root, sub_model=sub_model, config=config, levels=lv, limits=limits,
               store=_store(config, getattr(args, "runs_dir", None)))


def is_local(spec: str | None) -> bool:
    return not spec or spec == "local" or spec.startswith("local:")


@dataclass
class Check:
    """One verified fact: what was asked, the exact ground truth, what the run answered, the score (1 = exact)."""

    what: str
    expected: str
    got: str
    score: float

    @property
    def ok(self) -> bool:
        return self.score >= 1.0


@dataclass
class Outcome:
    """What a demo prints: its checks, its runs, and the measures of them."""

    demo: str
    checks: list[Check]
    results: list[Any]
    context_chars: int
    plan: str
    models: str
    read_share: float | None = None
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def tokens(self, role: str) -> int:
        return sum(r.usage.to_dict()["by_role"].get(role, {}).get("total_tokens", 0) for r in self.results)

    @property
    def cost(self) -> float | None:
        total = 0.0
        for r in self.results:
            c = r.usage.total.cost_usd
            if c is None:
                return None
            total += c
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"demo": self.demo, "verified": self.verified, "plan": self.plan, "models": self.models,
                "checks": [asdict(c) | {"ok": c.ok} for c in self.checks],
                "runs": [{"run_id": r.run_id, "status": r.status, "iterations": r.iterations, "answer": r.answer}
                         for r in self.results],
                "iterations": sum(r.iterations for r in self.results),
                "tokens_root": self.tokens("root"), "tokens_sub": self.tokens("sub"), "cost_usd": self.cost,
                "context_chars": self.context_chars, "read_share": self.read_share,
                "seconds": round(self.seconds, 2), **self.data}


def fmt_cost(cost: float | None) -> str:
    return "cost unknown (a model without a known price)" if cost is None else f"${cost:.4f}"


def report(out: Outcome, as_json: bool = False) -> int:
    """Print the outcome (text, or one JSON object); exit code 0 when every check is exact."""
    if as_json:
        print(json.dumps(out.to_dict(), indent=2, default=str))
        return 0 if out.verified else 1
    for line in out.lines:
        print(line)
    width = max((len(c.what) for c in out.checks), default=0)
    for c in out.checks:
        mark = "right" if c.ok else ("WRONG" if c.score == 0 else f"partly right ({c.score:.0%})")
        print(f"  {c.what:<{width}}  {mark}: {c.got}" + ("" if c.ok else f"  (expected {c.expected})"))
    n_ok = sum(c.ok for c in out.checks)
    print(f"verified: {n_ok}/{len(out.checks)} exact against the ground truth"
          + (" — all right" if out.verified else ""))
    ids = ", ".join(r.run_id + ("" if r.status == "answered" else f" ({r.status}: {r.reason})")
                    for r in out.results)
    share = "" if out.read_share is None else f" · read {out.read_share:.2%} of the context"
    print(f"plan: {out.plan} · models: {out.models}")
    print(f"run{'s' if len(out.results) != 1 else ''}: {ids or '-'} · iterations: "
          f"{sum(r.iterations for r in out.results)} · tokens: root {out.tokens('root'):,}, sub "
          f"{out.tokens('sub'):,} · {fmt_cost(out.cost)}{share} · {out.seconds:.1f}s")
    return 0 if out.verified else 1


def run_share(results: list[Any], total: int) -> float:
    """The share of the context the runs' root actions read, over all runs (ranges merged)."""
    events = [e for r in results for e in r.events]
    return read_share(events, total)


#: the name of the root of a fixed pipeline (free, like every scripted model)
PLAN_NAME = "scripted:fixed-plan"


def fixed_plan(commands: list[dict[str, Any]]) -> Any:
    """A root "model" that sends ``commands`` in order and costs nothing: a fixed pipeline run through
    the engine (so it is recorded, budgeted and replayable like any run), said so in the output."""
    from ..providers.scripted import ScriptedProvider

    replies = [{"text": json.dumps(c, ensure_ascii=False), "input_tokens": 0, "output_tokens": 0}
               for c in commands]
    return ScriptedProvider(replies, name=PLAN_NAME)


def sub_spec(args: Any) -> str:
    """The sub-model of a fixed pipeline: ``--sub-model``, else ``--model``, else the embedded model."""
    return getattr(args, "sub_model", None) or getattr(args, "model", None) or "local"
