"""The history browser: saved conversations, most recent first. Open one, export it to Markdown or
JSON (written to the current folder), or delete it. Dismisses with a conversation id to open, or None."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from medchat.errors import MedchatError
from medchat.paths import atomic_write_text
from medchat.store.history import HistoryStore, export, when_text


class HistoryBrowser(ModalScreen[int | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Close"),
        Binding("enter", "open", "Open"),
        Binding("m", "export('md')", "Export .md"),
        Binding("j", "export('json')", "Export .json"),
        Binding("d", "delete", "Delete"),
    ]

    def __init__(self, store: HistoryStore | None, export_dir: Path | None = None) -> None:
        super().__init__()
        self.store = store
        self.export_dir = export_dir or Path.cwd()
        self._armed_delete: int | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="history", classes="modal-box"):
            yield Static("Conversations", classes="modal-title")
            yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
            yield Static(
                f"Enter open · m export Markdown · j export JSON (to {self.export_dir}) · d delete · Esc close",
                classes="modal-hint",
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("ID", "Updated", "Turns", "Model", "Title")
        self._fill()
        table.focus()

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        if self.store is None:
            self.query_one(".modal-hint", Static).update("History is off for this session (--no-history). Esc closes.")
            return
        rows = self.store.list()
        for c in rows:
            model = c.model + (f" + {c.adapter}" if c.adapter else "")
            table.add_row(str(c.id), when_text(c.updated), str(c.turns), model, c.title, key=str(c.id))
        if not rows:
            self.query_one(".modal-hint", Static).update("No saved conversations yet. Esc closes.")

    def _selected(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(int(event.row_key.value))

    def action_open(self) -> None:
        if (cid := self._selected()) is not None:
            self.dismiss(cid)

    def action_export(self, fmt: str) -> None:
        cid = self._selected()
        if cid is None or self.store is None:
            return
        path = self.export_dir / f"medchat-conversation-{cid}.{fmt}"
        try:
            atomic_write_text(path, export(self.store.load(cid), fmt), mode=0o600)
        except (OSError, MedchatError) as exc:
            self.notify(f"Export failed: {exc}", severity="error")
            return
        self.notify(f"Exported to {path}")

    def action_delete(self) -> None:
        cid = self._selected()
        if cid is None or self.store is None:
            return
        if self._armed_delete != cid:
            self._armed_delete = cid
            self.notify(f"Press d again to delete conversation {cid}.", severity="warning", timeout=4)
            return
        self._armed_delete = None
        self.store.delete(cid)
        self._fill()
        self.notify(f"Deleted conversation {cid}.")

    def action_cancel(self) -> None:
        self.dismiss(None)
