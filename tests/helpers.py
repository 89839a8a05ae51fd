"""Small helpers shared by the engine tests."""

from __future__ import annotations

import json
from typing import Any

from contextbox import RLM, Config, Context
from contextbox.providers import ScriptedProvider


def cmd(op: str, **args: Any) -> str:
    return json.dumps({"op": op, **args})


def make_rlm(replies: list[Any], *, levels: str = "l1", config: Config | None = None, **limits: Any) -> RLM:
    cfg = config or Config()
    return RLM(model=ScriptedProvider(replies), config=cfg, levels=levels, limits=limits or None, store=None)


def run(replies: list[Any], context: Any = "alpha beta\ngamma delta\n", question: str = "q?", **kw: Any):
    rlm = make_rlm(replies, **kw)
    ctx = context if isinstance(context, Context) else Context.from_value(context)
    return rlm.run(question, ctx), rlm


def outputs(result) -> list[str]:
    return [e.data.get("output") or e.data.get("message") for e in result.events
            if e.type in ("action_end", "refused")]


def fed_back(rlm: RLM) -> list[str]:
    """The user messages the scripted model received, in order (excluding the first)."""
    reqs = rlm.root.requests
    return [m["content"] for m in reqs[-1] if m["role"] == "user"][1:] if reqs else []


class StubExecutor:
    """A stand-in for a code level's executor (``engine.executor_factory`` returns its class): every block
    answers ``"ran"``; a test subclasses it and overrides ``run`` (or ``close``) for what it checks."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def run(self, action: Any) -> Any:
        from contextbox.executors import ActionOutput

        return ActionOutput("ran")

    def close(self) -> None:
        pass

