"""Fixtures for the chat app's tests: async tests run on asyncio (anyio plugin); frozen clocks."""

from __future__ import annotations

import time

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def frozen_clocks(monkeypatch):
    """Freeze the UI clock and the engine's timer so rendered times and tok/s are deterministic."""
    import types

    import medchat.engine.session as session_module
    from medchat.ui import clock

    monkeypatch.setattr(clock, "now", lambda: 1000.0)
    ticks = iter(x * 0.25 for x in range(10**6))
    fake_time = types.SimpleNamespace(perf_counter=lambda: next(ticks), time=time.time)
    monkeypatch.setattr(session_module, "time", fake_time)
