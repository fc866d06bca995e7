"""Messages that worker threads post to the chat screen (the only way threads talk to the UI)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class LoadProgress(Message):
    """One line of model-loading progress."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


class BackendReady(Message):
    def __init__(self, backend: Any) -> None:
        super().__init__()
        self.backend = backend


class BackendFailed(Message):
    def __init__(self, error: str, exit_code: int = 1) -> None:
        super().__init__()
        self.error = error
        self.exit_code = exit_code


class StreamStarted(Message):
    def __init__(self, turn_id: int, prompt_tokens: int) -> None:
        super().__init__()
        self.turn_id = turn_id
        self.prompt_tokens = prompt_tokens


class AdapterSwitched(Message):
    def __init__(self, adapter: str | None) -> None:
        super().__init__()
        self.adapter = adapter


class AdapterFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
