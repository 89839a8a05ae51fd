"""contextbox as an MCP server (``rlm mcp``), built on the official ``mcp`` Python SDK (``pip install
'contextbox[mcp]'``).

Tools:

* ``ask(question, paths, levels?, model?)`` runs an RLM over files and folders inside the roots the user
  allowed (``rlm mcp --root DIR``; confined exactly like the HTTP server's ``context_path``: ``..``, absolute
  paths and symlinks out of the roots are refused). Progress goes out as MCP progress notifications (one per
  iteration, action and answer) when the client asks for them; the result holds the answer, the run id, the
  status, the iterations and the usage.
* ``list_runs(limit?)`` and ``get_run(run_id, events?)`` read the run store (the same one ``rlm runs`` and
  ``rlm serve`` use); so do the resources ``rlm://runs`` (recent runs, JSON) and ``rlm://runs/{run_id}``
  (a run's transcript).

This module has no ``from __future__ import annotations``: the SDK reads the tools' annotations as objects.
"""

import json
import logging
from pathlib import Path
from typing import Any

from .config import Config
from .context import Context
from .errors import ContextboxError, UsageError
from .types import Event

log = logging.getLogger("contextbox")

MCP_MISSING = "rlm mcp needs the MCP SDK: pip install 'contextbox[mcp]'"
NO_ROOTS = ("rlm mcp needs at least one folder the assistant may read: rlm mcp --root DIR "
            "(or roots = [...] under [server] in the config)")


def _sdk() -> tuple[Any, Any, Any]:
    """``(server class, Context class, ToolError)`` of the installed SDK (mcp 2's MCPServer, mcp 1's FastMCP)."""
    try:
        from mcp.server.mcpserver import Context as McpContext
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:
        try:
            from mcp.server.fastmcp import Context as McpContext  # type: ignore[no-redef]
            from mcp.server.fastmcp import FastMCP as MCPServer  # type: ignore[no-redef]
            from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]
        except ImportError:
            raise UsageError(MCP_MISSING) from None
    return MCPServer, McpContext, ToolError


def progress_message(ev: Event) -> str | None:
    """The progress line an event is worth (root events only), or None."""
    if ev.path != "0":
        return None
    d = ev.data
    if ev.type == "run_start":
        return f"run {ev.run_id} started: model {d.get('model')}, {d.get('context', {}).get('chars', 0):,} chars"
    if ev.type == "iteration_start":
        return f"iteration {d.get('iteration')}"
    if ev.type == "action_end":
        first = (d.get("output") or "").split("\n", 1)[0][:120]
        return f"[{d.get('iteration')}] {d.get('level')} {d.get('op')}{' (error)' if d.get('error') else ''}: {first}"
    if ev.type == "final":
        return "answered"
    if ev.type == "error" and d.get("fatal"):
        return f"error: {d.get('message')}"
    return None


def _row(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("run_id", "status", "started", "question", "answer", "model", "iterations", "tokens", "cost_usd",
            "reason", "session_id")
    return {k: r.get(k) for k in keep}


def build_server(config: Config, roots: list[str | Path], store: Any) -> Any:
    """The MCP server (not started). ``roots``: the folders ``ask`` may read; ``store``: the run store."""
    from .server.security import check_model_spec, check_roots, resolve_path

    MCPServer, McpContext, ToolError = _sdk()
    root_paths = check_roots([str(r) for r in roots])
    if not root_paths:
        raise UsageError(NO_ROOTS)
    sqlite = next((s for s in getattr(store, "stores", (store,)) if hasattr(s, "get_run")), None)
    server = MCPServer(
        "contextbox",
        instructions=("Answers questions about files far larger than a model's window with a Recursive Language "
                      f"Model. ask() reads files under: {', '.join(str(r) for r in root_paths)}."),
    )

    def _resolve(paths: list[str]) -> list[str]:
        from fastapi import HTTPException

        if not paths:
            raise ToolError("paths is empty: name at least one file or folder under the allowed roots")
        out = []
        for raw in paths:
            try:
                out.append(str(resolve_path(raw, root_paths, what="path")))
            except HTTPException as e:
                raise ToolError(str(e.detail)) from None
        return out

    @server.tool()
    async def ask(question: str, paths: list[str], ctx: McpContext, levels: str | None = None,
                  model: str | None = None) -> dict[str, Any]:
        """Answer a question about files or folders (any size) with a Recursive Language Model.

        paths: files or folders inside the allowed roots (relative paths are taken from each root).
        levels: allowed levels, e.g. "l1" or "l1,l2,l4" (default from the config). model: a model spec,
        e.g. "openai/gpt-4o-mini" (default from the config). Returns the answer, run_id, status and usage.
        """
        from fastapi import HTTPException

        from .engine import RLM

        try:
            files = _resolve(paths)
            spec = check_model_spec(model, root_paths) if model else None
            context = Context.load(files)
            rlm = RLM(model=spec or None, levels=levels or None, config=config, store=store)
            stream = rlm.astream(question, context)
        except HTTPException as e:
            raise ToolError(str(e.detail)) from None
        except ContextboxError as e:
            raise ToolError(str(e)) from None
        sent = 0
        async for ev in stream:
            msg = progress_message(ev)
            if msg is not None:
                sent += 1
                try:
                    await ctx.report_progress(sent, None, msg)
                except Exception as e:  # noqa: BLE001 - a client that went away must not fail the run
                    log.debug("progress notification failed: %s", e)
        res = stream.result
        assert res is not None
        return {"answer": res.answer, "status": res.status, "run_id": res.run_id, "reason": res.reason,
                "iterations": res.iterations, "elapsed_s": round(res.elapsed_s, 3),
                "usage": res.usage.to_dict()["total"]}

    @server.tool()
    def list_runs(limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs (newest first): run_id, status, question, answer, model, tokens, cost."""
        return [_row(r) for r in store.list_runs(max(1, min(int(limit), 500)))]

    @server.tool()
    def get_run(run_id: str, events: bool = False) -> dict[str, Any]:
        """One run: its row, its usage, and with events=true a readable transcript of every step."""
        from .cli import format_events

        try:
            rid = sqlite.resolve_id(run_id) if sqlite is not None else run_id
            row = dict(sqlite.get_run(rid) or {}) if sqlite is not None else {}
            evs = store.events(rid)
        except ContextboxError as e:
            raise ToolError(str(e)) from None
        if not row:
            from .stores.jsonl import summarize

            row = summarize(evs)
        out = {**_row(row), "usage": row.get("usage"), "levels": row.get("levels")}
        if events:
            out["transcript"] = "\n".join(format_events(evs))
        return out

    @server.resource("rlm://runs", name="runs", description="the 50 most recent runs, as JSON",
                     mime_type="application/json")
    def runs_resource() -> str:
        return json.dumps([_row(r) for r in store.list_runs(50)], ensure_ascii=False, default=str)

    @server.resource("rlm://runs/{run_id}", name="run", description="one run's readable transcript",
                     mime_type="text/plain")
    def run_resource(run_id: str) -> str:
        from .cli import format_events

        try:
            rid = sqlite.resolve_id(run_id) if sqlite is not None else run_id
            return "\n".join(format_events(store.events(rid)))
        except ContextboxError as e:
            raise ValueError(str(e)) from None

    return server
