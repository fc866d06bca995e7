"""Where did this answer come from: the adapter's training rows closest to a reply, with their BM25
score and how much of the reply they contain, or why they cannot be shown (data file gone or changed).
The search (``medchat.finetune.provenance.nearest_rows``, handed in by the CLI like the backend
factory: the UI does not import the fine-tuning package) runs in a thread, since reading a large data
file takes a moment; Esc closes."""

from __future__ import annotations

from typing import Any, Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from medchat.errors import MedchatError


def _clip(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class WhereFrom(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, find: Callable[..., Any], adapter: str, reasoning: str, answer: str, k: int = 3) -> None:
        super().__init__()
        self.find = find
        self.adapter, self.reasoning, self.answer, self.k = adapter, reasoning, answer, k
        self.result = None  # the Provenance once found

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="where-from", classes="modal-box"):
            yield Static(f"Where did this answer come from? Training rows of adapter {self.adapter}",
                         classes="modal-title", markup=False)
            yield Static("Looking through the rows it was trained on…", id="where-body", markup=False)
            yield Static("Score: BM25+ (higher is closer) · overlap: share of the reply's word 3-grams found in "
                         "the row (near 100% = the reply repeats that row) · Esc closes", classes="modal-hint")

    def on_mount(self) -> None:
        self._search()

    @work(thread=True, exit_on_error=False)
    def _search(self) -> None:
        try:
            found = self.find(self.adapter, self.reasoning, self.answer, self.k)
        except MedchatError as exc:
            self.app.call_from_thread(self._show_text, f"Cannot look: {exc}")
            return
        self.app.call_from_thread(self._show, found)

    def _show_text(self, text: str) -> None:
        self.query_one("#where-body", Static).update(text)

    def _show(self, found) -> None:
        self.result = found
        if found.problem:
            self._show_text(f"No rows to show: {found.problem}.\n(data set: {found.data or 'not recorded'})")
            return
        lines = [f"{found.rows_trained} training rows from {found.data}; the {len(found.matches)} closest:", ""]
        for n, m in enumerate(found.matches, 1):
            lines += [
                f"{n}. row {m.row} · score {m.score:.2f} · overlap {m.overlap:.0%}",
                f"   Q: {_clip(m.example.question)}",
                f"   reasoning: {_clip(m.example.reasoning)}",
                f"   answer: {_clip(m.example.answer)}",
                "",
            ]
        self._show_text("\n".join(lines).rstrip())

    def action_close(self) -> None:
        self.dismiss(None)
