"""The chat app (Pilot) with `--endpoint` pointing at a `medchat serve` started by the test."""

from __future__ import annotations

import time

import pytest
from serve_fakes import ANSWER, REASONING

from medchat.config import Settings
from medchat.engine.backends import open_backend
from medchat.ui.app import make_app

pytestmark = pytest.mark.anyio


async def until(pilot, condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the app"
        await pilot.pause(0.02)


async def test_chat_over_an_endpoint_fills_both_panes(fake_server):
    from medchat.ui.widgets.turn import TurnView

    app = make_app(Settings(endpoint=fake_server.base_url, history=False), open_backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: getattr(app.screen, "session", None) is not None)
        assert app.screen.session.backend.info.backend == "endpoint"
        prompt = app.screen.query_one("#prompt")
        prompt.text = "What is 6 x 7?"
        prompt.focus()
        await pilot.press("enter")
        await until(pilot, lambda: list(app.screen.query(TurnView)) and app.chat.generating_turn is None)
        await pilot.pause()
        (view,) = list(app.screen.query(TurnView))
        assert view.reasoning_md.source == REASONING
        assert view.answer_md.source == ANSWER
    assert [m.content for m in fake_server.backend.calls[-1] if m.role == "user"] == ["What is 6 x 7?"]
