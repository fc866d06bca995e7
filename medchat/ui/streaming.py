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
import time
from typing import Callable, Iterable, Union

from textual.message import Message

from medchat.engine.events import AnswerDelta, Event, GenerationDone, GenerationFailed, ReasoningDelta

MIN_INTERVAL = 0.1  # at most 10 UI updates a second: smooth to read, and each is a full layout pass
MAX_INTERVAL = 0.5  # and at least two, however slow drawing is
UI_DUTY = 0.05  # share of one core the UI may spend drawing while a reply streams


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


class TakePacer:
    """When the UI thread takes the next batch from a `StreamBuffer`.

    As often as every MIN_INTERVAL, but spaced so that drawing (layout and paint included: all the
    UI thread's CPU time since the previous take) stays under UI_DUTY of a core. A busy UI thread
    holds the GIL that the generation thread needs between its tensor operations, so an unthrottled
    UI slows the model down; on a fast machine the cap is never reached.
    """

    def __init__(
        self,
        min_interval: float = MIN_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        duty: float = UI_DUTY,
        cpu: Callable[[], float] = time.thread_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval, self.max_interval, self.duty = min_interval, max_interval, duty
        self._cpu, self._wall = cpu, wall
        self.reset()

    def reset(self) -> None:
        """A new reply starts: forget the previous one's drawing cost."""
        self.interval = self.min_interval
        self._last_wall = float("-inf")
        self._last_cpu: float | None = None

    def wait(self) -> float:
        """Seconds to wait before the next take (0: take now)."""
        return max(0.0, self._last_wall + self.interval - self._wall())

    def took(self) -> None:
        """Record a take (call on the UI thread, where ``time.thread_time`` is the UI's CPU)."""
        cpu, wall = self._cpu(), self._wall()
        if self._last_cpu is not None:
            wanted = (cpu - self._last_cpu) / self.duty
            # Smooth, so one slow frame (a big final render) does not stall the next ones.
            wanted = 0.5 * self.interval + 0.5 * wanted
            self.interval = min(max(wanted, self.min_interval), self.max_interval)
        self._last_cpu, self._last_wall = cpu, wall


def pump(events: Iterable[Event], buffer: StreamBuffer) -> GenerationDone | GenerationFailed | None:
    """Worker thread: move every event into ``buffer``; return the final event (None if missing)."""
    for event in events:
        buffer.put(event)
        if isinstance(event, (GenerationDone, GenerationFailed)):
            return event
    return None
