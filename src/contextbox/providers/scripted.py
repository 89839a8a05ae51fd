"""``scripted:PATH`` — replies read from a JSON list, returned in order.

The seam for engine tests and dry runs: the file holds a JSON array of strings (or of
objects ``{"text": ..., "input_tokens": n, "output_tokens": n}``), or an object
``{"constrained": true, "context_window": N, "replies": [...]}``: a *constrained* scripted model
says it supports constrained decoding, so the engine sends it the JSON schema of each turn
(recorded in ``options``) exactly as it does for the local model.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from ..errors import ScriptExhausted, UsageError
from ..types import Completion
from .base import estimate_tokens


class ScriptedProvider:
    context_window: int | None = None
    supports_schema = False

    def __init__(self, replies: list[Any], name: str = "scripted", *, constrained: bool = False,
                 context_window: int | None = None):
        self.name = name
        if constrained:
            self.supports_schema = True
        self.context_window = context_window
        #: the options of every call (e.g. ``response_schema``), in order
        self.options: list[dict[str, Any]] = []
        self._replies = list(replies)
        self._next = 0
        self._lock = threading.Lock()
        self.requests: list[list[dict[str, Any]]] = []

    @classmethod
    def from_path(cls, path: str) -> ScriptedProvider:
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"scripted model file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"scripted model file {path} is not a JSON list of replies: {e}") from None
        opts: dict[str, Any] = {}
        if isinstance(data, dict) and isinstance(data.get("replies"), list):
            opts = {"constrained": bool(data.get("constrained")), "context_window": data.get("context_window")}
            data = data["replies"]
        if not isinstance(data, list) or not all(isinstance(r, (str, dict)) for r in data):
            raise UsageError(f"scripted model file {path} must hold a JSON list of reply strings")
        return cls(data, name=f"scripted:{path}", **opts)

    @property
    def remaining(self) -> int:
        return len(self._replies) - self._next

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        with self._lock:
            self.requests.append([dict(m) for m in messages])
            self.options.append({k: v for k, v in opts.items() if not callable(v)})
            if self._next >= len(self._replies):
                raise ScriptExhausted(
                    f"scripted model exhausted after {len(self._replies)} replies; add more replies to the script"
                )
            reply = self._replies[self._next]
            self._next += 1
        if isinstance(reply, dict):
            text = str(reply.get("text", ""))
            if "input_tokens" in reply or "output_tokens" in reply:
                return Completion(
                    text, int(reply.get("input_tokens", 0)), int(reply.get("output_tokens", 0)), model=self.name
                )
        else:
            text = reply
        prompt = "".join(str(m.get("content", "")) for m in messages)
        return Completion(text, estimate_tokens(prompt), estimate_tokens(text), estimated=True, model=self.name)
