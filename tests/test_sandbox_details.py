"""L2 (the pydantic-monty sandbox) in detail: what a cell that hits a limit, or a FINAL_VAR that cannot be
answered, leaves behind and tells the model.

Written against the survivors of `tests/mutation.py --modules sandbox.py` (docs/mutation.md); each test
states an outcome the model or the run sees, at the executor (no model, no engine).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_code_levels import make_session, run

from contextbox.errors import CommandError
from contextbox.executors import executor_factory
from contextbox.types import Limits


@pytest.fixture
def l2() -> Iterator[Any]:
    s = make_session(l2_memory_mb=64)
    s.limits = Limits(max_answer_chars=10)
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    yield ex
    ex.close()


def test_a_cell_over_the_memory_limit_fails_but_the_namespace_stays(l2: Any) -> None:
    assert not run(l2, "keep = 5").error
    out = run(l2, "big = 'x' * (200 * 1024 * 1024)")
    assert out.error and "MemoryError: memory limit exceeded" in out.text
    assert "fresh sandbox" not in out.text  # the session was not replaced
    assert run(l2, "print(keep)").text.strip() == "5"
    assert l2.session.services["_events"] == [] and l2.restarts == 0


def test_final_var_over_max_answer_chars_is_refused_in_the_sandbox(l2: Any) -> None:
    out = run(l2, "v = 'y' * 11\nFINAL_VAR('v')")
    assert (out.final, out.error) == (None, True)
    assert out.text == ("FINAL_VAR error: 'v' holds 11 characters, over the limit of 10 ([limits] "
                        "max_answer_chars); answer with the result itself")
    out = run(l2, "w = 'z' * 10\nFINAL_VAR('w')")  # at the limit
    assert (out.final, out.error) == ("z" * 10, False)


def test_final_var_of_a_missing_variable_says_to_assign_it(l2: Any) -> None:
    out = run(l2, "FINAL_VAR('nope')")
    assert (out.final, out.error) == (None, True)
    assert out.text == "FINAL_VAR error: there is no variable named 'nope'; assign it first"


def test_the_helpers_work_after_the_model_rebinds_the_builtins_they_use(l2: Any) -> None:
    """Model code often names a variable `list` or `str`: FINAL, FINAL_VAR, SHOW_VARS and the helpers the
    sandbox wraps keep working (they run in the same namespace as the model's code)."""
    rebind = "list = find('hello')\nstr = 'x'\nlen = 0\nisinstance = None\ntype = 1\nlocals = 2\nValueError = 3"
    assert not run(l2, rebind).error
    out = run(l2, "print(count('hello'), find('world')[0]['offset'], lines(1, 2))")
    assert (out.text, out.error) == ("2 6 ['second line hello']", False)
    assert run(l2, "FINAL('ok')").final == "ok"
    out = run(l2, "v = 'abcdefghij'\nFINAL_VAR('v')")
    assert (out.final, out.error) == ("abcdefghij", False)
    out = run(l2, "w = 'abcdefghijk'\nFINAL_VAR('w')")
    assert (out.final, out.error) == (None, True) and "'w' holds 11 characters, over the limit of 10" in out.text
    out = run(l2, "FINAL('abcdefghijk')")
    assert out.error and out.text.endswith("ValueError: the answer holds 11 characters, over the limit of 10 "
                                           "([limits] max_answer_chars); answer with the result itself, not the "
                                           "data it came from")
    out = run(l2, "SHOW_VARS()")
    assert out.text == ("variables: ValueError: int, isinstance: NoneType, len: int, list: list, locals: int, str: str, "
                        "type: int, v: str, w: str")


def test_tracebacks_name_the_cells_by_number_also_after_a_restart(l2: Any) -> None:
    assert not run(l2, "def f(x):\n    return 1 / x").error
    out = run(l2, "y = 0\nf(y)")
    assert out.text == ('Traceback (most recent call last):\n  File "<cell 2>", line 2, in <module>\n    f(y)\n'
                        '    ~~~~\n  File "<cell 1>", line 2, in f\n    return 1 / x\n           ~~~~~\n'
                        'ZeroDivisionError: division by zero')
    assert "fresh sandbox" in run(l2, "while True:\n    pass").text  # cell 3: a new session
    assert not run(l2, "def g(x):\n    return [][x]").error
    out = run(l2, "g(1)")
    assert '  File "<cell 5>", line 1, in <module>' in out.text and '  File "<cell 4>", line 2, in g' in out.text
    out = run(l2, "find('')")  # an error in a helper's wrapper: named as the helpers, not as a cell
    assert '  File "<cell 6>", line 1, in <module>' in out.text and '  File "<helpers>", line ' in out.text


def test_a_restart_is_a_warning_event_and_the_model_is_told(l2: Any) -> None:
    out = run(l2, "x = 1\nwhile True:\n    pass")
    lines = out.text.split("\n")
    assert lines[0].startswith("TimeoutError: feed time limit exceeded") and out.error
    assert lines[1:] == ["[this block ran longer than the 2 s limit and was stopped; a fresh sandbox was started: "
                         "variables from earlier blocks are lost, `context` and the helper functions are available "
                         "again]"]
    assert l2.session.services["_events"] == [("warning", {
        "message": "L2 sandbox restarted: this block ran longer than the 2 s limit and was stopped", "level": "l2"})]
    assert l2.restarts == 1 and "NameError" in run(l2, "print(x)").text


def test_final_var_of_a_block_that_timed_out_is_lost_with_the_sandbox(l2: Any) -> None:
    out = run(l2, "x = 5\nFINAL_VAR('x')\nwhile True:\n    pass")
    assert (out.final, out.error) == (None, True)
    assert out.text.split("\n")[-1] == "FINAL_VAR error: the variable 'x' was lost with the sandbox"


def test_sleeping_in_the_sandbox_returns_at_once(l2: Any) -> None:
    """A sleep returns at once: it neither holds a worker nor counts as work (monty's own default sleeps up to
    10 s outside the block's time limit)."""
    t0 = time.monotonic()
    out = run(l2, "import time\ntime.sleep(1000)\nprint('woke')")  # the 2 s limit would stop a real sleep
    assert (out.text, out.error) == ("woke", False)
    assert time.monotonic() - t0 < 8  # monty's default: 10 s


def test_a_worker_over_its_memory_outside_the_interpreter_is_replaced_and_the_model_told(l2: Any) -> None:
    """Many small allocations take the worker past its limit where monty cannot raise a MemoryError in the
    cell: the worker is terminated. The block says so in one line, the sandbox is replaced (a warning event),
    a FINAL_VAR of that block is lost with it, and the next block runs in the fresh sandbox."""
    assert not run(l2, "keep = 1").error
    out = run(l2, "x = 0\nFINAL_VAR('x')\nx = [[i] for i in range(10 ** 8)]")
    assert (out.final, out.error) == (None, True)
    assert out.text.split("\n") == [
        "MemoryError: the worker exceeded its memory limit and was terminated",
        "[the sandbox ran out of memory and was terminated; a fresh sandbox was started: variables from earlier "
        "blocks are lost, `context` and the helper functions are available again]",
        "FINAL_VAR error: the variable 'x' was lost with the sandbox"]
    assert l2.restarts == 1 and l2.session.services["_events"] == [("warning", {
        "message": "L2 sandbox restarted: the sandbox ran out of memory and was terminated", "level": "l2"})]
    assert "NameError" in run(l2, "print(keep)").text
    assert run(l2, "print(count('hello'))").text == "2"


def test_each_restart_is_counted(l2: Any) -> None:
    for _ in range(2):
        assert "fresh sandbox was started" in run(l2, "x = [[i] for i in range(10 ** 8)]").text
    assert l2.restarts == 2 and len(l2.session.services["_events"]) == 2


def test_final_var_whose_value_cannot_be_made_a_str_says_why(l2: Any) -> None:
    out = run(l2, "class A:\n    def __str__(self):\n        raise ValueError('no str')\na = A()\nFINAL_VAR('a')")
    assert (out.text, out.error, out.final) == ("FINAL_VAR error: ValueError: no str", True, None)


def test_show_vars_that_cannot_list_the_namespace_says_why_and_is_no_error(l2: Any) -> None:
    out = run(l2, "_cb_locals = 1\nSHOW_VARS()")  # the probe's own name, rebound by the cell
    assert (out.text, out.error) == ("SHOW_VARS failed: TypeError: 'int' object is not callable", False)


def test_a_worker_killed_under_a_block_is_replaced_and_the_block_says_only_that() -> None:
    """The worker process dies while the block waits on the host (here: killed by the sub-model call): the
    block's text is the one note (no traceback, no stray error text), and the next block has a sandbox."""
    import signal

    s = make_session()
    ex = executor_factory("l2")(s)  # type: ignore[misc]

    def kill_worker(prompt: str) -> str:
        os.kill(ex._sess.worker_pid, signal.SIGKILL)
        time.sleep(0.2)
        return "too late"

    s.sub_query = kill_worker
    try:
        out = run(ex, "x = 1\nFINAL_VAR('x')\nr = llm_query('q')\nprint(r)")
        assert (out.error, out.final) == (True, None)
        note, lost = out.text.split("\n")
        assert note.startswith("[the sandbox worker died while running this block (") and note.endswith(
            "; a fresh sandbox was started: variables from earlier blocks are lost, `context` and the helper "
            "functions are available again]")
        assert lost == "FINAL_VAR error: the variable 'x' was lost with the sandbox"
        assert ex.restarts == 1
        assert run(ex, "print(count('hello'))").text == "2"
    finally:
        ex.close()


def test_the_memory_setting_still_bounds_the_code_beside_a_large_context() -> None:
    """The room given for the context is not room for the code: with 20 MB of ASCII context and
    ``l2_memory_mb = 1`` a 5 MB string fits, a 60 MB one is a MemoryError."""
    ex = executor_factory("l2")(make_session("c" * 20_000_000, l2_memory_mb=1))  # type: ignore[misc]
    try:
        assert run(ex, "small = 'z' * 5_000_000\nprint(len(small))").text == "5000000"
        out = run(ex, "big = 'y' * 60_000_000")
        assert out.error and "MemoryError: memory limit exceeded" in out.text
    finally:
        ex.close()


def test_a_context_gets_memory_room_for_its_utf8_size_on_top_of_the_setting() -> None:
    """``l2_memory_mb`` is the code's own room: the context (here 20 MB of 4-byte UTF-8 characters) is sent
    on top of it, and a tiny setting still leaves monty its own working room."""
    for text, memory_mb in (("tiny", 1), ("\U0001F600" * 5_000_000, 1)):
        ex = executor_factory("l2")(make_session(text, l2_memory_mb=memory_mb))  # type: ignore[misc]
        try:
            out = run(ex, "print(len(context))")
            assert (out.text, out.error) == (str(len(text)), False)
        finally:
            ex.close()


def test_a_single_document_context_is_a_str() -> None:
    ex = executor_factory("l2")(make_session({"only.txt": "just one\n"}))  # type: ignore[misc]
    try:
        assert run(ex, "print(type(context).__name__, repr(context))").text == "str 'just one\\n'"
    finally:
        ex.close()


def test_close_while_a_block_runs_starts_no_new_sandbox() -> None:
    ex = executor_factory("l2")(make_session(l2_time_limit_s=3))  # type: ignore[misc]
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(run(ex, "while True:\n    pass")))
    t.start()
    try:
        deadline = time.monotonic() + 60
        while ex._sess is None and time.monotonic() < deadline:  # the block has started
            time.sleep(0.05)
        ex.close()
        t.join(60)
        assert not t.is_alive()
        assert got[0].error and got[0].text.split("\n")[-1] == "[this block ran longer than the 3 s limit and was stopped]"
        assert ex.restarts == 0 and ex.session.services["_events"] == [] and ex._sess is None
        with pytest.raises(CommandError, match="^the L2 sandbox of this run is closed$"):
            run(ex, "print(1)")
        ex.close()
    finally:
        t.join(60)


def test_a_helper_reply_too_large_for_the_sandbox_restarts_it_and_says_why() -> None:
    """A sub-model's reply of 256 MiB + 1 byte is more than monty's frame limit: the session is lost, the
    model is told in one line (no traceback) and gets a fresh sandbox."""
    s = make_session(l2_memory_mb=64)
    s.sub_query = lambda p: "x" * ((256 << 20) + 1)
    s.limits = Limits(max_answer_chars=1 << 40)
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    try:
        assert not run(ex, "keep = 1").error
        out = run(ex, "r = llm_query('q')\nprint(len(r))")
        first, note = out.text.split("\n")
        assert out.error and re.fullmatch(
            r"error: RuntimeError: request frame of \d+ bytes exceeds the maximum of 268435456 bytes", first), first
        assert note == ("[the sandbox lost its session (a helper's reply too large for it, or a protocol error); a "
                        "fresh sandbox was started: variables from earlier blocks are lost, `context` and the helper "
                        "functions are available again]")
        assert ex.restarts == 1 and [e[1]["message"] for e in s.services["_events"]] == [
            "L2 sandbox restarted: the sandbox lost its session (a helper's reply too large for it, or a protocol "
            "error)"]
        assert "NameError" in run(ex, "print(keep)").text
    finally:
        ex.close()


def test_show_vars_beside_final_keeps_the_answer(l2: Any) -> None:
    out = run(l2, "a = 1\nFINAL('done')\nSHOW_VARS()")
    assert (out.final, out.error, out.text) == ("done", False, "variables: a: int")
    out = run(l2, "SHOW_VARS()\nFINAL_VAR('a')")
    assert (out.final, out.error, out.text) == ("1", False, "variables: a: int")


def test_show_vars_and_final_var_failing_in_the_sandbox_say_why(l2: Any) -> None:
    """Only code that rebinds the prelude's own `_cb_` names can make the probes fail: the note says how."""
    out = run(l2, "v = 1\n_cb_locals = None\nSHOW_VARS()")
    assert (out.text, out.error) == ("SHOW_VARS failed: TypeError: 'NoneType' object is not callable", False)
    out = run(l2, "_cb_str = None\nFINAL_VAR('v')")
    assert (out.text, out.error, out.final) == ("FINAL_VAR error: TypeError: 'NoneType' object is not callable",
                                                True, None)


def test_without_settings_a_block_gets_the_documented_defaults() -> None:
    from contextbox.context import Context
    from contextbox.executors import Session

    s = Session(context=Context.from_value("abc"), limits=Limits(), levels=("l1", "l2"), run_id="d")
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    try:
        assert (ex.time_limit_s, ex.memory_mb) == (30.0, 512.0)
        out = run(ex, "print(len(context))")
        assert (out.text, out.error) == ("3", False)
    finally:
        ex.close()


def test_a_block_given_only_as_source_runs_that_source(l2: Any) -> None:
    from contextbox.executors import Action

    out = l2.run(Action(kind="code", level="l2", op="code", args={}, source="print(6 * 7)"))
    assert (out.text, out.error) == ("42", False)
    out = l2.run(Action(kind="code", level="l2", op="code", args={"code": None}, source="print(1)"))
    assert (out.text, out.error) == ("(no output; print() what you want to see)", False)


def test_a_helper_argument_over_the_input_limit_is_refused_in_the_sandbox() -> None:
    s = make_session()
    s.limits = Limits(max_host_input_chars=10)
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    try:
        out = run(ex, "find('a', text='a' * 11)")
        assert out.error and '  File "<helpers>", line ' in out.text  # refused before it crossed to the host
        assert out.text.endswith("ValueError: find: an argument holds 11 characters, over the limit of 10 per call "
                                 "([limits] max_host_input_chars); pass a smaller piece, or work on the context "
                                 "itself")
        assert run(ex, "print(len(find('a', text='a' * 10)))").text == "10"
    finally:
        ex.close()


def test_a_session_given_up_ends_its_worker_process(l2: Any) -> None:
    assert not run(l2, "x = 1").error
    first = l2._sess.worker_pid
    assert "fresh sandbox" in run(l2, "while True:\n    pass").text
    second = l2._sess.worker_pid
    l2.close()
    for pid in (first, second):
        deadline = time.monotonic() + 20
        while os.path.exists(f"/proc/{pid}") and _state(pid) not in ("Z", "X") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}") or _state(pid) in ("Z", "X"), f"monty worker {pid} still runs"


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def test_a_sandbox_that_cannot_start_is_an_error_the_model_reads_and_the_next_block_starts_afresh(monkeypatch) -> None:
    """A real start failure: monty's pool checks a session out with a 1-byte memory limit, so feeding it the
    context fails inside ``_start``. The block is an error output naming the cause (not an exception out of
    the executor), nothing is left half-started, and once the pool is sound again the next block runs."""
    import contextbox.levels.sandbox as sb

    real = sb._pool()

    class TinyPool:
        def checkout(self, limits: dict[str, Any], **kw: Any) -> Any:
            return real.checkout(limits={**limits, "max_memory": 1}, **kw)

    s = make_session()
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    try:
        monkeypatch.setattr(sb, "_pool", lambda: TinyPool())
        out = run(ex, "x = 1\nprint(x)")
        assert out.error
        assert out.text.startswith("[the L2 sandbox could not start: ") and "memory limit exceeded" in out.text
        assert ex._sess is None  # dropped, not kept half-started
        monkeypatch.setattr(sb, "_pool", lambda: real)
        again = run(ex, "x = 1\nprint(x)")
        assert not again.error and again.text.strip() == "1"
    finally:
        ex.close()


@pytest.fixture
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The sandbox module with a pool of its own (the process-wide one is put back afterwards)."""
    import contextbox.levels.sandbox as sb

    monkeypatch.setattr(sb, "_POOL", None)
    try:
        yield sb
    finally:
        sb._close_pool()


def _start_all(executors: list[Any]) -> list[Any]:
    """Run a block in each executor at once (each then holds its sandbox until closed)."""
    outs: list[Any] = [None] * len(executors)

    def go(i: int) -> None:
        outs[i] = run(executors[i], "print(count('hello'))")

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(executors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a block waited for a sandbox past the checkout timeout"
    return outs


def test_more_concurrent_runs_than_cpus_each_get_a_sandbox(fresh_pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server runs many runs at once: the pool is not capped at the CPU count (monty's default)."""
    monkeypatch.setattr(fresh_pool, "_CHECKOUT_TIMEOUT_S", 20.0)  # time to spawn the workers on a loaded machine
    n = min((os.cpu_count() or 1) + 1, fresh_pool._POOL_MAX)
    executors = [executor_factory("l2")(make_session()) for _ in range(n)]  # type: ignore[misc]
    try:
        assert [(o.text, o.error) for o in _start_all(executors)] == [("2", False)] * n
    finally:
        for ex in executors:
            ex.close()


def test_a_run_that_finds_every_sandbox_busy_is_told_so_and_gets_one_once_free(
        fresh_pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the pool's cap reached, a block waits the checkout timeout, then is an error output the model
    reads (not an exception out of the executor); once a run ends and frees its sandbox, the next block runs."""
    monkeypatch.setattr(fresh_pool, "_POOL_MAX", 1)
    monkeypatch.setattr(fresh_pool, "_CHECKOUT_TIMEOUT_S", 2.0)
    first, second = (executor_factory("l2")(make_session()) for _ in range(2))  # type: ignore[misc]
    try:
        assert run(first, "print(1)").text == "1"
        busy = _start_all([second])[0]
        assert busy.error and busy.text == ("[the L2 sandbox could not start: all 1 sandboxes of this process stayed "
                                            "busy for 2 s; try again when fewer runs are going]")
        first.close()
        for _ in range(5):  # the freed worker is replaced by a fresh one: on a loaded machine that can take > 2 s
            again = _start_all([second])[0]
            if not again.error:
                break
        assert again.text == "2"
    finally:
        first.close()
        second.close()


def _children() -> set[int]:
    me = os.getpid()
    pids: set[int] = set()
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as f:
            pids |= {int(p) for p in f.read().split()}
    return {p for p in pids if _state(p) not in ("X", "Z")}


def test_a_worker_serves_one_run_only(fresh_pool: Any) -> None:
    """A run's worker (and whatever its code did to it) is never handed to the next run."""
    first = executor_factory("l2")(make_session())  # type: ignore[misc]
    assert run(first, "print(1)").text == "1"
    pid = first._sess.worker_pid
    first.close()
    second = executor_factory("l2")(make_session())  # type: ignore[misc]
    try:
        assert run(second, "print(2)").text == "2"
        assert second._sess.worker_pid != pid
    finally:
        second.close()


def test_closing_the_pool_ends_its_workers(fresh_pool: Any) -> None:
    """At exit the pool is closed: its warm worker does not outlive the process's use of it."""
    others = _children()  # e.g. the process-wide pool's warm worker
    fresh_pool._pool()
    deadline = time.monotonic() + 20
    while not _children() - others and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children() - others
    assert workers and fresh_pool._POOL is not None
    fresh_pool._close_pool()
    deadline = time.monotonic() + 20
    while workers & _children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not workers & _children() and fresh_pool._POOL is None


def test_a_slow_helper_stops_at_the_end_of_the_block_time() -> None:
    """Monty's clock does not run while a helper works on the host: the helper itself is bounded by the
    block's time limit (here 2 s), not only by its own limit (a 60 s regex timeout)."""
    import types

    s = make_session(l2_time_limit_s=2)
    s.config = types.SimpleNamespace(regex_timeout_s=60)
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    try:
        t0 = time.monotonic()
        out = run(ex, "r = regex('(a+)+$', text='a' * 40 + 'b')")
        assert out.error and out.text.endswith("Exception: regex '(a+)+$' ran longer than 2 s and was stopped; "
                                               "simplify it (avoid nested quantifiers like (a+)+, anchor it, or "
                                               "search for a literal with find)")
        assert time.monotonic() - t0 < 30
    finally:
        ex.close()


def test_closing_the_executor_gives_its_worker_back_to_be_ended() -> None:
    """A finished run's worker is ended (one session per worker), not kept checked out."""
    ex = executor_factory("l2")(make_session())  # type: ignore[misc]
    assert run(ex, "print(1)").text == "1"
    pid = ex._sess.worker_pid
    ex.close()
    deadline = time.monotonic() + 20
    while _state(pid) not in ("X", "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(pid) in ("X", "Z")


def test_a_syntax_error_names_its_cell_and_line_and_keeps_the_namespace(l2: Any) -> None:
    assert not run(l2, "x = 1").error
    out = run(l2, "y = 2\ndef f(:\n    pass")
    assert (out.text, out.error) == ('Traceback (most recent call last):\n  File "<cell 2>", line 2\n    def f(:\n'
                                     '          ~\nSyntaxError: Expected a parameter or the end of the parameter '
                                     'list', True)
    assert run(l2, "print(x)").text == "1" and l2.restarts == 0
