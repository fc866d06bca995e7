"""Pilot tests of the fine-tuner's workbench over the scripted FakeBackend: compare mode, keeping a
reply as a training row, where an answer came from, and messages typed while the model loads."""

from __future__ import annotations

import threading

import pytest
from ui_helpers import ask, ready, until

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
        await until(pilot, lambda: any(v.state.finish for v in app.screen.query(TurnView)))
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


def compare_backend(replies, **kw) -> FakeBackend:
    backend = FakeBackend(replies, known_adapters={"tuned": "fake-model"}, **kw)
    backend.set_adapter("tuned")
    return backend


BASE_REPLY = ["<think>", "base ", "thinks", "</think>", "Base ", "answer."]
TUNED_REPLY = ["<think>", "tuned ", "thinks ", "longer", "</think>", "Tuned ", "answer."]


async def test_compare_mode_answers_with_base_then_adapter_side_by_side_and_saves_both():
    from medchat.store.history import HistoryStore
    from medchat.ui.widgets.compare import CompareView

    backend = compare_backend([BASE_REPLY, TUNED_REPLY, ["plain"]])
    app = make_app(Settings(), lambda _s, _p: backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        assert app.chat.compare and "compare" in str(app.chat.status.render())
        await ask(pilot, "What is gout?")
        await until(pilot, lambda: app.screen.query(CompareView) and app.screen.query(CompareView).first().adapter.state.finish)
        (pair,) = app.screen.query(CompareView)
        base, tuned = pair.base, pair.adapter
        assert base.region.y == tuned.region.y and base.region.x < tuned.region.x  # side by side
        assert "base model · fake-model" in str(base.query_one(".column-header").render())
        assert "adapter · tuned" in str(tuned.query_one(".column-header").render())
        assert (base.state.reasoning, base.state.answer) == ("base thinks", "Base answer.")
        assert (tuned.state.reasoning, tuned.state.answer) == ("tuned thinks longer", "Tuned answer.")
        for view in (base, tuned):  # each its own folded reasoning pane and header
            assert view.reasoning_pane.collapsed
            assert str(view.reasoning_pane.query_one(".reasoning-header").render()).startswith("▶ Thought for ")
        assert backend.adapters_used == ["", "tuned"] and backend.calls[0] == backend.calls[1]
        conv_id = app.chat.conversation_id
        await pilot.press("f5")  # off again: one column
        assert not app.chat.compare
        await ask(pilot, "And then?")
        await until(pilot, lambda: app.screen.query(TurnView).last().state.finish)
        assert len(app.screen.query(CompareView)) == 1 and app.screen.query(TurnView).last().column == ""
    with HistoryStore() as store:
        conv = store.load(conv_id)
    assert [t.answer for t in conv.turns] == ["Tuned answer.", "plain"]
    assert conv.base_replies[0].answer == "Base answer." and conv.base_replies[0].adapter == ""
    assert conv.turns[0].adapter == "tuned"
    # Reopened, the compared question shows both columns again.
    app = make_app(Settings(), lambda _s, _p: compare_backend([]))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await app.chat.open_conversation(conv_id)
        await pilot.pause()
        (pair,) = app.screen.query(CompareView)
        assert (pair.base.state.answer, pair.adapter.state.answer) == ("Base answer.", "Tuned answer.")


async def test_escape_during_the_base_reply_stops_both():
    from ui_helpers import GatedBackend

    from medchat.ui.widgets.compare import CompareView

    backend = GatedBackend([BASE_REPLY, TUNED_REPLY], gate_after=2, known_adapters={"tuned": "fake-model"})
    backend.set_adapter("tuned")
    app = make_app(Settings(), lambda _s, _p: backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await ask(pilot, "q")
        await until(pilot, lambda: backend.reached.is_set())
        await pilot.press("escape")
        await until(pilot, lambda: app.screen.query(CompareView).first().adapter.state.finish)
        (pair,) = app.screen.query(CompareView)
        assert pair.base.state.finish == "cancelled" and pair.adapter.state.finish == "cancelled"
        assert len(backend.calls) == 1  # the adapter never ran
        assert app.chat.generating_turn is None


async def test_compare_mode_needs_an_adapter():
    app = make_app(Settings(), lambda _s, _p: FakeBackend([]))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        assert not app.chat.compare
