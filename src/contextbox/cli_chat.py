"""``rlm chat -c PATH``: load a context once, then answer questions read one per line.

Every question is its own run in the run store, linked to the session (``rlm runs list`` shows the session id);
variables, tables and the code namespace persist from one question to the next (see :mod:`contextbox.session`).
An empty line, ``exit``, ``quit`` or end of input ends the session.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from .config import Config
from .context import Context
from .errors import UsageError

EXIT_WORDS = ("exit", "quit", ":q")


def add_parser(sub: Any, positive_int: Any) -> None:
    chat = sub.add_parser("chat", help="ask several questions about one context (variables persist between them)",
                          description="Load the context once, then read questions one per line from stdin; an empty "
                                      "line, 'exit' or Ctrl-D ends the session.")
    chat.add_argument("-c", "--context", action="append", default=[], metavar="PATH",
                      help="a file, a directory, or - for stdin (repeatable)")
    chat.add_argument("--include", action="append", metavar="GLOB", help="only these files of a directory")
    chat.add_argument("--exclude", action="append", metavar="GLOB", help="skip these files of a directory")
    chat.add_argument("-m", "--model", help="root model spec: NAME/MODEL, scripted:PATH, local, local:PATH.gguf")
    chat.add_argument("--sub-model", metavar="MODEL", help="sub-model spec for delegation (default: the root model)")
    chat.add_argument("--levels", help="allowed levels, e.g. l1 or l1,l2,l4 (default from config)")
    chat.add_argument("--max-iterations", type=positive_int, metavar="N", help="iterations per question")
    chat.add_argument("--timeout", type=float, dest="timeout_s", metavar="SECONDS", help="time limit per question")
    chat.add_argument("--max-tokens", type=positive_int, dest="max_total_tokens", metavar="N",
                      help="token limit per question")
    chat.add_argument("--max-cost", type=float, dest="max_cost_usd", metavar="USD", help="cost limit per question")
    chat.add_argument("--json", action="store_true", help="print one JSON object per question instead of the answer")
    chat.add_argument("--runs-dir", metavar="DIR", help="where run logs go (default $XDG_DATA_HOME/contextbox/runs)")
    chat.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


class _SessionRunner:
    """What :func:`contextbox.cli._run_and_report` needs of an RLM: ``stream(question, ctx, cancel=)``, ``store``."""

    def __init__(self, session: Any):
        self.session = session
        self.store = session.rlm.store  # a second Ctrl-C records the question's run cancelled in it

    def stream(self, question: str, ctx: Context, *, cancel: threading.Event | None = None) -> Any:
        return self.session.stream(question, cancel=cancel)


def cmd_chat(args: argparse.Namespace) -> int:
    from .cli import _run_and_report, _store
    from .engine import RLM

    config = Config.load(args.config, model=args.model, sub_model=args.sub_model, levels=args.levels,
                         runs_dir=args.runs_dir, max_iterations=args.max_iterations, timeout_s=args.timeout_s,
                         max_total_tokens=args.max_total_tokens, max_cost_usd=args.max_cost_usd)
    if not args.context:
        raise UsageError("no context given; pass -c PATH (a file, a directory, or - for stdin)")
    if "-" in args.context:
        raise UsageError("rlm chat reads its questions from stdin: give the context as a file or a directory")
    ctx = Context.load(args.context, include=args.include, exclude=args.exclude)
    rlm = RLM(config=config, store=_store(config, None))
    interactive = sys.stdin.isatty()
    code = 0
    with rlm.session(ctx) as session:
        if not args.quiet:
            sys.stderr.write(f"rlm chat: session {session.session_id} · {len(ctx.text):,} characters loaded · "
                             "one question per line; an empty line or Ctrl-D ends\n")
        while True:
            if interactive:
                sys.stderr.write("? ")
                sys.stderr.flush()
            line = sys.stdin.readline()
            question = line.strip()
            if not line or not question or question.lower() in EXIT_WORDS:
                break
            code = _run_and_report(_SessionRunner(session), question, ctx, args)
            sys.stdout.flush()
            if code == 130:  # Ctrl-C cancelled the question: the session ends too
                break
    return code
