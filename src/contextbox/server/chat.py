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
* System messages apply to the question: with the context in an extension field they are put
  before the question as instructions (with the context taken from the messages they are part
  of it). Earlier user/assistant turns with an extension context are refused (400), never dropped.
* ``temperature`` (other than null), ``max_tokens``/``max_completion_tokens``, ``n`` > 1,
  ``top_p``, ``stop``, ``tools``, ``response_format`` and the like are refused (400): a run makes
  many model calls with the server's settings; bound its spending with ``limits``.
* ``stream: true`` sends ``chat.completion.chunk`` events: the role at once, then ``: …``
  comment lines while the run works (progress, at least every few seconds: a keep-alive), then
  the answer, ``finish_reason`` and ``data: [DONE]`` — also when the run fails (an ``error``
  event first). With ``stream_options: {"include_usage": true}`` a last chunk carries the usage.
* Every ended run answers HTTP 200 except a failed one: ``finish_reason`` is ``"stop"`` when
  the run answered and ``"length"`` when it stopped at a limit (the content is the partial
  answer, or empty). A run that failed (a model error, a crash) or was stopped by a server
  shutdown answers 502/503 with ``x-should-retry: false``: no client re-runs (and pays for) a
  run that already ran. The extension object ``contextbox`` holds ``run_id``, ``status``,
  ``reason``, ``iterations`` and ``partial``; the run is in the store like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..context import Context
from ..errors import UsageError
from ..stores.sqlite import ACTIVE
from .manager import TooManyRuns
from .security import check_model_spec, read_json, resolve_path

log = logging.getLogger("contextbox")

#: finish_reason of a run that ended at a limit or with an answer (HTTP 200)
FINISH_REASONS = {"answered": "stop", "max_iterations": "length", "budget_exceeded": "length", "timeout": "length"}
#: HTTP status of a run that ended without an answer for another reason (sent with x-should-retry: false)
FAULT_STATUS = {"failed": 502, "interrupted": 503, "cancelled": 503}
#: seconds between progress/keep-alive comments of a stream
KEEPALIVE_S = 5.0
#: request fields an RLM run cannot honour: refused (400), never silently dropped
_REFUSED = {
    "temperature": "an RLM run makes many model calls with the server's settings; send no temperature",
    "top_p": "an RLM run makes many model calls with the server's settings",
    "max_tokens": "an RLM run's answer is not cut to a token count; bound the run with "
                  "extra_body={\"limits\": {\"max_total_tokens\": N}}",
    "max_completion_tokens": "an RLM run's answer is not cut to a token count; bound the run with "
                             "extra_body={\"limits\": {\"max_total_tokens\": N}}",
    "n": "a run gives one answer", "stop": "a run's answer is not cut at stop sequences",
    "tools": "no tool calls", "tool_choice": "no tool calls", "functions": "no function calls",
    "function_call": "no function calls", "response_format": "the answer is plain text",
    "logprobs": "no log probabilities", "top_logprobs": "no log probabilities",
    "presence_penalty": "an RLM run makes many model calls with the server's settings",
    "frequency_penalty": "an RLM run makes many model calls with the server's settings",
    "logit_bias": "an RLM run makes many model calls with the server's settings",
    "audio": "text only", "modalities": "text only", "prediction": "not supported",
}
#: values of those fields that ask for nothing (what clients send by default)
_NEUTRAL: dict[str, tuple[Any, ...]] = {"n": (1,), "logprobs": (False,), "tools": ([],), "stop": ([],), "top_p": (1,),
                                        "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},)}


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


def _oai_error(status: int, message: str, code: str, param: str | None = None,
               extension: dict[str, Any] | None = None) -> JSONResponse:
    """An OpenAI-shaped error. A 5xx says ``x-should-retry: false``: the official clients
    retry 5xx by default, and a retry would start (and pay for) another whole run."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if extension is not None:
        body["contextbox"] = extension
    return JSONResponse(body, status_code=status, headers={"x-should-retry": "false"} if status >= 500 else None)


def _refused(req: ChatRequest) -> tuple[str, str] | None:
    """(field, why) of the first request field a run cannot honour, or None."""
    extra = req.model_extra or {}
    for name, why in _REFUSED.items():
        if name in extra and extra[name] is not None and extra[name] not in _NEUTRAL.get(name, ()):
            return name, why
    return None


def _extension(row: dict[str, Any]) -> dict[str, Any]:
    """The ``contextbox`` object of a reply: what happened to the run."""
    return {"run_id": row["run_id"], "status": row["status"], "reason": row["reason"],
            "iterations": row["iterations"], "partial": row["status"] != "answered" and bool(row["answer"])}


def _ended_message(row: dict[str, Any]) -> str:
    return (f"the run ended without an answer: {row['status']}" + (f" ({row['reason']})" if row["reason"] else "")
            + f"; run {row['run_id']} (not retried: it already ran)")


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
        bad = _refused(req)
        if bad is not None:
            return _oai_error(400, f"{bad[0]} is not supported by rlm runs: {bad[1]}", "unsupported_parameter",
                              bad[0])
        if any(getattr(req, k) is not None for k in ("context", "context_path", "sample")):
            turns = [m.role for m in req.messages[:last] if m.role != "system" and _text(m.content).strip()]
            if turns:
                return _oai_error(400, "with the context in context/context_path/sample, earlier "
                                       f"{'/'.join(sorted(set(turns)))} messages would be ignored: send system "
                                       "messages and the question only (or put the conversation in the context)",
                                  "unsupported_messages", "messages")
            system = [_text(m.content).strip() for m in req.messages if m.role in ("system", "developer")]
            system = [t for t in system if t]
            if system:
                question = "Instructions: " + "\n\n".join(system) + "\n\nQuestion: " + question
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
        except Exception as e:  # noqa: BLE001 - the run started: a client must not retry it
            log.exception("chat completion for run %s", run_id)
            return _oai_error(500, f"internal error while waiting for run {run_id}: {type(e).__name__}",
                              "internal_error", extension={"run_id": run_id})
        if row is None:
            return _oai_error(499, "client disconnected; the run was cancelled", "cancelled")
        finish = FINISH_REASONS.get(row["status"])
        if finish is None:
            return _oai_error(FAULT_STATUS.get(row["status"], 502), _ended_message(row), "run_" + row["status"],
                              extension=_extension(row))
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": row["answer"] or ""},
                         "finish_reason": finish, "logprobs": None}],
            "usage": _usage(row), "system_fingerprint": None, "contextbox": _extension(row),
        }, headers={"x-should-retry": "false"})

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
        async for item in _follow(request, run_id, None):
            if isinstance(item, dict) or item is None:
                return item
        return None

    async def _follow(request: Request, run_id: str, every: float | None):
        """Yield a progress line (str) at most every ``every`` seconds while the run works (at
        least one each ``every`` seconds: a keep-alive), then the run's row when it ended, or
        None (and the run cancelled) if the client went away."""
        seen, last_said = -1, time.monotonic()
        with manager.notifier.subscribe(run_id) as wake:
            while True:
                wake.clear()
                row = store.get_run(run_id)
                if row["status"] not in ACTIVE and not manager.is_active(run_id):
                    yield row
                    return
                if every is not None and time.monotonic() - last_said >= every:
                    news = store.events(run_id, after=seen)
                    seen = news[-1].seq if news else seen
                    last_said = time.monotonic()
                    yield _progress_line(news)
                try:
                    await asyncio.wait_for(wake.wait(), timeout=min(1.0, every or 1.0))
                except TimeoutError:
                    if await request.is_disconnected():
                        manager.cancel(run_id)
                        yield None
                        return

    async def _stream(request: Request, run_id: str, cid: str, created: int, model: str, include_usage: bool):
        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> str:
            d: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                                 "contextbox": {"run_id": run_id}}
            if usage is not None:
                d["choices"] = []
                d["usage"] = usage
            return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

        done = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            row = None
            async for item in _follow(request, run_id, KEEPALIVE_S):
                if isinstance(item, str):
                    yield f": {item}\n\n"
                else:
                    row = item
            if row is None:
                return
            finish = FINISH_REASONS.get(row["status"])
            if finish is None:
                err = {"error": {"message": _ended_message(row), "type": "server_error",
                                 "code": "run_" + row["status"], "param": None}, "contextbox": _extension(row)}
                yield f"data: {json.dumps(err, ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"
                done = True
                return
            answer = row["answer"] or ""
            for i in range(0, len(answer), 64):
                yield chunk({"content": answer[i:i + 64]})
            end = json.loads(chunk({}, finish)[6:])
            end["contextbox"] = _extension(row)
            yield f"data: {json.dumps(end, ensure_ascii=False)}\n\n"
            if include_usage:
                yield chunk({}, None, _usage(row))
            yield "data: [DONE]\n\n"
            done = True
        finally:
            if not done:
                manager.cancel(run_id)


def _progress_line(events: list[Any]) -> str:
    """One SSE comment line saying what the run did since the last one (or that it still works)."""
    iteration = next((e.data.get("iteration") for e in reversed(events) if e.type == "iteration_start"
                      and e.path == "0"), None)
    subs = sum(1 for e in events if e.type == "sub_call")
    actions = [str(e.data.get("op")) for e in events if e.type == "action_end"]
    parts = [f"iteration {iteration}"] if iteration is not None else []
    if actions:
        parts.append("ran " + ", ".join(actions[-5:]))
    if subs:
        parts.append(f"{subs} sub-call(s)")
    return "working" + (": " + "; ".join(parts) if parts else "")
