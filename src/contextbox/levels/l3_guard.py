"""Host-side guards of the L3 workers: private uids, one process group per worker, limits
that hold for a worker with all its children, and cleanup after crashes.

* :func:`lease_uid` hands out a uid no other live worker holds — on this host, across
  processes: each uid has a lock file in the runtime directory, held (``flock``) for as long
  as a worker runs under it; a crashed host releases its locks with its death. A uid that
  is in the user database or still runs processes is skipped.
* :class:`WorkerGroup` is the set of processes of one worker: a cgroup v2 of its own where
  the OS lets us create one (``cgroup.kill`` ends all of it at once; ``memory.max``,
  ``pids.max`` and ``cpu.max`` where those controllers are delegated), else the processes
  of its private uid (a root host), else its process tree (the worker is a child
  subreaper, so orphans stay in its tree).
* :class:`MemoryWatch` accounts memory per worker where the cgroup cannot: while a block
  runs it sums the proportional set size (PSS, shared pages split between sharers) of the
  worker's processes every 50 ms and kills them all past the limit.
* :func:`sweep_stale` removes the temporary directories and cgroups of hosts that died.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pwd
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("contextbox")

UID_BASE = 1_000_000
UID_SPAN = 1_000_000
DIR_PREFIX = "contextbox-l3-"
_NAME = re.compile(r"^contextbox-l3-(\d+)-")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ---------------------------------------------------------------------- runtime directory
def runtime_dir() -> Path:
    """A directory for this user only that every contextbox process of the user agrees on:
    ``$CONTEXTBOX_RUNTIME_DIR``, else ``/run/contextbox`` (root), else ``$XDG_RUNTIME_DIR/contextbox``,
    else ``<tmp>/contextbox-run-<euid>``. Refuses one owned by someone else or open to others."""
    euid = os.geteuid()
    env = os.environ.get("CONTEXTBOX_RUNTIME_DIR")
    if env:
        cands = [Path(env)]
    else:
        cands = []
        if euid == 0:
            cands.append(Path("/run/contextbox"))
        if os.environ.get("XDG_RUNTIME_DIR"):
            cands.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "contextbox")
        cands.append(Path(tempfile.gettempdir()) / f"contextbox-run-{euid}")
    last: OSError | None = None
    for d in cands:
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(d)
            if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != euid or st.st_mode & 0o077:
                raise OSError(errno.EPERM, f"{d} is not a private directory of uid {euid}")
            return d
        except OSError as e:
            last = e
    raise OSError(f"no usable runtime directory for L3 worker uids: {last}")


# ---------------------------------------------------------------------- processes
def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1], starttime [19])."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _live(pid: int) -> bool:
    """The process exists and is not a zombie."""
    st = _stat_fields(pid)
    return st is not None and st[0] not in ("Z", "X")


def _pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def pids_of_uid(uid: int) -> list[int]:
    """Live processes whose real uid is ``uid``."""
    out = []
    for pid in _pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid and _live(pid):
                out.append(pid)
        except OSError:
            continue
    return out


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        st = _stat_fields(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        try:
            children.setdefault(int(st[1]), []).append(pid)
        except ValueError:
            continue
    out, todo = [], [root] if _live(root) else []
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def pss_bytes(pid: int) -> int:
    """The proportional set size of ``pid`` (its private pages plus its share of shared ones)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _live(pid)


# ---------------------------------------------------------------------- uids
class UidLease:
    """A uid held for one executor's workers; :meth:`release` gives it back."""

    def __init__(self, uid: int, fd: int):
        self.uid, self._fd = uid, fd

    def release(self) -> None:
        with _uid_lock:
            if self._fd >= 0:
                _in_use.discard(self.uid)
                os.close(self._fd)  # drops the flock
                self._fd = -1


_uid_lock = threading.Lock()
_in_use: set[int] = set()


def lease_uid(directory: Path | None = None, base: int = UID_BASE, span: int = UID_SPAN) -> UidLease:
    """A uid in ``[base, base + span)`` that no other live worker on this host holds."""
    d = (directory or runtime_dir()) / "uids"
    d.mkdir(mode=0o700, exist_ok=True)
    with _uid_lock:
        for uid in range(base, base + span):
            if uid in _in_use:
                continue
            try:
                pwd.getpwuid(uid)
                continue  # a real account
            except KeyError:
                pass
            fd = os.open(d / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if pids_of_uid(uid):  # left over by a host that died: not ours to reuse or kill blindly
                log.warning("L3 uid %d is free but still runs processes; skipped", uid)
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _in_use.add(uid)
            return UidLease(uid, fd)
    raise OSError(f"no free L3 worker uid in [{base}, {base + span})")


# ---------------------------------------------------------------------- cgroups
def _cgroup2_mount() -> str | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def cgroup_parent() -> Path | None:
    """This process's cgroup v2 directory, when there is one we may create children in."""
    mount, own = _cgroup2_mount(), _own_cgroup()
    if mount is None or own is None:
        return None
    p = Path(mount) / own.lstrip("/")
    return p if os.access(p, os.W_OK) and (p / "cgroup.procs").exists() else None


def _write(path: Path, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class WorkerGroup:
    """The processes of one executor's workers, and the limits that hold for all of them."""

    def __init__(self, name: str, uid: int | None, *, memory_bytes: int, pids: int, cpus: float | None,
                 cgroup_root: Path | None = None):
        self.uid = uid
        self.cgroup: Path | None = None
        self.controllers: list[str] = []  # the limits the cgroup enforces
        self.note = ""
        self.kill_reason: str | None = None
        self._pid: int | None = None
        parent = cgroup_root if cgroup_root is not None else cgroup_parent()
        if parent is None:
            self.note = "no writable cgroup v2"
            return
        avail = set(_read(parent / "cgroup.controllers").split())
        enabled = set(_read(parent / "cgroup.subtree_control").split())
        for c in sorted({"memory", "pids", "cpu"} & avail - enabled):
            _write(parent / "cgroup.subtree_control", f"+{c}")  # refused when the parent holds processes
        path = parent / name
        try:
            path.mkdir()
        except OSError as e:
            self.note = f"cannot create a cgroup in {parent}: {e.strerror}"
            return
        self.cgroup = path
        if _write(path / "memory.max", str(memory_bytes)):
            _write(path / "memory.swap.max", "0")
            _write(path / "memory.oom.group", "1")  # the OOM killer ends the whole worker, not one child
            self.controllers.append("memory")
        if _write(path / "pids.max", str(pids)):
            self.controllers.append("pids")
        if cpus and _write(path / "cpu.max", f"{max(1000, int(cpus * 100_000))} 100000"):
            self.controllers.append("cpu")

    # ------------------------------------------------------------------ membership
    def describe(self) -> str:
        if self.cgroup is None:
            how = f"uid {self.uid}" if self.uid is not None else "process tree"
            return f"{how} ({self.note})"
        return f"cgroup {self.cgroup}" + (f" ({', '.join(self.controllers)})" if self.controllers else
                                          " (membership only: no memory/pids/cpu controllers delegated)")

    def add(self, pid: int) -> None:
        """Put the new worker ``pid`` in the group (before it runs any model code)."""
        self._pid = pid
        if self.cgroup is not None and not _write(self.cgroup / "cgroup.procs", str(pid)):
            log.warning("L3 worker %d could not join its cgroup %s", pid, self.cgroup)

    def members(self) -> list[int]:
        if self.cgroup is not None:
            out = []
            for line in _read(self.cgroup / "cgroup.procs").split():
                if line.isdigit():
                    out.append(int(line))
            return out
        if self.uid is not None:
            return pids_of_uid(self.uid)
        return process_tree(self._pid) if self._pid else []

    def set_memory_max(self, value: int) -> None:
        if self.cgroup is not None and "memory" in self.controllers:
            _write(self.cgroup / "memory.max", str(value))

    def memory_current(self) -> int | None:
        if self.cgroup is not None and "memory" in self.controllers:
            v = _read(self.cgroup / "memory.current").strip()
            return int(v) if v.isdigit() else None
        return None

    def oom_kills(self) -> int:
        if self.cgroup is None or "memory" not in self.controllers:
            return 0
        m = re.search(r"^oom_kill (\d+)", _read(self.cgroup / "memory.events"), re.M)
        return int(m.group(1)) if m else 0

    # ------------------------------------------------------------------ killing
    def kill_all(self) -> None:
        """SIGKILL every process of the group, until none is left."""
        if self.cgroup is not None and _write(self.cgroup / "cgroup.kill", "1"):
            for _ in range(200):
                if not self.members():
                    return
                time.sleep(0.005)
        self._kill_loop(keep=None)

    def kill_strays(self, keep: int) -> int:
        """SIGKILL every process of the group but the worker ``keep``; returns how many."""
        return self._kill_loop(keep=keep)

    def _kill_loop(self, keep: int | None) -> int:
        """Stop every member first (a stopped process cannot fork, and a process tree keeps its
        shape), then kill them all; repeat until none is left."""
        me, done = os.getpid(), set()
        for _ in range(20):
            stopped: set[int] = set()
            for _ in range(50):
                found = [p for p in self.members() if p not in (keep, me) and p not in stopped]
                if not found:
                    break
                for pid in found:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
            if not stopped:
                break
            for pid in stopped:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            done |= stopped
            time.sleep(0.005)
        return len(done)

    def close(self) -> None:
        """Kill what is left and remove the cgroup."""
        self.kill_all()
        if self.cgroup is not None:
            for _ in range(100):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.01)
            self.cgroup = None


# ---------------------------------------------------------------------- memory per worker
class MemoryWatch:
    """While a block runs: the summed PSS of the group's processes stays under ``limit`` bytes,
    or all of them are killed (where no cgroup memory controller does it)."""

    def __init__(self, group: WorkerGroup, limit: int, interval: float = 0.05):
        self.group, self.limit, self.interval = group, limit, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="l3-memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            pids = self.group.members()
            if len(pids) < 2:  # the worker alone is bounded by its RLIMIT_AS
                continue
            total = sum(pss_bytes(p) for p in pids)
            self.peak = max(self.peak, total)
            if total > self.limit:
                self.group.kill_reason = (f"its processes used {total / 2**20:,.0f} MiB together, over the "
                                          f"worker's memory limit of {self.limit / 2**20:,.0f} MiB")
                self.group.kill_all()
                return


# ---------------------------------------------------------------------- stale leftovers
def _started_after(pid: int, t: float) -> bool:
    """Whether process ``pid`` started after time ``t`` (then it is not the one that made a thing at ``t``)."""
    st = _stat_fields(pid)
    try:
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        started = btime + int(st[19]) / os.sysconf("SC_CLK_TCK") if st else 0
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    return started > t + 1


def _owner_gone(name: str, ctime: float) -> bool:
    m = _NAME.match(name)
    if not m:
        return False
    pid = int(m.group(1))
    return pid != os.getpid() and (not _pid_alive(pid) or _started_after(pid, ctime))


_swept = False
_sweep_lock = threading.Lock()


def sweep_stale(tmp: str | None = None, cgroup_root: Path | None = None, force: bool = False) -> list[str]:
    """Remove L3 directories and cgroups whose host process is gone (once per process unless ``force``)."""
    global _swept
    with _sweep_lock:
        if _swept and not force:
            return []
        _swept = True
    removed: list[str] = []
    base = Path(tmp or tempfile.gettempdir())
    euid = os.geteuid()
    try:
        entries = list(os.scandir(base))
    except OSError:
        entries = []
    for e in entries:
        if not e.name.startswith(DIR_PREFIX):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        ours = st.st_uid == euid or (euid == 0 and UID_BASE <= st.st_uid < UID_BASE + UID_SPAN)
        if e.is_dir(follow_symlinks=False) and ours and _owner_gone(e.name, st.st_ctime):
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.path)
    parent = cgroup_root if cgroup_root is not None else cgroup_parent()
    if parent is not None:
        try:
            groups = [g for g in os.scandir(parent) if g.name.startswith(DIR_PREFIX) and g.is_dir()]
        except OSError:
            groups = []
        for g in groups:
            if _owner_gone(g.name, g.stat().st_ctime):
                _write(Path(g.path) / "cgroup.kill", "1")
                for _ in range(100):
                    try:
                        os.rmdir(g.path)
                        removed.append(g.path)
                        break
                    except OSError:
                        time.sleep(0.01)
    if removed:
        log.info("removed %d stale L3 leftover(s): %s", len(removed), ", ".join(removed))
    return removed
