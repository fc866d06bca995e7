"""Pilot tests of the fine-tuner's workbench over the scripted FakeBackend: compare mode, keeping a
reply as a training row, where an answer came from, and messages typed while the model loads."""

from __future__ import annotations

import threading

import pytest
from ui_helpers import ask, idle, ready, until

from medchat.config import Settings
from medchat.engine.backends.fake import FakeBackend
from medchat.ui.app import make_app
from medchat.ui.widgets.turn import TurnView

pytestmark = pytest.mark.anyio


def slow_loading(backend: FakeBackend):
    """A backend factory that waits for ``loaded`` (the model is 'loading' until then)."""
    loaded = threading.Event()

    def factory(_settings, _progress):
        loaded.wait(10)
        return backend

    return factory, loaded


async def test_a_message_sent_while_loading_waits_and_is_sent_when_ready():
    backend = FakeBackend([["<think>", "why", "</think>", "answer"]])
    factory, loaded = slow_loading(backend)
    app = make_app(Settings(), factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await ask(pilot, "What is a fever?")
        await pilot.pause()
        note = app.screen.query_one("#queued")
        assert "will send when the model is loaded" in str(note.render())
        assert app.screen.query_one("#prompt").text == ""  # taken, not lost
        await ask(pilot, "a second one")  # one message waits at a time; this one stays in the box
        assert app.chat.queued_message == "What is a fever?"
        loaded.set()
        await ready(pilot)
        await idle(pilot)
        assert not app.screen.query("#queued")
        (view,) = app.screen.query(TurnView)
        assert view.state.user == "What is a fever?" and view.state.answer == "answer"
        assert [m.content for m in backend.calls[0] if m.role == "user"] == ["What is a fever?"]


async def test_a_message_queued_when_loading_fails_comes_back_to_the_box():
    from medchat.errors import ModelUnavailable

    gate = threading.Event()

    def fail(_settings, _progress):
        gate.wait(10)
        raise ModelUnavailable("gone")

    app = make_app(Settings(), fail)
    async with app.run_test(size=(100, 30)) as pilot:
        await ask(pilot, "kept?")
        await pilot.pause()
        gate.set()
        await until(pilot, lambda: app.load_error is not None)
        await pilot.pause()
        assert "not sent" in str(app.screen.query_one("#queued").render())
        assert app.screen.query_one("#prompt").text == "kept?"
