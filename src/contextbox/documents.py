"""Real documents as context: directory walks that honour ignore files, office formats, URLs.

- A directory is walked with its ``.gitignore`` and ``.rlmignore`` files applied (git's rules,
  through ``pathspec``; each file applies to its folder and below, and inside a git work tree the
  files of the folders above the walked one, up to the top, apply too), version-control folders,
  virtualenvs (any folder holding ``pyvenv.cfg``) and tool caches skipped, binary files skipped.
  A walk that would load more than ``max_files`` files or ``max_bytes`` bytes is refused before
  anything is read (``[context] max_files`` / ``max_mb``).
- PDF, DOCX, PPTX, XLSX, EPUB (and HTML named explicitly or fetched) become text through the
  ``docs`` extra: ``pypdf`` for PDFs (one document per page, ``report.pdf#page=3``, so every
  page keeps its offset in the context) and ``markitdown`` for the rest.
- ``http://`` and ``https://`` sources are fetched with ``httpx``.

Everything that cannot be used is a :class:`~contextbox.errors.ContextError` (a usage error:
exit 2 in the CLI) with one line saying why and what to do.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from .errors import ContextError

log = logging.getLogger("contextbox")

#: folders never walked into (besides any folder holding ``pyvenv.cfg``, i.e. a virtualenv)
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".nox",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"})
IGNORE_FILES = (".gitignore", ".rlmignore")
DEFAULT_EXCLUDES = ("*.pyc", "*.pyo")
#: loads of more files than this report progress
PROGRESS_MIN_FILES = 2000
PROGRESS_EVERY = 1000
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_MB = 256.0
#: bytes read to decide whether a file is binary (a NUL byte in them)
SNIFF_BYTES = 8192
#: formats converted to text (the ``docs`` extra); HTML only when named explicitly or fetched
DOC_SUFFIXES = frozenset({".pdf", ".docx", ".pptx", ".xlsx", ".epub"})
ZIP_SUFFIXES = frozenset({".docx", ".pptx", ".xlsx", ".epub"})  # office formats are zip containers
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
DOCS_EXTRA = "pip install 'contextbox[docs]'"
URL_TIMEOUT_S = 30.0

Progress = Callable[[int, int], None]


@dataclass
class LoadLimits:
    """How much one directory walk may load (``[context]`` in the config)."""

    max_files: int | None = DEFAULT_MAX_FILES
    max_bytes: int | None = int(DEFAULT_MAX_MB * 1024 * 1024)


@dataclass
class Loaded:
    """Documents read from one source, and warnings about what was skipped."""

    docs: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_bytes: int = 0


def is_url(src: Any) -> bool:
    return isinstance(src, str) and src.lower().startswith(("http://", "https://"))


# ------------------------------------------------------------------ directory walk
class _Ignores:
    """The ignore files that apply on the way down, outermost first: (base, prefix, spec). A file's path
    relative to the ignore file's folder is ``prefix`` + its path below ``base`` (``base`` is relative to
    the walk's root; ``prefix`` is the root's path below an ignore file in a folder above the root)."""

    def __init__(self, root: Path) -> None:
        self.by_dir: dict[str, list[tuple[str, str, Any]]] = {}
        self.above = self._above(root)

    @staticmethod
    def _read(f: Path) -> Any:
        import pathspec

        try:
            return pathspec.GitIgnoreSpec.from_lines(f.read_text(encoding="utf-8", errors="replace").splitlines())
        except (OSError, ValueError) as e:
            log.warning("ignored %s: %s", f, e)
            return None

    def _above(self, root: Path) -> list[tuple[str, str, Any]]:
        """Ignore files of the folders above ``root`` up to its git work tree's top (none outside one)."""
        root = root.resolve()
        if (root / ".git").exists():  # the top of a work tree: nothing above applies
            return []
        chain = []
        for anc in root.parents:
            chain.append(anc)
            if (anc / ".git").exists():
                break
        else:
            return []
        import pathspec

        out = []
        for anc in reversed(chain):
            parts = root.relative_to(anc).parts
            prefix = "/".join(parts) + "/"
            dirs = ["/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1)]
            for name in IGNORE_FILES:
                if (anc / name).is_file() and (spec := self._read(anc / name)) is not None:
                    # a rule that ignores the named folder (or a folder on the way to it) is overridden by naming it
                    kept = [p for p in spec.patterns
                            if not (p.include and any(p.match_file(d) is not None for d in dirs))]
                    out.append(("", prefix, pathspec.GitIgnoreSpec(kept)))
        return out

    def enter(self, rel_dir: str, abs_dir: Path, parent: str | None) -> None:
        specs = list(self.by_dir.get(parent, [])) if parent is not None else list(self.above)
        for name in IGNORE_FILES:
            f = abs_dir / name
            if f.is_file() and (spec := self._read(f)) is not None:
                specs.append((rel_dir, "", spec))
        self.by_dir[rel_dir] = specs

    def ignored(self, rel_dir: str, rel: str, is_dir: bool) -> bool:
        result = None
        for base, prefix, spec in self.by_dir.get(rel_dir, []):
            sub = prefix + (rel[len(base) + 1:] if base else rel)
            r = spec.check_file(sub + "/" if is_dir else sub)
            if r.include is not None:
                result = r.include
        return bool(result)


def dir_excluded(rel: str, name: str, globs: Sequence[str]) -> bool:
    """Whether a folder matches an exclude glob: by its name at any depth (``node_modules``),
    by its path (``build/cache``), or as the folder of a files glob (``build/*``)."""
    for g in globs:
        bare = g.rstrip("/")
        if fnmatch(name, bare) or fnmatch(rel, bare) or fnmatch(rel + "/_", g):
            return True
    return False


def _is_venv(d: Path) -> bool:
    return (d / "pyvenv.cfg").is_file()


def walk(root: Path, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
         *, limits: LoadLimits | None = None) -> list[tuple[Path, int]]:
    """The files of ``root`` to load, with their sizes, in a stable order. Refuses a too-big load."""
    limits = limits or LoadLimits()
    excl = list(DEFAULT_EXCLUDES) + list(exclude or [])
    ignores = _Ignores(root)
    out: list[tuple[Path, int]] = []
    total = 0
    parent_of: dict[str, str | None] = {"": None}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel_dir = "" if d == root else d.relative_to(root).as_posix()
        ignores.enter(rel_dir, d, parent_of.get(rel_dir))
        keep = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in SKIP_DIRS or _is_venv(d / name) or ignores.ignored(rel_dir, rel, True):
                log.debug("skipped folder %s", d / name)
                continue
            if dir_excluded(rel, name, excl):  # --exclude names folders at any depth; their trees are not walked
                continue
            keep.append(name)
            parent_of[rel] = rel_dir
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in IGNORE_FILES or ignores.ignored(rel_dir, rel, False):
                continue
            if include and not any(fnmatch(rel, g) or fnmatch(name, g) for g in include):
                continue
            if any(fnmatch(rel, g) or fnmatch(name, g) for g in excl):
                continue
            f = d / name
            try:  # stat only: a FIFO or a device is skipped without being opened
                st = os.stat(f)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                from .context import file_kind

                log.info("skipped %s: %s", f, file_kind(st.st_mode))
                continue
            out.append((f, st.st_size))
            total += st.st_size
    _check_limits(root, len(out), total, limits)
    return out


def _check_limits(root: Path, n: int, total: int, limits: LoadLimits) -> None:
    hint = ("narrow it with --include/--exclude or a .rlmignore file, or raise the limit in the [context] "
            "section of contextbox.toml")
    if limits.max_files is not None and n > limits.max_files:
        raise ContextError(f"refusing to load {n:,} files from {root} (limit [context] max_files = "
                           f"{limits.max_files:,}): {hint}")
    if limits.max_bytes is not None and total > limits.max_bytes:
        raise ContextError(f"refusing to load {total / 2**20:,.1f} MB from {root} (limit [context] max_mb = "
                           f"{limits.max_bytes / 2**20:,.0f}): {hint}")


def looks_binary(path: Path) -> bool:
    """A NUL byte among the first bytes (git's test). Unreadable files count as binary."""
    try:
        with open(path, "rb") as f:
            return b"\x00" in f.read(SNIFF_BYTES)
    except OSError:
        return True


def load_directory(root: Path, include: Sequence[str] | None, exclude: Sequence[str] | None, *,
                   full_paths: bool, limits: LoadLimits | None = None, progress: Progress | None = None) -> Loaded:
    """Every usable file of ``root``: text files as they are, documents converted, binaries skipped."""
    from .context import read_text_file

    files = walk(root, include, exclude, limits=limits)
    if not files:
        raise ContextError(f"directory {root} holds no files matching the include/exclude globs, .gitignore "
                           "and .rlmignore")
    out = Loaded()
    report = progress if progress is not None and len(files) > PROGRESS_MIN_FILES else None
    have_docs = docs_available()
    for i, (f, _size) in enumerate(files, 1):
        name = str(f) if full_paths else f.relative_to(root).as_posix()
        suffix = f.suffix.lower()
        if suffix in DOC_SUFFIXES:
            if not have_docs:
                out.warnings.append(f"skipped {f}: converting {suffix} files needs the docs extra ({DOCS_EXTRA})")
            else:
                try:
                    out.docs.extend(convert_bytes(f.read_bytes(), suffix, name))
                except (ContextError, OSError) as e:
                    out.warnings.append(f"skipped {f}: {e}")
        elif looks_binary(f):  # sniffed before the whole file is read
            out.warnings.append(f"skipped binary file {f}")
        else:
            text, bad = read_text_file(f)
            if text_is_binary(text, bad):
                out.warnings.append(f"skipped binary file {f}")
            else:
                out.docs.append((name, text))
                out.bad_bytes += bad
        if report and (i % PROGRESS_EVERY == 0 or i == len(files)):
            report(i, len(files))
    return out


# ------------------------------------------------------------------ conversion
def docs_available() -> bool:
    """Whether the docs extra is installed (found, not imported: markitdown's import is slow)."""
    from importlib.util import find_spec

    return find_spec("markitdown") is not None and find_spec("pypdf") is not None


def _need(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ContextError(f"reading {what} needs the docs extra: {DOCS_EXTRA}") from None


def pdf_pages(data: bytes, name: str) -> list[tuple[str, str]]:
    """One document per page with text: (``name#page=N``, text), N from 1."""
    pypdf = _need("pypdf", f"the PDF {name}")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its repair notes are not the user's business
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ContextError(f"{name} is an encrypted PDF; decrypt it first (e.g. qpdf --decrypt)")
        pages = [(f"{name}#page={i}", (p.extract_text() or "").strip() + "\n") for i, p in enumerate(reader.pages, 1)]
    except ContextError:
        raise
    except Exception as e:  # noqa: BLE001 - pypdf raises many kinds on broken files
        raise ContextError(f"{name} is not a readable PDF: {type(e).__name__}: {e}") from None
    pages = [(n, t) for n, t in pages if t.strip()]
    if not pages:
        raise ContextError(f"{name} has no text layer (a scanned PDF?); run OCR on it first (e.g. ocrmypdf)")
    return pages


def markitdown_text(data: bytes, suffix: str, name: str) -> str:
    md = _need("markitdown", f"{suffix} files like {name}")
    try:
        res = md.MarkItDown(enable_plugins=False).convert_stream(io.BytesIO(data),
                                                                 stream_info=md.StreamInfo(extension=suffix))
    except Exception as e:  # noqa: BLE001 - converters raise many kinds on broken files
        why = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:300]
        raise ContextError(f"cannot convert {name} to text: {type(e).__name__}: {why}") from None
    text = (res.text_content or "").strip()
    if not text:
        raise ContextError(f"{name} holds no text")
    return text + "\n"


def convert_bytes(data: bytes, suffix: str, name: str) -> list[tuple[str, str]]:
    """A document's text as (path, text) documents: pages for a PDF, one document otherwise."""
    if suffix == ".pdf" or data[:5] == b"%PDF-":
        return pdf_pages(data, name)
    if suffix in ZIP_SUFFIXES:
        import zipfile

        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise ContextError(f"cannot convert {name} to text: it is not a {suffix[1:].upper()} file (no zip container)")
    return [(name, markitdown_text(data, suffix, name))]


def load_file(path: Path, name: str) -> Loaded:
    """One explicitly named file: converted when it is a document, refused when it is binary."""
    from .context import read_text_file

    suffix = path.suffix.lower()
    if suffix in DOC_SUFFIXES or suffix in HTML_SUFFIXES and docs_available():
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ContextError(f"cannot read context file {name}: {e.strerror or e}") from None
        return Loaded(convert_bytes(data, suffix, name))
    if looks_binary(path):
        with open(path, "rb") as f:
            head = f.read(5)
        if head == b"%PDF-":
            return Loaded(pdf_pages(path.read_bytes(), name))
        raise _binary(name)
    text, bad = read_text_file(path)
    if text_is_binary(text, bad):
        raise _binary(name)
    return Loaded([(name, text)], bad_bytes=bad)


def _binary(name: str) -> ContextError:
    return ContextError(f"{name} is a binary file (NUL or undecodable bytes), not text or a document contextbox "
                        "converts (PDF, DOCX, PPTX, XLSX, EPUB, HTML): convert it to text first")


def text_is_binary(text: str, bad: int) -> bool:
    """:func:`contextbox.context.looks_binary` of decoded contents (NULs, or a third undecodable)."""
    from .context import looks_binary as decoded_looks_binary

    return decoded_looks_binary(text, bad)


# ------------------------------------------------------------------ URLs
def fetch_url(url: str, *, max_bytes: int | None = int(DEFAULT_MAX_MB * 1024 * 1024),
              timeout_s: float = URL_TIMEOUT_S) -> Loaded:
    """GET ``url`` (redirects followed) and turn the body into documents by its content type.
    A body over ``max_bytes`` (None: no limit) is refused."""
    import httpx

    limit = max_bytes
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s,
                          headers={"User-Agent": "contextbox"}) as r:
            if r.status_code >= 400:
                raise ContextError(f"cannot fetch {url}: HTTP {r.status_code} {r.reason_phrase}")
            chunks, n = [], 0
            for chunk in r.iter_bytes():
                n += len(chunk)
                if limit is not None and n > limit:
                    raise ContextError(f"refusing to fetch more than {limit / 2**20:,.0f} MB from {url} "
                                       "(limit [context] max_mb)")
                chunks.append(chunk)
            ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
            charset = r.charset_encoding
    except httpx.InvalidURL as e:
        raise ContextError(f"bad URL {url}: {e}") from None
    except httpx.HTTPError as e:
        raise ContextError(f"cannot fetch {url}: {type(e).__name__}: {e}") from None
    data = b"".join(chunks)
    path = url.split("?", 1)[0].split("#", 1)[0]
    suffix = Path(path).suffix.lower()
    if ctype == "application/pdf" or data[:5] == b"%PDF-":
        return Loaded(pdf_pages(data, url))
    if ctype in ("text/html", "application/xhtml+xml") or (not ctype and suffix in HTML_SUFFIXES):
        if docs_available():
            return Loaded([(url, markitdown_text(data, ".html", url))])
    elif suffix in DOC_SUFFIXES or ctype.startswith("application/vnd.openxmlformats"):
        return Loaded(convert_bytes(data, suffix or ".docx", url))
    elif b"\x00" in data[:SNIFF_BYTES]:
        raise ContextError(f"{url} is binary ({ctype or 'no content type'}), not text or a document contextbox "
                           "converts")
    from .context import decode_bytes

    try:
        text, bad = (data.decode(charset), 0) if charset and charset.lower() not in ("utf-8", "utf8") \
            else decode_bytes(data)
    except (LookupError, UnicodeDecodeError):
        text, bad = decode_bytes(data)
    return Loaded([(url, text)], bad_bytes=bad)
