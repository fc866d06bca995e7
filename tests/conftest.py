"""Shared fixtures. Every test gets its own MEDCHAT_HOME, so no test touches the user's files."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def medchat_home(tmp_path, monkeypatch):
    home = tmp_path / "medchat-home"
    monkeypatch.setenv("MEDCHAT_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("MEDCHAT_") and v != "MEDCHAT_HOME"]:
        monkeypatch.delenv(var)
    # Tests never reach the model hub: fail fast instead of trying.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home
