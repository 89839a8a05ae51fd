"""The context box: the text the model works on but never sees whole.

A :class:`Context` is one Python ``str`` (documents joined, each under a ``==> path <==``
header) plus the list of its documents and a lazily built line index. The root model only
ever sees :meth:`Context.describe` — kind, sizes, a short head/tail preview.

Large files are read once, straight into the final string (no intermediate ``bytes``
copy for ASCII files), so a 1 GiB file costs about 1 GiB of memory.
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
import json
import logging
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .documents import DEFAULT_MAX_FILES, DEFAULT_MAX_MB
from .errors import ContextError

log = logging.getLogger("contextbox")

#: Files at least this big are read with the in-place reader.
LARGE_FILE_BYTES = 64 * 1024 * 1024
_BLOCK = 1 << 20  # line-index checkpoint spacing, in characters

_counter = threading.local()


def _count_replace(err: UnicodeDecodeError) -> tuple[str, int]:
    _counter.n = getattr(_counter, "n", 0) + (err.end - err.start)
    return ("\ufffd", err.end)


codecs.register_error("contextbox_count", _count_replace)


def decode_bytes(data: bytes | memoryview) -> tuple[str, int]:
    """Decode UTF-8, replacing bad bytes. Returns (text, number of bytes replaced)."""
    try:
        return str(data, "utf-8"), 0
    except UnicodeDecodeError:
        _counter.n = 0
        text = str(data, "utf-8", "contextbox_count")
        return text, _counter.n


def _ascii_inplace_supported() -> bool:
    return sys.implementation.name == "cpython" and sys.getsizeof("") == 49


def _read_large(f: Any, size: int) -> tuple[str, int]:
    """Read a large file (the binary file object ``f``, at offset 0) into a str with one
    copy of the data in memory.

    ASCII files (the common case for logs and generated data) are read straight into a new
    compact ASCII string allocated through the C API, then verified to be ASCII chunk by
    chunk. Anything else is read into one byte buffer and decoded once (file + str at the peak).
    """
    if _ascii_inplace_supported():
        new = ctypes.pythonapi.PyUnicode_New
        new.restype = ctypes.py_object
        new.argtypes = [ctypes.c_ssize_t, ctypes.c_uint32]
        s = new(size, 127)
        buf = (ctypes.c_char * size).from_address(id(s) + sys.getsizeof("") - 1)
        mv = memoryview(buf).cast("B")
        ok = True
        pos = 0
        while pos < size:
            n = f.readinto(mv[pos : min(size, pos + (16 << 20))])
            if not n:
                break
            if not mv[pos : pos + n].tobytes().isascii():
                ok = False
                break
            pos += n
        del mv, buf
        if ok and pos == size:
            return s, 0
        del s
        f.seek(0)
    # one buffer of the bytes, decoded once: peak = file + str (decoded chunks joined into the
    # str would hold the str twice, which is more for text Python stores 2 or 4 bytes a character)
    data = bytearray(size)
    mv = memoryview(data)
    pos = 0
    while pos < size:
        n = f.readinto(mv[pos:])
        if not n:
            break
        pos += n
    del mv
    if pos < size:
        del data[pos:]
    while extra := f.read(16 << 20):  # the file grew while it was read
        data += extra
    text, bad = decode_bytes(data)
    del data
    return text, bad


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for messages ("a FIFO", "a character device", …)."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: Any, mode: int) -> ContextError:
    return ContextError(f"{path} is {file_kind(mode)}, not a regular file: contextbox reads regular files and "
                        "directories (pipe a stream into -c - instead)")


def read_text_file(path: Path) -> tuple[str, int]:
    """Decode a regular file. Anything else (a FIFO, a device, a socket) is refused without
    waiting on it: the file is opened non-blocking and checked with ``fstat`` before any read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ContextError(f"context file not found: {path}") from None
    except PermissionError:
        raise ContextError(f"cannot read context file {path}: permission denied") from None
    except OSError as e:
        raise ContextError(f"cannot read context file {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ContextError(f"{path} is a directory; pass it as -c DIR to load its files")
        raise _not_regular(path, st.st_mode)
    with open(fd, "rb", buffering=0) as f:
        try:
            if st.st_size >= LARGE_FILE_BYTES:
                return _read_large(f, st.st_size)
            return decode_bytes(f.read())
        except OSError as e:
            raise ContextError(f"cannot read context file {path}: {e.strerror or e}") from None


@dataclass
class Document:
    path: str
    start: int  # offset of the document's text in Context.text
    end: int

    @property
    def chars(self) -> int:
        return self.end - self.start


@dataclass
class Context:
    text: str
    documents: list[Document] = field(default_factory=list)
    kind: str = "text"  # text | documents | json
    warnings: list[str] = field(default_factory=list)
    #: the file on disk holding exactly ``text`` (UTF-8), when there is one; lets a
    #: native worker memory-map it instead of receiving a copy
    source_file: str | None = None

    def __post_init__(self) -> None:
        self._checkpoints: list[int] | None = None  # line number at each _BLOCK boundary
        self._n_lines: int | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_value(cls, value: Any) -> Context:
        """A str, a list of str (documents), a dict of str → str, or any JSON value."""
        if isinstance(value, Context):
            return value
        if isinstance(value, str):
            return cls(value, [Document("<text>", 0, len(value))], "text")
        if isinstance(value, (bytes, bytearray)):
            text, bad = decode_bytes(bytes(value))
            ctx = cls(text, [Document("<bytes>", 0, len(text))], "text")
            ctx._warn_bad(bad, "<bytes>")
            return ctx
        if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
            return cls.from_documents([(f"[{i}]", v) for i, v in enumerate(value)])
        if isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
            return cls.from_documents([(str(k), v) for k, v in value.items()])
        try:
            text = json.dumps(value, indent=1, ensure_ascii=False, default=str)
        except (TypeError, ValueError) as e:
            raise ContextError(f"cannot use a {type(value).__name__} as context: {e}") from None
        return cls(text, [Document("<json>", 0, len(text))], "json")

    @classmethod
    def from_documents(cls, docs: Iterable[tuple[str, str]]) -> Context:
        docs = list(docs)
        if len(docs) == 1:
            path, text = docs[0]
            return cls(text, [Document(path, 0, len(text))], "text")
        parts: list[str] = []
        out: list[Document] = []
        pos = 0
        for path, text in docs:
            header = f"==> {path} <==\n"
            parts.append(header)
            pos += len(header)
            parts.append(text)
            out.append(Document(path, pos, pos + len(text)))
            pos += len(text)
            if not text.endswith("\n"):
                parts.append("\n")
                pos += 1
        return cls("".join(parts), out, "documents")

    @classmethod
    def load(
        cls,
        sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        stdin: Any = None,
        max_files: int | None = DEFAULT_MAX_FILES,
        max_bytes: int | None = int(DEFAULT_MAX_MB * 1024 * 1024),
        progress: Callable[[int, int], None] | None = None,
    ) -> Context:
        """Load files, directories (recursive), ``http(s)://`` URLs and ``-`` (stdin) into one context.

        Directories honour ``.gitignore``/``.rlmignore`` and skip binaries, virtualenvs and VCS
        folders; a walk over ``max_files`` files or ``max_bytes`` bytes is refused; documents (PDF,
        DOCX, …) are converted to text (see :mod:`contextbox.documents`). ``progress(done, total)``
        is called while a walk of more than a few thousand files is read.
        """
        from . import documents

        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        if not sources:
            raise ContextError("no context given; pass -c PATH (a file, a directory or - for stdin)")
        limits = documents.LoadLimits(max_files, max_bytes)
        docs: list[tuple[str, str]] = []
        warnings: list[str] = []
        bad_total = 0
        single_file: str | None = None
        for src in sources:
            if str(src) == "-":
                stream = stdin if stdin is not None else sys.stdin.buffer
                text, bad = decode_bytes(stream.read())
                docs.append(("<stdin>", text))
                bad_total += bad
                continue
            if documents.is_url(src):
                loaded = documents.fetch_url(str(src), max_bytes=max_bytes)
                docs += loaded.docs
                bad_total += loaded.bad_bytes
                continue
            p = Path(src).expanduser()
            try:
                st = os.stat(p)
            except FileNotFoundError:
                raise ContextError(f"context file not found: {src}") from None
            except OSError as e:
                raise ContextError(f"cannot use context path {src}: {e.strerror or e}") from None
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise _not_regular(src, st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                loaded = documents.load_directory(p, include, exclude, full_paths=len(sources) > 1, limits=limits,
                                                  progress=progress)
                single_file = None
            else:
                loaded = documents.load_file(p, str(src))
                is_text = len(loaded.docs) == 1 and loaded.docs[0][0] == str(src) and loaded.bad_bytes == 0
                single_file = str(p.resolve()) if is_text else None
            docs += loaded.docs
            warnings += loaded.warnings
            bad_total += loaded.bad_bytes
        if not docs:
            raise ContextError("no readable text files in the given context")
        ctx = cls.from_documents(docs)
        if len(docs) == 1 and single_file and ctx.kind == "text":
            ctx.source_file = single_file
        ctx.warnings.extend(warnings)
        ctx._warn_bad(bad_total, "the context")
        if not ctx.text:
            ctx.warnings.append("the context is empty")
        for w in ctx.warnings:
            log.warning("%s", w)
        return ctx

    def _warn_bad(self, bad: int, where: str) -> None:
        if bad:
            self.warnings.append(f"{bad} undecodable byte(s) in {where} were replaced by U+FFFD")

    # ---------------------------------------------------------------- shape
    def __len__(self) -> int:
        return len(self.text)

    @property
    def n_lines(self) -> int:
        if self._n_lines is None:
            t = self.text
            self._n_lines = t.count("\n") + (1 if t and not t.endswith("\n") else 0)
        return self._n_lines

    def document_at(self, offset: int) -> Document | None:
        if len(self.documents) <= 1:
            return self.documents[0] if self.documents else None
        starts = [d.start for d in self.documents]
        i = bisect.bisect_right(starts, offset) - 1
        return self.documents[max(i, 0)]

    def metadata(self, *, max_docs: int = 20, preview_chars: int = 300) -> dict[str, Any]:
        t = self.text
        head = t[:preview_chars]
        tail = t[-(preview_chars // 2) :] if 1 < preview_chars < len(t) else ""
        return {
            "kind": self.kind,
            "chars": len(t),
            "lines": self.n_lines,
            "documents": len(self.documents),
            "document_sizes": [
                {"path": d.path, "start": d.start, "chars": d.chars} for d in self.documents[:max_docs]
            ],
            "documents_not_listed": max(0, len(self.documents) - max_docs),
            "head": head,
            "tail": tail,
            "warnings": list(self.warnings),
        }

    def describe(self, *, max_docs: int = 20, preview_chars: int = 300) -> str:
        m = self.metadata(max_docs=max_docs, preview_chars=preview_chars)
        lines = [
            f"kind: {m['kind']}",
            f"size: {m['chars']:,} characters, {m['lines']:,} lines, {m['documents']} document(s)",
        ]
        if m["documents"] > 1:
            lines.append("documents (path: start offset, chars):")
            lines += [f"  {d['path']}: {d['start']:,}, {d['chars']:,}" for d in m["document_sizes"]]
            if m["documents_not_listed"]:
                lines.append(f"  … and {m['documents_not_listed']} more")
            lines.append("each document starts after a header line '==> path <=='")
        for w in m["warnings"]:
            lines.append(f"warning: {w}")
        lines.append(f"preview (first {len(m['head'])} characters):\n{m['head']!r}")
        if m["tail"]:
            lines.append(f"preview (last {len(m['tail'])} characters):\n{m['tail']!r}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- lines
    def _index(self) -> list[int]:
        with self._lock:
            if self._checkpoints is None:
                t, cps, line = self.text, [0], 0
                for b in range(0, len(t), _BLOCK):
                    line += t.count("\n", b, b + _BLOCK)
                    cps.append(line)
                self._checkpoints = cps  # cps[k] = lines completed before offset k*_BLOCK
            return self._checkpoints

    def line_of(self, offset: int) -> int:
        """0-based line number of a character offset."""
        cps = self._index()
        k = min(offset // _BLOCK, len(cps) - 1)
        return cps[k] + self.text.count("\n", k * _BLOCK, offset)

    def line_start(self, n: int) -> int:
        """Character offset where 0-based line ``n`` starts (len(text) if past the end)."""
        if n <= 0:
            return 0
        cps = self._index()
        k = bisect.bisect_left(cps, n) - 1  # last block starting before line n's newline
        k = max(k, 0)
        pos, line, t = k * _BLOCK, cps[k], self.text
        while line < n:
            j = t.find("\n", pos)
            if j < 0:
                return len(t)
            pos, line = j + 1, line + 1
        return pos


def looks_binary(text: str, bad: int) -> bool:
    """Whether decoded file contents are not text: a NUL in the first 8 KiB (as git and grep
    decide), or more than a third of the characters (of 16 or more) undecodable."""
    return "\x00" in text[:8192] or (len(text) >= 16 and bad * 3 > len(text))
