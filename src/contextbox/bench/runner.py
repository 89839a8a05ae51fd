"""Run suites with every method and append one JSON line per task and method.

Methods: ``rlm`` (this engine), ``direct`` (the same model, one call, the context cut to its
window) and ``rlms`` (the official package on the same model; for ``--model local`` through a
llama.cpp server this runner starts and stops, :mod:`.llama_server`). ``dry_run`` swaps the
model for scripted replies computed from the gold answers, so the harness runs end to end
offline: those figures test the harness, they are not model results.

The direct baseline's window (``--direct-window``): ``start`` keeps the head of the context, as
a client that truncates does; ``random`` keeps a window of the same size at an offset drawn per
task (seeded, starting at a line), so a needle at any depth is inside it with probability
window/context — the head placement would score every needle past the window as a miss. Each
record says which span was kept (``kept_span``); the method is ``direct`` or ``direct-random``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..context import Context
from ..errors import ContextWindowError, ProviderError, UsageError
from ..pricing import cost
from ..providers.base import Provider, estimate_tokens
from ..providers.scripted import ScriptedProvider
from .scoring import format_gold, score
from .tasks import DEFAULT_LENGTHS, Task, check_lengths, format_length, generate

log = logging.getLogger("contextbox")

DRY_RUN_MODEL = "dry-run:scripted"
#: the window assumed for the direct baseline when the provider states none (and for dry runs)
DEFAULT_WINDOW_TOKENS = 32_768
DRY_RUN_WINDOW_TOKENS = 8_192
CHARS_PER_TOKEN = 4.0
DIRECT_SYSTEM = "You answer questions about a document. Reply with the answer only, no explanation."
RESULTS = "results.jsonl"
DIRECT_WINDOWS = ("start", "random")


#: how often the direct baseline cuts its window further after a context-window error
CUT_ATTEMPTS = 6
_OVER = re.compile(r"tokens \((\d+)\) exceed context window of (\d+)")


def cut_factor(message: str, window: int, reserve: int) -> float:
    """How much of the kept text to keep after a window error: in proportion to the overflow when the error
    says how many tokens the prompt had (llama.cpp: "Requested tokens (N) exceed context window of W"), with
    a 5 % margin; else 0.8. (Digits and punctuation — logs — take more tokens per character than prose.)"""
    m = _OVER.search(message)
    if m:
        asked, win = int(m.group(1)), int(m.group(2))
        if asked > 0:
            return max(0.05, min(0.95, (win - reserve) / asked * 0.95))
    return 0.8


@dataclass
class BenchOptions:
    """What ``rlm bench SUITE ...`` asks for."""

    suites: list[str]
    model: str | None = None
    sub_model: str | None = None
    levels: str | None = None
    n: int = 3
    seed: int = 0
    lengths: list[int] | None = None
    baselines: list[str] = field(default_factory=lambda: ["direct", "rlms"])
    rlm: bool = True
    out: Path = Path("bench-results")
    dry_run: bool = False
    peer_python: str | None = None
    window_tokens: int | None = None
    max_iterations: int | None = None
    timeout_s: float | None = 600.0
    data: Path | None = None
    config: str | None = None
    command: str = ""
    #: where the direct baseline's window sits: ``start`` (the head) or ``random`` (a seeded offset)
    direct_window: str = "start"
    #: makes the server ``rlms`` talks to (tests inject a stand-in); default for a local model:
    #: :func:`.llama_server.llama_server` on the same GGUF
    rlms_server: Callable[[], Any] | None = None


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    return f"{platform.system()} {platform.machine()}, {cores} cores{', ' + cpu if cpu else ''}, " \
           f"Python {platform.python_version()}"


def dry_run_rlm_replies(task: Task) -> list[str]:
    """A plausible look-then-answer flow whose answer is the gold answer."""
    if task.kind == "needle":
        look = {"op": "find", "text": str(task.gold)}
    elif task.kind == "name":
        look = {"op": "find", "text": str(task.gold).split()[-1]}
    else:
        look = {"op": "count", "what": "lines"}
    return [json.dumps(look), json.dumps({"op": "final", "answer": format_gold(task.kind, task.gold, task.meta)})]


def dry_run_direct_reply(task: Task, span: tuple[int, int]) -> str:
    """The gold answer when the evidence survived the cut, else a refusal."""
    a, b = span
    inside = a <= task.evidence[0] and task.evidence[1] <= b if task.evidence else b - a >= len(task.context)
    return format_gold(task.kind, task.gold, task.meta) if inside else "The document does not say."


def char_budget(window_tokens: int, reserve_tokens: int) -> int:
    """Characters of context that fit ``window_tokens`` less ``reserve_tokens`` (≈4 characters a token)."""
    return max(0, int((window_tokens - reserve_tokens) * CHARS_PER_TOKEN))


def cut_context(text: str, window_tokens: int, reserve_tokens: int) -> str:
    """The head of ``text`` that fits ``window_tokens`` less ``reserve_tokens``."""
    budget = char_budget(window_tokens, reserve_tokens)
    return text if len(text) <= budget else text[:budget]


def window_span(text: str, budget: int, placement: str, rng: random.Random) -> tuple[int, int]:
    """The ``(start, end)`` of the part of ``text`` the direct baseline keeps: all of it when it fits,
    else ``budget`` characters at the head (``start``) or from a random line start (``random``)."""
    if len(text) <= budget:
        return 0, len(text)
    if placement == "start":
        return 0, budget
    if placement != "random":
        raise UsageError(f"unknown --direct-window {placement!r}; use {' or '.join(DIRECT_WINDOWS)}")
    start = rng.randint(0, len(text) - budget)
    nl = text.find("\n", start, start + 400)
    if start and nl >= 0 and nl + 1 <= len(text) - budget:
        start = nl + 1
    return start, start + budget


class Runner:
    """Runs tasks with the configured methods; ``on_record`` sees every record as it is written."""

    def __init__(self, opts: BenchOptions, on_record: Callable[[dict[str, Any]], None] | None = None):
        self.opts = opts
        self.on_record = on_record
        self.out = Path(opts.out)
        self.out.mkdir(parents=True, exist_ok=True)
        runs_dir = self.out / "runs"
        self.config = Config.load(opts.config, model=opts.model, sub_model=opts.sub_model, levels=opts.levels,
                                  runs_dir=str(runs_dir), max_iterations=opts.max_iterations,
                                  timeout_s=opts.timeout_s)
        if not opts.dry_run and not self.config.model:
            from ..engine import default_model_spec

            self.config.model = default_model_spec(self.config)
        self.model_name = DRY_RUN_MODEL if opts.dry_run else str(self.config.model)
        self.skipped: dict[str, str] = {}
        self._rlm: Any = None
        self._server_wanted = False
        self._server: Any = None
        self._rlms_job: dict[str, Any] | None = None
        self.rlms_endpoint: dict[str, Any] | None = None

    # ------------------------------------------------------------------ models
    def engine(self, provider: Provider | None = None) -> Any:
        """An RLM bound to the configured model (or to ``provider``), writing runs under ``out/runs``."""
        from ..engine import RLM
        from ..stores.jsonl import JsonlRunStore

        store = JsonlRunStore(self.out / "runs")
        if provider is not None:
            sub = provider if self.opts.sub_model is None else None
            return RLM(model=provider, sub_model=sub, config=self.config, store=store)
        if self._rlm is None:
            self._rlm = RLM(config=self.config, store=store)
            load = getattr(self._rlm.root, "load", None)
            if callable(load):
                t = time.monotonic()
                load()
                log.info("bench: model loaded in %.1fs", time.monotonic() - t)
        return self._rlm

    # ------------------------------------------------------------------ methods
    def run_rlm(self, task: Task) -> dict[str, Any]:
        from ..demos.common import read_share

        rlm = self.engine(ScriptedProvider(dry_run_rlm_replies(task), name=DRY_RUN_MODEL)) \
            if self.opts.dry_run else self.engine()
        t = time.monotonic()
        res = rlm.run(task.question, Context.from_value(task.context))
        elapsed = time.monotonic() - t
        u = res.usage.to_dict()
        roles = u["by_role"]
        return {
            "answer": res.answer, "status": res.status, "reason": res.reason, "iterations": res.iterations,
            "tokens_root": roles.get("root", {}).get("total_tokens", 0),
            "tokens_sub": roles.get("sub", {}).get("total_tokens", 0),
            "tokens": u["total"]["total_tokens"], "cost_usd": u["total"]["cost_usd"],
            "estimated": u["total"].get("estimated", False), "elapsed_s": round(elapsed, 3),
            "run_id": res.run_id, "read_share": round(read_share(res.events, len(task.context)), 6),
            "sub_model": rlm.sub.name,
        }

    def run_direct(self, task: Task) -> dict[str, Any]:
        """One call with the context cut to the window; a window error shrinks the cut and retries."""
        if self.opts.dry_run:
            window = self.opts.window_tokens or DRY_RUN_WINDOW_TOKENS
        else:
            provider = self.engine().root
            window = self.opts.window_tokens or provider.context_window or DEFAULT_WINDOW_TOKENS
        answer_tokens = 512 if task.kind == "pairs" else 192
        reserve = answer_tokens + estimate_tokens(DIRECT_SYSTEM + task.question) + 64
        rng = random.Random(f"direct:{self.opts.seed}:{task.id}")
        a, b = window_span(task.context, char_budget(window, reserve), self.opts.direct_window, rng)
        t = time.monotonic()
        status, reason, completion = "answered", None, None
        for _attempt in range(CUT_ATTEMPTS):
            text = task.context[a:b]
            msgs = [{"role": "system", "content": DIRECT_SYSTEM},
                    {"role": "user", "content": f"Document:\n{text}\n\nQuestion: {task.question}\nAnswer:"}]
            try:
                if self.opts.dry_run:
                    provider = ScriptedProvider([dry_run_direct_reply(task, (a, b))], name=DRY_RUN_MODEL)
                completion = interruptible(lambda msgs=msgs, provider=provider: provider.complete(
                    msgs, max_tokens=answer_tokens, temperature=0.0, timeout=self.opts.timeout_s))
                break
            except ContextWindowError as e:
                b = a + int((b - a) * cut_factor(str(e), window, reserve))
                log.info("bench: direct prompt too long (%s); cutting to %d chars", e, b - a)
            except ProviderError as e:
                status, reason = "failed", f"{type(e).__name__}: {e}"
                break
        else:
            status, reason = "failed", f"the context did not fit the window after {CUT_ATTEMPTS} cuts"
        elapsed = time.monotonic() - t
        tin = completion.input_tokens if completion else 0
        tout = completion.output_tokens if completion else 0
        return {
            "answer": completion.text.strip() if completion else None, "status": status, "reason": reason,
            "iterations": 1, "tokens_root": tin + tout, "tokens_sub": 0, "tokens": tin + tout,
            "cost_usd": cost(provider.name, tin, tout, self.config.prices),
            "estimated": bool(completion and completion.estimated), "elapsed_s": round(elapsed, 3),
            "kept_chars": b - a, "kept_span": [a, b], "window": self.opts.direct_window,
            "cut": b - a < len(task.context), "window_tokens": window,
            "read_share": round((b - a) / max(1, len(task.context)), 6),
        }

    def run_rlms(self, task: Task, job: dict[str, Any] | None = None) -> dict[str, Any]:
        """One task through the ``rlms`` package (``job``: the endpoint; default: the started server's)."""
        from .peer import run_rlms

        job = job if job is not None else self._rlms_job
        if job is None:
            raise UsageError("the rlms baseline has no endpoint (its server was not started)")
        res = run_rlms({**job, "context": task.context, "question": task.question,
                        "max_iterations": self.config.limits.max_iterations},
                       self.opts.peer_python, self.opts.timeout_s)
        usage = res.get("usage") if isinstance(res.get("usage"), dict) else {}
        counted = res.get("counted") if isinstance(res.get("counted"), dict) else {}
        # the peer's own per-call count also covers runs that ended in an exception (no usage summary)
        tokens = _sum_tokens(counted) if counted.get("calls") else _sum_tokens(usage)
        answer, err = res.get("answer"), res.get("error")
        failed = bool(err) or answer is None
        return {"answer": answer, "status": "failed" if failed else "answered",
                "reason": err or ("rlms returned no answer" if answer is None else None),
                "iterations": res.get("iterations", 0), "tokens_root": tokens, "tokens_sub": 0, "tokens": tokens,
                "cost_usd": float(usage.get("total_cost", 0) or 0), "estimated": False,
                "elapsed_s": round(float(res.get("elapsed_s") or 0.0), 3),
                "wall_s": round(float(res.get("wall_s") or 0.0), 3), "endpoint_model": job.get("model")}

    # ------------------------------------------------------------------ the run
    def _skip(self, method: str, reason: str) -> None:
        self.skipped[method] = reason
        log.warning("bench: %s baseline skipped: %s", method, reason)

    def methods(self) -> list[tuple[str, Callable[[Task], dict[str, Any]]]]:
        out: list[tuple[str, Callable[[Task], dict[str, Any]]]] = []
        if self.opts.rlm:
            out.append(("rlm", self.run_rlm))
        if "direct" in self.opts.baselines:  # named by placement, so both can share one results folder
            name = "direct" if self.opts.direct_window == "start" else f"direct-{self.opts.direct_window}"
            out.append((name, self.run_direct))
        if "rlms" in self.opts.baselines:
            from .llama_server import SERVER_HINT, server_deps_missing
            from .peer import endpoint_for, is_local, rlms_available

            ok, why = rlms_available(self.opts.peer_python)
            if not ok:
                self._skip("rlms", why)
            elif self.opts.dry_run:
                self._skip("rlms", "dry run: the rlms package is not driven by scripted replies")
            elif self.opts.rlms_server is not None or is_local(self.model_name):
                missing = [] if self.opts.rlms_server is not None else server_deps_missing()
                if missing:
                    self._skip("rlms", f"the llama.cpp server for rlms needs {', '.join(missing)}: {SERVER_HINT}")
                else:
                    self._server_wanted = True
                    out.append(("rlms", self.run_rlms))
            else:
                job, reason = endpoint_for(self.model_name, self.config.providers)
                if job is None:
                    self._skip("rlms", reason)
                else:
                    out.append(("rlms", lambda task, job=job: self.run_rlms(task, job)))
        return out

    def _default_server(self) -> Any:
        """The llama.cpp server on the GGUF the ``local`` model spec names."""
        from ..local_model import ensure_model
        from ..providers.local import DEFAULT_CONTEXT_TOKENS
        from .llama_server import llama_server

        spec = self.model_name
        path = Path(spec.split(":", 1)[1]).expanduser() if spec.startswith("local:") else ensure_model()
        return llama_server(path, n_ctx=DEFAULT_CONTEXT_TOKENS, log_path=self.out / "rlms-server.log")

    def _start_server(self, methods: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Start the server ``rlms`` talks to; without it the baseline is skipped with the reason."""
        from .llama_server import ServerError
        from .peer import LOCAL_SAMPLING

        try:
            self._server = (self.opts.rlms_server or self._default_server)()
            ep = self._server.start()
        except (ServerError, UsageError, OSError) as e:
            self._stop_server()
            self._skip("rlms", f"the model server for rlms did not start: {e}")
            return [m for m in methods if m[0] != "rlms"]
        self._rlms_job = {"model": ep.model, "base_url": ep.base_url, "api_key": ep.api_key,
                          "sampling": LOCAL_SAMPLING}
        self.rlms_endpoint = {"model": ep.model, "base_url": ep.base_url,
                              "started_s": getattr(self._server, "started_s", None)}
        return methods

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def run(self) -> Path:
        """Generate, run, score and append; returns the results file. A server started for ``rlms`` is
        stopped at the end, also on errors, Ctrl-C and SIGTERM."""
        for s in self.opts.suites:  # fail before any model time on an unknown suite or a bad length
            check_lengths(s, self.opts.lengths)
            generate(s, 1, self.opts.seed, self.opts.lengths[:1] if self.opts.lengths else None, self.opts.data)
        if self.opts.direct_window not in DIRECT_WINDOWS:
            raise UsageError(f"unknown --direct-window {self.opts.direct_window!r}; use {' or '.join(DIRECT_WINDOWS)}")
        methods = self.methods()
        results = self.out / RESULTS
        with _sigterm_as_exit():
            try:
                if self._server_wanted:
                    methods = self._start_server(methods)
                self._write_meta(methods)
                for suite in self.opts.suites:
                    tasks = generate(suite, self.opts.n, self.opts.seed, self.opts.lengths, self.opts.data)
                    for name, fn in methods:
                        for task in tasks:
                            rec = self._record(suite, name, task, fn)
                            with results.open("a", encoding="utf-8") as f:
                                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                            if self.on_record:
                                self.on_record(rec)
            finally:
                self._stop_server()
        return results

    def _record(self, suite: str, method: str, task: Task, fn: Callable[[Task], dict[str, Any]]) -> dict[str, Any]:
        t = time.monotonic()
        try:
            r = fn(task)
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - one task's failure is a result, the run goes on
            log.exception("bench: %s %s failed", method, task.id)
            r = {"answer": None, "status": "failed", "reason": f"{type(e).__name__}: {e}", "iterations": 0,
                 "tokens_root": 0, "tokens_sub": 0, "tokens": 0, "cost_usd": 0.0,
                 "elapsed_s": round(time.monotonic() - t, 3)}
        s = score(task.kind, r.get("answer"), task.gold, task.meta)
        return {"suite": suite, "method": method, "model": self.model_name, "dry_run": self.opts.dry_run,
                "task_id": task.id, "length": task.length, "context_chars": len(task.context),
                "depth": task.depth, "kind": task.kind, "question": task.question, "gold": task.gold,
                "evidence": task.evidence, "meta": task.meta, "score": s, "correct": s >= 1.0,
                "seed": self.opts.seed, "ts": time.time(), **r}

    def _write_meta(self, methods: list[tuple[str, Any]]) -> None:
        path = self.out / "meta.json"
        meta = json.loads(path.read_text()) if path.is_file() else {"invocations": []}
        o = asdict(self.opts)
        o["out"], o["data"] = str(o["out"]), str(o["data"]) if o["data"] else None
        o["rlms_server"] = None if self.opts.rlms_server is None else repr(self.opts.rlms_server)
        o["lengths"] = [format_length(x) for x in self.opts.lengths] if self.opts.lengths else None
        meta["invocations"].append({
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "model": self.model_name,
            "command": self.opts.command or "rlm bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
            "methods": [m for m, _ in methods], "skipped": self.skipped, "options": o,
            "lengths": {s: [format_length(x) for x in (self.opts.lengths or DEFAULT_LENGTHS.get(s) or [])]
                        for s in self.opts.suites},
            "direct_window": self.opts.direct_window, "rlms_endpoint": self.rlms_endpoint,
        })
        path.write_text(json.dumps(meta, indent=2, default=str))


def interruptible(fn: Callable[[], Any], poll_s: float = 0.2) -> Any:
    """``fn()`` in a daemon thread, waited for from this one: a Ctrl-C or SIGTERM handler then runs at once,
    even while ``fn`` is inside one long C call (llama.cpp does not come back to Python until its whole reply
    is written, so a signal to a main thread inside it waited minutes). Off the main thread: ``fn()``."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, name="contextbox-direct-call", daemon=True)
    t.start()
    while t.is_alive():
        t.join(poll_s)
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit (so ``finally`` clauses run); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _sum_tokens(usage: Any) -> int:
    """Total tokens from an rlms usage summary of unknown shape."""
    if not isinstance(usage, dict):
        return 0
    num = {k: v for k, v in usage.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if "total_tokens" in num:
        return int(num["total_tokens"])
    parts = [k for k in ("input_tokens", "output_tokens", "prompt_tokens", "completion_tokens",
                         "total_input_tokens", "total_output_tokens") if k in num]
    if parts:
        return int(sum(num[k] for k in parts))
    return sum(_sum_tokens(v) for v in usage.values() if isinstance(v, dict))


def run_bench(opts: BenchOptions, on_record: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run ``opts`` and write the report; returns the output folder."""
    from .report import write_report

    Runner(opts, on_record).run()
    write_report(opts.out)
    return Path(opts.out)
