"""What the transcript shows while the model loads: what is loading, its progress lines, and a
clear message if loading fails."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import LoadingIndicator, Static


class LoadingView(Vertical):
    def __init__(self, title: str, details: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self._title = title
        self._details = details

    def compose(self) -> ComposeResult:
        yield Static(self._title, markup=False, classes="loading-title")
        for line in self._details:
            yield Static(line, markup=False, classes="loading-detail")
        yield Vertical(classes="loading-log")
        yield LoadingIndicator()

    def add_line(self, line: str) -> None:
        log = self.query_one(".loading-log", Vertical)
        log.mount(Static("· " + line, markup=False, classes="loading-line"))

    def fail(self, error: str) -> None:
        self.query_one(LoadingIndicator).remove()
        self.mount(
            Static("Could not load the model:\n" + error, markup=False, classes="loading-error"),
            Static("Press Ctrl+Q to quit, then fix the command line or config (`medchat config show`).",
                   markup=False, classes="loading-hint"),
        )
