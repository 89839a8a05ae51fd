"""The benchmark harness: the paper's tasks, the seed's demos, baselines side by side.

``rlm bench SUITE`` generates seeded tasks with exact ground truth (:mod:`.tasks` and the
suite modules), runs every method on them (:mod:`.runner`: the RLM, the ``direct``
baseline, and the official ``rlms`` package when it is importable), scores the answers
(:mod:`.scoring`), appends one JSON line per task and method to ``results.jsonl``, and
writes a Markdown report with plots (:mod:`.report`). ``rlm bench report DIR`` rebuilds
the report from the JSONL.
"""

from __future__ import annotations

from .scoring import score
from .tasks import SUITES, Task, generate

__all__ = ["SUITES", "Task", "generate", "score"]
