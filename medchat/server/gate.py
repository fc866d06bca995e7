"""One generation at a time on the one loaded model: a first-come, first-served gate.

``threading.Lock`` does not promise FIFO order; a queue of tickets does, so a request that waited
longest runs next and time to first token stays fair under load.
"""

from __future__ import annotations

import threading
from collections import deque


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


class FifoGate:
    def __init__(self, max_waiting: int = 64) -> None:
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._busy = False

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def acquire(self, cancel: threading.Event, poll: float = 0.1) -> bool:
        """Wait for this request's turn. False if ``cancel`` was set first (the client left).

        Raises QueueFull when ``max_waiting`` requests are already waiting.
        """
        ticket = object()
        with self._cond:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(len(self._waiting))
            self._waiting.append(ticket)
            try:
                while self._busy or self._waiting[0] is not ticket:
                    if cancel.is_set():
                        return False
                    self._cond.wait(poll)
                self._busy = True
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()
