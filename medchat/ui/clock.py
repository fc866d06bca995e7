"""The UI's clock, in one place so tests can freeze the live "Thinking… N s" and tok/s readouts."""

from __future__ import annotations

import time


def now() -> float:
    return time.monotonic()
