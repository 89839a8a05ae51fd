"""Ctrl-C during an ``rlm ask`` run: the presses are counted by a watcher thread, never by the main thread.

The first press cancels the run (the engine ends it at its next check and records it ``cancelled``).
The second press stops the process with exit code 130: once the cancelled run has ended (the main
thread then reports it as usual), or after ``wait_s`` if it has not, the run being recorded
``cancelled`` by the watcher then.

Why a watcher: a Python signal handler runs in the main thread between any two bytecodes, so an
exception raised there (the KeyboardInterrupt a second press used to raise) lands anywhere — for
example right after the run store's ``BEGIN IMMEDIATE`` returned and before its ``try``: the SQLite
transaction stayed open, recording the end then failed ("cannot start a transaction within a
transaction"), the CLI exited 1 with a traceback and the run stayed ``running``. Here the C-level
handler writes each signal's number to a socket (:func:`signal.set_wakeup_fd`), the Python-level
handler does nothing, and the watcher thread reads the socket; nothing is ever raised in the main
thread, and a handler that does nothing cannot be broken by a press landing inside it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("contextbox")


def _noted(signum: int, frame: FrameType | None) -> None:
    """The Python-level SIGINT handler while a run is watched: the press is already on the socket."""


class CtrlC:
    """Install with :meth:`start` (main thread), remove with :meth:`stop` once the run has ended."""

    def __init__(self, cancel: threading.Event, run_id: Callable[[], str | None], store: Any,
                 wait_s: float) -> None:
        self.cancel = cancel
        self.run_id = run_id
        self.store = store
        self.wait_s = wait_s
        self.presses = 0
        self._ended = threading.Event()
        self._r, self._w = socket.socketpair()
        self._w.setblocking(False)  # set_wakeup_fd needs it; a full buffer only drops presses past the second
        self._old_fd = -1
        self._thread = threading.Thread(target=self._watch, name="contextbox-ctrl-c", daemon=True)

    def start(self) -> Any:
        """Watch SIGINT; returns the handler that was installed before."""
        old = signal.signal(signal.SIGINT, _noted)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._thread.start()
        return old

    def stop(self) -> None:
        """The run has ended: stop watching (the caller has installed the next SIGINT handler). A second
        press being handled finds the run ended and leaves the report to the main thread."""
        self._ended.set()
        signal.set_wakeup_fd(self._old_fd)
        self._w.close()  # the watcher reads the end of the stream and leaves
        self._thread.join(1.0)

    def _watch(self) -> None:
        try:
            while True:
                try:
                    data = self._r.recv(64)
                except OSError:
                    return
                if not data:
                    return
                for signum in data:
                    if signum == signal.SIGINT:
                        self._pressed()
        finally:
            self._r.close()

    def _pressed(self) -> None:
        self.presses += 1
        if self.presses == 1:
            self.cancel.set()
            return
        if self.presses > 2 or self._ended.wait(self.wait_s):
            return  # the cancelled run ended by itself (recorded, reported); or a third press
        self._stop_now()

    def _stop_now(self) -> None:
        """The run did not end within ``wait_s`` of the second press: record it cancelled and say so (given
        ``wait_s`` more at most: the stuck main thread may hold the store, or stderr blocked on a full pipe),
        exit 130 (the exit ends the L3 workers; the main thread is not joined)."""
        run_id = self.run_id()

        def finish() -> None:
            if run_id and self.store is not None:
                try:
                    self.store.finish_run(run_id, "cancelled", "stopped by a second Ctrl-C")
                except Exception as e:  # noqa: BLE001 - the exit must happen; say why the record is missing
                    log.error("could not record run %s as cancelled: %s", run_id, e)
            sys.stderr.write("rlm: stopped by a second Ctrl-C" + (f"; run {run_id} cancelled" if run_id else "")
                             + "\n")
            for f in (sys.stdout, sys.stderr):
                try:
                    f.flush()
                except (OSError, ValueError):
                    pass

        closing = threading.Thread(target=finish, name="contextbox-stop", daemon=True)
        closing.start()
        closing.join(self.wait_s)
        os._exit(130)
