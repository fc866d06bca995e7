"""Attaching an adapter: a malformed, truncated or mismatched one is one clear error, never a silent no-op."""

from __future__ import annotations

import json
import shutil

import pytest

from medchat.errors import AdapterError
from medchat.models.adapters import attach_adapter, check_adapter_base
from medchat.models.catalog import ResolvedModel

RESOLVED = ResolvedModel("tiny", "tiny/llama", "tiny/llama")


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A 2-layer random Llama and a real LoRA adapter saved for it (no download, about a second)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    folder = tmp_path_factory.mktemp("adapter") / "good"
    peft_model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                                     init_lora_weights=False))
    peft_model.save_pretrained(folder)
    return config, folder


def fresh_model(config):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(config)


def rewrite_keys(src, dst, rename):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(src / "adapter_model.safetensors")
    save_file({rename(k): v for k, v in tensors.items()}, dst / "adapter_model.safetensors")
    return dst


def lora_layers(model) -> int:
    return sum(name.endswith(".lora_A") for name, _ in model.named_modules())


def test_a_matching_adapter_attaches(tiny_adapter):
    config, good = tiny_adapter
    check_adapter_base(good, RESOLVED)
    model = attach_adapter(fresh_model(config), good, RESOLVED)
    assert lora_layers(model) == 4


@pytest.mark.parametrize("rename, words", [
    (lambda k: k.replace("lora_A", "lora_down").replace("lora_B", "lora_up"), "none of its tensors match"),
    (lambda k: k.replace("lora_A", "lora_down") if ".layers.0." in k else k, "only some of its tensors"),
])
def test_an_adapter_whose_tensor_names_do_not_match_is_refused(tiny_adapter, tmp_path, rename, words):
    config, good = tiny_adapter
    bad = rewrite_keys(good, tmp_path / "renamed", rename)
    model = fresh_model(config)
    with pytest.raises(AdapterError) as err:
        attach_adapter(model, bad, RESOLVED)
    message = str(err.value)
    assert words in message and "missing" in message and "unexpected" in message and "lora_down" in message
    assert "\n" not in message
    assert lora_layers(model) == 0  # the half-attached adapter was taken out again


def test_a_mismatched_second_adapter_leaves_the_first_in_place(tiny_adapter, tmp_path):
    config, good = tiny_adapter
    model = attach_adapter(fresh_model(config), good, RESOLVED, name="first")
    bad = rewrite_keys(good, tmp_path / "renamed", lambda k: k.replace("lora_B", "lora_up"))
    with pytest.raises(AdapterError, match="tensors missing"):
        attach_adapter(model, bad, RESOLVED, name="second")
    assert set(model.peft_config) == {"first"} and model.active_adapter == "first"


@pytest.mark.parametrize("cut", [20, 0.5])
def test_a_truncated_weight_file_is_refused_before_loading(tiny_adapter, tmp_path, cut):
    _config, good = tiny_adapter
    bad = shutil.copytree(good, tmp_path / "cut")
    data = (good / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[: int(cut if cut > 1 else len(data) * cut)])
    with pytest.raises(AdapterError, match="adapter_model.safetensors is damaged or incomplete"):
        check_adapter_base(bad, RESOLVED)


@pytest.mark.parametrize("key, value", [
    ("r", "sixteen"), ("r", 0), ("r", 2.5), ("lora_alpha", "x"), ("target_modules", 3),
    ("rank_pattern", {"q_proj": "big"}), ("peft_type", "IA3"),
])
def test_a_malformed_adapter_config_names_the_key(tiny_adapter, tmp_path, key, value):
    _config, good = tiny_adapter
    bad = shutil.copytree(good, tmp_path / "bad")
    config = json.loads((good / "adapter_config.json").read_text())
    config[key] = value
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match=f"adapter_config.json: .*{key}"):
        check_adapter_base(bad, RESOLVED)
