"""The host-side guards of L3 workers (issue #17): private uids, limits per worker with all
its processes, nothing of a run outliving it, private files and the sweep after a crash."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import cmd, run
from test_security import make_session
from test_security import run as run_cell

from contextbox.executors import executor_factory
from contextbox.levels import l3_guard
from contextbox.levels.l3_guard import WorkerGroup, lease_uid, pids_of_uid, sweep_stale

ROOT = os.geteuid() == 0
SRC = str(Path(__file__).resolve().parents[1] / "src")
needs_root = pytest.mark.skipif(not ROOT, reason="private worker uids exist only when the host runs as root")


def l3() -> Any:
    return executor_factory("l3")(make_session())  # type: ignore[misc]


# ---------------------------------------------------------------------- uids
def test_uid_leases_are_unique_while_held_and_reused_after_release(tmp_path: Path) -> None:
    leases = [lease_uid(tmp_path, base=3_000_000, span=1000) for _ in range(150)]  # the old counter wrapped at 100
    uids = [x.uid for x in leases]
    assert len(set(uids)) == 150 and uids == list(range(3_000_000, 3_000_150))
    leases[7].release()
    again = lease_uid(tmp_path, base=3_000_000, span=1000)
    assert again.uid == uids[7]
    for x in leases + [again]:
        x.release()
    held = [lease_uid(tmp_path, base=3_000_000, span=3) for _ in range(3)]
    try:
        with pytest.raises(OSError, match="no free L3 worker uid"):
            lease_uid(tmp_path, base=3_000_000, span=3)
    finally:
        for x in held:
            x.release()


LEASER = """
import sys
sys.path.insert(0, {src!r})
from pathlib import Path
from contextbox.levels.l3_guard import lease_uid
leases = [lease_uid(Path({d!r}), base=3_100_000, span=1000) for _ in range(40)]
print(" ".join(str(x.uid) for x in leases), flush=True)
sys.stdin.readline()
"""


def test_uid_leases_are_unique_across_processes(tmp_path: Path) -> None:
    code = LEASER.format(src=SRC, d=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        sets = [set(map(int, p.stdout.readline().split())) for p in procs]  # type: ignore[union-attr]
        assert all(len(s) == 40 for s in sets)
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        mine = lease_uid(tmp_path, base=3_100_000, span=1000)  # all 120 are held by live processes
        assert mine.uid == 3_100_120
        mine.release()
    finally:
        for p in procs:
            p.communicate("\n", timeout=20)
    # the processes are gone: their locks died with them
    again = lease_uid(tmp_path, base=3_100_000, span=1000)
    assert again.uid == 3_100_000
    again.release()


@needs_root
def test_a_uid_still_running_processes_or_of_an_account_is_skipped(tmp_path: Path) -> None:
    squatter = subprocess.Popen(["sleep", "30"], user=3_200_000, group=3_200_000)
    try:
        deadline = time.monotonic() + 5
        while not pids_of_uid(3_200_000) and time.monotonic() < deadline:
            time.sleep(0.01)
        lease = lease_uid(tmp_path, base=3_200_000, span=10)
        assert lease.uid == 3_200_001
        lease.release()
    finally:
        squatter.kill()
        squatter.wait()
    nobody = 65534
    lease = lease_uid(tmp_path, base=nobody, span=10)  # 65534 is "nobody" in the user database
    assert lease.uid > nobody
    lease.release()


@needs_root
def test_executors_get_distinct_uids_and_closing_one_spares_the_other() -> None:
    a, b = l3(), l3()
    try:
        assert a._lease.uid != b._lease.uid
        assert "daemon" in run_cell(b, "import os\nx = 5\nprint('daemon', os.getpid())").text
        a.close()
        assert run_cell(b, "print(x)").text.strip() == "5"  # b's worker survived a's cleanup
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------- limits per worker
def test_memory_limit_holds_for_the_worker_with_its_children() -> None:
    one = ("import os\npid = os.fork()\nif pid == 0:\n    b = b'\\x01' * (700 << 20)\n    os._exit(0)\n"
           "os.waitpid(pid, 0)\nkept = 1\nprint('one child done')")
    four = ("import os, time\npids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        b = b'\\x01' * (700 << 20)\n        time.sleep(20)\n        os._exit(0)\n    pids.append(pid)\n"
            "for p in pids:\n    os.waitpid(p, 0)\nprint('all four done')")
    # the 1 GiB of the default limit (make_session lowers it to 512 MiB for the snippets)
    ex = executor_factory("l3")(make_session(l3_time_limit_s=60, l3_memory_mb=1024))  # type: ignore[misc]
    try:
        first = run_cell(ex, one)  # one child of 700 MB: under the 1 GiB limit, alone or with the worker
        assert not first.error and "one child done" in first.text, first.text
        t0 = time.monotonic()
        out = run_cell(ex, four)
        assert out.error and "stopped by the memory limit" in out.text, out.text
        assert "worker's memory limit" in out.text and time.monotonic() - t0 < 30
        assert "NameError" in run_cell(ex, "print(kept)").text  # the whole worker was replaced
    finally:
        ex.close()


def test_no_process_of_a_run_survives_it() -> None:
    daemon = ("import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              "        os.write(w, str(os.getpid()).encode())\n        time.sleep(1000)\n    os._exit(0)\nos.wait()\n"
              "print('daemon', os.read(r, 20).decode())")
    result, _rlm = run([f"```native\n{daemon}\n```", cmd("final", answer="done")], levels="l1,l3")
    assert result.status == "answered"
    out = [e.data["output"] for e in result.events if e.type == "action_end" and e.data.get("level") == "l3"][0]
    pid = int(out.split("daemon ", 1)[1].split()[0])
    assert not l3_guard._live(pid), f"the daemon {pid} outlived the run"
    assert _my_workers() == []


def _my_workers() -> list[int]:
    """Live L3 worker processes started by this test process."""
    out = []
    for p in l3_guard._pids():
        f = l3_guard._stat_fields(p)
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if f and f[0] not in ("Z", "X") and int(f[1]) == os.getpid() and b"_native_worker.py" in cmdline:
            out.append(p)
    return out


# ---------------------------------------------------------------------- files and crashes
def test_host_files_are_private_and_the_workdir_is_the_workers() -> None:
    ex = l3()
    try:
        assert run_cell(ex, "open('f', 'w').write('x'); print('ok')").text.strip() == "ok"
        assert ex.base != ex.workdir and ex.workdir.parent == ex.base.parent
        assert stat.S_IMODE(ex.base.stat().st_mode) == 0o700
        ctx = ex.base / "context.txt"
        assert ctx.exists() and stat.S_IMODE(ctx.stat().st_mode) == 0o600
        assert stat.S_IMODE((ex.base / "worker.log").stat().st_mode) == 0o600
        assert stat.S_IMODE(ex.workdir.stat().st_mode) == 0o700
        if ROOT:
            assert ex.workdir.stat().st_uid == ex._lease.uid
            assert ex.base.stat().st_uid == 0
    finally:
        ex.close()
    assert not ex.base.exists() and not ex.workdir.exists()


CRASHER = """
import os, signal, sys
sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
from test_security import make_session, run
from contextbox.executors import executor_factory
ex = executor_factory("l3")(make_session())
run(ex, "import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    time.sleep(1000)")
print(ex.base, ex.workdir, ex.group.cgroup or "", ex.worker_pid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_leftovers_of_a_crashed_host_are_swept_at_the_next_start() -> None:
    tests = str(Path(__file__).resolve().parent)
    p = subprocess.run([sys.executable, "-c", CRASHER.format(src=SRC, tests=tests)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    base, workdir, cgroup, worker = p.stdout.split()[:3] + [int(p.stdout.split()[-1])]
    assert Path(base).is_dir() and Path(workdir).is_dir()
    deadline = time.monotonic() + 5
    while l3_guard._live(worker) and time.monotonic() < deadline:  # the worker dies with its host
        time.sleep(0.02)
    assert not l3_guard._live(worker)
    removed = sweep_stale(force=True)
    assert base in removed and workdir in removed
    assert not Path(base).exists() and not Path(workdir).exists()
    if cgroup and cgroup.startswith("/"):
        assert cgroup in removed and not Path(cgroup).exists()


def test_sweep_keeps_what_live_hosts_own(tmp_path: Path) -> None:
    mine = tmp_path / f"contextbox-l3-{os.getpid()}-abc"
    live_other = tmp_path / f"contextbox-l3-{os.getppid()}-def"
    dead = tmp_path / "contextbox-l3-999999999-ghi"
    unrelated = tmp_path / "contextbox-other-1-x"
    for d in (mine, live_other, dead, unrelated):
        d.mkdir()
        (d / "f").write_text("x")
    removed = sweep_stale(str(tmp_path), cgroup_root=tmp_path / "nocg", force=True)
    assert removed == [str(dead)]
    assert mine.exists() and live_other.exists() and unrelated.exists() and not dead.exists()


# ---------------------------------------------------------------------- cgroup with delegated controllers
def test_cgroup_limits_are_written_where_controllers_are_delegated(tmp_path: Path) -> None:
    """A stand-in cgroup v2 directory (the machine running the tests may delegate none)."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "cgroup.procs").write_text("")
    g = WorkerGroup("contextbox-l3-1-2", 1_000_123, memory_bytes=3 << 30, pids=32, cpus=1.5, cgroup_root=tmp_path)
    assert g.cgroup == tmp_path / "contextbox-l3-1-2"
    assert g.controllers == ["memory", "pids", "cpu"]
    files = {f.name: f.read_text() for f in g.cgroup.iterdir()}
    assert files["memory.max"] == str(3 << 30) and files["memory.swap.max"] == "0"
    assert files["memory.oom.group"] == "1" and files["pids.max"] == "32" and files["cpu.max"] == "150000 100000"
    assert (tmp_path / "cgroup.subtree_control").read_text() in ("+pids", "+memory", "+cpu")  # the last one written
    (g.cgroup / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    (g.cgroup / "memory.current").write_text("12345\n")
    assert g.oom_kills() == 2 and g.memory_current() == 12345
    g.set_memory_max(999)
    assert (g.cgroup / "memory.max").read_text() == "999"
    assert "memory, pids, cpu" in g.describe()


def test_group_without_cgroup_uses_the_process_tree(tmp_path: Path) -> None:
    g = WorkerGroup("x", None, memory_bytes=1, pids=1, cpus=None, cgroup_root=tmp_path / "missing")
    assert g.cgroup is None and "process tree" in g.describe()
    p = subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                                                 "    time.sleep(60)\ntime.sleep(60)"])
    try:
        g.add(p.pid)
        deadline = time.monotonic() + 5
        while len(g.members()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        members = g.members()
        assert len(members) == 2 and members[0] == p.pid
        assert g.kill_strays(p.pid) == 1 and g.members() == [p.pid] and p.poll() is None
        g.kill_all()
        assert p.wait(5) == -signal.SIGKILL
    finally:
        p.kill()
        p.wait()


def test_runtime_dir_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTEXTBOX_RUNTIME_DIR", str(tmp_path / "rt"))
    d = l3_guard.runtime_dir()
    assert d == tmp_path / "rt" and stat.S_IMODE(d.stat().st_mode) == 0o700
    os.chmod(d, 0o755)
    with pytest.raises(OSError, match="private"):
        l3_guard.runtime_dir()


def _can_unshare_user() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--user", "--map-user=1000", "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _can_unshare_user(), reason="unshare --user --map-user=1000 is not available here")
def test_non_root_install_in_a_user_namespace(tmp_path: Path) -> None:
    """As an ordinary user (uid 1000 in a user namespace: no private uid, no cgroup, no network namespace):
    a 0777 unix socket in /tmp is refused, a daemon (fork, setsid, fork) does not outlive the run, 4 children
    of 700 MB are stopped by the worker's limit (its process tree's memory), no
    process of the run is left, and warning events say what could not be applied."""
    import json
    import socket
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    path = str(tmp_path / "user.sock")
    tmp_path.chmod(0o777)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen()
    try:
        proc = subprocess.run(["unshare", "--user", "--map-user=1000", sys.executable,
                               str(root / "tests" / "nonroot_probe.py"), path],
                              cwd=root, env={**os.environ, "PYTHONPATH": str(root / "src")},
                              capture_output=True, text=True, timeout=120)
    finally:
        srv.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["uid"] == 1000 and got["status"] == "answered"
    assert got["daemon_alive"] is False and got["children"] == []
    assert "PermissionError" in got["socket"] and "b'" not in got["socket"]
    assert "stopped by the memory limit" in got["four"] and "all four done" not in got["four"]
    assert any("runs as the host's user" in w for w in got["warnings"])
