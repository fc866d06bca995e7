"""Thread side of streaming: turn engine events into a few UI messages.

A fast backend can produce thousands of tokens a second; posting one message per token would make the
UI thread compete with generation for the GIL. So consecutive deltas of one kind are joined and posted
at most every ``interval`` seconds (a slow model's tokens still go out one by one, at once), and a
change of pane or the end of the reply flushes immediately.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from textual.message import Message

from medchat.engine.events import AnswerDelta, Event, GenerationDone, GenerationFailed, ReasoningDelta
from medchat.ui.messages import StreamChunk, StreamEnded

DEFAULT_INTERVAL = 1 / 30  # at most ~30 UI updates a second: smooth to read, cheap to draw


def pump(
    events: Iterable[Event],
    post: Callable[[Message], object],
    turn_id: int,
    *,
    interval: float = DEFAULT_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> GenerationDone | GenerationFailed | None:
    """Iterate ``events`` (in a worker thread), posting StreamChunk/StreamEnded; return the last event."""
    kind: str | None = None
    parts: list[str] = []
    tokens = 0
    last_post = float("-inf")

    def flush() -> None:
        nonlocal kind, parts, tokens, last_post
        if parts:
            post(StreamChunk(turn_id, kind, "".join(parts), tokens))  # type: ignore[arg-type]
            last_post = clock()
        kind, parts, tokens = None, [], 0

    for event in events:
        if isinstance(event, (ReasoningDelta, AnswerDelta)):
            this = "reasoning" if isinstance(event, ReasoningDelta) else "answer"
            if kind is not None and this != kind:
                flush()
            kind = this
            parts.append(event.text)
            tokens += event.tokens
            if clock() - last_post >= interval:
                flush()
        elif isinstance(event, (GenerationDone, GenerationFailed)):
            flush()
            post(StreamEnded(turn_id, event))
            return event
    flush()
    return None
