"""A backend that chats with any OpenAI-compatible server (vLLM, llama.cpp, `medchat serve`, ...).

HTTP through httpx (imported on first use, so `medchat --help` never loads it). Reasoning arrives
either pre-split (``reasoning_content`` or ``reasoning`` deltas: vLLM's reasoning parsers, `medchat
serve`) or inline as ``<think>`` tags in ``content``, which the engine's splitter separates like
local output.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence
from urllib.parse import urlsplit

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings
from medchat.engine.backends.base import (
    BackendInfo,
    Finished,
    PromptReady,
    RawText,
    StreamItem,
)
from medchat.engine.events import ReasoningDelta
from medchat.errors import AdapterError, BackendError, UsageError

if TYPE_CHECKING:
    import httpx

CONNECT_TIMEOUT = 5.0  # fail fast when nothing listens
READ_TIMEOUT = 600.0  # a big model may think a long time before its first token
MAX_ERROR_BODY = 65536  # bytes of an error answer read for its message


class EndpointBackend:
    """Streams chat completions from ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    ``model`` "auto" (or "") picks the first model the server lists. The server is asked for its
    model list at construction, so a wrong URL or key fails at once with one clear line.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        model: str = "auto",
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.api_key = api_key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._client: httpx.Client | None = None
        listing = self.list_models()
        self.served = [m.get("id", "") for m in listing if isinstance(m, dict)]
        if model in ("", "auto"):
            if not self.served:
                raise BackendError(f"{self.base_url} lists no models; pass --model NAME")
            model = self.served[0]
        elif self.served and model not in self.served:
            raise BackendError(
                f"{self.base_url} does not serve '{model}'; it serves: {', '.join(self.served)}"
            )
        self.base_model = model
        self.model = model
        context = next((m.get("max_model_len") for m in listing if isinstance(m, dict) and m.get("id") == model), 0)
        self.info = BackendInfo(
            backend="endpoint",
            model=model,
            device=urlsplit(self.base_url).netloc,
            context_length=context if isinstance(context, int) else 0,
        )

    # -- HTTP -----------------------------------------------------------------------------------
    def _http(self) -> httpx.Client:
        """One client per backend: its connection pool keeps the connection between requests."""
        if self._client is None:
            import httpx

            headers = {"Accept": "application/json, text/event-stream"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.Client(
                headers=headers,
                timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                verify=ssl.create_default_context(),  # the system's certificates, as browsers use
                trust_env=False,  # connect directly, as before: a proxy variable must not capture localhost
            )
        return self._client

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """Send a request; return the (unread, streaming) response for a 2xx, else raise BackendError."""
        import httpx

        client = self._http()
        try:
            # json.dumps escapes non-ASCII, so even a lone surrogate in pasted text encodes.
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else None
            request = client.build_request(method, self.base_url + path, content=data, headers=headers)
            response = client.send(request, stream=True)
        except httpx.TimeoutException:
            raise BackendError(f"cannot reach {self.base_url}: timed out") from None
        except httpx.InvalidURL as exc:
            raise UsageError(f"endpoint {self.base_url!r} is not a valid URL: {exc}") from None
        except httpx.TransportError as exc:
            raise BackendError(f"cannot reach {self.base_url}: {_reason(exc)}") from None
        if response.status_code >= 300:
            try:
                raw = b""
                for piece in response.iter_raw():
                    raw += piece
                    if len(raw) >= MAX_ERROR_BODY:
                        break
            except httpx.HTTPError:
                pass
            finally:
                response.close()
            raise BackendError(http_error(self.base_url, response.status_code, raw[:MAX_ERROR_BODY]))
        return response

    def list_models(self) -> list[dict[str, Any]]:
        import httpx

        response = self._send("GET", "/models")
        try:
            payload = json.loads(response.read())
        except (ValueError, httpx.HTTPError):
            raise BackendError(f"{self.base_url}/models did not answer JSON: is this an OpenAI-compatible API?") from None
        finally:
            response.close()
        data = payload.get("data") if isinstance(payload, dict) else None
        return data if isinstance(data, list) else []

    # -- Backend protocol -----------------------------------------------------------------------
    def request_body(
        self, messages: Sequence[Message], settings: GenerationSettings, continue_final: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_new_tokens,
        }
        # Extensions that vLLM, llama.cpp and `medchat serve` accept; sent only when not the default.
        if settings.top_k > 0:
            body["top_k"] = settings.top_k
        if settings.seed >= 0:
            body["seed"] = settings.seed
        if settings.repetition_penalty != 1.0:
            body["repetition_penalty"] = settings.repetition_penalty
        if continue_final:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return body

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event,
        continue_final: bool = False,
    ) -> Iterator[StreamItem]:
        import httpx

        response = self._send("POST", "/chat/completions", self.request_body(messages, settings, continue_final))
        done = threading.Event()
        sock = _socket_of(response)

        def close_on_cancel() -> None:
            # The reader may be blocked waiting for the next token: shutting the socket wakes it.
            while not done.wait(0.1):
                if cancel.is_set():
                    try:
                        if sock is not None:
                            sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return

        threading.Thread(target=close_on_cancel, name="medchat-endpoint-cancel", daemon=True).start()
        yield PromptReady(0)
        produced = 0
        reason = "stop"
        usage: dict[str, Any] = {}
        try:
            streamed = "json" not in response.headers.get("content-type", "")
            # A server that ignores stream=true answers with one JSON completion instead.
            ended: list[bool] = [] if streamed else [True]  # [DONE] or a finish_reason: the reply is whole
            payloads = sse_payloads(response.iter_lines(), ended) if streamed else [as_chunk(json.loads(response.read()))]
            for payload in payloads:
                if cancel.is_set():
                    break
                if payload.get("error"):
                    error = payload["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise BackendError(f"{self.base_url} failed while generating: {message}")
                if isinstance(payload.get("usage"), dict):
                    usage = payload["usage"]
                for choice in payload.get("choices") or ():
                    delta = choice.get("delta") or {}
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if isinstance(thought, str) and thought:
                        produced += 1
                        yield ReasoningDelta(thought, 1)
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        produced += 1
                        yield RawText(text, 1)
                    if choice.get("finish_reason"):
                        ended.append(True)
                        reason = "length" if choice["finish_reason"] == "length" else "stop"
            if not ended and not cancel.is_set():  # the connection dropped mid-reply (server died)
                raise BackendError(f"{self.base_url} closed the stream before the reply was finished")
        except (OSError, httpx.HTTPError, ValueError) as exc:
            if not cancel.is_set():
                raise BackendError(f"{self.base_url} closed the stream: {_reason(exc)}") from None
        finally:
            done.set()
            response.close()
        if cancel.is_set():
            yield Finished(produced, "cancelled")
            return
        if usage.get("prompt_tokens"):
            # Servers report usage only at the end; a second PromptReady carries the real prompt size.
            yield PromptReady(int(usage["prompt_tokens"]))
        yield Finished(int(usage.get("completion_tokens") or produced), reason)  # type: ignore[arg-type]

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return 0  # the OpenAI API has no tokenizer endpoint

    @contextlib.contextmanager
    def adapter_off(self) -> Iterator[None]:
        """Compare mode: ask for the base model's served name for a while, then the adapter's again."""
        saved = self.model
        self.model = self.base_model
        try:
            yield
        finally:
            self.model = saved

    def set_adapter(self, adapter: str | None) -> None:
        """Serve-side LoRA: the adapter is a model name the server lists (vLLM ``--lora-modules``)."""
        if adapter is None:
            self.model = self.base_model
        else:
            if "/" in adapter or adapter.startswith("."):
                raise AdapterError(
                    f"an endpoint cannot load the adapter folder {adapter}; serve it there "
                    "(vLLM: --lora-modules NAME=PATH) and pass NAME"
                )
            if self.served and adapter not in self.served:
                raise AdapterError(
                    f"{self.base_url} does not serve an adapter named '{adapter}'; it serves: {', '.join(self.served)}"
                )
            self.model = adapter
        self.info = BackendInfo(**{**self.info.__dict__, "model": self.base_model, "adapter": adapter or ""})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def normalize_base_url(url: str) -> str:
    """``host:8000`` or ``http://host:8000`` -> ``http://host:8000/v1``; an explicit path is kept."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: http://[::1
        raise UsageError(f"endpoint must be an http(s) URL like http://127.0.0.1:8000/v1, got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"endpoint must be an http(s) URL like http://127.0.0.1:8000/v1, got {url!r}")
    try:
        parts.port
    except ValueError:
        raise UsageError(f"endpoint {url!r} has an invalid port") from None
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def http_error(base_url: str, status: int, raw: bytes) -> str:
    """One line for a non-2xx answer, using the server's OpenAI-shaped message when there is one."""
    message = ""
    try:
        payload = json.loads(raw)
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
        elif isinstance(error, str):
            message = error
        elif isinstance(payload, dict) and isinstance(payload.get("message"), str):
            message = payload["message"]
    except ValueError:
        message = raw.decode("utf-8", "replace").strip().splitlines()[0] if raw.strip() else ""
    if status == 401:
        hint = "the server wants an API key (--api-key)" if not message else message
        return f"{base_url} rejected the request (401 unauthorized): {hint}"
    return f"{base_url} answered HTTP {status}" + (f": {message}" if message else "")


def as_chunk(completion: Any) -> dict[str, Any]:
    """A non-streamed chat completion, reshaped as one streamed chunk."""
    if not isinstance(completion, dict):
        raise ValueError("the endpoint answered JSON that is not an object")
    choices = []
    for choice in completion.get("choices") or ():
        message = choice.get("message") or {}
        choices.append({"delta": message, "finish_reason": choice.get("finish_reason")})
    return {"choices": choices, "usage": completion.get("usage"), "error": completion.get("error")}


def sse_payloads(lines: Iterable[str], done: list[bool] | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream (its lines, as httpx's ``iter_lines`` gives
    them), up to ``data: [DONE]`` (which appends True to ``done``)."""
    data: list[str] = []
    for text in lines:
        if text.startswith("data:"):
            data.append(text[5:].removeprefix(" "))
            continue
        if text or not data:
            continue  # comments (": ping"), event names, ids
        joined, data = "\n".join(data), []
        if joined.strip() == "[DONE]":
            if done is not None:
                done.append(True)
            return
        payload = json.loads(joined)
        if isinstance(payload, dict):
            yield payload
    if data and (joined := "\n".join(data)).strip() not in ("", "[DONE]"):
        payload = json.loads(joined)
        if isinstance(payload, dict):
            yield payload


def _socket_of(response: httpx.Response) -> socket.socket | None:
    """The TCP socket under a streaming response (httpcore's ``network_stream`` extension)."""
    stream = response.extensions.get("network_stream")
    try:
        sock = stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # noqa: BLE001 - another transport: cancel then waits for the next token
        return None
    return sock if isinstance(sock, socket.socket) else None


def _reason(exc: BaseException) -> str:
    """Why a request failed, in a few words: the OS's reason under httpx's wrappers when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused (is the server running?)"
        if isinstance(seen, ssl.SSLError):
            return f"TLS error: {seen.reason or seen}"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
