"""L3 (the native CPython worker) seen from the host, in detail: why a worker died and what the model is
told, a worker that breaks the protocol (model code can write to its pipe), a worker that cannot start,
restarts, close() while a block runs, the limits the worker gets from the run's settings, and isolation
between the workers of two runs.

Written against the survivors of `tests/mutation.py --modules native.py` (docs/mutation.md). Each test
asserts an outcome the model or the run sees at the executor (no model, no engine). Waits are bounded
generously and assert outcomes, not durations.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from contextbox.context import Context
from contextbox.errors import CommandError
from contextbox.executors import Action, ActionOutput, Session, executor_factory
from contextbox.levels import l3_guard, native
from contextbox.types import Limits

FRESH = ("; a fresh worker was started: variables from earlier blocks are lost, `context` and the helper "
         "functions are available again]")
DIED = "[the worker died while running this block: "
#: the worker object inside the worker process: model code can reach its pipe through a helper's closure
PIPE = "import os, struct, time, json\nw = find.__closure__[0].cell_contents\n"


def make_session(value: Any = "hello world\nsecond line hello\n", *, limits: Limits | None = None,
                 sub_query: Any = lambda p: f"SUB[{p}]", **services: Any) -> Session:
    svc: dict[str, Any] = {"l3_time_limit_s": 20, "max_code_output_chars": 2000}
    svc.update(services)
    events: list[tuple[str, dict[str, Any]]] = []
    s = Session(context=Context.from_value(value), limits=limits or Limits(), levels=("l1", "l3"), run_id="nd",
                emit=lambda t, d: events.append((t, d)), sub_query=sub_query, services=svc)
    s.services["_events"] = events
    return s


def run(ex: Any, code: str) -> ActionOutput:
    return ex.run(Action(kind="code", level=ex.level, op="code", args={"code": code}, source=code))


def warnings(ex: Any) -> list[str]:
    return [d["message"] for t, d in ex.session.services["_events"] if t == "warning"]


def _live(pid: int) -> bool:
    return l3_guard._live(pid)


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _live(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _live(pid)


@pytest.fixture
def l3() -> Iterator[Any]:
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    yield ex
    ex.close()


# ---------------------------------------------------------------------- why a worker died
def test_the_model_is_told_how_its_worker_died_and_gets_a_fresh_one(l3: Any) -> None:
    rt = int(signal.SIGRTMIN) + 3  # a signal without a name of its own
    cases = [
        ("os._exit(7)", "it exited with status 7"),
        ("os._exit(0)", "it exited with status 0"),
        ("os.kill(os.getpid(), signal.SIGKILL)",
         "it was killed by SIGKILL (often the memory limit, or the process killed itself)"),
        ("os.kill(os.getpid(), signal.SIGXCPU)", "it was killed by SIGXCPU (its CPU-time limit)"),
        ("os.kill(os.getpid(), signal.SIGSEGV)", "it was killed by SIGSEGV (a crash)"),
        ("os.kill(os.getpid(), signal.SIGTERM)", "it was killed by SIGTERM"),
        (f"os.kill(os.getpid(), {rt})", f"it was killed by signal {rt}"),
    ]
    for i, (code, reason) in enumerate(cases, 1):
        assert not run(l3, f"kept = {i}").error
        pid = l3.worker_pid()
        out = run(l3, f"import os, signal\n{code}")
        assert out.error and out.final is None
        assert out.text == DIED + reason + FRESH, code
        assert l3.worker_pid() != pid and _gone(pid)
        assert "NameError" in run(l3, "print(kept)").text  # the namespace went with the worker
    assert l3.restarts == len(cases)
    assert l3.session.services["_events"][-len(cases):] == [
        ("warning", {"message": f"L3 worker replaced: the worker died while running this block: {r}", "level": "l3"})
        for _, r in cases]


def test_a_worker_killed_between_blocks_is_noticed_at_the_next_one(l3: Any) -> None:
    assert not run(l3, "x = 1").error
    pid = l3.worker_pid()
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    out = run(l3, "print(x)")
    assert out.error and out.text == (
        DIED + "it was killed by SIGKILL (often the memory limit, or the process killed itself)" + FRESH)
    assert run(l3, "print('again')").text == "again"


def test_a_worker_that_closes_its_pipe_and_lingers_is_replaced(l3: Any) -> None:
    pid = l3.worker_pid()
    out = run(l3, PIPE + "os.close(w.chan.wfd)\ntime.sleep(60)")
    assert out.text == DIED + "the worker closed its pipe" + FRESH
    assert _gone(pid) and run(l3, "print(6 * 7)").text == "42"


# ---------------------------------------------------------------------- a worker that breaks the protocol
@pytest.mark.parametrize("write,reason", [
    ("os.write(w.chan.wfd, struct.pack('>I', (64 << 20) + 1))",
     "the worker sent a 67,108,865-byte message (limit 67,108,864)"),
    ("os.write(w.chan.wfd, struct.pack('>I', 3) + b'[1]')", "the worker sent a malformed message"),
    ("os.write(w.chan.wfd, struct.pack('>I', 2) + b'\\xff}')", "the worker sent a malformed message ("),
    ("os.write(w.chan.wfd, struct.pack('>I', 3) + b'{x}')", "the worker sent a malformed message ("),
    ("os.write(w.chan.wfd, struct.pack('>I', 200000) + b'[' * 200000)",
     "the worker sent a malformed message (maximum recursion depth"),
    ("w.chan.send({'op': 'bogus'})", "unexpected message 'bogus'"),
], ids=["oversized", "not-an-object", "not-utf8", "not-json", "too-deep", "unknown-op"])
def test_a_worker_breaking_the_protocol_is_replaced_with_the_reason(l3: Any, write: str, reason: str) -> None:
    pid = l3.worker_pid()
    out = run(l3, PIPE + write + "\ntime.sleep(60)")
    assert out.error and out.text.startswith(DIED + reason), out.text
    assert out.text.endswith(FRESH)
    assert _gone(pid) and run(l3, "print('fine')").text == "fine"


def test_a_frame_of_exactly_the_size_limit_is_waited_for_not_refused() -> None:
    ex = executor_factory("l3")(make_session(l3_time_limit_s=2))  # type: ignore[misc]
    try:
        out = run(ex, PIPE + "os.write(w.chan.wfd, struct.pack('>I', 64 << 20))\ntime.sleep(60)")
        assert out.text == "[this block ran longer than the 2 s limit and was stopped" + FRESH
    finally:
        ex.close()


def test_frames_split_across_writes_or_sharing_one_are_read_whole(l3: Any) -> None:
    code = PIPE + (
        "def frame(m):\n    b = json.dumps(m).encode()\n    return struct.pack('>I', len(b)) + b\n"
        "a = frame({'op': 'call', 'fn': 'slice_text', 'args': [0, 5]})\n"
        "os.write(w.chan.wfd, a[:2]); time.sleep(0.3); os.write(w.chan.wfd, a[2:7]); time.sleep(0.3)\n"
        "os.write(w.chan.wfd, a[7:])\nprint(w.chan.recv())\n"
        "os.write(w.chan.wfd, frame({'op': 'call', 'fn': 'count', 'args': ['hello']})"
        " + frame({'op': 'call', 'fn': 'lines', 'args': [1, 2]}))\n"
        "print(w.chan.recv()['value'], w.chan.recv()['value'])")
    out = run(l3, code)
    assert not out.error, out.text
    assert out.text.split("\n") == ["{'op': 'return', 'value': 'hello'}", "2 ['second line hello']"]


def _forged(msg: dict[str, Any], **kw: Any) -> ActionOutput:
    """The result of a block whose worker sends ``msg`` as its reply and exits."""
    ex = executor_factory("l3")(make_session(**kw))  # type: ignore[misc]
    try:
        return run(ex, PIPE + f"w.chan.send({msg!r})\nos._exit(0)")
    finally:
        ex.close()


def test_the_host_caps_output_and_answers_whatever_the_worker_claims() -> None:
    out = _forged({"op": "done", "output": "x" * 2001, "cut": 0, "error": None, "final": None})
    assert out.text == "x" * 2000 + "\n[… 1 more characters cut; print less, or slice what you print]"
    assert not out.error
    out = _forged({"op": "done", "output": "x" * 2000, "cut": 0, "error": None, "final": "fine"})
    assert (out.text, out.final, out.error) == ("x" * 2000, "fine", False)
    out = _forged({"op": "done", "output": "ab\n", "cut": 5, "error": None, "final": None})
    assert out.text == "ab\n[… 5 more characters cut; print less, or slice what you print]"
    out = _forged({"op": "done", "output": "", "cut": 5, "error": None, "final": None})
    assert out.text == "[… 5 more characters cut; print less, or slice what you print]"
    out = _forged({"op": "done", "output": 5, "cut": "7", "error": 7, "final": 7})
    assert (out.text, out.error, out.final) == ("(no output; print() what you want to see)", False, None)
    out = _forged({"op": "done", "output": "", "cut": 0, "error": "", "final": None})
    assert (out.text, out.error) == ("(no output; print() what you want to see)", False)


def test_the_host_refuses_an_answer_over_max_answer_chars_whatever_the_worker_claims() -> None:
    limits = Limits(max_answer_chars=10)
    out = _forged({"op": "done", "output": "", "cut": 0, "error": None, "final": "y" * 11}, limits=limits)
    assert (out.final, out.error) == (None, True)
    assert out.text == ("FINAL error: the answer holds 11 characters, over the limit of 10 ([limits] "
                        "max_answer_chars); answer with the result itself")
    out = _forged({"op": "done", "output": "", "cut": 0, "error": "Boom", "final": "y" * 11}, limits=limits)
    assert out.text.split("\n") == ["Boom", "FINAL error: the answer holds 11 characters, over the limit of 10 "
                                    "([limits] max_answer_chars); answer with the result itself"]
    out = _forged({"op": "done", "output": "", "cut": 0, "error": None, "final": "y" * 10}, limits=limits)
    assert (out.final, out.error) == ("y" * 10, False)


def test_an_answer_over_the_limit_is_an_exception_the_cell_can_catch() -> None:
    ex = executor_factory("l3")(make_session(limits=Limits(max_answer_chars=10)))  # type: ignore[misc]
    try:
        out = run(ex, "try:\n    FINAL('z' * 11)\nexcept ValueError as e:\n    print('caught', e)\n"
                      "    FINAL('short')")
        assert (out.final, out.error) == ("short", False)
        assert "caught the answer holds 11 characters, over the limit of 10" in out.text
    finally:
        ex.close()


# ---------------------------------------------------------------------- host calls
def test_host_calls_the_worker_may_make_and_the_errors_it_gets() -> None:
    def sub(prompt: str) -> str:
        if prompt == "runtime":
            raise RuntimeError("the model is gone")
        if prompt == "value":
            raise ValueError("a bad prompt")
        return f"SUB[{prompt}]"

    ex = executor_factory("l3")(make_session(sub_query=sub))  # type: ignore[misc]
    try:
        code = PIPE + (
            "def ask(*a, **k):\n    try:\n        return repr(w._call_host(*a, **k))\n"
            "    except Exception as e:\n        return type(e).__name__ + ': ' + str(e)\n"
            "print(ask('slice_text', 0, 5))\nprint(ask('slice_', 0, 5))\nprint(ask('nope'))\n"
            "print(ask('llm_query', 'runtime'))\nprint(ask('llm_query', 'value'))\nprint(ask('llm_query', 'ok'))\n"
            "print(ask('find', needle='hello', max=1))\n"
            "w.chan.send({'op': 'call', 'fn': 'find', 'args': 'hello'}); print(w.chan.recv())\n"
            "w.chan.send({'op': 'call', 'fn': 'find', 'args': ['hello'], 'kwargs': [1]}); print(w.chan.recv())\n"
            "w.chan.send({'op': 'call', 'fn': 'find', 'args': [''], 'kwargs': None}); print(w.chan.recv())\n"
            "print(ask('find', 'x', bogus=1))")
        out = run(ex, code)
        assert not out.error, out.text
        assert out.text.split("\n") == [
            "'hello'",
            "HostError: unknown host function 'slice_'",  # the worker's name for it is slice_text
            "HostError: unknown host function 'nope'",
            "HostError: RuntimeError: the model is gone",
            "HostError: a bad prompt",
            "'SUB[ok]'",
            "[{'offset': 0, 'line': 0, 'text': 'hello world'}]",
            "{'op': 'raise', 'message': \"unknown host function 'find'\"}",
            "{'op': 'raise', 'message': \"unknown host function 'find'\"}",
            "{'op': 'raise', 'message': \"find needs a non-empty 'text' to look for\"}",
            "HostError: host_functions.<locals>.find() got an unexpected keyword argument 'bogus'",
        ]
    finally:
        ex.close()


def test_time_waiting_for_sub_models_does_not_count_against_the_block() -> None:
    def slow(prompt: str) -> str:
        time.sleep(3)
        return prompt.upper()

    ex = executor_factory("l3")(make_session(sub_query=slow, l3_time_limit_s=5))  # type: ignore[misc]
    try:
        out = run(ex, "print([llm_query(p) for p in ('a', 'b', 'c')])")  # 9 s of sub-calls in a 5 s block
        assert (out.text, out.error) == ("['A', 'B', 'C']", False)
        out = run(ex, "while True:\n    pass")  # the block's own time still counts
        assert out.text == "[this block ran longer than the 5 s limit and was stopped" + FRESH
    finally:
        ex.close()


def test_the_block_time_limit_is_stated_as_configured() -> None:
    ex = executor_factory("l3")(make_session(l3_time_limit_s=1.5))  # type: ignore[misc]
    try:
        assert not run(ex, "x = 1").error
        out = run(ex, "import time\ntime.sleep(60)")
        assert out.error and out.text == "[this block ran longer than the 1.5 s limit and was stopped" + FRESH
        assert warnings(ex)[-1] == "L3 worker replaced: this block ran longer than the 1.5 s limit and was stopped"
        assert ex.restarts == 1 and "NameError" in run(ex, "print(x)").text
    finally:
        ex.close()


def test_the_regex_timeout_setting_reaches_the_worker() -> None:
    s = make_session()
    s.config = SimpleNamespace(regex_timeout_s=0.5)
    ex = executor_factory("l3")(s)  # type: ignore[misc]
    try:
        out = run(ex, "regex('(a*)*b', text='a' * 40)")
        assert out.error and "ran longer than 0.5 s and was stopped" in out.text, out.text
        assert run(ex, "print('still here')").text == "still here"  # the worker itself was not replaced
        assert ex.restarts == 0
    finally:
        ex.close()


# ---------------------------------------------------------------------- limits from the settings
LIMITS = ("import resource as r\nprint([r.getrlimit(getattr(r, n)) for n in "
          "('RLIMIT_CPU', 'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_FSIZE', 'RLIMIT_CORE')])\n"
          "print(r.getrlimit(r.RLIMIT_AS)[0])")


def _limits(ex: Any) -> tuple[list[tuple[int, int]], int]:
    out = run(ex, LIMITS)
    assert not out.error, out.text
    first, second = out.text.split("\n")
    return [tuple(x) for x in eval(first)], int(second)  # noqa: S307 - our own print of a list of tuples


def _inf_ok(value: int, res: int) -> int:
    """``value``, or the test process's own hard limit when that is lower (the worker cannot raise it)."""
    hard = resource.getrlimit(res)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def test_the_worker_gets_the_configured_limits() -> None:
    ex = executor_factory("l3")(make_session(l3_cpu_s=77, l3_nproc=21, l3_max_file_mb=3, l3_memory_mb=100))  # type: ignore[misc]
    try:
        got, as_soft = _limits(ex)
        cpu = _inf_ok(77, resource.RLIMIT_CPU)
        assert got[0] == (cpu, cpu + 5)  # SIGXCPU at the soft limit, SIGKILL 5 s later
        assert got[1:] == [(256, 256), (21, 21), (3 << 20, 3 << 20), (0, 0)]
        # the address space: what the worker had mapped when it started, plus l3_memory_mb
        assert 100 << 20 < as_soft < (100 << 20) + (1 << 30)
    finally:
        ex.close()


def test_the_worker_limits_default_to_the_documented_values() -> None:
    s = Session(context=Context.from_value("abc"), limits=Limits(), levels=("l1", "l3"), run_id="d")
    l3 = executor_factory("l3")(s)  # type: ignore[misc]
    try:
        assert l3.time_limit_s == 60.0  # the block's wall-clock limit (not waited for here)
        got, as_soft = _limits(l3)
    finally:
        l3.close()
    cpu = _inf_ok(600, resource.RLIMIT_CPU)
    assert got[:4] == [(cpu, cpu + 5), (256, 256), (32, 32), (1 << 30, 1 << 30)]
    assert 1 << 30 < as_soft < 2 << 30


def test_a_block_cannot_allocate_more_than_l3_memory_mb() -> None:
    ex = executor_factory("l3")(make_session(l3_memory_mb=64))  # type: ignore[misc]
    try:
        out = run(ex, "keep = 1\nb = bytearray(200 << 20)")
        assert out.error and "MemoryError" in out.text
        assert run(ex, "b = bytearray(16 << 20)\nprint(keep, len(b))").text == f"1 {16 << 20}"
    finally:
        ex.close()


def test_a_block_whose_processes_together_pass_the_memory_limit_is_stopped() -> None:
    """Three children of 48 MB each: every one under the worker's 64 MiB, together over it."""
    code = ("import os, time\nkeep = 1\npids = []\nfor i in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
            "        b = b'\\x01' * (48 << 20)\n        time.sleep(60)\n        os._exit(0)\n    pids.append(pid)\n"
            "for p in pids:\n    os.waitpid(p, 0)\nprint('all three done')")
    ex = executor_factory("l3")(make_session(l3_memory_mb=64, l3_time_limit_s=60))  # type: ignore[misc]
    try:
        if "memory" in ex.group.controllers:  # pragma: no cover - a delegated cgroup does it instead
            pytest.skip("the cgroup's memory.max stops these processes, not the host's watch")
        out = run(ex, code)
        assert out.error and out.text.startswith("[this block was stopped by the memory limit: its processes "
                                                 "used "), out.text
        assert "worker's memory limit of" in out.text and out.text.endswith(FRESH)
        assert "NameError" in run(ex, "print(keep)").text
    finally:
        ex.close()


def test_processes_a_block_leaves_running_end_with_it_but_the_worker_stays(l3: Any) -> None:
    out = run(l3, "import os, time\nkeep = 'kept'\nr, w = os.pipe()\npid = os.fork()\nif pid == 0:\n"
                  "    os.setsid()\n    time.sleep(600)\n    os._exit(0)\nprint(pid)")
    child = int(out.text)
    assert _gone(child), "a process the block started outlived it"
    assert run(l3, "print(keep)").text == "kept" and l3.restarts == 0


# ---------------------------------------------------------------------- starting the worker
def _fake_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    script = tmp_path / "fake_worker.py"
    script.write_text("import os, sys, json, struct, time\nrfd, wfd = int(sys.argv[1]), int(sys.argv[2])\n" + body)
    script.chmod(0o644)
    tmp_path.chmod(0o755)
    monkeypatch.setattr(native, "WORKER", script)


def test_a_worker_that_fails_to_start_is_reported_with_the_end_of_its_stderr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_worker(tmp_path, monkeypatch, "sys.stderr.write('e' * 1000 + 'END\\n')\nsys.exit(4)")
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "print(1)")
        assert out.error and out.text == (
            "[the worker failed to start (the worker closed its pipe; " + "e" * 596 + "END)" + FRESH)  # its last 600 bytes
        assert warnings(ex)[-1].startswith("L3 worker replaced: the worker failed to start (")
    finally:
        ex.close()


def test_a_worker_that_fails_to_start_silently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_worker(tmp_path, monkeypatch, "sys.exit(0)")
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        assert run(ex, "print(1)").text == "[the worker failed to start (the worker closed its pipe)" + FRESH
    finally:
        ex.close()


def test_a_worker_whose_first_message_is_not_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_worker(tmp_path, monkeypatch, "b = json.dumps({'op': 'hello'}).encode()\n"
                                        "os.write(wfd, struct.pack('>I', len(b)) + b)\ntime.sleep(60)")
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "print(1)")
        assert out.text == "[the worker failed to start (unexpected first message from the worker: 'hello')" + FRESH
    finally:
        ex.close()


def test_a_worker_that_never_becomes_ready_is_given_up_after_30_s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_worker(tmp_path, monkeypatch, "time.sleep(600)")
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "print(1)")  # waits the start-up limit (30 s for a small context), not forever
        assert out.text == "[the worker failed to start (the worker did not start in time)" + FRESH
    finally:
        ex.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_worker_that_cannot_be_started_is_retried_at_the_next_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    before = _fds()
    try:
        for _ in range(3):
            out = run(ex, "print(1)")
            assert out.error and out.text.startswith("[the L3 worker could not start: ")
            assert "/nonexistent/python3" in out.text and out.text.endswith("]")
        assert _fds() == before  # no pipe or file left open by the failed starts
        monkeypatch.undo()
        assert run(ex, "print('started')").text == "started"
    finally:
        ex.close()


def test_a_replacement_that_cannot_start_is_retried_at_the_next_block(
        l3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not run(l3, "x = 1").error
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    out = run(l3, "import os\nos._exit(3)")
    assert out.error and out.text.startswith(DIED + "it exited with status 3; a new worker could not be started (")
    assert out.text.endswith("); it will be retried with the next block]") and l3.worker_pid() is None
    monkeypatch.undo()
    assert run(l3, "print('back')").text == "back"


# ---------------------------------------------------------------------- what the worker reports
def test_protections_turned_off_are_reported_once_as_warnings() -> None:
    ex = executor_factory("l3")(make_session(l3_isolate_network=False, l3_landlock=False,  # type: ignore[misc]
                                             l3_seccomp=False))
    try:
        assert not run(ex, "x = 1").error
        first = warnings(ex)
        assert [e for e in ex.session.services["_events"] if "cgroup" not in e[1]["message"]] == [
            ("warning", {"message": m, "level": "l3"}) for m in (
                "L3 worker: network not isolated: not requested", "L3 worker: filesystem not sandboxed: not requested",
                "L3 worker: unix sockets not blocked (seccomp: not requested)")]
        run(ex, "import os\nos._exit(1)")  # a new worker: the same warnings are not repeated
        assert run(ex, "print(2)").text == "2"
        assert warnings(ex) == first + ["L3 worker replaced: the worker died while running this block: it exited "
                                        "with status 1"]
    finally:
        ex.close()


def test_a_worker_with_every_protection_reports_none_missing(l3: Any) -> None:
    assert not run(l3, "x = 1").error
    assert [w for w in warnings(l3) if "cgroup" not in w] == []


def test_a_worker_without_a_private_uid_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("private worker uids exist only when the host runs as root")

    def exhausted(*a: Any, **k: Any) -> Any:
        raise OSError("no free L3 worker uid in 3000000-3000009")

    monkeypatch.setattr(l3_guard, "lease_uid", exhausted)
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        assert not run(ex, "x = 1").error
        assert "L3 worker: worker runs as the host's user: unchanged (0) (no private uid: no free L3 worker uid in " \
               "3000000-3000009)" in warnings(ex)
        if "pids" not in ex.group.controllers:  # then the process limit is the host user's, and it says so
            (cg,) = [w for w in warnings(ex) if "cgroup" in w]
            instead = cg.split("; instead ", 1)[1].split("; ")
            assert "processes: RLIMIT_NPROC, which counts every process of the host's user" in instead
    finally:
        ex.close()


def _fake_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, controllers: str = "cpu memory pids") -> Path:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    monkeypatch.setattr(l3_guard, "cgroup_parent", lambda: root)
    return root


def test_the_cgroup_gets_the_configured_limits_and_its_oom_kills_are_the_memory_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in cgroup v2 directory: the limits written into it follow the run's settings, and a worker
    that dies while the kernel counts an OOM kill in it was stopped by the memory limit."""
    root = _fake_cgroup(tmp_path, monkeypatch)
    text = "abc\n" * 1000

    def oom(prompt: str) -> str:  # the kernel's count of OOM kills goes up while the block runs
        (root / cg.name / "memory.events").write_text("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n")
        return "ok"

    ex = executor_factory("l3")(make_session(text, sub_query=oom, l3_memory_mb=100, l3_nproc=21,  # type: ignore[misc]
                                             l3_cpus=0.5))
    try:
        cg = ex.group.cgroup
        assert cg is not None and cg.parent == root
        assert (cg / "memory.max").read_text() == str(4 * 4000 + (100 << 20) + (256 << 20))
        assert (cg / "pids.max").read_text() == "21" and (cg / "cpu.max").read_text() == "50000 100000"
        (cg / "memory.current").write_text("5000000\n")
        assert not run(ex, "x = 1").error
        # once the worker is ready: what it uses then plus l3_memory_mb
        assert (cg / "memory.max").read_text() == str(5000000 + (100 << 20))
        assert not [w for w in warnings(ex) if "cgroup" in w]
        out = run(ex, "import os, signal\nllm_query('go')\nos.kill(os.getpid(), signal.SIGKILL)")
        assert out.text == ("[this block was stopped by the memory limit: its processes used more than the "
                            "worker's memory limit" + FRESH)
    finally:
        ex.close()


def test_a_missing_cgroup_controller_is_named_with_what_stands_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cgroup(tmp_path, monkeypatch)
    ex = executor_factory("l3")(make_session(l3_cpus=0))  # type: ignore[misc]  # no CPU share asked for
    try:
        assert not run(ex, "x = 1").error
        assert [w for w in warnings(ex) if "cgroup" in w] == [
            f"L3 worker: no cgroup limit for cpu ({ex.group.describe()}); instead CPU: RLIMIT_CPU per process and "
            "the block's time limit"]
    finally:
        ex.close()


def test_without_cgroup_limits_the_warning_says_what_bounds_the_worker_instead(l3: Any) -> None:
    """On this machine's own cgroups: every controller not delegated is named, with its stand-in."""
    assert not run(l3, "x = 1").error
    instead = {
        "memory": "memory: the host sums the PSS of the worker's processes every 50 ms while a block runs (a fast "
                  "allocation can overshoot it briefly)",
        "pids": "processes: RLIMIT_NPROC of the worker's private uid" if os.geteuid() == 0 else
                "processes: RLIMIT_NPROC, which counts every process of the host's user",
        "cpu": "CPU: RLIMIT_CPU per process and the block's time limit",
    }
    missing = [c for c in ("memory", "pids", "cpu") if c not in l3.group.controllers]
    want = [f"L3 worker: no cgroup limit for {', '.join(missing)} ({l3.group.describe()}); instead "
            + "; ".join(instead[c] for c in missing)] if missing else []
    assert [w for w in warnings(l3) if "cgroup" in w] == want


# ---------------------------------------------------------------------- close
def test_close_while_a_block_runs_ends_it_and_starts_no_new_worker() -> None:
    ex = executor_factory("l3")(make_session(l3_time_limit_s=120))  # type: ignore[misc]
    assert not run(ex, "x = 1").error
    pid, base, workdir = ex.worker_pid(), ex.base, ex.workdir
    got: list[ActionOutput] = []
    t = threading.Thread(target=lambda: got.append(run(ex, "while True:\n    pass")))
    t.start()
    time.sleep(0.5)
    try:
        ex.close()
        t.join(30)
        assert not t.is_alive(), "the block outlived close()"
        assert got[0].error and got[0].text == (
            DIED + "it was killed by SIGKILL (often the memory limit, or the process killed itself)]")
        assert ex.restarts == 0 and ex.worker_pid() is None
        assert not any(w.startswith("L3 worker replaced") for w in warnings(ex))
        assert _gone(pid) and not base.exists() and not workdir.exists()
        with pytest.raises(CommandError, match="the L3 worker of this run is closed"):
            run(ex, "print(1)")
        ex.close()  # twice is harmless
    finally:
        if t.is_alive():
            os.kill(pid, signal.SIGKILL)
            t.join(30)


def test_close_during_a_host_call_that_does_not_return_cleans_up_when_the_block_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_CLOSE_KILL_WAIT_S", 0.5)
    release = threading.Event()

    def stuck(prompt: str) -> str:
        release.wait(60)
        return "late"

    ex = executor_factory("l3")(make_session(sub_query=stuck, l3_time_limit_s=120))  # type: ignore[misc]
    assert not run(ex, "x = 1").error
    pid, base, workdir = ex.worker_pid(), ex.base, ex.workdir
    got: list[ActionOutput] = []
    t = threading.Thread(target=lambda: got.append(run(ex, "print(llm_query('wait'))")))
    t.start()
    time.sleep(0.5)
    try:
        ex.close()  # the block is in the host, not reading the worker's pipe: close cannot wait for it
        assert _gone(pid)
        release.set()
        t.join(30)
        assert not t.is_alive() and got[0].error and got[0].text.startswith(DIED)
        assert "fresh worker" not in got[0].text
        assert not base.exists() and not workdir.exists()  # the block cleaned up what close() could not
        assert ex.worker_pid() is None
    finally:
        release.set()
        t.join(30)
        ex.close()


# ---------------------------------------------------------------------- isolation between runs
@pytest.mark.skipif(os.geteuid() != 0, reason="the workers of two runs have uids of their own only when the host "
                    "runs as root (else Landlock alone separates them, signals only from ABI 6)")
def test_the_workers_of_two_runs_cannot_reach_each_other() -> None:
    a = executor_factory("l3")(make_session("run a\n"))  # type: ignore[misc]
    b = executor_factory("l3")(make_session("run b\n"))  # type: ignore[misc]
    try:
        assert not run(b, "secret = 'b'\nopen('mine.txt', 'w').write('b')").error
        pid_b = b.worker_pid()
        code = (f"import os, signal\nfor f in (lambda: os.kill({pid_b}, signal.SIGKILL), "
                f"lambda: os.listdir({str(b.workdir)!r}), lambda: open({str(b.workdir / 'mine.txt')!r}).read(), "
                f"lambda: open({str(b.base / 'context.txt')!r}).read()):\n"
                "    try:\n        print('reached', f())\n    except OSError as e:\n        print(type(e).__name__)")
        out = run(a, code)
        assert "reached" not in out.text, out.text
        assert out.text.split("\n") == ["PermissionError"] * 4, out.text
        assert run(b, "print(secret, context.strip())").text == "b run b"  # b's worker is untouched
        assert b.worker_pid() == pid_b
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------- the context in the worker
def test_records_of_a_one_file_context_name_the_file_as_at_l2(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("a,1\nb,2\n")
    rows = []
    for level in ("l3", "l2"):
        s = make_session()
        s.context = Context.load(str(f))
        ex = executor_factory(level)(s)  # type: ignore[misc]
        try:
            rows.append(run(ex, "print(records())").text)
        finally:
            ex.close()
    assert rows[0] == rows[1] == repr([{"text": "a,1", "doc": str(f), "line": 0}, {"text": "b,2", "doc": str(f),
                                                                                  "line": 1}])


def test_a_single_document_context_is_a_str_and_several_are_documents() -> None:
    ex = executor_factory("l3")(make_session({"only.txt": "just one\n"}))  # type: ignore[misc]
    try:
        assert run(ex, "print(type(context).__name__, repr(context))").text == "str 'just one\\n'"
    finally:
        ex.close()
    ex = executor_factory("l3")(make_session({"a.txt": "one\n", "b.txt": "two\n"}))  # type: ignore[misc]
    try:
        assert run(ex, "print(context, context[1].text, Document.__name__)").text == (
            "[Document(path='a.txt', chars=4), Document(path='b.txt', chars=4)] two\n Document")
    finally:
        ex.close()


def test_replacing_workers_leaves_no_pipe_or_file_open(l3: Any) -> None:
    assert not run(l3, "x = 1").error
    before = _fds()
    for _ in range(3):
        assert "fresh worker" in run(l3, "import os\nos._exit(1)").text
        assert run(l3, "print(1)").text == "1"
    assert _fds() == before


def test_a_block_given_only_as_source_runs_that_source(l3: Any) -> None:
    out = l3.run(Action(kind="code", level="l3", op="code", args={}, source="print(6 * 7)"))
    assert (out.text, out.error) == ("42", False)
    out = l3.run(Action(kind="code", level="l3", op="code", args={"code": None}, source="print(1)"))
    assert (out.text, out.error) == ("(no output; print() what you want to see)", False)


def test_a_worker_that_stops_reading_is_replaced_at_the_next_block(l3: Any) -> None:
    # the worker's end of the host's pipe is replaced by a pipe nobody writes to: it waits there, alive
    assert not run(l3, PIPE + "r, keep_w = os.pipe()\nos.dup2(r, w.chan.rfd)").error
    out = run(l3, "print(1)")
    assert out.text == DIED + "cannot write to the worker: [Errno 32] Broken pipe" + FRESH
    assert run(l3, "print(2)").text == "2"


def test_lone_surrogates_cross_the_pipe_both_ways(l3: Any) -> None:
    out = run(l3, "x = '\\udcff'\nprint(x, len(x))")  # a lone surrogate in the output
    assert (out.text, out.error) == ("\udcff 1", False)
    out = run(l3, "y = '\udcff'")  # and one in the code itself: the cell's own error, not the host's
    assert out.error and "fresh worker" not in out.text
    assert run(l3, "print(len(x))").text == "1"
