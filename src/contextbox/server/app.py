"""The FastAPI app: runs, their live event streams, the OpenAI-compatible endpoint, the
demo samples and the visualizer page. ``create_app(config)`` builds it; ``rlm serve`` runs it.

Endpoints (OpenAPI at ``/docs``):

* ``POST /v1/runs`` — JSON ``{question, context | context_path | sample, model, sub_model,
  levels, limits}`` or a multipart form with a ``file`` field and the same fields → ``{"id"}``.
* ``GET /v1/runs`` (paged), ``GET /v1/runs/{id}``, ``POST /v1/runs/{id}/cancel``,
  ``GET /v1/runs/{id}/events`` (Server-Sent Events, resumable with ``Last-Event-ID``),
  ``GET /v1/runs/{id}/export`` (JSONL).
* ``POST /v1/chat/completions``, ``GET /v1/models`` — see :mod:`contextbox.server.chat`.
* ``GET /health``, ``GET /samples``, ``GET /samples/{name}``, ``GET /visualize``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..config import Config
from ..context import Context, decode_bytes
from ..errors import ContextboxError, UsageError
from ..stores.sqlite import ACTIVE, SqliteRunStore, default_db_path
from . import samples as samples_mod
from .manager import RunManager, TooManyRuns
from .security import (
    AuthMiddleware,
    BodyLimitMiddleware,
    BodyTooLarge,
    HostMiddleware,
    check_model_spec,
    check_roots,
    read_json,
    resolve_path,
)

log = logging.getLogger("contextbox")
STATIC = Path(__file__).parent / "static"
SSE_PAGE = 500  # events read from the store per query while streaming


class RunRequest(BaseModel):
    """A run. Give exactly one of ``context`` (inline text), ``context_path`` (a file or folder
    inside the server's roots) or ``sample`` (a name from ``GET /samples``); or upload the
    context as the ``file`` field of a multipart form (``limits`` then is a JSON string)."""

    question: str = Field(description="the question to answer")
    context: str | None = Field(None, description="the context, inline")
    context_path: str | None = Field(None, description="a server-side path inside the configured roots")
    sample: str | None = Field(None, description="a demo sample name (extension; see GET /samples)")
    model: str | None = Field(None, description="root model spec, e.g. openai/gpt-4o-mini; default from config")
    sub_model: str | None = Field(None, description="sub-model spec; default: config, else the root model")
    levels: str | list[str] | None = Field(None, description='allowed levels, e.g. "l1,l4"')
    limits: dict[str, Any] | None = Field(None, description='e.g. {"max_iterations": 10, "timeout_s": 120}')


class RunCreated(BaseModel):
    id: str
    status: str = "queued"


def _run_view(row: dict[str, Any], n_events: int, active: bool) -> dict[str, Any]:
    created, started, finished = row["created"], row["started"], row["finished"]
    return {
        "id": row["run_id"], "status": row["status"], "question": row["question"], "model": row["model"],
        "sub_model": row["sub_model"], "levels": row["levels"], "answer": row["answer"], "reason": row["reason"],
        "iterations": row["iterations"], "usage": row["usage"], "source": row["source"], "active": active,
        "events": n_events,
        "timings": {"created": created, "started": started, "finished": finished, "elapsed_s": row["elapsed_s"],
                    "queued_s": round(started - created, 4) if started and created else None},
        "meta": row["meta"],
    }


def create_app(config: Config | None = None, *, store: SqliteRunStore | None = None, token: str | None = None,
               roots: list[str] | None = None, max_concurrent_runs: int | None = None,
               max_upload_mb: float | None = None, max_queued_runs: int | None = None,
               executor: Any = None) -> FastAPI:
    """Build the app. Arguments override the ``[server]`` config section. Runs left in flight
    by a previous process in the same store are marked ``interrupted`` here. ``executor`` (a
    :class:`contextbox.ray_engine.RayExecutor`): runs go to its Ray actors (``rlm serve --engine ray``)."""
    config = config if config is not None else Config.load()
    srv = config.server
    token = token if token is not None else srv.token
    root_paths = check_roots(list(roots) if roots is not None else list(srv.roots))
    host_check = {"bind_host": srv.host, "port": srv.port, "allowed_hosts": list(srv.allowed_hosts), "token": token}
    HostMiddleware(None, **host_check)  # a bad allowed_hosts entry is a config error now, not at the first request
    limit_bytes = int((max_upload_mb if max_upload_mb is not None else srv.max_upload_mb) * 1_000_000)
    own_store = store is None
    if store is None:
        store = SqliteRunStore(srv.db or default_db_path(config.runs_dir))
    store.mark_interrupted()
    manager = RunManager(config, store, max_concurrent_runs or srv.max_concurrent_runs, max_queued_runs,
                         executor=executor)
    manager.check_spec(config.model, "model")
    manager.check_spec(config.sub_model, "sub_model")
    manager.resume_queue()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(manager.shutdown)
        if own_store:
            store.close()

    app = FastAPI(title="contextbox", version=__version__, lifespan=lifespan,
                  description="Recursive Language Models over contexts far larger than a model's window. "
                              "With a token set, send `Authorization: Bearer TOKEN` on every request but /health.")
    app.state.config, app.state.store, app.state.manager, app.state.roots = config, store, manager, root_paths
    app.add_middleware(BodyLimitMiddleware, limit=limit_bytes)
    app.add_middleware(AuthMiddleware, token=token)
    app.add_middleware(HostMiddleware, **host_check)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(TooManyRuns)
    async def _too_many(request: Request, exc: TooManyRuns) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "5"})

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return JSONResponse({"detail": "the request is nested too deeply"}, status_code=400)

    @app.exception_handler(ContextboxError)
    async def _cb_error(request: Request, exc: ContextboxError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    # ------------------------------------------------------------------ basics
    @app.get("/health", tags=["server"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "active_runs": len(manager.active_ids()),
                "queued_runs": len(manager.queued_ids()), "max_concurrent_runs": manager.max_concurrent,
                "max_queued_runs": manager.max_queued, "auth": bool(token)}

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/visualize")

    @app.get("/visualize", include_in_schema=False)
    def visualize() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/samples", tags=["samples"])
    def list_samples() -> dict[str, Any]:
        """The demo contexts: War and Peace (when on disk), generated logs and response times,
        the detective story."""
        return {"samples": samples_mod.list_samples()}

    @app.get("/samples/{name}", tags=["samples"], response_class=PlainTextResponse)
    def get_sample(name: str) -> PlainTextResponse:
        return PlainTextResponse(samples_mod.sample_text(name))

    # ------------------------------------------------------------------ runs
    async def start_run(req: RunRequest, upload: tuple[str, bytes] | None) -> str:
        given = [k for k in ("context", "context_path", "sample") if getattr(req, k) is not None]
        if upload is not None:
            given.append("file")
        if len(given) != 1:
            raise HTTPException(400, "give exactly one of context, context_path, sample or an uploaded file"
                                     + (f" (got {', '.join(given)})" if given else ""))
        model = check_model_spec(req.model, root_paths)
        sub_model = check_model_spec(req.sub_model, root_paths)
        meta: dict[str, Any] = {"context_source": given[0]}
        if upload is not None:
            name, data = upload
            text, _bad = decode_bytes(data)
            ctx = Context.from_documents([(name, text)])  # create_run names a nameless file "upload.txt"
            meta["filename"] = name
            spec: dict[str, Any] = {"kind": "docs", "docs": [[name, text]]}
        elif req.context is not None:
            ctx = Context.from_value(req.context)
            spec = {"kind": "value", "text": req.context}
        elif req.sample is not None:
            text = await run_in_threadpool(samples_mod.sample_text, req.sample)
            ctx = Context.from_documents([(f"{req.sample}.txt", text)])
            meta["sample"] = req.sample
            spec = {"kind": "sample", "name": req.sample}
        else:
            path = resolve_path(req.context_path, root_paths)
            ctx = await run_in_threadpool(Context.load, str(path))
            meta["context_path"] = str(path)
            spec = {"kind": "path", "path": str(path)}
        try:
            return await run_in_threadpool(manager.start, req.question, ctx, model=model, sub_model=sub_model,
                                           levels=req.levels, limits=req.limits, source="api", meta=meta,
                                           context_spec=spec)
        except UsageError as e:
            raise HTTPException(400, str(e)) from None

    @app.post("/v1/runs", tags=["runs"], status_code=202, response_model=RunCreated, openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": RunRequest.model_json_schema()},
            "multipart/form-data": {"schema": {"type": "object", "required": ["question", "file"], "properties": {
                "question": {"type": "string"}, "file": {"type": "string", "format": "binary"},
                "model": {"type": "string"}, "sub_model": {"type": "string"}, "levels": {"type": "string"},
                "limits": {"type": "string", "description": "a JSON object"}}}}}}})
    async def create_run(request: Request) -> JSONResponse:
        """Start a run in the background; follow it with ``GET /v1/runs/{id}/events``."""
        ctype = request.headers.get("content-type", "")
        upload = None
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=20)
            fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
            f = form.get("file")
            if f is None or isinstance(f, str):
                raise HTTPException(400, "a multipart run needs the context file in the 'file' field")
            upload = (f.filename or "upload.txt", await f.read())
            if "limits" in fields:
                try:
                    fields["limits"] = json.loads(fields["limits"]) if fields["limits"].strip() else None
                except (json.JSONDecodeError, RecursionError) as e:
                    raise HTTPException(400, f"limits must be a JSON object: {e}") from None
            fields = {k: (v if v != "" else None) for k, v in fields.items()}
        else:
            fields = await read_json(request)
            if not isinstance(fields, dict):
                raise HTTPException(400, "the body must be a JSON object")
        try:
            req = RunRequest.model_validate(fields)
        except (ValueError, RecursionError) as e:
            raise HTTPException(422, json.loads(e.json()) if hasattr(e, "json") else str(e)) from None
        rid = await start_run(req, upload)
        pos = manager.position(rid)
        return JSONResponse({"id": rid, "status": "queued", "position": pos}, status_code=202)

    @app.get("/v1/runs", tags=["runs"])
    def list_runs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                  status: str | None = None) -> dict[str, Any]:
        """Newest first. ``next_offset`` is null on the last page."""
        store.mark_interrupted(keep_own=True)  # e.g. a CLI run killed while this server runs
        rows = store.list_runs(limit, offset, status)
        total = store.count_runs(status)
        for r in rows:
            r["id"] = r["run_id"]
        nxt = offset + len(rows)
        return {"runs": rows, "total": total, "limit": limit, "offset": offset,
                "next_offset": nxt if nxt < total else None}

    def _row_or_404(run_id: str) -> dict[str, Any]:
        row = store.get_run(run_id)
        if row is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return row

    @app.get("/v1/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str) -> dict[str, Any]:
        """Status, answer, usage and timings."""
        row = _row_or_404(run_id)
        view = _run_view(row, store.count_events(run_id), manager.is_active(run_id))
        view["position"] = manager.position(run_id) if row["status"] == "queued" else None
        return view

    @app.post("/v1/runs/{run_id}/cancel", tags=["runs"], status_code=202)
    def cancel_run(run_id: str) -> dict[str, Any]:
        row = _row_or_404(run_id)
        if manager.cancel(run_id):
            return {"id": run_id, "status": "cancelling"}
        raise HTTPException(409, f"run {run_id} is not in progress (status: {row['status']})")

    @app.get("/v1/runs/{run_id}/export", tags=["runs"], response_class=StreamingResponse)
    def export_run(run_id: str) -> StreamingResponse:
        """The run's events as JSON lines (the same format as the CLI's run log)."""
        _row_or_404(run_id)
        return StreamingResponse(store.export_jsonl(run_id), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": f'attachment; filename="{run_id}.jsonl"'})

    @app.get("/v1/runs/{run_id}/events", tags=["runs"], response_class=StreamingResponse)
    async def run_events(run_id: str, request: Request, after: int | None = Query(None, ge=-1),
                         follow: bool = True) -> StreamingResponse:
        """Server-Sent Events: every stored event with ``seq`` above ``Last-Event-ID`` (or
        ``after``), then live ones until the run ends. Each event's ``id`` is its ``seq``;
        ``data`` is the event as JSON. ``follow=false`` stops after the stored ones."""
        _row_or_404(run_id)
        last = -1 if after is None else after
        hdr = request.headers.get("last-event-id")
        if hdr not in (None, ""):
            try:
                last = int(hdr)
            except ValueError:
                raise HTTPException(400, f"Last-Event-ID must be an event seq (an integer), got {hdr!r}") from None
        return StreamingResponse(sse_stream(run_id, last, follow), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def sse_stream(run_id: str, last: int, follow: bool):
        yield "retry: 2000\n\n"
        idle = 0.0
        with manager.notifier.subscribe(run_id) as wake:
            while True:
                wake.clear()
                page = store.events(run_id, after=last, limit=SSE_PAGE)
                for ev in page:
                    last = ev.seq
                    yield f"id: {ev.seq}\ndata: {json.dumps(ev.to_dict(), ensure_ascii=False, default=str)}\n\n"
                    if ev.type == "run_end" and ev.path == "0":
                        return
                if page:
                    idle = 0.0
                    continue
                if not follow:
                    return
                row = store.get_run(run_id)
                if row is None or (row["status"] not in ACTIVE and not manager.is_active(run_id)):
                    if not store.events(run_id, after=last, limit=1):
                        return
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), timeout=1.0)
                except TimeoutError:
                    idle += 1.0
                    if idle >= 15.0:
                        idle = 0.0
                        yield ": keepalive\n\n"

    from .chat import add_chat_routes

    add_chat_routes(app)
    return app
