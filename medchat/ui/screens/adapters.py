"""The adapter picker: the adapters in the store (base model, date, data set, rows, final loss, latest
`medchat eval` figures) and "none" (the bare base model). Dismisses with the chosen adapter name, "" for the base model, or None."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from medchat.store.adapters import AdapterSummary, list_adapters

BASE_KEY = "\0base"  # row key of the "no adapter" row (cannot clash with an adapter name)


def _date(created: str) -> str:
    return created[:10] if created else "–"


def _short(model_id: str) -> str:
    """"HuggingFaceTB/SmolLM2-135M-Instruct" -> "SmolLM2-135M-Instruct": the name a user recognises."""
    return model_id.rstrip("/").rsplit("/", 1)[-1] if model_id else "?"


def _loss(value: float | None) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


class AdapterPicker(ModalScreen[str | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Close"),
        Binding("enter", "choose", "Use", show=True),
    ]

    def __init__(self, current: str = "", adapters: list[AdapterSummary] | None = None, error: str = "") -> None:
        super().__init__()
        self.current = current
        self._adapters = adapters
        self._error = error

    def compose(self) -> ComposeResult:
        with Vertical(id="picker", classes="modal-box"):
            yield Static("Choose an adapter", classes="modal-title")
            yield DataTable(id="adapter-table", cursor_type="row", zebra_stripes=True)
            yield Static(
                "Enter: switch without restarting · Esc: close · Adapters live in `medchat adapters list`; "
                "one trained for another base model is refused.",
                classes="modal-hint",
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "Adapter", "Latest eval (base→adapter)", "Base model", "Created", "Data set", "Rows", "Loss")
        adapters = self._adapters
        error = self._error
        if adapters is None:
            try:
                adapters = list_adapters()
            except Exception as exc:  # noqa: BLE001 - an unreadable store must not break the chat
                adapters, error = [], f"cannot read the adapter store: {exc}"
        mark = lambda is_current: "●" if is_current else " "  # noqa: E731
        table.add_row(mark(not self.current), "none", "", "base model only", "", "", "", "", key=BASE_KEY)
        current_row = 0
        for i, a in enumerate(adapters, 1):
            is_current = bool(self.current) and self.current in (a.name, str(a.path))
            if is_current:
                current_row = i
            table.add_row(
                mark(is_current), a.name + (" (bundled)" if a.bundled else ""), a.latest_eval or "–", _short(a.base_model),
                _date(a.created), _short(a.dataset) if a.dataset else "–", str(a.rows) if a.rows else "–",
                _loss(a.final_loss), key=a.name,
            )
        if not adapters:
            self.query_one(".modal-hint", Static).update(
                error or "No adapters in the store yet: train one with `medchat finetune`, or start with "
                "`--adapter PATH`. Esc closes."
            )
        table.move_cursor(row=current_row)
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        self.dismiss("" if key == BASE_KEY else key)

    def action_choose(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            self.dismiss("" if key == BASE_KEY else key)

    def action_cancel(self) -> None:
        self.dismiss(None)
