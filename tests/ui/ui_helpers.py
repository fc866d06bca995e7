"""Helpers for Pilot tests of the chat app over the scripted FakeBackend (imported by the tests)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from medchat import paths
from medchat.config import Settings
from medchat.engine.backends.base import RawText
from medchat.engine.backends.fake import FakeBackend
from medchat.ui.app import MedchatApp, make_app


def app_with(backend, **settings) -> MedchatApp:
    return make_app(Settings(**settings), lambda _settings, _progress: backend)


async def until(pilot, condition, timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


async def ready(pilot) -> None:
    await until(pilot, lambda: getattr(pilot.app.screen, "session", None) is not None)


async def idle(pilot) -> None:
    await until(pilot, lambda: pilot.app.chat.generating_turn is None)
    await pilot.pause()


async def ask(pilot, text: str) -> None:
    prompt = pilot.app.screen.query_one("#prompt")
    prompt.text = text
    prompt.focus()
    await pilot.press("enter")


class GatedBackend(FakeBackend):
    """A FakeBackend that stops after ``gate_after`` chunks until ``gate`` is set (or it is cancelled)."""

    def __init__(self, replies: Sequence, gate_after: int, **kw) -> None:
        super().__init__(replies, **kw)
        self.gate = threading.Event()
        self.gate_after = gate_after
        self.reached = threading.Event()

    def stream(self, messages, settings, cancel, continue_final=False) -> Iterator:
        seen = 0
        for item in super().stream(messages, settings, cancel, continue_final):
            if isinstance(item, RawText):
                if seen == self.gate_after:
                    self.reached.set()
                    while not self.gate.wait(0.02):
                        if cancel.is_set():
                            break
                seen += 1
            yield item


def make_adapter(name: str, base: str, *, rows: int = 120, loss: float = 1.234, created: str = "2026-11-20T10:00:00",
                 evaluations: list | None = None) -> Path:
    """A minimal stored adapter folder (config, weights file, manifest) for picker tests."""
    d = paths.adapters_dir() / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    (d / "medchat.json").write_text(
        json.dumps(
            {
                "base_model": {"id": base},
                "created": created,
                "dataset": {"id": "medical-o1-sample", "rows_used": rows},
                "losses": {"final_train": loss},
                "evaluations": evaluations or [],
            }
        )
    )
    return d
