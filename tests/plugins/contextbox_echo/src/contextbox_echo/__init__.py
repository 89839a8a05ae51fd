"""``echo:WORD`` — a provider that finds WORD in the context, then answers with the line it found.

It knows nothing of contextbox's internals: it is built from ``(config, model)`` like every provider
kind and returns contextbox's public Completion type.
"""

from __future__ import annotations

import json
import re
from typing import Any

from contextbox.types import Completion


class EchoProvider:
    context_window = 100_000

    def __init__(self, config: Any, model: str):
        self.name = f"{config.name}:{model}"
        self.word = model

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        if not any(m["role"] == "assistant" for m in messages):
            text = json.dumps({"op": "find", "text": self.word})
        else:
            found = re.search(r"^- line \d+, offset \d+: (.*)$", messages[-1]["content"], re.M)
            line = found.group(1).strip() if found else "nothing found"
            text = json.dumps({"op": "final", "answer": f"echo plugin saw: {line}"})
        return Completion(text, 10, 5, model=self.name)
