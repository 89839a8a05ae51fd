"""The run log: every event of every run, behind a small interface.

``RunStore`` has four methods; :class:`JsonlRunStore` keeps one ``<run_id>.jsonl`` file per
run (one event per line, flushed as it happens, so a crashed run keeps what it did).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from ..errors import UsageError
from ..types import Event

log = logging.getLogger("contextbox")


class RunStore(Protocol):
    def append(self, event: Event) -> None: ...

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]: ...

    def events(self, run_id: str) -> list[Event]: ...

    def close(self) -> None: ...


def summarize(events: list[Event]) -> dict[str, Any]:
    """One row for a run: id, time, question, model, status, answer, iterations, tokens, cost
    (``None`` when a model's price is unknown)."""
    out: dict[str, Any] = {"run_id": events[0].run_id if events else "", "status": "running"}
    for ev in events:
        if ev.path != "0":
            continue
        if ev.type == "run_start":
            out.update(started=ev.ts, question=ev.data.get("question"), model=ev.data.get("model"),
                       levels=ev.data.get("levels"))
            if ev.data.get("session_id"):
                out["session_id"] = ev.data["session_id"]
        elif ev.type == "run_end":
            out.update(status=ev.data.get("status"), answer=ev.data.get("answer"),
                       iterations=ev.data.get("iterations"), elapsed_s=ev.data.get("elapsed_s"),
                       tokens=ev.data.get("usage", {}).get("total", {}).get("total_tokens"),
                       cost_usd=ev.data.get("usage", {}).get("total", {}).get("cost_usd"),
                       reason=ev.data.get("reason"))
    return out


def _private_opener(path: str, flags: int) -> int:
    """Open (creating) for this user only: run logs hold questions, contexts and answers."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


class JsonlRunStore:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise UsageError(f"bad run id {run_id!r}")
        return self.root / f"{run_id}.jsonl"

    def append(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), ensure_ascii=False, default=str) + "\n"
        with self._lock:
            f = self._files.get(event.run_id)
            if f is None:
                from .sqlite import private_dir

                private_dir(self.root, "the run log")
                f = self._files[event.run_id] = open(self._path(event.run_id), "a", encoding="utf-8",
                                                     opener=_private_opener)
            f.write(line)
            f.flush()
            if event.type == "run_end" and event.path == "0":
                f.close()
                del self._files[event.run_id]

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()

    def events(self, run_id: str) -> list[Event]:
        p = self._path(run_id)
        if not p.exists():
            matches = sorted(self.root.glob(f"{run_id}*.jsonl")) if self.root.exists() else []
            if len(matches) > 1 and run_id:
                from .sqlite import ambiguous

                raise UsageError(ambiguous(run_id, [m.stem for m in matches]))
            if len(matches) != 1:
                raise UsageError(f"no run {run_id!r} in {self.root}; see 'rlm runs list'")
            p = matches[0]
        out = []
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(Event.from_dict(json.loads(line)))
                except (json.JSONDecodeError, TypeError) as e:
                    log.warning("%s:%d: unreadable event line skipped (%s)", p, n, e)
        return out

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        if not self.root.exists():
            return []
        files = sorted(self.root.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        return [summarize(self.events(p.stem)) for p in files]
