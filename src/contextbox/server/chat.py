"""``POST /v1/chat/completions``: an OpenAI-compatible face for RLM runs.

* ``model``: ``"rlm"`` (the server's configured root model) or ``"rlm:<root model spec>"``,
  e.g. ``"rlm:openai/gpt-4o-mini"``.
* The **question** is the content of the last ``user`` message.
* The **context** is, in this order of preference:

  1. the extension field ``context`` (a string, a list of strings, or an object of
     name → text) — with the ``openai`` client: ``extra_body={"context": "..."}``;
  2. the extension field ``context_path`` (a file or folder inside the server's roots) or
     ``sample`` (a name from ``GET /samples``);
  3. otherwise every message before the last user message (system, user and assistant
     contents, each a document of its own).

* Other extension fields: ``sub_model``, ``levels``, ``limits`` (as for ``POST /v1/runs``).
* ``stream: true`` sends ``chat.completion.chunk`` events: the role at once, then the answer
  when the run has it, then ``finish_reason`` and ``data: [DONE]``. With
  ``stream_options: {"include_usage": true}`` a last chunk carries the usage.
* The reply carries ``finish_reason`` ``"stop"`` when the run answered and ``"length"`` when it
  stopped at a limit with a partial answer; a run that failed is an error (HTTP 502). The
  extension field ``rlm`` holds ``run_id``, ``status``, ``iterations``; the run is in the store
  like any other.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..context import Context
from ..errors import UsageError
from ..store_sqlite import ACTIVE
from .manager import TooManyRuns
from .security import check_model_spec, read_json, resolve_path

ENDED_WITH_ANSWER = {"answered": "stop", "max_iterations": "length", "budget_exceeded": "length",
                     "timeout": "length"}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(description='"rlm" or "rlm:<root model spec>"')
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    context: str | list[str] | dict[str, str] | None = Field(None, description="extension: the context")
    context_path: str | None = Field(None, description="extension: a server-side path inside the roots")
    sample: str | None = Field(None, description="extension: a demo sample name")
    sub_model: str | None = None
    levels: str | list[str] | None = None
    limits: dict[str, Any] | None = None


def _oai_error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")


def _usage(row: dict[str, Any]) -> dict[str, int]:
    total = ((row.get("usage") or {}).get("total")) or {}
    i, o = int(total.get("input_tokens") or 0), int(total.get("output_tokens") or 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def add_chat_routes(app: FastAPI) -> None:
    store, manager = app.state.store, app.state.manager
    config, roots = app.state.config, app.state.roots

    @app.get("/v1/models", tags=["openai"])
    def models() -> dict[str, Any]:
        now = int(time.time())
        ids = ["rlm"] + ([f"rlm:{config.model}"] if config.model else [])
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "contextbox"}
                                           for m in ids]}

    @app.post("/v1/chat/completions", tags=["openai"], description=__doc__)
    async def chat_completions(request: Request) -> Any:
        """OpenAI-compatible chat completions answered by an RLM run (see the module doc for
        where the context comes from)."""
        try:
            body = await read_json(request)
        except HTTPException as e:
            return _oai_error(400, str(e.detail), "invalid_json")
        try:
            req = ChatRequest.model_validate(body)
        except (ValueError, RecursionError) as e:
            return _oai_error(400, f"invalid request: {e}", "invalid_request")
        if req.model != "rlm" and not req.model.startswith("rlm:"):
            return _oai_error(404, f"unknown model {req.model!r}: use \"rlm\" or \"rlm:<root model spec>\" "
                                   "(e.g. rlm:openai/gpt-4o-mini)", "model_not_found", "model")
        spec = req.model[4:] or None if req.model.startswith("rlm:") else None
        users = [i for i, m in enumerate(req.messages) if m.role == "user"]
        if not users or not _text(req.messages[users[-1]].content).strip():
            return _oai_error(400, "the last user message (the question) is missing or empty", "no_question",
                              "messages")
        last = users[-1]
        question = _text(req.messages[last].content)
        try:
            ctx, meta = await _context(req, last)
            spec = check_model_spec(spec, roots)
            sub = check_model_spec(req.sub_model, roots)
            from starlette.concurrency import run_in_threadpool

            run_id = await run_in_threadpool(manager.start, question, ctx, model=spec, sub_model=sub,
                                             levels=req.levels, limits=req.limits, source="chat", meta=meta)
        except HTTPException as e:
            return _oai_error(e.status_code, str(e.detail), "invalid_request")
        except TooManyRuns as e:
            return _oai_error(429, str(e), "too_many_runs")
        except (UsageError, RequestValidationError) as e:
            return _oai_error(400, str(e), "invalid_request")
        created = int(time.time())
        cid = f"chatcmpl-{run_id}"
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(_stream(request, run_id, cid, created, req.model, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            row = await _wait_end(request, run_id)
        except asyncio.CancelledError:
            manager.cancel(run_id)
            raise
        if row is None:
            return _oai_error(499, "client disconnected; the run was cancelled", "cancelled")
        finish = ENDED_WITH_ANSWER.get(row["status"])
        if finish is None or (finish != "stop" and not row["answer"]):
            return _oai_error(502, f"the run ended without an answer: {row['status']}"
                                   + (f" ({row['reason']})" if row["reason"] else "") + f"; run {run_id}",
                              "run_" + row["status"])
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": row["answer"] or ""},
                         "finish_reason": finish, "logprobs": None}],
            "usage": _usage(row), "system_fingerprint": None,
            "rlm": {"run_id": run_id, "status": row["status"], "iterations": row["iterations"],
                    "reason": row["reason"]},
        }

    async def _context(req: ChatRequest, last: int) -> tuple[Context, dict[str, Any]]:
        from starlette.concurrency import run_in_threadpool

        from . import samples as samples_mod

        given = [k for k in ("context", "context_path", "sample") if getattr(req, k) is not None]
        if len(given) > 1:
            raise HTTPException(400, f"give at most one of context, context_path, sample (got {', '.join(given)})")
        if req.context is not None:
            return Context.from_value(req.context), {"context_source": "context"}
        if req.context_path is not None:
            path = resolve_path(req.context_path, roots)
            return await run_in_threadpool(Context.load, str(path)), {"context_source": "context_path",
                                                                       "context_path": str(path)}
        if req.sample is not None:
            text = await run_in_threadpool(samples_mod.sample_text, req.sample)
            return Context.from_documents([(f"{req.sample}.txt", text)]), {"context_source": "sample",
                                                                          "sample": req.sample}
        docs = [(f"[{i}] {m.role}", _text(m.content)) for i, m in enumerate(req.messages[:last])
                if _text(m.content).strip()]
        if not docs:
            raise HTTPException(400, "no context: put it in messages before the question, or in the extension "
                                     "field 'context' (openai client: extra_body={'context': ...})")
        return Context.from_documents(docs), {"context_source": "messages"}

    async def _wait_end(request: Request, run_id: str) -> dict[str, Any] | None:
        """Wait for the run to end; None (and the run cancelled) if the client went away."""
        with manager.notifier.subscribe(run_id) as wake:
            while True:
                wake.clear()
                row = store.get_run(run_id)
                if row["status"] not in ACTIVE and not manager.is_active(run_id):
                    return row
                try:
                    await asyncio.wait_for(wake.wait(), timeout=1.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        manager.cancel(run_id)
                        return None

    async def _stream(request: Request, run_id: str, cid: str, created: int, model: str, include_usage: bool):
        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> str:
            d: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                                 "rlm": {"run_id": run_id}}
            if usage is not None:
                d["choices"] = []
                d["usage"] = usage
            return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

        done = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            row = await _wait_end(request, run_id)
            if row is None:
                return
            finish = ENDED_WITH_ANSWER.get(row["status"])
            if finish is None or (finish != "stop" and not row["answer"]):
                err = {"error": {"message": f"the run ended without an answer: {row['status']}"
                                            + (f" ({row['reason']})" if row["reason"] else ""),
                                 "type": "server_error", "code": "run_" + row["status"], "param": None}}
                yield f"data: {json.dumps(err)}\n\n"
                done = True
                return
            answer = row["answer"] or ""
            for i in range(0, len(answer), 64):
                yield chunk({"content": answer[i:i + 64]})
            yield chunk({}, finish)
            if include_usage:
                yield chunk({}, None, _usage(row))
            yield "data: [DONE]\n\n"
            done = True
        finally:
            if not done:
                manager.cancel(run_id)
