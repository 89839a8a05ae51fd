"""The generated input file of a bench script: where it goes and that it goes away afterwards."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_file(name: str, directory: str | None = None, keep: bool = False) -> Iterator[Path]:
    """``name`` in ``directory`` (default: a new temp dir). At the end the file is deleted (and the
    temp dir with it) unless ``keep``, which prints where it was kept."""
    tmp = Path(directory or tempfile.mkdtemp(prefix="contextbox-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / name
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            path.unlink(missing_ok=True)
            if not directory:
                shutil.rmtree(tmp, ignore_errors=True)
