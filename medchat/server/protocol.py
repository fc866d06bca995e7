"""The OpenAI chat-completions wire format: validate a request (pydantic models), build responses and
error bodies.

No sockets, so every rule here is unit-testable. Field names follow the OpenAI API;
reasoning travels in ``reasoning_content`` (the schema of vLLM's deepseek_r1 reasoning parser), mirrored
in ``reasoning`` (the name newer vLLM releases use).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings
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
# Request validation: pydantic models in strict mode (no "100" -> 100, no true -> 1), so a wrong type
# is refused instead of guessed. Unknown fields are ignored, as the OpenAI API and vLLM do. Rules
# that need the server (which models it serves, the token limit) read the validation context.

def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _fail(code: str, message: str, **values: Any) -> PydanticCustomError:
    """A validation error with our code; user-given text travels in ``values`` ({name} in ``message``)."""
    return PydanticCustomError(code, message, values)


def _text(value: str) -> str:
    """Text the model can read: a lone surrogate (valid JSON, not valid Unicode text) is refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail("invalid_value", "is not valid Unicode text (lone surrogate at position {at})", at=exc.start) from None
    return value


def _integral(value: Any) -> Any:
    """7.0 is the integer 7 (JSON has one number type); 7.5 stays a float and is refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    """One element of an array ``content``: only text is supported."""

    type: str
    text: Optional[str] = Field(None, validate_default=True)

    @field_validator("type")
    @classmethod
    def _only_text(cls, value: str) -> str:
        if value != "text":
            raise _fail("unsupported_content", "content type '{kind}' is not supported; send text", kind=value)
        return value

    @field_validator("text")
    @classmethod
    def _has_text(cls, value: str | None) -> str:
        if value is None:
            raise _fail("invalid_type", "must be a string")
        return _text(value)


class ChatMessage(_Strict):
    role: Optional[str] = Field(None, validate_default=True)
    content: Optional[list[TextPart]] = Field(None, validate_default=True)
    # An assistant turn's earlier reasoning (reasoning_content) is never sent back to the model:
    # like every other unknown field, it is ignored.

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str | None) -> str:
        if value is None:
            raise _fail("invalid_type", "must be a string")
        if value not in ROLES:
            raise _fail("invalid_role", "'{role}' is not supported; use system, user or assistant", role=value)
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _string_is_one_part(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "text", "text": _text(value)}]
        if value is None or isinstance(value, list):
            return value
        raise _fail("invalid_type", "must be a string or an array of text parts, got {got}", got=_type_name(value))

    @field_validator("content")
    @classmethod
    def _null_only_for_assistant(cls, value: list[TextPart] | None, info: ValidationInfo) -> list[TextPart] | None:
        if value is None and info.data.get("role", "assistant") != "assistant":
            raise _fail("invalid_type", "must be a string or an array of text parts, got null")
        return value

    def to_message(self) -> Message:
        return Message(ROLES[self.role or "user"], "".join(p.text or "" for p in self.content or ()))  # type: ignore[arg-type]


class StreamOptions(_Strict):
    include_usage: Optional[bool] = None


class ChatCompletionBody(_Strict):
    """The fields of ``POST /v1/chat/completions`` that medchat reads, in the order they are checked."""

    model: Optional[str] = None
    messages: Optional[list[ChatMessage]] = Field(None, validate_default=True)
    n: Optional[Integer] = Field(None, ge=1, le=128)
    tools: Any = None
    logprobs: Optional[bool] = None
    response_format: Any = None
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None
    continue_final_message: Optional[bool] = None
    presence_penalty: Optional[Number] = Field(None, ge=-2.0, le=2.0)  # accepted for compatibility; not applied
    frequency_penalty: Optional[Number] = Field(None, ge=-2.0, le=2.0)
    temperature: Optional[Number] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[Number] = Field(None, gt=0.0, le=1.0)
    top_k: Optional[Integer] = Field(None, ge=-1, le=1_000_000)  # vLLM's -1 and our 0 both mean "off"
    repetition_penalty: Optional[Number] = Field(None, gt=0.0, le=10.0)
    seed: Optional[Integer] = Field(None, ge=0, le=MAX_SEED)
    max_tokens: Optional[Integer] = None
    max_completion_tokens: Optional[Integer] = None
    think_budget: Optional[Integer] = Field(None, ge=-1)  # medchat's: reasoning tokens before </think> is forced
    stop: Optional[list[str]] = Field(None, max_length=MAX_STOPS)

    @field_validator("model")
    @classmethod
    def _served(cls, value: str | None, info: ValidationInfo) -> str | None:
        models: ModelTable | None = (info.context or {}).get("models")
        if value is None or models is None:
            return value
        _text(value)
        if value not in models.ids:
            raise _fail(
                "model_not_found", "the model '{model}' does not exist; this server serves: {served}",
                model=value, served=", ".join(models.ids),
            )
        return value

    @field_validator("messages")
    @classmethod
    def _some_messages(cls, value: list[ChatMessage] | None) -> list[ChatMessage]:
        if value is None:
            raise _fail("missing_required_parameter", "is required")
        if not value:
            raise _fail("empty_array", "must contain at least one message")
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise _fail("invalid_value", "must be 1: only one choice per request is supported")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: Any) -> Any:
        if value:
            raise _fail("unsupported_parameter", "are not supported by this server")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise _fail("unsupported_parameter", "are not supported by this server")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, dict) or value.get("type") != "text"):
            raise _fail("unsupported_parameter", 'must be {"type": "text"}: other formats are not supported')
        return value

    @field_validator("continue_final_message")
    @classmethod
    def _assistant_last(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        messages = info.data.get("messages")
        if value and messages and messages[-1].role != "assistant":
            raise _fail("invalid_value", "needs an assistant message last")
        return value

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _budget(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = (info.context or {}).get("max_tokens_limit") or 2**63
        if value is not None and not 1 <= value <= limit:
            raise _fail("invalid_value", "must be between 1 and {limit}, got {got}", limit=limit, got=value)
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, value: list[str] | None) -> list[str] | None:
        if value and any(not s for s in value):
            raise _fail("invalid_value", "strings must not be empty")
        return [_text(s) for s in value] if value else value


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
    "list_type": "an array", "model_type": "an object", "model_attributes_type": "an object", "dict_type": "an object",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _param(loc: tuple[Any, ...]) -> str | None:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def api_error(exc: ValidationError) -> ApiError:
    """The first validation error, as the 4xx the client gets, naming the field."""
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], tuple(err["loc"])
    param = _param(loc)
    where = "request body" if not loc else (f"'{param}'" if len(loc) == 1 else param)
    ctx = err.get("ctx") or {}
    if kind == "model_not_found":
        return ApiError(404, err["msg"], param=param, code=kind)
    if kind in _EXPECTED:
        message, code = f"must be {_EXPECTED[kind]}, got {_type_name(err.get('input'))}", "invalid_type"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        message, code = f"must be {_BOUNDS[kind]} {bound}, got {err.get('input')!r}", "invalid_value"
    elif kind == "finite_number":
        message, code = "must be a finite number", "invalid_value"
    elif kind == "too_long":
        message, code = f"may hold at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}", "invalid_value"
    elif kind == "missing":
        message, code = "is required", "missing_required_parameter"
    elif kind in CODES:
        message, code = err["msg"], kind
    else:  # a pydantic rule without a code of ours
        message, code = err["msg"][:1].lower() + err["msg"][1:], "invalid_value"
    return bad(f"{where} {message}", param, code)


CODES = {"invalid_type", "invalid_value", "invalid_role", "unsupported_content", "unsupported_parameter",
         "missing_required_parameter", "empty_array"}


def parse_chat_request(
    raw: bytes,
    models: ModelTable,
    defaults: GenerationSettings,
    max_tokens_limit: int,
) -> ChatRequest:
    """Validate a request body; raises ApiError (4xx) naming the first bad field."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"request body is not valid JSON: {exc}", None, "invalid_json") from None
    except RecursionError:
        raise bad("request body is not valid JSON: nested too deeply", None, "invalid_json") from None
    try:
        body = ChatCompletionBody.model_validate(
            payload, context={"models": models, "max_tokens_limit": max_tokens_limit}
        )
    except ValidationError as exc:
        raise api_error(exc) from None
    except RecursionError:
        raise bad("request body is nested too deeply", None, "invalid_value") from None

    changes: dict[str, Any] = {}
    if body.temperature is not None:
        changes["temperature"] = body.temperature
    if body.top_p is not None:
        changes["top_p"] = body.top_p
    if body.top_k is not None:
        changes["top_k"] = max(body.top_k, 0)
    if body.repetition_penalty is not None:
        changes["repetition_penalty"] = body.repetition_penalty
    if body.seed is not None:
        changes["seed"] = body.seed
    if body.think_budget is not None:
        changes["think_budget"] = body.think_budget
    budget = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if budget is not None:
        changes["max_new_tokens"] = budget
    return ChatRequest(
        model=body.model if body.model is not None else models.default,
        messages=tuple(m.to_message() for m in body.messages or ()),
        generation=dataclasses.replace(defaults, **changes),
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        stop=tuple(body.stop or ()),
        continue_final=bool(body.continue_final_message),
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
