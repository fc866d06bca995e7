"""The save phase: pushing to the hub (a recorded hub client; the hub is unreachable here), the adapter's files."""

from __future__ import annotations

import json

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



def test_the_saved_adapter_names_the_hub_id_not_the_local_folder(tmp_path, monkeypatch):
    # PEFT records the folder the base was loaded from: a cache path under the user's home, pushed to
    # the hub with --push-to-hub and meaningless on another machine.
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from medchat.finetune.save import portable_base_id, save_adapter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = tmp_path / "home" / ".cache" / "smollm2"
    tiny = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=64)
    LlamaForCausalLM(tiny).save_pretrained(local)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(local),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    save_adapter(model, tmp_path / "adapter", "HuggingFaceTB/SmolLM2-135M-Instruct")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert str(tmp_path) not in card and str(tmp_path) not in json.dumps(config)
    assert portable_base_id(str(local)) == "smollm2" and portable_base_id("org/model") == "org/model"
