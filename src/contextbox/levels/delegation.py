"""L4: delegation to sub-models — parallel sub-calls, map over chunks, child RLMs.

Commands (each also takes ``store``, ``on`` and ``thought``, like L1)::

    {"op": "llm_query", "prompt": "...", "on": "var"}             one sub-model call
    {"op": "llm_query_batched", "prompts": ["...", "..."]}        several, concurrently
    {"op": "llm_map", "prompt": "...", "on": "var", "chunk_size": 20000}
    {"op": "llm_map", "prompt": "...", "on": "rows", "choices": ["a", "b"], "per_call": 10}   typed
    {"op": "rlm_query", "prompt": "...", "on": "var"}             a child RLM (or "start"/"end")
    {"op": "rlm_query_batched", "prompts": [...], "on": "var"}    several children, concurrently

An untyped ``llm_map`` cuts the text into chunks that end on line boundaries (only a line
longer than the chunk size is cut, and the output says so). A typed one (``choices`` or
``schema``) answers every record — table row, list item, or non-empty line — with a
validated value and stores a :class:`~contextbox.table.Table` (see :mod:`.typed_map`).

Batches run up to ``[delegation] max_concurrency`` calls at once and keep input order; a
failed call leaves ``"error: ..."`` in its slot instead of failing the batch. A limit that
runs out mid-batch (budget, time, cancel) stops new calls, keeps the finished answers, and
ends the run with that status once the action's output is recorded. Every call reserves its
worst case against the run tree's one token/cost ledger before it is sent
(:mod:`contextbox.budget`), so a batch overshoots a limit by at most what its calls in flight
use beyond their reservations. A batch larger than what is left of ``[delegation]
max_sub_calls`` is refused before any call; a running batch emits ``batch_progress`` events
(at most a few a second).

:func:`install` (called by the engine for every run) also gives the code levels the same
machinery: ``session.sub_query`` gets a pre-flight window check and the sub-call budget,
``services["llm_query_batched"]`` runs batches concurrently, ``services["rlm_query"]`` /
``services["rlm_query_batched"]`` start child runs.

A child run is a full :class:`~contextbox.engine.RLM` at ``depth + 1`` on a variable, a
slice or (by default) the parent's context; it spends from the parent's token/cost ledger
and sub-call counter and gets what is left of the parent's time;
its events stream live into the parent's, tagged with its path in the call tree (``0.1``,
``0.1.0``, ...), and its usage is added to the parent's report as it happens. At
``[delegation] max_depth`` ``rlm_query`` degrades to a plain sub-model call.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import ops
from ..config import DelegationSettings
from ..context import Context
from ..errors import (
    BudgetExceeded,
    CommandError,
    ContextboxError,
    ProviderError,
    RunCancelled,
    RunStopped,
    RunTimeout,
)
from ..executors import Action, ActionOutput, Session, register_executor
from ..providers.base import estimate_tokens
from .commands import ANY, INT, STR, Spec, as_text, cap, validate

log = logging.getLogger("contextbox")

LIST = (list,)
L4_SPECS: dict[str, Spec] = {
    "llm_query": Spec({"prompt": STR}, {}, '{"op": "llm_query", "prompt": "Summarise this:", "on": "part"}'),
    "llm_query_batched": Spec({"prompts": LIST}, {},
                              '{"op": "llm_query_batched", "prompts": ["Q1 ...", "Q2 ..."], "store": "answers"}'),
    "llm_map": Spec({"prompt": STR}, {"chunk_size": INT, "choices": ANY, "schema": ANY, "per_call": INT,
                                      "field": STR},
                    '{"op": "llm_map", "prompt": "List the people named here:", "chunk_size": 20000} or '
                    '{"op": "llm_map", "prompt": "Sentiment?", "on": "rows", "choices": ["pos", "neg"]}'),
    "rlm_query": Spec({"prompt": STR}, {"start": INT, "end": INT},
                      '{"op": "rlm_query", "prompt": "Who is the narrator?", "on": "part"}'),
    "rlm_query_batched": Spec({}, {"prompts": LIST, "prompt": STR},
                              '{"op": "rlm_query_batched", "prompt": "Summarise this part", "on": "parts"}'),
    # the case route's typed map over the suspects (case_route.examine)
    "examine": Spec({}, {}, '{"op": "examine"}'),
}
#: llm_map refuses to fan out wider than this (raise chunk_size instead)
MAX_MAP_ITEMS = 2000
#: the default variable for the answers of a batch op without "store"
DEFAULT_STORE = "answers"
#: a running batch reports its progress at most this often (and once at its start and end)
PROGRESS_INTERVAL_S = 0.25
#: how a batch slot whose call was never sent (a stop or cancel came first) begins
NOT_RUN = "error: not run"
_STOPS = {"budget_exceeded": BudgetExceeded, "timeout": RunTimeout, "cancelled": RunCancelled}


# ---------------------------------------------------------------------- budgets
class SubCallCounter:
    """Counts sub-calls of a run against ``limit``; a child's counter also counts in its parent's."""

    def __init__(self, limit: int | None, parent: SubCallCounter | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self) -> None:
        """Take one sub-call or raise :class:`BudgetExceeded` (here or up the tree)."""
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                raise BudgetExceeded(f"max_sub_calls={self.limit} reached ({self.used} sub-calls made)")
            self.used += 1
        if self.parent is not None:
            try:
                self.parent.reserve()
            except BudgetExceeded:
                with self._lock:
                    self.used -= 1
                raise

    def remaining(self) -> tuple[int, int] | None:
        """``(left, limit)`` of the tightest counter up the tree, or None when none has a limit."""
        here = None if self.limit is None else (max(0, self.limit - self.used), self.limit)
        up = self.parent.remaining() if self.parent is not None else None
        if here is None or (up is not None and up[0] < here[0]):
            return up
        return here


def preflight(provider: Any, prompt: str) -> None:
    """Refuse a sub-prompt that cannot fit the sub-model's window (≈4 characters a token)."""
    window = getattr(provider, "context_window", None)
    if not window:
        return
    need = estimate_tokens(prompt)
    if need > window:
        fits = max(1000, int(window * 4 * 0.8))
        raise CommandError(
            f"sub-prompt too large: about {need:,} tokens ({len(prompt):,} characters) but the sub-model "
            f"{getattr(provider, 'name', '?')} has a {window:,}-token window. Send less text: use llm_map "
            f"with \"chunk_size\" of at most {fits:,} characters, or a smaller variable/slice."
        )


# ---------------------------------------------------------------------- batches
@dataclass
class BatchResult:
    """Answers in input order; ``ok[i]`` is false where ``answers[i]`` is an error string."""

    answers: list[str]
    ok: list[bool]
    stop: RunStopped | None = None
    elapsed_s: float = 0.0

    @property
    def finished(self) -> int:
        return sum(self.ok)


def sent_ranges(chunks: list[str], sent: list[bool]) -> list[list[int]]:
    """``[start, end)`` of each sent chunk, for chunks that join back to the text they came from."""
    out, pos = [], 0
    for c, s in zip(chunks, sent, strict=True):
        if s:
            if out and out[-1][1] == pos:
                out[-1][1] = pos + len(c)
            else:
                out.append([pos, pos + len(c)])
        pos += len(c)
    return out


def run_batch(n: int, fn: Callable[[int], str], limit: int, *, cancel: threading.Event | None = None,
              name: str = "batch", on_progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Call ``fn(i)`` for ``i < n`` with at most ``limit`` calls at once.

    A call that raises leaves ``"error: ..."`` in its slot. A :class:`RunStopped` (budget,
    timeout, cancel) stops calls not yet started; calls in flight finish and keep their answers.
    ``on_progress(done, failed)`` is called after each slot is filled.
    """
    t0 = time.monotonic()
    answers = [""] * n
    ok = [False] * n
    stopped: list[RunStopped] = []
    halt = threading.Event()
    counts = {"done": 0, "failed": 0}
    count_lock = threading.Lock()

    def task(i: int) -> None:
        try:
            slot(i)
        finally:
            if on_progress is not None:
                with count_lock:
                    counts["done"] += 1
                    counts["failed"] += not ok[i]
                    done, failed = counts["done"], counts["failed"]
                try:
                    on_progress(done, failed)
                except Exception:  # noqa: BLE001 - progress is a report, never a reason to fail
                    log.exception("%s: progress report failed", name)

    def slot(i: int) -> None:
        if halt.is_set() or (cancel is not None and cancel.is_set()):
            why = stopped[0] if stopped else "cancelled"
            answers[i] = f"{NOT_RUN}: {why}"
            return
        try:
            answers[i] = fn(i)
            ok[i] = True
        except RunStopped as e:
            if not stopped:
                stopped.append(e)
            halt.set()
            answers[i] = f"{NOT_RUN}: {e}"
        except ContextboxError as e:
            answers[i] = f"error: {e}"
        except Exception as e:  # a bug: the slot says so, the batch goes on
            log.exception("%s item %d failed", name, i)
            answers[i] = f"error: internal error: {type(e).__name__}: {e}"

    if n:
        workers = max(1, min(limit, n))
        if workers == 1:
            for i in range(n):
                task(i)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
                list(pool.map(task, range(n)))
    return BatchResult(answers, ok, stopped[0] if stopped else None, time.monotonic() - t0)


# ---------------------------------------------------------------------- per-run state
class Delegation:
    """The sub-call services of one run (one per :class:`Session`)."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.rlm = session.services.get("rlm")
        cfg = getattr(session.config, "delegation", None)
        self.settings: DelegationSettings = cfg if isinstance(cfg, DelegationSettings) else DelegationSettings()
        parent: Delegation | None = getattr(self.rlm, "parent_delegation", None)
        # a child counts in its parent's counter, which enforces the run tree's limit
        limit = None if parent is not None else self.settings.max_sub_calls
        self.counter = SubCallCounter(limit, parent.counter if parent is not None else None)
        self.raw_sub = session.sub_query
        self._children = itertools.count()
        self._batches = itertools.count()

    @property
    def sub(self) -> Any:
        return getattr(self.rlm, "sub", None)

    @property
    def concurrency(self) -> int:
        return max(1, int(self.settings.max_concurrency or 1))

    def _note_stop(self, e: RunStopped) -> None:
        self.s.services.setdefault("stop", e)

    def check_fanout(self, n: int, op: str) -> None:
        """Refuse ``n`` sub-calls at once when fewer are left of ``max_sub_calls`` (nothing is sent)."""
        left = self.counter.remaining()
        if left is not None and n > left[0]:
            raise CommandError(
                f"{op} would make {n:,} sub-calls but only {left[0]:,} of max_sub_calls={left[1]:,} are left; "
                "use fewer, larger pieces (a bigger chunk_size) or fewer prompts "
                "(or raise [delegation] max_sub_calls)")

    def _progress(self, op: str, bid: str, n: int) -> Callable[[int, int], None]:
        """A throttled ``batch_progress`` reporter for a batch of ``n`` (reports its start now)."""
        emit = self.s.emit
        lock = threading.Lock()
        last = [time.monotonic()]
        info = {"op": op, "batch": bid, "total": n}
        if emit is not None:
            emit("batch_progress", {**info, "done": 0, "failed": 0})

        def report(done: int, failed: int) -> None:
            now = time.monotonic()
            with lock:
                if done < n and now - last[0] < PROGRESS_INTERVAL_S:
                    return
                last[0] = now
            if emit is not None:
                emit("batch_progress", {**info, "done": done, "failed": failed})

        return report

    # -- sub-calls
    def query(self, prompt: str, **opts: Any) -> str:
        """One sub-model call: pre-flight check, sub-call budget, then the engine's call."""
        if self.raw_sub is None:
            raise CommandError("sub-model calls are not available in this run")
        if not isinstance(prompt, str):
            raise CommandError(f"a sub-prompt must be a str, not {type(prompt).__name__}")
        preflight(self.sub, prompt)
        try:
            self.counter.reserve()
            return self.raw_sub(prompt, **opts)  # reserves its worst case in the run tree's ledger
        except BudgetExceeded as e:
            self._note_stop(e)
            raise

    def batch(self, prompts: list[str], op: str = "llm_query_batched") -> BatchResult:
        """Sub-model calls for ``prompts``, concurrently, answers in input order.

        Refused (CommandError, nothing sent) when ``max_sub_calls`` has fewer calls left.
        """
        self.check_fanout(len(prompts), op)
        bid = f"b{next(self._batches)}"
        log.debug("%s %s: %d sub-calls at concurrency %d", self.s.path, bid, len(prompts), self.concurrency)
        return run_batch(len(prompts), lambda i: self.query(prompts[i], tag={"batch": bid, "index": i}),
                         self.concurrency, cancel=self.s.cancel, name=f"sub-{bid}",
                         on_progress=self._progress(op, bid, len(prompts)))

    def query_batched(self, prompts: list[str]) -> list[str]:
        """``llm_query_batched`` for the code levels: a list of answers or error strings."""
        res = self.batch([str(p) for p in prompts])
        if res.stop is not None:
            self._note_stop(res.stop)
        return res.answers

    def typed_map(self, prompt: Any, records: Any, choices: Any = None, schema: Any = None,
                  per_call: Any = None, field: Any = None) -> list[Any]:
        """Typed ``llm_map`` for the code levels: one validated value per record (None where failed)."""
        from ..typed_map import values_for_cells

        return values_for_cells(self, prompt, records, choices, schema, per_call, field)

    # -- child runs
    def _remaining_limits(self) -> Any:
        """A child's limits: ours, with what is left of our time. Tokens and cost need no copy:
        the child spends from our ledger (``services["budget"]``)."""
        lim = self.s.limits
        kw: dict[str, Any] = {}
        budget = self.s.services.get("budget")
        if budget is not None:
            budget.check()
        deadline = self.s.services.get("deadline")
        if deadline is not None:
            kw["timeout_s"] = deadline - time.monotonic()
            if kw["timeout_s"] <= 0:
                raise RunTimeout(f"the run took longer than timeout_s={lim.timeout_s:g}")
        return lim.replace(**kw)

    def child(self, prompt: str, context: Any = None, *, tag: dict[str, Any] | None = None) -> str:
        """Run a child RLM on ``context`` (default: this run's context) and return its answer."""
        from ..engine import RLM

        if not isinstance(prompt, str) or not prompt.strip():
            raise CommandError("rlm_query needs a non-empty 'prompt'")
        ctx = self.s.context if context is None else Context.from_value(context)
        rlm = self.rlm
        if rlm is None:
            raise CommandError("rlm_query is not available in this run")
        if rlm.depth + 1 > self.settings.max_depth:
            log.info("%s: rlm_query at max_depth=%d: a plain sub-model call", self.s.path, self.settings.max_depth)
            text = prompt if not ctx.text else f"{prompt}\n\n{ctx.text}"
            return self.query(text, tag={**(tag or {}), "degraded": True})
        path = f"{self.s.path}.{next(self._children)}"
        child = RLM(model=rlm.root, sub_model=rlm.sub, levels=rlm.levels, limits=self._remaining_limits(),
                    config=rlm.config, store=None, depth=rlm.depth + 1, path=path,
                    budget=self.s.services.get("budget"))
        child.usage_sink = self.s.services.get("record_usage")
        child.parent_delegation = self  # type: ignore[attr-defined]
        forward = self.s.services.get("forward_event")
        stream = child.stream(prompt, ctx, run_id=self.s.run_id, cancel=self.s.cancel)
        for ev in stream:
            if forward is not None:
                forward(ev)
        res = stream.result
        assert res is not None
        if res.status == "answered":
            return res.answer or ""
        if res.status in _STOPS:  # the child spent from our budget and time: we are out of it too
            raise _STOPS[res.status](f"child run {path}: {res.reason}")
        partial = f"; partial answer: {res.answer[:500]}" if res.answer else ""
        raise CommandError(f"child run {path} ended with status {res.status}: {res.reason}{partial}")

    def child_batch(self, prompts: list[str], contexts: list[Any]) -> BatchResult:
        """Children for ``prompts[i]`` on ``contexts[i]``, concurrently, in input order."""
        bid = f"b{next(self._batches)}"
        return run_batch(len(prompts), lambda i: self.child(prompts[i], contexts[i], tag={"batch": bid, "index": i}),
                         self.concurrency, cancel=self.s.cancel, name=f"rlm-{bid}",
                         on_progress=self._progress("rlm_query_batched", bid, len(prompts)))

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        """``rlm_query`` for the code levels."""
        try:
            return self.child(prompt, context)
        except BudgetExceeded as e:
            self._note_stop(e)
            raise

    def rlm_query_batched(self, prompts: list[str], context: Any = None) -> list[str]:
        """``rlm_query_batched`` for the code levels: one child per prompt, on one context."""
        res = self.child_batch([str(p) for p in prompts], [context] * len(prompts))
        if res.stop is not None:
            self._note_stop(res.stop)
        return res.answers


def install(session: Session) -> Delegation | None:
    """Give ``session`` the delegation services (the engine calls this for every run)."""
    if session.sub_query is None:
        return None
    d = Delegation(session)
    session.services["delegation"] = d
    session.sub_query = d.query
    session.services["llm_query_batched"] = d.query_batched
    session.services["rlm_query"] = d.rlm_query
    session.services["rlm_query_batched"] = d.rlm_query_batched
    session.services["llm_map"] = d.typed_map
    return d


# ---------------------------------------------------------------------- the executor
class DelegationExecutor:
    """Runs L4 commands."""

    level = "l4"

    def __init__(self, session: Session) -> None:
        self.s = session
        d = session.services.get("delegation")
        self.d: Delegation = d if isinstance(d, Delegation) else (install(session) or Delegation(session))

    def close(self) -> None:
        pass

    # -- helpers
    def _var(self, on: str) -> Any:
        """The raw value of ``on`` (``name`` or ``name[i]``)."""
        from .commands import CommandExecutor

        name = on.split("[", 1)[0]
        if "[" not in on:
            if name not in self.s.variables:
                CommandExecutor(self.s)._target({"on": on})  # raises the standard error
            return self.s.variables[name]
        text, _ = CommandExecutor(self.s)._target({"on": on})
        return text

    def _with_on(self, prompt: str, cmd: dict[str, Any]) -> str:
        return f"{prompt}\n\n{as_text(self._var(cmd['on']))}" if cmd.get("on") else prompt

    def _finish(self, text: str, value: Any, store: str | None, error: bool = False) -> ActionOutput:
        limit = self.s.limits.max_output_chars
        if store:
            self.s.variables[store] = value
            hint = f"The full result is stored in {store!r}; read parts of it with slice/lines and \"on\"."
            return ActionOutput(cap(text, limit, hint) + f"\n(stored in {store!r})", error=error)
        return ActionOutput(cap(text, limit), error=error)

    def _batch_output(self, op: str, res: BatchResult, what: str, cmd: dict[str, Any]) -> ActionOutput:
        n = len(res.answers)
        store = cmd.get("store") or DEFAULT_STORE
        head = (f"{op}: {n} {what}, {res.finished} answered, {n - res.finished} failed "
                f"({res.elapsed_s:.1f}s, up to {self.d.concurrency} at once)")
        if res.stop is not None:
            head += f"\nstopped: {res.stop} — the finished answers are kept"
            res.stop.partial = "\n".join(a for a, ok in zip(res.answers, res.ok, strict=True) if ok)  # type: ignore[attr-defined]
            self.d._note_stop(res.stop)
        per = max(60, (self.s.limits.max_output_chars - len(head)) // max(1, n) - 8)
        lines = [head]
        for i, a in enumerate(res.answers):
            one = " ".join(a.split())
            lines.append(f"[{i}] {one if len(one) <= per else one[: per - 1] + '…'}")
        lines.append(f'(read one answer in full with {{"op": "get", "name": "{store}[i]"}})')
        return self._finish("\n".join(lines), list(res.answers), store, error=res.finished == 0)

    # -- dispatch
    def run(self, action: Action) -> ActionOutput:
        cmd = validate(action.args, L4_SPECS)
        return getattr(self, "op_" + cmd["op"])(cmd)

    def op_llm_query(self, cmd: dict[str, Any]) -> ActionOutput:
        prompt = self._with_on(cmd["prompt"], cmd)
        try:
            answer = self.d.query(prompt, tag={"op": "llm_query"})
        except ProviderError as e:
            return ActionOutput(f"error: the sub-model call failed: {e}", error=True)
        return self._finish(answer, answer, cmd.get("store"))

    def op_llm_query_batched(self, cmd: dict[str, Any]) -> ActionOutput:
        prompts = cmd["prompts"]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise CommandError("llm_query_batched needs 'prompts', a non-empty list of strings")
        suffix = f"\n\n{as_text(self._var(cmd['on']))}" if cmd.get("on") else ""
        res = self.d.batch([p + suffix for p in prompts])
        return self._batch_output("llm_query_batched", res, "prompt(s)", cmd)

    def _map_items(self, cmd: dict[str, Any]) -> tuple[list[str], int]:
        """The chunks of an untyped map and how many over-long lines were cut."""
        on, size = cmd.get("on"), cmd.get("chunk_size")
        if size is not None and size <= 0:
            raise CommandError("llm_map 'chunk_size' must be a positive number of characters")
        if on:
            value = self._var(on)
            if isinstance(value, list) and size is None:  # e.g. chunks stored by {"op": "chunk"}
                return [as_text(v) for v in value], 0
            text = as_text(value)
        else:
            text = self.s.context.text
        if size is None:
            size = self.d.settings.chunk_size
            window = getattr(self.d.sub, "context_window", None)
            if window:  # leave room for the prompt and the answer
                size = max(500, min(size, int(window * 4 * 0.75) - len(cmd["prompt"])))
        return ops.chunk_lines(text, size)

    def op_llm_map(self, cmd: dict[str, Any]) -> ActionOutput:
        if cmd.get("choices") is not None or cmd.get("schema") is not None:
            return self._typed_map(cmd)
        for key in ("per_call", "field"):
            if cmd.get(key) is not None:
                raise CommandError(f"llm_map {key!r} is for a typed map: give 'choices' (labels) or 'schema' too")
        items, cuts = self._map_items(cmd)
        if not items:
            raise CommandError("llm_map: nothing to map over (the text is empty)")
        if len(items) > MAX_MAP_ITEMS:
            raise CommandError(f"llm_map: {len(items):,} chunks would make {len(items):,} sub-calls "
                               f"(at most {MAX_MAP_ITEMS:,}); raise chunk_size")
        n = len(items)
        prompts = [f"{cmd['prompt']}\n\n[chunk {i + 1} of {n}]\n{c}" for i, c in enumerate(items)]
        for p in prompts:  # refuse the whole map before any call is made
            preflight(self.d.sub, p)
        res = self.d.batch(prompts, op="llm_map")
        what = f"chunk(s) of ≤ {max(len(c) for c in items):,} characters, ending on line boundaries"
        if cuts:
            what += f" ({cuts:,} cut(s) inside lines longer than the chunk size)"
        out = self._batch_output("llm_map", res, what, cmd)
        if not cmd.get("on"):  # the chunks are the context's text, in order: what the sub-calls were given
            # a failed call was sent (its error says why); a slot a stop or cancel reached first was not
            out.meta["read"] = sent_ranges(items, [ok or not a.startswith(NOT_RUN)
                                                   for a, ok in zip(res.answers, res.ok, strict=True)])
        return out

    def _typed_map(self, cmd: dict[str, Any]) -> ActionOutput:
        from ..typed_map import (
            AnswerSpec,
            check_per_call,
            context_records,
            record_texts,
            records_of,
            result_table,
            run_map,
            summary,
            with_definitions,
        )

        spec = AnswerSpec.parse(cmd.get("choices"), cmd.get("schema"), cmd.get("field"))
        per_call = check_per_call(cmd.get("per_call"), spec.kind)
        if cmd.get("chunk_size") is not None:
            raise CommandError("llm_map 'chunk_size' is for an untyped map; a typed map takes 'per_call' "
                               "(records per sub-call)")
        records = records_of(self._var(cmd["on"])) if cmd.get("on") else context_records(self.s.context)
        read = [] if cmd.get("on") else [[0, len(self.s.context.text)]]  # every record of the context is sent
        task = with_definitions(cmd["prompt"], spec, self.s.services.get("question"))
        # a label per row: the sub-model reads what the rows say; their dates and ids stay in the table
        res = run_map(self.d, task, record_texts(records, prose_only=True), spec, per_call)
        table = result_table(records, spec, res)
        text = summary(res, spec, table, self.d.concurrency)
        if res.stop is not None:
            text += f"\nstopped: {res.stop} — the finished answers are kept"
            self.d._note_stop(res.stop)
        out = self._finish(text, table, cmd.get("store") or DEFAULT_STORE, error=res.ok == 0)
        if read and res.ok:
            out.meta["read"] = read
        return out

    def op_examine(self, cmd: dict[str, Any]) -> ActionOutput:
        from ..case_route import examine

        return examine(self, cmd)

    def _child_context(self, cmd: dict[str, Any]) -> Any:
        if cmd.get("on"):
            if cmd.get("start") is not None or cmd.get("end") is not None:
                raise CommandError("rlm_query takes either 'on' or 'start'/'end', not both")
            value = self._var(cmd["on"])
            return value if isinstance(value, (str, list)) and value else as_text(value)
        if cmd.get("start") is not None or cmd.get("end") is not None:
            return ops.slice_text(self.s.context.text, cmd.get("start") or 0, cmd.get("end"))
        return None

    def op_rlm_query(self, cmd: dict[str, Any]) -> ActionOutput:
        ctx = self._child_context(cmd)
        try:
            answer = self.d.child(cmd["prompt"], ctx, tag={"op": "rlm_query"})
        except RunStopped as e:
            self.d._note_stop(e)
            return ActionOutput(f"error: the child run stopped: {e}", error=True)
        except ProviderError as e:
            return ActionOutput(f"error: the sub-model call failed: {e}", error=True)
        out = self._finish(answer, answer, cmd.get("store"))
        if not cmd.get("on") and (cmd.get("start") is not None or cmd.get("end") is not None):
            a, b, _ = slice(cmd.get("start") or 0, cmd.get("end")).indices(len(self.s.context.text))
            out.meta["read"] = [[a, max(a, b)]]  # the child's whole context (slice_text's slice)
        return out

    def op_rlm_query_batched(self, cmd: dict[str, Any]) -> ActionOutput:
        prompts, prompt = cmd.get("prompts"), cmd.get("prompt")
        if prompts is not None:
            if not prompts or not all(isinstance(p, str) for p in prompts) or prompt is not None:
                raise CommandError("rlm_query_batched takes 'prompts' (a list of strings) or one 'prompt' "
                                   "with 'on' naming a list variable")
            ctx = self._child_context(cmd)
            contexts = [ctx] * len(prompts)
        else:
            value = self._var(cmd["on"]) if cmd.get("on") else None
            if not isinstance(prompt, str) or not isinstance(value, list) or not value:
                raise CommandError("rlm_query_batched needs 'prompts' (a list), or 'prompt' and 'on' naming "
                                   "a non-empty list variable (one child per item)")
            contexts = [v if isinstance(v, str) else as_text(v) for v in value]
            prompts = [prompt] * len(contexts)
        res = self.d.child_batch(list(prompts), contexts)
        return self._batch_output("rlm_query_batched", res, "child run(s)", cmd)


register_executor("l4", DelegationExecutor)
