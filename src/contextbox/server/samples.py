"""The demo contexts offered by ``GET /samples`` and the visualizer.

* ``war-and-peace`` — the novel with a password hidden half-way (as ``rlm demo war-and-peace``);
  found with :func:`contextbox.demos.common.find_text` (listed as unavailable when it is not on disk).
* ``large-logs`` — 5,000 generated server-log lines (deterministic: a fixed seed).
* ``response-times`` — 4,000 generated HTTP access-log lines with response times (fixed seed).
* ``detective`` — the Ashford Manor murder case file (``shared/data/seed/detective-mystery.txt``).

And one per ``rlm demo`` (the ``demo`` field names it; :mod:`contextbox.demos`): ``explain`` (the
novel with the password, asked the demo's way), ``logs`` (the demo's 5,000-line log with known
answers), ``native`` (its 1,000,000-line log, generated once into the cache on first use),
``family-trees`` (the novel as it is), and ``war-and-peace`` and ``detective`` above.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from ..demos.common import data_file  # the shared data folder: $CONTEXTBOX_DATA, then ../shared/data


@dataclass(frozen=True)
class Sample:
    name: str
    title: str
    description: str
    question: str
    demo: str | None = None


SAMPLES = {s.name: s for s in (
    Sample("war-and-peace", "War and Peace (needle)",
           "Tolstoy's novel, 3.2 MB, with one sentence hidden half-way through.",
           "What is the secret password to the old library?", demo="war-and-peace"),
    Sample("large-logs", "Server logs (generated)",
           "5,000 generated application-log lines: levels, services, error types, client IPs.",
           "Rank the error types from most to least frequent. Show the count for each error type."),
    Sample("response-times", "Response times (generated)",
           "4,000 generated HTTP access-log lines with a response time in milliseconds each.",
           "Which endpoint has the highest average response time, and what is it?"),
    Sample("detective", "The detective story",
           "The Ashford Manor murder case file: witness statements, evidence, background.",
           "Who killed Lord Edward Ashford? Name the murderer and the motive.", demo="detective"),
    Sample("explain", "Demo: explain (direct reading vs RLM)",
           "War and Peace with a password hidden half-way: far over any small model's window "
           "(rlm demo explain compares a direct reading cut to the window with the RLM).",
           "What is the secret password to the old library? Answer with the password only.", demo="explain"),
    Sample("logs", "Demo: log analytics (5,000 lines)",
           "The logs demo's generated access log: levels, IPs, paths, statuses, response times, error types.",
           "Rank the error types (the word after the response time on ERROR lines) from most to least frequent, "
           "with the count of each.", demo="logs"),
    Sample("native", "Demo: native analytics (1,000,000 lines)",
           "The native demo's 1,000,000-line access log (about 90 MB, generated into the cache on first use); "
           "made for L3 native code.",
           "What are the p50, p95 and p99 response times in milliseconds (the NNNms field, nearest rank)?",
           demo="native"),
    Sample("family-trees", "Demo: War and Peace family trees",
           "Tolstoy's novel, 3.2 MB, as it is (rlm demo family-trees runs a fixed pipeline on it).",
           "Who are Prince Andrew Bolkonski's father and sister, and whom does he marry?", demo="family-trees"),
)}




def _war_and_peace_on_disk() -> Path | None:
    from ..demos.common import cache_dir

    p = data_file("war_and_peace.txt")
    if p is None and (cache_dir() / "data" / "war_and_peace.txt").is_file():
        p = cache_dir() / "data" / "war_and_peace.txt"
    return p


def gen_logs(lines: int = 5000, seed: int = 42) -> str:
    rng = random.Random(seed)
    t = datetime(2024, 3, 1, 8, 0, 0)
    services = ["auth", "api", "billing", "search", "worker"]
    errors = [("AuthenticationFailed", 45), ("DatabaseError", 30), ("NetworkTimeout", 15), ("DiskFull", 6),
              ("OutOfMemory", 4)]
    ips = [f"10.{rng.randint(0, 9)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(60)]
    weights = [1 / (i + 1) for i in range(len(ips))]
    infos = ["request served", "cache hit", "cache miss", "user login", "job queued", "job finished",
             "health check ok", "config reloaded"]
    out = []
    for _ in range(lines):
        t += timedelta(milliseconds=rng.randint(5, 900))
        ip = rng.choices(ips, weights)[0]
        svc = rng.choice(services)
        roll = rng.random()
        if roll < 0.08:
            err = rng.choices([e for e, _ in errors], [w for _, w in errors])[0]
            out.append(f"{t:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f" ERROR [{svc}] {err}: request from {ip} failed "
                       f"(code {rng.randint(500, 599)})")
        elif roll < 0.18:
            out.append(f"{t:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f" WARN  [{svc}] slow response to {ip}: "
                       f"{rng.randint(1000, 5000)} ms")
        elif roll < 0.40:
            out.append(f"{t:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f" DEBUG [{svc}] {rng.choice(infos)} id={rng.getrandbits(32):08x}")
        else:
            out.append(f"{t:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f" INFO  [{svc}] {rng.choice(infos)} for {ip}")
    return "\n".join(out) + "\n"


def gen_response_times(lines: int = 4000, seed: int = 7) -> str:
    rng = random.Random(seed)
    t = datetime(2024, 5, 20, 12, 0, 0)
    endpoints = {"GET /api/users": 45, "GET /api/orders": 80, "POST /api/orders": 140, "GET /api/search": 230,
                 "GET /api/reports/monthly": 610, "POST /api/login": 95, "GET /health": 4}
    names = list(endpoints)
    out = []
    for _ in range(lines):
        t += timedelta(milliseconds=rng.randint(20, 1500))
        ep = rng.choice(names)
        ms = max(1, int(rng.gauss(endpoints[ep], endpoints[ep] * 0.25)))
        status = 200 if rng.random() > 0.03 else rng.choice([404, 500, 503])
        method, path = ep.split(" ")
        out.append(f'{t:%Y-%m-%d %H:%M:%S} {method} {path} status={status} time_ms={ms}')
    return "\n".join(out) + "\n"


@functools.lru_cache(maxsize=4)
def sample_text(name: str) -> str:
    """The sample's text (404 for an unknown name, 503 when its file cannot be had)."""
    from ..errors import ContextboxError

    if name == "large-logs":
        return gen_logs()
    if name == "response-times":
        return gen_response_times()
    if name == "detective":
        p = data_file("seed/detective-mystery.txt")
        if p is None:
            raise HTTPException(503, "the detective story (shared/data/seed/detective-mystery.txt) is not on "
                                     "this server; set CONTEXTBOX_DATA to the data folder")
        return p.read_text(encoding="utf-8")
    if name == "logs":
        from ..demos.logs import DEFAULT_LINES, generate

        return generate(DEFAULT_LINES, 7)
    if name == "native":
        from ..demos.native import DEFAULT_LINES as NATIVE_LINES
        from ..demos.native import cached_log

        return cached_log(NATIVE_LINES, 7)[0]
    if name == "family-trees":
        from ..demos.common import find_text as find_novel

        try:
            return find_novel().read_text(encoding="utf-8", errors="replace")
        except ContextboxError as e:
            raise HTTPException(503, str(e)) from None
    if name in ("war-and-peace", "explain"):
        from ..demos.common import find_text
        from ..demos.war_and_peace import insert_needle, make_needle

        try:
            text = find_text().read_text(encoding="utf-8", errors="replace")
        except ContextboxError as e:
            raise HTTPException(503, str(e)) from None
        sentence, _code = make_needle(7)
        return insert_needle(text, sentence, 0.5)[0]
    raise HTTPException(404, f"no sample {name!r}; samples: {', '.join(SAMPLES)}")


def list_samples() -> list[dict[str, Any]]:
    out = []
    for s in SAMPLES.values():
        d: dict[str, Any] = {"name": s.name, "title": s.title, "description": s.description,
                             "question": s.question, "available": True, "chars": None, "demo": s.demo,
                             "command": f"rlm demo {s.demo}" if s.demo else None}
        if s.name in ("war-and-peace", "explain", "family-trees"):
            p = _war_and_peace_on_disk()
            d["available"] = p is not None
            d["chars"] = p.stat().st_size if p else None
        elif s.name == "detective":
            p = data_file("seed/detective-mystery.txt")
            d["available"] = p is not None
            d["chars"] = p.stat().st_size if p else None
        elif s.name == "native":  # known once generated; never generated just to be listed
            from ..demos.common import cache_dir
            from ..demos.native import DEFAULT_LINES as NATIVE_LINES

            p = cache_dir() / "demos" / f"native-{NATIVE_LINES}-7.log"
            d["chars"] = p.stat().st_size if p.is_file() else None
        else:
            d["chars"] = len(sample_text(s.name))
        out.append(d)
    return out
