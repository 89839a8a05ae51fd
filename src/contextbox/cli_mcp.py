"""``rlm mcp``: serve contextbox to MCP clients (Claude Desktop, IDEs) over stdio."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .config import Config


def add_parser(sub: Any) -> None:
    p = sub.add_parser("mcp", help="serve contextbox over MCP (stdio) to assistants such as Claude Desktop",
                       description="An MCP server on stdin/stdout: the tools ask, list_runs and get_run. ask reads "
                                   "only files inside the --root folders.")
    p.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="a folder whose files ask may read (repeatable; added to [server] roots)")
    p.add_argument("-m", "--model", help="default root model spec for questions that name none")
    p.add_argument("--sub-model", metavar="MODEL", help="default sub-model spec for delegation")
    p.add_argument("--levels", help="default allowed levels, e.g. l1 or l1,l2,l4")
    p.add_argument("--runs-dir", metavar="DIR", help="where runs are recorded (default $XDG_DATA_HOME/contextbox/runs)")


def cmd_mcp(args: argparse.Namespace) -> int:
    from .cli import _store
    from .mcp_server import build_server

    config = Config.load(args.config, model=args.model, sub_model=args.sub_model, levels=args.levels,
                         runs_dir=args.runs_dir)
    store = _store(config, None)
    roots = list(config.server.roots) + list(args.root)
    server = build_server(config, roots, store)
    sys.stderr.write(f"rlm mcp: serving on stdio; ask reads under {', '.join(map(str, roots))}\n")
    try:
        server.run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0
