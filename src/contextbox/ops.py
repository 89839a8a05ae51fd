"""The L1 operations as plain functions on a string.

These are the exact semantics of the L1 commands (and of the same-named functions inside
code cells). Lines are separated by ``"\\n"`` and numbered from 0; a trailing newline does
not start a new line. Offsets are character offsets into the string.
"""

from __future__ import annotations

import builtins
import gc
import os
import pickle
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import CommandError
from .host_limits import HostStopped, checkpoint, chunk_pieces, current, split_pieces, time_left

T = TypeVar("T")

#: regex flag letters accepted in ``flags`` (also full names like "IGNORECASE")
FLAG_LETTERS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}
FLAG_NAMES = {
    "IGNORECASE": re.IGNORECASE,
    "MULTILINE": re.MULTILINE,
    "DOTALL": re.DOTALL,
    "VERBOSE": re.VERBOSE,
    "ASCII": re.ASCII,
}
REGEX_TIMEOUT_S = 5.0


class LineIndex:
    """Line numbers for offsets of one string, computed lazily and incrementally."""

    def __init__(self, text: str):
        self.text = text
        self._off = 0
        self._line = 0

    def line_of(self, offset: int) -> int:
        if offset < self._off:  # hits come in order; restart if asked out of order
            self._off, self._line = 0, 0
        self._line += self.text.count("\n", self._off, offset)
        self._off = offset
        return self._line


def _line_text(text: str, offset: int, width: int = 240) -> str:
    """The line holding ``offset``, cut to ``width`` characters around it.

    Only ``width`` characters either side are searched for the line's ends: a hit on a very
    long line costs the same as one on a short line."""
    lo, hi = max(0, offset - width - 1), min(len(text), offset + width + 1)
    s = text.rfind("\n", lo, offset) + 1
    if s == 0 and lo > 0:  # the line starts before the window: it is longer than width
        s = -1
    e = text.find("\n", offset, hi)
    if e < 0:  # the line ends past the window (longer than width), or where the text ends
        e = len(text) if hi == len(text) else len(text) + 1
    if e - s > width:
        a = max(s, offset - width // 2)
        b = min(e, a + width)
        return ("…" if a > s else "") + text[a:b] + ("…" if b < e else "")
    return text[s:e].rstrip("\r")


def slice_text(text: str, start: int | None = 0, end: int | None = None) -> str:
    return text[start:end]


def n_lines(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def lines(text: str, start: int | None = 0, end: int | None = None) -> list[str]:
    """``text``'s lines ``[start:end]`` (Python slice semantics on the list of lines)."""
    g = current()
    if g is not None:
        g.check_items(text.count("\n") + 1, "lines", "ask for a range of a smaller text")
    all_lines = text.split("\n")
    if all_lines and all_lines[-1] == "":
        all_lines.pop()
    return all_lines[start:end]


def find(text: str, needle: str, case_sensitive: bool = False, max: int | None = 100) -> list[dict[str, Any]]:
    """Non-overlapping occurrences of a literal, left to right (like ``re.finditer(re.escape(needle))``)."""
    if not isinstance(needle, str) or needle == "":
        raise CommandError("find needs a non-empty 'text' to look for")
    max, over = hit_limit(max, "find")
    idx = LineIndex(text)
    hits: list[dict[str, Any]] = []
    if case_sensitive:
        pos, n = text.find(needle), len(needle)
        while pos >= 0 and (max is None or len(hits) < max):
            checkpoint()
            hits.append({"offset": pos, "line": idx.line_of(pos), "text": _line_text(text, pos)})
            pos = text.find(needle, pos + n)
        return check_overflow(hits, over, "find")
    for pos in _iter_find_ci(text, needle):
        if max is not None and len(hits) >= max:
            break
        checkpoint()
        hits.append({"offset": pos, "line": idx.line_of(pos), "text": _line_text(text, pos)})
    return check_overflow(hits, over, "find")


def hit_limit(max: int | None, what: str, arg: str = "max") -> tuple[int | None, int | None]:
    """``(hits to collect, overflow)`` under the current host guard: a ``max`` over ``[limits] max_host_hits``
    is refused; ``None`` (all) collects one more than the limit, so :func:`check_overflow` can tell."""
    g = current()
    if g is None:
        return max, None
    if max is None:
        return g.max_hits + 1, g.max_hits
    return g.check_hits(max, what, arg), None


def check_overflow(hits: list[Any], over: int | None, what: str) -> list[Any]:
    if over is not None and len(hits) > over:
        raise CommandError(f"{what}: more than {over:,} hits, the limit per call ([limits] max_host_hits); "
                           "pass max=N for the first N, use count for the total, or narrow the search")
    return hits


#: block size of the case-insensitive scan (characters)
_CI_BLOCK = 1 << 20


def _iter_find_ci(text: str, needle: str) -> Iterator[int]:
    """Starts of ``re.finditer(re.escape(needle), text, re.IGNORECASE)``, faster.

    ``re`` has no fast search for case-insensitive literals (~80 MB/s). For an ASCII needle,
    ASCII stretches of the text are scanned block by block with ``lower()`` + ``find`` (exact
    there: an ASCII letter only matches its two ASCII cases); blocks holding other characters
    (where e.g. "k" also matches the Kelvin sign) go through ``re`` itself.
    """
    rx = re.compile(re.escape(needle), re.IGNORECASE)
    if not needle.isascii():
        for m in rx.finditer(text):
            yield m.start()
        return
    low, n, size = needle.lower(), len(needle), len(text)
    pos = 0  # no match may start before pos (matches don't overlap)
    while pos < size:
        checkpoint()
        end = min(size, pos + _CI_BLOCK)  # matches starting in [pos, end) are found in this round
        seg_end = min(size, end + n - 1)
        seg = text[pos:seg_end]
        nxt = end
        if seg.isascii():
            seg = seg.lower()
            i = seg.find(low)
            k = 0
            while 0 <= i < end - pos:
                k += 1
                if not k & 0xFFF:  # a block can hold a million hits
                    checkpoint()
                yield pos + i
                nxt = builtins.max(nxt, pos + i + n)
                i = seg.find(low, i + n)
        else:
            for m in rx.finditer(text, pos, seg_end):
                if m.start() >= end:
                    break
                yield m.start()
                nxt = builtins.max(nxt, m.end())
        pos = nxt


def count_find(text: str, needle: str, case_sensitive: bool = False) -> int:
    if not isinstance(needle, str) or needle == "":
        raise CommandError("count needs a non-empty 'pattern' (a literal) or 'what': lines|chars|words")
    if case_sensitive:
        return text.count(needle)
    low = needle.lower()
    if needle.isascii() and not any(low[:k] == low[-k:] for k in range(1, len(low))):
        return _count_ci_borderless(text, low)
    return sum(1 for _ in _iter_find_ci(text, needle))


def _count_ci_borderless(text: str, low: str) -> int:
    """``count_find(text, needle, False)`` for an ASCII needle with no border (no proper prefix that is also
    a suffix, e.g. any single character): its occurrences cannot overlap, so each ASCII block is counted with
    ``str.count`` instead of one step per hit; other blocks go through ``re``. A block counts the matches that
    start in it (its segment reaches ``n - 1`` characters past it, so no such match is cut, and none that
    starts past it fits); a match that runs over into the next block cannot overlap one starting there."""
    rx = re.compile(re.escape(low), re.IGNORECASE)
    n, size, total, pos = len(low), len(text), 0, 0
    while pos < size:
        checkpoint()
        end = min(size, pos + _CI_BLOCK)  # count the matches starting in [pos, end)
        seg_end = min(size, end + n - 1)
        seg = text[pos:seg_end]
        if seg.isascii():
            total += seg.lower().count(low)
        else:
            total += sum(1 for _ in rx.finditer(text, pos, seg_end))
        pos = end
    return total


def parse_flags(flags: Any) -> int:
    if flags is None or flags == "" or flags == 0:
        return 0
    if isinstance(flags, int) and not isinstance(flags, bool):
        return flags
    items = flags if isinstance(flags, list) else [flags]
    out = 0
    for item in items:
        if not isinstance(item, str):
            raise CommandError(f"bad regex flag {item!r}; use letters like \"im\" or names like \"IGNORECASE\"")
        key = item.strip().upper().removeprefix("RE.")
        if key in FLAG_NAMES:
            out |= FLAG_NAMES[key]
            continue
        for ch in item.strip().lower():
            if ch not in FLAG_LETTERS:
                raise CommandError(f"unknown regex flag {ch!r}; flags are i, m, s, x, a (or IGNORECASE, ...)")
            out |= FLAG_LETTERS[ch]
    return out


def compile_regex(pattern: str, flags: Any = "") -> re.Pattern[str]:
    if not isinstance(pattern, str) or pattern == "":
        raise CommandError("regex needs a non-empty 'pattern' (Python re syntax)")
    try:
        return re.compile(pattern, parse_flags(flags))
    except re.error as e:
        raise CommandError(f"bad regex {pattern!r}: {e}; escape special characters with \\\\") from None


def regex(text: str, pattern: str, flags: Any = "", max: int | None = 100,
          timeout_s: float | None = None) -> list[dict[str, Any]]:
    """Matches of a Python regex, as ``re.finditer`` gives them."""
    rx = compile_regex(pattern, flags)
    max, over = hit_limit(max, "regex")

    def scan() -> list[dict[str, Any]]:
        idx = LineIndex(text)
        out = []
        for m in rx.finditer(text):
            if max is not None and len(out) >= max:
                break
            checkpoint()
            out.append(
                {
                    "offset": m.start(),
                    "end": m.end(),
                    "line": idx.line_of(m.start()),
                    "match": m.group(0),
                    "groups": list(m.groups()),
                }
            )
        return out

    return check_overflow(run_guarded(scan, timeout_s or REGEX_TIMEOUT_S, f"regex {pattern!r}"), over, "regex")


def count_regex(text: str, pattern: str, flags: Any = "", timeout_s: float | None = None) -> int:
    rx = compile_regex(pattern, flags)
    return run_guarded(lambda: sum(1 for _ in rx.finditer(text)), timeout_s or REGEX_TIMEOUT_S, f"regex {pattern!r}")


def count_words(text: str, block: int = 1 << 24) -> int:
    """``len(text.split())`` without building one huge list."""
    total, pos, n = 0, 0, len(text)
    while pos < n:
        checkpoint()
        end = min(n, pos + block)
        while end < n and not text[end].isspace():  # never cut a word in two
            end += 1
        total += len(text[pos:end].split())
        pos = end
    return total


def count(text: str, pattern: str | None = None, what: str | None = None,
          case_sensitive: bool = False) -> int | dict[str, int]:
    """Occurrences of a literal ``pattern`` — ignoring case unless ``case_sensitive``, like
    :func:`find`, so a count and a find of the same text agree; or lines / chars / words;
    with neither, all three."""
    if pattern is not None:
        if not isinstance(pattern, str) or pattern == "":
            raise CommandError("count needs a non-empty 'pattern' (a literal) or 'what': lines|chars|words")
        return count_find(text, pattern, case_sensitive=case_sensitive)
    if what is None:
        return {"chars": len(text), "lines": n_lines(text), "words": count_words(text)}
    if what == "lines":
        return n_lines(text)
    if what == "chars":
        return len(text)
    if what == "words":
        return count_words(text)
    raise CommandError(f"count 'what' must be lines, chars or words, not {what!r}")


def chunk(text: str, size: int, overlap: int = 0) -> list[str]:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise CommandError("chunk needs 'size', a positive number of characters")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < size:
        raise CommandError(f"chunk 'overlap' must be a number from 0 to size-1 ({size - 1})")
    step = size - overlap
    if not text:
        return []
    g = current()
    if g is not None:
        n, chars = chunk_pieces(len(text), size, overlap)
        g.check_items(n, f"chunk({size:,}, overlap={overlap:,})", "use a larger size")
        g.check_chars(chars, f"chunk({size:,}, overlap={overlap:,})", "use a smaller overlap or a part of the text")
    out = []
    for i in range(0, len(text), step):
        if not i % (step << 12):
            checkpoint()
        out.append(text[i : i + size])
        if i + size >= len(text):
            break
    return out


def chunk_lines(text: str, size: int) -> tuple[list[str], int]:
    """Chunks of at most ``size`` characters that end on line boundaries; ``(chunks, cuts)``.

    The chunks join back to ``text``. Each chunk holds as many whole lines as fit; a single
    line longer than ``size`` is the one thing cut (into ``size``-character pieces), and
    ``cuts`` counts those cuts so the caller can say so.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise CommandError("chunk size must be a positive number of characters")
    out: list[str] = []
    cuts = 0
    pos, n = 0, len(text)
    while pos < n:
        end = pos + size
        if end >= n:
            out.append(text[pos:])
            break
        nl = text.rfind("\n", pos, end)
        if nl < 0:  # no line ends in this window: a line longer than size
            cuts += 1
        else:
            end = nl + 1
        out.append(text[pos:end])
        pos = end
    return out, cuts


def split(text: str, delimiter: str) -> list[str]:
    if not isinstance(delimiter, str) or delimiter == "":
        raise CommandError("split needs a non-empty 'delimiter' string")
    g = current()
    if g is not None:
        g.check_items(split_pieces(text, delimiter), f"split({delimiter!r})",
                      "split a part of the text, or use a delimiter that occurs less often (chunk for fixed sizes)")
    return text.split(delimiter)


# --------------------------------------------------------------------------- timeouts
def run_guarded(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run ``fn`` and stop it after ``timeout_s`` seconds with a CommandError.

    In the main thread a SIGALRM interrupts the regex engine (CPython's ``re`` checks for
    signals). Elsewhere the work runs in a forked child that shares the text copy-on-write
    and is killed at the deadline.
    """
    timeout_s = time_left(timeout_s)  # never past the host call's deadline
    msg = (
        f"{what} ran longer than {timeout_s:.3g} s and was stopped; simplify it "
        "(avoid nested quantifiers like (a+)+, anchor it, or search for a literal with find)"
    )
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum: int, frame: Any) -> None:
            raise _Alarm()

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return fn()
        except _Alarm:
            raise CommandError(msg) from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    if not hasattr(os, "fork"):
        return fn()
    return _run_forked(fn, timeout_s, msg)


class _Alarm(BaseException):
    pass


def _run_forked(fn: Callable[[], T], timeout_s: float, msg: str) -> T:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute, send, leave without running any cleanup
        # Only this thread exists in the child; a lock another thread of the parent held at the
        # fork stays locked forever. A garbage collection here would run finalizers of the
        # parent's objects (sockets, SQLite connections, llama.cpp handles) that may wait on such
        # a lock — the child hung until its deadline (CI, once in ~1,500 tests). No collection.
        gc.disable()
        code = 0
        try:
            os.close(r)
            try:
                payload = pickle.dumps((True, fn()))
            except BaseException as e:  # noqa: BLE001 - sent back to the parent
                payload = pickle.dumps((False, e))
            view = memoryview(payload)
            while view:
                view = view[os.write(w, view) :]
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise CommandError(msg)
            try:
                checkpoint()  # a cancelled run does not wait for the child
            except HostStopped:
                os.kill(pid, signal.SIGKILL)
                raise
            ready, _, _ = select.select([r], [], [], min(left, 0.1))
            if ready:
                data = os.read(r, 1 << 20)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not chunks:
        raise CommandError(msg.split(" ran ")[0] + " failed in its worker process; try a simpler search")
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise value
    return value
