"""The fast decode path on the real embedded model: same greedy text as transformers' generate()
with a LoRA adapter, through the chat engine (float32 16-bit-path on the CPU, where both compute the same
ops); and how close the CPU default, int8 weights, stays to generate."""

from __future__ import annotations

import pytest

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings, load_settings
from medchat.engine.events import GenerationDone
from medchat.engine.session import stream_events

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=48)
MSGS = [Message("user", "Why does iron deficiency cause anaemia?")]


@pytest.fixture
def random_adapter(embedded_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_model, dtype=torch.float32)
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)  # peft draws small values: make the change visible in 48 tokens
    out = tmp_path / "random-adapter"
    peft_model.save_pretrained(out)
    return out


def reply(decoder: str, adapter: str = ""):
    from medchat.engine.backends import open_local

    settings = load_settings({"model": "smollm2", "decoder": decoder, "dtype": "float32", "quantize": "none",
                              "adapter": adapter or "none"})
    backend = open_local(settings, lambda _m: None)
    done = list(stream_events(backend, MSGS, GREEDY))[-1]
    assert isinstance(done, GenerationDone)
    return backend, done.reasoning + done.answer


def test_fast_path_keeps_the_adapters_greedy_tokens(embedded_model, random_adapter):
    fast, text = reply("fast", str(random_adapter))
    assert fast.info.decoder.startswith("medchat decode loop")
    slow, want = reply("generate", str(random_adapter))
    assert slow.info.decoder.startswith("transformers generate")
    assert text == want and text
    fast.set_adapter(None)  # its matrices removed from the running decoder: the effect is gone
    plain = list(stream_events(fast, MSGS, GREEDY))[-1]
    assert plain.reasoning + plain.answer != text


def test_bitsandbytes_4bit_weights_are_dequantised_exactly(embedded_model_dir):
    """The CUDA default model is a bitsandbytes 4-bit checkpoint: the decoder dequantises it."""
    pytest.importorskip("bitsandbytes")
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from medchat.models.fastdecode import FastDecoder

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)

    def load():
        return AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.bfloat16, quantization_config=q,
                                                    device_map="cpu").eval()

    ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 2, 198, 1, 4093, 198, 1780, 314, 2, 198, 1, 520, 9531, 198]
    x = torch.tensor([ids])
    want = load().generate(x, attention_mask=torch.ones_like(x), max_new_tokens=20, min_new_tokens=20,
                           do_sample=False)[0, len(ids):].tolist()
    assert list(FastDecoder(load()).generate(ids, GenerationSettings(temperature=0.0, max_new_tokens=20))) == want


def test_cpu_default_int8_weights_stay_close_to_generate(embedded_model):
    """The chat's CPU default (int8 weights) against plain generate on the 16-bit model, as the chat
    loads it: the greedy text may part after a while, but given the same history nearly every next
    token is the same (measured: see benchmarks/RESULTS.md, CPU)."""
    import torch

    from medchat.engine.backends import open_local
    from medchat.models.catalog import resolve_model
    from medchat.models.fastdecode import FastDecoder
    from medchat.models.loading import load_hf_model

    backend = open_local(load_settings({"model": "smollm2", "adapter": "none", "device": "cpu"}), lambda _m: None)
    assert backend.info.quantization == "int8" and "int8" in backend.info.decoder
    resolved = resolve_model("smollm2", device="cpu", offline=True)
    model, tok = load_hf_model(resolved, device="cpu")
    prompt = tok.apply_chat_template([{"role": "user", "content": MSGS[0].content}], add_generation_prompt=True,
                                     return_dict=False)
    x = torch.tensor([prompt])
    with torch.inference_mode():
        want = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=48, min_new_tokens=48,
                              do_sample=False)[0, len(prompt):].tolist()
    dec = FastDecoder(load_hf_model(resolved, device="cpu")[0], quantize="int8")
    one = GenerationSettings(temperature=0.0, max_new_tokens=1)
    hits = sum(list(dec.generate(prompt + want[:i], one)) == [t] for i, t in enumerate(want))
    assert hits / len(want) >= 0.9
