"""Compare mode: the loaded model answers once with its adapter switched off, once with it on.

Every backend that can switch an adapter off for a while has ``adapter_off()``, a context manager:
transformers + PEFT run inside ``disable_adapter()`` on the same weights, an endpoint asks for its base
model name, the fast decode loop (whose adapter is merged into its weights) answers from a base-model
decoder it builds on first use. ``BaseSide`` wraps a backend so the engine's session and `ask` treat
the base model's answers like any other backend's.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from typing import Any, Iterator, Sequence

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings
from medchat.engine.backends.base import BackendInfo, StreamItem

BASE, ADAPTER = "base", "adapter"


@contextlib.contextmanager
def adapter_off(backend: Any) -> Iterator[None]:
    """For the duration: the backend answers as its bare base model; its adapter comes back after."""
    if hasattr(backend, "adapter_off"):
        with backend.adapter_off():
            yield
        return
    previous = backend.info.adapter  # a backend without the context: switch off, then back on
    if not previous:
        yield
        return
    backend.set_adapter(None)
    try:
        yield
    finally:
        backend.set_adapter(previous)


class BaseSide:
    """``backend`` answering without its adapter (compare mode's left column, `ask --compare`'s base)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @property
    def info(self) -> BackendInfo:
        return replace(self.backend.info, adapter="")

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event,
        continue_final: bool = False,
    ) -> Iterator[StreamItem]:
        with adapter_off(self.backend):
            yield from self.backend.stream(messages, settings, cancel, continue_final)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        with adapter_off(self.backend):
            return self.backend.count_tokens(messages)

    def set_adapter(self, adapter: str | None) -> None:
        self.backend.set_adapter(adapter)

    def close(self) -> None:
        pass  # the wrapped backend is closed by its owner
