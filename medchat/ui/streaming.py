"""Hand-over of a reply's events from the worker thread to the UI thread.

A fast backend produces thousands of tokens a second, and on a small machine the generation thread
and the UI thread share one interpreter lock: every microsecond the hand-over or the UI spends is
taken from generation. So the worker's side is as cheap as it can be: `pump` appends each event to a
`StreamBuffer` (a deque append, atomic under the lock) and posts one `StreamReady` message only when
the UI is not already signalled. The UI joins the deltas when it takes them, and takes no more often
than `TakePacer` allows. Nothing is ever held back: whatever arrived is shown at the next take.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterable, Union

from textual.message import Message

from medchat.engine.events import AnswerDelta, Event, GenerationDone, GenerationFailed, ReasoningDelta

MIN_INTERVAL = 0.1  # at most 10 UI updates a second: smooth to read, and each is a full layout pass
MAX_INTERVAL = 1.0  # and at least one, however slow drawing is
UI_DUTY = 0.04  # share of one core the UI may spend drawing while a reply streams
FIRST_TAKE_COST = 0.01  # assumed CPU cost of a take before one has been measured (seconds)


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
_KINDS = {ReasoningDelta: "reasoning", AnswerDelta: "answer"}


class StreamReady(Message):
    """The buffer of turn ``turn_id`` has items; take them with ``buffer.take()`` on the UI thread."""

    def __init__(self, turn_id: int, buffer: "StreamBuffer") -> None:
        super().__init__()
        self.turn_id = turn_id
        self.buffer = buffer


class StreamBuffer:
    """One reply's events; ``put`` from the worker, ``take`` from the UI.

    Holds events, or bare strings: one more token of the kind of the event before (see `pump`).
    No lock: ``deque.append``/``popleft`` are atomic, only the worker sets ``signalled`` and only the
    UI clears it, and the UI clears it *before* draining, so an event appended after the drain finds
    it cleared and posts again.
    """

    def __init__(self, turn_id: int, post: Callable[[Message], object]) -> None:
        self.turn_id = turn_id
        self._post = post
        self.events: deque[Event | str] = deque()
        self.signalled = False
        self._kind = ""  # pane of the last delta taken

    def put(self, event: Event) -> None:
        self.events.append(event)  # always whole (only `pump` appends bare text)
        if not self.signalled:
            self.signal()

    def signal(self) -> None:
        self.signalled = True
        self._post(StreamReady(self.turn_id, self))

    def take(self) -> list[Item]:
        """Everything put so far, consecutive deltas of one kind joined into a `Chunk`."""
        self.signalled = False
        events, popleft = self.events, self.events.popleft
        items: list[Item] = []
        last: Chunk | None = None
        for _ in range(len(events)):
            event = popleft()
            if type(event) is str:  # one more token of the run's kind (see `pump`), maybe begun
                if last is None:  # in an earlier take
                    last = Chunk(self._kind, "", 0)
                    items.append(last)
                last.parts.append(event)
                last.tokens += 1
                continue
            kind = _KINDS.get(type(event))
            if kind is None:
                items.append(event)  # type: ignore[arg-type]
                last = None
                continue
            self._kind = kind
            if last is not None and last.kind == kind:
                last.parts.append(event.text)  # type: ignore[attr-defined]
                last.tokens += event.tokens  # type: ignore[attr-defined]
            else:
                last = Chunk(kind, event.text, event.tokens)  # type: ignore[attr-defined]
                items.append(last)
        return items


class TakePacer:
    """When the UI thread takes the next batch from a `StreamBuffer`.

    A budget of CPU time: the UI may spend UI_DUTY of a core while a reply streams, counted from the
    moment the reply starts (so the first take waits too: a take costs a full layout and repaint,
    whatever it shows). After each take, the next one waits until the UI's CPU time since the
    previous take (drawing, layout, timers: everything the UI thread did) is paid back, but at least
    MIN_INTERVAL and at most MAX_INTERVAL. A busy UI thread holds the interpreter lock that the
    generation thread needs, so this share is about what the UI can slow generation down by.
    """

    def __init__(
        self,
        min_interval: float = MIN_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        duty: float = UI_DUTY,
        first_cost: float = FIRST_TAKE_COST,
        cpu: Callable[[], float] = time.thread_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval, self.max_interval, self.duty = min_interval, max_interval, duty
        self.first_cost = first_cost
        self._cpu, self._wall = cpu, wall
        self.interval = min_interval
        self._last_wall = float("-inf")
        self._last_cpu: float | None = None

    def _clamp(self, interval: float) -> float:
        return min(max(interval, self.min_interval), self.max_interval)

    def reset(self) -> None:
        """A reply starts (call on the UI thread): its first take waits as if a take costing
        ``first_cost`` had just been made (not what the last reply's takes cost: its last one was
        the big final render)."""
        self._last_cpu, self._last_wall = self._cpu(), self._wall()
        self.interval = self._clamp(self.first_cost / self.duty)

    def wait(self) -> float:
        """Seconds to wait before the next take (0: take now)."""
        return max(0.0, self._last_wall + self.interval - self._wall())

    def took(self) -> None:
        """Record a take (call on the UI thread, where ``time.thread_time`` is the UI's CPU)."""
        cpu, wall = self._cpu(), self._wall()
        if self._last_cpu is not None:
            spent = cpu - self._last_cpu
            # Smooth, so one slow frame (a big final render) does not stall the next ones.
            self.interval = self._clamp(0.5 * self.interval + 0.5 * spent / self.duty)
        self._last_cpu, self._last_wall = cpu, wall


def pump(events: Iterable[Event], buffer: StreamBuffer) -> GenerationDone | GenerationFailed | None:
    """Worker thread: move every event into ``buffer``; return the final event (None if missing).

    This loop runs once per token in the generation thread, so it does the least it can. A delta of
    one token of the same kind as the one before goes in as its bare text: a string is not tracked by
    the garbage collector, so thousands of them waiting for the UI add no collector work to the
    generation thread (buffered event objects would, with the whole app's heap behind them).
    """
    append = buffer.events.append
    event = None
    run: type | None = None
    for event in events:
        kind = type(event)
        if kind is run and event.tokens == 1:  # type: ignore[attr-defined]
            append(event.text)  # type: ignore[attr-defined]
        else:
            append(event)
            run = kind
        if not buffer.signalled:
            buffer.signal()
    return event if isinstance(event, (GenerationDone, GenerationFailed)) else None
