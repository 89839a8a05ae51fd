"""The ``rlm`` command line. Rich output lives here only."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from .config import Config
from .context import Context
from .errors import ContextboxError, UsageError
from .pricing import format_cost
from .types import Event

EXIT_OK, EXIT_NO_ANSWER, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="rlm", description="Recursive Language Models: ask questions about huge contexts.")
    p.add_argument("--version", action="version", version=f"rlm (contextbox) {__version__}",
                   help="print the version and exit")
    p.add_argument("--config", metavar="FILE",
                   help="config file (default: ./contextbox.toml, then $XDG_CONFIG_HOME/contextbox/config.toml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    ask = sub.add_parser("ask", help="answer a question about a context")
    ask.add_argument("question", metavar="QUESTION", help="the question (options may come before or after it)")
    ask.add_argument("-c", "--context", action="append", default=[], metavar="PATH",
                     help="a file, a directory, an http(s) URL, or - for stdin (repeatable); PDF, DOCX, … "
                          "are converted with the docs extra")
    ask.add_argument("--include", action="append", metavar="GLOB", help="only these files of a directory")
    ask.add_argument("--exclude", action="append", metavar="GLOB", help="skip these files of a directory")
    ask.add_argument("-m", "--model", metavar="MODEL",
                     help="root model: NAME/MODEL, a bare id (gpt-4o-mini), an alias, local, local:PATH.gguf, "
                          "scripted:PATH or a plugin's KIND:MODEL (see 'rlm models')")
    ask.add_argument("--sub-model", metavar="MODEL", help="sub-model for delegation (default: the root model)")
    ask.add_argument("--levels", metavar="LEVELS", help="allowed levels, e.g. l1 or l1,l2,l4 (default from config: l1)")
    ask.add_argument("--system", metavar="TEXT", help="extra instructions for the root model, added to its system "
                                                      "prompt (config: system)")
    ask.add_argument("--max-iterations", type=_positive_int, metavar="N", help="stop after N model turns")
    ask.add_argument("--timeout", type=float, dest="timeout_s", metavar="SECONDS",
                     help="stop the run after this long (default 1800; inf = no limit)")
    ask.add_argument("--max-tokens", type=_positive_int, dest="max_total_tokens", metavar="N",
                     help="stop when the run has used this many tokens")
    ask.add_argument("--max-cost", type=float, dest="max_cost_usd", metavar="USD",
                     help="never start a call that could take the run past USD (default 5 when every model has a "
                          "known price; inf = no limit)")
    ask.add_argument("--json", action="store_true", help="print one JSON object instead of the answer")
    ask.add_argument("--runs-dir", metavar="DIR", help="where run logs go (default $XDG_DATA_HOME/contextbox/runs)")
    ask.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    cfg = sub.add_parser("config", help="show the effective configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    show = cfg_sub.add_parser("show", help="print the effective config, secrets masked")
    show.add_argument("--json", action="store_true", help="print one JSON object")

    runs = sub.add_parser("runs", help="list and show recorded runs")
    runs.add_argument("--runs-dir", metavar="DIR", help="the runs folder (default from config)")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=_Parser)
    rl = runs_sub.add_parser("list", help="recent runs")
    rl.add_argument("-n", type=_positive_int, default=20, metavar="N", help="at most N runs (default 20)")
    rl.add_argument("-q", "--query", metavar="TEXT", help="only runs whose question or answer contains TEXT")
    rl.add_argument("-m", "--model", metavar="MODEL", help="only runs of this model (part of a spec, or an alias)")
    rl.add_argument("--status", metavar="STATUS", help="only runs with this status (answered, failed, …)")
    rl.add_argument("--json", action="store_true", help="print a JSON list")
    rl.add_argument("--runs-dir", dest="runs_dir_sub", metavar="DIR", help="the runs folder (default from config)")
    rs = runs_sub.add_parser("show", help="one run, event by event")
    rs.add_argument("run_id", metavar="RUN", help="a run id, a unique prefix of one, or 'latest'")
    rs.add_argument("--json", action="store_true", help="the raw JSONL events")
    rs.add_argument("--runs-dir", dest="runs_dir_sub", metavar="DIR", help="the runs folder (default from config)")
    rx = runs_sub.add_parser("export", help="one run as JSON lines (one event a line)")
    rx.add_argument("run_id", metavar="RUN", help="a run id, a unique prefix of one, or 'latest'")
    rx.add_argument("--runs-dir", dest="runs_dir_sub", metavar="DIR", help="the runs folder (default from config)")

    srv = sub.add_parser("serve", help="the HTTP API, the OpenAI-compatible endpoint and the /visualize page")
    srv.add_argument("--host", metavar="ADDRESS", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, metavar="PORT", help="port (default 8765)")
    srv.add_argument("--token", metavar="TOKEN",
                     help="require 'Authorization: Bearer TOKEN' (default: $CONTEXTBOX_TOKEN)")
    srv.add_argument("--root", action="append", metavar="DIR",
                     help="a folder whose files runs may name as context_path (repeatable)")
    srv.add_argument("--db", metavar="FILE", help="the SQLite run store (default <runs_dir>/runs.sqlite)")
    srv.add_argument("--max-concurrent-runs", type=_positive_int, metavar="N",
                     help="runs executing at once (default 4; more wait in a queue)")
    srv.add_argument("--max-queued-runs", type=int, metavar="N",
                     help="runs waiting beyond --max-concurrent-runs (default 1000)")
    srv.add_argument("--max-upload-mb", type=float, metavar="MB", help="largest uploaded context (default 64)")
    srv.add_argument("-m", "--model", metavar="MODEL", help="default root model for runs that name none")
    srv.add_argument("--sub-model", metavar="MODEL", help="default sub-model for delegation")
    srv.add_argument("--levels", metavar="LEVELS", help="default levels, e.g. l1,l4")
    srv.add_argument("--runs-dir", metavar="DIR", help="the runs folder (default from config)")
    srv.add_argument("--engine", choices=["local", "ray"], default="local",
                     help="run on this process's threads (default) or on Ray actors, as rlm batch --engine ray")
    srv.add_argument("--address", metavar="ADDRESS", help="Ray cluster address (default: start a local Ray)")
    srv.add_argument("--ray-actors", type=_positive_int, metavar="N",
                     help="Ray worker processes (default: the cluster's CPUs)")

    model = sub.add_parser("model", help="the embedded local model")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", parser_class=_Parser)
    model_sub.add_parser("info", help="path, size and hash state of the local model")
    model_sub.add_parser("prepare", help="assemble and verify the local model now")

    from .demos import add_parser as add_demo_parser

    add_demo_parser(sub)

    from .bench.cli import add_parser as add_bench_parser
    from .cli_chat import add_parser as add_chat_parser
    from .cli_mcp import add_parser as add_mcp_parser
    from .cli_models import add_parsers as add_model_parsers

    add_bench_parser(sub, _positive_int)
    from .cli_batch import add_parser as add_batch_parser

    add_batch_parser(sub, _positive_int)
    add_chat_parser(sub, _positive_int)
    add_mcp_parser(sub)
    add_model_parsers(sub, _Parser)
    _global_options_everywhere(p)
    return p


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``--config`` and ``-v`` come after the sub-command too (``rlm ask q --config f``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                if "--config" not in sp._option_string_actions:
                    sp.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                                    help="config file (as before the sub-command)")
                if "-v" not in sp._option_string_actions:
                    sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                    help="debug logging on stderr")
                _global_options_everywhere(sp)


# ---------------------------------------------------------------------- progress
#: in plain (non-terminal) output, a running batch prints its progress at most this often
PLAIN_PROGRESS_EVERY_S = 10.0
STOP_CLOSE_WAIT_S = 3.0  # after a second Ctrl-C, how long the cancelled run may take to end before the exit


class Progress:
    """Live progress on stderr: a rich status line on a terminal, plain lines otherwise.

    The counters cover the whole call tree: root and child model calls (``lm_response``)
    and sub-calls (``sub_call``), their tokens and cost (``unknown`` once a call's price is).
    """

    def __init__(self, quiet: bool):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self.status = self.console.status("starting…") if self.live else None
        self.t0 = time.monotonic()
        self.tokens = 0
        self.cost_usd = 0.0
        self.cost_unknown = False
        self.sub_calls = 0
        #: running batches: (path, batch id) -> (op, done, total)
        self.batches: dict[tuple[str, str], tuple[str, int, int]] = {}
        self._printed: dict[tuple[str, str], float] = {}
        self.iteration = 0
        self.max_iter = 0
        self.last = ""

    def __enter__(self) -> Progress:
        if self.status:
            self.status.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.status:
            self.status.stop()

    def line(self) -> str:
        """The status line: iteration, last step, running batches, sub-calls, tokens, cost, time."""
        parts = [f"iter {self.iteration}/{self.max_iter}"]
        if self.last:
            parts.append(self.last[:70])
        for op, done, total in self.batches.values():
            what = "child runs" if op == "rlm_query_batched" else "sub-calls"
            parts.append(f"{op} {done:,}/{total:,} {what}")
        if self.sub_calls:
            parts.append(f"{self.sub_calls:,} sub-call{'s' if self.sub_calls != 1 else ''}")
        parts.append(f"{self.tokens:,} tokens")
        parts.append("cost unknown" if self.cost_unknown else format_cost(self.cost_usd))
        parts.append(f"{time.monotonic() - self.t0:.1f}s")
        return " · ".join(parts)

    def _count(self, d: dict[str, Any]) -> None:
        self.tokens += int(d.get("input_tokens") or 0) + int(d.get("output_tokens") or 0)
        if "cost_usd" in d and d["cost_usd"] is None:
            self.cost_unknown = True
        else:
            self.cost_usd += float(d.get("cost_usd") or 0.0)

    def _print(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg, markup=False)

    def on_event(self, ev: Event) -> None:
        d = ev.data
        indent = "  " * ev.path.count(".")
        if ev.type == "run_start" and ev.path == "0":
            self.max_iter = d["limits"]["max_iterations"]
            self._print(f"run {ev.run_id} · model {d['model']} · levels {','.join(d['levels'])} · "
                        f"context {d['context']['chars']:,} chars")
        elif ev.type == "iteration_start":
            if ev.path == "0":
                self.iteration = d["iteration"]
        elif ev.type == "lm_response":
            self._count(d)
            self.last = "model replied"
        elif ev.type == "sub_call":
            self._count(d)
            self.sub_calls += 1
        elif ev.type == "batch_progress":
            key = (ev.path, str(d.get("batch")))
            done, total = int(d.get("done") or 0), int(d.get("total") or 0)
            if done >= total:
                self.batches.pop(key, None)
                self._printed.pop(key, None)
            else:
                self.batches[key] = (str(d.get("op") or "batch"), done, total)
                if not self.live and time.monotonic() - self._printed.setdefault(key, time.monotonic()) \
                        >= PLAIN_PROGRESS_EVERY_S:
                    self._printed[key] = time.monotonic()
                    self._print(f"{indent}{d.get('op')}: {done:,}/{total:,} done")
        elif ev.type == "action_end":
            self.last = f"{d['op']}" + (" (error)" if d.get("error") else "")
            first = (d.get("output") or "").split("\n", 1)[0][:100]
            self._print(f"{indent}[{d['iteration']}] {d['level']} {d['op']}: {first}")
        elif ev.type in ("refused", "retry", "failover", "warning"):
            self._print(f"{indent}{ev.type}: {d.get('message') or d.get('error') or d}")
        elif ev.type == "error":
            self._print(f"{indent}{'error' if d.get('fatal') else 'model error'}: {d['message']}")
        if self.status:
            self.status.update(self.line())


# ---------------------------------------------------------------------- commands
def _run_and_report(rlm: Any, question: str, ctx: Context, args: argparse.Namespace) -> int:
    from .cli_interrupt import CtrlC

    cancel = threading.Event()
    events: list[Event] = []
    presses = CtrlC(cancel, lambda: events[0].run_id if events else None, getattr(rlm, "store", None),
                    STOP_CLOSE_WAIT_S)
    old = presses.start()  # Ctrl-C once cancels the run, twice stops the process (130); see cli_interrupt
    ours = old is signal.default_int_handler
    stream = None
    try:
        stream = rlm.stream(question, ctx, cancel=cancel)
        with Progress(getattr(args, "quiet", False)) as prog:
            for ev in stream:
                events.append(ev)
                prog.on_event(ev)
    finally:
        # the run is over and recorded: a Ctrl-C while the report prints ends the process at once (130)
        signal.signal(signal.SIGINT, _exit_130 if ours else old)
        presses.stop()
    try:
        return _report(stream.result, events, args)
    finally:  # and while the interpreter shuts down (Python's own handler is gone then) it is ignored
        if ours:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _report(res: Any, events: list[Event], args: argparse.Namespace) -> int:
    """Print the answer (stdout, final answers only), the outcome and the summary; the exit code."""
    assert res is not None
    res.events = events
    if args.json:
        print(json.dumps(res.to_dict(steps=True), ensure_ascii=False, indent=2))
    else:
        if res.status == "answered":  # stdout holds a final answer only
            print(res.answer if res.answer is not None else "")
        else:
            sys.stderr.write(f"rlm: run ended without an answer: {res.status}"
                             + (f" ({res.reason})" if res.reason else "") + "\n")
            if res.answer:
                sys.stderr.write(f"rlm: partial answer (not final): {res.answer}\n")
    if not getattr(args, "quiet", False):
        u = res.usage.total
        cost = format_cost(u.cost_usd)
        if u.cost_usd is None:
            cost = f"cost unknown ({u.cost_unknown_calls} call(s) of a model with no known price)"
        sys.stderr.write(f"{res.status} · {res.iterations} iteration(s) · {u.total_tokens:,} tokens"
                         f"{' (estimated)' if u.estimated else ''} · {cost} · "
                         f"{res.elapsed_s:.1f}s · run {res.run_id}\n")
    if res.status == "cancelled":
        return 130
    return EXIT_OK if res.status == "answered" else EXIT_NO_ANSWER


def _exit_130(signum: int, frame: Any) -> None:
    import os

    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


def _store_paths(config: Config, runs_dir: str | None) -> tuple[Path, Path]:
    """(the JSONL runs directory, the SQLite database) for ``--runs-dir`` or the config."""
    from .stores.sqlite import default_db_path

    root = Path(runs_dir).expanduser() if runs_dir else config.runs_dir
    db = default_db_path(root) if runs_dir or not config.server.db else Path(config.server.db).expanduser()
    return root, db


def _store(config: Config, runs_dir: str | None) -> Any:
    """The JSONL run log and the SQLite run store (the one ``rlm serve`` uses), kept in step."""
    from .stores.sqlite import default_store

    return default_store(config, runs_dir)


def cmd_ask(args: argparse.Namespace) -> int:
    from .engine import RLM

    config = Config.load(args.config, model=args.model, sub_model=args.sub_model, levels=args.levels,
                         runs_dir=args.runs_dir, max_iterations=args.max_iterations, timeout_s=args.timeout_s,
                         max_total_tokens=args.max_total_tokens, max_cost_usd=args.max_cost_usd, system=args.system)
    if not args.context:
        raise UsageError("no context given; pass -c PATH (a file, a directory, or - for stdin)")
    if not args.question.strip():
        raise UsageError("the question is empty")
    ctx = Context.load(args.context, include=args.include, exclude=args.exclude, **config.context.load_kwargs(),
                       progress=None if args.quiet else _load_progress)
    if not ctx.text.strip():
        raise UsageError(f"the context is empty ({', '.join(args.context)} hold(s) no text): nothing to ask about")
    root, _ = _store_paths(config, None)
    if root.exists() and not root.is_dir():  # before the model is resolved: this error names the flag
        raise UsageError(f"the runs directory {root} is not a directory (--runs-dir, runs_dir or $CONTEXTBOX_RUNS_DIR)")
    rlm = RLM(config=config)
    from .providers.openai_compat import missing_key

    for prov in (rlm.root, rlm.sub) if "l4" in rlm.levels else (rlm.root,):
        if (msg := missing_key(prov)) is not None:  # before anything is sent or recorded: exit 2, one line
            raise UsageError(msg)
    rlm.store = _store(config, None)
    rlm.store.mark_interrupted()  # runs whose process died (kill -9) are no longer shown running
    return _run_and_report(rlm, args.question, ctx, args)


def _load_progress(done: int, total: int) -> None:
    sys.stderr.write(f"rlm: loading files: {done:,}/{total:,}\n")


def cmd_config(args: argparse.Namespace) -> int:
    import os

    from .config_show import render

    config = Config.load(args.config)
    config.server.token = os.environ.get("CONTEXTBOX_TOKEN") or config.server.token  # as rlm serve takes it
    if getattr(args, "json", False):
        print(json.dumps(config.to_dict(mask=True), indent=2, default=str))
        return EXIT_OK
    sys.stdout.write(render(config))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    runs_dir = getattr(args, "runs_dir_sub", None) or args.runs_dir
    root, db = _store_paths(config, runs_dir)
    if not root.exists() and not db.exists():  # nothing recorded there: read, never create
        if args.runs_command in ("show", "export"):
            raise UsageError(f"no run {args.run_id!r} in {root} (no runs recorded there); see 'rlm runs list'")
        print("[]" if getattr(args, "json", False) else f"no runs in {root}")
        return EXIT_OK
    store = _store(config, runs_dir)
    store.mark_interrupted()
    if args.runs_command == "list" or args.runs_command is None:
        rows = _list_runs(store, args)
        if getattr(args, "json", False):
            print(json.dumps(rows, indent=2, default=str))
            return EXIT_OK
        if not rows:
            print(f"no runs in {store.root}")
            return EXIT_OK
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.get("started") or 0))
            q = (r.get("question") or "")[:50]
            ans = (r.get("answer") or "")[:40].replace("\n", " ")
            if ans and r.get("status") != "answered":
                ans = "partial: " + ans
            sess = f" session={r['session_id']}" if r.get("session_id") else ""
            print(f"{r['run_id']}  {when}  {r['status']:<15} it={r.get('iterations') or '-':<3} "
                  f"tok={r.get('tokens') or '-':<7} cost={_row_cost(r):<9} {q!r} → {ans!r}{sess}")
        return EXIT_OK
    if args.run_id == "latest":
        latest = store.list_runs(1)
        if not latest:
            raise UsageError(f"no runs in {store.root} yet")
        args.run_id = latest[0]["run_id"]
    if args.runs_command == "export":
        for line in store.export_jsonl(args.run_id):
            sys.stdout.write(line)
        return EXIT_OK
    events = store.events(args.run_id)
    if args.json:
        for ev in events:
            print(json.dumps(ev.to_dict(), ensure_ascii=False, default=str))
        return EXIT_OK
    for line in format_events(events):
        print(line)
    return EXIT_OK


def _list_runs(store: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``runs list`` rows, newest first, filtered by -q TEXT, -m MODEL and --status."""
    n = getattr(args, "n", 20)
    query, model, status = (getattr(args, k, None) for k in ("query", "model", "status"))
    if not (query or model or status):
        return store.list_runs(n)
    from .model_ids import expand_spec

    full = expand_spec(model) if model else None
    out = []
    searched = store.stores[0] if hasattr(store, "stores") else store  # the SQLite store: every run, indexed
    for r in searched.list_runs(100_000):
        text = f"{r.get('question') or ''}\n{r.get('answer') or ''}".lower()
        if query and query.lower() not in text:
            continue
        if model and model not in (r.get("model") or "") and full != r.get("model"):
            continue
        if status and r.get("status") != status:
            continue
        out.append(r)
        if len(out) >= n:
            break
    return out


def _row_cost(r: dict[str, Any]) -> str:
    """A run row's cost: ``$0.0123``, ``unknown`` (a model with no known price), ``-`` (not ended)."""
    if r.get("status") in ("queued", "running"):
        return "-"
    return format_cost(r.get("cost_usd"))


def format_events(events: list[Event]) -> list[str]:
    """A readable transcript of a run."""
    out = []
    for ev in events:
        d, ind = ev.data, "  " * ev.path.count(".")
        tag = f"{ind}[{ev.path}] " if ev.path != "0" else ind
        if ev.type == "run_start":
            out.append(f"{tag}run {ev.run_id}: {d['question']!r}")
            out.append(f"{tag}  model {d['model']} · sub {d['sub_model']} · levels {','.join(d['levels'])} · "
                       f"context {d['context']['chars']:,} chars, {d['context']['documents']} doc(s)")
        elif ev.type == "iteration_start":
            out.append(f"{tag}── iteration {d['iteration']}" + (" (last)" if d.get("last") else ""))
        elif ev.type == "lm_response":
            out.append(f"{tag}model ({d['input_tokens']}+{d['output_tokens']} tok, {d['latency_s']}s):")
            out += [f"{tag}  | {ln}" for ln in d["text"].splitlines()[:40]]
        elif ev.type == "action_end":
            out.append(f"{tag}{d['level']} {d['op']}{' ERROR' if d.get('error') else ''}:")
            out += [f"{tag}  > {ln}" for ln in (d.get("output") or "").splitlines()[:40]]
        elif ev.type == "sub_call":
            out += format_sub_call(d, tag)
        elif ev.type in ("refused", "retry", "failover", "warning", "error"):
            out.append(f"{tag}{ev.type}: {d.get('message') or d.get('error') or json.dumps(d)}")
        elif ev.type == "batch_progress" and d.get("done") == d.get("total"):
            out.append(f"{tag}{d.get('op')}: {d.get('done'):,}/{d.get('total'):,} done ({d.get('failed', 0):,} failed)")
        elif ev.type == "final":
            out.append(f"{tag}FINAL: {d['answer']}")
        elif ev.type == "run_end":
            u = d["usage"]["total"]
            out.append(f"{tag}end: {d['status']}" + (f" ({d['reason']})" if d.get("reason") else "")
                       + f" · {d['iterations']} iteration(s) · {u['total_tokens']:,} tokens · "
                       f"{format_cost(u['cost_usd']) if 'cost_usd' in u else '-'} · {d['elapsed_s']}s")
    return out


#: lines of a sub-call's prompt and answer that ``rlm runs show`` prints (``--json`` has them whole)
SUB_CALL_LINES = 6


def format_sub_call(d: dict[str, Any], tag: str) -> list[str]:
    """A sub-call, readably: what made it, model, tokens, latency, cost; prompt and answer excerpts."""
    what = " ".join(str(x) for x in (d.get("op"), f"#{d['index']}" if d.get("index") is not None else None) if x)
    cost = format_cost(d["cost_usd"]) if "cost_usd" in d else "-"
    head = (f"{tag}sub-call{' ' + what if what else ''} · {d.get('model', '?')} · "
            f"{d.get('input_tokens', 0):,}+{d.get('output_tokens', 0):,} tok · {d.get('latency_s', 0)}s · {cost}")
    out = [head]
    for label in ("prompt", "answer"):
        text = str(d.get(label) or "")
        if not text and label not in d:
            continue
        lines = text.splitlines() or [""]
        out.append(f"{tag}  {label}: {lines[0][:200]}")
        out += [f"{tag}  {' ' * len(label)}  {ln[:200]}" for ln in lines[1:SUB_CALL_LINES]]
        if len(lines) > SUB_CALL_LINES:
            out.append(f"{tag}  {' ' * len(label)}  … {len(lines) - SUB_CALL_LINES:,} more line(s)")
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from .server import create_app
    from .server.security import check_bind

    config = Config.load(args.config, model=args.model, sub_model=args.sub_model, levels=args.levels,
                         runs_dir=args.runs_dir)
    srv = config.server
    for key in ("host", "port", "db", "max_concurrent_runs", "max_queued_runs", "max_upload_mb"):
        if getattr(args, key) is not None:
            setattr(srv, key, getattr(args, key))
    if args.root:
        srv.roots = list(srv.roots) + args.root
    srv.token = args.token or os.environ.get("CONTEXTBOX_TOKEN") or srv.token
    check_bind(srv.host, srv.token)
    from .providers.limits import ensure_local_limiter

    ensure_local_limiter()  # the endpoints' max_concurrency/rpm/tpm hold across all the server's runs
    if args.address and args.engine != "ray":
        raise UsageError("--address needs --engine ray")
    executor = None
    if args.engine == "ray":
        from .ray_engine import RayExecutor

        executor = RayExecutor(config, None, srv.max_concurrent_runs, address=args.address, actors=args.ray_actors)
    try:
        app = create_app(config, executor=executor)
        where = f"; runs on Ray ({executor.n_actors} actor(s))" if executor is not None else ""
        sys.stderr.write(f"rlm: serving on http://{srv.host}:{srv.port} — /visualize, /docs; run store "
                         f"{app.state.store.path}{where}\n")
        uvicorn.run(app, host=srv.host, port=srv.port, log_level="debug" if args.verbose else "warning")
    finally:
        if executor is not None:
            executor.close()
    return EXIT_OK


def cmd_model(args: argparse.Namespace) -> int:
    from . import local_model

    if args.model_command == "prepare":
        path = local_model.ensure_model()
        print(path)
        return EXIT_OK
    info = local_model.model_info()
    for k, v in info.items():
        print(f"{k}: {v}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demos import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.cli import cmd_bench as run_bench_command

    return run_bench_command(args)


def cmd_batch(args: argparse.Namespace) -> int:
    from .cli_batch import cmd_batch as run_batch_command

    return run_batch_command(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="rlm: %(levelname)s: %(message)s", stream=sys.stderr)
    from .cli_chat import cmd_chat
    from .cli_mcp import cmd_mcp
    from .cli_models import cmd_aliases, cmd_keys, cmd_models

    handlers = {"ask": cmd_ask, "config": cmd_config, "runs": cmd_runs, "model": cmd_model, "demo": cmd_demo,
                "serve": cmd_serve, "bench": cmd_bench, "batch": cmd_batch, "chat": cmd_chat, "mcp": cmd_mcp,
                "models": cmd_models, "aliases": cmd_aliases, "keys": cmd_keys}
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handlers[args.command](args)
    except UsageError as e:
        sys.stderr.write(f"rlm: error: {e}\n")
        return EXIT_USAGE
    except ContextboxError as e:
        sys.stderr.write(f"rlm: error: {e}\n")
        return EXIT_NO_ANSWER
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        sys.stderr.write("rlm: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
