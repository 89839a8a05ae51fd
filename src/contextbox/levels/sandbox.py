"""L2: code cells in a pydantic-monty sandbox.

Each run checks out one monty session (a dedicated worker subprocess, from a pool shared
by all runs of the process) and keeps it for the whole run, so the namespace persists from
cell to cell. The context is sent once, when the session starts; the L1 operations,
``llm_query`` and the answer helpers are host functions the sandbox calls out to.

Monty has no filesystem (no mounts are given), no network, no subprocesses and no
environment. Memory (``services["l2_memory_mb"]``, default 512 MiB, plus room for the
context) and time per cell (``services["l2_time_limit_s"]``, default 30 s; sleeping returns
at once) are enforced inside the worker. A cell that times out, or a worker that dies, costs
the namespace: the executor starts a fresh session, sends the context again and tells the
model what happened.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

from ..errors import CommandError
from ..executors import Action, ActionOutput, Session, register_executor
from ..host_limits import max_answer_chars
from ._cells import (
    HELPERS_DOC,
    CellState,
    OutputBuffer,
    compose,
    format_vars,
    host_functions,
    output_cap,
    rename_cells,
    shorten_traceback,
)

log = logging.getLogger("contextbox")

PROMPT = """\
Python sandbox (L2): code in ```repl blocks runs in a sandboxed Python interpreter (pydantic-monty). \
Variables persist across blocks (also after an exception). Only what you print() comes back, cut \
to a few thousand characters: print summaries and slices, never the whole context.
Defined for you: `context` (the whole text as a str; for several documents a list of objects with \
.path and .text); """ + HELPERS_DOC + """
Modules: re, json, math, collections, itertools, functools, datetime, random, bisect, typing, \
dataclasses, decimal, hashlib, base64, csv, unicodedata, copy.
Missing: files, network, subprocess; class inheritance, yield/generators, del, \
@property/@staticmethod, super(), dir(), globals(), vars(); modules string, statistics, \
textwrap, heapq, operator, enum, io, struct, pprint. A block may run for <L2_TIME_S> s at most."""

_MIB = 1 << 20
#: a session's memory limit is ``l2_memory_mb`` + twice the context's UTF-8 size (monty holds the string
#: it is sent and a copy while it decodes it; measured: 20 MB of ASCII needs 24-40 MiB) + this, monty's own
_ROOM_MIB = 16
_MAX_UTF8 = 4  # bytes per character at most (the exact size would copy the context to measure it)
#: the pool's cap on live sandboxes (monty's default is the CPU count: a server's third concurrent run would
#: wait for a free one) and how long a run waits for one before its block is told the sandbox could not start
_POOL_MAX = 64
_CHECKOUT_TIMEOUT_S = 60.0
#: host calls a block may make: unbounded in effect (they are bounded by the block's time limit)
_MAX_SUSPENSIONS = 10**12
#: how long close() waits for a running block before leaving the session to it
_CLOSE_WAIT_S = 1.0
_POOL: Any = None
_POOL_LOCK = threading.Lock()

_PRELUDE_DOCS = """\
class Document:
    def __init__(self, path, text):
        self.path = path
        self.text = text
    def __repr__(self):
        return 'Document(path=' + repr(self.path) + ', chars=' + str(len(self.text)) + ')'
context = [Document(_cb_p, _cb_t) for _cb_p, _cb_t in _cb_docs]
_cb_docs = None
"""
#: run after a cell, with the builtins the helpers' prelude kept (the cell may have rebound `type`, `locals`)
_VARS_PROBE = "{_cb_k: _cb_type(_cb_v).__name__ for _cb_k, _cb_v in _cb_locals().items()}"


def _pool() -> Any:
    """The process-wide monty worker pool, started on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from pydantic_monty import Monty

            # one session per worker: a run's worker (and whatever its code did to it) is never another run's
            pool = Monty(max_processes=_POOL_MAX, max_checkouts_per_worker=1, checkout_timeout=_CHECKOUT_TIMEOUT_S)
            pool.__enter__()
            _POOL = pool
            atexit.register(_close_pool)
        return _POOL


def _close_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        try:
            pool.__exit__(None, None, None)  # pragma: no mutate (monty's __exit__ takes *args)
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log.debug("closing the monty pool: %s", e)  # pragma: no mutate (log text)


class SandboxExecutor:
    """Runs ``code`` actions in one pydantic-monty session per run."""

    level = "l2"
    _feeds: int  # feeds sent to the session: monty names them <python-input-0>, <python-input-1>, ...
    _cell_names: dict[int, str]  # monty's feed number -> the name tracebacks show; both set by ``_start``

    def __init__(self, session: Session):
        self.session = session
        svc = session.services
        self.memory_mb = float(svc.get("l2_memory_mb", 512))
        self.time_limit_s = float(svc.get("l2_time_limit_s", 30))
        self.cap = output_cap(session)
        self._sess: Any = None
        self._cells = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()  # set by close(), from another thread while a block runs
        self.restarts = 0

    # ------------------------------------------------------------------ session
    def _context_bytes(self) -> int:
        t = self.session.context.text
        return len(t) if t.isascii() else _MAX_UTF8 * len(t)

    def _start(self) -> None:
        """Check out a session and send it the context (once per session)."""
        limits = {
            "max_memory": int(self.memory_mb * _MIB) + 2 * self._context_bytes() + _ROOM_MIB * _MIB,
            "max_feed_duration_secs": self.time_limit_s,
            "max_suspensions": _MAX_SUSPENSIONS,
        }
        sess = _pool().checkout(limits=limits, os_policy={"sleep": "zero"})
        sess.__enter__()
        self._sess, self._feeds, self._cell_names = sess, 0, {}
        ctx = self.session.context
        if ctx.kind == "documents" and len(ctx.documents) > 1:
            docs = [(d.path, ctx.text[d.start : d.end]) for d in ctx.documents]
            self._feed(_PRELUDE_DOCS, inputs={"_cb_docs": docs})
        else:
            self._feed("None", inputs={"context": ctx.text})
        self._cell_names[self._feeds] = "<helpers>"
        self._feed(guard_prelude(self.session))
        log.debug("L2 sandbox session started (worker pid %s)", getattr(sess, "worker_pid", None))  # pragma: no mutate (log text)

    def _feed(self, code: str, **kw: Any) -> Any:
        self._feeds += 1
        return self._sess.feed_run(code, **kw)

    def _drop(self) -> None:
        sess, self._sess = self._sess, None
        if sess is not None:
            try:
                sess.__exit__(None, None, None)  # pragma: no mutate (monty's __exit__ takes *args)
            except Exception as e:  # noqa: BLE001 - the worker may be gone already
                log.debug("closing a monty session: %s", e)  # pragma: no mutate (log text)

    def _restart(self, why: str) -> str:
        """Replace the session; returns the note for the model."""
        self._drop()
        if self._closed.is_set():  # the run ended while this block ran: no new session
            return f"[{why}]"
        self.restarts += 1
        self.session.emit("warning", {"message": f"L2 sandbox restarted: {why}", "level": "l2"})
        try:
            self._start()
        except Exception as e:  # noqa: BLE001 - reported to the model, retried next cell
            self._drop()
            log.warning("L2 sandbox restart failed: %s", e)  # pragma: no mutate (log text)
            return f"[{why}; the sandbox could not be restarted yet ({e}); it will be retried with the next block]"
        return (
            f"[{why}; a fresh sandbox was started: variables from earlier blocks are lost, "
            "`context` and the helper functions are available again]"
        )

    def _alive(self) -> bool:
        try:
            self._feed("None")
            return True
        except Exception:  # noqa: BLE001 - any failure means the session is gone
            return False

    # ------------------------------------------------------------------ run
    def run(self, action: Action) -> ActionOutput:
        from pydantic_monty import MontyCrashedError, MontyError

        code = str(action.args.get("code", action.source) or "")
        with self._lock:
            if self._closed.is_set():
                raise CommandError("the L2 sandbox of this run is closed")
            notes: list[str] = []
            if self._sess is None:
                try:
                    self._start()
                except TimeoutError:  # the pool's checkout timeout (not a MontyError)
                    self._drop()
                    return ActionOutput(f"[the L2 sandbox could not start: all {_POOL_MAX} sandboxes of this "
                                        f"process stayed busy for {_CHECKOUT_TIMEOUT_S:g} s; try again when fewer "
                                        "runs are going]", error=True)
                except (MontyError, RuntimeError) as e:  # RuntimeError: the pool failed to spawn a worker
                    self._drop()
                    return ActionOutput(f"[the L2 sandbox could not start: {e}]", error=True)
            self._cells += 1
            self._cell_names[self._feeds] = f"<cell {self._cells}>"  # monty counts feeds from 0
            state = CellState()
            buf = OutputBuffer(self.cap)
            # the helpers' host work ends with the block's time (monty's clock does not count it)
            fns = host_functions(self.session, state, deadline=time.monotonic() + self.time_limit_s)
            error_text: str | None = None
            alive = True
            try:
                self._feed(code, print_callback=buf.callback, external_lookup=host_names(fns))
            except MontyCrashedError as e:
                error_text, alive = "", False
                notes.append(self._restart(f"the sandbox worker died while running this block ({e})"))
            except MontyError as e:
                exc = _inner(e)
                error_text = shorten_traceback(rename_cells(_display(e), self._cell_names))
                if isinstance(exc, TimeoutError):
                    alive = False
                    notes.append(
                        self._restart(f"this block ran longer than the {self.time_limit_s:g} s limit and was stopped")
                    )
                elif not self._alive():  # the cell's error took the session with it
                    alive = False
                    if isinstance(exc, MemoryError):  # the worker went over its limit outside the interpreter
                        notes.append(self._restart("the sandbox ran out of memory and was terminated"))
                    else:  # e.g. a helper's reply too large for the sandbox's decoder: the session is out of step
                        error_text = f"error: {str(e)[:300]}"
                        notes.append(self._restart("the sandbox lost its session (a helper's reply too large for "
                                                   "it, or a protocol error)"))
            final = state.final
            if state.final_var or state.show_vars:
                if alive:
                    final = self._resolve_answers(state, notes) or final
                elif state.final_var:  # the block already failed: the sandbox died with it
                    notes.append(f"FINAL_VAR error: the variable {state.final_var!r} was lost with the sandbox")
            failed = error_text is not None or "final_var_failed" in state.notes
            if self._closed.is_set():  # closed while this block ran (the run ended): drop the session now
                self._drop()
            return ActionOutput(compose(buf.text(), error_text, notes), error=failed, final=final)

    def _resolve_answers(self, state: CellState, notes: list[str]) -> str | None:
        """Run FINAL_VAR / SHOW_VARS against the namespace after the cell."""
        from pydantic_monty import MontyError

        if state.show_vars:
            try:
                notes.append(format_vars(self._feed(_VARS_PROBE).items()))
            except MontyError as e:
                notes.append(f"SHOW_VARS failed: {e}")
        if not state.final_var:
            return None
        name = state.final_var
        try:
            size = self._feed(f"_cb_len(_cb_str({name}))")  # measured in the sandbox: a huge value never crosses
            limit = max_answer_chars(self.session)
            if isinstance(size, int) and size > limit:
                notes.append(f"FINAL_VAR error: {name!r} holds {size:,} characters, over the limit of {limit:,} "
                             "([limits] max_answer_chars); answer with the result itself")
                state.notes.append("final_var_failed")
                return None
            return str(self._feed(f"_cb_str({name})"))
        except MontyError as e:
            if isinstance(_inner(e), NameError):
                notes.append(f"FINAL_VAR error: there is no variable named {name!r}; assign it first")
            else:
                notes.append(f"FINAL_VAR error: {e}")
            state.notes.append("final_var_failed")
            return None

    def close(self) -> None:
        """Close the session; a block still running (a run that timed out or was cancelled) is not waited
        for longer than a moment: its host calls stop at their deadline and it drops the session itself."""
        self._closed.set()
        if self._lock.acquire(timeout=_CLOSE_WAIT_S):
            try:
                self._drop()
            finally:
                self._lock.release()


#: helpers whose arguments are measured in the sandbox before they cross to the host
GUARDED = ("find", "regex", "count", "lines", "chunk", "slice_", "split", "search", "records", "extract")


def guard_prelude(session: Session) -> str:
    """Sandbox-side wrappers: ``FINAL`` and the helpers that take text refuse an over-limit string *before*
    it crosses to the host (monty would copy it into the host's memory first). They call the host
    functions by their ``_cb_`` names, which check again: code that calls those directly is bounded by the
    same limits, after the copy (itself bounded by the sandbox's memory limit)."""
    max_in = int(session.limits.max_host_input_chars)
    max_answer = max_answer_chars(session)
    # the builtins they use under names of their own: the model's code may rebind `list`, `str`, `len`, ...
    out = [f"""\
_cb_str, _cb_len, _cb_list, _cb_isinstance, _cb_ValueError = str, len, list, isinstance, ValueError
_cb_type, _cb_locals = type, locals
def FINAL(answer):
    _cb_a = answer if _cb_isinstance(answer, _cb_str) else _cb_str(answer)
    if _cb_len(_cb_a) > {max_answer}:
        raise _cb_ValueError('the answer holds ' + f'{{_cb_len(_cb_a):,}}' + ' characters, over the limit of '
                             + '{max_answer:,} ([limits] max_answer_chars); answer with the result itself, not the '
                             + 'data it came from')
    _cb_FINAL(_cb_a)
def _cb_measure(name, args, kwargs):
    for _cb_v in _cb_list(args) + _cb_list(kwargs.values()):
        if _cb_isinstance(_cb_v, _cb_str) and _cb_len(_cb_v) > {max_in}:
            raise _cb_ValueError(name + ': an argument holds ' + f'{{_cb_len(_cb_v):,}}' + ' characters, over the '
                                 + 'limit of {max_in:,} per call ([limits] max_host_input_chars); pass a smaller '
                                 + 'piece, or work on the context itself')
"""]
    for name in GUARDED:
        out.append(f"def {name}(*args, **kwargs):\n    _cb_measure('{name}', args, kwargs)\n"
                   f"    return _cb_{name}(*args, **kwargs)\n")
    return "".join(out)


def host_names(fns: dict[str, Any]) -> dict[str, Any]:
    """The host functions under the names the sandbox looks up: ``_cb_NAME`` for the wrapped ones."""
    wrapped = set(GUARDED) | {"FINAL"}
    return {("_cb_" + k if k in wrapped else k): v for k, v in fns.items()}


def _inner(e: Exception) -> BaseException | None:
    try:
        return e.exception()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return None


def _display(e: Exception) -> str:
    """The traceback, when the error has one (a MontyError's str() is its 'Type: message' line)."""
    try:
        return e.display()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return str(e)


def make_executor(session: Session) -> SandboxExecutor:
    return SandboxExecutor(session)


register_executor("l2", make_executor)
