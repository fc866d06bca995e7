"""A scripted backend for tests of the layers above the engine (UI, server, session).

It is not a model: it replays the chunks it was given, like llm's MockModel.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator, Sequence

from medchat.config import GenerationSettings
from medchat.engine.backends.base import (
    BackendInfo,
    Finished,
    Message,
    PromptReady,
    RawText,
    StreamItem,
)
from medchat.errors import AdapterError, MedchatError


class FakeBackend:
    """Replays queued replies. Each reply is a list of text chunks, or an exception to raise.

    ``delay`` seconds pass between chunks, so tests can cancel mid-stream.
    """

    def __init__(
        self,
        replies: Sequence[Sequence[str] | BaseException] = (),
        *,
        opens_in_reasoning: bool = False,
        delay: float = 0.0,
        model: str = "fake-model",
        base_model: str = "fake-model",
        known_adapters: dict[str, str] | None = None,
    ) -> None:
        self.replies: list[Sequence[str] | BaseException] = list(replies)
        self.opens_in_reasoning = opens_in_reasoning
        self.delay = delay
        self.base_model = base_model
        self.known_adapters = known_adapters or {}  # adapter name -> base model it was made for
        self.info = BackendInfo(backend="fake", model=model, device="cpu")
        self.calls: list[list[Message]] = []
        self.adapters_used: list[str] = []  # the adapter each call ran with ("" = the base model)

    def enqueue(self, *chunks: str) -> None:
        self.replies.append(list(chunks))

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event,
        continue_final: bool = False,
    ) -> Iterator[StreamItem]:
        self.calls.append(list(messages))
        self.adapters_used.append(self.info.adapter)
        reply = self.replies.pop(0) if self.replies else ["(no scripted reply)"]
        yield PromptReady(self.count_tokens(messages), self.opens_in_reasoning)
        if isinstance(reply, BaseException):
            raise reply
        produced = 0
        for chunk in reply:
            if cancel.is_set():
                yield Finished(produced, "cancelled")
                return
            if produced >= settings.max_new_tokens:
                yield Finished(produced, "length")
                return
            if self.delay:
                time.sleep(self.delay)
            produced += 1
            yield RawText(chunk, 1)
        if cancel.is_set():
            yield Finished(produced, "cancelled")
        else:  # like a real model, a reply that used the whole budget counts as cut off
            yield Finished(produced, "length" if produced >= settings.max_new_tokens else "stop")

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(m.content.split()) + 4 for m in messages)

    @contextlib.contextmanager
    def adapter_off(self) -> Iterator[None]:
        saved = self.info
        self.info = BackendInfo(**{**self.info.__dict__, "adapter": ""})
        try:
            yield
        finally:
            self.info = saved

    def set_adapter(self, adapter: str | None) -> None:
        if adapter is None:
            self.info = BackendInfo(**{**self.info.__dict__, "adapter": ""})
            return
        if adapter not in self.known_adapters:
            raise AdapterError(f"adapter '{adapter}' not found")
        made_for = self.known_adapters[adapter]
        if made_for != self.base_model:
            raise AdapterError(
                f"adapter '{adapter}' was trained for {made_for}, but the loaded model is {self.base_model}"
            )
        self.info = BackendInfo(**{**self.info.__dict__, "adapter": adapter})

    def close(self) -> None:
        pass


__all__ = ["FakeBackend", "MedchatError"]
