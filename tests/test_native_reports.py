"""L3 seen from the host, more details: the warnings the host derives from the worker's isolation report
(a stand-in worker states the report); what a model's block can do to its own worker's surroundings
(remove its directory, leave a process behind a worker that dies); what the worker is given (its
environment, the context copy from a host in the C locale, private files) and how text crosses the pipe.

Written against the survivors of a fresh mutation sample of native.py (docs/mutation.md, seventh session).
Each test asserts what the run sees at the executor (events, outputs, processes, files), not how.
"""

from __future__ import annotations

import json
import locale
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from test_native_details import PIPE, _fake_cgroup, _fake_worker, _gone, make_session, run, warnings

from contextbox.executors import executor_factory
from contextbox.levels import l3_guard
from contextbox.levels._cells import cut_note

#: a stand-in worker: reads the host's frames, says it is ready with REPORT, answers each block with "ok"
REPORTING = """
def frame(m):
    b = json.dumps(m).encode()
    return struct.pack('>I', len(b)) + b
def read(n):
    got = b''
    while len(got) < n:
        part = os.read(rfd, n - len(got))
        if not part:
            sys.exit(0)
        got += part
    return got
os.write(wfd, frame({'op': 'ready', 'pid': os.getpid(), 'report': REPORT}))
while True:
    msg = json.loads(read(struct.unpack('>I', read(4))[0]))
    if msg.get('op') == 'run':
        os.write(wfd, frame({'op': 'done', 'output': 'ok', 'cut': 0, 'error': None, 'final': None}))
"""

ALL_OK = {"network": "ok", "landlock": "abi 4", "uid": 3000001, "seccomp": "ok"}


def _isolation_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: dict[str, Any]) -> list[str]:
    """The warnings (other than the machine's cgroup one) of a run whose worker reports ``report``."""
    _fake_worker(tmp_path, monkeypatch, f"REPORT = {json.dumps(report)}\n" + REPORTING)
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "print('anything')")
        assert (out.text, out.error) == ("ok", False)
        assert run(ex, "print('again')").text == "ok"  # the report is read once, at the first block
        return [w for w in warnings(ex) if "cgroup" not in w]
    finally:
        ex.close()


def test_a_worker_reporting_every_protection_brings_no_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _isolation_warnings(tmp_path, monkeypatch, ALL_OK) == []


@pytest.mark.parametrize("change,warning", [
    ({"network": "unshare failed: EPERM"}, "network not isolated: unshare failed: EPERM"),
    ({"landlock": "not supported by the kernel"}, "filesystem not sandboxed: not supported by the kernel"),
    ({"landlock": "landlock setup failed: abi 4"}, "filesystem not sandboxed: landlock setup failed: abi 4"),
    ({"uid": "unchanged (1234)"}, "worker runs as the host's user: unchanged (1234)"),
    ({"seccomp": "failed"}, "unix sockets not blocked (seccomp: failed)"),
], ids=["network", "landlock", "landlock-failed", "uid", "seccomp"])
def test_each_protection_the_worker_lacks_is_one_warning_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], warning: str) -> None:
    got = _isolation_warnings(tmp_path, monkeypatch, {**ALL_OK, **change})
    assert got == [f"L3 worker: {warning}"]


def test_a_report_without_its_entries_counts_every_protection_as_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _isolation_warnings(tmp_path, monkeypatch, {}) == [
        "L3 worker: network not isolated: None", "L3 worker: filesystem not sandboxed: None",
        "L3 worker: worker runs as the host's user: None", "L3 worker: unix sockets not blocked (seccomp: None)"]


def test_a_worker_that_fails_to_start_with_a_short_stderr_is_reported_with_all_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_worker(tmp_path, monkeypatch, "sys.stderr.write('Boom: no module named x\\n')\nsys.exit(4)")
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "print(1)")
        assert out.error and out.text.startswith(
            "[the worker failed to start (the worker closed its pipe; Boom: no module named x); a fresh worker")
    finally:
        ex.close()


def test_close_is_clean_after_the_run_s_directories_were_removed() -> None:
    """Without Landlock the worker may remove its own working directory (it owns it), and a cleaner of /tmp
    the host's; the run still closes without an error and leaves nothing behind."""
    ex = executor_factory("l3")(make_session(l3_landlock=False))  # type: ignore[misc]
    workdir, base = ex.workdir, ex.base
    try:
        out = run(ex, "import os, shutil\nd = os.getcwd()\nos.chdir('/')\nshutil.rmtree(d)\nprint(os.path.exists(d))")
        assert (out.text, out.error) == ("False", False)
        assert not workdir.exists()
        shutil.rmtree(base)  # and a cleaner of /tmp removed the host's own directory of the run
    finally:
        ex.close()
    assert not base.exists() and ex.worker_pid() is None


def test_the_worker_sees_none_of_the_host_s_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "import os\nprint(sorted(os.environ))\n"
                      "print(os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd(), os.environ['LANG'])")
        assert out.text.split("\n") == ["['HOME', 'LANG', 'PATH', 'TMPDIR']", "True C.UTF-8"]
        assert Path(run(ex, "import os\nprint(os.getcwd())").text) == ex.workdir
    finally:
        ex.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a host running as root gives the worker a uid of its own; "
                    "without one and without a cgroup, a process whose worker died is out of reach")
def test_without_a_cgroup_a_dead_worker_s_processes_are_killed_by_its_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cgroup v2 to hold the worker's processes: the private uid does. A process the block detached
    (a new session, so no longer in the worker's process group) is killed when its worker dies and is
    replaced, though it is then no child of any process of the run."""
    monkeypatch.setattr(l3_guard, "cgroup_parent", lambda: None)
    told: list[str] = []
    ex = executor_factory("l3")(make_session(sub_query=lambda p: told.append(p) or "ok"))  # type: ignore[misc]
    try:
        assert ex.group.cgroup is None
        out = run(ex, "import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(600)\n"
                      "    os._exit(0)\nllm_query(str(pid))\nos._exit(1)")
        assert "it exited with status 1" in out.text and "fresh worker" in out.text
        assert len(told) == 1 and _gone(int(told[0])), "a process of the dead worker outlived it"
    finally:
        ex.close()
        for p in told:
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_text_crosses_the_pipe_as_utf8_not_escaped() -> None:
    """The host's replies are UTF-8 JSON: a non-ASCII slice costs its UTF-8 bytes on the pipe (3 a CJK
    character), not a 6-byte escape each; the model's code reads the raw frame of one reply."""
    ex = executor_factory("l3")(make_session("日本語のテキスト\n" * 3))  # type: ignore[misc]
    try:
        code = PIPE + ("w.chan.send({'op': 'call', 'fn': 'slice_text', 'args': [0, 8]})\n"
                       "n = struct.unpack('>I', w.chan._read(4))[0]\nraw = w.chan._read(n)\n"
                       "print(json.loads(raw)['value'], '日本語のテキスト'.encode() in raw, b'\\\\u' in raw)")
        out = run(ex, code)
        assert (out.text, out.error) == ("日本語のテキスト True False", False)
    finally:
        ex.close()


def test_the_run_s_own_files_are_private_to_the_host() -> None:
    """The host's directory of the run (the context copy, the worker's stderr) is 0700 with 0600 files; the
    worker's working directory is its own (0700)."""
    ex = executor_factory("l3")(make_session("private text\n"))  # type: ignore[misc]
    try:
        assert not run(ex, "print(1)").error
        modes = {p.name: p.stat().st_mode & 0o777 for p in (ex.base, ex.base / "context.txt", ex.base / "worker.log",
                                                          ex.workdir)}
        assert modes == {ex.base.name: 0o700, "context.txt": 0o600, "worker.log": 0o600, ex.workdir.name: 0o700}
    finally:
        ex.close()


def test_a_host_in_the_c_locale_hands_a_non_ascii_context_to_the_worker() -> None:
    """The context copy is written as UTF-8 whatever the host's locale: in the C locale (a service started
    without LANG) the default encoding is ASCII. (Under Python's UTF-8 mode the default is UTF-8 anyway.)"""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        ex = executor_factory("l3")(make_session("caf\u00e9 \u65e5\u672c\n"))  # type: ignore[misc]
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
    try:
        assert run(ex, "print(ascii(context), len(context))").text == "'caf\\xe9 \\u65e5\\u672c\\n' 8"
    finally:
        ex.close()


def test_the_memory_limit_defaults_to_1024_mib_over_what_the_worker_uses_when_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``l3_memory_mb``: a stand-in cgroup's memory.max is 4 x the context + 1024 MiB + 256 MiB while
    the worker starts, then what the worker uses once ready + 1024 MiB."""
    _fake_cgroup(tmp_path, monkeypatch)
    ex = executor_factory("l3")(make_session("abc\n" * 1000))  # type: ignore[misc]
    try:
        cg = ex.group.cgroup
        assert cg is not None and (cg / "memory.max").read_text() == str(4 * 4000 + (1024 << 20) + (256 << 20))
        (cg / "memory.current").write_text("7000000\n")
        assert not run(ex, "x = 1").error
        assert (cg / "memory.max").read_text() == str(7000000 + (1024 << 20))
    finally:
        ex.close()


def test_an_output_cap_above_the_worker_s_own_default_is_honoured() -> None:
    ex = executor_factory("l3")(make_session(max_code_output_chars=30000))  # type: ignore[misc]
    try:
        out = run(ex, "print('x' * 25000)")
        assert (out.text, out.error) == ("x" * 25000, False)
        assert run(ex, "print('y' * 30001, end='')").text == "y" * 30000 + "\n" + cut_note(1)
    finally:
        ex.close()


def test_the_worker_leaves_nothing_beside_its_directory() -> None:
    """What the worker needs to set up its view of the filesystem (a root host's Python under /root) is made in
    the run's own directory, so nothing of it is left in the shared temporary directory."""
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        assert run(ex, "print(1)").text == "1"
        pid = ex.worker_pid()
        assert list(ex.workdir.parent.glob(f".expose-*-{pid}")) == []
    finally:
        ex.close()
    assert list(ex.workdir.parent.glob(f".expose-*-{pid}")) == []


def test_helpers_over_the_worker_s_own_strings_run_in_the_worker_not_under_host_call_limits() -> None:
    """L3's helpers run in the worker when it can load them, bounded by the worker's own memory: a split into
    3,000,001 pieces (over the host's max_host_items, which a host call meets) works."""
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "print(len(split('a', text='a' * 3_000_000)))")
        assert (out.text, out.error) == ("3000001", False)
    finally:
        ex.close()


def test_a_context_holding_a_lone_surrogate_reaches_the_worker_unchanged() -> None:
    ex = executor_factory("l3")(make_session("a\udcffb\n"))  # type: ignore[misc]
    try:
        assert run(ex, "print(ascii(context), len(context))").text == "'a\\udcffb\\n' 4"
    finally:
        ex.close()


def test_the_worker_leads_a_session_of_its_own() -> None:
    """Started in a new session: signals to the host's process group or terminal (Ctrl-C) do not reach it,
    and the host can signal the worker's whole process group."""
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        assert run(ex, "import os\nprint(os.getsid(0) == os.getpid() == os.getpgid(0))").text == "True"
        assert os.getsid(ex.worker_pid()) != os.getsid(0)
    finally:
        ex.close()
