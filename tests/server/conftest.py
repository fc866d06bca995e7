"""Fixtures for tests that talk to `medchat serve` over loopback.

Reusable elsewhere: ``fake_server_url`` is the base URL (``http://127.0.0.1:PORT/v1``) of a server over
a FakeBackend whose every reply is serve_fakes.REPLY_CHUNKS (reasoning "Let me think." / answer "The answer is 42.").
Other test folders can use ``medchat.server.background.serve_in_thread`` the same way.
"""

from __future__ import annotations

import pytest
from serve_fakes import RepeatingFakeBackend

from medchat.server import ServerConfig
from medchat.server.background import serve_in_thread


@pytest.fixture
def fake_backend() -> RepeatingFakeBackend:
    return RepeatingFakeBackend(known_adapters={"med-lora": "fake-model"})


@pytest.fixture
def fake_server(fake_backend):
    """A running server over ``fake_backend``; yields the ChatServer (``.base_url``, ``.backend``)."""
    with serve_in_thread(fake_backend, config=ServerConfig()) as server:
        yield server


@pytest.fixture
def fake_server_url(fake_server) -> str:
    return fake_server.base_url
