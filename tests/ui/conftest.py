"""Fixtures for the chat app's tests: async tests run on asyncio (anyio plugin); frozen clocks."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(autouse=True)
def no_bundled_adapters(monkeypatch, tmp_path):
    """The picker and switching tests list the user's adapters only (the bundled demo adapter has its
    own tests in tests/store and tests/cli)."""
    from medchat.store import adapters

    monkeypatch.setattr(adapters, "bundled_dir", lambda: tmp_path / "no-bundled-adapters")


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
