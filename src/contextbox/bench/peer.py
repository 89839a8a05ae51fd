"""The ``rlms`` baseline: the official RLM package (``pip install rlms``) on the same endpoint.

It runs in this interpreter when ``rlm`` (from the ``rlms`` distribution) is importable, or in
another interpreter given by ``--peer-python`` (a separate venv), fed one task as JSON on stdin.
``rlms`` talks to an OpenAI-compatible HTTP endpoint, so the model spec must name one
(``NAME/MODEL`` with a ``base_url``); the in-process ``local`` and ``scripted`` models cannot
be shared with it, and the baseline is then skipped with that reason.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger("contextbox")

#: runs inside the peer interpreter: one task in (stdin), one result out (stdout)
PEER_SCRIPT = r"""
import json, sys, time
job = json.load(sys.stdin)
from rlm import RLM
kw = {"model_name": job["model"]}
if job.get("base_url"): kw["base_url"] = job["base_url"]
if job.get("api_key"): kw["api_key"] = job["api_key"]
r = RLM(backend="openai", backend_kwargs=kw, max_iterations=job.get("max_iterations", 20))
t = time.monotonic()
try:
    res = r.completion(prompt=job["context"], root_prompt=job["question"])
except TypeError:
    res = r.completion({"context": job["context"], "question": job["question"]})
usage = getattr(res, "usage_summary", None)
try:
    usage = usage.to_dict() if hasattr(usage, "to_dict") else (usage if isinstance(usage, dict) else str(usage))
except Exception:
    usage = None
print(json.dumps({"answer": getattr(res, "response", str(res)), "usage": usage,
                  "iterations": len(getattr(res, "iterations", []) or []), "elapsed_s": time.monotonic() - t}))
"""


def rlms_available(peer_python: str | None) -> tuple[bool, str]:
    """Whether the ``rlms`` package can run, and a reason when it cannot."""
    python = peer_python or sys.executable
    try:
        out = subprocess.run([python, "-c", "import importlib.metadata as m, rlm; print(m.version('rlms'))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"peer interpreter {python} failed: {e}"
    if out.returncode != 0:
        where = f"--peer-python {peer_python}" if peer_python else "this venv"
        return False, f"the rlms package is not importable in {where} (pip install rlms)"
    return True, f"rlms {out.stdout.strip()}"


def endpoint_for(spec: str, providers: list[Any]) -> tuple[dict[str, Any] | None, str]:
    """``(job fields, "")`` for an OpenAI-compatible model spec, else ``(None, reason)``."""
    from ..providers.base import BUILTIN_PROVIDERS

    if spec == "local" or spec.startswith(("local:", "scripted:")) or "/" not in spec:
        return None, f"rlms needs an OpenAI-compatible HTTP endpoint; the model {spec!r} runs in-process"
    name, model = spec.split("/", 1)
    cfg = next((p for p in providers if p.name == name), None) or BUILTIN_PROVIDERS.get(name)
    if cfg is None or cfg.kind != "openai":
        return None, f"rlms is driven here through OpenAI-compatible endpoints only (not {spec!r})"
    return {"model": model, "base_url": cfg.base_url, "api_key": cfg.api_key()}, ""


def run_rlms(job: dict[str, Any], peer_python: str | None, timeout_s: float | None) -> dict[str, Any]:
    """One task through ``rlms``: ``{"answer", "usage", "iterations", "elapsed_s", "error"}``."""
    t = time.monotonic()
    try:
        out = subprocess.run([peer_python or sys.executable, "-c", PEER_SCRIPT], input=json.dumps(job),
                             capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"answer": None, "error": f"timeout after {timeout_s}s", "elapsed_s": time.monotonic() - t}
    if out.returncode != 0:
        err = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return {"answer": None, "error": err, "elapsed_s": time.monotonic() - t}
    try:
        res = json.loads(out.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"answer": None, "error": "no JSON result from the peer", "elapsed_s": time.monotonic() - t}
    res["elapsed_s"] = time.monotonic() - t
    return res
