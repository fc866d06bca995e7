"""Training progress as the user sees it: step/total, loss, learning rate, steady tokens/s and ETA.

On a terminal a rich progress bar redraws in place; anywhere else (CI logs, pipes, files) one plain
line per logging step, never control codes. :func:`make_display` is the one place that decides what
is shown and whether anything is (a multi-GPU run would show nothing on ranks other than 0).
rich comes with Textual and is imported only when a bar is drawn.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass
from typing import IO, Protocol


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Status:
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    tokens_per_second: float | None = None  # steady: recent steps, warm-up left out
    eta_seconds: float | None = None

    def head(self) -> str:
        return f"step {self.step}/{self.total}"

    def text(self) -> str:
        loss = f"{self.loss:.3f}" if self.loss is not None else "…"
        lr = f"{self.lr:.1e}" if self.lr is not None else "…"
        rate = f"{self.tokens_per_second:,.0f}" if self.tokens_per_second is not None else "…"
        eta = clock(self.eta_seconds) if self.eta_seconds is not None else "…"
        return f"loss {loss} lr {lr} {rate} tok/s ETA {eta}"


class RateMeter:
    """Tokens/s and seconds/step from the step ends, leaving the first steps out.

    The first step carries compilation and warm-up (about 45 s on an H100 with Unsloth): averaged over
    the whole run, the old progress line showed 1,982 tok/s on the last step of a run training at 10,600.
    """

    def __init__(self, skip: int = 1, window: int = 20) -> None:
        self.skip = skip  # steps left out of the live rate
        self.window = window  # the live rate covers at most this many recent steps
        self.marks: list[tuple[float, int]] = []  # (seconds, tokens) since training began, at each step end

    def add(self, seconds: float, tokens: int) -> None:
        self.marks.append((seconds, tokens))

    def recent(self) -> tuple[float | None, float | None]:
        """(tokens/s, seconds/step): medians over the last ``window`` steps after the first ``skip``.

        Medians, not totals over the window: compilation can reach into the second and third steps (an
        H200 run's 8-step window read 1,036 tok/s while training at 10,760), and one slow step must not
        set the rate or the ETA."""
        marks = self.marks if self.skip else [(0.0, 0)] + self.marks
        steps = [(t1 - t0, n1 - n0) for (t0, n0), (t1, n1) in zip(marks, marks[1:])]
        steps = [(dt, n) for dt, n in steps[max(self.skip - 1, 0):][-self.window:] if dt > 0]
        if not steps:
            return None, None
        return statistics.median(n / dt for dt, n in steps), statistics.median(dt for dt, _ in steps)

    def steady(self) -> float | None:
        """The manifest's figure: median tokens/s of the steps after the first three (compilation and
        warm-up can reach into the second and third)."""
        steps = [(t1 - t0, n1 - n0) for (t0, n0), (t1, n1) in zip(self.marks, self.marks[1:])][2:]
        rates = sorted(n / dt for dt, n in steps if dt > 0)
        return round(rates[len(rates) // 2], 1) if rates else None


class Display(Protocol):
    def start(self, total: int, step: int) -> None: ...
    def update(self, status: Status, logged: bool) -> None: ...  # logged: a loss arrived at this step
    def note(self, text: str) -> None: ...  # one line beside the progress (the first step's time)
    def close(self) -> None: ...


class Silent:
    def start(self, total: int, step: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def update(self, status: Status, logged: bool) -> None:
        pass

    def close(self) -> None:
        pass


class PlainLines(Silent):
    """One line per logging step, for logs: nothing that needs a terminal to read."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def update(self, status: Status, logged: bool) -> None:
        if logged:
            self.stream.write(f"{status.head()} {status.text()}\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(f"{text}\n")
        self.stream.flush()


class LiveBar:
    """A rich progress bar redrawn at each step end (no refresh thread: nothing runs beside training)."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        console = Console(file=stream, force_terminal=True, force_jupyter=False)
        # Plain colours: rich's default pink bar reads as an error on a 16-colour terminal, its finished green as grey.
        bar = BarColumn(bar_width=20, complete_style="cyan", finished_style="green")
        # Other writes to stderr (a Ctrl+C notice, library warnings) print above the bar; stdout is left
        # alone, so `medchat finetune > file` still sends the summary to the file.
        self.progress = Progress(TextColumn("{task.fields[head]}"), bar, TextColumn("{task.fields[status]}"),
                                 console=console, auto_refresh=False, redirect_stdout=False)
        self.task = None

    def start(self, total: int, step: int) -> None:
        self.progress.start()
        status = Status(step, total)
        self.task = self.progress.add_task("train", total=total, completed=step, head=status.head(),
                                           status=status.text())
        self.progress.refresh()

    def update(self, status: Status, logged: bool) -> None:
        if self.task is None:
            return
        self.progress.update(self.task, total=status.total, completed=status.step, head=status.head(),
                             status=status.text())
        self.progress.refresh()

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)  # above the bar

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()  # leaves the last frame on screen, ends its line
            self.task = None


def make_display(stream: IO[str] | None = None, *, show: bool = True) -> Display:
    """The bar on a terminal, plain lines elsewhere, nothing when ``show`` is off."""
    stream = stream or sys.stderr
    if not show:
        return Silent()
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty() and os.environ.get("TERM") != "dumb":
        return LiveBar(stream)
    return PlainLines(stream)
