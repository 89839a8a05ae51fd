"""Hostile code at L2 (pydantic-monty) and L3 (native worker).

Every snippet runs at both levels. Whatever the snippet does, afterwards:

* the host process is alive and its environment secret never appears in any output;
* nothing was written outside the worker's temporary directory (marker files);
* the listening TCP, UDP and abstract-unix sockets of the test saw no traffic;
* another run's executor (with its own variable) still works, and so does this one;
* at L3, nothing of the run is left once its executor is closed: no process of its uid,
  no cgroup, no temporary directory;
* what stopped it is the expected one (:data:`EXPECTED`): the sandbox's policy, the memory
  limit, the time limit, the process or file limits, or nothing (it ran, contained).

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
from contextbox.levels.l3_guard import _live as _alive  # noqa: E402
from contextbox.levels.l3_guard import pids_of_uid  # noqa: E402
from contextbox.types import Limits  # noqa: E402

SECRET = "sk-test-SECRET-" + uuid.uuid4().hex
TAG = uuid.uuid4().hex[:8]
MARKERS = [f"/tmp/cbx-pwned-{TAG}", f"/var/tmp/cbx-pwned-{TAG}", f"/dev/shm/cbx-pwned-{TAG}", f"/root/cbx-pwned-{TAG}"]
GREETING = "HELLO-FROM-HOST"
PASSWD = "root:x:0:0"

#: (name, code). Placeholders: {M} a marker path, {HOST_PID}, {PORT}, {UDP_PORT}, {UNIX}, {UNIX_PATH}, {OTHER}.
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
    ("memory bomb (one string)", "x = 'x' * (2 * 2**30)\nprint(len(x))"),
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
    (
        "unix socket by path in /tmp (0777)",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('{UNIX_PATH}')\nprint(s.recv(100))",
    ),
    (
        "4 children of 300 MB each",
        "import os, time\npids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
        "        b = b'\\x01' * (300 << 20)\n        time.sleep(30)\n        os._exit(0)\n    pids.append(pid)\n"
        "for p in pids:\n    os.waitpid(p, 0)\nprint('all four done')",
    ),
    (
        "daemon (fork, setsid, fork) outlives the block",
        "import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode())\n        time.sleep(1000)\n    os._exit(0)\nos.wait()\n"
        "print('daemon', os.read(r, 20).decode())",
    ),
    (
        "4 children spinning",
        "import os\nfor i in range(4):\n    if os.fork() == 0:\n        while True:\n            pass\nos.wait()",
    ),
    ("kill -1 (every process it may signal)", "import os\nos.kill(-1, 9)"),
    (
        "io_uring (sockets behind seccomp's back)",
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
        "fd = libc.syscall(425, 8, ctypes.create_string_buffer(120))\n"
        "if fd < 0:\n    e = ctypes.get_errno()\n    raise OSError(e, os.strerror(e))\nprint('io_uring fd', fd)",
    ),
    # the host helpers (L1 operations the host runs for a cell): bounded by [limits] and the block's time
    ("host split of a 100 MB string", "x = split('a', text='a' * 100_000_000)\nprint(len(x))"),
    ("host find with max=10**7", "print(len(find('e', max=10**7)))"),
    ("host chunk with a huge overlap", "c = chunk(1000, overlap=999, text='x' * 5_000_000)\nprint(len(c))"),
    ("host regex backtracking", "print(regex('(a*)*b', text='a' * 40))"),
    ("FINAL of 200 MB", "FINAL('x' * 200_000_000)"),
    (
        "host call through the worker's pipe",
        "w = find.__closure__[0].cell_contents\nprint(len(w._call_host('split', 'a', text='a' * 3_000_000)))",
    ),
]

#: what stops each snippet, at L2 and at L3 (see :func:`kind`)
EXPECTED: dict[str, tuple[str, str]] = {
    "read /etc/passwd": ("policy", "policy"),
    "list /": ("policy", "policy"),
    "list /root": ("policy", "policy"),
    "write a file in /tmp": ("policy", "policy"),
    "write a file in /var/tmp and /dev/shm": ("policy", "policy"),
    "write into /root": ("policy", "policy"),
    "import socket, connect to a host port": ("policy", "policy"),
    "UDP to a host port": ("policy", "policy"),
    "abstract unix socket of the host": ("policy", "policy"),
    "DNS lookup": ("policy", "policy"),
    "import subprocess, cat /etc/passwd": ("policy", "contained"),
    "os.system writes a marker": ("policy", "contained"),
    "import ctypes, kill the parent": ("policy", "contained"),
    "os.kill the parent": ("policy", "policy"),
    "os.kill the host pid": ("policy", "policy"),
    "killpg the host's group": ("policy", "policy"),
    "fork loop": ("policy", "processes"),
    "fork and linger": ("policy", "contained"),
    "read /proc/self/environ": ("policy", "policy"),
    "read the host's environ": ("policy", "policy"),
    "read the host's cmdline": ("policy", "policy"),
    "os.environ secret": ("policy", "contained"),
    "os.getenv secret": ("policy", "contained"),
    "signal tampering + loop": ("policy", "time"),
    "__subclasses__ escape": ("policy", "error"),
    "memory bomb (one allocation)": ("policy", "memory"),
    "memory bomb (one string)": ("memory", "memory"),
    "memory bomb (growing)": ("memory", "memory"),
    "recursion bomb": ("recursion", "recursion"),
    "deep recursion with a raised limit": ("policy", "time"),
    "infinite loop": ("time", "time"),
    "sleep forever": ("contained", "time"),
    "1 GB print": ("memory", "memory"),
    "print flood": ("time", "time"),
    "exhaust file descriptors": ("policy", "files"),
    "huge file in the temp dir": ("policy", "files"),
    "symlink to /etc/passwd": ("policy", "policy"),
    "hard link to /etc/passwd": ("policy", "policy"),
    "read another run's directory": ("policy", "policy"),
    "setuid(0)": ("policy", "policy"),
    "ptrace the parent": ("policy", "contained"),
    "new user namespace, then read /etc/passwd": ("policy", "policy"),
    "os._exit": ("policy", "died"),
    "segfault": ("policy", "died"),
    "sys.exit": ("policy", "error"),
    "eval/exec/__import__ of os": ("policy", "policy"),
    "unix socket by path in /tmp (0777)": ("policy", "policy"),
    "4 children of 300 MB each": ("policy", "memory"),
    "daemon (fork, setsid, fork) outlives the block": ("policy", "contained"),
    "4 children spinning": ("policy", "time"),
    "kill -1 (every process it may signal)": ("policy", "contained"),
    "io_uring (sockets behind seccomp's back)": ("policy", "policy"),
    # L3 runs the helpers in the worker itself (under its limits); only a direct pipe call reaches the host
    "host split of a 100 MB string": ("limits", "memory"),
    "host find with max=10**7": ("limits", "contained"),
    "host chunk with a huge overlap": ("limits", "memory"),
    "host regex backtracking": ("time", "time"),
    "FINAL of 200 MB": ("limits", "limits"),
    "host call through the worker's pipe": ("policy", "limits"),
}

#: snippets that must be stopped by a limit other than time get more of it (the test machine may be busy)
GENEROUS_TIME = {"memory bomb (one allocation)", "memory bomb (one string)", "memory bomb (growing)", "1 GB print",
                 "4 children of 300 MB each", "recursion bomb", "fork loop", "exhaust file descriptors",
                 "huge file in the temp dir", "host split of a 100 MB string", "host chunk with a huge overlap",
                 "FINAL of 200 MB"}

_POLICY = ("PermissionError", "Operation not permitted", "ModuleNotFoundError", "has no attribute", "NameError",
           "is not supported in this environment", "Network is unreachable", "gaierror", "Permission denied")


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
        self.unix_path = f"/tmp/cbx-test-{TAG}.sock"
        self.unix_file = socket.socket(socket.AF_UNIX)
        self.unix_file.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)  # anyone may connect: only the sandbox can stop the worker
        self.unix_file.listen()
        self._stop = False
        for sock, kind in ((self.tcp, "tcp"), (self.unix, "unix"), (self.unix_file, "unix-path")):
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
        for s in (self.tcp, self.udp, self.unix, self.unix_file):
            s.close()
        if os.path.exists(self.unix_path):
            os.remove(self.unix_path)


def make_session(**services: Any) -> Session:
    # l3_memory_mb well under the 1 GiB snippets: a limit equal to the allocation makes the outcome a coin toss
    svc = {"l2_time_limit_s": 2, "l3_time_limit_s": 3, "l3_max_file_mb": 64, "l3_memory_mb": 512,
           "max_code_output_chars": 2000}
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


def kind(out: ActionOutput) -> str:
    """What stopped a snippet: ``policy`` (the sandbox refused), ``memory``, ``time``,
    ``processes`` / ``files`` (those limits), ``limits`` (the host's ``[limits]`` on its helpers and
    on answers), ``recursion``, ``died`` (the worker died and was
    replaced), ``error`` (the code failed on its own) or ``contained`` (it ran; nothing escaped)."""
    text = out.text
    if "stopped by the memory limit" in text:
        return "memory"
    if "limit and was stopped" in text:
        return "time"
    if "worker died" in text or "sandbox worker died" in text:
        return "died"
    if not out.error:
        return "contained"
    last = [ln for ln in text.strip().split("\n") if ln.strip()][-1]
    if "[limits] max_" in last:
        return "limits"
    if "ran longer than" in last and "was stopped" in last:
        return "time"
    if "MemoryError" in last or "memory limit exceeded" in last:
        return "memory"
    if "RecursionError" in last:
        return "recursion"
    if "Resource temporarily unavailable" in last:
        return "processes"
    if "Too many open files" in last or "File too large" in last:
        return "files"
    if any(p in last for p in _POLICY):
        return "policy"
    return "error"


def outcome(out: ActionOutput) -> str:
    """A one-line description of what happened, for the table."""
    text = out.text
    if "stopped by the memory limit" in text:
        return "stopped by the memory limit (all the worker's processes together); worker replaced"
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
            "UNIX_PATH": listeners.unix_path,
            "OTHER": str(other_dir),
        }
        self.fmt.update({f"M{i}": m for i, m in enumerate(MARKERS)})

    def check(self, name: str, code: str) -> tuple[str, str]:
        """Run ``code`` in a fresh executor (as a new run would), check the invariants; (kind, outcome)."""
        slow = {"l2_time_limit_s": 30, "l3_time_limit_s": 30} if name in GENEROUS_TIME else {}
        ex = self.factory(make_session(**slow))
        uid = getattr(getattr(ex, "_lease", None), "uid", None)
        group = getattr(ex, "group", None)
        cgroup = getattr(group, "cgroup", None)
        dirs = [getattr(ex, "base", None), getattr(ex, "workdir", None)]
        try:
            result = self._check(ex, name, code)
        finally:
            ex.close()
        if self.level == "l3":  # nothing of the run outlives it
            if uid is not None:
                assert pids_of_uid(uid) == [], f"{name}: processes of uid {uid} survived the run"
            assert cgroup is None or not cgroup.exists(), f"{name}: cgroup {cgroup} left behind"
            assert not any(d is not None and d.exists() for d in dirs), f"{name}: directories left behind"
        return result

    def _check(self, ex: Any, name: str, code: str) -> tuple[str, str]:
        out = run(ex, code.format(**self.fmt))
        if self.level == "l3" and name.startswith("daemon") and "daemon " in out.text:
            pid = int(out.text.split("daemon ", 1)[1].split()[0])
            assert not _alive(pid), f"{name}: the daemon {pid} outlived its block"
            group = getattr(ex, "group", None)
            if group is not None:
                assert group.members() == [ex.worker_pid()], f"{name}: processes left: {group.members()}"
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
        return kind(out), outcome(out)

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


def test_each_limit_is_what_stops_some_snippet() -> None:
    """The expectations name every limit at each level, so a limit that stops working shows as a changed kind."""
    l2 = {want for want, _ in EXPECTED.values()}
    l3 = {want for _, want in EXPECTED.values()}
    assert {"policy", "memory", "time", "recursion"} <= l2
    assert {"policy", "memory", "time", "processes", "files", "died"} <= l3


def test_every_snippet_has_an_expected_outcome() -> None:
    assert [n for n, _ in SNIPPETS] == list(EXPECTED)


@pytest.mark.parametrize("name,code", SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_snippet_contained(harness: Harness, name: str, code: str) -> None:
    got, what = harness.check(name, code)
    want = EXPECTED[name][0 if harness.level == "l2" else 1]
    assert got == want, f"{name} at {harness.level}: expected {want}, got {got}: {what}"


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
        cells = [f"**{k}**: {text}" for k, text in (rows[name]["l2"], rows[name]["l3"])]
        lines.append(f"| {i} | {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(_table())
