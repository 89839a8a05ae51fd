"""A third-party provider package (tests/plugins/contextbox_echo) is pip-installed and used from the CLI.

The package declares ``echo = "contextbox_echo:EchoProvider"`` in the ``contextbox.providers`` entry point
group, exactly as contextbox declares its built-in kinds; nothing registers it in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import rlm

PLUGIN = Path(__file__).parent / "plugins" / "contextbox_echo"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    """The plugin installed with pip into its own folder (put on PYTHONPATH), built from a copy of its source."""
    base = tmp_path_factory.mktemp("plugin")
    src = base / "src"
    shutil.copytree(PLUGIN, src)
    target = base / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "--no-index", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert list(target.glob("contextbox_echo-*.dist-info/entry_points.txt"))
    return str(target)


def with_plugin(plugin_path: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(x for x in (plugin_path, os.environ.get("PYTHONPATH")) if x)}


def test_plugin_provider_answers_from_the_cli(tmp_path, plugin_path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("alpha\nthe secret code is 4711\nomega\n")
    p = rlm("ask", "-m", "echo:secret", "what is the code?", "-c", str(ctx), "--json",
            "--runs-dir", str(tmp_path / "r"), env=with_plugin(plugin_path))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    # the plugin saw the engine's real find output (it answers with the hit line it was sent)
    assert out["answer"] == "echo plugin saw: the secret code is 4711"
    assert [s["op"] for s in out["steps"]] == ["find", "final"]
    log = [json.loads(x) for x in (tmp_path / "r" / f"{out['run_id']}.jsonl").read_text().splitlines()]
    assert log[0]["data"]["model"] == "echo:secret"


def test_plugin_kind_in_a_providers_table_and_in_models(tmp_path, plugin_path):
    (tmp_path / "contextbox.toml").write_text('[[providers]]\nname = "mine"\nkind = "echo"\n')
    ctx = tmp_path / "c.txt"
    ctx.write_text("x\nwhere the river bends\n")
    p = rlm("ask", "q", "-m", "mine/river", "-c", str(ctx), "-q", "--runs-dir", str(tmp_path / "r"),
            env=with_plugin(plugin_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "echo plugin saw: where the river bends\n"
    models = rlm("models", "--json", env=with_plugin(plugin_path), cwd=tmp_path)
    specs = {r["spec"]: r for r in json.loads(models.stdout)["specs"]}
    assert specs["echo:MODEL"]["endpoint"] == "plugin contextbox-echo"


def test_without_the_plugin_the_kind_is_unknown(tmp_path):
    ctx = tmp_path / "c.txt"
    ctx.write_text("x\n")
    p = rlm("ask", "q", "-m", "echo:secret", "-c", str(ctx))
    assert p.returncode == 2 and "unknown model 'echo:secret'" in p.stderr
    (tmp_path / "contextbox.toml").write_text('[[providers]]\nname = "mine"\nkind = "echo"\n')
    p = rlm("config", "show", cwd=tmp_path)
    assert p.returncode == 2 and "installed plugin's kind" in p.stderr and p.stderr.count("\n") == 1
