"""The model side of `medchat serve`: one loaded backend, requests taking turns on it.

No HTTP here. The backend is synchronous, so every request runs in a (pooled) thread: it waits its
turn at the FIFO gate, then runs the engine and hands each event to the event loop through a
:class:`Job`, which never blocks either side. The HTTP layer (``app.py``) reads the events back and
sets ``job.cancel`` when the client goes away; the thread then stops the model, or leaves the queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings
from medchat.engine.backends.base import Backend
from medchat.engine.session import stream_events
from medchat.errors import ConfigError, MedchatError
from medchat.server import protocol
from medchat.server.gate import FifoGate, QueueFull
from medchat.server.protocol import ApiError, ChatRequest, ModelTable

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
    # Connections. Idle ones (no request under way) are closed after these many seconds, and the
    # oldest idle one is dropped when a new connection would pass max_connections, so clients that
    # connect and send nothing can neither exhaust the server nor keep others out.
    max_connections: int = 0  # 0: max_waiting + 64 (room for the queue, /health and 503 answers)
    keep_alive_s: int = 5  # between requests on one connection
    header_timeout_s: float = 10.0  # from connecting (or the last response) to a complete request head


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


class Left:
    """Posted instead of events when the request was cancelled while waiting in the queue."""


LEFT = Left()


class Job:
    """One request's generation: a thread puts items, the event loop takes them in batches.

    ``put`` never blocks the generating thread and wakes the loop at most once per batch: while
    the loop has not come round to read, further items just join the batch.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.cancel = threading.Event()
        self._loop = loop
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._signalled = False

    def put(self, item: Any) -> None:
        """From the generating thread."""
        with self._lock:
            self._items.append(item)
            if self._signalled:
                return
            self._signalled = True
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: the server has stopped, nobody reads any more
            pass

    async def take(self) -> list[Any]:
        """On the event loop: every item put since the last take (waits for at least one)."""
        while True:
            self._wake.clear()
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._signalled = False
                    return items
                self._signalled = False
            await self._wake.wait()


class ChatService:
    """One backend, its served model ids, the queue in front of it, and the generations under way."""

    def __init__(self, backend: Backend, config: ServerConfig | None = None) -> None:
        self.backend = backend
        self.config = config or ServerConfig()
        self.models = model_table(backend, self.config.served_name)
        self.active_adapter: str | None = backend.info.adapter or None
        self.max_tokens_limit = self.config.max_tokens_limit or backend.info.context_length or DEFAULT_MAX_TOKENS_LIMIT
        self.gate = FifoGate(self.config.max_waiting)
        self._cancels: set[threading.Event] = set()
        self._cancels_lock = threading.Lock()
        self.stopping = False
        # A thread per request under way: the one generating, and those waiting at the gate. Two
        # more than the queue holds, so a request past the limit still gets its 503 at once.
        # Threads are reused (starting one per request cost ~10 ms of the event loop's time).
        self._threads = ThreadPoolExecutor(self.config.max_waiting + 2, thread_name_prefix="medchat-generate")

    def log(self, line: str) -> None:
        if self.config.log:
            self.config.log(line)

    def parse(self, raw: bytes) -> ChatRequest:
        """A request body, validated (ApiError 4xx naming the field otherwise)."""
        request = protocol.parse_chat_request(raw, self.models, self.config.generation, self.max_tokens_limit)
        try:
            request.generation.validate()
        except ConfigError as exc:
            raise ApiError(400, str(exc).replace("generation.", ""), code="invalid_value") from None
        return request

    # -- generations ----------------------------------------------------------------------------
    def submit(self, request: ChatRequest, loop: asyncio.AbstractEventLoop) -> Job:
        """Start ``request``'s generation in a thread; its events arrive through the returned Job.

        The job yields ApiError (refused before any output: queue full, bad adapter, prompt too
        long), LEFT (cancelled while queued), or engine events ending in GenerationDone/Failed.
        """
        if self.stopping:
            raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down")
        job = Job(loop)
        self._track(job.cancel, True)
        try:
            self._threads.submit(self._generate, request, job)
        except BaseException:
            self._track(job.cancel, False)
            raise
        return job

    def _generate(self, request: ChatRequest, job: Job) -> None:
        try:
            try:
                got_turn = self.gate.acquire(job.cancel)
            except QueueFull as full:
                raise ApiError(
                    503, f"the server is busy ({full.args[0]} requests waiting); retry later",
                    type="server_error", code="queue_full",
                ) from None
            if not got_turn:
                job.put(LEFT)
                return
            try:
                self._run(request, job)
            finally:
                self.gate.release()
        except ApiError as err:
            job.put(err)
        except Exception as exc:  # noqa: BLE001 - a bug must reach the client as a 500, not a hang
            self.log(f"internal error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            job.put(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error", code="server_error"))
        finally:
            self._track(job.cancel, False)

    def _run(self, request: ChatRequest, job: Job) -> None:
        """Holding the gate: pick the model, check the context window, stream the engine's events."""
        try:
            self.use_model(request.model)
        except MedchatError as exc:
            raise ApiError(400, str(exc), param="model", code="adapter_error") from None
        messages = request.messages
        if self.config.system_prompt and not any(m.role == "system" for m in messages):
            messages = (Message("system", self.config.system_prompt), *messages)
        if self.backend.info.context_length:  # counted under the gate: tokenizers are not thread-safe
            request = protocol.fit_context(request, self.backend.count_tokens(messages), self.backend.info.context_length)
        for event in stream_events(
            self.backend, messages, request.generation, job.cancel, continue_final=request.continue_final
        ):
            job.put(event)

    def use_model(self, model_id: str) -> None:
        """Switch the backend to the adapter that ``model_id`` names (call while holding the gate)."""
        wanted = self.models.ids[model_id]
        if wanted != self.active_adapter:
            self.backend.set_adapter(wanted)
            self.active_adapter = wanted

    def _track(self, cancel: threading.Event, add: bool) -> None:
        with self._cancels_lock:
            (self._cancels.add if add else self._cancels.discard)(cancel)

    def cancel_all(self) -> None:
        """Stop every running and waiting generation (shutdown)."""
        self.stopping = True
        with self._cancels_lock:
            for cancel in self._cancels:
                cancel.set()

    def close(self) -> None:
        """After cancel_all and wait_idle: let the generation threads go."""
        self._threads.shutdown(wait=False, cancel_futures=True)

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
