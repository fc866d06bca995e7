"""Compare mode's turn: the question once, then two columns side by side, the base model's reply and
the adapter's, each a `TurnView` with its own reasoning pane and a header naming what produced it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from medchat.ui.widgets.turn import TurnView


class CompareView(Vertical):
    def __init__(self, user: str, notice: str | None, base: TurnView, adapter: TurnView) -> None:
        super().__init__(classes="compare")
        self.user = user
        self.notice = notice
        self.base = base
        self.adapter = adapter

    def compose(self) -> ComposeResult:
        yield Static(self.user, markup=False, classes="user-message")
        if self.notice:
            yield Static("⚠  " + self.notice, markup=False, classes="red-flag")
        with Horizontal(classes="compare-columns"):
            yield self.base
            yield self.adapter
