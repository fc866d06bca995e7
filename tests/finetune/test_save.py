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


def test_a_16_bit_adapter_file_is_half_the_size_and_loads_onto_a_float32_model(tmp_path, monkeypatch):
    # --adapter-dtype float16 (the bundled demo adapter): the file halves; PEFT and the decode loop cast
    # the weights back to the model's float32, keeping their 16-bit values.
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from medchat.config import GenerationSettings
    from medchat.finetune.save import save_adapter
    from medchat.models.fastdecode import FastDecoder
    from medchat.models.lora import read_lora

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=64)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny).save_pretrained(tmp_path / "base")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(tmp_path / "base"),
                           LoraConfig(r=2, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM",
                                      init_lora_weights=False))
    save_adapter(model, tmp_path / "a32", "org/base")
    save_adapter(model, tmp_path / "a16", "org/base", "float16")
    f32, f16 = (tmp_path / d / "adapter_model.safetensors" for d in ("a32", "a16"))
    w32, w16 = load_file(str(f32)), load_file(str(f16))
    assert w16.keys() == w32.keys() and all(t.dtype == torch.float16 for t in w16.values())
    assert all(torch.equal(w16[k], w32[k].half()) for k in w32)
    assert 2 * sum(t.nbytes for t in w16.values()) == sum(t.nbytes for t in w32.values())

    loaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tmp_path / "base"), str(tmp_path / "a16"))
    a = loaded.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    key = next(k for k in w16 if "layers.0.self_attn.q_proj.lora_A" in k)
    assert a.dtype == torch.float32 and torch.equal(a, w16[key].float())

    lora = read_lora(tmp_path / "a16", n_layers=2)  # the decode loop, int8 weights as on the CPU
    decoder = FastDecoder(LlamaForCausalLM.from_pretrained(tmp_path / "base"), quantize="int8", adapter=lora)
    tokens = list(decoder.generate([1, 2, 3], GenerationSettings(temperature=0.0, max_new_tokens=4)))
    assert len(tokens) == 4
