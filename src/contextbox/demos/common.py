"""What the demos share: where their data is, and what a run read.

War and Peace comes from ``--text``, else ``$CONTEXTBOX_DATA/war_and_peace.txt``, else
``../shared/data/war_and_peace.txt`` (beside the current directory or the source tree),
else a one-time download of Project Gutenberg #2600 into the cache directory.
"""

from __future__ import annotations

import logging
import os
import urllib.request
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
