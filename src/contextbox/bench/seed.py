"""``seed-cases``: the seed project's benchmark case files (``shared/data/seed/*.json``).

A case file names one context source and its queries::

    {"name": ..., "category": ..., "description": ...,
     "context": "inline text"                                   # or
     "context_generator": "generate_log" | "repeat_with_needle", "context_params": {...}   # or
     "context_url": "/samples/large-logs" | "/samples/war-and-peace" | ...,
     "queries": [{"query": ..., "expected": ..., "match_type": ..., "regex_pattern": ...}]}

``context_url`` names a demo sample of ``rlm serve`` (:mod:`contextbox.server.samples`);
``/samples/war-and-peace`` is the novel from the data folder, without the demo's password.
Generators (deterministic, seeded by the case name):

``generate_log``        ``total_lines`` lines, ``distribution`` = exact count per level
``repeat_with_needle``  ``total_lines`` filler lines (``{n}`` = line number, ``{sector}`` = 1..12),
                        line number ``needle_line`` (1-based) replaced by ``needle``

Each query keeps its own match rule (scorer ``seed`` in :mod:`.scoring`): ``contains``,
``contains_all``, ``regex`` and ``exact``. :func:`plan` validates every file and says what
would run (``rlm bench seed-cases --dry-run``).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import string
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .tasks import Task, data_dir, read_novel, register

MATCH_TYPES = ("contains", "contains_all", "regex", "exact")
GENERATORS = ("generate_log", "repeat_with_needle")
URLS = ("/samples/large-logs", "/samples/response-times", "/samples/war-and-peace", "/samples/detective")
SERVICES = ["auth", "api", "billing", "search", "worker", "scheduler"]
LOG_MESSAGES = {
    "INFO": ["request served in {ms} ms", "user {u} signed in", "job {j} finished", "cache warmed"],
    "DEBUG": ["cache lookup key={k}", "query plan chosen for {j}", "heartbeat from node {u}"],
    "WARN": ["slow response: {ms} ms", "retrying job {j}", "disk usage at {pct} percent"],
    "ERROR": ["job {j} failed: connection refused", "request from user {u} failed with code 500"],
    "FATAL": ["worker {u} crashed; restarting", "out of memory in job {j}"],
}


class SeedCaseError(UsageError):
    """A case file that cannot be run: the message names the file and what is wrong."""


def seed_dir(data: Path | None = None) -> Path:
    d = data_dir(data) / "seed"
    if not d.is_dir():
        raise UsageError(f"no seed/ folder in the data folder {d.parent}; pass --data DIR or set CONTEXTBOX_DATA")
    return d


def case_files(data: Path | None = None) -> list[Path]:
    files = sorted(seed_dir(data).glob("*.json"))
    if not files:
        raise UsageError(f"no *.json case files in {seed_dir(data)}")
    return files


def _require(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise SeedCaseError(f"{path.name}: {msg}")


def load_case(path: Path) -> dict[str, Any]:
    """The case in ``path``, checked: one context source, known generator or URL, valid queries."""
    try:
        case = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SeedCaseError(f"{path.name}: not readable JSON ({e})") from None
    _require(isinstance(case, dict), path, "the top level must be an object")
    _require(isinstance(case.get("name"), str) and bool(case["name"]), path, "'name' must be a non-empty string")
    sources = [k for k in ("context", "context_generator", "context_url") if k in case]
    _require(len(sources) == 1, path, f"give exactly one of context, context_generator, context_url (got {sources})")
    if "context" in case:
        _require(isinstance(case["context"], str) and bool(case["context"]), path, "'context' must be text")
    elif "context_generator" in case:
        gen = case["context_generator"]
        _require(gen in GENERATORS, path, f"unknown context_generator {gen!r}; known: {', '.join(GENERATORS)}")
        _require(isinstance(case.get("context_params"), dict), path, "'context_params' must be an object")
    else:
        _require(case["context_url"] in URLS, path,
                 f"unknown context_url {case['context_url']!r}; known: {', '.join(URLS)}")
    queries = case.get("queries")
    _require(isinstance(queries, list) and bool(queries), path, "'queries' must be a non-empty list")
    for i, q in enumerate(queries):
        where = f"query {i + 1}"
        _require(isinstance(q, dict) and isinstance(q.get("query"), str) and bool(q["query"].strip()), path,
                 f"{where}: 'query' must be a non-empty string")
        mt = q.get("match_type")
        _require(mt in MATCH_TYPES, path, f"{where}: match_type {mt!r} is not one of {', '.join(MATCH_TYPES)}")
        exp = q.get("expected")
        if mt == "contains_all":
            _require(isinstance(exp, list) and bool(exp) and all(isinstance(x, str) and x for x in exp), path,
                     f"{where}: contains_all needs 'expected' as a list of non-empty strings")
        else:
            _require(isinstance(exp, str) and bool(exp), path, f"{where}: {mt} needs 'expected' as a string")
        if mt == "regex":
            pattern = q.get("regex_pattern", exp)
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise SeedCaseError(f"{path.name}: {where}: bad regex {pattern!r} ({e})") from None
    return case


def _int_param(params: dict[str, Any], key: str, path: Path, lo: int = 1) -> int:
    v = params.get(key)
    _require(isinstance(v, int) and not isinstance(v, bool) and v >= lo, path,
             f"context_params.{key} must be an integer ≥ {lo} (got {v!r})")
    return int(v)


def generate_log(params: dict[str, Any], rng: random.Random, path: Path) -> str:
    """``total_lines`` log lines with exactly ``distribution[LEVEL]`` lines of each level, shuffled."""
    total = _int_param(params, "total_lines", path)
    dist = params.get("distribution")
    _require(isinstance(dist, dict) and bool(dist), path, "context_params.distribution must be an object")
    for level, count in dist.items():
        _require(level in LOG_MESSAGES, path, f"unknown log level {level!r}; known: {', '.join(LOG_MESSAGES)}")
        _require(isinstance(count, int) and count >= 0, path, f"distribution.{level} must be a count ≥ 0")
    _require(sum(dist.values()) == total, path,
             f"the distribution sums to {sum(dist.values())}, not total_lines={total}")
    levels = [lvl for lvl, c in dist.items() for _ in range(c)]
    rng.shuffle(levels)
    t = dt.datetime(2024, 1, 15, 8, 0, 0)
    out = []
    for level in levels:
        t += dt.timedelta(seconds=rng.randint(1, 20))
        msg = rng.choice(LOG_MESSAGES[level]).format(
            ms=rng.randint(5, 4000), u=rng.randint(100, 999), j=f"j{rng.randint(1000, 9999)}",
            k="".join(rng.choices(string.ascii_lowercase, k=8)), pct=rng.randint(70, 99))
        out.append(f"{t:%Y-%m-%d %H:%M:%S} [{level}] {rng.choice(SERVICES)}: {msg}")
    return "\n".join(out) + "\n"


def repeat_with_needle(params: dict[str, Any], path: Path) -> str:
    """``total_lines`` filler lines; line ``needle_line`` (1-based) is the needle."""
    total = _int_param(params, "total_lines", path)
    at = _int_param(params, "needle_line", path)
    _require(at <= total, path, f"needle_line {at} is past total_lines {total}")
    filler, needle = params.get("filler_line"), params.get("needle")
    _require(isinstance(filler, str) and bool(filler), path, "context_params.filler_line must be text")
    _require(isinstance(needle, str) and bool(needle), path, "context_params.needle must be text")
    fields = {f for _, f, _, _ in string.Formatter().parse(filler) if f}
    _require(fields <= {"n", "sector"}, path, f"filler_line may use {{n}} and {{sector}} only (has {sorted(fields)})")
    lines = [filler.format(n=n, sector=(n * 7) % 12 + 1) for n in range(1, total + 1)]
    lines[at - 1] = needle
    return "\n".join(lines) + "\n"


def case_context(case: dict[str, Any], path: Path, data: Path | None = None) -> str:
    """The context text of a (validated) case."""
    if "context" in case:
        return str(case["context"])
    if "context_generator" in case:
        params = case["context_params"]
        if case["context_generator"] == "generate_log":
            return generate_log(params, random.Random(f"seed:{case['name']}"), path)
        return repeat_with_needle(params, path)
    from ..server import samples

    url = case["context_url"]
    if url == "/samples/war-and-peace":
        return read_novel("war_and_peace.txt", data)
    if url == "/samples/detective":
        p = seed_dir(data) / "detective-mystery.txt"
        _require(p.is_file(), path, f"{p} not found")
        return p.read_text(encoding="utf-8")
    return samples.sample_text(url.rsplit("/", 1)[1])


def source_of(case: dict[str, Any]) -> str:
    if "context" in case:
        return "inline context"
    if "context_generator" in case:
        return f"generator {case['context_generator']}"
    return f"sample {case['context_url']}"


def load_all(data: Path | None = None) -> tuple[list[tuple[Path, dict[str, Any], str]], list[str]]:
    """Every case file loaded and its context built: ``([(path, case, context)], [error lines])``."""
    ok: list[tuple[Path, dict[str, Any], str]] = []
    errors: list[str] = []
    for path in case_files(data):
        try:
            case = load_case(path)
            ok.append((path, case, case_context(case, path, data)))
        except UsageError as e:
            errors.append(str(e))
    return ok, errors


def plan(data: Path | None = None) -> tuple[list[str], list[str]]:
    """What ``rlm bench seed-cases`` would run: (lines to print, errors), without any model call."""
    cases, errors = load_all(data)
    lines = []
    for path, case, context in cases:
        lines.append(f"{case['name']} ({path.name}): {source_of(case)}, {len(context):,} chars, "
                     f"{len(case['queries'])} quer{'y' if len(case['queries']) == 1 else 'ies'}")
        for q in case["queries"]:
            exp = q.get("regex_pattern", q["expected"]) if q["match_type"] == "regex" else q["expected"]
            lines.append(f"  [{q['match_type']}] {q['query']}  → expected {json.dumps(exp, ensure_ascii=False)}")
    return lines, errors


@register("seed-cases", [0], fixed=True)
def seed_cases(n: int, seed: int, lengths: list[int] | None, data: Path | None) -> list[Task]:
    """Every query of every case file (``n``, ``seed`` and ``lengths`` do not apply: the files fix them)."""
    cases, errors = load_all(data)
    if errors:
        raise UsageError("seed case files are invalid: " + "; ".join(errors))
    tasks: list[Task] = []
    for path, case, context in cases:
        for i, q in enumerate(case["queries"]):
            meta = {"case": case["name"], "file": path.name, "category": case.get("category"),
                    "match_type": q["match_type"], "source": source_of(case)}
            if "regex_pattern" in q:
                meta["regex_pattern"] = q["regex_pattern"]
            tasks.append(Task("seed-cases", f"seed-{path.stem}-{i}", q["query"], context, q["expected"], "seed",
                              len(context), meta=meta))
    return tasks
