"""``pip install contextbox`` from a built wheel works without the source tree.

``python -m build`` makes the wheel from a copy of the project; it is installed with ``--no-deps`` into a
fresh venv whose dependencies come from this venv's site-packages (a .pth line: no download, seconds not
minutes); then the venv's own ``rlm`` runs ``--version`` and a scripted ``ask``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import contextbox

REPO = Path(__file__).resolve().parent.parent


def run(*args, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CONTEXTBOX_MODEL")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, env=env, **kw)


def test_wheel_builds_installs_into_a_fresh_venv_and_runs(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, proj / name)
    shutil.copytree(REPO / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    p = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check", "--outdir", dist, proj)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"contextbox-{contextbox.__version__}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        eps = z.read(f"contextbox-{contextbox.__version__}.dist-info/entry_points.txt").decode()
    assert "contextbox/py.typed" in names and any(n.startswith("contextbox/server/static/") for n in names)
    assert "rlm = contextbox.cli:main" in eps and "[contextbox.providers]" in eps and "openai = " in eps

    venv = tmp_path / "venv"
    p = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert p.returncode == 0, p.stderr
    py = venv / "bin" / "python"
    site = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_contextbox_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # deps, not contextbox
    p = run(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index",
            "--disable-pip-version-check", wheels[0])
    assert p.returncode == 0, p.stderr

    where = run(py, "-c", "import contextbox; print(contextbox.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr  # the wheel's copy, not the checkout
    rlm = venv / "bin" / "rlm"
    p = run(rlm, "--version", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"rlm (contextbox) {contextbox.__version__}", p.stderr

    (tmp_path / "ctx.txt").write_text("one\nthe answer is 42\n")
    (tmp_path / "s.json").write_text(json.dumps([json.dumps({"op": "find", "text": "answer"}),
                                                 json.dumps({"op": "final", "answer": "42"})]))
    p = run(rlm, "ask", "-m", f"scripted:{tmp_path / 's.json'}", "what is the answer?", "-c", tmp_path / "ctx.txt",
            "--json", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["answer"] == "42" and "the answer is 42" in out["steps"][0]["output"]
