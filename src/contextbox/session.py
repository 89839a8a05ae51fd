"""Sessions: load a context once, ask several questions about it.

    with rlm.session(Context.load("logs/")) as s:
        first = s.ask("Which service failed first?")
        again = s.ask("And how often did it fail?")     # the tables and variables of the first question are there

Each question is its own run (its own events, usage and run id, recorded in the run store with the session's
id: ``rlm runs list`` shows it). Between questions the session keeps the L1 variables and tables, the L2
sandbox and the L3 worker (so the code namespace persists); L4's sub-call services are made afresh for every
run. ``rlm chat -c PATH`` is the same thing on the command line.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .context import Context
from .errors import UsageError
from .executors import Executor, Session
from .types import Event, RunResult

if TYPE_CHECKING:
    from .engine import RLM, RunStream

#: services that belong to one run (made again by the next one)
_PER_RUN = ("delegation", "llm_query_batched", "rlm_query", "rlm_query_batched", "llm_map", "stop")


def new_session_id() -> str:
    return "s-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


class SessionState:
    """What outlives one question: the executors' shared :class:`Session` and the L1-L3 executors."""

    #: the levels whose executor (and so whose state) a session keeps between questions
    keeps = ("l1", "l2", "l3")

    def __init__(self, session_id: str):
        self.session_id = session_id
        self.session: Session | None = None
        self.executors: dict[str, Executor] = {}
        self.turn = 0

    def rebind(self, **fields: Any) -> Session:
        """The kept Session, pointed at the next run (its id, limits, events, cancel and sub-model)."""
        assert self.session is not None
        for k, v in fields.items():
            setattr(self.session, k, v)
        for k in _PER_RUN:
            self.session.services.pop(k, None)
        return self.session

    def note(self) -> str:
        """Added to the first message of every question after the first."""
        if self.turn <= 1:
            return ""
        names = sorted(k for k in (self.session.variables if self.session else {}) if not k.startswith("_"))
        kept = f"Variables kept from earlier questions: {', '.join(names)}." if names else "No variables are kept yet."
        code = " The code namespace of earlier cells is kept too." if {"l2", "l3"} & set(self.executors) else ""
        return (f"\n\nThis is question {self.turn} of a session about this same context. {kept}{code} "
                "Reuse them where they help; the earlier answers may be out of date for this question.")

    def close(self) -> None:
        for ex in self.executors.values():
            try:
                ex.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.executors.clear()


class RLMSession:
    """Several questions about one context (see the module docs). Use as a context manager, or call close()."""

    def __init__(self, rlm: RLM, context: Any, *, session_id: str | None = None):
        self.rlm = rlm
        self.context = context if isinstance(context, Context) else Context.from_value(context)
        self.state = SessionState(session_id or new_session_id())
        #: the results of the questions asked so far, in order
        self.results: list[RunResult] = []
        self._busy = threading.Lock()
        self._closed = False

    @property
    def session_id(self) -> str:
        return self.state.session_id

    @property
    def variables(self) -> dict[str, Any]:
        """The L1 variables and tables the session holds now."""
        return self.state.session.variables if self.state.session is not None else {}

    def stream(self, question: str, **kw: Any) -> RunStream:
        """The next question as a stream of events (one question at a time)."""
        from .engine import RunStream

        if self._closed:
            raise UsageError("this session is closed; start a new one with rlm.session(context)")
        if not self._busy.acquire(blocking=False):
            raise UsageError("this session is answering a question already; ask the next one when it ends")
        try:
            self.state.turn += 1
            inner = self.rlm.stream(question, self.context, _carry=self.state, **kw)
        except BaseException:
            self.state.turn -= 1
            self._busy.release()
            raise
        return RunStream(self._guard(inner))

    def _guard(self, inner: RunStream) -> Iterator[Event]:
        try:
            yield from inner
        finally:
            self._busy.release()
        if inner.result is not None:
            self.results.append(inner.result)
        return inner.result

    def ask(self, question: str, **kw: Any) -> RunResult:
        """Answer one question; the result is like :meth:`RLM.run`'s."""
        s = self.stream(question, **kw)
        events = list(s)
        assert s.result is not None
        s.result.events = events
        return s.result

    async def aask(self, question: str, **kw: Any) -> RunResult:
        """:meth:`ask` without blocking the event loop."""
        from .aio import AsyncRunStream

        s = AsyncRunStream(_SessionAsRLM(self), question, None, kw)
        events = [ev async for ev in s]
        assert s.result is not None
        s.result.events = events
        return s.result

    def close(self) -> None:
        """Stop the session's L2 sandbox and L3 worker."""
        self._closed = True
        self.state.close()

    def __enter__(self) -> RLMSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _SessionAsRLM:
    """Lets :class:`~contextbox.aio.AsyncRunStream` drive a session's question."""

    def __init__(self, session: RLMSession):
        self.session = session

    def stream(self, question: str, context: Any, **kw: Any) -> RunStream:
        return self.session.stream(question, **kw)
