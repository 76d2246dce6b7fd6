"""The HTTP server: an OpenAI-compatible API and a web chat page over one `Engine`.

Endpoints (the first four are the part of OpenAI's API that chat clients use, so the official
``openai`` client, or anything built on it, can talk to a buildlm model)::

    POST /v1/chat/completions   a reply to a conversation, whole or streamed (server-sent events)
    POST /v1/completions        continue text (or token ids), whole or streamed
    GET  /v1/models             the one model served
    GET  /health                liveness, queue length and counters (no key needed)
    POST /v1/tokenize           how text splits into tokens (for the page's token view)
    POST /v1/attention          one head's attention weights (for the page's heatmap)
    GET  /                      the chat page (``static/``: plain HTML, CSS and JavaScript)

How a request flows: past the admission limits (`admission`: requests in flight, queue
length, 429 beyond them), the body is read with a size cap (413 past ``max_body_bytes``, before
any parsing) and a time limit (408 past ``body_timeout_s``), parsed and type-checked by pydantic (`schemas`), checked against the limits and
turned into token ids and sampling settings (`prompts`), then handed to the `Scheduler`, whose
thread batches it with every other request in flight. The handler only awaits the pieces of
text the scheduler sends back and writes them out, so the event loop never runs torch and a
thousand idle connections cost almost nothing. ``/v1/attention``'s forward pass runs on that
thread too (`Scheduler.call`), between two decode steps: the model is only ever run by it. If the client disconnects, the handler cancels
its ticket and its rows leave the batch at the next step.

A chat request may set ``"trim_history": true`` (a buildlm extension, which the chat page
sends): instead of a 400 ``context_length_exceeded``, the oldest turns that do not fit the
context are left out (`prompts`), and the answer says how many messages were: a
``dropped_messages`` field in the ``chat.completion`` object or in the first chunk of a stream,
and the header ``X-Dropped-Messages`` on both.

With ``--tools calculator`` (``create_app(tools=...)``) the model may call the calculator in
every reply (`buildlm.infer.tool_use`): the reply's text, streamed or whole, shows the call
and the result the server fed back (``<tool>calculator: 23*58</tool><result>1334</result>``),
and ``/v1/models`` lists the tools.

Bind to ``127.0.0.1`` (the default of ``buildlm serve``) unless you mean to expose the model;
``api_key`` then makes every ``/v1`` request carry ``Authorization: Bearer <key>``. Web pages
the user visits cannot use the server either way: `web_guard` refuses other sites' requests and
unknown Host names (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from buildlm.infer.chat_format import chat_format_for
from buildlm.infer.engine import Engine
from buildlm.serve import introspect
from buildlm.serve.admission import Admission, busy, read_body
from buildlm.serve.errors import APIError, error_body, install_error_handlers
from buildlm.serve.limits import ServeLimits
from buildlm.serve.prompts import Work, chat_work, completion_work
from buildlm.serve.responses import ResponseBuilder, sse
from buildlm.serve.scheduler import Done, Failed, Scheduler, Ticket
from buildlm.serve.schemas import (
    AttentionRequest,
    ChatCompletionRequest,
    CompletionRequest,
    InspectRequest,
    _GenerationRequest,
)
from buildlm.serve.web_guard import WebGuard, WebPolicy
from buildlm.tools.calls import check_tools

STATIC = Path(__file__).parent / "static"


async def _disconnected(request: Request) -> None:
    """Return when the client closes its connection (or the connection breaks)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return
    except OSError:
        return


def create_app(
    engine: Engine,
    model_name: str,
    limits: ServeLimits | None = None,
    api_key: str | None = None,
    web: WebPolicy | None = None,
    tools: Sequence[str] = (),
) -> FastAPI:
    """A FastAPI app serving ``engine`` (which must have a tokenizer) as ``model_name``.

    ``web`` says which Host names and web origins are answered (`web_guard`; default: loopback
    names only, no other origin). ``tools`` names the tools the model may call in every reply
    (``("calculator",)``; `buildlm.infer.tool_use`): a streamed reply shows the call and the
    result the server fed back.

    The scheduler thread starts and stops with the app (its lifespan), so run the app with a
    server that sends lifespan events (uvicorn does).
    """
    if engine.tokenizer is None:
        raise ValueError("the engine has no tokenizer; a server needs one to read text")
    limits = limits or ServeLimits()
    tools = check_tools(tools)
    scheduler = Scheduler(engine, limits.max_batch_size)
    tokenizer = engine.tokenizer
    fmt = chat_format_for(tokenizer)
    cfg = engine.model.config
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.close)

    # No /docs: the request bodies are parsed by hand (to cap their size first), so FastAPI's
    # generated schema would not describe them; the pydantic models in `schemas` do.
    app = FastAPI(title="buildlm", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    app.state.limits = limits
    install_error_handlers(app)
    app.add_middleware(WebGuard, policy=web or WebPolicy())
    app.add_middleware(Admission, max_connections=limits.max_connections)  # outermost

    # --- helpers ---

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise APIError(
                401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )  # fmt: skip

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(
                404, f"the model {name!r} does not exist; this server serves {model_name!r}",
                param="model", code="model_not_found",
            )  # fmt: skip

    async def parse(request: Request, schema: type) -> Any:
        check_key(request)
        body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
        return schema.model_validate_json(body)  # ValidationError -> 400 (errors.py)

    def model_card() -> dict[str, Any]:
        return {
            "id": model_name, "object": "model", "created": created, "owned_by": "buildlm",
            "context_length": cfg.context_length, "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads, "vocab_size": cfg.vocab_size, "chat_format": fmt.name,
            "tools": list(tools),
        }  # fmt: skip

    async def generate(request: Request, req: _GenerationRequest, work: Work, chat: bool):
        if scheduler.queued >= limits.max_queued:
            raise busy(f"{scheduler.queued} requests are waiting for the model, this server's "
                       "limit (--max-queued); retry shortly")  # fmt: skip
        if tools:
            work = dataclasses.replace(
                work, params=[dataclasses.replace(p, tools=tools) for p in work.params]
            )
        try:
            ticket = scheduler.submit(work.prompts, work.params, work.prompt_tokens)
        except ValueError as err:
            raise APIError(400, str(err)) from None
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if work.dropped_messages is not None:
            extra["dropped_messages"] = work.dropped_messages
            headers["X-Dropped-Messages"] = str(work.dropped_messages)
        builder = ResponseBuilder(model_name, chat, extra)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = _stream(ticket, builder, len(work.prompts), include_usage)
            # The stream cancels its ticket when it ends, but a stream that never starts (the
            # client left first) runs no code: cancel when it is thrown away, whatever happened.
            weakref.finalize(events, ticket.cancel)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
            )
        return await _whole(request, ticket, builder, len(work.prompts), headers)

    # --- routes ---

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await parse(request, ChatCompletionRequest)
        check_model(req.model)
        work = await run_in_threadpool(
            chat_work, req, tokenizer, fmt, limits, cfg.context_length, cfg.vocab_size
        )
        return await generate(request, req, work, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await parse(request, CompletionRequest)
        check_model(req.model)
        work = await run_in_threadpool(
            completion_work, req, tokenizer, limits, cfg.context_length, cfg.vocab_size
        )
        return await generate(request, req, work, chat=False)

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(request: Request, name: str):
        check_key(request)
        check_model(name)
        return model_card()

    @app.post("/v1/tokenize")
    async def tokenize(request: Request):
        req = await parse(request, InspectRequest)
        check_model(req.model)
        limit = limits.prompt_limit(cfg.context_length) * 4
        return await run_in_threadpool(introspect.tokenize, req, tokenizer, fmt, limit)

    @app.post("/v1/attention")
    async def attention(request: Request):
        req = await parse(request, AttentionRequest)
        check_model(req.model)
        ids, truncated = await run_in_threadpool(
            introspect.attention_ids, req, cfg, tokenizer, fmt, limits.max_attention_tokens
        )
        # The forward pass on the scheduler thread, the only one that runs the model.
        job = scheduler.call(introspect.attention_weights, engine.model, ids, req.layer, req.head)
        matrix = await asyncio.wrap_future(job)
        return await run_in_threadpool(
            introspect.attention_answer, req, cfg, tokenizer, ids, truncated, matrix
        )

    @app.get("/health")
    async def health():
        return {
            "status": "ok", "model": model_name, "auth_required": api_key is not None,
            "queued": scheduler.queued, "active_rows": scheduler.active_rows,
            "stats": asdict(scheduler.stats),
        }  # fmt: skip

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _stream(
    ticket: Ticket, builder: ResponseBuilder, n: int, include_usage: bool
) -> AsyncIterator[bytes]:
    """Server-sent events for one request; closing the stream early cancels the ticket."""
    try:
        opening = builder.role_chunk(n)
        if opening is not None:
            yield sse(opening)
        async for event in ticket.events():
            if isinstance(event, Failed):  # the headers are sent: report it in the stream
                yield sse(error_body(500, event.message))
                break
            if isinstance(event, Done):
                if include_usage:
                    yield sse(builder.usage_chunk(event.prompt_tokens, event.completion_tokens))
                break
            for piece in event:
                if piece.text:
                    yield sse(builder.chunk(piece.index, piece.text, None))
                if piece.finish_reason is not None:
                    yield sse(builder.chunk(piece.index, "", piece.finish_reason))
        yield sse("[DONE]")
    finally:  # normal end, client gone (the task is cancelled) or write failed: stop the rows
        ticket.cancel()


async def _whole(
    request: Request, ticket: Ticket, builder: ResponseBuilder, n: int, headers: dict[str, str]
) -> JSONResponse:
    """Collect every piece, then answer once; a client that leaves meanwhile cancels it."""
    texts = [""] * n
    reasons: list[str] = ["length"] * n
    watcher = asyncio.create_task(_disconnected(request))
    watcher.add_done_callback(lambda task: task.cancelled() or ticket.cancel())
    try:
        async for event in ticket.events():
            if isinstance(event, Failed):
                raise APIError(500, event.message)
            if isinstance(event, Done):
                body = builder.full(texts, reasons, event.prompt_tokens, event.completion_tokens)
                return JSONResponse(body, headers=headers)
            for piece in event:
                texts[piece.index] += piece.text
                if piece.finish_reason is not None:
                    reasons[piece.index] = piece.finish_reason
    finally:
        watcher.cancel()
        ticket.cancel()
    raise APIError(500, "the generation ended without a result")
