"""How a reply's text gets from the generation thread to the screen.

A fast backend produces thousands of tokens a second, and on a small machine the generation thread
and the UI thread share one interpreter lock: every microsecond the hand-over or the UI spends is
taken from generation. So there is no per-token hand-over at all: the engine appends each delta to
the session's `LiveReply` (with or without a UI reading it), the generation thread drains the events
in a C loop and posts one `ReplyEnded` message at the end, and the UI samples the live reply on a
timer: each take (`ReplyReader.take`) joins the deltas that arrived since the last one. `TakePacer` spaces the takes
so that drawing stays within a small share of the CPU. Nothing is ever held back: whatever arrived
is shown at the next take, and the last take runs when the reply ends.
"""

from __future__ import annotations

import time
from typing import Callable

from textual.message import Message

from medchat.engine.events import GenerationDone, GenerationFailed
from medchat.engine.session import LiveReply

MIN_INTERVAL = 0.1  # at most 10 UI updates a second: smooth to read, and each is a full layout pass
MAX_INTERVAL = 1.0  # and at least one, however slow drawing is
UI_DUTY = 0.04  # share of one core the UI may spend drawing while a reply streams
FIRST_TAKE_COST = 0.01  # assumed CPU cost of a take before one has been measured (seconds)


class ReplyEnded(Message):
    """The generation of turn ``turn_id`` is over; ``event`` is its final event."""

    def __init__(self, turn_id: int, event: GenerationDone | GenerationFailed) -> None:
        super().__init__()
        self.turn_id = turn_id
        self.event = event


class ReplyReader:
    """The UI's side of a `LiveReply`: what arrived since the last take."""

    def __init__(self, reply: LiveReply) -> None:
        self.reply = reply
        self._reasoning = self._answer = 0  # deltas taken
        self._reasoning_tokens = self._answer_tokens = 0  # tokens taken

    def take(self) -> list[tuple[str, str, int]]:
        """The new text as (kind, text, tokens), reasoning first; empty if nothing is new."""
        reply = self.reply
        # The answer's length first: every reasoning delta is appended before the first answer
        # delta, so the reasoning read next is complete up to the answer seen.
        answer_end = len(reply.answer)
        reasoning_end = len(reply.reasoning)
        taken: list[tuple[str, str, int]] = []
        if reasoning_end > self._reasoning:
            # A counter is read apart from its list, so a take's count may be a delta ahead or
            # behind its text; the next take evens it out, and the reply's end sets exact counts.
            tokens = reply.reasoning_tokens
            text = "".join(reply.reasoning[self._reasoning:reasoning_end])
            taken.append(("reasoning", text, tokens - self._reasoning_tokens))
            self._reasoning, self._reasoning_tokens = reasoning_end, tokens
        if answer_end > self._answer:
            tokens = reply.answer_tokens
            text = "".join(reply.answer[self._answer:answer_end])
            taken.append(("answer", text, tokens - self._answer_tokens))
            self._answer, self._answer_tokens = answer_end, tokens
        return taken


class TakePacer:
    """When the UI thread takes the next batch of a reply's text (see `ReplyReader`).

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
