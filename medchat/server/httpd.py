"""The HTTP side of `medchat serve`: standard-library server, OpenAI routes, SSE streaming.

One model, many clients: each request waits its turn at a FIFO gate, then streams typed engine
events as chat-completion chunks. A client that goes away cancels its own generation only.
"""

from __future__ import annotations

import hmac
import json
import select
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

from medchat.config import GenerationSettings
from medchat.chatformat.messages import Message
from medchat.engine.backends.base import Backend
from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
from medchat.engine.session import stream_events
from medchat.errors import AdapterError, ConfigError, MedchatError, UsageError
from medchat.server import protocol
from medchat.server.gate import FifoGate, QueueFull
from medchat.server.protocol import ApiError, ChatRequest, ModelTable
from medchat.server.stop import StopMatcher

MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_TOKENS_LIMIT = 32768


@dataclass
class ServerConfig:
    api_key: str = ""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    max_tokens_limit: int = 0  # 0: the model's context length, else DEFAULT_MAX_TOKENS_LIMIT
    max_waiting: int = 64
    served_name: str = ""  # id clients use for the loaded model; "" = adapter name or model name
    system_prompt: str = ""  # given to requests that bring no system message of their own
    log: Callable[[str], None] | None = None  # one line per request; None = quiet


def model_table(backend: Backend, served_name: str = "") -> ModelTable:
    """The ids to serve: the loaded adapter (the default) and the bare base model."""
    info = backend.info
    base = info.model
    ids: dict[str, str | None] = {}
    if info.adapter:
        adapter_id = served_name or info.adapter.rstrip("/").rsplit("/", 1)[-1]
        ids[adapter_id] = info.adapter
        if base != adapter_id:
            ids[base] = None
        default = adapter_id
    else:
        default = served_name or base
        ids[default] = None
    return ModelTable(ids=ids, default=default, context_length=info.context_length)


class ChatServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one backend."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: bursts of clients connect at once

    def __init__(self, address: tuple[str, int], backend: Backend, config: ServerConfig | None = None) -> None:
        self.backend = backend
        self.config = config or ServerConfig()
        self.models = model_table(backend, self.config.served_name)
        self.active_adapter: str | None = backend.info.adapter or None
        self.max_tokens_limit = self.config.max_tokens_limit or backend.info.context_length or DEFAULT_MAX_TOKENS_LIMIT
        self.gate = FifoGate(self.config.max_waiting)
        self._cancels: set[threading.Event] = set()
        self._cancels_lock = threading.Lock()
        self.stopping = False
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, ChatHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up between requests is normal; anything else is logged, not printed raw."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        if self.config.log:
            self.config.log(f"error serving {client_address[0]}: {type(exc).__name__}: {exc}")

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"

    def track(self, cancel: threading.Event, add: bool) -> None:
        with self._cancels_lock:
            (self._cancels.add if add else self._cancels.discard)(cancel)

    def cancel_all(self) -> None:
        """Stop every running and waiting generation (shutdown)."""
        self.stopping = True
        with self._cancels_lock:
            for cancel in self._cancels:
                cancel.set()

    def wait_idle(self, timeout: float) -> bool:
        """After cancel_all: give running generations a moment to stop, so the model is not torn
        down under them. True if all ended in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cancels_lock:
                if not self._cancels:
                    return True
            time.sleep(0.05)
        return False

    def use_model(self, model_id: str) -> None:
        """Switch the backend to the adapter that ``model_id`` names (call while holding the gate)."""
        wanted = self.models.ids[model_id]
        if wanted != self.active_adapter:
            self.backend.set_adapter(wanted)
            self.active_adapter = wanted


class ClientWatch:
    """Sets ``cancel`` when the client closes its connection, even while no bytes are being written
    (waiting in the queue, or the model still reading the prompt)."""

    def __init__(self, sock: socket.socket, cancel: threading.Event, poll: float = 0.2) -> None:
        self._sock = sock
        self._cancel = cancel
        self._done = threading.Event()
        self._poll = poll
        self._thread = threading.Thread(target=self._run, name="medchat-client-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._poll):
            if client_gone(self._sock):
                self._cancel.set()
                return

    def stop(self) -> None:
        self._done.set()


def client_gone(sock: socket.socket) -> bool:
    """True if the peer closed the connection. Data waiting to be read (a pipelined request) is not."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE writes must leave at once
    timeout = 300  # seconds a socket read or write may block: idle keep-alive connections are closed
    server_version = "medchat"

    # -- routing --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        # One handler serves every request of a keep-alive connection: reset per-request state.
        self._started = time.perf_counter()
        self._status = 0
        self._headers_sent = False
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        routes = {
            "/health": {"GET": self._health},
            "/v1/models": {"GET": self._models},
            "/v1/chat/completions": {"POST": self._chat},
        }
        try:
            body = self._read_body()
            if path.startswith("/v1/models/"):
                routes[path] = {"GET": lambda _b, name=path[len("/v1/models/"):]: self._model(name)}
            if path not in routes:
                raise ApiError(404, f"no route {path}; see /v1/chat/completions, /v1/models, /health", code="not_found")
            handler = routes[path].get(method)
            if handler is None:
                allowed = ", ".join(routes[path])
                raise ApiError(405, f"{method} is not allowed on {path}; use {allowed}", code="method_not_allowed")
            if path.startswith("/v1/"):
                self._check_key()
            handler(body)
        except ApiError as err:
            self._send_json(err.status, err.body())
        except ClientGone:
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a bug must not drop the connection silently
            self._log(f"internal error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            if not getattr(self, "_headers_sent", False):
                self._send_json(500, protocol.error_body(f"internal error: {type(exc).__name__}", "server_error"))
            self.close_connection = True
        finally:
            self._log_request(method, path)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not supported; send Content-Length", code="length_required")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Content-Length is not a number", code="invalid_header") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True  # the unread body would poison the connection
            raise ApiError(413, f"request body is larger than {MAX_BODY} bytes", code="request_too_large")
        return self.rfile.read(length)

    def _check_key(self) -> None:
        key = self.server.config.api_key
        if not key:
            return
        given = self.headers.get("Authorization", "")
        token = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key; send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    # -- simple routes --------------------------------------------------------------------------
    def _health(self, _body: bytes) -> None:
        self._send_json(200, {"status": "ok", "model": self.server.models.default, "waiting": self.server.gate.waiting})

    def _models(self, _body: bytes) -> None:
        self._send_json(200, self.server.models.listing())

    def _model(self, name: str) -> None:
        from urllib.parse import unquote

        name = unquote(name)
        for entry in self.server.models.listing()["data"]:
            if entry["id"] == name:
                self._send_json(200, entry)
                return
        raise ApiError(404, f"the model '{name}' does not exist", param="model", code="model_not_found")

    # -- chat completions -----------------------------------------------------------------------
    def _chat(self, body: bytes) -> None:
        server = self.server
        request = protocol.parse_chat_request(body, server.models, server.config.generation, server.max_tokens_limit)
        try:
            request.generation.validate()
        except ConfigError as exc:
            raise ApiError(400, str(exc).replace("generation.", ""), code="invalid_value") from None
        cancel = threading.Event()
        server.track(cancel, True)
        watch = ClientWatch(self.connection, cancel)
        try:
            if server.stopping:
                raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down")
            try:
                got_turn = server.gate.acquire(cancel)
            except QueueFull as full:
                raise ApiError(
                    503, f"the server is busy ({full.args[0]} requests waiting); retry later",
                    type="server_error", code="queue_full",
                ) from None
            if not got_turn:
                raise ClientGone()
            try:
                try:
                    server.use_model(request.model)
                except MedchatError as exc:
                    raise ApiError(400, str(exc), param="model", code="adapter_error") from None
                messages = request.messages
                if server.config.system_prompt and not any(m.role == "system" for m in messages):
                    messages = (Message("system", server.config.system_prompt), *messages)
                if server.backend.info.context_length:  # counted under the gate: tokenizers are not thread-safe
                    request = protocol.fit_context(
                        request, server.backend.count_tokens(messages), server.backend.info.context_length
                    )
                events = stream_events(
                    server.backend, messages, request.generation, cancel,
                    continue_final=request.continue_final,
                )
                if request.stream:
                    self._stream(request, events, cancel)
                else:
                    self._complete(request, events, cancel)
            finally:
                server.gate.release()
        finally:
            watch.stop()
            server.track(cancel, False)

    def _complete(self, request: ChatRequest, events: Iterator, cancel: threading.Event) -> None:
        stop = StopMatcher(request.stop)
        answer: list[str] = []
        for event in events:
            if isinstance(event, AnswerDelta):
                answer.append(stop.feed(event.text))
                if stop.stopped:
                    cancel.set()
            elif isinstance(event, GenerationFailed):
                raise _failure(event)
            elif isinstance(event, GenerationDone):
                if cancel.is_set() and not stop.stopped:
                    raise ClientGone()
                answer.append(stop.flush())
                reason = "stop" if stop.stopped else protocol.openai_finish_reason(event.stats.finish_reason)
                self._send_json(
                    200,
                    protocol.completion(
                        protocol.completion_id(), int(time.time()), request.model,
                        event.reasoning, "".join(answer), reason, event.stats,
                    ),
                )

    def _stream(self, request: ChatRequest, events: Iterator, cancel: threading.Event) -> None:
        cid, created = protocol.completion_id(), int(time.time())
        stop = StopMatcher(request.stop)
        gone = False

        def send(delta: dict[str, Any], finish: str | None = None) -> None:
            nonlocal gone
            if gone:
                return
            try:
                if not self._headers_sent:
                    self._start_sse()
                    self._write_event(protocol.chunk(cid, created, request.model, {"role": "assistant", "content": ""}))
                self._write_event(protocol.chunk(cid, created, request.model, delta, finish))
            except ClientGone:
                gone = True
                cancel.set()  # stop the model; keep draining events so the backend ends cleanly

        for event in events:
            if isinstance(event, ReasoningDelta):
                if not stop.stopped:
                    send(protocol.reasoning_fields(event.text))
            elif isinstance(event, AnswerDelta):
                text = stop.feed(event.text)
                if text:
                    send({"content": text})
                if stop.stopped:
                    cancel.set()
            elif isinstance(event, GenerationFailed):
                if not self._headers_sent:
                    raise _failure(event)
                if not gone:
                    self._finish_sse(protocol.error_body(event.error, "server_error"))
                return
            elif isinstance(event, GenerationDone):
                if gone or (cancel.is_set() and not stop.stopped):
                    raise ClientGone()
                if tail := stop.flush():
                    send({"content": tail})
                reason = "stop" if stop.stopped else protocol.openai_finish_reason(event.stats.finish_reason)
                send({}, reason)
                if gone:
                    raise ClientGone()
                tail_event = protocol.usage_chunk(cid, created, request.model, event.stats) if request.include_usage else None
                self._finish_sse(tail_event)

    # -- writing --------------------------------------------------------------------------------
    _headers_sent = False

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self._status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self._headers_sent = True
        except OSError:
            self.close_connection = True

    def _start_sse(self) -> None:
        self._status = 200
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            if self._chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:  # HTTP/1.0 has no chunked encoding: the stream ends when the connection closes
                self.close_connection = True
                self.send_header("Connection", "close")
            self.end_headers()
        except OSError as exc:
            raise ClientGone() from exc
        self._headers_sent = True

    @property
    def _chunked(self) -> bool:
        return self.request_version != "HTTP/1.0"

    def _write_chunk(self, data: bytes) -> None:
        """One piece of the response body; ``b""`` ends it."""
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"
        try:
            self.wfile.write(data)
        except OSError as exc:
            self.close_connection = True
            raise ClientGone() from exc

    def _write_event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")

    def _finish_sse(self, last: dict[str, Any] | None) -> None:
        try:
            if last is not None:
                self._write_event(last)
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except ClientGone:
            pass

    # -- logging --------------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        if self.server.config.log:
            self.server.config.log(line)

    def _log_request(self, method: str, path: str) -> None:
        seconds = time.perf_counter() - getattr(self, "_started", time.perf_counter())
        self._log(f'{self.client_address[0]} "{method} {path}" {self._status or "-"} {seconds:.2f}s')

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, an unknown method) in the OpenAI shape."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # an unparsable request line: still answer with headers
        self._send_json(code, protocol.error_body(message or explain or "bad request", "invalid_request_error"))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """http.server's own messages (malformed request lines): through our log, not stderr."""
        self._log(format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # _log_request writes one line per request, with its duration


def _failure(event: GenerationFailed) -> ApiError:
    exc = event.exception
    if isinstance(exc, (UsageError, AdapterError, ConfigError)):
        return ApiError(400, event.error, code="invalid_request")
    if event.out_of_memory:
        return ApiError(503, event.error, type="server_error", code="out_of_memory")
    return ApiError(500, event.error, type="server_error", code="generation_failed")
