"""Hostile code at L2 (pydantic-monty) and L3 (native worker).

Every snippet runs at both levels. Whatever the snippet does, afterwards:

* the host process is alive and its environment secret never appears in any output;
* nothing was written outside the worker's temporary directory (marker files);
* the listening TCP, UDP and abstract-unix sockets of the test saw no traffic;
* another run's executor (with its own variable) still works, and so does this one.

``python tests/test_security.py`` reruns the suite and prints the table of
``docs/security.md``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from contextbox.context import Context  # noqa: E402
from contextbox.executors import Action, ActionOutput, Session, executor_factory  # noqa: E402
from contextbox.types import Limits  # noqa: E402

SECRET = "sk-test-SECRET-" + uuid.uuid4().hex
TAG = uuid.uuid4().hex[:8]
MARKERS = [f"/tmp/cbx-pwned-{TAG}", f"/var/tmp/cbx-pwned-{TAG}", f"/dev/shm/cbx-pwned-{TAG}", f"/root/cbx-pwned-{TAG}"]
GREETING = "HELLO-FROM-HOST"
PASSWD = "root:x:0:0"

#: (name, code). Placeholders: {M} a marker path, {HOST_PID}, {PORT}, {UDP_PORT}, {UNIX}, {OTHER}.
SNIPPETS: list[tuple[str, str]] = [
    ("read /etc/passwd", "print(open('/etc/passwd').read())"),
    ("list /", "import os\nprint(os.listdir('/'))"),
    ("list /root", "import os\nprint(os.listdir('/root'))"),
    ("write a file in /tmp", "open('{M0}', 'w').write('pwned')"),
    ("write a file in /var/tmp and /dev/shm", "open('{M1}', 'w').write('x')\nopen('{M2}', 'w').write('x')"),
    ("write into /root", "open('{M3}', 'w').write('pwned')"),
    (
        "import socket, connect to a host port",
        "import socket\ns = socket.create_connection(('127.0.0.1', {PORT}), timeout=2)\nprint(s.recv(100))",
    ),
    (
        "UDP to a host port",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', {UDP_PORT}))",
    ),
    (
        "abstract unix socket of the host",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0{UNIX}')\nprint(s.recv(100))",
    ),
    ("DNS lookup", "import socket\nprint(socket.getaddrinfo('pypi.org', 443))"),
    (
        "import subprocess, cat /etc/passwd",
        "import subprocess\nprint(subprocess.run(['cat', '/etc/passwd'], capture_output=True, text=True))",
    ),
    ("os.system writes a marker", "import os\nos.system('echo pwned > {M0}; cat /etc/passwd')"),
    ("import ctypes, kill the parent", "import ctypes, os\nprint(ctypes.CDLL(None).kill(os.getppid(), 9))"),
    ("os.kill the parent", "import os\nos.kill(os.getppid(), 9)"),
    ("os.kill the host pid", "import os\nos.kill({HOST_PID}, 9)"),
    ("killpg the host's group", "import os\nos.killpg(os.getpgid({HOST_PID}), 9)"),
    ("fork loop", "import os\nwhile True:\n    os.fork()"),
    ("fork and linger", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)"),
    ("read /proc/self/environ", "print(open('/proc/self/environ').read())"),
    ("read the host's environ", "print(open('/proc/{HOST_PID}/environ').read())"),
    ("read the host's cmdline", "print(open('/proc/{HOST_PID}/cmdline').read())"),
    ("os.environ secret", "import os\nprint(os.environ.get('OPENAI_API_KEY'), dict(os.environ))"),
    ("os.getenv secret", "import os\nprint(os.getenv('OPENAI_API_KEY'))"),
    (
        "signal tampering + loop",
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
    ),
    (
        "__subclasses__ escape",
        "print([c.__name__ for c in ().__class__.__base__.__subclasses__() if c.__name__ in ('Popen', 'FileIO')])\n"
        "fio = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'FileIO'][0]\nprint(fio('/etc/passwd').read())",
    ),
    ("memory bomb (one allocation)", "x = bytearray(50 * 2**30)"),
    ("memory bomb (growing)", "l = []\nwhile True:\n    l.append('x' * 10**7)"),
    ("recursion bomb", "def f(n):\n    return f(n + 1)\nf(0)"),
    (
        "deep recursion with a raised limit",
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
    ),
    ("infinite loop", "while True:\n    pass"),
    ("sleep forever", "import time\ntime.sleep(10**6)"),
    ("1 GB print", "print('x' * 2**30)"),
    ("print flood", "while True:\n    print('y' * 1000)"),
    ("exhaust file descriptors", "fs = []\nwhile True:\n    fs.append(open('/dev/null'))"),
    ("huge file in the temp dir", "f = open('big.bin', 'wb')\nwhile True:\n    f.write(b'0' * 2**20)"),
    ("symlink to /etc/passwd", "import os\nos.symlink('/etc/passwd', 'p')\nprint(open('p').read())"),
    ("hard link to /etc/passwd", "import os\nos.link('/etc/passwd', 'p2')\nprint(open('p2').read())"),
    ("read another run's directory", "import os\nprint(os.listdir('{OTHER}'))"),
    ("setuid(0)", "import os\nos.setuid(0)\nprint(open('/etc/passwd').read())"),
    ("ptrace the parent", "import ctypes, os\nprint(ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0))"),
    (
        "new user namespace, then read /etc/passwd",
        "import ctypes\nprint(ctypes.CDLL(None).unshare(0x10000000))\nprint(open('/etc/passwd').read())",
    ),
    ("os._exit", "import os\nos._exit(0)"),
    ("segfault", "import ctypes\nctypes.string_at(0)"),
    ("sys.exit", "import sys\nsys.exit(3)"),
    ("eval/exec/__import__ of os", "m = __import__('os')\nprint(m.listdir('/'))"),
]


# ---------------------------------------------------------------------- harness
class Listeners:
    """TCP, UDP and abstract-unix listeners that record any traffic."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_name = f"cbx-test-{TAG}"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind("\0" + self.unix_name)
        self.unix.listen()
        self._stop = False
        for sock, kind in ((self.tcp, "tcp"), (self.unix, "unix")):
            threading.Thread(target=self._accept, args=(sock, kind), daemon=True).start()
        threading.Thread(target=self._udp, daemon=True).start()

    def _accept(self, sock: socket.socket, kind: str) -> None:
        while not self._stop:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.hits.append(kind)
            try:
                conn.sendall(GREETING.encode())
                conn.close()
            except OSError:
                pass

    def _udp(self) -> None:
        while not self._stop:
            try:
                self.udp.recvfrom(100)
            except OSError:
                return
            self.hits.append("udp")

    def close(self) -> None:
        self._stop = True
        for s in (self.tcp, self.udp, self.unix):
            s.close()


def make_session(**services: Any) -> Session:
    svc = {"l2_time_limit_s": 2, "l3_time_limit_s": 3, "l3_max_file_mb": 64, "max_code_output_chars": 2000}
    svc.update(services)
    return Session(
        context=Context.from_value("the context\n"),
        limits=Limits(),
        levels=("l1", "l2", "l3"),
        run_id="sec",
        sub_query=lambda p: "sub",
        services=svc,
    )


def run(ex: Any, code: str) -> ActionOutput:
    return ex.run(Action(kind="code", level=ex.level, op="code", args={"code": code}, source=code))


def outcome(out: ActionOutput) -> str:
    """A one-line description of what happened, for the table."""
    text = out.text
    if "limit and was stopped" in text:
        return "stopped by the time limit; worker replaced"
    if "worker died" in text or "sandbox worker died" in text or "ran out of memory and was terminated" in text:
        reason = text.split(":", 1)[-1].split(";")[0].strip() if "worker died" in text else "terminated"
        return f"worker died ({reason}); replaced"
    if out.error:
        last = [ln for ln in text.strip().split("\n") if ln.strip()][-1]
        return "blocked: " + last[:110].replace("|", "\\|")
    first = text.strip().split("\n")[0][:80].replace("|", "\\|")
    return f"ran, contained: `{first}`"


class Harness:
    def __init__(self, level: str, listeners: Listeners):
        self.level, self.listeners = level, listeners
        factory = executor_factory(level)
        assert factory is not None
        self.factory = factory
        self.other = factory(make_session())
        assert run(self.other, "mine = 'other run'").error is False
        other_dir = getattr(self.other, "workdir", "/tmp")
        self.fmt = {
            "HOST_PID": os.getpid(),
            "PORT": listeners.tcp.getsockname()[1],
            "UDP_PORT": listeners.udp.getsockname()[1],
            "UNIX": listeners.unix_name,
            "OTHER": str(other_dir),
        }
        self.fmt.update({f"M{i}": m for i, m in enumerate(MARKERS)})

    def check(self, name: str, code: str) -> str:
        """Run ``code`` in a fresh executor (as a new run would) and check the invariants."""
        ex = self.factory(make_session())
        try:
            return self._check(ex, name, code)
        finally:
            ex.close()

    def _check(self, ex: Any, name: str, code: str) -> str:
        out = run(ex, code.format(**self.fmt))
        assert SECRET not in out.text, name
        assert PASSWD not in out.text, name
        assert GREETING not in out.text, name
        assert "mine" not in out.text or self.level == "l2", name
        for m in MARKERS:
            assert not os.path.exists(m), f"{name}: {m} was written"
        assert self.listeners.hits == [], f"{name}: the host listeners saw {self.listeners.hits}"
        assert run(self.other, "print(mine)").text.strip() == "other run", f"{name}: the other run was affected"
        assert run(ex, "print('alive')").text.strip() == "alive", f"{name}: the executor did not recover"
        assert len(out.text) < 2000 + 600, name
        return outcome(out)

    def close(self) -> None:
        self.other.close()


@pytest.fixture(scope="module")
def listeners() -> Iterator[Listeners]:
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SECRET
    ls = Listeners()
    yield ls
    ls.close()
    if old is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = old
    for m in MARKERS:
        if os.path.exists(m):
            os.remove(m)


@pytest.fixture(scope="module", params=["l2", "l3"])
def harness(request: pytest.FixtureRequest, listeners: Listeners) -> Iterator[Harness]:
    h = Harness(request.param, listeners)
    yield h
    h.close()


def test_enough_snippets() -> None:
    assert len(SNIPPETS) >= 30


@pytest.mark.parametrize("name,code", SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_snippet_contained(harness: Harness, name: str, code: str) -> None:
    harness.check(name, code)


def test_l3_workdir_cleaned_up(listeners: Listeners) -> None:
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    run(ex, "import os\nos.makedirs('a/b')\nopen('a/b/c', 'w').write('x')")
    base = ex.base
    assert (ex.workdir / "a" / "b" / "c").exists()
    ex.close()
    assert not base.exists()


def _table() -> str:
    ls = Listeners()
    os.environ["OPENAI_API_KEY"] = SECRET
    rows = {}
    try:
        for level in ("l2", "l3"):
            h = Harness(level, ls)
            try:
                for name, code in SNIPPETS:
                    rows.setdefault(name, {})[level] = h.check(name, code)
            finally:
                h.close()
    finally:
        ls.close()
    lines = ["| # | snippet | L2 (pydantic-monty) | L3 (native worker) |", "|---|---|---|---|"]
    for i, (name, _code) in enumerate(SNIPPETS, 1):
        lines.append(f"| {i} | {name} | {rows[name]['l2']} | {rows[name]['l3']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(_table())
