"""Hand-over of a reply's events from the worker thread to the UI thread.

A fast backend produces thousands of tokens a second; one UI message per token would make the UI
thread fight generation for the GIL and redraw far more often than anyone can read. So the worker
puts events into a `StreamBuffer`, which joins consecutive deltas of one kind and posts a single
`StreamReady` message when the buffer goes from empty to non-empty. The UI takes everything at
once, at most every ``interval`` seconds. Nothing is ever held back: whatever arrived is shown at the
next take, even if the model then stalls.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Union

from textual.message import Message

from medchat.engine.events import AnswerDelta, Event, GenerationDone, GenerationFailed, ReasoningDelta

DEFAULT_INTERVAL = 1 / 30  # at most ~30 UI updates a second: smooth to read, cheap to draw


class Chunk:
    """Consecutive deltas of one pane, joined."""

    __slots__ = ("kind", "parts", "tokens")

    def __init__(self, kind: str, text: str, tokens: int) -> None:
        self.kind = kind
        self.parts = [text]
        self.tokens = tokens

    @property
    def text(self) -> str:
        return "".join(self.parts)


Item = Union[Chunk, GenerationDone, GenerationFailed]


class StreamReady(Message):
    """The buffer of turn ``turn_id`` has items; take them with ``buffer.take()`` on the UI thread."""

    def __init__(self, turn_id: int, buffer: "StreamBuffer") -> None:
        super().__init__()
        self.turn_id = turn_id
        self.buffer = buffer


class StreamBuffer:
    """Thread-safe queue of one reply's items; ``put`` from the worker, ``take`` from the UI."""

    def __init__(self, turn_id: int, post: Callable[[Message], object]) -> None:
        self.turn_id = turn_id
        self._post = post
        self._lock = threading.Lock()
        self._items: list[Item] = []
        self._signalled = False

    def put(self, event: Event) -> None:
        if isinstance(event, (ReasoningDelta, AnswerDelta)):
            kind = "reasoning" if isinstance(event, ReasoningDelta) else "answer"
        else:
            kind = ""
        with self._lock:
            last = self._items[-1] if self._items else None
            if kind and isinstance(last, Chunk) and last.kind == kind:
                last.parts.append(event.text)
                last.tokens += event.tokens
            else:
                self._items.append(Chunk(kind, event.text, event.tokens) if kind else event)
            if self._signalled:
                return
            self._signalled = True
        self._post(StreamReady(self.turn_id, self))

    def take(self) -> list[Item]:
        with self._lock:
            items, self._items = self._items, []
            self._signalled = False
        return items


def pump(events: Iterable[Event], buffer: StreamBuffer) -> GenerationDone | GenerationFailed | None:
    """Worker thread: move every event into ``buffer``; return the final event (None if missing)."""
    for event in events:
        buffer.put(event)
        if isinstance(event, (GenerationDone, GenerationFailed)):
            return event
    return None
