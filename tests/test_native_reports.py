"""L3 seen from the host, more details: the warnings the host derives from the worker's isolation report
(a stand-in worker states the report), and what a model's block can do to its own worker's surroundings
(remove its directory, leave processes behind a worker that dies).

Written against the survivors of a fresh mutation sample of native.py (docs/mutation.md, seventh session).
Each test asserts what the run sees at the executor (events, outputs, processes, files), not how.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_native_details import _fake_worker, make_session, run, warnings

from contextbox.executors import executor_factory

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


def test_close_is_clean_after_the_block_removed_its_own_directory() -> None:
    """Without Landlock the worker may remove its own working directory (it owns it); the run still closes
    without an error and leaves nothing behind."""
    ex = executor_factory("l3")(make_session(l3_landlock=False))  # type: ignore[misc]
    workdir, base = ex.workdir, ex.base
    try:
        out = run(ex, "import os, shutil\nd = os.getcwd()\nos.chdir('/')\nshutil.rmtree(d)\nprint(os.path.exists(d))")
        assert (out.text, out.error) == ("False", False)
        assert not workdir.exists()
    finally:
        ex.close()
    assert not base.exists() and ex.worker_pid() is None
