"""Model resolution without loading weights."""

from __future__ import annotations

from pathlib import Path

from medchat.models import catalog as models


def test_the_embedded_models_hub_id_resolves_to_the_embedded_model(monkeypatch, tmp_path):
    # Adapters trained on `smollm2` record HuggingFaceTB/SmolLM2-135M-Instruct as their base; `export
    # --merged` and `--model <that id>` must find the embedded copy offline, not ask the hub for it.
    monkeypatch.setattr(models, "pull", lambda name, progress=None: Path(tmp_path))
    monkeypatch.setattr(models, "hub_cached", lambda hub_id: False)
    resolved = models.resolve_model(models.EMBEDDED_ID, offline=True, fallback=False)
    assert resolved.name == models.EMBEDDED and resolved.source == str(tmp_path) and not resolved.fallback_note
