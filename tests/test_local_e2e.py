"""One real question, end to end, with the embedded model (llama.cpp on this CPU).

These tests need the ``local`` extra (``make test`` installs it). With CONTEXTBOX_SKIP_LOCAL=1 they
are skipped and reported as skipped — never counted as passing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contextbox import RLM, Config
from contextbox.demos.war_and_peace import QUESTION, make_needle, run_needle

pytestmark = pytest.mark.local_model


def _require_local() -> None:
    if os.environ.get("CONTEXTBOX_SKIP_LOCAL") == "1":
        pytest.skip("CONTEXTBOX_SKIP_LOCAL=1")
    from contextbox.providers.local import local_available

    if not local_available():
        pytest.fail("the embedded model is not available: pip install -e '.[local]' (make test does this)")


def test_needle_in_200k_haystack_exact_code(war_and_peace):
    _require_local()
    text = war_and_peace.read_text(encoding="utf-8")[:200_000]
    rlm = RLM(model="local", config=Config(), levels="l1")
    r = run_needle(rlm, text, seed=11, depth=0.6)
    _, code = make_needle(11)
    assert r["code"] == code
    assert r["answer"] == code, r
    # search, read around hit 1, answer: [aids] hit_turns ends the run there (it took 7 iterations before it)
    assert r["status"] == "answered" and r["iterations"] <= 3


def test_rlm_ask_without_model_or_config_uses_local(tmp_path):
    _require_local()
    ctx = tmp_path / "c.txt"
    ctx.write_text("Nothing here.\nThe secret password to the old library is COBALT-1234.\nThe end.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXTBOX_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config")
    runs = tmp_path / "runs"
    p = subprocess.run([str(Path(sys.executable).with_name("rlm")), "ask", QUESTION, "-c", str(ctx), "--json",
                        "--runs-dir", str(runs), "--max-iterations", "4"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    out = json.loads(p.stdout)
    first = json.loads((runs / f"{out['run_id']}.jsonl").read_text().splitlines()[0])
    assert first["type"] == "run_start" and first["data"]["model"] == "local"
    assert out["answer"] == "COBALT-1234", p.stderr
    assert p.returncode == 0
