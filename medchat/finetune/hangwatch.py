"""Where a stalled fine-tune waits: MEDCHAT_HANG_SECONDS=T prints every thread's stack of every rank.

A multi-GPU run whose ranks wait for each other at a collective that one of them never reaches stays
silent until the collective's timeout (MEDCHAT_DIST_TIMEOUT, half an hour by default). With T set,
each process of `medchat finetune` watches its own progress (phase changes and training steps): once
nothing moved for T seconds it writes the stack of each of its threads to stderr, every line prefixed
with ``[rank N]``, and again every T seconds while the stall lasts. Off by default (it costs a thread).

* A daemon thread writes the prefixed stacks. It runs whenever the main thread waits in C with the GIL
  released: a collective, a CUDA synchronisation, a lock, a subprocess (compile workers).
* faulthandler writes them (unprefixed, from C) 2 T after the last progress, also when the main thread
  holds the GIL, and at any time on SIGUSR1 (``kill -USR1 PID``: benchmarks/multigpu.py sends it to
  every process of a launch before it stops one that ran past its time).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import IO

from medchat.errors import UsageError

ENV = "MEDCHAT_HANG_SECONDS"


def seconds_from(environ: Mapping[str, str] | None = None) -> float | None:
    """T from the environment; None when unset, empty or 0 (off)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"{ENV}={value!r}: expected a number of seconds (0 or unset: off)") from None
    if seconds < 0:
        raise UsageError(f"{ENV}={value!r}: expected a number of seconds (0 or unset: off)")
    return seconds or None


def stacks(prefix: str = "", skip: int | None = None) -> str:
    """Every thread's Python stack (the thread ``skip`` left out), each line starting with ``prefix``."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = []
    for ident, frame in sys._current_frames().items():
        if ident == skip:
            continue
        lines.append(f"{prefix}thread {names.get(ident, ident)} (most recent call last):")
        for entry in traceback.format_stack(frame):
            lines.extend(prefix + line for line in entry.rstrip("\n").split("\n"))
    return "\n".join(lines) + "\n"


class HangWatch:
    """Prints this process's stacks when :meth:`beat` was not called for ``seconds``."""

    def __init__(self, seconds: float, prefix: str = "", stream: IO[str] | None = None) -> None:
        self.seconds = seconds
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.what = "start"
        self._last = time.monotonic()
        self._dumped = 0.0  # monotonic time of the last dump
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._faulthandler = False

    def start(self) -> "HangWatch":
        self._thread = threading.Thread(target=self._watch, name="medchat-hangwatch", daemon=True)
        self._thread.start()
        try:
            faulthandler.register(signal.SIGUSR1, file=self.stream, all_threads=True)
            self._faulthandler = True
        except (AttributeError, ValueError, OSError, RuntimeError):  # no SIGUSR1 / no file descriptor (tests)
            pass
        self._arm()
        return self

    def beat(self, what: str) -> None:
        """Progress: ``what`` is done (a phase, a step)."""
        self.what = what
        self._last = time.monotonic()
        self._arm()

    def stop(self) -> None:
        self._stop.set()
        if self._faulthandler:
            faulthandler.cancel_dump_traceback_later()
            try:
                faulthandler.unregister(signal.SIGUSR1)
            except (AttributeError, ValueError):
                pass
            self._faulthandler = False

    def _arm(self) -> None:
        if self._faulthandler:
            try:
                faulthandler.dump_traceback_later(2 * self.seconds, repeat=False, file=self.stream)
            except (ValueError, OSError, RuntimeError):
                pass

    def _watch(self) -> None:
        while not self._stop.wait(min(self.seconds / 4, 5.0)):
            now = time.monotonic()
            idle = now - self._last
            if idle >= self.seconds and now - max(self._dumped, self._last) >= self.seconds:
                self._dumped = now
                self.dump(idle)

    def dump(self, idle: float) -> None:
        head = (f"{self.prefix}medchat: no progress for {idle:.0f} s (last: {self.what}); "
                f"pid {os.getpid()}, every thread's stack:\n")
        try:
            self.stream.write(head + stacks(self.prefix, skip=threading.get_ident()))
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed while shutting down
            pass


_current: HangWatch | None = None


def start(prefix: str = "", environ: Mapping[str, str] | None = None) -> HangWatch | None:
    """Start watching this process when MEDCHAT_HANG_SECONDS asks for it (once per process)."""
    global _current
    seconds = seconds_from(environ)
    if seconds is None:
        return None
    if _current is None:
        _current = HangWatch(seconds, prefix).start()
    return _current


def beat(what: str) -> None:
    """Progress, for the watch of this process if there is one (free otherwise)."""
    if _current is not None:
        _current.beat(what)


def stop() -> None:
    global _current
    if _current is not None:
        _current.stop()
        _current = None
