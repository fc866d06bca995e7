"""The parity gate's figures and verdicts, on a tiny random Llama with a random LoRA (fast, real torch)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


class IdsTokenizer:
    """Prompts are written as space-separated token ids."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(t) for t in text.split()]}


@pytest.fixture(scope="module")
def tiny():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=63, bos_token_id=0)
    base = LlamaForCausalLM(config).eval()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora).eval()
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.mul_(8)  # an adapter that clearly changes the greedy path
    return peft_model


def reference(peft_model):
    from medchat.export import parity

    prompts = ["1 2 3 4 5", "9 8 7", "10 20 30 40"]
    return parity.reference(peft_model, IdsTokenizer(), prompts)


def merged_copy(peft_model, noise: float = 0.0):
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    if noise:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in merged.parameters():
                if p.dim() == 2:
                    p.add_(torch.randn(p.shape, generator=gen) * noise * p.abs().mean())
    return merged.eval()


def test_a_faithful_merge_gives_the_same_tokens_and_keeps_the_effect(tiny):
    from medchat.export import parity

    ref = reference(tiny)
    figures = parity.compare(merged_copy(tiny), ref, sixteen_bit=True)
    assert figures.passed and figures.same_tokens
    assert figures.token_agreement == 1.0 and figures.free_running_agreement == 1.0
    assert figures.effect_kept == pytest.approx(1.0, abs=1e-3) and figures.effect_cosine == pytest.approx(1.0, abs=1e-3)


def test_dropping_the_adapter_fails_the_gate_with_one_line(tiny):
    from medchat.export import parity

    ref = reference(tiny)
    with tiny.disable_adapter():
        figures = parity.compare(tiny, ref, sixteen_bit=False)
    assert not figures.passed and figures.effect_kept == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(parity.ParityError) as err:
        parity.enforce(figures, "six.gguf")
    assert "\n" not in str(err.value) and "effect kept 0.0%" in str(err.value)


def test_heavy_noise_is_measured_as_lost_effect(tiny):
    from medchat.export import parity

    ref = reference(tiny)
    light = parity.compare(merged_copy(tiny, 0.01), ref, sixteen_bit=False)
    heavy = parity.compare(merged_copy(tiny, 1.0), ref, sixteen_bit=False)
    assert light.effect_kept > 0.9 and light.passed
    assert heavy.token_agreement < light.token_agreement and not heavy.passed


def test_another_tokenizer_is_caught_with_one_line(tiny):
    from medchat.export import parity

    class Shifted(IdsTokenizer):
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [i + 1 for i in super().__call__(text)["input_ids"]]}

    with pytest.raises(parity.ParityError, match=r"encodes the parity prompts differently .*\(first difference at token 0 of 5\)"):
        parity.check_tokenizer(Shifted(), reference(tiny), "x.gguf")
