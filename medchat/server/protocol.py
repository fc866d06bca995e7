"""The OpenAI chat-completions wire format: validate a request, build responses and error bodies.

Pure functions, no sockets, so every rule here is unit-testable. Field names follow the OpenAI API;
reasoning travels in ``reasoning_content`` (the schema of vLLM's deepseek_r1 reasoning parser), mirrored
in ``reasoning`` (the name newer vLLM releases use).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from medchat.config import GenerationSettings
from medchat.chatformat.messages import Message
from medchat.engine.events import GenerationStats

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4
MAX_SEED = 2**63 - 1


class ApiError(Exception):
    """An error the client receives as ``{"error": {message, type, param, code}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - the OpenAI field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completions request."""

    model: str  # the served model id it names
    messages: tuple[Message, ...]
    generation: GenerationSettings
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    continue_final: bool = False
    max_tokens_given: bool = False  # False: the server's default budget, which may shrink to fit


@dataclass
class ModelTable:
    """The model ids this server answers to; each maps to an adapter (None = the bare base model)."""

    ids: dict[str, str | None]
    default: str
    created: int = field(default_factory=lambda: int(time.time()))
    context_length: int = 0

    def listing(self) -> dict[str, Any]:
        data = []
        for model_id in self.ids:
            entry: dict[str, Any] = {
                "id": model_id,
                "object": "model",
                "created": self.created,
                "owned_by": "medchat",
            }
            if self.context_length:
                entry["max_model_len"] = self.context_length
            data.append(entry)
        return {"object": "list", "data": data}


# ---------------------------------------------------------------------------------------------
# Request validation

def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _number(body: Mapping, key: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"'{key}' must be a number, got {_type_name(value)}", key, "invalid_type")
    if value != value or (value <= lo if lo_open else value < lo) or value > hi:
        low = f"> {lo}" if lo_open else f">= {lo}"
        raise bad(f"'{key}' must be {low} and <= {hi}, got {value}", key)
    return float(value)


def _integer(body: Mapping, key: str, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{key}' must be an integer, got {_type_name(value)}", key, "invalid_type")
    if not lo <= value <= hi:
        raise bad(f"'{key}' must be between {lo} and {hi}, got {value}", key)
    return value


def _flag(body: Mapping, key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad(f"'{key}' must be true or false, got {_type_name(value)}", key, "invalid_type")
    return value


def _content(value: Any, where: str, role: str) -> str:
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return ""
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise bad(f"{where}[{j}] must be an object with a 'type'", f"{where}[{j}]", "invalid_type")
            if part["type"] != "text":
                raise bad(
                    f"{where}[{j}]: content type '{part['type']}' is not supported; send text",
                    f"{where}[{j}].type",
                    "unsupported_content",
                )
            if not isinstance(part.get("text"), str):
                raise bad(f"{where}[{j}].text must be a string", f"{where}[{j}].text", "invalid_type")
            parts.append(part["text"])
        return "".join(parts)
    raise bad(f"{where} must be a string or an array of text parts, got {_type_name(value)}", where, "invalid_type")


def _messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        raise bad("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(value, list):
        raise bad(f"'messages' must be an array, got {_type_name(value)}", "messages", "invalid_type")
    if not value:
        raise bad("'messages' must contain at least one message", "messages", "empty_array")
    out = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object, got {_type_name(item)}", where, "invalid_type")
        role = item.get("role")
        if not isinstance(role, str):
            raise bad(f"{where}.role must be a string", f"{where}.role", "invalid_type")
        if role not in ROLES:
            raise bad(
                f"{where}.role '{role}' is not supported; use system, user or assistant",
                f"{where}.role",
                "invalid_role",
            )
        # An assistant turn's earlier reasoning (reasoning_content) is never sent back to the model.
        out.append(Message(ROLES[role], _content(item.get("content"), f"{where}.content", role)))  # type: ignore[arg-type]
    return tuple(out)


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad("'stop' must be a string or an array of strings", "stop", "invalid_type")
    if len(items) > MAX_STOPS:
        raise bad(f"'stop' may hold at most {MAX_STOPS} strings, got {len(items)}", "stop")
    if any(not s for s in items):
        raise bad("'stop' strings must not be empty", "stop")
    return tuple(items)


def _unsupported(body: Mapping) -> None:
    """Reject features medchat cannot honour, instead of silently answering something else."""
    n = _integer(body, "n", 1, 128)
    if n not in (None, 1):
        raise bad("only n=1 is supported", "n")
    if body.get("tools"):
        raise bad("tools are not supported by this server", "tools", "unsupported_parameter")
    if _flag(body, "logprobs"):
        raise bad("logprobs are not supported by this server", "logprobs", "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "text":
            raise bad("only response_format {\"type\": \"text\"} is supported", "response_format", "unsupported_parameter")


def parse_chat_request(
    raw: bytes,
    models: ModelTable,
    defaults: GenerationSettings,
    max_tokens_limit: int,
) -> ChatRequest:
    """Validate a request body; raises ApiError (4xx) naming the first bad field."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"request body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise bad(f"request body must be a JSON object, got {_type_name(body)}", None, "invalid_type")

    model = body.get("model", models.default)
    if model is None:
        model = models.default
    if not isinstance(model, str):
        raise bad(f"'model' must be a string, got {_type_name(model)}", "model", "invalid_type")
    if model not in models.ids:
        raise ApiError(
            404,
            f"the model '{model}' does not exist; this server serves: {', '.join(models.ids)}",
            param="model",
            code="model_not_found",
        )
    messages = _messages(body.get("messages"))
    _unsupported(body)
    stream = bool(_flag(body, "stream"))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad("'stream_options' must be an object", "stream_options", "invalid_type")
    include_usage = bool(_flag(options or {}, "include_usage"))
    continue_final = bool(_flag(body, "continue_final_message"))
    if continue_final and messages[-1].role != "assistant":
        raise bad("continue_final_message needs an assistant message last", "continue_final_message")

    for key in ("presence_penalty", "frequency_penalty"):  # accepted for compatibility; not applied
        _number(body, key, -2.0, 2.0)
    changes: dict[str, Any] = {}
    if (t := _number(body, "temperature", 0.0, 2.0)) is not None:
        changes["temperature"] = t
    if (p := _number(body, "top_p", 0.0, 1.0, lo_open=True)) is not None:
        changes["top_p"] = p
    if (k := _integer(body, "top_k", -1, 1_000_000)) is not None:
        changes["top_k"] = max(k, 0)  # vLLM's -1 and our 0 both mean "off"
    if (r := _number(body, "repetition_penalty", 0.0, 10.0, lo_open=True)) is not None:
        changes["repetition_penalty"] = r
    if (seed := _integer(body, "seed", -(2**63), MAX_SEED)) is not None:
        if seed < 0:
            raise bad(f"'seed' must be >= 0, got {seed}", "seed")
        changes["seed"] = seed
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if (m := _integer(body, key, -(2**63), 2**63)) is not None:
        if not 1 <= m <= max_tokens_limit:
            raise bad(f"'{key}' must be between 1 and {max_tokens_limit}, got {m}", key)
        changes["max_new_tokens"] = m
    generation = dataclasses.replace(defaults, **changes)
    return ChatRequest(
        model=model,
        messages=messages,
        generation=generation,
        stream=stream,
        include_usage=include_usage,
        stop=_stops(body.get("stop")),
        continue_final=continue_final,
        max_tokens_given="max_new_tokens" in changes,
    )


# ---------------------------------------------------------------------------------------------
# Responses

def fit_context(request: ChatRequest, prompt_tokens: int, context_length: int) -> ChatRequest:
    """Check the prompt and the token budget against the model's context window (0 = unknown)."""
    if not context_length or not prompt_tokens:
        return request
    budget = request.generation.max_new_tokens
    if prompt_tokens >= context_length:
        raise ApiError(
            400,
            f"the prompt is {prompt_tokens} tokens, but the model's context window is {context_length}; "
            "send fewer or shorter messages",
            param="messages",
            code="context_length_exceeded",
        )
    room = context_length - prompt_tokens
    if budget <= room:
        return request
    if request.max_tokens_given:
        raise ApiError(
            400,
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({budget}) exceeds the model's context "
            f"window ({context_length}); ask for at most {room}",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return dataclasses.replace(request, generation=dataclasses.replace(request.generation, max_new_tokens=room))


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def openai_finish_reason(reason: str) -> str:
    return "length" if reason in {"length", "length_in_reasoning"} else "stop"


def usage(stats: GenerationStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": stats.reasoning_tokens},
    }


def reasoning_fields(text: str | None) -> dict[str, Any]:
    """Reasoning under both names clients read: ``reasoning_content`` (DeepSeek, vLLM's deepseek_r1
    parser until late 2025, most clients) and ``reasoning`` (vLLM since then, OpenRouter). Clients read
    one of them (``reasoning_content ?? reasoning``), never both."""
    return {"reasoning_content": text, "reasoning": text}


def chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(cid: str, created: int, model: str, stats: GenerationStats) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(stats),
    }


def completion(
    cid: str, created: int, model: str, reasoning: str, answer: str, finish_reason: str, stats: GenerationStats
) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, **reasoning_fields(reasoning or None)},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(stats),
    }
