"""The chat on the real embedded model (SmolLM2-135M): load, stream a reply, stop one, save history."""

from __future__ import annotations

import pytest
from ui_helpers import ask, until

from medchat.config import GenerationSettings, Settings
from medchat.engine.backends import open_backend
from medchat.store.history import HistoryStore
from medchat.ui.app import make_app
from medchat.ui.widgets.turn import TurnView

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_chat_streams_and_stops_with_the_embedded_model(embedded_model):
    settings = Settings(model="smollm2", device="cpu", generation=GenerationSettings(max_new_tokens=24, temperature=0))
    app = make_app(settings, open_backend)  # the real loader
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.load_error is not None or getattr(app.screen, "session", None), timeout=300)
        assert app.load_error is None, app.load_error
        status = str(app.chat.status.render())
        assert "smollm2" in status and "cpu" in status
        await ask(pilot, "What is hypertension?")
        await until(pilot, lambda: app.chat.generating_turn is None, timeout=300)
        await pilot.pause()
        (view,) = app.screen.query(TurnView)
        assert view.state.finish in ("stop", "length"), view.state
        assert (view.answer_md.source + view.reasoning_md.source).strip()
        assert view.answer_md.source == app.chat.session.turns[0].answer
        assert "tok/s" in str(view.query_one(".turn-status").render())

        app.chat.session.generation = GenerationSettings(max_new_tokens=400, temperature=0)
        await ask(pilot, "Explain in detail how blood pressure is regulated.")
        await until(pilot, lambda: len(app.screen.query(TurnView)) == 2 and app.chat.generating_turn is not None)
        await until(pilot, lambda: app.screen.query(TurnView).last().state.answer, timeout=300)
        await pilot.press("escape")
        await until(pilot, lambda: app.chat.generating_turn is None, timeout=60)
        second = app.screen.query(TurnView).last()
        assert second.state.finish == "cancelled" and second.state.answer
    with HistoryStore() as store:
        turns = store.load(store.list()[0].id).turns
    assert [t.finish_reason for t in turns] == [view.state.finish, "cancelled"]
    assert turns[0].model == "smollm2"
