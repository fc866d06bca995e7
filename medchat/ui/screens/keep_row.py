"""Keep a reply as a training row: the question, the reasoning (from the reasoning pane) and the
answer, pre-filled and editable, saved as one medical-o1 row to a file of kept rows (see
`medchat.store.saved_rows`). Dismisses with what was saved (`KeptRow`), or None."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from medchat.errors import MedchatError
from medchat.store import saved_rows


@dataclass(frozen=True)
class KeptRow:
    path: Path
    rows: int  # rows the file holds now
    replaced: bool  # an earlier row for the same question was replaced

    def summary(self) -> str:
        what = "Replaced the row for this question" if self.replaced else "Added the row"
        return f"{what} in {self.path.name}: it now holds {self.rows} row{'s' if self.rows != 1 else ''} ({self.path})"


class KeepRowEditor(ModalScreen["KeptRow | None"]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save row"),
    ]

    def __init__(self, question: str, reasoning: str, answer: str, name: str = saved_rows.DEFAULT_NAME) -> None:
        super().__init__()
        self.question, self.reasoning, self.answer, self.file_name = question, reasoning, answer, name

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="keep-row", classes="modal-box"):
            yield Static("Keep this reply as a training row", classes="modal-title")
            yield Label("Question")
            yield TextArea(self.question, id="row-question", soft_wrap=True, tab_behavior="focus")
            yield Label("Reasoning (Complex_CoT)")
            yield TextArea(self.reasoning, id="row-reasoning", soft_wrap=True, tab_behavior="focus")
            yield Label("Answer (Response)")
            yield TextArea(self.answer, id="row-answer", soft_wrap=True, tab_behavior="focus")
            with Horizontal(id="row-file"):
                yield Label("File ")
                yield Input(self.file_name, id="row-name", placeholder=saved_rows.DEFAULT_NAME)
                yield Button("Save", id="row-save", variant="primary")
                yield Button("Cancel", id="row-cancel")
            yield Static(
                f"Ctrl+S saves to {saved_rows.rows_dir()}/NAME.jsonl (a question saved again replaces its row) · "
                "Esc cancels · train with `medchat finetune --dataset saved:NAME`",
                id="row-hint", classes="modal-hint", markup=False,
            )

    def on_mount(self) -> None:
        self.query_one("#row-answer", TextArea).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "row-save":
            self.action_save()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_save(self) -> None:
        row = saved_rows.Row(
            self.query_one("#row-question", TextArea).text,
            self.query_one("#row-reasoning", TextArea).text,
            self.query_one("#row-answer", TextArea).text,
        )
        name = self.query_one("#row-name", Input).value or saved_rows.DEFAULT_NAME
        try:
            path, count, replaced = saved_rows.save_row(row, name)
        except (MedchatError, OSError) as exc:
            hint = self.query_one("#row-hint", Static)
            hint.update(f"Not saved: {exc}")
            hint.add_class("error")
            return
        self.dismiss(KeptRow(path, count, replaced))

    def action_cancel(self) -> None:
        self.dismiss(None)
