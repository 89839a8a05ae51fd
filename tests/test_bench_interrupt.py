"""``rlm bench``'s direct baseline waits for its one long model call from another thread, so Ctrl-C and SIGTERM
stop the benchmark at once — llama.cpp does not return to Python until its whole reply is written."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from contextbox.bench.runner import interruptible

# a C call that holds the main thread without coming back to the interpreter (as llama.cpp does); its
# length is measured first, under the same load as the interrupted call
PROG = textwrap.dedent("""
    import hashlib, sys, threading, time
    from contextbox.bench.runner import interruptible
    def call():
        return hashlib.pbkdf2_hmac("sha256", b"x", b"y", 400_000)
    t = time.monotonic(); call(); print(f"length {time.monotonic() - t:.3f}", flush=True)
    t = time.monotonic()
    try:
        interruptible(call) if sys.argv[1] == "thread" else call()
        time.sleep(0.1)  # (in the main thread the handler runs when the call is over: here)
    except KeyboardInterrupt:
        busy = any(th.name == "contextbox-direct-call" for th in threading.enumerate())
        print(f"interrupted after {time.monotonic() - t:.3f} call_running={busy}", flush=True)
        sys.exit(130)
""")


def _interrupt(mode: str) -> tuple[int, float, float, bool]:
    p = subprocess.Popen([sys.executable, "-c", PROG, mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    length = float(p.stdout.readline().split()[1])
    time.sleep(length * 0.15)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    after = float(out.split()[2])
    return p.returncode, length, after, "call_running=True" in out


def test_ctrl_c_stops_a_long_c_call_at_once_when_it_runs_in_a_thread():
    code, length, after, running = _interrupt("thread")
    assert code == 130
    assert running  # the interrupt came while the call was still running: it was not waited for


def test_without_the_thread_the_same_call_delays_ctrl_c_until_it_returns():
    """The control: in the main thread the handler only runs once the call is over."""
    code, length, after, running = _interrupt("main")
    assert code == 130 and not running
    assert after >= 0.3 * length  # (loose: the machine may be loaded, the two runs of the call differ)


def test_the_value_and_the_error_come_back_to_the_caller():
    assert interruptible(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        interruptible(lambda: 1 / 0)
