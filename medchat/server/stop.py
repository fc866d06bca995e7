"""Stop strings applied to a streamed answer: text is held back while it could still become a stop."""

from __future__ import annotations

from typing import Sequence


class StopMatcher:
    """Feed answer text; get back what is safe to send, and whether a stop string was reached.

    The stop string itself is never sent (as in the OpenAI API). Splitting the same text into any
    chunks gives the same output.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buf = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self._buf += text
        # The stop that a token-by-token reader would see first: the one that is complete earliest.
        hits = [(i + len(s), i) for s in self.stops if (i := self._buf.find(s)) >= 0]
        if hits:
            _end, start = min(hits)
            out, self._buf, self.stopped = self._buf[:start], "", True
            return out
        # Keep the longest tail that is still the beginning of some stop string.
        keep = 0
        for n in range(min(self._hold, len(self._buf)), 0, -1):
            tail = self._buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                keep = n
                break
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep :]
        return out

    def flush(self) -> str:
        """End of the answer: held text was not a stop after all."""
        out, self._buf = ("" if self.stopped else self._buf), ""
        return out
