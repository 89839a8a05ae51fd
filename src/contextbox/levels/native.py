"""L3: code cells in a native CPython worker process, one per run.

The worker (:mod:`contextbox.levels._native_worker`) is started when the executor is made, so its
start overlaps the root model's first call. It gets:

* the context by memory-mapping a file — ``context.source_file`` when the context is one
  file on disk, else a copy written once to the run's temporary directory; the host opens
  it and passes the descriptor, so the worker needs no access to its path;
* its own temporary working directory (also ``HOME`` and ``TMPDIR``; 0700, owned by the
  worker's uid), deleted at close; the host's own files of the run (the context copy, the
  worker's stderr) are in another directory, 0700 with 0600 files. Directories left by a
  host that died are swept when the next executor starts;
* a scrubbed environment (``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` only — no API keys);
* before any model code runs: a new network namespace (no interfaces but a down
  loopback), a Landlock sandbox (reads limited to the Python installation and system
  libraries, writes to its directory only, no TCP, no signals to processes outside it), a
  seccomp filter (no unix sockets, no io_uring), a uid no other live worker holds when the
  host runs as root (:func:`contextbox.levels.l3_guard.lease_uid`), and resource limits: address
  space (context + ``services["l3_memory_mb"]``, default 1024 MiB), CPU seconds
  (``l3_cpu_s``, 600), open files (256), processes (``l3_nproc``, 32), file size
  (``l3_max_file_mb``, 1 GiB);
* limits for the worker *with all its processes*: a cgroup v2 of its own (``memory.max``,
  ``pids.max``, ``cpu.max`` = ``l3_cpus``, 1) where the OS delegates those controllers; else
  the host sums their memory while a block runs (:class:`~contextbox.levels.l3_guard.MemoryWatch`)
  and the private uid bounds their number. Processes a block leaves running are killed when
  it ends, and everything the worker started is killed when it is replaced or closed
  (``cgroup.kill``, else by uid, else by process tree);
* a wall-clock limit per cell (``services["l3_time_limit_s"]``, default 60 s; time spent
  in host calls such as ``llm_query`` does not count).

A worker that dies or overruns is killed with everything it started and replaced; the model
is told that its variables are gone. Protections the OS refused are reported once as
``warning`` events.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CommandError
from ..executors import Action, ActionOutput, Session, register_executor
from ..host_limits import max_answer_chars
from . import l3_guard
from ._cells import HELPERS_DOC, compose, cut_note, host_functions, output_cap, shorten_traceback
from .l3_guard import MemoryWatch, WorkerGroup

log = logging.getLogger("contextbox")

PROMPT = """\
Native Python (L3): code in ```repl blocks runs in a full CPython 3 process of its own (whole \
standard library; whatever is installed next to contextbox). Variables persist across blocks \
(also after an exception). Only what you print() comes back, cut to a few thousand characters: \
print summaries and slices, never the whole context.
Defined for you: `context` (the whole text as a str; for several documents a list of objects \
with .path and .text); """ + HELPERS_DOC + """
Limits: no network; files only in the current (temporary) directory; memory about the context \
size + 1 GiB for all your processes together; <L3_TIME_S> s per block; processes a block starts end with \
it. If the process dies (memory, crash, time) it is restarted and your \
variables are lost — keep results you need small and print them."""

WORKER = Path(__file__).with_name("_native_worker.py")
_HDR = struct.Struct(">I")
_MAX_FRAME = 64 << 20
_MIB = 1 << 20
#: how long close() waits for a running block before killing its worker, and then for the block to end
_CLOSE_WAIT_S = 1.0
_CLOSE_KILL_WAIT_S = 10.0
#: what the worker may ask the host to run (worker name -> host function name)
_HOST_CALLS = {
    n: n
    for n in ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "find", "regex", "count", "lines",
              "chunk", "split", "records", "extract", "count_by", "top", "unique", "filter_", "stats", "sort_", "join",
              "pairs", "search", "llm_map")
}
_HOST_CALLS["slice_text"] = "slice_"
#: host calls that wait for sub-models (their time does not count against the block's limit)
_SUB_CALLS = {"llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "llm_map"}


class WorkerDied(Exception):
    """The worker process ended or broke the protocol."""


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class _Proc:
    """One running worker process and its pipes."""

    def __init__(self, popen: subprocess.Popen[bytes], rfd: int, wfd: int, group: WorkerGroup):
        self.popen, self.rfd, self.wfd, self.group = popen, rfd, wfd, group
        self.buf = bytearray()
        self.ready: dict[str, Any] | None = None

    def send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg, ensure_ascii=False).encode("utf-8", "surrogatepass")
        view = memoryview(_HDR.pack(len(data)) + data)
        try:
            while view:
                view = view[os.write(self.wfd, view) :]
        except (BrokenPipeError, OSError) as e:
            raise WorkerDied(f"cannot write to the worker: {e}") from None

    def recv(self, deadline: float | None) -> dict[str, Any] | None:
        """The next message, or None when ``deadline`` passes first. Raises WorkerDied."""
        while True:
            if len(self.buf) >= 4:
                (n,) = _HDR.unpack_from(self.buf)
                if n > _MAX_FRAME:
                    raise WorkerDied(f"the worker sent a {n:,}-byte message (limit {_MAX_FRAME:,})")
                if len(self.buf) >= 4 + n:
                    data = bytes(self.buf[4 : 4 + n])
                    del self.buf[: 4 + n]
                    try:
                        msg = json.loads(data.decode("utf-8", "surrogatepass"))  # pragma: no mutate (UTF-8 = utf-8)
                    except (ValueError, RecursionError) as e:
                        raise WorkerDied(f"the worker sent a malformed message ({e})") from None
                    if not isinstance(msg, dict):
                        raise WorkerDied("the worker sent a malformed message")
                    return msg
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                return None
            ready, _, _ = select.select([self.rfd], [], [], wait)
            if ready:
                chunk = os.read(self.rfd, 1 << 20)  # pragma: no mutate (the read size: frames are joined across reads)
                if not chunk:
                    raise WorkerDied("the worker closed its pipe")
                self.buf += chunk
            elif self.popen.poll() is not None:
                raise WorkerDied("the worker exited")

    def kill(self) -> None:
        """Kill the worker and everything it started; close the pipes."""
        pid = self.popen.pid
        self.group.kill_all()  # first: a process tree is only known while its root lives
        for sig_target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: self.popen.kill()):
            try:
                sig_target()
            except (ProcessLookupError, PermissionError, OSError):
                pass
        try:
            self.popen.wait(timeout=5)  # pragma: no mutate (a safety net: SIGKILL ends it at once)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not time out
            log.warning("L3 worker %s did not exit after SIGKILL", pid)  # pragma: no mutate (log text)
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1  # pragma: no mutate (no fd is negative: -2 is as closed as -1)

    def exit_reason(self, code: int) -> str:
        """Why the worker ended, from its exit ``code`` (negative: the signal that killed it)."""
        if code < 0:
            name = _signal_name(code)
            hint = {
                "SIGKILL": " (often the memory limit, or the process killed itself)",
                "SIGXCPU": " (its CPU-time limit)",
                "SIGSEGV": " (a crash)",
            }.get(name, "")
            return f"it was killed by {name}{hint}"
        return f"it exited with status {code}"


class NativeExecutor:
    """Runs ``code`` actions in a CPython worker process of the run."""

    level = "l3"

    def __init__(self, session: Session):
        self.session = session
        svc = session.services
        self.time_limit_s = float(svc.get("l3_time_limit_s", 60))
        self.memory_mb = float(svc.get("l3_memory_mb", 1024))
        self.cpu_s = int(svc.get("l3_cpu_s", 600))
        self.nproc = int(svc.get("l3_nproc", 32))
        self.cap = output_cap(session)
        l3_guard.sweep_stale()
        prefix = f"{l3_guard.DIR_PREFIX}{os.getpid()}-"
        self.base = Path(tempfile.mkdtemp(prefix=prefix))  # the host's: 0700
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix, suffix=".work"))  # the worker's
        self._root = hasattr(os, "geteuid") and os.geteuid() == 0
        self._lease: l3_guard.UidLease | None = None
        self._guard_note = ""
        if self._root:
            try:
                self._lease = l3_guard.lease_uid()
            except OSError as e:
                self._guard_note = f"no private uid: {e}"
        self._ctx_path = self._context_file()
        size = self._ctx_path.stat().st_size
        self.group = WorkerGroup(f"{prefix}{self._lease.uid if self._lease else self.base.name[-8:]}",
                                 self._lease.uid if self._lease else None,
                                 memory_bytes=4 * size + int(self.memory_mb * _MIB) + 256 * _MIB, pids=self.nproc,
                                 cpus=float(svc.get("l3_cpus", 1.0)) or None)
        self._mem_limit = 0  # bytes for the worker with all its processes, set when it is ready
        self._stderr_path = self.base / "worker.log"
        self._proc: _Proc | None = None
        self._lock = threading.Lock()
        self._cleaned = False
        self._closed = False
        self._warned = False
        self.restarts = 0
        self._cells = 0  # blocks sent to a worker, counted across restarts (tracebacks name <cell N>, as in L2)
        try:
            self._proc = self._spawn()
        except OSError as e:  # reported when the first cell runs
            log.warning("L3 worker could not start: %s", e)  # pragma: no mutate (log text)

    # ------------------------------------------------------------------ worker lifecycle
    def _context_file(self) -> Path:
        ctx = self.session.context
        if ctx.source_file and os.path.isfile(ctx.source_file):
            return Path(ctx.source_file)
        path = self.base / "context.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # os.open's fds are close-on-exec
        with open(fd, "w", encoding="utf-8", errors="surrogatepass", newline="") as f:
            f.write(ctx.text)
        return path

    def _init_message(self, uid: int | None) -> dict[str, Any]:
        ctx = self.session.context
        docs = None
        if ctx.kind == "documents":  # always two or more (Context.from_documents makes one a "text")
            docs = [[d.path, d.start, d.end] for d in ctx.documents]
        return {
            "workdir": str(self.workdir),
            "staging": str(self.base),
            "documents": docs,
            "doc_path": ctx.documents[0].path,  # every context has at least one
            "cap": self.cap,
            "max_answer_chars": max_answer_chars(self.session),
            "package_dir": str(Path(__file__).parents[1]),  # contextbox/, for its ops module
            "uid": uid,  # and its gid
            "memory_bytes": int(self.memory_mb * _MIB),
            "cpu_s": self.cpu_s,
            "regex_timeout_s": getattr(self.session.config, "regex_timeout_s", None),
            "nofile": 256,
            "nproc": self.nproc,
            "fsize_bytes": int(float(self.session.services.get("l3_max_file_mb", 1024)) * _MIB),
            "isolate_network": bool(self.session.services.get("l3_isolate_network", True)),
            "landlock": bool(self.session.services.get("l3_landlock", True)),
            "seccomp": bool(self.session.services.get("l3_seccomp", True)),
        }

    def _spawn(self) -> _Proc:
        uid = self._lease.uid if self._lease is not None else None
        self.group.kill_all()  # nothing of an earlier worker may be left
        if uid is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir.mkdir(mode=0o700)
            os.chown(self.workdir, uid, uid)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
        }
        h_r, w_w = os.pipe()  # host reads what the worker writes
        w_r, h_w = os.pipe()  # worker reads what the host writes
        ctx_fd = os.open(self._ctx_path, os.O_RDONLY)  # close-on-exec, as every fd os.open makes
        err_fd = os.open(self._stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            popen = subprocess.Popen(
                [sys.executable, "-I", str(WORKER), str(w_r), str(w_w), str(ctx_fd)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_fd,
                pass_fds=(w_r, w_w, ctx_fd),  # and no other descriptor (pass_fds implies close_fds)
                cwd=str(self.base),
                env=env,
                start_new_session=True,
            )
        except OSError:
            for fd in (h_r, w_w, w_r, h_w):
                os.close(fd)
            raise
        finally:
            os.close(ctx_fd)
            os.close(err_fd)
        os.close(w_r)
        os.close(w_w)
        self.group.add(popen.pid)  # before the init message: the worker runs nothing until then
        self.group.kill_reason = None
        proc = _Proc(popen, h_r, h_w, self.group)
        try:
            proc.send(self._init_message(uid))
        except WorkerDied:  # it died at once: _wait_ready reports it, with the end of its stderr
            pass
        return proc

    def _wait_ready(self, proc: _Proc) -> None:
        if proc.ready is not None:
            return
        size = self._ctx_path.stat().st_size
        deadline = time.monotonic() + 30 + size / (100 * _MIB)  # ~100 MiB/s worst case for decoding
        msg = proc.recv(deadline)
        if msg is None:
            raise WorkerDied("the worker did not start in time")
        if msg.get("op") != "ready":
            raise WorkerDied(f"unexpected first message from the worker: {msg.get('op')!r}")
        proc.ready = msg
        base = self.group.memory_current() or l3_guard.pss_bytes(proc.popen.pid)
        self._mem_limit = base + int(self.memory_mb * _MIB)
        self.group.set_memory_max(self._mem_limit)
        report = msg.get("report") or {}
        log.debug("L3 worker %s ready: %s", msg.get("pid"), report)  # pragma: no mutate (log text)
        self._check_isolation(report)

    def _check_isolation(self, report: dict[str, Any]) -> None:
        if self._warned:
            return
        self._warned = True
        problems = []
        if report.get("network") != "ok":
            problems.append(f"network not isolated: {report.get('network')}")
        if not str(report.get("landlock")).startswith("abi"):
            problems.append(f"filesystem not sandboxed: {report.get('landlock')}")
        if not isinstance(report.get("uid"), int):
            problems.append(f"worker runs as the host's user: {report.get('uid')}"
                            + (f" ({self._guard_note})" if self._guard_note else ""))
        if report.get("seccomp") != "ok":
            problems.append(f"unix sockets not blocked (seccomp: {report.get('seccomp')})")
        missing = [c for c in ("memory", "pids", "cpu") if c not in self.group.controllers]
        if missing:
            instead = {
                "memory": "memory: the host sums the PSS of the worker's processes every 50 ms while a block runs "
                          "(a fast allocation can overshoot it briefly)",
                "pids": "processes: RLIMIT_NPROC of the worker's private uid" if self._lease else
                        "processes: RLIMIT_NPROC, which counts every process of the host's user",
                "cpu": "CPU: RLIMIT_CPU per process and the block's time limit",
            }
            problems.append(f"no cgroup limit for {', '.join(missing)} ({self.group.describe()}); instead "
                            + "; ".join(instead[c] for c in missing))
        for p in problems:
            log.warning("L3 worker: %s", p)  # pragma: no mutate (log text)
            self.session.emit("warning", {"message": f"L3 worker: {p}", "level": "l3"})

    def _stderr_tail(self, n: int = 600) -> str:
        try:
            with open(self._stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def _replace(self, why: str) -> str:
        """Kill the current worker, start another; returns the note for the model."""
        if self._proc is not None:
            self._proc.kill()
        self._proc = None
        if self._closed:  # the run ended while this block ran: no new worker
            return f"[{why}]"
        self.restarts += 1
        self.session.emit("warning", {"message": f"L3 worker replaced: {why}", "level": "l3"})
        log.info("L3 worker replaced: %s", why)  # pragma: no mutate (log text)
        try:
            self._proc = self._spawn()
        except OSError as e:
            return f"[{why}; a new worker could not be started ({e}); it will be retried with the next block]"
        return (
            f"[{why}; a fresh worker was started: variables from earlier blocks are lost, "
            "`context` and the helper functions are available again]"
        )

    # ------------------------------------------------------------------ run
    def run(self, action: Action) -> ActionOutput:
        code = str(action.args.get("code", action.source) or "")
        with self._lock:
            if self._closed:
                raise CommandError("the L3 worker of this run is closed")
            if self._proc is None:
                try:
                    self._proc = self._spawn()
                except OSError as e:
                    return ActionOutput(f"[the L3 worker could not start: {e}]", error=True)
            proc = self._proc
            try:
                self._wait_ready(proc)
            except WorkerDied as e:
                tail = self._stderr_tail()
                note = self._replace(f"the worker failed to start ({e}{'; ' + tail if tail else ''})")
                return ActionOutput(note, error=True)
            try:
                return self._run_cell(proc, code)
            finally:
                if self._closed:  # closed while this block ran, and close() could not wait for it
                    self._cleanup()

    def _run_cell(self, proc: _Proc, code: str) -> ActionOutput:
        oom_before = self.group.oom_kills()
        watch = MemoryWatch(self.group, self._mem_limit) if "memory" not in self.group.controllers else None
        try:
            if watch is not None:
                with watch:
                    out = self._exchange(proc, code)
            else:
                out = self._exchange(proc, code)
        except WorkerDied as e:
            try:
                reason = proc.exit_reason(proc.popen.wait(timeout=1))
            except subprocess.TimeoutExpired:  # alive but out of step (it closed its pipe, sent garbage)
                reason = str(e)
            if self.group.kill_reason or self.group.oom_kills() > oom_before:
                why = self.group.kill_reason or "its processes used more than the worker's memory limit"
                return ActionOutput(self._replace(f"this block was stopped by the memory limit: {why}"), error=True)
            return ActionOutput(self._replace(f"the worker died while running this block: {reason}"), error=True)
        if self._proc is proc:  # not replaced: a block's processes end with it (also when its worker then exited)
            n = self.group.kill_strays(proc.popen.pid)
            if n:
                log.debug("L3: killed %d process(es) left running by the block", n)  # pragma: no mutate (log text)
        return out

    def _exchange(self, proc: _Proc, code: str) -> ActionOutput:
        deadline = time.monotonic() + self.time_limit_s
        # the L1 helpers' host work counts against the block's time; sub-model calls do not (the answer
        # helpers FINAL, FINAL_VAR and SHOW_VARS run in the worker: no host state for them)
        fns = host_functions(self.session, deadline=deadline)
        self._cells += 1
        proc.send({"op": "run", "code": code, "cell": self._cells})
        while True:
            msg = proc.recv(deadline)
            if msg is None:
                note = self._replace(
                    f"this block ran longer than the {self.time_limit_s:g} s limit and was stopped"
                )
                return ActionOutput(note, error=True)
            op = msg.get("op")
            if op == "call":
                t0 = time.monotonic()
                proc.send(self._host_call(fns, msg))
                if str(msg.get("fn")) in _SUB_CALLS:
                    deadline += time.monotonic() - t0  # time waiting for sub-models does not count
            elif op == "done":
                return self._result(msg)
            else:
                raise WorkerDied(f"unexpected message {op!r}")

    def _host_call(self, fns: dict[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
        name = _HOST_CALLS.get(str(msg.get("fn")))
        args, kwargs = msg.get("args") or [], msg.get("kwargs") or {}
        fn = fns.get(name) if name else None
        if fn is None or not isinstance(args, list) or not isinstance(kwargs, dict):
            return {"op": "raise", "message": f"unknown host function {msg.get('fn')!r}"}
        try:
            return {"op": "return", "value": fn(*args, **{str(k): v for k, v in kwargs.items()})}
        except (CommandError, TypeError, ValueError) as e:
            return {"op": "raise", "message": str(e)}
        except Exception as e:  # noqa: BLE001 - a failed sub-call is the cell's error, not ours
            log.warning("L3 host call %s failed: %s", name, e)  # pragma: no mutate (log text)
            return {"op": "raise", "message": f"{type(e).__name__}: {e}"}

    def _result(self, msg: dict[str, Any]) -> ActionOutput:
        output = msg.get("output")
        output = output if isinstance(output, str) else ""
        cut = msg.get("cut") if isinstance(msg.get("cut"), int) else 0
        if len(output) > self.cap:  # never trust the worker's own cap
            cut += len(output) - self.cap
            output = output[: self.cap]
        if cut:
            output += ("" if not output or output.endswith("\n") else "\n") + cut_note(cut)
        error = msg.get("error")
        error = shorten_traceback(error) if isinstance(error, str) and error else None
        final = msg.get("final")
        final = final if isinstance(final, str) else None
        limit = max_answer_chars(self.session)
        if final is not None and len(final) > limit:
            error = (error + "\n" if error else "") + (
                f"FINAL error: the answer holds {len(final):,} characters, over the limit of {limit:,} "
                "([limits] max_answer_chars); answer with the result itself")
            final = None
        return ActionOutput(compose(output, error, []), error=error is not None, final=final)

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Kill the worker and remove what the run left. A block still running (the run timed out or was
        cancelled) is not waited for: its worker is killed, which ends the block."""
        self._closed = True
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            proc = self._proc
            if proc is not None:  # signals only: the running block reads EOF, gets WorkerDied and returns
                self.group.kill_all()
                try:
                    proc.popen.kill()
                except OSError:
                    pass
            if not self._lock.acquire(timeout=_CLOSE_KILL_WAIT_S):
                # e.g. waiting in a host call (a sub-model): the block cleans up when it returns (run())
                # pragma: no mutate start (log text)
                log.warning("L3: a block of run %s did not end after its worker was killed; it cleans up when "
                            "it does", self.session.run_id)
                # pragma: no mutate end
                return
        try:
            self._cleanup()
        finally:
            self._lock.release()

    def _cleanup(self) -> None:
        """Kill the worker, remove the run's directories and cgroup, release the uid (with the lock held)."""
        if self._cleaned:
            return
        self._cleaned = True
        if self._proc is not None:
            self._proc.kill()
            self._proc = None
        self.group.close()
        if self._lease is not None:
            self._lease.release()
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def worker_pid(self) -> int | None:
        """The current worker's pid (tests and diagnostics)."""
        return self._proc.popen.pid if self._proc is not None else None


def make_executor(session: Session) -> NativeExecutor:
    return NativeExecutor(session)


register_executor("l3", make_executor)
