"""The status bar: backend · model · adapter · device · live tok/s · context used."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from medchat.store.adapters import DEMO_ADAPTER


class StatusBar(Static):
    backend = reactive("")
    model = reactive("")
    adapter = reactive("")
    device = reactive("")
    tok_per_s = reactive(0.0)
    context_used = reactive(0)
    context_length = reactive(0)
    compare = reactive(False)  # compare mode: base model and adapter answer each question
    state = reactive("loading")  # loading · ready · generating · switching adapter · failed
    warning = reactive("")  # e.g. the decode loop keeps too little of the adapter's effect

    def render(self) -> str:
        if not self.model:
            return f"medchat · {self.state}"
        parts = [
            self.backend,
            self.model,
            f"adapter: {self.adapter or 'none (base model)'}" + (" (format demo)" if self.adapter == DEMO_ADAPTER else "")
            + (" · compare: base | adapter" if self.compare else ""),
            f"⚠ {self.warning}" if self.warning else "",
            self.device,
            f"{self.tok_per_s:.1f} tok/s" if self.tok_per_s else "– tok/s",
            f"ctx {self.context_used}/{self.context_length}" if self.context_length else f"ctx {self.context_used}",
        ]
        if self.state not in ("ready", ""):
            parts.append(self.state)
        return " · ".join(p for p in parts if p)

    def show_info(self, info) -> None:
        """Take what a backend reports (`BackendInfo`)."""
        self.backend = info.backend
        self.model = info.model
        self.adapter = info.adapter
        device = info.device
        if info.dtype:
            device += f" {info.dtype}"
        if info.quantization and info.quantization != "none":
            device += f" {info.quantization}"
        self.device = device
        self.context_length = info.context_length
        self.warning = getattr(info, "adapter_warning", "")
