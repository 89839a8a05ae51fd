"""The async API: ``await rlm.arun(q, ctx)`` and ``async for ev in rlm.astream(q, ctx)``.

The run is the same generator as :meth:`RLM.stream`; it runs in a worker thread and hands each event to the
event loop through an :class:`asyncio.Queue`, so model calls and code cells never block the loop. Cancelling
the task that consumes the stream (or leaving ``async for`` early) sets the run's cancel event: the run ends
with status ``cancelled`` at its next check and is recorded like any other.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .types import Event, RunResult

if TYPE_CHECKING:
    from .engine import RLM

log = logging.getLogger("contextbox")


class AsyncRunStream:
    """``async for`` over a run's events; ``.result`` holds the RunResult after the last event.

    ``cancel`` is the run's cancel event (set it to stop the run from anywhere); ``thread`` the worker thread.
    """

    def __init__(self, rlm: RLM, question: str, context: Any, kw: dict[str, Any]):
        self.cancel: threading.Event = kw.pop("cancel", None) or threading.Event()
        # the stream is made here so that configuration mistakes raise at the call, not in the thread
        self._stream = rlm.stream(question, context, cancel=self.cancel, **kw)
        self.result: RunResult | None = None
        self.thread: threading.Thread | None = None
        self._started = False

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._started:
            raise RuntimeError("an AsyncRunStream can be iterated once")
        self._started = True
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.cancel.set()

        def work() -> None:
            try:
                for ev in self._stream:
                    put(("event", ev))
                put(("end", self._stream.result))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                put(("error", e))

        self.thread = threading.Thread(target=work, daemon=True, name="rlm-async")
        self.thread.start()
        done = False
        try:
            while True:
                kind, value = await q.get()
                if kind == "event":
                    yield value
                elif kind == "end":
                    done = True
                    self.result = value
                    return
                else:
                    done = True
                    raise value
        finally:
            if not done:  # the consumer was cancelled or stopped early: stop the run too
                log.debug("async run stream left early: cancelling the run")
                self.cancel.set()
