"""`medchat ask` output handling over a scripted backend (no model)."""

from __future__ import annotations

import io
import sys

import pytest

from medchat.cli import ask
from medchat.config import Settings
from medchat.engine.backends.base import BackendInfo, PromptReady, RawText


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class _InterruptedBackend:
    """Streams some text, then the user presses Ctrl+C (KeyboardInterrupt in the consuming thread)."""

    info = BackendInfo(backend="scripted", model="m", device="cpu")

    def __init__(self, chunks):
        self.chunks = chunks

    def stream(self, messages, settings, cancel, continue_final=False):
        yield PromptReady(3, False)
        for chunk in self.chunks:
            yield RawText(chunk, 1)
        raise KeyboardInterrupt

    def close(self) -> None:
        pass


@pytest.mark.parametrize("chunks,dim_left_open,answer", [
    (["<think>thinking so far"], True, ""),
    (["<think>why</think>", "partial answer"], False, "partial answer"),
])
def test_ctrl_c_mid_reply_resets_the_terminal_and_ends_the_line(monkeypatch, chunks, dim_left_open, answer):
    err, out = _TTY(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(ask, "open_backend", lambda settings, progress: _InterruptedBackend(chunks))
    with pytest.raises(KeyboardInterrupt):
        ask.run_ask(Settings(), "why?")
    shown = err.getvalue()
    assert shown.count(ask.DIM) == shown.count(ask.RESET) == 1  # the dimming is always switched off again
    assert shown.endswith("\n")
    assert out.getvalue() == (answer + "\n" if answer else "")
