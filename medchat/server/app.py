"""The HTTP side of `medchat serve`: a FastAPI app with the OpenAI routes, streaming over SSE.

Routes: ``POST /v1/chat/completions`` (streamed or not), ``GET /v1/models`` (and one model by id),
``GET /health``. Every error is ``{"error": {message, type, param, code}}`` with a 4xx/5xx status.
The model side (queue, threads, the engine) lives in ``service.py``; this module only translates
between HTTP and engine events, and notices clients that leave.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import traceback
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
from medchat.errors import AdapterError, ConfigError, UsageError
from medchat.server import protocol
from medchat.server.protocol import ApiError, ChatRequest
from medchat.server.service import LEFT, ChatService, Job
from medchat.server.stop import StopMatcher

MAX_BODY = 4 * 1024 * 1024
METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}  # others (HEAD, OPTIONS, ...): 501, as before
ROUTES = "/v1/chat/completions, /v1/models, /health"
CLIENT_LEFT = 499  # logged status of a request whose client went away (nginx's convention)


class JsonResponse(Response):
    """JSON that cannot fail to encode: text with a lone surrogate becomes U+FFFD, not a 500."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _json(content)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def error_response(err: ApiError, headers: dict[str, str] | None = None) -> JsonResponse:
    return JsonResponse(err.body(), status_code=err.status, headers=headers)


class ClientGone(Exception):
    """The client disconnected (or the server is stopping): nobody is waiting for this answer."""


def create_app(service: ChatService) -> FastAPI:
    """The ASGI app serving ``service``'s model (run it with uvicorn; see ``run.py``)."""
    app = FastAPI(title="medchat", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.add_middleware(FrontDoor, service=service)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError) -> Response:
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _routing_error(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            err = ApiError(405, f"{request.method} is not allowed on {path}; use {allowed}", code="method_not_allowed")
        elif exc.status_code == 404:
            err = ApiError(404, f"no route {path}; see {ROUTES}", code="not_found")
        else:
            err = ApiError(exc.status_code, str(exc.detail), code=None)
        return error_response(err)

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception) -> Response:
        service.log(f"internal error: {type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}")
        err = ApiError(500, f"internal error: {type(exc).__name__}", type="server_error", code="server_error")
        return error_response(err, headers={"Connection": "close"})

    async def require_key(request: Request) -> None:  # async: FastAPI would run a plain def in a thread
        """``--api-key``: /v1/* needs ``Authorization: Bearer KEY`` (compared in constant time)."""
        key = service.config.api_key
        if not key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode("utf-8", "replace"), key.encode()):
            raise ApiError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'", code="invalid_api_key")

    keyed = [Depends(require_key)]

    @app.get("/health")
    async def health() -> Response:
        return JsonResponse({"status": "ok", "model": service.models.default, "waiting": service.gate.waiting})

    @app.get("/v1/models", dependencies=keyed)
    async def models() -> Response:
        return JsonResponse(service.models.listing())

    @app.get("/v1/models/{name:path}", dependencies=keyed)
    async def model(name: str) -> Response:
        for entry in service.models.listing()["data"]:
            if entry["id"] == name:
                return JsonResponse(entry)
        raise ApiError(404, f"the model '{name}' does not exist", param="model", code="model_not_found")

    @app.post("/v1/chat/completions", dependencies=keyed)
    async def chat_completions(request: Request) -> Response:
        try:
            raw = await read_body(request)
        except ClientDisconnect:
            return Response(status_code=CLIENT_LEFT)
        chat = service.parse(raw)
        job = service.submit(chat, asyncio.get_running_loop())
        # Until the response starts, this task notices a client that leaves (also while it waits in
        # the queue); once it streams, StreamingResponse's own listener does, and ends the body.
        watch = asyncio.ensure_future(cancel_on_disconnect(request.receive, job))
        try:
            if chat.stream:
                return await start_stream(service, chat, job)
            return await complete(chat, job)
        except ClientGone:
            job.cancel.set()
            if service.stopping:
                return error_response(_shutting_down())
            return Response(status_code=CLIENT_LEFT)
        except BaseException:
            job.cancel.set()
            raise
        finally:
            watch.cancel()

    return app


async def read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"request body is larger than {MAX_BODY} bytes", code="request_too_large")
    return bytes(body)


async def cancel_on_disconnect(receive: Receive, job: Job) -> None:
    """Set ``job.cancel`` when the client disconnects (the request body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            job.cancel.set()
            return


def _shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", type="server_error", code="shutting_down")


def _failure(event: GenerationFailed) -> ApiError:
    exc = event.exception
    if isinstance(exc, (UsageError, AdapterError, ConfigError)):
        return ApiError(400, event.error, code="invalid_request")
    if event.out_of_memory:
        return ApiError(503, event.error, type="server_error", code="out_of_memory")
    return ApiError(500, event.error, type="server_error", code="generation_failed")


# -- non-streaming ----------------------------------------------------------------------------------

async def complete(chat: ChatRequest, job: Job) -> Response:
    """Collect the whole reply, then answer one chat.completion object."""
    stop = StopMatcher(chat.stop)
    answer: list[str] = []
    while True:
        for item in await job.take():
            if isinstance(item, AnswerDelta):
                answer.append(stop.feed(item.text))
                if stop.stopped:
                    job.cancel.set()  # the rest of the reply is not wanted
            elif isinstance(item, ApiError):
                raise item
            elif isinstance(item, GenerationFailed):
                raise _failure(item)
            elif item is LEFT:
                raise ClientGone()
            elif isinstance(item, GenerationDone):
                if job.cancel.is_set() and not stop.stopped:
                    raise ClientGone()
                answer.append(stop.flush())
                reason = "stop" if stop.stopped else protocol.openai_finish_reason(item.stats.finish_reason)
                return JsonResponse(
                    protocol.completion(
                        protocol.completion_id(), int(time.time()), chat.model,
                        item.reasoning, "".join(answer), reason, item.stats,
                    )
                )


# -- streaming ---------------------------------------------------------------------------------------

def sse_event(payload: dict[str, Any] | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else _json(payload)
    return b"data: " + data + b"\n\n"


DONE = sse_event("[DONE]")


class ChunkStream:
    """Engine events -> ``chat.completion.chunk`` SSE events, the way OpenAI-compatible servers send
    them: a first chunk with the role, reasoning deltas, answer deltas, the finish reason, usage
    (if asked for), ``[DONE]``. Anything that fails before the first chunk raises ApiError instead,
    so the client gets a proper error status."""

    def __init__(self, chat: ChatRequest, job: Job) -> None:
        self.chat, self.job = chat, job
        self.cid, self.created = protocol.completion_id(), int(time.time())
        self.stop = StopMatcher(chat.stop)
        self.started = False  # a chunk went out: the status is 200 from here on
        self.finished = False  # [DONE] went out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> list[bytes]:
        out = []
        if not self.started:
            self.started = True
            out.append(sse_event(protocol.chunk(self.cid, self.created, self.chat.model, {"role": "assistant", "content": ""})))
        out.append(sse_event(protocol.chunk(self.cid, self.created, self.chat.model, delta, finish)))
        return out

    def end(self, last: dict[str, Any] | None = None) -> list[bytes]:
        self.finished = True
        return ([sse_event(last)] if last is not None else []) + [DONE]

    def feed(self, item: Any) -> list[bytes]:
        if isinstance(item, ReasoningDelta):
            return [] if self.stop.stopped else self._chunk(protocol.reasoning_fields(item.text))
        if isinstance(item, AnswerDelta):
            text = self.stop.feed(item.text)
            if self.stop.stopped:
                self.job.cancel.set()
            return self._chunk({"content": text}) if text else []
        if isinstance(item, (GenerationFailed, ApiError)):
            err = _failure(item) if isinstance(item, GenerationFailed) else item
            if not self.started:
                raise err
            return self.end(protocol.error_body(err.message, "server_error"))
        if item is LEFT:
            raise ClientGone()
        if isinstance(item, GenerationDone):
            if self.job.cancel.is_set() and not self.stop.stopped:
                raise ClientGone()
            out = []
            if tail := self.stop.flush():
                out += self._chunk({"content": tail})
            reason = "stop" if self.stop.stopped else protocol.openai_finish_reason(item.stats.finish_reason)
            out += self._chunk({}, reason)
            usage = None
            if self.chat.include_usage:
                usage = protocol.usage_chunk(self.cid, self.created, self.chat.model, item.stats)
            return out + self.end(usage)
        return []


async def start_stream(service: ChatService, chat: ChatRequest, job: Job) -> Response:
    """Wait for the first output (or an error, which becomes a JSON error status), then stream."""
    stream = ChunkStream(chat, job)
    head: list[bytes] = []
    while not stream.started:
        for item in await job.take():
            head += stream.feed(item)
    return StreamingResponse(
        stream_body(service, stream, head),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},  # no buffering proxies
        # Runs when the response ends, also when the client left before the body started.
        background=BackgroundTask(job.cancel.set),
    )


async def stream_body(service: ChatService, stream: ChunkStream, head: list[bytes]) -> AsyncIterator[bytes]:
    try:
        if head:
            yield b"".join(head)
        while not stream.finished:
            out: list[bytes] = []
            try:
                for item in await stream.job.take():
                    out += stream.feed(item)
            except ClientGone:
                if not service.stopping:
                    return  # the client left: nobody to tell
                out += stream.end(_shutting_down().body())
            if out:  # everything that arrived together leaves in one write
                yield b"".join(out)
    finally:
        stream.job.cancel.set()  # a client that left mid-stream stops its generation


class FrontDoor:
    """ASGI middleware in front of the routes: one log line per request (``--log-requests``),
    501 for methods no route uses, 413 for a body announced too large (before reading it), and
    ``/v1/models/`` treated as ``/v1/models``."""

    def __init__(self, app: ASGIApp, service: ChatService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method, path = scope["method"], scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_and_note)
            else:
                await self.app(scope, receive, send_and_note)
        finally:
            if self.service.config.log:
                client = (scope.get("client") or ("-",))[0]
                seconds = time.perf_counter() - started
                self.service.log(f'{client} "{method} {scope["path"]}" {status or "-"} {seconds:.2f}s')

    @staticmethod
    def _refusal(scope: Scope) -> Response | None:
        method = scope["method"]
        if method not in METHODS:
            return error_response(ApiError(501, f"method {method} is not supported", code="method_not_supported"),
                                  headers={"Connection": "close"})
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_large = int(length) > MAX_BODY
            except ValueError:
                return error_response(ApiError(400, "Content-Length is not a number", code="invalid_header"),
                                      headers={"Connection": "close"})
            if too_large:  # refused unread; the connection closes, since the body would follow
                return error_response(
                    ApiError(413, f"request body is larger than {MAX_BODY} bytes", code="request_too_large"),
                    headers={"Connection": "close"},
                )
        return None
