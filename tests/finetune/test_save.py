"""The save phase: pushing to the hub (a recorded hub client; the hub is unreachable here)."""

from __future__ import annotations

from medchat.finetune import save as S

from .plans import plan


def test_push_sends_the_adapter_and_the_merged_model_to_private_repos(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    class Hub:  # records what medchat asks of the hub (unreachable here)
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo, private, exist_ok):
            calls.append(("create", repo, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, ignore_patterns=None):
            calls.append(("upload", repo_id, folder_path, ignore_patterns))

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    (tmp_path / "merged").mkdir()
    p = plan(push_to_hub="me/medbot")
    assert S.push(p, tmp_path, lambda m: None) == ["me/medbot", "me/medbot-merged"]
    assert calls == [
        ("token", "hf_test"),
        ("create", "me/medbot", True, True), ("upload", "me/medbot", str(tmp_path), ["merged/*", "evals/*"]),
        ("create", "me/medbot-merged", True, True), ("upload", "me/medbot-merged", str(tmp_path / "merged"), None),
    ]

