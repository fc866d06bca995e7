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


def _compare_backend():
    from medchat.engine.backends.fake import FakeBackend

    backend = FakeBackend([["<think>", "base why", "</think>", "base says"], ["<think>", "lora why", "</think>", "lora says"]],
                          known_adapters={"ad": "fake-model"})
    backend.set_adapter("ad")
    return backend


def test_compare_json_gives_base_then_adapter_with_the_ask_fields(monkeypatch, capsys):
    import json

    backend = _compare_backend()
    monkeypatch.setattr(ask, "open_backend", lambda settings, progress: backend)
    ask.run_ask(Settings(adapter="ad"), "why?", as_json=True, compare=True)
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["base", "adapter"]
    assert (out["base"]["adapter"], out["adapter"]["adapter"]) == (None, "ad")
    assert (out["base"]["answer"], out["adapter"]["answer"]) == ("base says", "lora says")
    assert out["base"]["reasoning"] == "base why"
    fields = {"reasoning", "answer", "model", "adapter", "adapter_fidelity", "backend", "prompt_tokens", "completion_tokens", "seconds",
              "tok_per_s", "finish_reason"}
    assert set(out["base"]) == set(out["adapter"]) == fields
    assert backend.adapters_used == ["", "ad"]


def test_compare_text_heads_each_answer_and_sends_reasoning_to_stderr(monkeypatch, capsys):
    monkeypatch.setattr(ask, "open_backend", lambda settings, progress: _compare_backend())
    ask.run_ask(Settings(adapter="ad"), "why?", compare=True)
    captured = capsys.readouterr()
    assert captured.out == "── base: fake-model ──\nbase says\n── adapter: fake-model + ad ──\nlora says\n"
    assert "base why" in captured.err and "lora why" in captured.err


def test_compare_needs_an_adapter():
    from medchat.errors import UsageError

    with pytest.raises(UsageError, match="--compare needs --adapter"):
        ask.run_ask(Settings(), "why?", compare=True)
