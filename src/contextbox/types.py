"""The few plain types everything else passes around."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["root", "sub"]

#: Every event type the engine emits, in the order a normal run emits them.
EVENT_TYPES = (
    "run_start",
    "iteration_start",
    "lm_request",
    "lm_response",
    "action_start",
    "action_end",
    "refused",
    "sub_call",
    "batch_progress",
    "retry",
    "failover",
    "warning",
    "aid",
    "compacted",
    "final",
    "error",
    "run_end",
)

STATUSES = ("answered", "max_iterations", "budget_exceeded", "timeout", "cancelled", "failed")


_ATOMS = (str, int, float, bool, type(None))


def _plain(v: Any) -> Any:
    """``v`` copied as :func:`dataclasses.asdict` copies a field's value."""
    t = type(v)
    if t in _ATOMS:
        return v
    if t is dict:
        return {_plain(k): _plain(x) for k, x in v.items()}
    if t is list:
        return [_plain(x) for x in v]
    return asdict(_Box(v))["v"]  # anything else (tuples, dataclasses, other objects): asdict's own rules


@dataclass
class _Box:
    v: Any


@dataclass
class Event:
    """One thing that happened in a run. ``data`` is JSON-serialisable.

    ``path`` locates the event in the call tree: ``"0"`` is the root run, ``"0.2"`` its
    third child, and so on. ``seq`` is the event's position in its run's stream.
    """

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    seq: int = 0
    ts: float = field(default_factory=time.time)
    path: str = "0"

    def to_dict(self) -> dict[str, Any]:
        """The event as a dict, ``data`` copied as :func:`dataclasses.asdict` would (nested dicts,
        lists and tuples copied, dataclasses turned into dicts) without its per-value deep copies:
        every event of every run goes through here (run logs, Ray, the server)."""
        return {"type": self.type, "data": _plain(self.data), "run_id": self.run_id, "seq": self.seq, "ts": self.ts,
                "path": self.path}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(**{k: d[k] for k in ("type", "data", "run_id", "seq", "ts", "path") if k in d})


@dataclass
class Completion:
    """What a provider returns for one call."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    #: True when the token counts were estimated because the provider gave none.
    estimated: bool = False
    model: str = ""
    finish_reason: str | None = None
    #: the endpoint that served the call (a pool's ``name#i@base_url``), when known
    endpoint: str | None = None


@dataclass
class Usage:
    """One model call, as recorded."""

    role: Role
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    #: None when the model's price is unknown (see :mod:`contextbox.pricing`), never a made-up 0
    cost_usd: float | None = 0.0
    estimated: bool = False
    depth: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class UsageTotals:
    """Sums over calls. ``cost_usd`` is None as soon as one call's price is unknown
    (``cost_unknown_calls`` says how many); ``known_cost_usd`` is what the priced calls cost."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    known_cost_usd: float = 0.0
    cost_unknown_calls: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float | None:
        return None if self.cost_unknown_calls else self.known_cost_usd

    def add(self, u: Usage) -> None:
        self.calls += 1
        self.input_tokens += u.input_tokens
        self.output_tokens += u.output_tokens
        if u.cost_usd is None:
            self.cost_unknown_calls += 1
        else:
            self.known_cost_usd += u.cost_usd
        self.estimated = self.estimated or u.estimated

    def to_dict(self) -> dict[str, Any]:
        cost = self.cost_usd
        return {"calls": self.calls, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cost_usd": None if cost is None else round(cost, 8), "cost_unknown_calls": self.cost_unknown_calls,
                "estimated": self.estimated, "total_tokens": self.total_tokens}


@dataclass
class UsageReport:
    """All calls of a run and their totals per role, per model and per depth."""

    calls: list[Usage] = field(default_factory=list)

    def add(self, u: Usage) -> None:
        self.calls.append(u)

    def _group(self, key) -> dict[str, UsageTotals]:
        out: dict[str, UsageTotals] = {}
        for u in self.calls:
            out.setdefault(str(key(u)), UsageTotals()).add(u)
        return out

    @property
    def total(self) -> UsageTotals:
        t = UsageTotals()
        for u in self.calls:
            t.add(u)
        return t

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.to_dict(),
            "by_role": {k: v.to_dict() for k, v in self._group(lambda u: u.role).items()},
            "by_model": {k: v.to_dict() for k, v in self._group(lambda u: u.model).items()},
            "by_depth": {k: v.to_dict() for k, v in self._group(lambda u: u.depth).items()},
        }


#: the cost limit of a run whose models all have a known price, when none is set
DEFAULT_MAX_COST_USD = 5.0
#: the time limit of a run, when none is set
DEFAULT_TIMEOUT_S = 1800.0
#: output tokens a call reserves against the budgets when it sets no ``max_tokens``
DEFAULT_RESERVE_OUTPUT_TOKENS = 4096


@dataclass
class Limits:
    """Per-run limits, shared by the whole call tree (children spend from the same budget).

    ``max_total_tokens``: ``None`` is unlimited. ``max_cost_usd``: ``None`` means the default,
    :data:`DEFAULT_MAX_COST_USD` when every model of the run has a known price (no limit
    otherwise: an unknown cost cannot be capped); ``inf`` is no limit. ``timeout_s``: ``None``
    (or ``inf``) is unlimited. ``reserve_output_tokens``: what a call that sets no
    ``max_tokens`` reserves for its reply (see :mod:`contextbox.budget`).
    """

    max_iterations: int = 20
    max_output_chars: int = 4000
    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    max_consecutive_errors: int = 5
    #: characters of each sub-call's prompt and answer kept in its ``sub_call`` event
    record_chars: int = 2000
    reserve_output_tokens: int = DEFAULT_RESERVE_OUTPUT_TOKENS
    #: bounds on the host's work for one L1 operation (an L1 command or a code cell's helper call), see
    #: :mod:`contextbox.host_limits`: a ``text=`` argument, a result's pieces and characters, ``max``/``k`` hits
    max_host_input_chars: int = 20_000_000
    max_host_result_chars: int = 20_000_000
    max_host_items: int = 1_000_000
    max_host_hits: int = 10_000
    #: the longest final answer, in characters (FINAL, FINAL_VAR, final, final_var)
    max_answer_chars: int = 1_000_000

    def replace(self, **kw: Any) -> Limits:
        d = asdict(self)
        for k, v in kw.items():
            if k not in d:
                from .errors import UsageError

                raise UsageError(f"unknown limit {k!r}; known limits: {', '.join(d)}")
            if v is not None:
                d[k] = v
        return Limits(**d)


@dataclass
class Step:
    """One action of a run and what came of it, as the model saw it."""

    iteration: int
    level: str
    op: str
    input: Any
    output: str
    error: bool = False
    path: str = "0"

    @classmethod
    def from_events(cls, events: list[Event]) -> list[Step]:
        steps, inputs = [], {}
        for ev in events:
            d = ev.data
            key = (ev.path, d.get("iteration"), d.get("index"))
            if ev.type == "action_start":
                inputs[key] = d.get("args", d.get("code"))
            elif ev.type in ("action_end", "refused"):
                steps.append(cls(d.get("iteration", 0), d.get("level", ""), d.get("op", ""), inputs.get(key),
                                 d.get("output", d.get("message", "")), bool(d.get("error", ev.type == "refused")),
                                 ev.path))
        return steps


@dataclass
class RunResult:
    answer: str | None
    status: str
    iterations: int
    usage: UsageReport
    run_id: str
    reason: str | None = None
    elapsed_s: float = 0.0
    events: list[Event] = field(default_factory=list, repr=False)
    #: with ``answer_type=``: the answer parsed into that type (``answer`` is then its JSON); else None
    parsed: Any = None

    @property
    def answered(self) -> bool:
        return self.status == "answered"

    @property
    def steps(self) -> list[Step]:
        return Step.from_events(self.events)

    def to_dict(self, steps: bool = False) -> dict[str, Any]:
        d = {
            "answer": self.answer,
            #: true when ``answer`` is what a run that ended without an answer could offer, not a final answer
            "partial": self.status != "answered" and self.answer is not None,
            "status": self.status,
            "reason": self.reason,
            "iterations": self.iterations,
            "usage": self.usage.to_dict(),
            "run_id": self.run_id,
            "elapsed_s": round(self.elapsed_s, 4),
        }
        if steps:
            d["steps"] = [asdict(s) for s in self.steps]
        return d


@dataclass
class RLMCompletion:
    """What ``RLM.completion(context, root_prompt=...)`` returns: the official ``rlms`` package's
    ``RLMChatCompletion`` shape (``response``, ``root_model``, ``prompt``, ``usage_summary``,
    ``execution_time``, ``error``), plus the whole :class:`RunResult` as ``result``."""

    root_model: str
    prompt: Any
    response: str
    usage_summary: UsageReport
    execution_time: float
    result: RunResult = field(repr=False)
    metadata: dict[str, Any] | None = None
    error: str | None = None

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def parsed(self) -> Any:
        return self.result.parsed

    @classmethod
    def from_result(cls, root_model: str, prompt: Any, res: RunResult) -> RLMCompletion:
        return cls(root_model, prompt, res.answer or "", res.usage, res.elapsed_s, res,
                   metadata=res.to_dict(), error=None if res.status == "answered" else (res.reason or res.status))

    def to_dict(self) -> dict[str, Any]:
        out = {"root_model": self.root_model, "prompt": self.prompt if isinstance(self.prompt, (str, dict)) else
               str(self.prompt), "response": self.response, "usage_summary": self.usage_summary.to_dict(),
               "execution_time": self.execution_time, "run_id": self.run_id, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        return out
