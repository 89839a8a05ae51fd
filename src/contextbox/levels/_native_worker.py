"""The L3 worker: a CPython process that runs one run's code cells.

Started by :mod:`contextbox.levels.native` as ``python -I _native_worker.py RFD WFD CTXFD``. It reads
an init message, memory-maps the context file (``CTXFD``) and decodes it once, then — still
before any model code runs — cuts itself off: a new network namespace, a Landlock
filesystem/network/signal sandbox, an unprivileged uid of its own, resource limits and a
seccomp filter (no ``socket(AF_UNIX)``: Landlock does not cover connecting to a unix socket
by its path; no io_uring, which could open sockets behind seccomp's back). It is a child
subreaper, so what its children orphan stays its own.
Then it serves ``run`` requests until the host closes the pipe.

Messages are length-prefixed JSON frames (4-byte big-endian length) on two pipes. The
worker never trusts the host less than itself and the host never unpickles anything the
worker sends. This module imports only the standard library (and ``contextbox.ops``
through a stub package, so that importing it does not import the engine).
"""

from __future__ import annotations

import ctypes
import json
import linecache
import mmap
import os
import resource
import signal
import struct
import sys
import time
import traceback
import types
from typing import Any

_T0 = time.perf_counter()
_HDR = struct.Struct(">I")
_MAX_FRAME = 64 << 20  # the host's limit on one message (native._MAX_FRAME)
CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWNET = 0x04000000, 0x08000000, 0x10000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER = 1, 38, 24, 22, 36
SECCOMP_MODE_FILTER, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 2, 0x7FFF0000, 0x00050000
#: machine -> (AUDIT_ARCH, syscall numbers to refuse, syscall number of socket(), x32 bit or 0)
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, (425, 426, 427), 41, 0x40000000),
    "aarch64": (0xC00000B7, (425, 426, 427), 198, 0),
}
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 2, 4, 4096, 8192, 16384, 1 << 18
_SYS_LL_CREATE, _SYS_LL_ADD, _SYS_LL_RESTRICT = 444, 445, 446
_LL_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # execute, write, read, truncate, ioctl
_LL_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_HELPERS = (
    "context Document find regex count lines chunk slice_ split search records extract count_by top unique "
    "filter_ stats sort_ join pairs llm_query llm_query_batched rlm_query rlm_query_batched llm_map FINAL FINAL_VAR "
    "SHOW_VARS"
).split()
#: the table helpers: name -> (table_ops module, source, *args) -> result (lists of dict rows)
_TABLE_FNS: dict[str, Any] = {
    "records": lambda T, src, by="line", regex=False, *, text=None: T.records(src(text), by, regex).to_rows(),
    "extract": lambda T, src, pattern=None, flags="", *, text=None, table=None: T.extract(
        T.as_table(table, "extract") if table is not None else src(text), pattern, flags).to_rows(),
    "count_by": lambda T, src, table, field: T.count_by(table, field).to_rows(),
    "top": lambda T, src, table, field, k=10: T.top(table, field, k).to_rows(),
    "unique": lambda T, src, table, field: T.unique(table, field).column(field),
    "filter_": lambda T, src, table, where: T.filter_rows(table, where).to_rows(),
    "stats": lambda T, src, table, field, method="nearest": T.stats(table, field, method),
    "sort_": lambda T, src, table, field, desc=False: T.sort_rows(table, field, desc).to_rows(),
    "join": lambda T, src, a, b, key=None, pairs=False: T.join(a, b, key, pairs).to_rows(),
    "pairs": lambda T, src, table, field, at_least=1: [list(r) for r in zip(*__import__(
        T.__package__ + ".table_pairs", fromlist=["pairs"]).pairs(table, field, at_least).cols.values(), strict=True)],
}


# ---------------------------------------------------------------------- framing
class Channel:
    """Framed JSON over two pipe fds."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd = rfd, wfd

    def send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg, ensure_ascii=False, default=repr).encode("utf-8", "surrogatepass")
        if len(data) > _MAX_FRAME:  # the host would refuse it and replace the worker: refuse it here
            raise ValueError(f"{msg.get('fn') or msg.get('op')}: {len(data):,} bytes are too many to send to the "
                             f"host (limit {_MAX_FRAME:,}); pass a smaller piece")
        view = memoryview(_HDR.pack(len(data)) + data)
        while view:
            view = view[os.write(self.wfd, view) :]

    def _read(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            chunk = os.read(self.rfd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("host closed the pipe")
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def recv(self) -> dict[str, Any]:
        (n,) = _HDR.unpack(self._read(4))
        return json.loads(self._read(n).decode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------- context
def _ascii_str_from_mmap(mm: mmap.mmap, size: int) -> str | None:
    """Build a compact ASCII str straight from the mapping, dropping mapped pages as it goes.

    Peak memory is the string plus one chunk. Returns None when the data is not ASCII.
    """
    if sys.implementation.name != "cpython" or sys.getsizeof("") != 49:
        return None
    new = ctypes.pythonapi.PyUnicode_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_ssize_t, ctypes.c_uint32]
    s = new(size, 127)
    base = id(s) + sys.getsizeof("") - 1
    step = 16 << 20
    for pos in range(0, size, step):
        chunk = mm[pos : pos + step]
        if not chunk.isascii():
            return None
        ctypes.memmove(base + pos, chunk, len(chunk))
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            try:
                mm.madvise(mmap.MADV_DONTNEED, pos, len(chunk))
            except (OSError, ValueError):
                pass
    return s


def load_context(fd: int) -> str:
    """Decode the context file behind ``fd`` (memory-mapped, read once)."""
    if fd < 0:
        return ""
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return ""
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
            text = _ascii_str_from_mmap(mm, size)
            if text is None:
                text = str(mm, "utf-8", "surrogatepass")
        return text
    finally:
        os.close(fd)


class Document:
    """One document of a multi-document context: ``.path`` and ``.text``."""

    __slots__ = ("path", "start", "end", "_whole", "_text")

    def __init__(self, path: str, whole: str, start: int, end: int):
        self.path, self._whole, self.start, self.end, self._text = path, whole, start, end, None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._whole[self.start : self.end]
        return self._text

    def __repr__(self) -> str:
        return f"Document(path={self.path!r}, chars={self.end - self.start})"


# ---------------------------------------------------------------------- isolation
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _unshare_net(libc: Any, root: bool) -> str:
    flags = CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if not root:
        flags |= CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        return "unshare failed: " + os.strerror(ctypes.get_errno())
    return "ok"


def _landlock_ruleset(libc: Any, read_paths: list[str], rw_paths: list[str]) -> tuple[int, str]:
    """Create a Landlock ruleset (fd, ABI) allowing reads of ``read_paths`` and everything in ``rw_paths``."""
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return -1, "landlock unavailable: " + os.strerror(ctypes.get_errno())
    fs = (1 << 13) - 1
    if abi >= 2:
        fs |= 1 << 13
    if abi >= 3:
        fs |= 1 << 14
    if abi >= 5:
        fs |= 1 << 15
    net = (1 << 0) | (1 << 1) if abi >= 4 else 0  # bind / connect TCP: nothing allowed
    scoped = (1 << 0) | (1 << 1) if abi >= 6 else 0  # abstract unix sockets, signals
    attr = struct.pack("<QQQ", fs, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr, 24)
    fd = libc.syscall(_SYS_LL_CREATE, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return -1, "landlock_create_ruleset failed: " + os.strerror(ctypes.get_errno())
    for rights, paths in ((_LL_READ & fs, read_paths), (fs, rw_paths)):
        for p in paths:
            try:
                pfd = os.open(p, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                r = rights if os.path.isdir(p) else rights & _LL_FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("<Qi", r, pfd), 12)
                libc.syscall(_SYS_LL_ADD, ctypes.c_int(fd), ctypes.c_int(1), rule, ctypes.c_uint32(0))
            finally:
                os.close(pfd)
    return fd, f"abi {abi}"


def _read_paths(workdir: str, extra: list[str]) -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p)
    paths.update(os.path.realpath(p) for p in list(paths))
    paths.update(
        [
            "/usr",
            "/lib",
            "/lib64",
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/dev/urandom",
            "/dev/zero",
            "/sys/devices/system/cpu",
            f"/proc/{os.getpid()}",
        ]
    )
    paths.update(extra)
    return sorted(p for p in paths if os.path.exists(p))


def _blocked_dirs(paths: list[str]) -> set[str]:
    """The first ancestor of each path that other users cannot traverse (e.g. ``/root``)."""
    out: set[str] = set()
    for p in paths:
        cur = "/"
        for part in os.path.realpath(p).split("/")[1:]:
            try:
                if not os.stat(cur).st_mode & 0o001:
                    out.add(cur)
                    break
            except OSError:
                break
            cur = os.path.join(cur, part)
    return out


def _expose(libc: Any, paths: list[str], staging_root: str) -> str:
    """Make ``paths`` reachable for an unprivileged uid in a private mount namespace.

    A directory others cannot traverse (``/root`` holding a pyenv Python) is covered by a
    small tmpfs (mode 755) in which only the needed children are bind-mounted back —
    which also hides everything else in it from the worker.
    """
    blocked = _blocked_dirs(paths)
    if not blocked:
        return "not needed"
    if libc.unshare(CLONE_NEWNS) != 0:
        return "unshare(CLONE_NEWNS) failed: " + os.strerror(ctypes.get_errno())
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return "making / private failed: " + os.strerror(ctypes.get_errno())
    for _ in range(4):
        if not blocked:
            break
        for d in sorted(blocked):
            children = set()
            for p in paths:
                rp = os.path.realpath(p)
                if rp.startswith(d.rstrip("/") + "/"):
                    children.add(rp[len(d.rstrip("/")) + 1 :].split("/")[0])
            staging = os.path.join(staging_root, f".expose-{len(d)}-{os.getpid()}")
            os.makedirs(staging, exist_ok=True)
            moved = []
            for c in sorted(children):
                src = os.path.join(d, c)
                if not os.path.exists(src):
                    continue
                tgt = os.path.join(staging, c)
                os.mkdir(tgt) if os.path.isdir(src) else open(tgt, "w").close()
                if libc.mount(src.encode(), tgt.encode(), None, MS_BIND | MS_REC, None) != 0:
                    return f"bind mount of {src} failed: " + os.strerror(ctypes.get_errno())
                moved.append(c)
            if libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755,size=1m") != 0:
                return f"tmpfs over {d} failed: " + os.strerror(ctypes.get_errno())
            for c in moved:
                src, tgt = os.path.join(staging, c), os.path.join(d, c)
                os.mkdir(tgt) if os.path.isdir(src) else open(tgt, "w").close()
                if libc.mount(src.encode(), tgt.encode(), None, MS_MOVE, None) != 0:
                    return f"moving {c} into {d} failed: " + os.strerror(ctypes.get_errno())
        blocked = _blocked_dirs(paths)
    return "ok" if not blocked else f"still unreachable: {sorted(blocked)}"


def seccomp_program(machine: str) -> bytes | None:
    """A classic BPF seccomp program: EPERM for socket(AF_UNIX, ...) and io_uring_*; EPERM
    for any syscall made through another ABI (i386 ``int 0x80``, x32); everything else allowed."""
    if machine not in _SECCOMP_ARCH:
        return None
    arch, denied, nr_socket, x32 = _SECCOMP_ARCH[machine]
    ld_w_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    prog: list[tuple[int, int, int, int]] = []
    # the jump targets are patched below: "A" = allow, "D" = deny
    code: list[tuple[int, Any, Any, int]] = [(ld_w_abs, 0, 0, 4), (jeq, 0, "D", arch), (ld_w_abs, 0, 0, 0)]
    if x32:
        code.append((jge, "D", 0, x32))
    code += [(jeq, "D", 0, nr) for nr in denied]
    code += [(jeq, 0, "A", nr_socket), (ld_w_abs, 0, 0, 16), (jeq, "D", "A", 1)]  # args[0] == AF_UNIX
    allow, deny = len(code), len(code) + 1
    for i, (op, jt, jf, k) in enumerate(code):
        def rel(t: Any, i: int = i) -> int:
            return (allow if t == "A" else deny) - i - 1 if isinstance(t, str) else t
        prog.append((op, rel(jt), rel(jf), k))
    prog += [(ret, 0, 0, SECCOMP_RET_ALLOW), (ret, 0, 0, SECCOMP_RET_ERRNO | 1)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def install_seccomp(libc: Any) -> str:
    """Install :func:`seccomp_program` for this process and its future children."""
    raw = seccomp_program(os.uname().machine)
    if raw is None:
        return f"not available on {os.uname().machine}"
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(raw) // 8, ctypes.addressof(buf))
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return "prctl(PR_SET_SECCOMP) failed: " + os.strerror(ctypes.get_errno())
    return "ok"


def _drop_capabilities(libc: Any) -> str:
    """Give up every capability (for a worker that has to keep uid 0)."""
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = struct.pack("<Ii", 0x20080522, 0)
    data = bytes(24)
    if libc.capset(ctypes.create_string_buffer(header, 8), ctypes.create_string_buffer(data, 24)) != 0:
        return "capset failed: " + os.strerror(ctypes.get_errno())
    return "dropped"


def isolate(init: dict[str, Any]) -> dict[str, Any]:
    """Cut the worker off from the network, the filesystem, other processes; set limits."""
    report: dict[str, Any] = {}
    libc = _libc()
    root = os.geteuid() == 0
    report["network"] = _unshare_net(libc, root) if init.get("isolate_network", True) else "not requested"
    workdir = init["workdir"]
    read_paths = _read_paths(workdir, init.get("read_paths", []))
    uid = init.get("uid") if root else None
    if uid is not None:
        report["mounts"] = _expose(
            libc,
            [p for p in read_paths if not p.startswith(("/proc", "/sys", "/dev"))] + [workdir],
            init.get("staging") or os.path.dirname(workdir),
        )
        if report["mounts"] not in ("ok", "not needed"):
            uid = None
    ll_fd, report["landlock"] = -1, "not requested"
    if init.get("landlock", True):
        try:
            ll_fd, report["landlock"] = _landlock_ruleset(libc, read_paths, [workdir, "/dev/null"])
        except Exception as e:  # noqa: BLE001 - reported to the host
            report["landlock"] = f"landlock setup failed: {e}"
    if uid is not None:
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))
        report["uid"] = uid
    else:
        report["uid"] = f"unchanged ({os.getuid()})"
        if root:
            report["capabilities"] = _drop_capabilities(libc)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if ll_fd >= 0:
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if libc.syscall(_SYS_LL_RESTRICT, ctypes.c_int(ll_fd), ctypes.c_uint32(0)) != 0:
            report["landlock"] = "landlock_restrict_self failed: " + os.strerror(ctypes.get_errno())
        os.close(ll_fd)
    report["limits"] = _set_limits(init)
    report["subreaper"] = "ok" if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 else "failed"
    report["seccomp"] = install_seccomp(libc) if init.get("seccomp", True) else "not requested"
    os.chdir(workdir)
    os.umask(0o077)
    return report


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _set_limits(init: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    wanted = {
        "RLIMIT_AS": _vm_size() + int(init.get("memory_bytes", 1 << 30)),
        "RLIMIT_CPU": int(init.get("cpu_s", 600)),
        "RLIMIT_NOFILE": int(init.get("nofile", 256)),
        "RLIMIT_NPROC": int(init.get("nproc", 64)),
        "RLIMIT_FSIZE": int(init.get("fsize_bytes", 1 << 30)),
        "RLIMIT_CORE": 0,
    }
    for name, value in wanted.items():
        res = getattr(resource, name, None)
        if res is None:
            continue
        try:
            _soft, hard = resource.getrlimit(res)
            v = value if hard == resource.RLIM_INFINITY else min(value, hard)
            # SIGXCPU at the soft CPU limit, SIGKILL 5 s later; other limits: soft == hard
            new_hard = v + 5 if name == "RLIMIT_CPU" and (hard == resource.RLIM_INFINITY or v + 5 <= hard) else v
            resource.setrlimit(res, (v, new_hard))
            out[name] = v
        except (ValueError, OSError):
            pass
    return out


# ---------------------------------------------------------------------- cells
class CappedWriter:
    """A text stream keeping the first ``cap`` characters written and counting the rest."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, cap: int):
        self.cap, self.parts, self.kept, self.cut = cap, [], 0, 0

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self.cap - self.kept
        if room <= 0:
            self.cut += len(s)
        elif len(s) > room:
            self.parts.append(s[:room])
            self.kept, self.cut = self.cap, self.cut + len(s) - room
        else:
            self.parts.append(s)
            self.kept += len(s)
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise OSError("output is captured; there is no file descriptor")

    def getvalue(self) -> str:
        return "".join(self.parts)


class HostError(Exception):
    """An error the host reported for a host call (llm_query, ...)."""


class Worker:
    def __init__(self, chan: Channel, init: dict[str, Any], text: str):
        self.chan, self.init, self.text = chan, init, text
        self.cap = int(init.get("cap", 20000))
        self.max_answer = int(init.get("max_answer_chars", 1_000_000))
        self.final: str | None = None
        self.cells = 0
        self.ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self._ops = _load_ops(init.get("package_dir"))
        self._tops = _load_ops(init.get("package_dir"), "table_ops") if self._ops is not None else None
        self._ctx: Any = None
        docs = init.get("documents")
        self.ns["context"] = [Document(p, text, s, e) for p, s, e in docs] if docs else text
        if docs:
            self.ns["Document"] = Document
        self.ns.update(self._helpers())

    # --------------------------------------------------------------- helpers
    def _call_host(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        if self.chan.wfd < 0:
            raise RuntimeError(f"{fn} is not available in a forked child process")
        self.chan.send({"op": "call", "fn": fn, "args": list(args), "kwargs": kwargs})
        msg = self.chan.recv()
        if msg.get("op") == "return":
            return msg.get("value")
        raise HostError(str(msg.get("message", "host call failed")))

    def _op(self, name: str, text: Any, *args: Any, **kwargs: Any) -> Any:
        if self._ops is None:
            return self._call_host(name, *args, **kwargs, **({"text": text} if text is not None else {}))
        if text is None:
            text = self.text
        elif not isinstance(text, str):
            raise TypeError(f"text= must be a str, not {type(text).__name__}")
        return getattr(self._ops, name)(text, *args, **kwargs)

    def _source(self, text: Any) -> Any:
        """What records/extract read: ``text=`` (a str) or the context (as a ``Context``)."""
        if text is not None:
            if not isinstance(text, str):
                raise TypeError(f"text= must be a str, not {type(text).__name__}")
            return text
        if self._ctx is None:
            from contextbox.context import Context  # type: ignore[import-not-found]
            from contextbox.context import Document as Doc

            docs = self.init.get("documents")
            spans = [Doc(p, a, b) for p, a, b in docs] if docs else [
                Doc(str(self.init.get("doc_path") or "<text>"), 0, len(self.text))]
            self._ctx = Context(self.text, spans, "documents" if docs else "text")
        return self._ctx

    def _table_helpers(self) -> dict[str, Any]:
        w = self

        def make(name: str, fn: Any) -> Any:
            def helper(*args: Any, **kwargs: Any) -> Any:
                if w._tops is None:  # no local copy of the package: the host runs it
                    return w._call_host(name, *args, **kwargs)
                return fn(w._tops, w._source, *args, **kwargs)

            helper.__name__ = helper.__qualname__ = name
            helper.__module__ = "contextbox"
            return helper

        return {name: make(name, fn) for name, fn in _TABLE_FNS.items()}

    def _helpers(self) -> dict[str, Any]:
        w = self

        def find(needle: str, case_sensitive: bool = False, max: int | None = 100, *, text: str | None = None) -> Any:
            return w._op("find", text, needle, case_sensitive=case_sensitive, max=max)

        def regex(pattern: str, flags: Any = "", max: int | None = 100, *, text: str | None = None) -> Any:
            if w._ops is None:
                return w._op("regex", text, pattern, flags=flags, max=max)
            return w._op("regex", text, pattern, flags=flags, max=max, timeout_s=w.init.get("regex_timeout_s"))

        def count(pattern: str | None = None, what: str | None = None, case_sensitive: bool = False, *,
                  text: str | None = None) -> Any:
            return w._op("count", text, pattern, what=what, case_sensitive=case_sensitive)

        def lines(start: int | None = 0, end: int | None = None, *, text: str | None = None) -> Any:
            return w._op("lines", text, start, end)

        def chunk(size: int, overlap: int = 0, *, text: str | None = None) -> Any:
            return w._op("chunk", text, size, overlap)

        def slice_(start: int | None = 0, end: int | None = None, *, text: str | None = None) -> Any:
            return w._op("slice_text", text, start, end)

        def split(delimiter: str, *, text: str | None = None) -> Any:
            return w._op("split", text, delimiter)

        def search(query: str, k: int = 10, unit: str = "line", text: str | None = None) -> Any:
            # ranked search runs in the host, where the context's index is built once and cached
            return w._call_host("search", query, k, unit, **({"text": text} if text is not None else {}))

        def llm_query(prompt: str) -> str:
            if not isinstance(prompt, str):
                raise TypeError(f"llm_query(prompt) takes a str, not {type(prompt).__name__}")
            return w._call_host("llm_query", prompt)

        def llm_query_batched(prompts: list[str]) -> list[str]:
            if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
                raise TypeError("llm_query_batched(prompts) takes a list of str")
            return w._call_host("llm_query_batched", list(prompts))

        def rlm_query(prompt: str, context: Any = None) -> str:
            if not isinstance(prompt, str):
                raise TypeError(f"rlm_query(prompt, context=None) takes a str prompt, not {type(prompt).__name__}")
            return w._call_host("rlm_query", prompt, context)

        def rlm_query_batched(prompts: list[str], context: Any = None) -> list[str]:
            if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
                raise TypeError("rlm_query_batched(prompts, context=None) takes a list of str")
            return w._call_host("rlm_query_batched", list(prompts), context)

        def llm_map(prompt: str, records: list[Any], choices: list[str] | None = None, schema: Any = None,
                    per_call: int | None = None, field: str | None = None) -> list[Any]:
            if isinstance(records, str) or not isinstance(records, (list, tuple)):
                raise TypeError("llm_map(prompt, records, ...) takes a list of records (str or dict rows)")
            return w._call_host("llm_map", prompt, list(records), choices, schema, per_call, field)

        def _answer(value: Any) -> str:
            text = value if isinstance(value, str) else str(value)
            if len(text) > w.max_answer:
                raise ValueError(f"the answer holds {len(text):,} characters, over the limit of {w.max_answer:,} "
                                 "([limits] max_answer_chars); answer with the result itself")
            return text

        def FINAL(answer: Any) -> None:  # noqa: N802
            w.final = _answer(answer)

        def FINAL_VAR(name: str) -> None:  # noqa: N802
            if not isinstance(name, str) or not name.isidentifier():
                raise TypeError(
                    f"FINAL_VAR takes the name of a variable as a str, e.g. FINAL_VAR('answer'), not {name!r}"
                )
            frame = sys._getframe(1)
            for scope in (frame.f_locals, frame.f_globals):
                if name in scope:
                    w.final = _answer(scope[name])
                    return
            raise NameError(f"FINAL_VAR: there is no variable named {name!r}; assign it first")

        def SHOW_VARS() -> None:  # noqa: N802
            items = sorted(
                (k, type(v).__name__)
                for k, v in w.ns.items()
                if not k.startswith("_") and k not in _HELPERS and not isinstance(v, types.ModuleType)
            )
            print("variables: " + (", ".join(f"{k}: {t}" for k, t in items) if items else "(none yet)"))

        for f in (find, regex, count, lines, chunk, slice_, split, search):
            f.__module__ = "contextbox"
        return {
            **self._table_helpers(),
            "find": find,
            "regex": regex,
            "count": count,
            "lines": lines,
            "chunk": chunk,
            "slice_": slice_,
            "split": split,
            "search": search,
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "llm_map": llm_map,
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "SHOW_VARS": SHOW_VARS,
        }

    # --------------------------------------------------------------- run
    def run_cell(self, code: str, number: Any = None) -> dict[str, Any]:
        """Run one block as ``<cell N>``: N is the host's count of the run's blocks (it goes on across
        worker restarts), or this worker's own count when the host gave none."""
        valid = isinstance(number, int) and not isinstance(number, bool) and number > 0
        self.cells = number if valid else self.cells + 1
        name = f"<cell {self.cells}>"
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        out = CappedWriter(self.cap)
        self.final = None
        error: str | None = None
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out  # type: ignore[assignment]
        try:
            compiled = compile(code, name, "exec")
            exec(compiled, self.ns)
        except BaseException as e:  # noqa: BLE001 - everything the cell raises is its own error
            error = short_traceback(e)
        finally:
            sys.stdout, sys.stderr = old
        return {"op": "done", "output": out.getvalue(), "cut": out.cut, "error": error, "final": self.final}

    def _after_fork_in_child(self) -> None:
        """A process the cell forked must not talk on (or steal from) the host's pipes."""
        for fd in (self.chan.rfd, self.chan.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.chan.rfd = self.chan.wfd = -1

    def serve(self) -> None:
        me = os.getpid()
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        while True:
            try:
                msg = self.chan.recv()
            except EOFError:
                return
            if msg.get("op") == "run":
                _reap()
                reply = self.run_cell(str(msg.get("code", "")), msg.get("cell"))
                if os.getpid() != me:  # a forked child finished the cell: leave quietly
                    os._exit(0)
                try:
                    self.chan.send(reply)
                except ValueError as e:  # an answer too large for one frame
                    self.chan.send({**reply, "final": None, "output": str(reply.get("output", ""))[: self.cap],
                                    "error": f"FINAL error: {e}"})
            elif msg.get("op") == "exit":
                return


def _reap() -> None:
    """Collect children that ended (the host kills a block's leftover processes after it):
    zombies would count against the process limit."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def short_traceback(e: BaseException) -> str:
    """The traceback of the model's own code only (frames from ``<cell N>``)."""
    te = traceback.TracebackException(type(e), e, e.__traceback__, limit=None, compact=True)
    seen: set[int] = set()
    stack = [te]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list([f for f in t.stack if f.filename.startswith("<cell")])
        stack += [x for x in (t.__cause__, t.__context__) if x is not None]
    text = "".join(te.format())
    if not any(line.startswith("  File") for line in text.splitlines()):
        text = "".join(te.format_exception_only())
    return text


def _load_ops(package_dir: str | None, name: str = "ops") -> Any:
    """``contextbox.<name>`` without running ``contextbox/__init__.py`` (which imports the engine)."""
    if not package_dir:
        return None
    try:
        import importlib.machinery
        import importlib.util

        if "contextbox" not in sys.modules:
            spec = importlib.machinery.ModuleSpec("contextbox", None, is_package=True)
            pkg = importlib.util.module_from_spec(spec)
            pkg.__path__ = [package_dir]
            sys.modules["contextbox"] = pkg
        import importlib

        return importlib.import_module(f"contextbox.{name}")
    except Exception:  # noqa: BLE001 - fall back to host calls
        return None


def main(argv: list[str]) -> int:
    rfd, wfd, ctxfd = (int(a) for a in argv[1:4])
    chan = Channel(rfd, wfd)
    init = chan.recv()
    text = load_context(ctxfd)
    worker = Worker(chan, init, text)
    t_iso = time.perf_counter()
    report = isolate(init)
    report["isolate_ms"] = round((time.perf_counter() - t_iso) * 1000, 1)
    report["startup_ms"] = round((time.perf_counter() - _T0) * 1000, 1)
    chan.send({"op": "ready", "pid": os.getpid(), "report": report})
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
