"""The ``rlms`` baseline: the official RLM package (``pip install rlms``) on the same model.

It runs in a subprocess of this interpreter (``rlms`` comes with the ``bench`` extra), or of
another one given by ``--peer-python`` (a separate venv), fed one task as JSON on stdin.
``rlms`` talks to an OpenAI-compatible HTTP endpoint: an API model spec (``NAME/MODEL`` with a
``base_url``) is passed through; for ``local`` the runner starts a llama.cpp server on the same
GGUF (:mod:`.llama_server`). Other in-process models (``scripted``) cannot be shared with it,
and the baseline is then skipped with that reason.

Fairness: ``rlms`` gets the same question, context, iteration limit and time limit as the RLM;
on the local server also temperature 0 (as the in-process provider) and at most
:data:`RLMS_MAX_TOKENS` tokens per reply (it writes code, so more than the RLM's JSON commands
need; the cap only stops a looping small model from filling the window).
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

RLMS_MAX_TOKENS = 1024
#: seconds the peer process gets past ``--timeout`` before it is killed (rlms checks its own limit between iterations)
PEER_GRACE_S = 60.0
#: sampling for rlms on the local llama.cpp server (``max_tokens`` goes in the body: rlms would
#: rename a sampling ``max_tokens`` to ``max_completion_tokens``, which llama.cpp ignores)
LOCAL_SAMPLING = {"temperature": 0.0, "extra_body": {"max_tokens": RLMS_MAX_TOKENS}}

#: runs inside the peer interpreter: one task in (stdin), one result out (last stdout line).
#: Root iterations are counted by wrapping ``RLM._completion_turn`` (rlms 0.1.3 reports none).
PEER_SCRIPT = r"""
import json, sys, time
job = json.load(sys.stdin)
from rlm import RLM
turns = [0]
counted = {"calls": 0, "input_tokens": 0, "output_tokens": 0}
try:  # count tokens per call, so a run that ends in an exception (timeout) still reports them
    from rlm.clients import openai as _oc
    _track = _oc.OpenAIClient._track_cost
    def _counting_track(self, response, model):
        u = getattr(response, "usage", None)
        counted["calls"] += 1
        counted["input_tokens"] += int(getattr(u, "prompt_tokens", 0) or 0)
        counted["output_tokens"] += int(getattr(u, "completion_tokens", 0) or 0)
        print(json.dumps({"progress": counted}), flush=True)  # read back if the process is killed
        return _track(self, response, model)
    _oc.OpenAIClient._track_cost = _counting_track
except Exception:
    counted = None
class CountingRLM(RLM):
    def _completion_turn(self, *a, **k):
        turns[0] += 1
        return super()._completion_turn(*a, **k)
kw = {"model_name": job["model"]}
if job.get("base_url"): kw["base_url"] = job["base_url"]
if job.get("api_key"): kw["api_key"] = job["api_key"]
if job.get("sampling"): kw["sampling_args"] = job["sampling"]
opts = {"max_iterations": job.get("max_iterations", 20)}
if job.get("timeout_s"): opts["max_timeout"] = job["timeout_s"]
try:
    r = CountingRLM(backend="openai", backend_kwargs=kw, **opts)
except TypeError:
    r = CountingRLM(backend="openai", backend_kwargs=kw, max_iterations=opts["max_iterations"])
t = time.monotonic()
out = {"answer": None, "usage": None, "error": None}
try:
    try:
        res = r.completion(prompt=job["context"], root_prompt=job["question"])
    except TypeError:
        res = r.completion({"context": job["context"], "question": job["question"]})
    usage = getattr(res, "usage_summary", None)
    try:
        usage = usage.to_dict() if hasattr(usage, "to_dict") else (usage if isinstance(usage, dict) else None)
    except Exception:
        usage = None
    out["answer"], out["usage"] = getattr(res, "response", str(res)), usage
except Exception as e:
    out["answer"] = getattr(e, "partial_answer", None)
    out["error"] = (type(e).__name__ + ": " + str(e))[:500]
out["iterations"], out["elapsed_s"], out["counted"] = turns[0], time.monotonic() - t, counted
print(json.dumps(out, default=str))
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
        return False, f"the rlms package is not importable in {where} (pip install 'contextbox[bench]')"
    return True, f"rlms {out.stdout.strip()}"


def is_local(spec: str) -> bool:
    """Whether ``spec`` names the in-process llama.cpp model (``local`` or ``local:PATH.gguf``)."""
    return spec == "local" or spec.startswith("local:")


def endpoint_for(spec: str, providers: list[Any]) -> tuple[dict[str, Any] | None, str]:
    """``(job fields, "")`` for an OpenAI-compatible model spec, else ``(None, reason)``."""
    from ..providers.base import BUILTIN_PROVIDERS

    if is_local(spec) or spec.startswith("scripted:") or "/" not in spec:
        return None, f"rlms needs an OpenAI-compatible HTTP endpoint; the model {spec!r} runs in-process"
    name, model = spec.split("/", 1)
    cfg = next((p for p in providers if p.name == name), None) or BUILTIN_PROVIDERS.get(name)
    if cfg is None or cfg.kind != "openai":
        return None, f"rlms is driven here through OpenAI-compatible endpoints only (not {spec!r})"
    return {"model": model, "base_url": cfg.base_url, "api_key": cfg.api_key()}, ""


def last_progress(stdout: str | bytes | None) -> dict[str, Any] | None:
    """The peer's last ``{"progress": {...token counts}}`` line, if any."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout or ""
    for line in reversed(text.splitlines()):
        if line.startswith('{"progress"'):
            try:
                return json.loads(line)["progress"]
            except (json.JSONDecodeError, KeyError):
                continue
    return None


def run_rlms(job: dict[str, Any], peer_python: str | None, timeout_s: float | None) -> dict[str, Any]:
    """One task through ``rlms``: ``{"answer", "usage", "iterations", "elapsed_s", "error"}``."""
    t = time.monotonic()
    job = {"timeout_s": timeout_s, **job}
    # rlms stops itself at timeout_s (between iterations); the process gets a grace period on top
    limit = None if timeout_s is None else timeout_s + PEER_GRACE_S
    try:
        out = subprocess.run([peer_python or sys.executable, "-c", PEER_SCRIPT], input=json.dumps(job),
                             capture_output=True, text=True, timeout=limit, env=dict(os.environ))
    except subprocess.TimeoutExpired as e:
        wall = time.monotonic() - t
        return {"answer": None, "error": f"killed after {limit}s (rlms' own time limit is checked only between "
                                         f"iterations)", "elapsed_s": wall, "wall_s": wall,
                "counted": last_progress(e.stdout)}
    wall = time.monotonic() - t
    if out.returncode != 0:
        err = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return {"answer": None, "error": err, "elapsed_s": wall, "wall_s": wall}
    try:
        res = json.loads(out.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"answer": None, "error": "no JSON result from the peer", "elapsed_s": wall, "wall_s": wall}
    res["wall_s"] = wall
    res.setdefault("elapsed_s", wall)
    return res
